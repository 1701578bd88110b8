//! Spare followers: the voters a leader's commits do not wait for now.
//!
//! A commit needs a majority, the leader included (§5.3): in a cluster of three, the leader and
//! one follower. The other follower's copy adds redundancy but not speed, and its sync competes
//! with the others' for the disk when nodes share one (three nodes on one machine, or volumes on
//! one device). So the leader ranks its voting followers and tells those outside the fastest
//! majority, in each AppendEntries that streams entries to them (`AppendEntries::sync_may_wait`;
//! never a probe, whose answer is what starts the pipeline), that they may hold their
//! write a little and make one sync of several (the node actor's `spare_sync_hold`). Their
//! answers still vouch only for durable entries; nothing about safety changes, only when a spare
//! follower's sync is made.
//!
//! The rank, highest first: answered within the last heartbeat period; the highest match index
//! (`LeaderState::matched`); already a partner (so that equal peers do not swap at every
//! message); the lower id. A partner that falls silent stops answering, so the next of its
//! entries that a spare follower answers puts that follower ahead of it on matched entries, and
//! after a heartbeat period without an answer the silent one ranks last: a commit waits at most
//! a hold or two longer than it would have. Nobody is spare while the configuration is joint
//! (two majorities to reason about), while this leader is not one of the voters, or for the
//! target of a leadership transfer (it must catch up at once); learners never count toward a
//! commit, and are never told they may wait (a learner catching up to be promoted should not).

use super::peer::PeerReplication;
use crate::quorum::majority;
use crate::raft::LeaderState;
use crate::types::{LogIndex, NodeId};
use std::collections::BTreeSet;

impl LeaderState {
    /// Mark each peer spare or not (`PeerReplication::spare`), as the module explains. `voters`
    /// are the voters of the configuration in force, or `None` while it is joint; `now` is the
    /// leader's clock and `heartbeat_ticks` its heartbeat period, in ticks.
    pub(crate) fn mark_spare_followers(
        &mut self,
        me: NodeId,
        voters: Option<&BTreeSet<NodeId>>,
        now: u64,
        heartbeat_ticks: u32,
    ) {
        let transfer_to = self.transfer.as_ref().map(|transfer| transfer.to);
        let Some(voters) = voters.filter(|voters| voters.contains(&me)) else {
            for peer in self.peers.values_mut() {
                peer.spare = false;
            }
            return;
        };
        // The followers a commit needs besides the leader.
        let partners_needed = majority(voters.len()) - 1;
        let rank = |id: NodeId, peer: &PeerReplication| Rank {
            answered_lately: self
                .last_contact
                .get(&id)
                .is_some_and(|at| now.saturating_sub(*at) <= u64::from(heartbeat_ticks)),
            matched: self.matched.get(&id).copied().unwrap_or(LogIndex::ZERO),
            partner: !peer.spare,
            lower_id: std::cmp::Reverse(id),
        };
        // Bit i: the i-th peer (in id order) is spare. Run at every drive of the peers, so no
        // allocation; a cluster of more than 64 peers has no spare follower.
        let mut spare = 0u64;
        if self.peers.len() <= 64 {
            for (position, (id, peer)) in self.peers.iter().enumerate() {
                if !voters.contains(id) || transfer_to == Some(*id) {
                    continue;
                }
                let own = rank(*id, peer);
                let ahead = self
                    .peers
                    .iter()
                    .filter(|(other_id, other)| {
                        voters.contains(other_id) && rank(**other_id, other) > own
                    })
                    .count();
                if ahead >= partners_needed {
                    spare |= 1 << position;
                }
            }
        }
        for (position, peer) in self.peers.values_mut().enumerate() {
            peer.spare = position < 64 && spare & (1 << position) != 0;
        }
        debug_assert!(
            self.peers.len() > 64 || {
                let voting = || self.peers.iter().filter(|(id, _)| voters.contains(id));
                voting().filter(|(_, peer)| !peer.spare).count()
                    >= partners_needed.min(voting().count())
            },
            "fewer voting partners than a commit needs"
        );
    }
}

/// How a voting follower ranks as a partner for the leader's commits; compared field by field,
/// higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    answered_lately: bool,
    matched: LogIndex,
    partner: bool,
    lower_id: std::cmp::Reverse<NodeId>,
}
