//! Linearizable reads without writing to the log (§8 of the paper, thesis §6.4): ReadIndex, and
//! the cheaper lease read that trusts check-quorum's lease.
//!
//! ReadIndex: the leader notes its commit index, confirms it still leads by hearing from a majority
//! in answer to messages sent after the read arrived, and only then lets the read run, once the
//! state machine has applied up to the noted index. A leader that has not yet committed an entry
//! of its own term does not know the latest commit index, so its reads wait for that first.

use crate::leader::NotLeader;
use crate::raft::{Raft, Role};
use crate::types::{LogIndex, NodeId};

/// How long the issue tick of a confirmation round is kept: well past any lease window (half a
/// minimum election timeout), so an answer that could still extend the lease finds its round.
const ROUND_HISTORY_TICKS: u64 = 1024;

/// The answer to one [`Raft::read_index`] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the request.
    pub id: u64,
    /// The index the state machine must have applied before the read runs, or why there is none.
    pub result: Result<LogIndex, NotLeader>,
}

/// A read waiting for its leadership confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    /// The confirmation round that must be acknowledged by a majority.
    pub(crate) round: u64,
    /// The commit index when the read arrived.
    pub(crate) index: LogIndex,
}

/// Why a lease read cannot be answered locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseError {
    NotLeader(NotLeader),
    /// The leader has not heard from a majority recently enough, or has not yet committed an entry
    /// of its term: fall back to ReadIndex.
    Expired,
}

impl Raft {
    /// Ask for a linearizable read point. The answer arrives in a later [`crate::Ready`]'s `reads`,
    /// with the same `id`; meanwhile a confirmation round asks every peer.
    pub fn read_index(&mut self, id: u64) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader: self.leader_id,
            });
        }
        if self.committed_in_current_term() {
            self.issue_read(id);
        } else if let Some(leader) = self.leader.as_mut() {
            leader.reads_awaiting_commit.push(id);
        }
        Ok(())
    }

    /// `peer` answered, in this term, a message sent for confirmation round `round` or later.
    pub(crate) fn on_leadership_confirmed(&mut self, peer: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.id();
        let ticks = self.ticks;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let conf = &self.membership.current().conf;
        if !conf.is_voter(peer) || round > leader.read_round {
            return;
        }
        leader.last_contact.insert(peer, ticks);
        // The lease runs from when the newest answered round was issued.
        if let Some(issued) = leader
            .round_issued_at
            .iter()
            .rev()
            .find(|(r, _)| *r <= round)
            .map(|(_, at)| *at)
        {
            let contact = leader.lease_contact.entry(peer).or_default();
            *contact = (*contact).max(issued);
        }
        let acked = leader.acked_round.entry(peer).or_default();
        *acked = (*acked).max(round);
        while let Some(read) = leader.pending_reads.front().copied() {
            let confirmed = conf.has_quorum(|v| {
                v == me || leader.acked_round.get(&v).is_some_and(|r| *r >= read.round)
            });
            if !confirmed {
                break;
            }
            leader.pending_reads.pop_front();
            self.ready.reads.push(ReadState {
                id: read.id,
                result: Ok(read.index),
            });
        }
    }

    /// The commit index, if this leader may serve a read from it without a confirmation round:
    /// a majority answered messages sent less than half the minimum election timeout ago, so
    /// (with clock drift below that margin) each of them still refuses to vote for another
    /// candidate, and no other leader can have been elected meanwhile.
    ///
    /// `tick_lag` is how many tick periods the driver's clock has run past the ticks it has
    /// delivered (0 when ticks are on time). After a stall of the node's thread the tick count
    /// lags real time, and a lease judged on it alone would outlive the followers' refusals; the
    /// lag is added to "now", so a stalled node falls back to ReadIndex.
    pub fn lease_read_index(&self, tick_lag: u64) -> Result<LogIndex, LeaseError> {
        if self.role != Role::Leader {
            return Err(LeaseError::NotLeader(NotLeader {
                leader: self.leader_id,
            }));
        }
        // The lease rests on leader stickiness: followers that heard from this leader refuse votes
        // for a minimum election timeout. Without check-quorum they do not, so there is no lease.
        if !self.config.check_quorum || !self.committed_in_current_term() {
            return Err(LeaseError::Expired);
        }
        // After TimeoutNow, voters may elect its target at once, stickiness set aside: no lease.
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| leader.timeout_now_sent)
        {
            return Err(LeaseError::Expired);
        }
        let me = self.id();
        let window = u64::from(self.config.election_ticks_min / 2);
        let now = self.ticks.saturating_add(tick_lag);
        let fresh = match self.leader.as_ref() {
            Some(leader) => self.membership().conf.has_quorum(|v| {
                v == me
                    || leader
                        .lease_contact
                        .get(&v)
                        .is_some_and(|at| now.saturating_sub(*at) < window)
            }),
            None => false,
        };
        if fresh {
            Ok(self.commit_index)
        } else {
            Err(LeaseError::Expired)
        }
    }

    /// Ticks since each peer last answered this leader; `None` unless leader.
    pub fn ticks_since_contact(&self) -> Option<Vec<(NodeId, Option<u64>)>> {
        let leader = self.leader.as_ref()?;
        let me = self.id();
        Some(
            self.membership()
                .conf
                .members()
                .into_iter()
                .filter(|v| *v != me)
                .map(|v| (v, leader.last_contact.get(&v).map(|at| self.ticks - at)))
                .collect(),
        )
    }

    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term_at(self.commit_index) == Some(self.current_term)
    }

    fn issue_read(&mut self, id: u64) {
        let index = self.commit_index;
        let me = self.id();
        if self.membership().conf.has_quorum(|v| v == me) {
            self.ready.reads.push(ReadState {
                id,
                result: Ok(index),
            });
            return;
        }
        let Some(round) = self.start_confirm_round() else {
            return;
        };
        if let Some(leader) = self.leader.as_mut() {
            leader
                .pending_reads
                .push_back(PendingRead { id, round, index });
        }
    }

    /// Confirm leadership with messages numbered from now on (`LeaderState::round_due`), and
    /// note when. Reads and a heartbeat that come together share one round. `None` unless leader.
    pub(crate) fn start_confirm_round(&mut self) -> Option<u64> {
        let ticks = self.ticks;
        let leader = self.leader.as_mut()?;
        if let Some(round) = leader.round_due {
            return Some(round);
        }
        leader.read_round += 1;
        let round = leader.read_round;
        debug_assert!(leader
            .round_issued_at
            .back()
            .is_none_or(|(r, at)| *r < round && *at <= ticks));
        leader.round_issued_at.push_back((round, ticks));
        while leader
            .round_issued_at
            .front()
            .is_some_and(|(_, at)| ticks.saturating_sub(*at) > ROUND_HISTORY_TICKS)
        {
            leader.round_issued_at.pop_front();
        }
        leader.round_due = Some(round);
        Some(round)
    }

    /// The leader just committed an entry of its term: reads that waited for it may go ahead.
    pub(crate) fn release_reads_awaiting_commit(&mut self) {
        let waiting = match self.leader.as_mut() {
            Some(leader) => std::mem::take(&mut leader.reads_awaiting_commit),
            None => return,
        };
        for id in waiting {
            self.issue_read(id);
        }
    }

    /// Leadership was lost: every read still waiting fails, pointing at whoever leads now.
    pub(crate) fn fail_pending_reads(&mut self) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let ids: Vec<u64> = leader
            .pending_reads
            .drain(..)
            .map(|read| read.id)
            .chain(leader.reads_awaiting_commit.drain(..))
            .collect();
        for id in ids {
            self.ready.reads.push(ReadState {
                id,
                result: Err(NotLeader { leader: None }),
            });
        }
    }
}
