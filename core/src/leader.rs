//! The leader's duties: taking proposals, counting replicas and committing only entries of its own
//! term (§5.3, §5.4.2), and stepping down when it loses touch with a majority (thesis §6.2).

use crate::membership::{ConfChange, MembershipError};
use crate::message::{Message, TimeoutNow};
use crate::raft::{LeaderState, Raft, Role, Transfer};
use crate::ready::LeadershipChange;
use crate::types::{Entry, EntryPayload, LogId, LogIndex, NodeId};
use bytes::Bytes;
use thiserror::Error;

/// Why a proposal was not appended. Nothing was written: the caller may retry elsewhere.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("not the leader (leader: {leader:?})")]
pub struct NotLeader {
    /// The leader this node knows of, to redirect the client.
    pub leader: Option<NodeId>,
}

/// Why a proposal was refused. Nothing was appended: the caller may retry (elsewhere, or later).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// The leader is handing leadership to `to` and takes no proposals meanwhile (thesis §3.10).
    #[error("leadership is being transferred to node {to}")]
    Transferring { to: NodeId },
}

/// Why a membership change was not appended. Nothing was written.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Only one change at a time: the configuration at `index` is not committed yet, or the
    /// cluster is still in a joint configuration.
    #[error("a membership change is in progress (the configuration at index {index} is not committed, or is joint); retry once it is done")]
    InProgress { index: LogIndex },
    /// A new leader changes nothing before it has committed an entry of its own term (which
    /// commits every earlier configuration too).
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    NotReady,
    #[error(transparent)]
    Invalid(#[from] MembershipError),
}

/// Why a leadership transfer cannot start.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum TransferError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("node {0} is not a voter of the current configuration")]
    NotAVoter(NodeId),
}

impl Raft {
    pub(crate) fn become_leader(&mut self) {
        let me = self.id();
        let term_durable = self.votes.keys().any(|voter| *voter != me);
        self.role = Role::Leader;
        self.leader_id = Some(me);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.leader = Some(LeaderState {
            peers_stale: true,
            term_durable,
            ..LeaderState::default()
        });
        self.ready.leadership = Some(LeadershipChange::Became {
            term: self.current_term,
            last_index: self.log.last_index(),
        });
        // A blank entry of the new term lets earlier entries commit with it (§5.4.2, §8).
        self.append_as_leader(vec![EntryPayload::Blank]);
    }

    /// Appends commands to the leader's log; they are replicated and, once committed, applied.
    /// Returns the id of each new entry, in order.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<Vec<LogId>, Refusal> {
        self.check_accepting()?;
        Ok(self.append_as_leader(commands.into_iter().map(EntryPayload::Command).collect()))
    }

    /// Whether this node takes proposals now: it leads, and is not handing leadership over.
    fn check_accepting(&self) -> Result<(), Refusal> {
        if self.role != Role::Leader {
            return Err(Refusal::NotLeader(NotLeader {
                leader: self.leader_id,
            }));
        }
        if let Some(to) = self.transfer_target() {
            return Err(Refusal::Transferring { to });
        }
        if self.handing_over_after_removal() {
            // Removed: it hands over once the change has settled (`crate::settle`).
            return Err(Refusal::NotLeader(NotLeader { leader: None }));
        }
        Ok(())
    }

    /// Appends a configuration entry that makes `changes` (§6): directly for a change of at most
    /// one voter, through a joint configuration otherwise (left by itself once committed). Only
    /// one change is in flight at a time. Returns the entry's id; the change is done once it (and,
    /// for a joint change, the entry that leaves the joint configuration) is committed.
    pub fn propose_membership(&mut self, changes: &[ConfChange]) -> Result<LogId, ChangeError> {
        self.check_accepting()?;
        if !self.committed_in_current_term() {
            return Err(ChangeError::NotReady);
        }
        if self.membership_index() > self.commit_index || self.membership().conf.is_joint() {
            return Err(ChangeError::InProgress {
                index: self.membership_index(),
            });
        }
        let next = self.membership().apply(changes)?;
        let ids = self.append_as_leader(vec![EntryPayload::Config(Box::new(next))]);
        Ok(ids[0])
    }

    /// Hand leadership to the voter `to` (thesis §3.10): proposals are refused from now on; once
    /// `to` holds the whole log it is told to campaign at once. Abandoned (proposals resume) if
    /// `to` has not taken over within an election timeout of the first request: a repeated
    /// request for the same target does not extend that deadline (a client retrying toward an
    /// unreachable node would otherwise block writes for as long as it retries), and a request
    /// for another target replaces the transfer. A transfer to this node cancels the one in
    /// progress (as etcd raft does) and resumes proposals at once.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader(NotLeader {
                leader: self.leader_id,
            }));
        }
        if to == self.id() {
            if let Some(leader) = self.leader.as_mut() {
                leader.transfer = None;
            }
            return Ok(());
        }
        if !self.membership().conf.voters.contains(&to) {
            return Err(TransferError::NotAVoter(to));
        }
        let ticks = self.ticks;
        if let Some(leader) = self.leader.as_mut() {
            if leader.transfer.map(|t| t.to) != Some(to) {
                leader.transfer = Some(Transfer {
                    to,
                    started_at: ticks,
                });
            }
        }
        self.send_timeout_now_if_caught_up(to);
        Ok(())
    }

    /// The transfer target holds the whole log: tell it to campaign.
    fn send_timeout_now_if_caught_up(&mut self, peer: NodeId) {
        let last = self.log.last_index();
        let caught_up = self.leader.as_ref().is_some_and(|leader| {
            leader.transfer.map(|t| t.to) == Some(peer)
                && leader.matched.get(&peer).is_some_and(|m| *m >= last)
        });
        if caught_up {
            self.send_timeout_now(peer);
        }
    }

    /// Tell `peer` to campaign at once. From here on this leader holds no lease (see
    /// `LeaderState::timeout_now_sent`).
    fn send_timeout_now(&mut self, peer: NodeId) {
        if let Some(leader) = self.leader.as_mut() {
            leader.timeout_now_sent = true;
        }
        let term = self.current_term;
        self.send(peer, Message::TimeoutNow(TimeoutNow { term }));
    }

    /// A transfer that did not finish within an election timeout is abandoned (proposals resume).
    pub(crate) fn abandon_late_transfer(&mut self) {
        let (ticks, timeout) = (self.ticks, u64::from(self.config.election_ticks_min));
        if let Some(leader) = self.leader.as_mut() {
            if leader
                .transfer
                .is_some_and(|t| ticks.saturating_sub(t.started_at) >= timeout)
            {
                leader.transfer = None;
            }
        }
    }

    /// Promote one learner marked `promote_when_caught_up` whose log is within `promote_lag` of
    /// the leader's, if no other change is in flight.
    pub(crate) fn promote_caught_up_learners(&mut self) {
        let last = self.log.last_index().0;
        let lag = self.config.promote_lag;
        let Some(leader) = self.leader.as_ref() else {
            return;
        };
        let ready = self
            .membership()
            .promote_when_caught_up
            .iter()
            .copied()
            .find(|id| {
                leader
                    .matched
                    .get(id)
                    .is_some_and(|m| m.0.saturating_add(lag) >= last)
            });
        if let Some(id) = ready {
            // Refused while another change is in flight: tried again at the next heartbeat.
            let _ = self.propose_membership(&[ConfChange::promote(id)]);
        }
    }

    /// The configuration in force is committed: leave a joint configuration (when `auto_leave`),
    /// or watch it settle (`crate::settle`), after which a leader that is no longer a voter
    /// hands over and steps down (thesis §4.2.2).
    pub(crate) fn on_membership_committed(&mut self) {
        if self.role != Role::Leader || self.membership_index() > self.commit_index {
            return;
        }
        let conf = &self.membership().conf;
        if conf.is_joint() {
            if conf.auto_leave {
                let next = self.membership().leave_joint();
                self.append_as_leader(vec![EntryPayload::Config(Box::new(next))]);
            }
            return;
        }
        self.start_settle_watch();
    }

    /// Removed (or demoted), with the change settled or past its deadline: tell every peer the
    /// commit, let the most up-to-date voter take over at once, and step down.
    pub(crate) fn hand_over_after_removal(&mut self) {
        let conf = &self.membership().conf;
        let successor = self.leader.as_ref().and_then(|leader| {
            conf.voters
                .iter()
                .max_by_key(|v| leader.matched.get(v).copied().unwrap_or_default())
                .copied()
        });
        self.tell_followers_the_commit();
        if let Some(successor) = successor {
            self.send_timeout_now(successor);
        }
        let term = self.current_term;
        self.become_follower(term, None);
    }

    fn append_as_leader(&mut self, payloads: Vec<EntryPayload>) -> Vec<LogId> {
        let term = self.current_term;
        let mut index = self.log.last_index();
        let entries: Vec<Entry> = payloads
            .into_iter()
            .map(|payload| {
                index = index.next();
                Entry {
                    term,
                    index,
                    payload,
                }
            })
            .collect();
        let ids = entries.iter().map(Entry::log_id).collect();
        self.log.append(&entries);
        self.note_configurations(&entries);
        self.ready.write.entries.extend(entries);
        ids
    }

    /// The log store made this node's log durable up to `last`: what is committed up to there may
    /// be applied, and the leader's own copy counts toward the majority only from now on. A late
    /// report about entries since replaced (`last` no longer in the log) is ignored.
    pub fn on_log_flushed(&mut self, last: LogId) {
        if !self.log.matches(last) {
            return;
        }
        // An entry appended after the standing (or a commit past a configuration) was handed
        // out is durable, so that is too (writes become durable in order; an entry past the
        // log's end then is in a later write).
        if self
            .vouched_in_flight_after
            .is_some_and(|after| last.index > after)
        {
            self.vouched_in_flight_after = None;
        }
        self.durable_index = self.durable_index.max(last.index);
        self.check_caught_up();
        if self.role != Role::Leader {
            return;
        }
        if last.term == self.current_term {
            if let Some(leader) = self.leader.as_mut() {
                leader.term_durable = true;
            }
        }
        let me = self.id();
        self.record_match(me, last.index);
    }

    /// `peer` answered in this term; `matched` is the entry it confirmed it holds durably, if
    /// the answer was a success. Only members of the configuration in force count.
    pub(crate) fn on_contact(&mut self, peer: NodeId, matched: Option<LogId>) {
        if self.role != Role::Leader || !self.membership().conf.contains(peer) {
            return;
        }
        let ticks = self.ticks;
        if let Some(leader) = self.leader.as_mut() {
            leader.recent_active.insert(peer);
            leader.last_contact.insert(peer, ticks);
        }
        if let Some(matched) = matched {
            // A peer can only hold what the leader holds (Log Matching); anything else is nonsense.
            if self.log.matches(matched) {
                self.record_match(peer, matched.index);
                self.send_timeout_now_if_caught_up(peer);
            }
        }
    }

    fn record_match(&mut self, node: NodeId, index: LogIndex) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let entry = leader.matched.entry(node).or_default();
        if index <= *entry {
            return;
        }
        *entry = index;
        let quorum_index = self
            .membership
            .current()
            .conf
            .committed_index(&leader.matched);
        // Only an entry of the current term is committed by counting replicas; earlier ones commit
        // with it (§5.4.2, Figure 8).
        if self.log.term_at(quorum_index) == Some(self.current_term) {
            self.advance_commit(quorum_index);
        }
    }

    pub(crate) fn check_quorum(&mut self) {
        if !self.config.check_quorum {
            return;
        }
        let me = self.id();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let active = self
            .membership
            .current()
            .conf
            .has_quorum(|id| id == me || leader.recent_active.contains(&id));
        leader.recent_active.clear();
        if !active {
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }
}
