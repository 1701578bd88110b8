use raftor_core::NodeId;
use thiserror::Error;

/// Why a proposal has no result. The variants say whether the command may still take effect.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Not appended anywhere: safe to retry on the leader.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Appended, then replaced by another leader's entry: it was never committed and never will be.
    #[error("the proposal was dropped when leadership changed")]
    Dropped,
    /// The node stopped before the outcome was known: the command may or may not be committed.
    #[error("the node shut down before the outcome was known")]
    Shutdown,
}

/// Why a read has no answer. Reads change nothing, so every one of these is safe to retry.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the node shut down before answering")]
    Shutdown,
}

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] raftor_storage::StorageError),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("configuration: {0}")]
    Config(#[from] raftor_core::ConfigError),
}
