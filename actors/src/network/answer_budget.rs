//! The memory a node's native client sessions may hold: requests still arriving, the bodies of
//! requests being answered and the answers not yet written. Each session has a budget of its own
//! ([`SESSION_ANSWER_BYTES`]) and all of a node's sessions share the node's
//! ([`EndpointConfig::max_unwritten_answer_bytes`](super::tcp::EndpointConfig)), so a client that
//! never reads its answers, or many of them, cannot take the node's memory.
//!
//! A request is charged before its handler runs: its body and the largest answer the handler says
//! it may give ([`PreparedAnswer::bound`](super::client::PreparedAnswer)). Once the
//! answer is computed the charge becomes the answer's size, and it is given back once the answer
//! is on the wire.
//!
//! Before that, while its bytes arrive, a request holds room of a second kind, as large as the
//! first: its frame's length, reserved once the frame's header has come and before the rest is
//! read ([`super::incoming`]), and given back once the request has its room of the first kind. So
//! clients that send part of a large request and stop, or send large requests that wait for
//! room, cannot take the node's memory either. The two kinds are separate so that a request
//! holding room of the second kind while it waits for the first never holds what others wait for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many bytes of request bodies and answers one session may hold: past it, the session reads
/// no more requests until answers are written (TCP then holds the client back).
pub const SESSION_ANSWER_BYTES: usize = 64 << 20;

/// The default node-wide budget over all sessions (1 GiB: sixteen sessions that hold their whole
/// budget).
pub const DEFAULT_NODE_ANSWER_BYTES: usize = 1 << 30;

/// Bytes of room that many share, one permit per byte, and how many wait for it now: a pool of
/// the node's budget, and the room a node's HTTP request bodies share while they are read.
#[derive(Debug)]
pub struct SharedRoom {
    /// Invariant: `room.available_permits() <= total`.
    room: Arc<Semaphore>,
    /// The room in bytes (at least 1).
    total: usize,
    /// How many wait for room now (each wait counted while it lasts, also one abandoned).
    waiting: AtomicUsize,
}

impl SharedRoom {
    /// Room for `total` bytes (at least one byte, at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(total: usize) -> SharedRoom {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        SharedRoom {
            room: Arc::new(Semaphore::new(total)),
            total,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The bytes held now.
    pub fn held(&self) -> usize {
        self.total - self.room.available_permits()
    }

    /// Whether anyone waits for room now.
    pub fn others_wait(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// `bytes` of room (all of it, for more than it holds), at once or waited for in turn,
    /// counted as waiting meanwhile.
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        if let Some(permit) = self.try_take(bytes) {
            return Some(permit);
        }
        let _waiting = Waiting::new(&self.waiting);
        let wanted = permits(bytes, self.total);
        self.room.clone().acquire_many_owned(wanted).await.ok()
    }

    /// `bytes` of room if it is free now.
    pub fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let wanted = permits(bytes, self.total);
        self.room.clone().try_acquire_many_owned(wanted).ok()
    }
}

/// The budget all of a node's client sessions share.
#[derive(Debug)]
pub struct NodeAnswerBudget {
    /// For the bodies of requests being answered and their answers.
    room: SharedRoom,
    /// As large as `room`, for requests still arriving (a frame's length, from its header until
    /// the request holds room in `room`). While anyone waits for either, sessions whose client
    /// has stopped reading, or stopped sending a request it began, are closed
    /// ([`SessionBudget::node_is_short`]).
    arriving: SharedRoom,
}

impl NodeAnswerBudget {
    /// A budget of `total` bytes of each kind (at least one byte, at most
    /// [`Semaphore::MAX_PERMITS`]).
    pub fn new(total: usize) -> Arc<NodeAnswerBudget> {
        Arc::new(NodeAnswerBudget {
            room: SharedRoom::new(total),
            arriving: SharedRoom::new(total),
        })
    }

    /// The bytes held now by every session's requests being answered and their answers.
    pub fn held(&self) -> usize {
        self.room.held()
    }
}

/// One session's budget, within its node's.
pub(crate) struct SessionBudget {
    room: Arc<Semaphore>,
    node: Arc<NodeAnswerBudget>,
}

/// Bytes a request or its answer holds in its session's budget and its node's, given back when
/// dropped.
#[derive(Debug)]
pub(crate) struct Held {
    session: Option<OwnedSemaphorePermit>,
    node: Option<OwnedSemaphorePermit>,
}

/// Counts one wait for a [`SharedRoom`] while it lives (also when the wait is abandoned).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `bytes` as a number of permits of a budget of `total`: at least one, at most the whole budget
/// (a request larger than the budget waits for all of it).
fn permits(bytes: usize, total: usize) -> u32 {
    u32::try_from(bytes.clamp(1, total)).unwrap_or(u32::MAX)
}

impl SessionBudget {
    pub(crate) fn new(node: Arc<NodeAnswerBudget>) -> SessionBudget {
        SessionBudget {
            room: Arc::new(Semaphore::new(SESSION_ANSWER_BYTES)),
            node,
        }
    }

    /// `bytes` as permits of the session's budget and of the node's.
    fn shares(&self, bytes: usize) -> (u32, u32) {
        (
            permits(bytes, SESSION_ANSWER_BYTES),
            permits(bytes, self.node.room.total),
        )
    }

    /// Room for `bytes`: waits for the session's budget, then for the node's (first come, first
    /// served), counted as waiting for the node's meanwhile. Called by the session's loop, one
    /// request at a time, and by an answer that outgrew its bound, which holds nothing then.
    pub(crate) async fn reserve(&self, bytes: usize) -> Held {
        let session_wanted = permits(bytes, SESSION_ANSWER_BYTES);
        let session = self
            .room
            .clone()
            .acquire_many_owned(session_wanted)
            .await
            .ok();
        let node = self.node.room.take(bytes).await;
        Held { session, node }
    }

    /// Room for `bytes` if both budgets have it now, without waiting.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Held> {
        let session_wanted = permits(bytes, SESSION_ANSWER_BYTES);
        let session = self
            .room
            .clone()
            .try_acquire_many_owned(session_wanted)
            .ok()?;
        let node = self.node.room.try_take(bytes)?;
        Some(Held {
            session: Some(session),
            node: Some(node),
        })
    }

    /// Make `held` hold `bytes` if that is no more than it holds (the excess is given back at
    /// once); false, holding what it held, when it needs more ([`Self::grow`]).
    pub(crate) fn shrink(&self, held: &mut Held, bytes: usize) -> bool {
        let (session_target, node_target) = self.shares(bytes);
        let (session_target, node_target) = (session_target as usize, node_target as usize);
        let session_now = held.session.as_ref().map_or(0, |p| p.num_permits());
        let node_now = held.node.as_ref().map_or(0, |p| p.num_permits());
        if session_target > session_now || node_target > node_now {
            return false;
        }
        drop(
            held.session
                .as_mut()
                .and_then(|p| p.split(session_now - session_target)),
        );
        drop(
            held.node
                .as_mut()
                .and_then(|p| p.split(node_now - node_target)),
        );
        true
    }

    /// Make `held` hold `bytes`, more than it holds (where [`Self::shrink`] said no): `held` is
    /// given back and the whole of `bytes` waited for as a new reservation (nothing is held while
    /// waiting, so answers larger than their bound cannot deadlock a session or the node by each
    /// holding part of the room the others wait for).
    pub(crate) async fn grow(&self, held: &mut Held, bytes: usize) {
        *held = Held {
            session: None,
            node: None,
        };
        *held = self.reserve(bytes).await;
    }

    /// Room in the node's budget for a request of `bytes` still arriving (its frame's length,
    /// known from its header before the rest is read): at once if there is room, else waited for
    /// and counted as waiting for the node's room. Held until the request holds room for being
    /// answered ([`Self::reserve`]); a session holds no other room of this kind meanwhile.
    pub(crate) async fn reserve_arriving(&self, bytes: usize) -> Held {
        Held {
            session: None,
            node: self.node.arriving.take(bytes).await,
        }
    }

    /// Whether another session waits for room in the node's budget: then a session whose client
    /// has not taken an answer for a while is closed, to free its share.
    pub(crate) fn node_is_short(&self) -> bool {
        self.node.room.others_wait() || self.node.arriving.others_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_for_shared_room_counts_while_it_lasts_even_when_abandoned() {
        let room = SharedRoom::new(100);
        let all = room.take(100).await.expect("free room");
        assert!(!room.others_wait());
        {
            let waiting = room.take(10);
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert!(room.others_wait(), "a wait is counted");
        }
        assert!(
            !room.others_wait(),
            "an abandoned wait is not counted any more"
        );
        drop(all);
        assert_eq!(room.held(), 0);
        assert!(
            room.try_take(1_000).is_some(),
            "more than the room takes all of it"
        );
    }

    #[tokio::test]
    async fn a_reservation_is_charged_to_both_budgets_and_resized_to_the_answer() {
        let node = NodeAnswerBudget::new(10_000);
        let session = SessionBudget::new(node.clone());
        let mut held = session.reserve(4_000).await;
        assert_eq!(node.held(), 4_000);
        assert_eq!(
            session.room.available_permits(),
            SESSION_ANSWER_BYTES - 4_000
        );
        assert!(session.shrink(&mut held, 100));
        assert_eq!(node.held(), 100);
        assert!(!session.shrink(&mut held, 3_000));
        session.grow(&mut held, 3_000).await;
        assert_eq!(node.held(), 3_000);
        drop(held);
        assert_eq!(node.held(), 0);
        assert_eq!(session.room.available_permits(), SESSION_ANSWER_BYTES);
    }

    #[tokio::test]
    async fn the_node_budget_makes_sessions_wait_and_says_so() {
        let node = NodeAnswerBudget::new(1_000);
        let first = SessionBudget::new(node.clone());
        let second = SessionBudget::new(node.clone());
        let held = first.reserve(5_000).await; // clamped to the node's whole budget
        assert_eq!(node.held(), 1_000);
        assert!(!first.node_is_short());
        let waiting = second.reserve(10);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert!(first.node_is_short());
        drop(held);
        let _second = waiting.await;
        assert!(!first.node_is_short());
        assert_eq!(node.held(), 10);
    }

    #[tokio::test]
    async fn answers_growing_past_their_bounds_do_not_deadlock_over_the_room() {
        let node = NodeAnswerBudget::new(1_000);
        let session = SessionBudget::new(node.clone());
        let mut first = session.reserve(500).await;
        let mut second = session.reserve(500).await;
        // Each grows to 700: holding its 500 while waiting for 200 more, neither would ever
        // get them. Each gives its share back and waits for the whole (first come, first served).
        let grow_first = async {
            session.grow(&mut first, 700).await;
            first
        };
        let grow_second = async {
            session.grow(&mut second, 700).await;
            second
        };
        tokio::pin!(grow_first, grow_second);
        assert!(futures::poll!(grow_first.as_mut()).is_pending());
        assert!(futures::poll!(grow_second.as_mut()).is_pending());
        let first = tokio::time::timeout(Duration::from_secs(5), grow_first)
            .await
            .expect("the first grows once the second gave its share back");
        assert_eq!(
            node.held(),
            1_000,
            "700, and 300 taken by the second's wait"
        );
        drop(first); // written
        let second = tokio::time::timeout(Duration::from_secs(5), grow_second)
            .await
            .expect("the second grows once the first is written");
        drop(second);
        assert_eq!(node.held(), 0);
    }
}
