//! raftor's actors: the Raft node, a sender per peer, the log store, the state-machine applier
//! and the network endpoint, exchanging typed messages. The rules (`raftor_core`) decide every
//! message; the actors carry them out.
//!
//! ```text
//!   client ──Propose──▶ Node ──Write{entries, then_send}──▶ LogStore ──Outbound──▶ Endpoint ──▶ peers
//!                        │  ◀──────────Flushed──────────────┘    ▲
//!                        ├──Outbound (Ready::sends, entries from the cache)──▶ Endpoint ──▶ peers
//!                        ├──FetchEntries/OpenSnapshot/SendChunk──▶ PeerSender ──ReadEntries──▶ LogStore
//!                        │  ◀──SendReport(outcome)─────────────────┘ ──Outbound──▶ Endpoint ──▶ peer
//!                        │  ◀──Inbound (every answer, to the rules)── Endpoint
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
pub mod peer_sender;
pub mod snapshot;
pub mod state_machine;
pub mod transport;

pub use error::{MembershipChangeError, ProposeError, ReadError, StartError, TransferLeaderError};
pub use launch::{NodeHandle, NodeOptions, PendingNode};
pub use memory_network::{MemoryNetwork, NetworkControl};
pub use node::{GetStatus, Leadership, NodeStatus, PeerFlow, SnapshotSummary, StopCause};
pub use peer_sender::ReplicationLimits;
pub use state_machine::StateMachine;
