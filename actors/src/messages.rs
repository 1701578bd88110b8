//! The messages the actors exchange, grouped by the actor that receives them. Every message that
//! answers an earlier one, or that may arrive late, carries the term it belongs to, so the receiver
//! can drop it once that term is over.

use crate::error::{ProposeError, ReadError};
use actix::{Message, Recipient};
use bytes::Bytes;
use raftor_core::{
    AppendEntriesResponse, Entry, Envelope, InstallSnapshotResponse, LogId, LogIndex, LogWrite,
    NodeId, SnapshotMeta, Term,
};
use tokio::sync::oneshot;

// ---- to the node ----

/// The log store made the log durable up to `last` (the leader counts its own copy from here).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Flushed {
    pub last: LogId,
}

/// A replicator of `term` heard from `peer`; `matched` when the peer accepted entries.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReplicationReport {
    pub peer: NodeId,
    pub term: Term,
    pub matched: Option<LogId>,
    /// The replicator's `nextIndex` for the peer after this answer (for status).
    pub next_index: LogIndex,
}

/// A replicator of `term` found that `peer` lost its data: what it acknowledged no longer counts.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FollowerDataLoss {
    pub peer: NodeId,
    pub term: Term,
}

/// A replicator of `term` heard from `peer` in answer to a message sent after confirmation round
/// `round` was asked for: the peer still recognised this leader then.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LeadershipConfirmed {
    pub peer: NodeId,
    pub term: Term,
    pub round: u64,
}

/// Read `query` from the state machine once this leader has confirmed its leadership and applied
/// up to the read index (linearizable).
#[derive(Message, Debug)]
#[rtype(result = "Result<Bytes, ReadError>")]
pub struct LinearizableRead {
    pub query: Bytes,
}

/// Read `query` on the leader from its lease (no confirmation round while the lease is fresh).
#[derive(Message, Debug)]
#[rtype(result = "Result<Bytes, ReadError>")]
pub struct LeaseRead {
    pub query: Bytes,
}

/// A replicator learned of a newer term from its peer: the leader must step down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HigherTermSeen {
    pub peer: NodeId,
    pub term: Term,
}

/// The applier applied every entry up to `index`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Applied {
    pub index: LogIndex,
}

/// The log store could not write: the node stops taking part rather than answer without durability.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StorageFailed {
    pub error: String,
}

/// Propose a command; answered once it is applied, with the state machine's result.
#[derive(Message, Debug)]
#[rtype(result = "Result<Bytes, ProposeError>")]
pub struct Propose {
    pub command: Bytes,
}

/// Stop the node and every actor it started.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

// ---- to the log store ----

/// Make `write` durable, then send `then_send` (replies that promise what `write` holds, and every
/// message of the same step, so nothing overtakes a durable promise).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Write {
    pub write: LogWrite,
    pub then_send: Vec<Envelope>,
}

/// Read entries `from..=to` (at most `max_bytes` of payload, at least one entry), with the term of
/// the entry at `prev_index` when asked; answered with [`EntriesRead`] to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadEntries {
    pub prev_index: Option<LogIndex>,
    pub from: LogIndex,
    pub to: LogIndex,
    pub max_bytes: usize,
    pub reply: Recipient<EntriesRead>,
}

// ---- from the log store ----

/// The answer to [`ReadEntries`]. `prev_term` is `None` when it was not asked for or the log does not
/// reach `prev_index`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct EntriesRead {
    pub prev_index: Option<LogIndex>,
    pub prev_term: Option<Term>,
    pub entries: Result<Vec<Entry>, String>,
    /// Some of what was asked for (the entries or `prev_index`) is compacted away: a follower that
    /// needs it must be sent a snapshot (§7).
    pub compacted: bool,
}

// ---- snapshots ----

/// A snapshot of this node's state machine is durable in its snapshot store (from the applier to
/// the node, which may now compact the log behind it).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SnapshotTaken {
    pub meta: SnapshotMeta,
}

/// Take a snapshot now (on demand); answered once it is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TakeSnapshot {
    pub reply: oneshot::Sender<Result<SnapshotMeta, String>>,
}

/// Replace the state machine's state with snapshot `meta` from the snapshot store (a follower
/// installed it): entries up to its last included index count as applied.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RestoreSnapshot {
    pub meta: SnapshotMeta,
}

/// The peer's answer to an InstallSnapshot chunk (to its replicator).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerSnapshotResponse(pub InstallSnapshotResponse);

// ---- to a replicator ----

/// The leader's log or commit index moved.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LeaderProgress {
    pub last_index: LogIndex,
    pub commit_index: LogIndex,
}

/// Send a message now and report when the peer answers it (a leadership confirmation round).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConfirmLeadership {
    pub round: u64,
}

/// A heartbeat period elapsed (§5.2). The heartbeat, and every message after it, answers for
/// leadership confirmation round `round` (the rules issue one with each heartbeat).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Heartbeat {
    pub commit_index: LogIndex,
    pub round: Option<u64>,
}

/// The peer's answer to an AppendEntries.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerResponse(pub AppendEntriesResponse);

// ---- to the applier ----

/// Entries up to `index` are committed and durable here: the applier may apply them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Commit {
    pub index: LogIndex,
}

/// Answer `reply` when the entry at `index` is applied: with the result if it still has `term`, with
/// [`ProposeError::Dropped`] if another leader's entry took its place.
#[derive(Debug)]
pub struct Waiter {
    pub index: LogIndex,
    pub term: Term,
    pub reply: oneshot::Sender<Result<Bytes, ProposeError>>,
}

/// The proposers of one batch of entries, registered with the applier before any of the entries
/// can commit (the node sends this ahead of the [`Commit`] that could cover them).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AwaitApply(pub Vec<Waiter>);

/// Answer `query` once the state machine has applied up to `index`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct QueryAt {
    pub index: LogIndex,
    pub query: Bytes,
    pub reply: oneshot::Sender<Bytes>,
}

/// Answer a read-only query from the local state machine (whatever it has applied so far).
#[derive(Message, Debug)]
#[rtype(result = "Bytes")]
pub struct QueryLocal {
    pub query: Bytes,
}
