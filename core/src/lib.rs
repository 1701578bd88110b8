//! The Raft rules of raftor: pure, synchronous code with no IO, no clock and no OS randomness.
//!
//! Events go in (a message received, a tick, a write flushed, a replica's progress); what must happen
//! comes out as a [`Ready`]: state to persist, messages to send once it is durable, entries to apply.
//! Ticks and a seeded random number generator are handed in, so every run can be replayed exactly.
//!
//! - [`Raft`]: one node's rules (elections, the follower's log, the leader's commit).
//! - [`Progress`]: a leader's flow control toward one follower; the leader's replication
//!   (`replication/`) decides every message to its peers, and its driver carries out each
//!   [`PeerSend`].

mod append;
mod config;
mod election;
mod invariants;
mod leader;
mod log_terms;
mod membership;
mod quorum;
mod raft;
mod read_index;
mod ready;
mod rejoin;
mod replication;
mod settle;
mod snapshot;
mod storage_types;
mod types;

pub mod message;

pub use config::{ConfigError, RaftConfig, ReplicationConfig};
pub use invariants::StateViolation;
pub use leader::{ChangeError, NotLeader, Refusal, TransferError};
pub use log_terms::LogTerms;
pub use membership::{ConfChange, ConfState, Membership, MembershipError};
pub use message::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Envelope, InstallSnapshot,
    InstallSnapshotResponse, Message, RejoinAnswer, RejoinQuery, RequestVote, RequestVoteResponse,
    SnapshotMeta, SnapshotOutcome, TimeoutNow,
};
pub use quorum::{majority, quorum_matched_index, VoteResult};
pub use raft::{Raft, Role};
pub use read_index::{LeaseError, ReadState};
pub use ready::{LeadershipChange, Ready};
pub use rejoin::Standing;
pub use replication::{
    ChunkOrder, EntriesOrder, PeerSend, PendingRounds, Progress, ProgressState, ResponseEffect,
    SendOutcome, SendRange,
};
pub use storage_types::{configuration_entries, LogWrite, RecoveredState};
pub use types::{
    Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, Term, TERM_CEILING, TERM_STEP,
};

#[cfg(test)]
mod tests;
