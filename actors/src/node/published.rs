//! Who leads and the configuration in force, pushed to watchers as they change
//! ([`NodeHandle::leadership`](crate::NodeHandle::leadership),
//! [`NodeHandle::membership`](crate::NodeHandle::membership)), and why the node stopped
//! ([`NodeHandle::stop_cause`](crate::NodeHandle::stop_cause)): no one polls the node's status.

use super::NodeActor;
use raftor_core::{Membership, NodeId, Raft, Role, Term};
use tokio::sync::watch;

/// Who leads, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// This node's role.
    pub role: Role,
    /// This node's current term.
    pub term: Term,
    /// The leader of `term` this node knows of (itself when it leads).
    pub leader: Option<NodeId>,
}

impl Leadership {
    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    fn of(raft: &Raft) -> Leadership {
        Leadership {
            role: raft.role(),
            term: raft.current_term(),
            leader: raft.leader_id(),
        }
    }
}

/// Why a node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// It was told to stop ([`NodeHandle::shutdown`](crate::NodeHandle::shutdown)), or its actor
    /// system ended.
    Shutdown,
    /// It stopped itself because going on could break a promise: a write to its log or its
    /// snapshots failed, or its state machine failed. What it had made durable stays durable; a
    /// restart recovers from it (a supervisor restarting the process does exactly that).
    Failed {
        /// What failed, for the operator.
        reason: String,
    },
}

/// The senders the node updates; the receivers' `changed()` ends when the node stops (the
/// senders are dropped with it).
pub(crate) struct Published {
    leadership: watch::Sender<Leadership>,
    membership: watch::Sender<Membership>,
    /// `None` while the node runs; set once, when it stops.
    stop_cause: watch::Sender<Option<StopCause>>,
}

/// The receivers, for the node's handle.
pub(crate) struct Watchers {
    pub(crate) leadership: watch::Receiver<Leadership>,
    pub(crate) membership: watch::Receiver<Membership>,
    pub(crate) stop_cause: watch::Receiver<Option<StopCause>>,
}

impl Published {
    pub(crate) fn new(raft: &Raft) -> (Published, Watchers) {
        let (leadership, leadership_rx) = watch::channel(Leadership::of(raft));
        let (membership, membership_rx) = watch::channel(raft.membership().clone());
        let (stop_cause, stop_cause_rx) = watch::channel(None);
        (
            Published {
                leadership,
                membership,
                stop_cause,
            },
            Watchers {
                leadership: leadership_rx,
                membership: membership_rx,
                stop_cause: stop_cause_rx,
            },
        )
    }

    /// Record why the node stopped; the first cause recorded stands.
    pub(crate) fn stopped_because(&self, cause: StopCause) {
        self.stop_cause.send_if_modified(|seen| {
            let first = seen.is_none();
            if first {
                *seen = Some(cause);
            }
            first
        });
    }
}

impl NodeActor {
    /// Tell the watchers what changed since the last call (called with every `Ready`: role, term,
    /// leader and configuration change only in the rules' steps, and each step is followed by
    /// one). Compares in place; copies the configuration only when it changed.
    pub(super) fn publish(&self) {
        let now = Leadership::of(&self.raft);
        self.published.leadership.send_if_modified(|seen| {
            let changed = *seen != now;
            *seen = now;
            changed
        });
        let membership = self.raft.membership();
        self.published.membership.send_if_modified(|seen| {
            let changed = seen != membership;
            if changed {
                seen.clone_from(membership);
            }
            changed
        });
    }
}
