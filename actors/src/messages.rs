//! The messages the actors exchange, grouped by the actor that receives them. Every message that
//! answers an earlier one, or that may arrive late, carries the term it belongs to, so the receiver
//! can drop it once that term is over.

use crate::error::{ProposeError, ReadError};
use actix::{Message, Recipient};
use bytes::Bytes;
use raftor_core::{
    ChunkOrder, EntriesOrder, Entry, Envelope, LogId, LogIndex, LogWrite, SendOutcome,
    SnapshotMeta, Term,
};
use tokio::sync::oneshot;

// ---- to the node ----

/// The log store made the log durable up to `last` (the leader counts its own copy from here).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Flushed {
    pub last: LogId,
}

/// How a node answers a request it took on: the actor that finishes it (the applier) sends the
/// result here; a sender dropped unanswered means the node stopped first. The caller awaits it
/// directly, so no task of the node's waits on its behalf.
pub type Answer<T, E> = oneshot::Receiver<Result<T, E>>;

/// The sending half of an [`Answer`], held by whoever will finish the request.
pub type Reply<T, E> = oneshot::Sender<Result<T, E>>;

/// Read `query` from the state machine once this leader has confirmed its leadership and applied
/// up to the read index (linearizable). Refused at once, or answered through the [`Answer`].
#[derive(Message, Debug)]
#[rtype(result = "Result<Answer<Bytes, ReadError>, ReadError>")]
pub struct LinearizableRead {
    pub query: Bytes,
}

/// Read `query` on the leader from its lease (no confirmation round while the lease is fresh).
/// Refused at once, or answered through the [`Answer`].
#[derive(Message, Debug)]
#[rtype(result = "Result<Answer<Bytes, ReadError>, ReadError>")]
pub struct LeaseRead {
    pub query: Bytes,
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

/// Something the node depends on failed (its state machine): it stops, telling its watchers why.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Fail {
    pub reason: String,
}

/// Propose a command: refused at once, or taken on and answered through the [`Answer`] once it
/// is applied, with the state machine's result.
#[derive(Message, Debug)]
#[rtype(result = "Result<Answer<Bytes, ProposeError>, ProposeError>")]
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

// ---- to a peer's sender ----

/// Fetch the entries of `order` from the log store and send them (the node's cache did not
/// hold them).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FetchEntries(pub EntriesOrder);

/// Open the newest snapshot to send to the peer (`raftor_core::PeerSend::OpenSnapshot`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct OpenSnapshot {
    pub request_id: u64,
}

/// Read and send one chunk of the open snapshot.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendChunk(pub ChunkOrder);

// ---- from a peer's sender ----

/// What a peer's sender did with an order, for the rules (`Raft::on_send_outcome`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendReport(pub SendOutcome);

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
    pub reply: Reply<Bytes, ProposeError>,
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
    pub reply: Reply<Bytes, ReadError>,
}

/// Answer a read-only query from the local state machine (whatever it has applied so far).
#[derive(Message, Debug)]
#[rtype(result = "Bytes")]
pub struct QueryLocal {
    pub query: Bytes,
}
