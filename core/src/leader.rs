//! The leader's duties: taking proposals, counting replicas and committing only entries of its own
//! term (§5.3, §5.4.2), and stepping down when it loses touch with a majority (thesis §6.2).

use crate::quorum::{majority, quorum_matched_index};
use crate::raft::{LeaderState, Raft, Role};
use crate::ready::LeadershipChange;
use crate::types::{Entry, EntryPayload, LogId, LogIndex, NodeId, Term};
use bytes::Bytes;
use thiserror::Error;

/// Why a proposal was not appended. Nothing was written: the caller may retry elsewhere.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("not the leader (leader: {leader:?})")]
pub struct NotLeader {
    /// The leader this node knows of, to redirect the client.
    pub leader: Option<NodeId>,
}

impl Raft {
    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.id());
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.leader = Some(LeaderState::default());
        self.ready.leadership = Some(LeadershipChange::Became {
            term: self.current_term,
            last_index: self.log.last_index(),
        });
        // A blank entry of the new term lets earlier entries commit with it (§5.4.2, §8).
        self.append_as_leader(vec![EntryPayload::Blank]);
    }

    /// Appends commands to the leader's log; they are replicated and, once committed, applied.
    /// Returns the id of each new entry, in order.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<Vec<LogId>, NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader: self.leader_id,
            });
        }
        Ok(self.append_as_leader(commands.into_iter().map(EntryPayload::Command).collect()))
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
        self.ready.write.entries.extend(entries);
        self.ready.appended = Some(index);
        ids
    }

    /// The log store made this node's log durable up to `last`: what is committed up to there may
    /// be applied, and the leader's own copy counts toward the majority only from now on. A late
    /// report about entries since replaced (`last` no longer in the log) is ignored.
    pub fn on_log_flushed(&mut self, last: LogId) {
        if !self.log.matches(last) {
            return;
        }
        self.durable_index = self.durable_index.max(last.index);
        if self.role != Role::Leader {
            return;
        }
        let me = self.id();
        self.record_match(me, last.index);
    }

    /// A replicator of `term` heard from `peer`; `matched` is the entry the peer confirmed it holds
    /// durably, if the answer was a success. Reports from an older term are dropped.
    pub fn on_replication_report(&mut self, peer: NodeId, term: Term, matched: Option<LogId>) {
        if self.role != Role::Leader
            || term != self.current_term
            || !self.config.voters.contains(&peer)
        {
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
        let quorum_index = quorum_matched_index(&self.config.voters, &leader.matched);
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
            .config
            .voters
            .iter()
            .filter(|id| **id == me || leader.recent_active.contains(id))
            .count();
        leader.recent_active.clear();
        if active < majority(self.config.voters.len()) {
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }
}
