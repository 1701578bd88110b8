//! One simulated node: the rules, a disk with a volatile part, the leader's replicators and an
//! applier.
//!
//! The disk: a Ready's write goes into an *unsynced* queue (the rules' in-memory log already holds
//! it); a sync makes a prefix of the queue durable, in order, and only then are those writes'
//! messages released and a flush notice sent to the node (`on_log_flushed`, delivered a little
//! later, in order, as the log store's message would be). A crash loses the queue with its
//! messages.

use crate::config::Bug;
use crate::trace::{Fnv, TraceEvent};
use bytes::Bytes;
use raftor_core::{
    quorum_matched_index, AppendEntries, Entry, Envelope, HardState, LeadershipChange, LeaseError,
    LogId, LogIndex, LogTerms, LogWrite, Message, NodeId, Progress, ProgressState, Raft,
    RaftConfig, ReadState, Ready, RecoveredState, ResponseEffect, Role, Term,
};
use std::collections::{BTreeMap, VecDeque};

/// Per-run settings the nodes need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Knobs {
    pub(crate) bug: Option<Bug>,
    pub(crate) max_entries: u64,
    pub(crate) max_inflight: usize,
}

/// What a node asks of the simulator after handling an event.
#[derive(Default)]
pub(crate) struct Effects {
    /// Messages to hand to the network now.
    pub(crate) send: Vec<Envelope>,
    pub(crate) trace: Vec<TraceEvent>,
    /// Entries applied, each with the node's term at that moment.
    pub(crate) applied: Vec<(NodeId, Term, Entry)>,
    /// Terms in which the node took office.
    pub(crate) became_leader: Vec<(NodeId, Term)>,
    /// Breaches of the Ready contract by the rules.
    pub(crate) contract: Vec<(NodeId, String)>,
    /// Elections started (the node voted for itself in a new term).
    pub(crate) elections: u64,
    /// Unsynced writes lost in crashes.
    pub(crate) lost_writes: u64,
    /// Flush notices for the node (`on_log_flushed`), to deliver in order.
    pub(crate) flushed: Vec<(NodeId, LogId)>,
    /// Answers to `read_index` requests.
    pub(crate) reads: Vec<(NodeId, ReadState)>,
    /// Lease reads found stale (checked where they are made).
    pub(crate) stale_reads: Vec<crate::invariants::Violation>,
}

impl Effects {
    /// Appends `other` after what is already here.
    pub(crate) fn merge(&mut self, other: Effects) {
        let Effects {
            send,
            trace,
            applied,
            became_leader,
            contract,
            elections,
            lost_writes,
            flushed,
            reads,
            stale_reads,
        } = other;
        self.send.extend(send);
        self.trace.extend(trace);
        self.applied.extend(applied);
        self.became_leader.extend(became_leader);
        self.contract.extend(contract);
        self.elections += elections;
        self.lost_writes += lost_writes;
        self.flushed.extend(flushed);
        self.reads.extend(reads);
        self.stale_reads.extend(stale_reads);
    }
}

/// The durable part of the disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: HardState,
    pub(crate) log: Vec<Entry>,
}

/// A write waiting for a sync, with the messages that may leave only once it is durable.
struct PendingWrite {
    write: LogWrite,
    messages: Vec<Envelope>,
}

pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    config: RaftConfig,
    raft: Option<Raft>,
    /// Grows at every start, so that events meant for an earlier life are ignored.
    pub(crate) incarnation: u64,
    pub(crate) disk: Disk,
    /// The rules' view of the log: durable entries plus the unsynced writes, in order.
    pub(crate) log: Vec<Entry>,
    /// `hashes[i]`: a hash of `log[..=i]`, for a cheap Log Matching check.
    pub(crate) hashes: Vec<u64>,
    /// Grows whenever `log` loses entries.
    pub(crate) log_epoch: u64,
    unsynced: VecDeque<PendingWrite>,
    /// Whether a sync event is already scheduled for this incarnation.
    pub(crate) sync_scheduled: bool,
    /// The leader's replicators: one `Progress` per peer, while leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Per peer: a leadership confirmation round (for reads) waiting for an answer to a message
    /// numbered at least this, as the replicator actor keeps it.
    confirming: BTreeMap<NodeId, (u64, u64)>,
    /// Entries applied in this incarnation, in index order.
    pub(crate) applied: Vec<Entry>,
    next_request_id: u64,
    last_self_vote: Term,
    /// The rules' commit index after the previous event (what a truncation must stay above).
    commit_before: LogIndex,
}

/// Extends `log` by `write`, checking what the rules promise of it.
fn apply_write(log: &mut Vec<Entry>, write: &LogWrite) -> Result<bool, String> {
    let mut truncated = false;
    if let Some(from) = write.truncate_from {
        if from == LogIndex::ZERO || from.0 > log.len() as u64 {
            return Err(format!(
                "truncate_from {from} is outside the log (last index {})",
                log.len()
            ));
        }
        log.truncate(from.0 as usize - 1);
        truncated = true;
    }
    for entry in &write.entries {
        if entry.index.0 != log.len() as u64 + 1 {
            return Err(format!(
                "entry {} does not follow the log's last index {}",
                entry.log_id(),
                log.len()
            ));
        }
        if log.last().is_some_and(|last| last.term > entry.term) {
            return Err(format!("entry {} goes back in term", entry.log_id()));
        }
        log.push(entry.clone());
    }
    Ok(truncated)
}

fn hash_entry(previous: u64, entry: &Entry) -> u64 {
    let mut h = Fnv::new();
    h.u64(previous);
    h.u64(entry.index.0);
    h.u64(entry.term.0);
    match &entry.payload {
        raftor_core::EntryPayload::Blank => h.u64(0),
        raftor_core::EntryPayload::Command(bytes) => {
            h.u64(1);
            h.bytes(bytes);
        }
    }
    h.finish()
}

impl SimNode {
    /// A node that has never run: empty disk, down until [`SimNode::start`].
    pub(crate) fn new(config: RaftConfig) -> SimNode {
        SimNode {
            id: config.id,
            config,
            raft: None,
            incarnation: 0,
            disk: Disk::default(),
            log: Vec::new(),
            hashes: Vec::new(),
            log_epoch: 0,
            unsynced: VecDeque::new(),
            sync_scheduled: false,
            progress: BTreeMap::new(),
            confirming: BTreeMap::new(),
            applied: Vec::new(),
            next_request_id: 0,
            last_self_vote: Term::ZERO,
            commit_before: LogIndex::ZERO,
        }
    }

    /// The rules, while the node runs.
    pub(crate) fn raft(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }

    pub(crate) fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// How many writes wait for a sync.
    pub(crate) fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    /// Start (or restart) from the durable disk.
    pub(crate) fn start(&mut self, seed: u64, knobs: &Knobs, fx: &mut Effects) {
        let mut terms = LogTerms::default();
        terms.append(&self.disk.log);
        let recovered = RecoveredState {
            hard_state: self.disk.hard_state,
            term_boundaries: terms.boundaries(),
            log_start: raftor_core::LogId::ZERO,
        };
        let raft = Raft::new(self.config.clone(), recovered, seed).expect("valid config");
        self.raft = Some(raft);
        self.incarnation += 1;
        self.log = self.disk.log.clone();
        self.hashes.clear();
        let mut previous = 0;
        for entry in &self.log {
            previous = hash_entry(previous, entry);
            self.hashes.push(previous);
        }
        self.log_epoch += 1;
        self.unsynced.clear();
        self.sync_scheduled = false;
        self.progress.clear();
        self.confirming.clear();
        self.applied.clear();
        self.commit_before = LogIndex::ZERO;
        fx.trace.push(TraceEvent::Restart {
            node: self.id,
            hard_state: self.disk.hard_state,
            last: self.log.last().map(Entry::log_id).unwrap_or_default(),
        });
        self.process(knobs, fx);
    }

    /// Lose everything but the durable disk.
    pub(crate) fn crash(&mut self, fx: &mut Effects) {
        let lost_messages = self.unsynced.iter().map(|p| p.messages.len()).sum();
        fx.lost_writes += self.unsynced.len() as u64;
        fx.trace.push(TraceEvent::Crash {
            node: self.id,
            lost_writes: self.unsynced.len(),
            lost_messages,
        });
        self.raft = None;
        self.unsynced.clear();
        self.sync_scheduled = false;
        self.progress.clear();
        self.confirming.clear();
        self.applied.clear();
    }

    pub(crate) fn tick(&mut self, knobs: &Knobs, fx: &mut Effects) {
        if let Some(raft) = self.raft.as_mut() {
            raft.tick();
            self.process(knobs, fx);
        }
    }

    /// A client command; returns where the leader put it, or `None` if refused (or down).
    pub(crate) fn propose(
        &mut self,
        command: u64,
        knobs: &Knobs,
        fx: &mut Effects,
    ) -> Option<LogId> {
        let raft = self.raft.as_mut()?;
        let payload = Bytes::from(format!("c{command}"));
        let result = raft
            .propose(vec![payload])
            .map(|ids| ids[0])
            .map_err(|not_leader| not_leader.leader);
        fx.trace.push(TraceEvent::Proposed {
            node: self.id,
            command,
            result,
        });
        self.process(knobs, fx);
        result.ok()
    }

    /// A linearizable read (ReadIndex): `Ok` if this node leads and took it (the answer comes in
    /// a later Ready), `Err` if it refused.
    pub(crate) fn read_index(&mut self, id: u64, knobs: &Knobs, fx: &mut Effects) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        let taken = raft.read_index(id).is_ok();
        self.process(knobs, fx);
        taken
    }

    /// A lease read: the index to read at, if the leader's lease allows it.
    pub(crate) fn lease_read(&self) -> Option<Result<LogIndex, LeaseError>> {
        self.raft.as_ref().map(Raft::lease_read_index)
    }

    pub(crate) fn receive(
        &mut self,
        from: NodeId,
        message: Message,
        knobs: &Knobs,
        fx: &mut Effects,
    ) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        if let Message::AppendEntriesResponse(response) = &message {
            if raft.role() == Role::Leader {
                let term = raft.current_term();
                if let Some((round, first)) = self.confirming.get(&from).copied() {
                    if response.term == term && response.request_id >= first {
                        self.confirming.remove(&from);
                        raft.on_leadership_confirmed(from, term, round);
                    }
                }
                if let Some(progress) = self.progress.get_mut(&from) {
                    if let ResponseEffect::Contact { matched } =
                        progress.on_response(term, response)
                    {
                        raft.on_replication_report(from, term, matched);
                    }
                }
            }
        }
        raft.step(from, message);
        self.process(knobs, fx);
    }

    /// Make the first `count` queued writes durable, release their messages, report the flush.
    pub(crate) fn sync(&mut self, count: usize, knobs: &Knobs, fx: &mut Effects) {
        if self.raft.is_none() {
            return;
        }
        let mut writes = 0;
        let mut released = 0;
        let mut flushed = Vec::new();
        while writes < count {
            let Some(pending) = self.unsynced.pop_front() else {
                break;
            };
            writes += 1;
            if let Err(detail) = apply_write(&mut self.disk.log, &pending.write) {
                fx.contract
                    .push((self.id, format!("durable log: {detail}")));
            }
            if let Some(hard_state) = pending.write.hard_state {
                let old = self.disk.hard_state;
                if hard_state.current_term < old.current_term
                    || (hard_state.current_term == old.current_term
                        && old.voted_for.is_some()
                        && hard_state.voted_for != old.voted_for)
                {
                    fx.contract.push((
                        self.id,
                        format!("hard state goes back: {old:?} then {hard_state:?}"),
                    ));
                }
                self.disk.hard_state = hard_state;
            }
            released += pending.messages.len();
            fx.send.extend(pending.messages);
            if let Some(last) = pending.write.last_log_id() {
                flushed.push(last);
            }
        }
        fx.trace.push(TraceEvent::Sync {
            node: self.id,
            writes,
            last: flushed.last().copied(),
            released,
            pending: self.unsynced.len(),
        });
        // The log store tells the node later, through its mailbox (in order).
        fx.flushed
            .extend(flushed.into_iter().map(|last| (self.id, last)));
        self.process(knobs, fx);
    }

    /// The log store's notice that the log is durable up to `last` reaches the node.
    pub(crate) fn flushed(&mut self, last: LogId, knobs: &Knobs, fx: &mut Effects) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        fx.trace.push(TraceEvent::FlushNotice {
            node: self.id,
            last,
        });
        raft.on_log_flushed(last);
        self.process(knobs, fx);
    }

    /// Carry out what the rules ask for, as the node actor does.
    fn process(&mut self, knobs: &Knobs, fx: &mut Effects) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        let Ready {
            write,
            messages,
            commit_index,
            leadership,
            heartbeat,
            confirm_round,
            reads,
            ..
        } = raft.take_ready();
        fx.reads
            .extend(reads.into_iter().map(|read| (self.id, read)));

        // The write and the messages that must follow it.
        if !write.is_empty() || !messages.is_empty() {
            let send_now = knobs.bug == Some(Bug::SendBeforeSync)
                || (write.is_empty() && self.unsynced.is_empty());
            fx.trace.push(TraceEvent::Write {
                node: self.id,
                hard_state: write.hard_state,
                truncate_from: write.truncate_from,
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
            if let Some(from) = write.truncate_from {
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
                match apply_write(&mut self.log, &write) {
                    Ok(truncated) => {
                        if truncated {
                            self.log_epoch += 1;
                        }
                        self.hashes.truncate(self.log.len().min(self.hashes.len()));
                        let mut previous = self.hashes.last().copied().unwrap_or(0);
                        for entry in &self.log[self.hashes.len()..] {
                            previous = hash_entry(previous, entry);
                            self.hashes.push(previous);
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
                    });
                }
            } else {
                self.unsynced.push_back(PendingWrite { write, messages });
            }
        }

        // Replicators start and stop with leadership.
        match leadership {
            Some(LeadershipChange::Became { term, last_index }) => {
                fx.became_leader.push((self.id, term));
                fx.trace.push(TraceEvent::BecameLeader {
                    node: self.id,
                    term,
                    last_index,
                });
                self.progress = self
                    .config
                    .voters
                    .iter()
                    .filter(|peer| **peer != self.id)
                    .map(|peer| (*peer, Progress::new(last_index, knobs.max_inflight)))
                    .collect();
                self.confirming.clear();
            }
            Some(LeadershipChange::Lost) => {
                self.confirming.clear();
                fx.trace.push(TraceEvent::LostLeadership {
                    node: self.id,
                    term: raft.current_term(),
                });
                self.progress.clear();
            }
            None => {}
        }

        // The applier.
        let mut apply_to = commit_index;
        if raft.role() == Role::Leader {
            let planted = match knobs.bug {
                Some(Bug::ApplyUncommitted) => Some(LogIndex(self.log.len() as u64)),
                Some(Bug::CommitOldTermByCounting) => raft
                    .matched()
                    .map(|matched| quorum_matched_index(&self.config.voters, matched)),
                _ => None,
            };
            if let Some(planted) = planted {
                if planted > LogIndex(self.applied.len() as u64) {
                    apply_to = Some(apply_to.map_or(planted, |c| c.max(planted)));
                }
            }
        }
        if let Some(target) = apply_to {
            let term = raft.current_term();
            let commit = raft.commit_index();
            let first = self.applied.len() as u64 + 1;
            let target = target.0.min(self.log.len() as u64);
            for index in first..=target {
                let entry = self.log[index as usize - 1].clone();
                fx.applied.push((self.id, term, entry.clone()));
                self.applied.push(entry);
            }
            if target >= first {
                fx.trace.push(TraceEvent::Applied {
                    node: self.id,
                    from: LogIndex(first),
                    to: LogIndex(target),
                    commit,
                });
            }
        }

        self.commit_before = raft.commit_index();
        let last = raft.last_log_id();
        let mine = self.log.last().map(Entry::log_id).unwrap_or_default();
        if last != mine {
            fx.contract.push((
                self.id,
                format!("the rules' log ends at {last}, the written log at {mine}"),
            ));
        }

        if heartbeat {
            self.send_heartbeats(fx);
        }
        if let Some(round) = confirm_round {
            self.confirm_leadership(round, fx);
        }
        self.replicate(knobs, fx);
    }

    /// A heartbeat period passed: every replicator in Replicate state sends an empty
    /// AppendEntries at its match point; lost probes are resent by `replicate`.
    fn send_heartbeats(&mut self, fx: &mut Effects) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.current_term();
        let commit = raft.commit_index();
        for (peer, progress) in self.progress.iter_mut() {
            progress.on_heartbeat_tick();
            if progress.state() == ProgressState::Replicate {
                self.next_request_id += 1;
                fx.send.push(Envelope {
                    from: self.id,
                    to: *peer,
                    message: Message::AppendEntries(AppendEntries {
                        term,
                        prev_log_id: progress.matched(),
                        entries: Vec::new(),
                        leader_commit: commit.min(progress.matched().index),
                        request_id: self.next_request_id,
                    }),
                });
            }
        }
    }

    /// Reads wait for round `round`: every replicator sends a heartbeat now, and the first answer
    /// to it (or to any later message) confirms the round for that peer.
    fn confirm_leadership(&mut self, round: u64, fx: &mut Effects) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.current_term();
        let commit = raft.commit_index();
        for (peer, progress) in &self.progress {
            self.next_request_id += 1;
            self.confirming.insert(*peer, (round, self.next_request_id));
            fx.send.push(Envelope {
                from: self.id,
                to: *peer,
                message: Message::AppendEntries(AppendEntries {
                    term,
                    prev_log_id: progress.matched(),
                    entries: Vec::new(),
                    leader_commit: commit.min(progress.matched().index),
                    request_id: self.next_request_id,
                }),
            });
        }
    }

    /// Send whatever flow control allows, from the in-memory log (synced or not).
    fn replicate(&mut self, knobs: &Knobs, fx: &mut Effects) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.current_term();
        let commit = raft.commit_index();
        let last = LogIndex(self.log.len() as u64);
        for (peer, progress) in self.progress.iter_mut() {
            while let Some(range) = progress.next_send(last, knobs.max_entries) {
                let prev = range.prev_index.0 as usize;
                let entries = self.log[prev..range.last_index.0 as usize].to_vec();
                let prev_term = if prev == 0 {
                    Term::ZERO
                } else {
                    self.log[prev - 1].term
                };
                progress.on_sent(range);
                self.next_request_id += 1;
                fx.send.push(Envelope {
                    from: self.id,
                    to: *peer,
                    message: Message::AppendEntries(AppendEntries {
                        term,
                        prev_log_id: LogId::new(prev_term, range.prev_index),
                        entries,
                        leader_commit: commit,
                        request_id: self.next_request_id,
                    }),
                });
            }
        }
    }
}
