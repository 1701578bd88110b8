//! Log compaction and snapshots (§7): the rules' side. The state machine's bytes never pass
//! through here; the rules decide what the log becomes, and what to answer.
//!
//! - Compaction: once a snapshot covering index `i` is durable, [`Raft::compact_log`] forgets the
//!   log up to `i` (or less, keeping a trailing margin) and asks the store to delete it.
//! - Installing: a follower hands every [`InstallSnapshot`] chunk it accepted by term to its driver
//!   (`Ready::snapshot_chunks`); once the driver has the whole snapshot, checked and durable, it calls
//!   [`Raft::on_snapshot_received`], which installs it: the log keeps what follows the snapshot if it
//!   holds the snapshot's last entry, else is discarded whole; the commit index moves to the
//!   snapshot; the state machine must be restored from it (`Ready::restore`).

use crate::message::{
    InstallSnapshot, InstallSnapshotResponse, Message, SnapshotMeta, SnapshotOutcome,
};
use crate::raft::{Raft, Role};
use crate::storage_types::LogWrite;
use crate::types::{LogId, LogIndex, NodeId, Term};

impl Raft {
    /// Forget the log up to `upto`, which a durable snapshot covers. Only what is applicable here
    /// (committed and durable) can be compacted; anything else, or what is compacted already, is
    /// refused with `None`. Returns the log's new start.
    pub fn compact_log(&mut self, upto: LogIndex) -> Option<LogId> {
        if upto <= self.log.start().index || upto > self.applicable_index() {
            return None;
        }
        let term = self.log.term_at(upto)?;
        let start = LogId::new(term, upto);
        self.log.compact(start);
        self.membership.compact(upto);
        self.ready.write.merge(LogWrite {
            compact_to: Some(start),
            ..LogWrite::default()
        });
        Some(start)
    }

    /// The log's start: the last compacted entry (`LogId::ZERO` if none was).
    pub fn log_start(&self) -> LogId {
        self.log.start()
    }

    /// A chunk from the leader of the current term (the caller handled older and newer terms).
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, chunk: InstallSnapshot) {
        if !snapshot_is_well_formed(chunk.term, &chunk.meta) {
            return;
        }
        match self.role {
            // Two leaders in one term cannot happen; a sender claiming it is ignored.
            Role::Leader => return,
            Role::Candidate | Role::PreCandidate => self.become_follower(chunk.term, Some(from)),
            Role::Follower => self.heard_from_leader(from),
        }
        self.ready.snapshot_chunks.push((from, chunk));
    }

    /// The driver holds the whole snapshot `meta` from `from`, checked and durable, sent in `term`
    /// with the chunk numbered `request_id`: install it, and answer once the install is durable.
    pub fn on_snapshot_received(
        &mut self,
        from: NodeId,
        term: Term,
        request_id: u64,
        meta: SnapshotMeta,
    ) {
        if term != self.current_term || self.role != Role::Follower || self.leader_id != Some(from)
        {
            // The transfer belongs to an earlier term or leader: nothing to install or answer.
            return;
        }
        if !snapshot_is_well_formed(term, &meta) {
            return;
        }
        let last = meta.last_included;
        if last.index > self.commit_index {
            let keeps_suffix = self.log.matches(last);
            let write = LogWrite {
                // A log that does not hold the snapshot's last entry is discarded whole.
                truncate_from: (!keeps_suffix && self.log.last_index() >= self.log.first_index())
                    .then(|| self.log.first_index()),
                compact_to: Some(last),
                ..LogWrite::default()
            };
            self.log.install_snapshot(last);
            self.membership
                .install_snapshot(last.index, (*meta.membership).clone(), keeps_suffix);
            self.ready.membership = Some(self.membership().clone());
            self.on_configuration_learned();
            self.ready.write.merge(write);
            self.durable_index = if keeps_suffix {
                self.durable_index.max(last.index)
            } else {
                last.index
            };
            self.commit_index = last.index;
            self.ready.commit_index = Some(last.index);
            self.ready.restore = Some(meta.clone());
        }
        // A rejoining node answers this too: the snapshot holds only committed entries, so its
        // match cannot commit anything new (rejoin.rs).
        self.check_caught_up();
        // Either installed now, or already covered by what this node has committed: both mean the
        // follower holds the leader's log up to `last`.
        self.send(
            from,
            Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term: self.current_term,
                request_id,
                outcome: SnapshotOutcome::Installed {
                    last_included: last,
                },
            }),
        );
    }
}

/// A snapshot sent in `term` covers entries of that term at most (a leader holds none of a later
/// one), and its configuration is one a leader could have committed. Anything else is not from a
/// correct leader, and installing it would put a later term in the log than the node's own, or
/// leave it with a configuration nobody can run: it is dropped.
fn snapshot_is_well_formed(term: Term, meta: &SnapshotMeta) -> bool {
    meta.last_included.term <= term
        && meta.last_included.index != LogIndex::ZERO
        && meta.membership.conf.validate().is_ok()
}
