//! raftor's actors: the Raft node, one replicator per peer, the log store, the state-machine applier
//! and the network endpoint, exchanging typed messages.
//!
//! ```text
//!   client ──Propose──▶ Node ──Write{entries, then_send}──▶ LogStore ──Outbound──▶ Endpoint ──▶ peers
//!                        │  ◀──────────Flushed──────────────┘    ▲
//!                        ├──LeaderProgress/Heartbeat──▶ Replicator ──ReadEntries┘ ──Outbound──▶ peer
//!                        │  ◀──ReplicationReport{term}─────┘  ◀──PeerResponse── Node ◀──Inbound── Endpoint
//!                        └──Commit──▶ Applier ──ReadEntries──▶ LogStore; Applier ──result──▶ proposer
//! ```

pub mod applier;
pub mod entry_cache;
pub mod error;
pub mod launch;
pub mod log_store;
pub mod memory_network;
pub mod messages;
pub mod network;
pub mod node;
pub mod replicator;
pub mod snapshot;
pub mod state_machine;
pub mod transport;

pub use error::{MembershipChangeError, ProposeError, ReadError, StartError, TransferLeaderError};
pub use launch::{NodeHandle, NodeOptions, PendingNode};
pub use memory_network::{MemoryNetwork, NetworkControl};
pub use node::{GetStatus, NodeStatus};
pub use replicator::ReplicationLimits;
pub use state_machine::StateMachine;
