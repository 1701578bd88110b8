//! Who leads and the configuration in force, pushed to watchers as they change
//! ([`NodeHandle::leadership`](crate::NodeHandle::leadership),
//! [`NodeHandle::membership`](crate::NodeHandle::membership)): no one polls the node's status.

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

/// The senders the node updates; the receivers' `changed()` ends when the node stops (the
/// senders are dropped with it).
pub(crate) struct Published {
    leadership: watch::Sender<Leadership>,
    membership: watch::Sender<Membership>,
}

/// The receivers, for the node's handle.
pub(crate) struct Watchers {
    pub(crate) leadership: watch::Receiver<Leadership>,
    pub(crate) membership: watch::Receiver<Membership>,
}

impl Published {
    pub(crate) fn new(raft: &Raft) -> (Published, Watchers) {
        let (leadership, leadership_rx) = watch::channel(Leadership::of(raft));
        let (membership, membership_rx) = watch::channel(raft.membership().clone());
        (
            Published {
                leadership,
                membership,
            },
            Watchers {
                leadership: leadership_rx,
                membership: membership_rx,
            },
        )
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
