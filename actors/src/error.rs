use raftor_core::{LogIndex, NodeId};
use thiserror::Error;

/// Why a proposal has no result. The variants say whether the command may still take effect.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Not appended anywhere: safe to retry on the leader.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Not appended: the leader is handing leadership to `to`; retry shortly (on `to`).
    #[error("leadership is being transferred to node {to}; retry shortly")]
    Transferring { to: NodeId },
    /// Appended, then replaced by another leader's entry: it was never committed and never will be.
    #[error("the proposal was dropped when leadership changed")]
    Dropped,
    /// The node stopped before the outcome was known: the command may or may not be committed.
    #[error("the node shut down before the outcome was known")]
    Shutdown,
}

/// Why a membership change was not made, or its outcome is unknown.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MembershipChangeError {
    /// Nothing appended: ask the leader.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Nothing appended: the leader is handing leadership to `to`.
    #[error("leadership is being transferred to node {to}; retry shortly")]
    Transferring { to: NodeId },
    /// Nothing appended: another change (its configuration at `index`) is not finished.
    #[error("another membership change is in progress (configuration at index {index}); retry once it is done")]
    InProgress { index: LogIndex },
    /// Nothing appended: the leader was just elected and has not committed an entry of its term.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    NotReady,
    /// Nothing appended: the change makes no sense for the current configuration.
    #[error("invalid membership change: {0}")]
    Invalid(String),
    /// Appended, then replaced by another leader's entry: the change was not made.
    #[error("the change was dropped when leadership changed")]
    Dropped,
    /// Committed, but this node lost the lead before a majority of the new voters were known to
    /// hold the commit (`raftor_core::Raft::settled_membership_index`): ask the leader
    /// ([`crate::NodeHandle::wait_settled`] there) before stopping a removed node.
    #[error("the change is committed, but this node lost the lead before it settled; ask the leader (leader: {leader:?}) before stopping a removed node")]
    Unsettled { leader: Option<NodeId> },
    /// Appended, but not known to be finished in time (it may still complete).
    #[error("the change did not finish in time (it may still complete)")]
    Timeout,
    /// The node stopped before the outcome was known.
    #[error("the node shut down before the outcome was known")]
    Shutdown,
}

impl From<raftor_core::ChangeError> for MembershipChangeError {
    fn from(error: raftor_core::ChangeError) -> Self {
        use raftor_core::{ChangeError, Refusal};
        match error {
            ChangeError::Refused(Refusal::NotLeader(not_leader)) => {
                MembershipChangeError::NotLeader {
                    leader: not_leader.leader,
                }
            }
            ChangeError::Refused(Refusal::Transferring { to }) => {
                MembershipChangeError::Transferring { to }
            }
            ChangeError::InProgress { index } => MembershipChangeError::InProgress { index },
            ChangeError::NotReady => MembershipChangeError::NotReady,
            ChangeError::Invalid(invalid) => MembershipChangeError::Invalid(invalid.to_string()),
        }
    }
}

impl From<raftor_core::Refusal> for ProposeError {
    fn from(refusal: raftor_core::Refusal) -> Self {
        match refusal {
            raftor_core::Refusal::NotLeader(not_leader) => ProposeError::NotLeader {
                leader: not_leader.leader,
            },
            raftor_core::Refusal::Transferring { to } => ProposeError::Transferring { to },
        }
    }
}

/// Why a leadership transfer did not start.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TransferLeaderError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter of the current configuration")]
    NotAVoter(NodeId),
    #[error("the node shut down")]
    Shutdown,
}

impl From<raftor_core::TransferError> for TransferLeaderError {
    fn from(error: raftor_core::TransferError) -> Self {
        match error {
            raftor_core::TransferError::NotLeader(not_leader) => TransferLeaderError::NotLeader {
                leader: not_leader.leader,
            },
            raftor_core::TransferError::NotAVoter(id) => TransferLeaderError::NotAVoter(id),
        }
    }
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
