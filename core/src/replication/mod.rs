//! The leader's replication (§5.3, §7, thesis §6.4): what it sends each peer, and when, and what
//! each answer means. Every decision is here, in the rules, as in etcd raft's `maybeSendAppend`
//! and openraft's engine; the driver (the node actor, the simulator, the test cluster) only
//! carries out each [`PeerSend`] and reports what came of it ([`SendOutcome`]).
//!
//! - `peer.rs`: the state kept per peer ([`Progress`], confirmation rounds, the order in
//!   progress, the snapshot being sent).
//! - `progress.rs`: flow control toward one peer (probe, pipeline, snapshot).
//! - `sending.rs`: what leaves: entries as flow control allows, heartbeats, confirmation rounds,
//!   snapshot chunks, and the set of peers (the replication targets).
//! - `spare.rs`: which voting followers the leader's commits need not wait for now (their
//!   syncs may wait).
//! - `answers.rs`: what comes back: the peers' answers and the driver's outcomes.
//! - `send.rs`: the types the driver sees.

mod answers;
mod peer;
mod progress;
mod rounds;
mod send;
mod sending;
mod spare;

pub(crate) use peer::PeerReplication;
pub use progress::{Progress, ProgressState, ResponseEffect, SendRange};
pub use rounds::PendingRounds;
pub use send::{ChunkOrder, EntriesOrder, PeerSend, SendOutcome};
