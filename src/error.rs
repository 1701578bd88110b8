//! What can go wrong: [`StartError`] when a node starts, [`Error`] when a running node is asked
//! something (a proposal, a read, a membership change...).

use raftor_core::{LogIndex, NodeId};
use thiserror::Error;

/// Why a call on a running [`RaftNode`](crate::RaftNode) failed. Each variant says whether a
/// command may still take effect; see [`Error::may_have_applied`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader, so it did nothing: send the request to `leader` (when known)
    /// or retry after an election.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The command was appended, then replaced by another leader's entry: it was never committed
    /// and never will be. Safe to retry.
    #[error("the proposal was dropped when leadership changed; it was not applied")]
    Dropped,
    /// The node is shutting down or has stopped. A proposal that was already in flight may or may
    /// not have been committed (see [`Error::may_have_applied`]); a new one did nothing.
    #[error("the node is shutting down")]
    Shutdown {
        /// Whether the request was in flight when the node stopped (its outcome is unknown).
        in_flight: bool,
    },
    /// No answer within the request timeout. For a proposal the outcome is unknown: the command
    /// may yet be committed and applied. A read changed nothing and can be retried.
    #[error("timed out after {0:?}; the outcome is unknown")]
    Timeout(std::time::Duration),
    /// The state machine could not decode the command (or query): nothing changed on any node.
    /// A version mismatch between the proposer's and the state machine's types.
    #[error("the state machine refused the request: {0}")]
    BadCommand(String),
    /// A command or query could not be encoded, or an answer decoded.
    #[error("encoding: {0}")]
    Codec(String),
    /// A snapshot could not be taken (none configured, nothing applied yet, or an IO error).
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The leader is handing leadership to `to` and takes no proposals or membership changes
    /// meanwhile; nothing was done. Retry shortly (on `to`, once it leads).
    #[error("leadership is being transferred to node {to}; nothing was done, retry shortly")]
    Transferring {
        /// The node taking over.
        to: NodeId,
    },
    /// Only one membership change at a time: the configuration at `index` is not committed yet
    /// (or the cluster is still leaving a joint configuration). Nothing was done; retry once it is.
    #[error("another membership change is in progress (configuration at index {index}); nothing was done, retry once it is finished")]
    MembershipChangeInProgress {
        /// The log index of the configuration still in progress.
        index: LogIndex,
    },
    /// The leader was just elected and has not committed an entry of its term yet, so it makes
    /// no membership change; nothing was done. Retry shortly.
    #[error(
        "the leader has not committed an entry of its term yet; nothing was done, retry shortly"
    )]
    NotReady,
    /// The membership change is committed, but this node lost the lead before a majority of the
    /// new voters were known to hold the commit: ask the leader
    /// ([`crate::RaftNode::wait_membership_settled`] there) before stopping a removed node.
    #[error("the membership change is committed, but this node lost the lead before a majority of the new voters were known to hold it; the next leader settles it within a heartbeat of its election: wait for a leader (leader: {leader:?}) before stopping a removed node")]
    MembershipNotSettled { leader: Option<NodeId> },
    /// The membership change makes no sense for the current configuration (a node that is not a
    /// member, one already in that role, a new node without an address, no voter left...).
    /// Nothing was done.
    #[error("invalid membership change: {0}")]
    InvalidMembership(String),
    /// A leadership transfer names a node that is not a voter of the current configuration.
    #[error("node {0} is not a voter of the current configuration")]
    NotAVoter(NodeId),
    /// The leader started handing leadership to `to`, but `to` did not take over in time (two
    /// election timeouts); the rules abandon the transfer and the leader goes on leading.
    /// `leader` is the leader seen last.
    #[error("node {to} did not take over leadership in time; the transfer was abandoned (leader: {leader:?})")]
    TransferAbandoned {
        /// The node that was to take over.
        to: NodeId,
        /// The leader this node saw last.
        leader: Option<NodeId>,
    },
}

/// Why [`RaftNodeBuilder::start`](crate::RaftNodeBuilder::start) could not start a node: nothing
/// runs, and the data directory holds what it held before (or was just created, empty).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The builder was given an incomplete or inconsistent configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The log store could not be opened or recovered.
    #[error(transparent)]
    Storage(#[from] raftor_storage::StorageError),
    /// The Raft listener could not be bound, or the endpoint configuration is invalid.
    #[error(transparent)]
    Network(#[from] raftor_actors::network::tcp::NetworkError),
    /// The actors could not start (a Raft configuration the rules refuse, or storage).
    #[error(transparent)]
    Actors(#[from] raftor_actors::StartError),
    /// The dedicated actix thread could not be started (see
    /// [`RaftNodeBuilder::start`](crate::RaftNodeBuilder::start)), or ended before the node
    /// started.
    #[error("cannot start the node's thread: {0}")]
    Thread(std::io::Error),
}

impl StartError {
    /// [`StartError::DataDir`] for `path`, as a `map_err` takes it.
    pub(crate) fn data_dir(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.display().to_string();
        move |source| StartError::DataDir { path, source }
    }
}

impl Error {
    /// Whether a proposal that failed with this error may still have been (or yet be) committed
    /// and applied: `true` for [`Error::Timeout`] and an in-flight [`Error::Shutdown`]. Retry such a
    /// command only if applying it twice is harmless, or make it idempotent (the key-value service
    /// keys each client's writes by a sequence number for exactly this).
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::Shutdown { in_flight: true }
        )
    }

    /// The leader to retry with, when this node knows one.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            Error::NotLeader { leader } | Error::TransferAbandoned { leader, .. } => *leader,
            _ => None,
        }
    }
}
