//! raftor: Raft consensus built from actix actors, durable in RocksDB, talking over TCP — as a
//! library for your own replicated state machine, and as a replicated key-value service.
//!
//! Embedding it takes three steps (docs/embedding.md in the repository has the whole model):
//!
//! 1. Implement [`StateMachine`] with your own serde types for commands, results, queries and
//!    snapshots.
//! 2. Configure a node with [`RaftNodeBuilder::new`] (id, members, storage, timing) and
//!    [`start`](RaftNodeBuilder::start) it with your machine, in an actix System or any tokio
//!    runtime.
//! 3. Use the [`RaftNode`] handle: [`propose`](RaftNode::propose) commands,
//!    [`read`](RaftNode::read) with a chosen [`Consistency`], watch
//!    [`leadership`](RaftNode::leadership), change the members
//!    ([`add_learner`](RaftNode::add_learner), [`promote`](RaftNode::promote),
//!    [`remove`](RaftNode::remove), [`change_membership`](RaftNode::change_membership)), hand
//!    leadership over ([`transfer_leadership`](RaftNode::transfer_leadership)),
//!    [`shutdown`](RaftNode::shutdown).
//!
//! ```
//! use raftor::{Consistency, LogIndex, NodeId, RaftNodeBuilder, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     type Query = ();
//!     type QueryResponse = u64;
//!     type Snapshot = u64;
//!     fn apply(&mut self, _index: LogIndex, add: u64) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn query(&self, _: &()) -> u64 {
//!         self.0
//!     }
//!     fn snapshot(&self) -> u64 {
//!         self.0
//!     }
//!     fn restore(&mut self, total: u64) {
//!         self.0 = total;
//!     }
//! }
//!
//! # #[actix_rt::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A cluster of one, on an in-memory log: it elects itself.
//! let node = RaftNodeBuilder::new()
//!     .id(NodeId(1))
//!     .peers([(NodeId(1), "127.0.0.1:0")])
//!     .storage(raftor::storage::MemStorage::new())
//!     .start(Counter::default())
//!     .await?;
//! let mut leadership = node.leadership();
//! leadership.wait_for(|l| l.is_leader()).await.expect("running");
//! assert_eq!(node.propose(2).await?, 2);
//! assert_eq!(node.propose(3).await?, 5);
//! assert_eq!(node.read((), Consistency::Linearizable).await?, 5);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! This crate is the library alone: it depends on the actors, the log stores and tokio, and
//! nothing of HTTP, the command line, metrics export, the benchmark or the simulator. The
//! replicated key-value service (`raftor-kv`: its state machine, native protocol and client, HTTP
//! API and metrics) is built on this same API, and the `raftor` command (`raftor-cli`) on that.
//! The Raft rules are in `raftor-core`, the actors in `raftor-actors`, the log stores in
//! `raftor-storage` ([`storage`] re-exports what a custom store needs).

mod builder;
mod consistency;
mod error;
mod link;
mod membership;
mod own_thread;
mod panic_guard;
mod raft_node;
pub mod restore;
mod snapshot_reader;
mod start;
pub mod state_machine;

pub use builder::RaftNodeBuilder;
pub use consistency::Consistency;
pub use error::{Error, StartError};
pub use link::{ClientHandler, PreparedAnswer};
pub use raft_node::RaftNode;
pub use raftor_actors::snapshot::SnapshotPolicy;
pub use raftor_actors::Leadership;
pub use raftor_actors::NodeStatus;
pub use raftor_actors::StopCause;
pub use raftor_core::{
    ConfChange, ConfState, LogId, LogIndex, Membership, NodeId, RaftConfig, Role, SnapshotMeta,
    Standing, Term,
};
pub use state_machine::StateMachine;

/// Log storage: the [`LogStorage`](storage::LogStorage) trait a custom store implements (give it
/// to [`RaftNodeBuilder::storage`]), the stores raftor ships, and the
/// [`conformance`](storage::conformance) suite every store must pass.
///
/// Run the suite from a test of your own store: a [`Harness`](storage::conformance::Harness)
/// makes fresh stores and reopens them (as after a crash: only what `write` synced may survive).
///
/// ```
/// use raftor::storage::{conformance, MemStorage};
///
/// struct MyHarness;
///
/// impl conformance::Harness for MyHarness {
///     type Store = MemStorage; // your store here
///     fn fresh(&mut self) -> MemStorage {
///         MemStorage::new()
///     }
///     fn reopen(&mut self, store: MemStorage) -> MemStorage {
///         store.clone() // clones share their data, like a directory on disk
///     }
/// }
///
/// conformance::run_all(&mut MyHarness);
/// ```
pub mod storage {
    pub use raftor_core::{Entry, EntryPayload, HardState, LogWrite, RecoveredState};
    pub use raftor_storage::{
        conformance, durable, term_boundaries, validate_write, LogStorage, MemStorage,
        RocksStorage, StorageError, StoreIdentity,
    };
}

/// For tests of an embedding application: an in-memory network (give it to
/// [`RaftNodeBuilder::in_memory_network`]) that can drop, delay and partition messages, so a
/// whole cluster runs in one thread on tokio's paused clock.
pub mod testing {
    pub use raftor_actors::{MemoryNetwork, NetworkControl};
}
