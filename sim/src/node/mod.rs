//! One simulated node: the rules, a disk with a volatile part, the driver of the leader's sends
//! (entries fetched from the log, snapshots from the disk, as the node actor does), the snapshot
//! receiver, and an applier. What to send, and when, is the rules' own decision (`Ready::sends`).
//!
//! The disk: a Ready's write goes into an *unsynced* queue (the rules' in-memory log already holds
//! it); a sync makes a prefix of the queue durable, in order, and only then are those writes'
//! messages released and a flush notice sent to the node (`on_log_flushed`, delivered a little
//! later, in order, as the log store's message would be). A crash loses the queue with its
//! messages. Snapshots (taken from the applied state, or received whole from a leader) are durable
//! at once, as the snapshot store makes them before anything depends on them.
//!
//! - `effects.rs`: what a node asks of the simulator; the per-run knobs.
//! - `disk.rs`: the durable disk and the snapshots on it.
//! - `ready.rs`: carrying out a `Ready` (the write, leadership, the applier).
//! - `sends.rs`: carrying out the leader's sends.
//! - `receive.rs`: assembling a snapshot from a leader.

mod disk;
mod effects;
mod ready;
mod receive;
mod sends;

pub(crate) use disk::{Disk, SimSnapshot};
pub(crate) use effects::{Effects, Knobs};

use crate::log::SimLog;
use crate::trace::TraceEvent;
use bytes::Bytes;
use raftor_core::{
    ChangeError, ConfChange, Envelope, LeaseError, LogId, LogIndex, LogTerms, LogWrite, Membership,
    Message, NodeId, Raft, RaftConfig, RecoveredState, SnapshotMeta, Standing, Term, TransferError,
};
use std::collections::{BTreeMap, VecDeque};

/// A write waiting for a sync, with the messages that may leave only once it is durable.
struct PendingWrite {
    write: LogWrite,
    messages: Vec<Envelope>,
    /// The rules said the write may wait (`Ready::write_may_wait`): a spare follower's.
    may_wait: bool,
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
    /// Per peer, the snapshot the leader's rules are sending it, as opened (the node actor
    /// keeps the file open for the whole transfer).
    open_snapshots: BTreeMap<NodeId, SimSnapshot>,
    receiving: Option<Receiving>,
    /// The state machine: the last index applied (or restored), its digest, and the configuration
    /// as of there (`None` for a joining node that has seen none yet).
    pub(crate) applied_index: LogIndex,
    pub(crate) applied_hash: u64,
    applied_membership: Option<Membership>,
    /// The snapshot the state machine was last restored from in this incarnation.
    pub(crate) restored_at: LogIndex,
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
            open_snapshots: BTreeMap::new(),
            receiving: None,
            applied_index: LogIndex::ZERO,
            applied_hash: 0,
            applied_membership: None,
            restored_at: LogIndex::ZERO,
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

    /// Whether every write waiting for a sync may wait (a spare follower's): the node actor then
    /// holds its sync a little (`SimConfig::spare_sync_hold`).
    pub(crate) fn unsynced_may_wait(&self) -> bool {
        self.unsynced.iter().all(|pending| pending.may_wait)
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
        self.open_snapshots.clear();
        self.receiving = None;
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
        self.open_snapshots.clear();
        self.receiving = None;
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
