//! What the leader's rules hand their driver to send to one peer ([`PeerSend`], in
//! `Ready::sends`), and what the driver tells the rules back about it ([`SendOutcome`]).
//!
//! The rules decide every message and number it; the driver only does the IO the rules cannot:
//! it fetches entries (from its cache or the log store) and snapshot bytes (from the snapshot
//! store). Two of these come back with an outcome, because the driver may not manage all that
//! was asked: a message has a byte bound the rules cannot see, and a snapshot may have been
//! replaced or be unreadable.

use crate::message::{AppendEntries, Envelope, InstallSnapshot, Message, SnapshotMeta};
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};
use bytes::Bytes;

/// One thing to send to one peer now. These promise nothing about this node's disk, so unlike
/// `Ready::messages` they leave at once, while the leader's own write is still syncing (thesis
/// §10.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSend {
    /// A message complete as it is: a heartbeat, or a probe that carries no entries.
    Message(Envelope),
    /// An AppendEntries whose entries the driver fetches; it then reports
    /// [`SendOutcome::EntriesSent`] or [`SendOutcome::EntriesUnavailable`].
    Entries(EntriesOrder),
    /// The peer needs entries this leader compacted (§7): open the newest snapshot to send it,
    /// then report [`SendOutcome::SnapshotOpened`] or [`SendOutcome::SnapshotUnavailable`].
    OpenSnapshot { to: NodeId, request_id: u64 },
    /// One chunk of the snapshot being sent; [`SendOutcome::SnapshotUnavailable`] if it cannot be
    /// read. Its answer comes from the peer.
    SnapshotChunk(ChunkOrder),
}

/// Send the entries after `prev_log_id` up to `last_index` to `to`, in one AppendEntries. The
/// driver may stop earlier, at its bound on a message's bytes (but sends at least one entry);
/// the rules order nothing else for this peer until it reports what it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntriesOrder {
    pub to: NodeId,
    pub request_id: u64,
    pub term: Term,
    /// The entry just before the first to send (§5.3 `prevLogIndex`, `prevLogTerm`).
    pub prev_log_id: LogId,
    /// The last entry to send; `> prev_log_id.index`.
    pub last_index: LogIndex,
    pub leader_commit: LogIndex,
    /// The peer is a spare follower: the leader's commits do not wait for it now
    /// (`AppendEntries::sync_may_wait`).
    pub sync_may_wait: bool,
}

impl EntriesOrder {
    /// The first entry to send.
    pub fn first_index(&self) -> LogIndex {
        self.prev_log_id.index.next()
    }

    /// The message carrying `entries`: consecutive, from [`EntriesOrder::first_index`] on, ending
    /// at or before `last_index`.
    pub fn message(&self, from: NodeId, entries: Vec<Entry>) -> Envelope {
        debug_assert!(entries
            .first()
            .is_none_or(|e| e.index == self.first_index()));
        debug_assert!(entries.last().is_none_or(|e| e.index <= self.last_index));
        Envelope {
            from,
            to: self.to,
            message: Message::AppendEntries(AppendEntries {
                term: self.term,
                prev_log_id: self.prev_log_id,
                entries,
                leader_commit: self.leader_commit,
                sync_may_wait: self.sync_may_wait,
                request_id: self.request_id,
            }),
        }
    }

    /// What to report once `entries` (as given to [`EntriesOrder::message`]) left.
    pub fn sent(&self, entries: &[Entry]) -> SendOutcome {
        SendOutcome::EntriesSent {
            to: self.to,
            request_id: self.request_id,
            last_index: entries.last().map_or(self.prev_log_id.index, |e| e.index),
            bytes: entries.iter().map(Entry::payload_len).sum(),
        }
    }

    /// What to report when the entries could not be fetched.
    pub fn unavailable(&self) -> SendOutcome {
        SendOutcome::EntriesUnavailable {
            to: self.to,
            request_id: self.request_id,
        }
    }
}

/// Send the chunk of snapshot `meta` that starts at `offset` to `to`. The driver picks the
/// chunk's length; the chunk that reaches `meta.size` is marked done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkOrder {
    pub to: NodeId,
    pub request_id: u64,
    pub term: Term,
    pub meta: SnapshotMeta,
    /// `<= meta.size`.
    pub offset: u64,
}

impl ChunkOrder {
    /// The message carrying `data`, the snapshot's bytes from `offset`.
    pub fn message(&self, from: NodeId, data: Bytes) -> Envelope {
        let done = self.offset.saturating_add(data.len() as u64) >= self.meta.size;
        Envelope {
            from,
            to: self.to,
            message: Message::InstallSnapshot(InstallSnapshot {
                term: self.term,
                request_id: self.request_id,
                meta: self.meta.clone(),
                offset: self.offset,
                data,
                done,
            }),
        }
    }

    /// What to report when the chunk could not be read.
    pub fn unavailable(&self) -> SendOutcome {
        SendOutcome::SnapshotUnavailable {
            to: self.to,
            request_id: self.request_id,
        }
    }
}

/// What the driver did with a [`PeerSend`], for `Raft::on_send_outcome`. Each names the
/// `request_id` it answers; an outcome for anything but the peer's current order (an order of an
/// earlier term, or one the rules gave up on) changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The AppendEntries left carrying the entries up to `last_index`, `bytes` of payload.
    EntriesSent {
        to: NodeId,
        request_id: u64,
        last_index: LogIndex,
        bytes: usize,
    },
    /// The entries could not be fetched (compacted meanwhile, or a read failed): nothing was
    /// sent.
    EntriesUnavailable { to: NodeId, request_id: u64 },
    /// The newest snapshot, `meta`, is open for sending.
    SnapshotOpened {
        to: NodeId,
        request_id: u64,
        meta: SnapshotMeta,
    },
    /// There is no snapshot to send, or it cannot be read.
    SnapshotUnavailable { to: NodeId, request_id: u64 },
}
