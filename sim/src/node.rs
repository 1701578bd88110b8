//! One simulated node: the rules, a disk with a volatile part, the leader's replicators, the
//! snapshot sender and receiver, and an applier.
//!
//! The disk: a Ready's write goes into an *unsynced* queue (the rules' in-memory log already holds
//! it); a sync makes a prefix of the queue durable, in order, and only then are those writes'
//! messages released and a flush notice sent to the node (`on_log_flushed`, delivered a little
//! later, in order, as the log store's message would be). A crash loses the queue with its
//! messages. Snapshots (taken from the applied state, or received whole from a leader) are durable
//! at once, as the snapshot store makes them before anything depends on them.

use crate::config::Bug;
use crate::log::{hash_entry, SimLog};
use crate::trace::{Fnv, TraceEvent};
use bytes::Bytes;
use raftor_core::{
    quorum_matched_index, AppendEntries, ChangeError, ConfChange, Entry, EntryPayload, Envelope,
    HardState, InstallSnapshot, InstallSnapshotResponse, LeadershipChange, LeaseError, LogId,
    LogIndex, LogTerms, Membership, Message, NodeId, PendingRounds, Progress, ProgressState, Raft,
    RaftConfig, ReadState, Ready, RecoveredState, ResponseEffect, Role, SnapshotMeta,
    SnapshotOutcome, Standing, Term, TransferError,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Per-run settings the nodes need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Knobs {
    pub(crate) bug: Option<Bug>,
    pub(crate) max_entries: u64,
    pub(crate) max_inflight: usize,
    /// Bytes per InstallSnapshot chunk.
    pub(crate) chunk_bytes: usize,
}

/// What a node asks of the simulator after handling an event.
#[derive(Default)]
pub(crate) struct Effects {
    /// Messages to hand to the network now.
    pub(crate) send: Vec<Envelope>,
    pub(crate) trace: Vec<TraceEvent>,
    /// Entries applied, each with the node's term at that moment.
    pub(crate) applied: Vec<(NodeId, Term, Entry)>,
    /// State machines restored from a snapshot: (node, last included, state digest, membership).
    pub(crate) restored: Vec<(NodeId, LogId, u64, Membership)>,
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
    /// Snapshots installed from a leader.
    pub(crate) snapshots_installed: u64,
}

impl Effects {
    /// Appends `other` after what is already here.
    pub(crate) fn merge(&mut self, other: Effects) {
        let Effects {
            send,
            trace,
            applied,
            restored,
            became_leader,
            contract,
            elections,
            lost_writes,
            flushed,
            reads,
            stale_reads,
            snapshots_installed,
        } = other;
        self.send.extend(send);
        self.trace.extend(trace);
        self.applied.extend(applied);
        self.restored.extend(restored);
        self.became_leader.extend(became_leader);
        self.contract.extend(contract);
        self.elections += elections;
        self.lost_writes += lost_writes;
        self.flushed.extend(flushed);
        self.reads.extend(reads);
        self.stale_reads.extend(stale_reads);
        self.snapshots_installed += snapshots_installed;
    }
}

/// A snapshot of the simulated state machine: its metadata and bytes (the state digest, then
/// padding, so that it takes several chunks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SimSnapshot {
    pub(crate) meta: SnapshotMeta,
    /// The digest of the state: the hash of the log up to `meta.last_included`.
    pub(crate) hash: u64,
    pub(crate) data: Bytes,
}

fn checksum(data: &[u8]) -> u32 {
    let mut h = Fnv::new();
    h.bytes(data);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

impl SimSnapshot {
    fn new(last: LogId, hash: u64, membership: Membership, padding: usize) -> SimSnapshot {
        let mut data = Vec::with_capacity(24 + padding);
        data.extend_from_slice(&last.index.0.to_le_bytes());
        data.extend_from_slice(&last.term.0.to_le_bytes());
        data.extend_from_slice(&hash.to_le_bytes());
        data.extend((0..padding).map(|i| (i as u8).wrapping_mul(31)));
        SimSnapshot {
            meta: SnapshotMeta {
                last_included: last,
                size: data.len() as u64,
                checksum: checksum(&data),
                membership: Box::new(membership),
            },
            hash,
            data: Bytes::from(data),
        }
    }

    /// The snapshot assembled from received bytes, if they check out against `meta`.
    fn parse(meta: SnapshotMeta, data: Vec<u8>) -> Result<SimSnapshot, String> {
        if data.len() as u64 != meta.size || checksum(&data) != meta.checksum || data.len() < 24 {
            return Err(format!(
                "snapshot {} arrived damaged ({} bytes)",
                meta.last_included,
                data.len()
            ));
        }
        let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().expect("8"));
        let last = LogId::new(Term(word(1)), LogIndex(word(0)));
        if last != meta.last_included {
            return Err(format!(
                "snapshot {} holds the state at {last}",
                meta.last_included
            ));
        }
        Ok(SimSnapshot {
            hash: word(2),
            meta,
            data: Bytes::from(data),
        })
    }

    fn last(&self) -> LogId {
        self.meta.last_included
    }
}

/// The durable part of the disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: HardState,
    /// A new disk is rejoining (the default, as for a new store).
    pub(crate) standing: Standing,
    pub(crate) log: SimLog,
    /// The snapshot store: every snapshot taken or received, by last included entry.
    pub(crate) snapshots: BTreeMap<LogId, SimSnapshot>,
}

impl Disk {
    /// The newest snapshot, which a restart restores and a leader sends.
    pub(crate) fn newest(&self) -> Option<&SimSnapshot> {
        self.snapshots.values().max_by_key(|s| s.last().index)
    }

    /// `(last_included, digest)` of every stored snapshot, for compactions to one of them.
    fn hashes(&self) -> Vec<(LogId, u64)> {
        self.snapshots
            .values()
            .map(|s| (s.last(), s.hash))
            .collect()
    }

    fn store(&mut self, snapshot: SimSnapshot) {
        self.snapshots.insert(snapshot.last(), snapshot);
    }
}

/// A write waiting for a sync, with the messages that may leave only once it is durable.
struct PendingWrite {
    write: LogWrite,
    messages: Vec<Envelope>,
}

use raftor_core::LogWrite;

/// A snapshot on its way to a peer, one chunk in flight at a time (as the replicator actor does).
struct Sending {
    snapshot: SimSnapshot,
    offset: u64,
    request_id: u64,
    quiet_heartbeats: u32,
}

/// A snapshot arriving from a leader, chunk by chunk (as the node actor assembles it).
struct Receiving {
    from: NodeId,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    config: RaftConfig,
    raft: Option<Raft>,
    /// Grows at every start, so that events meant for an earlier life are ignored.
    pub(crate) incarnation: u64,
    /// Shut down for good after its removal from the cluster was committed.
    pub(crate) retired: bool,
    pub(crate) disk: Disk,
    /// The rules' view of the log: durable entries plus the unsynced writes, in order.
    pub(crate) log: SimLog,
    /// Grows whenever `log` loses entries.
    pub(crate) log_epoch: u64,
    unsynced: VecDeque<PendingWrite>,
    /// Whether a sync event is already scheduled for this incarnation.
    pub(crate) sync_scheduled: bool,
    /// The leader's replicators: one `Progress` per member, while leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Snapshots being sent, per peer.
    sending: BTreeMap<NodeId, Sending>,
    receiving: Option<Receiving>,
    /// Per peer: the leadership confirmation rounds waiting for an answer, oldest first, each
    /// with the first message number that answers for it, as the replicator actor keeps them.
    confirming: BTreeMap<NodeId, PendingRounds>,
    /// The state machine: the last index applied (or restored), its digest, and the configuration
    /// as of there (`None` for a joining node that has seen none yet).
    pub(crate) applied_index: LogIndex,
    pub(crate) applied_hash: u64,
    applied_membership: Option<Membership>,
    /// The snapshot the state machine was last restored from in this incarnation.
    pub(crate) restored_at: LogIndex,
    next_request_id: u64,
    last_self_vote: Term,
    /// The rules' commit index after the previous event (what a truncation must stay above).
    commit_before: LogIndex,
}

impl SimNode {
    /// A node that has never run: empty disk, down until [`SimNode::start`]. A node joining an
    /// existing cluster has no voters in `config`.
    pub(crate) fn new(config: RaftConfig) -> SimNode {
        SimNode {
            id: config.id,
            config,
            raft: None,
            incarnation: 0,
            retired: false,
            disk: Disk::default(),
            log: SimLog::default(),
            log_epoch: 0,
            unsynced: VecDeque::new(),
            sync_scheduled: false,
            progress: BTreeMap::new(),
            sending: BTreeMap::new(),
            receiving: None,
            confirming: BTreeMap::new(),
            applied_index: LogIndex::ZERO,
            applied_hash: 0,
            applied_membership: None,
            restored_at: LogIndex::ZERO,
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

    /// As `PendingNode::start` does: a newest snapshot past the log's start (the crash came
    /// between keeping it and syncing the compaction for it) compacts the durable log first.
    fn catch_up_with_newest_snapshot(&mut self) {
        let Some(last) = self.disk.newest().map(SimSnapshot::last) else {
            return;
        };
        let recovered = RecoveredState {
            log_start: self.disk.log.start,
            term_boundaries: {
                let mut terms = LogTerms::starting_at(self.disk.log.start, &[]);
                terms.append(&self.disk.log.entries);
                terms.boundaries()
            },
            ..RecoveredState::default()
        };
        if let Some(write) = recovered.catch_up_with_snapshot(last) {
            let snapshots = self.disk.hashes();
            self.disk
                .log
                .apply_write(&write, &snapshots)
                .expect("a compaction to a held snapshot");
        }
    }

    /// Start (or restart) from the durable disk: the newest snapshot, then the log after it.
    pub(crate) fn start(&mut self, seed: u64, knobs: &Knobs, fx: &mut Effects) {
        self.catch_up_with_newest_snapshot();
        let mut terms = LogTerms::starting_at(self.disk.log.start, &[]);
        terms.append(&self.disk.log.entries);
        let recovered = RecoveredState {
            hard_state: self.disk.hard_state,
            standing: self.disk.standing,
            log_start: self.disk.log.start,
            term_boundaries: terms.boundaries(),
            memberships: self.disk.log.memberships(),
            snapshot_membership: self
                .disk
                .newest()
                .map(|s| (s.last().index, (*s.meta.membership).clone())),
        };
        let raft = Raft::new(self.config.clone(), recovered, seed).expect("valid config");
        self.raft = Some(raft);
        self.incarnation += 1;
        self.log = self.disk.log.clone();
        self.log_epoch += 1;
        self.unsynced.clear();
        self.sync_scheduled = false;
        self.progress.clear();
        self.sending.clear();
        self.receiving = None;
        self.confirming.clear();
        self.commit_before = LogIndex::ZERO;
        fx.trace.push(TraceEvent::Restart {
            node: self.id,
            hard_state: self.disk.hard_state,
            last: self.log.last_id(),
            snapshot: self.disk.newest().map(SimSnapshot::last),
        });
        match self.disk.newest().cloned() {
            Some(snapshot) => self.restore(&snapshot, fx),
            None => {
                self.applied_index = LogIndex::ZERO;
                self.applied_hash = 0;
                self.restored_at = LogIndex::ZERO;
                self.applied_membership = (!self.config.voters.is_empty())
                    .then(|| Membership::bootstrap(&self.config.voters, &self.config.addresses));
            }
        }
        self.process(knobs, fx);
    }

    /// Replace the state machine's state with `snapshot`.
    fn restore(&mut self, snapshot: &SimSnapshot, fx: &mut Effects) {
        self.applied_index = snapshot.last().index;
        self.applied_hash = snapshot.hash;
        self.applied_membership = Some((*snapshot.meta.membership).clone());
        self.restored_at = snapshot.last().index;
        fx.restored.push((
            self.id,
            snapshot.last(),
            snapshot.hash,
            (*snapshot.meta.membership).clone(),
        ));
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
        self.sending.clear();
        self.receiving = None;
        self.confirming.clear();
    }

    /// The node's disk is replaced by an empty one (a lost volume): it crashes if it is up, and
    /// restarts later from nothing under its old id. With `forgetful`, the new disk claims to
    /// be a member's (a planted bug: the rejoin is skipped).
    pub(crate) fn lose_disk(&mut self, forgetful: bool, fx: &mut Effects) {
        if self.is_up() {
            self.crash(fx);
        }
        self.disk = Disk::default();
        if forgetful {
            self.disk.standing = Standing::Member;
        }
        fx.trace.push(TraceEvent::DiskLost { node: self.id });
    }

    /// Whether this node's disk holds every promise it made (for the fault model: one lost disk
    /// at a time).
    pub(crate) fn is_member(&self) -> bool {
        match &self.raft {
            Some(raft) => raft.standing() == Standing::Member,
            None => self.disk.standing == Standing::Member,
        }
    }

    /// The node's clock ran `missed` ticks ahead of the ones delivered (a stall).
    pub(crate) fn skip_ticks(&mut self, missed: u64) {
        if let Some(raft) = self.raft.as_mut() {
            raft.skip_ticks(missed);
        }
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
        let result = raft.propose(vec![payload]).map(|ids| ids[0]);
        fx.trace.push(TraceEvent::Proposed {
            node: self.id,
            command,
            result,
        });
        self.process(knobs, fx);
        result.ok()
    }

    /// A membership change asked of this node.
    pub(crate) fn propose_membership(
        &mut self,
        changes: &[ConfChange],
        knobs: &Knobs,
        fx: &mut Effects,
    ) -> Option<Result<LogId, ChangeError>> {
        let raft = self.raft.as_mut()?;
        let result = raft.propose_membership(changes);
        fx.trace.push(TraceEvent::ChangeAsked {
            node: self.id,
            what: describe_changes(changes),
            result: match &result {
                Ok(id) => format!("-> {id}"),
                Err(error) => format!("refused: {error}"),
            },
        });
        self.process(knobs, fx);
        Some(result)
    }

    /// A leadership transfer asked of this node.
    pub(crate) fn transfer_leadership(
        &mut self,
        to: NodeId,
        knobs: &Knobs,
        fx: &mut Effects,
    ) -> Option<Result<(), TransferError>> {
        let raft = self.raft.as_mut()?;
        let result = raft.transfer_leadership(to);
        fx.trace.push(TraceEvent::ChangeAsked {
            node: self.id,
            what: format!("transfer leadership to n{to}"),
            result: match &result {
                Ok(()) => "started".to_string(),
                Err(error) => format!("refused: {error}"),
            },
        });
        self.process(knobs, fx);
        Some(result)
    }

    /// Take a snapshot of the applied state and compact the log behind it, keeping `trailing`
    /// entries. Returns whether a snapshot was taken.
    pub(crate) fn take_snapshot(
        &mut self,
        trailing: u64,
        padding: usize,
        knobs: &Knobs,
        fx: &mut Effects,
    ) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        let Some(membership) = self.applied_membership.clone() else {
            return false;
        };
        let newest = self
            .disk
            .newest()
            .map_or(LogIndex::ZERO, |s| s.last().index);
        if self.applied_index <= newest {
            return false;
        }
        let Some(term) = self.log.term_at(self.applied_index) else {
            fx.contract.push((
                self.id,
                format!("applied {} but the log lacks it", self.applied_index),
            ));
            return false;
        };
        let last = LogId::new(term, self.applied_index);
        let snapshot = SimSnapshot::new(last, self.applied_hash, membership, padding);
        self.disk.store(snapshot);
        let upto = LogIndex(self.applied_index.0.saturating_sub(trailing));
        let compacted = raft.compact_log(upto);
        fx.trace.push(TraceEvent::SnapshotTaken {
            node: self.id,
            last,
            compacted,
        });
        self.process(knobs, fx);
        true
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

    /// A lease read: the index to read at, if the leader's lease allows it; `tick_lag` ticks are
    /// owed by the node's clock (see `Raft::lease_read_index`).
    pub(crate) fn lease_read(&self, tick_lag: u64) -> Option<Result<LogIndex, LeaseError>> {
        self.raft
            .as_ref()
            .map(|raft| raft.lease_read_index(tick_lag))
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
        if raft.role() == Role::Leader {
            let term = raft.current_term();
            match &message {
                Message::AppendEntriesResponse(response) => {
                    // As the replicator actor does: only an answer that vouches confirms a round.
                    if response.term == term && response.vouches() {
                        let round = self
                            .confirming
                            .get_mut(&from)
                            .and_then(|rounds| rounds.answered(response.request_id));
                        if let Some(round) = round {
                            raft.on_leadership_confirmed(from, term, round);
                        }
                    }
                    if !self.sending.contains_key(&from) {
                        if let Some(progress) = self.progress.get_mut(&from) {
                            let effect = progress.on_response(term, response);
                            if progress.take_data_loss() {
                                raft.on_follower_data_loss(from, term);
                            }
                            if let ResponseEffect::Contact { matched } = effect {
                                raft.on_replication_report(from, term, matched);
                            }
                        }
                    }
                }
                Message::InstallSnapshotResponse(response) => {
                    if response.term == term && self.sending.contains_key(&from) {
                        // A chunk's answer is contact for check-quorum (not a confirmation for
                        // reads: a rejoining node answers chunks too), as the replicator's is.
                        raft.on_replication_report(from, term, None);
                    }
                    if let Some(sending) = self.sending.get_mut(&from) {
                        if response.term == term && response.request_id == sending.request_id {
                            match response.outcome {
                                SnapshotOutcome::NextOffset(offset) => {
                                    sending.offset = if offset <= sending.snapshot.meta.size {
                                        offset
                                    } else {
                                        0
                                    };
                                    self.send_chunk(from, term, knobs, fx);
                                }
                                SnapshotOutcome::Installed { last_included } => {
                                    self.sending.remove(&from);
                                    if let Some(progress) = self.progress.get_mut(&from) {
                                        progress.on_snapshot_installed(last_included);
                                        let matched = progress.matched();
                                        let raft = self.raft.as_mut().expect("running");
                                        raft.on_replication_report(from, term, Some(matched));
                                    }
                                }
                                SnapshotOutcome::StaleTerm => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let raft = self.raft.as_mut().expect("running");
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
        let snapshots = self.disk.hashes();
        while writes < count {
            let Some(pending) = self.unsynced.pop_front() else {
                break;
            };
            writes += 1;
            if let Err(detail) = self.disk.log.apply_write(&pending.write, &snapshots) {
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
            if let Some(standing) = pending.write.standing {
                if self.disk.standing == Standing::Member && standing != Standing::Member {
                    fx.contract.push((
                        self.id,
                        format!("standing goes back: member, then {standing:?}"),
                    ));
                }
                self.disk.standing = standing;
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

    /// Carry out what the rules ask for, as the node actor does; again while a received snapshot
    /// completes (installing it changes the rules' state).
    fn process(&mut self, knobs: &Knobs, fx: &mut Effects) {
        while self.process_once(knobs, fx) {}
    }

    fn process_once(&mut self, knobs: &Knobs, fx: &mut Effects) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        let Ready {
            mut write,
            messages,
            leadership,
            heartbeat,
            confirm_round,
            reads,
            snapshot_chunks,
            restore,
            membership,
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
                        *m = m.leave_joint();
                    }
                }
            }
        }

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
                    });
                }
            } else {
                self.unsynced.push_back(PendingWrite { write, messages });
            }
        }

        // Replicators start and stop with leadership, and follow the configuration.
        let raft = self.raft.as_ref().expect("running");
        let mut members_changed = membership.is_some();
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
                self.progress.clear();
                self.sending.clear();
                self.confirming.clear();
                members_changed = true;
            }
            Some(LeadershipChange::Lost) => {
                self.confirming.clear();
                fx.trace.push(TraceEvent::LostLeadership {
                    node: self.id,
                    term: raft.current_term(),
                });
                self.progress.clear();
                self.sending.clear();
            }
            None => {}
        }
        if members_changed && raft.role() == Role::Leader {
            let members: BTreeSet<NodeId> = raft
                .membership()
                .conf
                .members()
                .into_iter()
                .filter(|peer| *peer != self.id)
                .collect();
            // Stop sending to removed nodes; start on new ones, probing from the log's end.
            self.progress.retain(|peer, _| members.contains(peer));
            self.sending.retain(|peer, _| members.contains(peer));
            self.confirming.retain(|peer, _| members.contains(peer));
            let last = raft.last_log_id().index;
            for peer in members {
                self.progress
                    .entry(peer)
                    .or_insert_with(|| Progress::new(last, knobs.max_inflight));
            }
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
                    self.applied_membership = Some(m.clone());
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

        if let Some(round) = confirm_round {
            // Every message from here on answers for the round; a heartbeat due now carries it.
            self.note_round(round);
            if !heartbeat {
                self.confirm_leadership(fx);
            }
        }
        if heartbeat {
            self.send_heartbeats(knobs, fx);
        }
        self.replicate(knobs, fx);

        // Snapshot chunks from the leader (follower), assembled as the node actor does; a
        // completed one is handed to the rules, whose next Ready installs it.
        let mut installed = false;
        for (from, chunk) in snapshot_chunks {
            installed |= self.receive_chunk(from, chunk, term, fx);
        }
        installed
    }

    /// Take in a chunk of a snapshot from the leader `from`; answer where to go on at once, or,
    /// once the whole snapshot is there and checks out, store it and hand it to the rules.
    /// Returns whether the rules were handed one.
    fn receive_chunk(
        &mut self,
        from: NodeId,
        chunk: InstallSnapshot,
        term: Term,
        fx: &mut Effects,
    ) -> bool {
        let same = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.from == from && r.meta == chunk.meta);
        let next = 'next: {
            if !same {
                if chunk.offset != 0 {
                    break 'next 0;
                }
                self.receiving = Some(Receiving {
                    from,
                    meta: chunk.meta.clone(),
                    data: Vec::new(),
                });
            }
            let current = self.receiving.as_mut().expect("just set");
            if chunk.offset != current.data.len() as u64 {
                break 'next current.data.len() as u64;
            }
            current.data.extend_from_slice(&chunk.data);
            if !chunk.done {
                break 'next current.data.len() as u64;
            }
            let done = self.receiving.take().expect("receiving");
            match SimSnapshot::parse(done.meta, done.data) {
                Ok(snapshot) => {
                    fx.trace.push(TraceEvent::SnapshotReceived {
                        node: self.id,
                        from,
                        last: snapshot.last(),
                    });
                    fx.snapshots_installed += 1;
                    self.disk.store(snapshot.clone());
                    let raft = self.raft.as_mut().expect("running");
                    raft.on_snapshot_received(from, chunk.term, chunk.request_id, snapshot.meta);
                    return true;
                }
                Err(detail) => {
                    fx.contract.push((self.id, detail));
                    0
                }
            }
        };
        // No durable promise rides on this answer: it goes out at once.
        fx.send.push(Envelope {
            from: self.id,
            to: from,
            message: Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                request_id: chunk.request_id,
                outcome: SnapshotOutcome::NextOffset(next),
            }),
        });
        false
    }

    /// Send the chunk of the snapshot at the current offset to `peer`.
    fn send_chunk(&mut self, peer: NodeId, term: Term, knobs: &Knobs, fx: &mut Effects) {
        let Some(sending) = self.sending.get_mut(&peer) else {
            return;
        };
        self.next_request_id += 1;
        sending.request_id = self.next_request_id;
        sending.quiet_heartbeats = 0;
        let size = sending.snapshot.data.len();
        let from = (sending.offset as usize).min(size);
        let to = (from + knobs.chunk_bytes.max(1)).min(size);
        fx.send.push(Envelope {
            from: self.id,
            to: peer,
            message: Message::InstallSnapshot(InstallSnapshot {
                term,
                request_id: sending.request_id,
                meta: sending.snapshot.meta.clone(),
                offset: from as u64,
                data: sending.snapshot.data.slice(from..to),
                done: to >= size,
            }),
        });
    }

    /// `peer` needs entries this leader compacted: send it the newest snapshot instead (§7).
    fn start_snapshot(&mut self, peer: NodeId, term: Term, knobs: &Knobs, fx: &mut Effects) {
        let Some(snapshot) = self.disk.newest().cloned() else {
            return;
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        progress.become_snapshot();
        fx.trace.push(TraceEvent::SnapshotSending {
            node: self.id,
            to: peer,
            last: snapshot.last(),
        });
        self.sending.insert(
            peer,
            Sending {
                snapshot,
                offset: 0,
                request_id: 0,
                quiet_heartbeats: 0,
            },
        );
        self.send_chunk(peer, term, knobs, fx);
    }

    /// A heartbeat period passed: every replicator in Replicate state sends an empty
    /// AppendEntries at its match point; lost probes are resent by `replicate`, lost snapshot
    /// chunks after a few quiet heartbeats.
    fn send_heartbeats(&mut self, knobs: &Knobs, fx: &mut Effects) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.current_term();
        let commit = raft.commit_index();
        let mut resend = Vec::new();
        for (peer, progress) in self.progress.iter_mut() {
            if let Some(sending) = self.sending.get_mut(peer) {
                sending.quiet_heartbeats += 1;
                if sending.quiet_heartbeats >= 3 {
                    resend.push(*peer);
                }
                continue;
            }
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
        for peer in resend {
            self.send_chunk(peer, term, knobs, fx);
        }
    }

    /// A confirmation round began: the first answer from a peer to a message numbered from now
    /// on (or to any later message) confirms it for that peer.
    fn note_round(&mut self, round: u64) {
        let first = self.next_request_id + 1;
        for peer in self.progress.keys() {
            self.confirming.entry(*peer).or_default().note(round, first);
        }
    }

    /// Reads wait for a round between heartbeats: every replicator sends a heartbeat now.
    fn confirm_leadership(&mut self, fx: &mut Effects) {
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

    /// Send whatever flow control allows, from the in-memory log (synced or not); a snapshot to a
    /// peer that needs compacted entries.
    fn replicate(&mut self, knobs: &Knobs, fx: &mut Effects) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.current_term();
        let commit = raft.commit_index();
        let last = self.log.last_index();
        let mut need_snapshot = Vec::new();
        for (peer, progress) in self.progress.iter_mut() {
            if self.sending.contains_key(peer) {
                continue;
            }
            while let Some(range) = progress.next_send(last, knobs.max_entries) {
                let Some(prev_term) = self.log.term_at(range.prev_index) else {
                    need_snapshot.push(*peer);
                    break;
                };
                let entries = self.log.slice(range.prev_index, range.last_index);
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
        for peer in need_snapshot {
            self.start_snapshot(peer, term, knobs, fx);
        }
    }
}

/// A list of changes in one short line: `+learner n4, -n2`.
pub(crate) fn describe_changes(changes: &[ConfChange]) -> String {
    changes
        .iter()
        .map(|change| match change {
            ConfChange::AddVoter { id, .. } => format!("+voter n{id}"),
            ConfChange::AddLearner {
                id,
                promote_when_caught_up,
                ..
            } => format!(
                "+learner n{id}{}",
                if *promote_when_caught_up {
                    " (auto-promote)"
                } else {
                    ""
                }
            ),
            ConfChange::Remove { id } => format!("-n{id}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
