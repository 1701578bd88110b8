//! The follower's side of log replication (§5.3): the consistency check on `prevLogIndex` /
//! `prevLogTerm`, deleting a conflicting suffix, appending, and following the leader's commit.

use crate::message::{AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Message};
use crate::raft::{Raft, Role};
use crate::types::{LogIndex, NodeId};

impl Raft {
    pub(crate) fn handle_append_entries(&mut self, from: NodeId, mut request: AppendEntries) {
        // Same term as ours (the caller handled older and newer terms).
        match self.role {
            // Two leaders in one term cannot happen (Election Safety); a sender claiming it is lying
            // or broken, and is ignored.
            Role::Leader => return,
            Role::Candidate | Role::PreCandidate => self.become_follower(request.term, Some(from)),
            Role::Follower => self.heard_from_leader(from),
        }
        if !entries_are_well_formed(&request) {
            return;
        }
        let start = self.log.start();
        if request.prev_log_id.index < start.index {
            // The message reaches into what a snapshot here covers. That prefix is committed, so
            // it matches the leader's log (Leader Completeness): check from the snapshot on.
            request.entries.retain(|entry| entry.index > start.index);
            request.prev_log_id = start;
            if request
                .entries
                .first()
                .is_some_and(|entry| entry.term < start.term)
            {
                // A leader's entries after the snapshot's last one are of its term or later: these
                // are not a leader's, and appended they would put a term after a later one.
                return;
            }
        }
        let prev = request.prev_log_id;
        match self.log.term_at(prev.index) {
            None => {
                let hint = ConflictHint {
                    conflict_term: None,
                    first_index: self.log.last_index().next(),
                };
                self.reject_append(from, &request, hint);
            }
            Some(term) if term != prev.term => {
                let hint = ConflictHint {
                    conflict_term: Some(term),
                    first_index: self
                        .log
                        .first_index_of_run(prev.index)
                        .unwrap_or(prev.index),
                };
                self.reject_append(from, &request, hint);
            }
            Some(_) => self.accept_append(from, request),
        }
    }

    fn accept_append(&mut self, from: NodeId, request: AppendEntries) {
        // Skip what we already hold; a conflict deletes our entry and all that follow (§5.3 step 3).
        let mut first_new = request.entries.len();
        for (position, entry) in request.entries.iter().enumerate() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if entry.index <= self.commit_index {
                        // The sender contradicts a committed entry. A real leader never does
                        // (Leader Completeness): refuse the whole message and keep our log.
                        return;
                    }
                    self.truncate_from(entry.index);
                    first_new = position;
                    break;
                }
                None => {
                    first_new = position;
                    break;
                }
            }
        }
        let new_entries = &request.entries[first_new..];
        if !new_entries.is_empty() {
            self.appended_may_wait =
                Some(self.appended_may_wait.unwrap_or(true) && request.sync_may_wait);
        }
        self.log.append(new_entries);
        self.note_configurations(new_entries);
        self.ready.write.entries.extend_from_slice(new_entries);

        let matched = request.last_log_id();
        // "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new entry)".
        self.advance_commit(request.leader_commit.min(matched.index));
        if !self.answers_leaders() {
            // Rejoining: appended, but no leader may count this node yet (rejoin.rs).
            let hint = ConflictHint {
                conflict_term: None,
                first_index: matched.index.next(),
            };
            self.send_rejoining(from, &request, hint);
            return;
        }
        let answer = Message::AppendEntriesResponse(AppendEntriesResponse {
            term: self.current_term,
            request_id: request.request_id,
            outcome: AppendOutcome::Success { matched },
        });
        if new_entries.is_empty()
            && matched.index <= self.durable_index
            && self.vouched_in_flight_after.is_none()
        {
            // A heartbeat (or a message whose entries this node holds already), vouching only
            // for entries synced here, by a node whose standing (and commit past a
            // configuration) is synced too: its answer need not wait behind a write in flight,
            // which under load can take longer than the leader's check-quorum period.
            self.send_promptly(from, answer);
        } else {
            self.send(from, answer);
        }
    }

    /// Forget the log from `index` on, in memory and in the pending write.
    fn truncate_from(&mut self, index: LogIndex) {
        self.log.truncate_from(index);
        if self.membership.truncate_from(index) {
            // The configuration entry is gone: the one before it is in force again.
            self.ready.membership = Some(self.membership().clone());
        }
        self.durable_index = self.durable_index.min(index.prev());
        let pending = &mut self.ready.write.entries;
        let pending_before = pending.iter().take_while(|e| e.index < index).count();
        pending.truncate(pending_before);
        if pending.is_empty() {
            // Nothing pending precedes the cut: the durable log itself must be cut.
            let from = self
                .ready
                .write
                .truncate_from
                .map_or(index, |t| t.min(index));
            self.ready.write.truncate_from = Some(from);
        }
    }

    fn reject_append(&mut self, to: NodeId, request: &AppendEntries, hint: ConflictHint) {
        if !self.answers_leaders() {
            self.send_rejoining(to, request, hint);
            return;
        }
        let rejected_prev_index = request.prev_log_id.index;
        self.send(
            to,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: self.current_term,
                request_id: request.request_id,
                outcome: AppendOutcome::Reject {
                    rejected_prev_index,
                    hint,
                },
            }),
        );
    }
}

impl Raft {
    /// The answer of a rejoining node: where to go on, vouching for nothing.
    fn send_rejoining(&mut self, to: NodeId, request: &AppendEntries, hint: ConflictHint) {
        self.send(
            to,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: self.current_term,
                request_id: request.request_id,
                outcome: AppendOutcome::Rejoining {
                    rejected_prev_index: request.prev_log_id.index,
                    hint,
                },
            }),
        );
    }
}

/// Entries must follow `prev_log_id` at consecutive indexes, with terms that never decrease and never
/// exceed the message's term. Anything else is not from a correct leader and is dropped.
fn entries_are_well_formed(request: &AppendEntries) -> bool {
    let mut previous = request.prev_log_id;
    for entry in &request.entries {
        if entry.index.0 != previous.index.0.wrapping_add(1)
            || entry.index == LogIndex::ZERO
            || entry.term < previous.term
            || entry.term > request.term
        {
            return false;
        }
        previous = entry.log_id();
    }
    previous.term <= request.term
}
