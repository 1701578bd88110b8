//! Carrying out the rules' `Ready`, as the node actor does: the write (held until a sync),
//! the messages behind it, leadership and configuration changes, and the applier.

use crate::config::Bug;
use crate::log::hash_entry;
use crate::trace::TraceEvent;
use raftor_core::{
    quorum_matched_index, EntryPayload, Envelope, LeadershipChange, Message, Ready, Role,
};

use super::{Effects, Knobs, PendingWrite, SimNode};

impl SimNode {
    /// Carry out what the rules ask for, as the node actor does; again while a received snapshot
    /// completes (installing it changes the rules' state).
    pub(super) fn process(&mut self, knobs: &Knobs, fx: &mut Effects) {
        while self.process_once(knobs, fx) {}
    }

    fn process_once(&mut self, knobs: &Knobs, fx: &mut Effects) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        let Ready {
            mut write,
            messages,
            prompt_messages,
            sends,
            leadership,
            peers_lost_data,
            reads,
            snapshot_chunks,
            restore,
            membership,
            write_may_wait,
            ..
        } = raft.take_ready();
        let term = raft.current_term();
        fx.reads
            .extend(reads.into_iter().map(|read| (self.id, read)));

        if knobs.bug == Some(Bug::NoJointConsensus) {
            // The planted bug: a change of two voters is stored and sent as the direct change to
            // the final configuration, skipping the joint one the rules asked for.
            for entry in &mut write.entries {
                if let EntryPayload::Config(m) = &mut entry.payload {
                    if m.conf.is_joint() {
                        **m = m.leave_joint();
                    }
                }
            }
        }

        // Answers that promise nothing unsynced leave at once, as the node actor sends them.
        fx.send.extend(prompt_messages);
        // The write and the messages that must follow it.
        if !write.is_empty() || !messages.is_empty() {
            let send_now = knobs.bug == Some(Bug::SendBeforeSync)
                || (write.is_empty() && self.unsynced.is_empty());
            fx.trace.push(TraceEvent::Write {
                node: self.id,
                hard_state: write.hard_state,
                truncate_from: write.truncate_from,
                compact_to: write.compact_to,
                entries: write
                    .entries
                    .first()
                    .zip(write.entries.last())
                    .map(|(a, b)| (a.log_id(), b.log_id())),
                messages: messages.len(),
                held: !send_now,
            });
            if let Some(hs) = write.hard_state {
                if hs.voted_for == Some(self.id) && hs.current_term > self.last_self_vote {
                    self.last_self_vote = hs.current_term;
                    fx.elections += 1;
                }
            }
            // Installing a snapshot may discard committed entries, which the snapshot covers.
            let covered = write
                .compact_to
                .is_some_and(|c| c.index >= self.commit_before);
            if let Some(from) = write.truncate_from.filter(|_| !covered) {
                if from <= self.commit_before {
                    fx.contract.push((
                        self.id,
                        format!(
                            "truncates from {from}, at or below its commit index {}",
                            self.commit_before
                        ),
                    ));
                }
            }
            if !write.is_empty() {
                match self.log.apply_write(&write, &self.disk.hashes()) {
                    Ok(lost) => {
                        if lost {
                            self.log_epoch += 1;
                        }
                    }
                    Err(detail) => fx.contract.push((self.id, detail)),
                }
            }
            let messages = if knobs.bug == Some(Bug::VoteBeforeSync) && !send_now {
                // The planted bug: a vote grant leaves before the vote is on disk.
                let (early, held): (Vec<Envelope>, Vec<Envelope>) =
                    messages.into_iter().partition(|envelope| {
                        matches!(
                            &envelope.message,
                            Message::RequestVoteResponse(response)
                                if response.vote_granted && !response.pre_vote
                        )
                    });
                fx.send.extend(early);
                held
            } else {
                messages
            };
            if send_now {
                fx.send.extend(messages);
                if !write.is_empty() {
                    self.unsynced.push_back(PendingWrite {
                        write,
                        messages: Vec::new(),
                        may_wait: write_may_wait,
                    });
                }
            } else {
                self.unsynced.push_back(PendingWrite {
                    write,
                    messages,
                    may_wait: write_may_wait,
                });
            }
        }

        // The driver of the leader's sends keeps nothing across terms but open snapshots.
        let raft = self.raft.as_ref().expect("running");
        if let Some(m) = &membership {
            fx.trace.push(TraceEvent::Config {
                node: self.id,
                conf: crate::trace::ShowConf(&m.conf).to_string(),
            });
        }
        match leadership {
            Some(LeadershipChange::Became { term, last_index }) => {
                fx.became_leader.push((self.id, term));
                fx.trace.push(TraceEvent::BecameLeader {
                    node: self.id,
                    term,
                    last_index,
                });
                self.open_snapshots.clear();
            }
            Some(LeadershipChange::Lost) => {
                fx.trace.push(TraceEvent::LostLeadership {
                    node: self.id,
                    term: raft.current_term(),
                });
                self.open_snapshots.clear();
            }
            None => {}
        }
        for peer in peers_lost_data {
            fx.trace.push(TraceEvent::PeerLostData {
                node: self.id,
                peer,
            });
        }

        if let Some(meta) = restore {
            match self.disk.snapshots.get(&meta.last_included).cloned() {
                Some(snapshot) if snapshot.meta == meta => {
                    fx.trace.push(TraceEvent::Restored {
                        node: self.id,
                        last: meta.last_included,
                    });
                    self.restore(&snapshot, fx);
                }
                _ => fx.contract.push((
                    self.id,
                    format!(
                        "asked to restore snapshot {}, which is not in the snapshot store",
                        meta.last_included
                    ),
                )),
            }
        }

        // The applier: up to what is committed and durable here.
        let raft = self.raft.as_ref().expect("running");
        let mut apply_to = raft.applicable_index();
        if raft.role() == Role::Leader {
            let planted = match knobs.bug {
                Some(Bug::ApplyUncommitted) => Some(self.log.last_index()),
                Some(Bug::CommitOldTermByCounting) => raft
                    .matched()
                    .map(|matched| quorum_matched_index(&raft.membership().conf.voters, matched)),
                _ => None,
            };
            if let Some(planted) = planted {
                apply_to = apply_to.max(planted);
            }
        }
        if apply_to > self.applied_index {
            let term = raft.current_term();
            let commit = raft.commit_index();
            let first = self.applied_index.next();
            let target = apply_to.min(self.log.last_index());
            let mut index = first;
            while index <= target {
                let Some(entry) = self.log.get(index).cloned() else {
                    fx.contract.push((
                        self.id,
                        format!("entry {index} is to be applied, but the log lacks it"),
                    ));
                    break;
                };
                self.applied_hash = hash_entry(self.applied_hash, &entry);
                if let EntryPayload::Config(m) = &entry.payload {
                    self.applied_membership = Some(raftor_core::Membership::clone(m));
                }
                self.applied_index = index;
                fx.applied.push((self.id, term, entry));
                index = index.next();
            }
            if self.applied_index >= first {
                fx.trace.push(TraceEvent::Applied {
                    node: self.id,
                    from: first,
                    to: self.applied_index,
                    commit,
                });
            }
        }

        let raft = self.raft.as_ref().expect("running");
        self.commit_before = raft.commit_index();
        let last = raft.last_log_id();
        let mine = self.log.last_id();
        if last != mine {
            fx.contract.push((
                self.id,
                format!("the rules' log ends at {last}, the written log at {mine}"),
            ));
        }

        self.carry_out(sends, knobs, fx);

        // Snapshot chunks from the leader (follower), assembled as the node actor does; a
        // completed one is handed to the rules, whose next Ready installs it.
        let mut installed = false;
        for (from, chunk) in snapshot_chunks {
            installed |= self.receive_chunk(from, chunk, term, fx);
        }
        installed
    }
}
