//! Reading a request's body, so that clients cannot take the node's memory by sending bodies:
//! a body over its route's limit is refused (413) as soon as that is known; a body larger than
//! [`SMALL_REQUEST_BYTES`] is read only once it has room in the [`SharedRoom`] all of a node's
//! HTTP requests share (room for its `Content-Length`, or for the whole limit when it does
//! not say; TCP holds the client back while it waits); and every body must arrive within
//! [`arrival_limit`], and without a pause of [`STALLED_REQUEST_LIMIT`] while other bodies wait
//! for room (408 otherwise, and the connection is closed): the rules the native protocol sets a
//! request (`raftor_actors::network::incoming`). Small bodies never wait behind large ones.
//! Before, actix-web set none of this: a client that sent all of a body but its last byte held it
//! in the node's memory for as long as it kept the connection open (a thousand 1 MiB PUTs held
//! so: 1 GiB, kept; ten thousand compare-and-swaps of 2 MiB could take 20 GiB).

use super::{bad_request, early, error_response};
use crate::protocol::{ErrorKind, ServiceError};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};

use raftor_actors::network::answer_budget::SharedRoom;
use raftor_actors::network::incoming::{arrival_limit, SMALL_REQUEST_BYTES, STALLED_REQUEST_LIMIT};

/// How many bytes of a body its connection may read for a handler that has `received` of it
/// and waits for more: the rest of its stated length, or, when it states none (chunked), a
/// little at a time.
pub(super) fn body_left(declared: Option<usize>, received: usize) -> usize {
    match declared {
        Some(length) => length.saturating_sub(received).max(1),
        None => super::paced::IDLE_READ_BYTES,
    }
}

/// The request's `Content-Length`, when it states one that parses.
pub(super) fn content_length(request: &HttpRequest) -> Option<usize> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body of `request`, at most `limit` bytes, read within the room and the time above; or the
/// answer to give instead (413, 408, or 400 for a body that broke off).
pub(super) async fn read_body(
    room: &SharedRoom,
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        error_response(&ServiceError::new(
            ErrorKind::TooLarge,
            format!("the body is over the limit of {limit} bytes"),
        ))
    };
    let declared = content_length(request);
    if declared.is_some_and(|length| length > limit) {
        return Err(early::answer_before_body(too_large(), payload, request).await);
    }
    let expected = declared.unwrap_or(limit);
    let _room = match expected {
        0..=SMALL_REQUEST_BYTES => None,
        _ => room.take(expected).await,
    };
    let time = arrival_limit(expected);
    let deadline = tokio::time::Instant::now() + time;
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut moved = tokio::time::Instant::now();
    let stopped = loop {
        // (Tried once first: a body already here sets up no timers.)
        let chunk = match payload.next().now_or_never() {
            Some(chunk) => chunk,
            None => {
                let _reading =
                    super::paced::wait_for_body(request, body_left(declared, body.len()));
                let waiting = Waiting {
                    room,
                    deadline,
                    moved,
                };
                match waiting.next_chunk(&mut payload).await {
                    Ok(chunk) => chunk,
                    Err(Late::Deadline) => break Stopped::TooSlow(format!(
                        "the body ({expected} bytes) did not arrive within {} s of the node making room for it",
                        time.as_secs()
                    )),
                    Err(Late::Stalled) => break Stopped::TooSlow(format!(
                        "no byte of the body came for {} s while the node was short of room for bodies",
                        STALLED_REQUEST_LIMIT.as_secs()
                    )),
                }
            }
        };
        match chunk {
            None => return Ok(body.freeze()),
            Some(Err(error)) => {
                return Err(bad_request(format!("cannot read the body: {error}")));
            }
            Some(Ok(chunk)) if body.len() + chunk.len() > limit => break Stopped::TooLarge,
            Some(Ok(chunk)) => {
                body.extend_from_slice(&chunk);
                moved = tokio::time::Instant::now();
            }
        }
    };
    match stopped {
        Stopped::TooLarge => Err(early::answer_before_body(too_large(), payload, request).await),
        Stopped::TooSlow(why) => Err(HttpResponse::RequestTimeout()
            .insert_header((header::CONNECTION, "close"))
            .json(serde_json::json!({
                "error": format!("{why}; nothing was done"),
                "leader": null,
            }))),
    }
}

/// A handler waiting for the next piece of its body.
struct Waiting<'a> {
    room: &'a SharedRoom,
    /// When the whole body must have come.
    deadline: tokio::time::Instant,
    /// When the last piece came (or the reading began).
    moved: tokio::time::Instant,
}

/// Why the next piece of a body did not come in time.
enum Late {
    /// Past the body's deadline.
    Deadline,
    /// Nothing for [`STALLED_REQUEST_LIMIT`] while other bodies wait for room.
    Stalled,
}

impl Waiting<'_> {
    /// The body's next piece (`None` at its end), or why it came too late.
    async fn next_chunk(
        &self,
        payload: &mut web::Payload,
    ) -> Result<Option<Result<Bytes, PayloadError>>, Late> {
        loop {
            tokio::select! {
                biased;
                chunk = payload.next() => return Ok(chunk),
                _ = tokio::time::sleep_until(self.deadline) => return Err(Late::Deadline),
                _ = tokio::time::sleep(STALLED_REQUEST_LIMIT / 5) => {
                    if self.moved.elapsed() >= STALLED_REQUEST_LIMIT && self.room.others_wait() {
                        return Err(Late::Stalled);
                    }
                }
            }
        }
    }
}

/// Why a body was not read whole.
enum Stopped {
    /// It grew past the limit.
    TooLarge,
    /// It came too slowly: why.
    TooSlow(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use actix_web::FromRequest;
    use futures::stream;
    use std::time::Duration;

    /// Whether `elapsed` is `expected` on the paused clock (timers round up to the millisecond).
    fn about(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed <= expected + Duration::from_millis(10)
    }

    /// A request stating a body of `length` bytes of which only `sent` come, the rest never.
    async fn stalled(length: usize, sent: usize) -> (HttpRequest, web::Payload) {
        let (request, _) = TestRequest::put()
            .insert_header((header::CONTENT_LENGTH, length.to_string()))
            .to_http_parts();
        let chunks = stream::iter([Ok(Bytes::from(vec![1u8; sent]))]).chain(stream::pending());
        let mut payload = actix_web::dev::Payload::Stream {
            payload: Box::pin(chunks) as actix_http::BoxedPayloadStream,
        };
        let payload = web::Payload::from_request(&request, &mut payload)
            .await
            .expect("a payload");
        (request, payload)
    }

    /// A request whose whole body of `length` bytes comes at once.
    async fn whole(length: usize) -> (HttpRequest, web::Payload) {
        let (request, mut payload) = TestRequest::put()
            .set_payload(vec![2u8; length])
            .to_http_parts();
        let payload = web::Payload::from_request(&request, &mut payload)
            .await
            .expect("a payload");
        (request, payload)
    }

    #[actix_rt::test]
    async fn a_body_that_stops_arriving_holds_its_room_until_its_time_is_up_then_is_answered_408() {
        tokio::time::pause();
        let room = SharedRoom::new(1 << 20);
        let (request, payload) = stalled(600_000, 1_000).await;
        let started = tokio::time::Instant::now();
        let reading = read_body(&room, &request, payload, 1 << 20);
        let watching = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            room.held()
        };
        let (read, held_meanwhile) = futures::join!(reading, watching);
        assert_eq!(
            held_meanwhile, 600_000,
            "the stated length is held while it arrives"
        );
        let answer = read.expect_err("the body never comes whole");
        assert_eq!(
            answer.status(),
            actix_web::http::StatusCode::REQUEST_TIMEOUT
        );
        assert!(
            about(started.elapsed(), arrival_limit(600_000)),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(room.held(), 0, "given back");
    }

    #[actix_rt::test]
    async fn a_body_waits_for_room_held_by_others_and_is_read_once_they_give_it_back() {
        tokio::time::pause();
        let room = SharedRoom::new(1 << 20);
        let (first, first_payload) = stalled(900_000, 10).await;
        let (second, second_payload) = whole(200_000).await;
        let started = tokio::time::Instant::now();
        let stalling = read_body(&room, &first, first_payload, 1 << 20);
        let waiting = async {
            // Starts once the first holds its room.
            tokio::task::yield_now().await;
            let read = read_body(&room, &second, second_payload, 1 << 20).await;
            (read, started.elapsed())
        };
        let (stalled, (read, after)) = futures::join!(stalling, waiting);
        assert!(stalled.is_err());
        assert_eq!(read.expect("read once there is room").len(), 200_000);
        // The first is refused once it has not moved for the stall limit while the second waits
        // (the stall is checked five times a limit).
        assert!(
            after >= STALLED_REQUEST_LIMIT && after <= STALLED_REQUEST_LIMIT * 6 / 5,
            "read after {after:?}, not once the first gave its room back"
        );
    }

    #[actix_rt::test]
    async fn a_small_body_is_read_at_once_while_large_ones_hold_all_the_room() {
        tokio::time::pause();
        let room = SharedRoom::new(1 << 20);
        let (holder, holder_payload) = stalled(1 << 20, 10).await;
        let holding = read_body(&room, &holder, holder_payload, 1 << 20);
        let small = async {
            tokio::task::yield_now().await;
            assert_eq!(room.held(), 1 << 20, "the large body holds all the room");
            let (request, payload) = whole(SMALL_REQUEST_BYTES).await;
            let started = tokio::time::Instant::now();
            let read = read_body(&room, &request, payload, 1 << 20).await;
            (read, started.elapsed())
        };
        let (_, (read, after)) = futures::join!(holding, small);
        assert_eq!(read.expect("read").len(), SMALL_REQUEST_BYTES);
        assert_eq!(after, Duration::ZERO, "read without waiting for room");
    }

    #[actix_rt::test]
    async fn a_body_over_the_limit_is_refused_by_its_stated_length_without_waiting_for_room() {
        tokio::time::pause();
        let room = SharedRoom::new(1 << 20);
        let (holder, holder_payload) = stalled(1 << 20, 10).await;
        let holding = read_body(&room, &holder, holder_payload, 1 << 20);
        let refusing = async {
            tokio::task::yield_now().await;
            let (request, payload) = stalled(5_000, 10).await;
            let started = tokio::time::Instant::now();
            let refused = read_body(&room, &request, payload, 4_000).await;
            (refused, started.elapsed())
        };
        let (_, (refused, after)) = futures::join!(holding, refusing);
        let refused = refused.expect_err("over the limit");
        assert_eq!(
            refused.status(),
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
        );
        // Refused at once (it waited only to read and discard the rest, as every early answer does).
        assert!(
            about(after, super::super::LINGER_FOR_UNREAD_BODY),
            "{after:?}"
        );
    }
}
