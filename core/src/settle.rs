//! A committed configuration is *settled* once a majority of its voters are known to hold its
//! commit durably (their commit index is at or past its entry), and only then is a change
//! reported done and a removed leader hands over (or, cut off from the voters, an election
//! timeout after the commit, settled or not).
//!
//! Why: a node that lost its data rejoins (`crate::rejoin`) by asking the members of every
//! configuration that may still decide, judged by the newest commit the answers report. The
//! commit index a follower holds lags the leader's by a message, so a configuration committed
//! only as far as its leader knows still counts as undecided to the others. A leader that
//! committed its own removal and stepped down at once, then was shut down by its operator (the
//! change was done), left a remaining voter unaware of the commit; a voter that then lost its
//! disk waited for the removed node's answer forever, and a cluster that needed its vote elected
//! no one. Once a majority of the new voters hold the commit, a rejoining voter of the new
//! configuration asks at least one of them that is not itself (every member of a configuration
//! that may decide is asked, and a majority of two or more voters holds another), so it learns
//! that the configuration before is superseded.
//!
//! How the leader knows: messages are numbered (`Raft::next_request_id`) and each carries the
//! leader's commit index as far as the follower can use it (`leader_commit`, at most the last
//! entry it vouches for), and the commit index only grows. So a success answering a message
//! numbered at or after the moment the configuration was committed, and matching at or past
//! its entry, comes from a follower whose commit index is at or past the entry (§5.3: the
//! follower sets its commit index to `min(leaderCommit, index of last new entry)`). A commit
//! index that passes a configuration entry is written at once, and answers wait for that write
//! (`Raft::take_ready`, `Raft::vouched_in_flight_after`), so a crash cannot make the follower
//! forget it after it answered. The leader counts itself at once (its own write of the commit
//! index may still be in flight: a crash then, with another voter's disk lost and the removed
//! node stopped, is the case left open).

use crate::raft::{Raft, Role};
use crate::types::{LogId, LogIndex, NodeId};
use std::collections::BTreeSet;

/// A leader's watch over who holds the commit of the configuration in force (not joint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SettleWatch {
    /// The configuration entry's index; at most the leader's commit index.
    pub(crate) index: LogIndex,
    /// The number of the first message sent after the entry was known committed: every message
    /// numbered from here on carries a commit index at or past it, as far as the follower can
    /// use it.
    pub(crate) from_request: u64,
    /// `Raft::ticks` when the watch began: a removed leader hands over an election timeout
    /// later even if unsettled (the voters may be cut off from it).
    pub(crate) since: u64,
    /// The voters known to hold the commit: this leader if it is one, and every peer that
    /// answered a message numbered `from_request` or later with a success at or past `index`.
    pub(crate) told: BTreeSet<NodeId>,
}

impl Raft {
    /// The newest configuration entry (not joint) this node, while leader, saw settled: a
    /// majority of its voters held its commit. Volatile, and only grows. A membership change is
    /// reported done once the configuration it made is settled (or its leader lost the lead).
    pub fn settled_membership_index(&self) -> LogIndex {
        self.settled_membership_index
    }

    /// The configuration in force is committed and not joint: watch who holds its commit, and
    /// tell every peer at once (a heartbeat each).
    pub(crate) fn start_settle_watch(&mut self) {
        let index = self.membership_index();
        let watched = self
            .leader
            .as_ref()
            .is_none_or(|l| l.settling.as_ref().is_some_and(|w| w.index == index));
        // Called on every commit a leader counts: done at once unless a watch is due.
        if self.settled_membership_index >= index || watched {
            return;
        }
        let me = self.id();
        let is_voter = self.membership().conf.is_voter(me);
        let (from_request, since) = (self.next_request_id, self.ticks);
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        leader.settling = Some(SettleWatch {
            index,
            from_request,
            since,
            told: if is_voter {
                BTreeSet::from([me])
            } else {
                BTreeSet::new()
            },
        });
        self.tell_followers_the_commit();
        self.check_settled();
    }

    /// `from` answered message `request_id` with a success at `matched` (in this leader's term,
    /// believed): if that message carried the watched commit, `from` holds it.
    pub(crate) fn note_commit_held(&mut self, from: NodeId, request_id: u64, matched: LogId) {
        let Some(watch) = self.leader.as_mut().and_then(|l| l.settling.as_mut()) else {
            return;
        };
        if request_id >= watch.from_request
            && matched.index >= watch.index
            && watch.told.insert(from)
        {
            self.check_settled();
        }
    }

    /// `peer`'s store is new: it no longer holds what it was told.
    pub(crate) fn forget_commit_held(&mut self, peer: NodeId) {
        if let Some(watch) = self.leader.as_mut().and_then(|l| l.settling.as_mut()) {
            watch.told.remove(&peer);
        }
    }

    /// Settled once a majority of the configuration's voters hold its commit; a leader that is
    /// not one of them then hands over.
    fn check_settled(&mut self) {
        let index = self.membership_index();
        let me = self.id();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(watch) = leader.settling.as_ref() else {
            return;
        };
        if watch.index != index {
            // Superseded by a newer configuration, watched once it is committed.
            leader.settling = None;
            return;
        }
        let conf = &self.membership.current().conf;
        if !conf.has_quorum(|voter| watch.told.contains(&voter)) {
            return;
        }
        let removed = !conf.is_voter(me);
        leader.settling = None;
        self.settled_membership_index = index;
        if removed {
            self.hand_over_after_removal();
        }
    }

    /// Each tick of a leader: a removed leader whose configuration has not settled within an
    /// election timeout hands over anyway (the voters it cannot reach elect without it).
    pub(crate) fn settle_deadline(&mut self) {
        let timeout = u64::from(self.config.election_ticks_min);
        let late = self.leader.as_ref().is_some_and(|leader| {
            leader
                .settling
                .as_ref()
                .is_some_and(|w| self.ticks.saturating_sub(w.since) >= timeout)
        });
        if late && self.handing_over_after_removal() {
            // Stepping down drops the leader state, the watch with it.
            self.hand_over_after_removal();
        }
    }

    /// This leader committed a configuration that leaves it out, and waits for it to settle
    /// before handing over: it takes no proposals meanwhile.
    pub(crate) fn handing_over_after_removal(&self) -> bool {
        self.role == Role::Leader
            && self.membership_index() <= self.commit_index
            && !self.membership().conf.is_joint()
            && !self.membership().conf.is_voter(self.id())
    }
}
