//! The room HTTP answers that may carry values hold, from before they are built until their
//! bytes are written to the connection.
//!
//! A client that sends GETs of a large value and never reads the answers left each of its
//! connections holding the answer being written (a copy of the value) for as long as the
//! connection stayed, about 1.2 MiB with a 1 MiB value: at the node's 10,000 connections, 12 GiB
//! (BENCHMARKS.md, issue 22). As a native session's answers do ([`raftor_actors::network::answer_budget`]),
//! an answer that may carry values (to a GET, a range, a transaction, a compare-and-swap) now
//! holds its size in a room all HTTP answers share (`--max-client-answer-bytes`, as large as the
//! native sessions' own), taken once a read is built if there is room and else waited for in
//! turn, before a write runs ([`call_answered`]). On a paced connection (HTTP/1 on the node's
//! thread, [`super::paced`]) that is given back as the connection writes the answer's bytes
//! ([`Unwritten`]), and a connection that has written none of what it holds for
//! [`STALLED_ANSWER_LIMIT`] while other requests wait for room is closed, freeing it. Elsewhere
//! (HTTP/2, `--http-workers N`) it is given back once the answer has been given to the
//! connection whole.

use super::HttpState;
use crate::protocol::{ErrorKind, KvRequest, KvResponse, ServiceError};
use crate::service::{PER_ITEM, SMALL_ANSWER};
use actix_web::{HttpMessage, HttpRequest};
use raftor_actors::network::answer_budget::SharedRoom;
use raftor_actors::network::client::STALLED_ANSWER_LIMIT;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// How long a request waits for room for its answer before it is answered 503 with
/// `Retry-After` (overloaded), with nothing done: two stall limits, within which paced
/// connections whose clients stopped reading are closed and their room passed on. Connections
/// that are not paced (HTTP/2, `--http-workers N`) are not closed for stalling, so answers their
/// clients do not read may hold the room longer; a request does not wait for them for good.
pub(super) const ROOM_WAIT_LIMIT: Duration =
    Duration::from_secs(2 * STALLED_ANSWER_LIMIT.as_secs());

/// Room held for one request's answer.
pub(super) struct AnswerRoom {
    held: OwnedSemaphorePermit,
    room: Arc<SharedRoom>,
}

impl AnswerRoom {
    /// Hold `bytes` (at least one), giving back the rest; an answer larger than what it holds
    /// (a JSON body escapes its values) takes the rest if the room has it now, else keeps what it
    /// has (it was built already).
    pub(super) fn fit(mut self, bytes: usize) -> Self {
        let bytes = bytes.max(1);
        match self.held.num_permits().checked_sub(bytes) {
            Some(rest) => drop(self.held.split(rest)),
            None => {
                if let Some(more) = self.room.try_take(bytes - self.held.num_permits()) {
                    self.held.merge(more);
                }
            }
        }
        self
    }
}

/// [`super::call`], for a request whose answer may carry values; what its answer holds of the
/// answers' room is kept with `http`'s answer ([`taken_from`]).
///
/// A read whose answer's size only running it tells (a page, a lease with its keys, every
/// lease) is run first: an answer of at most [`SMALL_ANSWER`] holds no room (so a GET of a small
/// value never waits behind large ones), a larger one holds its size if the room has it now; else
/// it is dropped, its size waited for in turn while nothing is held, and the read run again (a
/// read served later is still linearizable). A write cannot be run again: the largest answer it
/// may get ([`AnswerLimits::bound`](crate::service::AnswerLimits::bound)) is reserved first.
/// Room not had within [`ROOM_WAIT_LIMIT`] is answered overloaded (503), nothing done.
pub(crate) async fn call_answered(
    state: &HttpState,
    http: &HttpRequest,
    request: KvRequest,
) -> KvResponse {
    let runs_first = matches!(
        request,
        KvRequest::Range { .. } | KvRequest::LeaseInfo { .. } | KvRequest::Leases
    );
    if !runs_first {
        let bound = state.limits.bound(&request);
        if bound <= SMALL_ANSWER {
            return super::call(state, request).await;
        }
        let held = match room_for(&state.answers, bound).await {
            Ok(held) => held,
            Err(overloaded) => return overloaded,
        };
        let answer = super::call(state, request).await;
        keep_with_answer(state, http, held);
        return answer;
    }
    let answer = super::call(state, request.clone()).await;
    let bytes = answer_bytes(&answer);
    if bytes <= SMALL_ANSWER {
        return answer;
    }
    if let Some(held) = state.answers.try_take(bytes) {
        keep_with_answer(state, http, Some(held));
        return answer;
    }
    drop(answer);
    let held = match room_for(&state.answers, bytes).await {
        Ok(held) => held,
        Err(overloaded) => return overloaded,
    };
    let answer = super::call(state, request).await;
    keep_with_answer(state, http, held);
    answer
}

/// `bytes` of `room`, waited for in turn up to [`ROOM_WAIT_LIMIT`]; past it, the answer that the
/// node is overloaded.
async fn room_for(
    room: &SharedRoom,
    bytes: usize,
) -> Result<Option<OwnedSemaphorePermit>, KvResponse> {
    tokio::time::timeout(ROOM_WAIT_LIMIT, room.take(bytes))
        .await
        .map_err(|_| {
            KvResponse::Error(ServiceError::new(
                ErrorKind::Overloaded,
                format!(
                    "no room for the answer within {} s: this node holds as many answers as it \
                     may (--max-client-answer-bytes) for clients that do not read them; nothing \
                     was done",
                    ROOM_WAIT_LIMIT.as_secs()
                ),
            ))
        })
}

/// The bytes of values and keys `answer` carries (what it holds of the node's memory, and about
/// what its HTTP body will).
fn answer_bytes(answer: &KvResponse) -> usize {
    match answer {
        KvResponse::Range(page) => page
            .kvs
            .iter()
            .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, |value| value.len()) + PER_ITEM)
            .sum(),
        KvResponse::Lease(lease) => lease.keys.iter().map(|key| key.len() + PER_ITEM).sum(),
        // Each lease a JSON object of four numbers.
        KvResponse::Leases(leases) => leases.len().saturating_mul(2 * PER_ITEM),
        _ => 0,
    }
}

/// Keeps `held` with `http`'s answer.
fn keep_with_answer(state: &HttpState, http: &HttpRequest, held: Option<OwnedSemaphorePermit>) {
    let Some(held) = held else { return };
    let mut extensions = http.extensions_mut();
    match extensions.get_mut::<AnswerRoom>() {
        Some(kept) => kept.held.merge(held),
        None => {
            extensions.insert(AnswerRoom {
                held,
                room: state.answers.clone(),
            });
        }
    }
}

/// The room `request`'s answer holds, taken to be given back as the answer is written.
pub(super) fn taken_from(request: &HttpRequest) -> Option<AnswerRoom> {
    request.extensions_mut().remove::<AnswerRoom>()
}

/// The answers' room one connection holds until their bytes are written, in the order they
/// were answered.
#[derive(Default, Debug)]
pub(super) struct Unwritten {
    /// Bytes the connection has written since it opened.
    written: Cell<u64>,
    /// Each answer's room, given back once `written` reaches the first number: the answer's
    /// size past the bytes written when it was given to the connection, or past the number of
    /// the answer before it if that is larger (an HTTP/1 connection writes its answers in
    /// order, each head and body after the one before). Invariant: the numbers increase.
    held: RefCell<VecDeque<(u64, OwnedSemaphorePermit)>>,
    /// The room they come from.
    room: RefCell<Option<Arc<SharedRoom>>>,
    /// When the connection last wrote a byte, or began to hold room with nothing held before.
    progress: Cell<Option<Instant>>,
}

impl Unwritten {
    /// Holds `answer`'s room until the connection has written its `bytes`, after those of the
    /// answers held before it.
    pub(super) fn hold(&self, answer: AnswerRoom, bytes: usize) {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            self.progress.set(Some(Instant::now()));
        }
        // Its bytes come after those of the answers given before it.
        let after = held.back().map_or(self.written.get(), |(last, _)| {
            (*last).max(self.written.get())
        });
        held.push_back((after + bytes as u64, answer.held));
        *self.room.borrow_mut() = Some(answer.room);
    }

    /// The connection wrote `bytes`: the room of answers now written is given back.
    pub(super) fn wrote(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let written = self.written.get() + bytes as u64;
        self.written.set(written);
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return;
        }
        while held.front().is_some_and(|(until, _)| *until <= written) {
            held.pop_front();
        }
        self.progress.set(Some(Instant::now()));
    }

    /// Whether the connection holds room for answers not yet written.
    pub(super) fn holds_room(&self) -> bool {
        !self.held.borrow().is_empty()
    }

    /// Whether the connection has written nothing of what it holds for [`STALLED_ANSWER_LIMIT`]
    /// while other requests wait for room: then it is closed.
    pub(super) fn stalled(&self) -> bool {
        self.holds_room()
            && self
                .progress
                .get()
                .is_some_and(|at| at.elapsed() >= STALLED_ANSWER_LIMIT)
            && self
                .room
                .borrow()
                .as_ref()
                .is_some_and(|room| room.others_wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(room: &Arc<SharedRoom>, bytes: usize) -> AnswerRoom {
        AnswerRoom {
            held: room.try_take(bytes).expect("room"),
            room: room.clone(),
        }
    }

    #[tokio::test]
    async fn an_answer_holds_its_own_size_of_the_room() {
        let room = Arc::new(SharedRoom::new(10_000));
        let fitted = answer(&room, 5_000).fit(1_200);
        assert_eq!((fitted.held.num_permits(), room.held()), (1_200, 1_200));
        let larger = answer(&room, 100).fit(3_000);
        assert_eq!(
            larger.held.num_permits(),
            3_000,
            "the rest, which the room has"
        );
        let past_the_room = answer(&room, 100).fit(9_000);
        assert_eq!(
            past_the_room.held.num_permits(),
            100,
            "built already: it keeps what it has"
        );
        assert_eq!(answer(&room, 100).fit(0).held.num_permits(), 1);
    }

    #[tokio::test]
    async fn room_is_given_back_as_the_answers_are_written_in_order() {
        let room = Arc::new(SharedRoom::new(10_000));
        let unwritten = Unwritten::default();
        unwritten.wrote(50); // an earlier answer, held nothing
        unwritten.hold(answer(&room, 1_000), 1_000);
        unwritten.hold(answer(&room, 2_000), 2_000);
        assert_eq!(room.held(), 3_000);
        unwritten.wrote(999);
        assert_eq!(room.held(), 3_000, "the first answer is not all written");
        unwritten.wrote(1);
        assert_eq!(room.held(), 2_000);
        unwritten.wrote(1_999);
        assert!(unwritten.holds_room());
        unwritten.wrote(500);
        assert_eq!(room.held(), 0);
        assert!(!unwritten.holds_room());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_room_up_to_the_limit_then_is_answered_overloaded() {
        let room = Arc::new(SharedRoom::new(1_000));
        let holder = answer(&room, 1_000);
        let started = Instant::now();
        match room_for(&room, 500).await {
            Err(KvResponse::Error(error)) => assert_eq!(error.kind, ErrorKind::Overloaded),
            other => panic!("{:?}", other.map(|held| held.map(|h| h.num_permits()))),
        }
        assert_eq!(started.elapsed(), ROOM_WAIT_LIMIT);
        assert!(!room.others_wait(), "the abandoned wait is not counted");
        let waiting = tokio::spawn({
            let room = room.clone();
            async move {
                room_for(&room, 500)
                    .await
                    .ok()
                    .flatten()
                    .map(|h| h.num_permits())
            }
        });
        tokio::time::sleep(ROOM_WAIT_LIMIT / 2).await;
        drop(holder);
        assert_eq!(
            waiting.await.expect("join"),
            Some(500),
            "room freed in time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_stalled_only_once_it_wrote_nothing_for_the_limit_while_others_wait() {
        let room = Arc::new(SharedRoom::new(1_000));
        let unwritten = Unwritten::default();
        unwritten.hold(answer(&room, 600), 600);
        tokio::time::advance(STALLED_ANSWER_LIMIT * 2).await;
        assert!(!unwritten.stalled(), "nobody waits for room");
        let waiting = tokio::spawn({
            let room = room.clone();
            async move { room.take(1_000).await.map(|held| held.num_permits()) }
        });
        tokio::task::yield_now().await;
        assert!(room.others_wait());
        assert!(unwritten.stalled());
        unwritten.wrote(10);
        assert!(!unwritten.stalled(), "it wrote a byte just now");
        tokio::time::advance(STALLED_ANSWER_LIMIT - std::time::Duration::from_millis(1)).await;
        assert!(!unwritten.stalled());
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        assert!(unwritten.stalled());
        drop(unwritten);
        assert_eq!(waiting.await.expect("join"), Some(1_000));
    }
}
