//! Answering a request before its body was read (a refused credential, a value over the limit)
//! without the answer being lost.
//!
//! HTTPS offers HTTP/2 (actix-http's `http2` feature is on, through awc). There the request body
//! is the stream's receiving half: dropped while the client still sends, the h2 stack resets the
//! stream, with CANCEL if the answer is not complete yet and NO_ERROR once it is (RFC 9113 §8.1
//! allows a complete response before the whole request). Either way curl (7.88, Debian 12's)
//! reports "Stream error in the HTTP/2 framing layer" and never shows the 401, 403 or 413; the
//! TLS compose test saw it now and then, and 78 of 100 such requests failed against one node.
//! So the rest of the body is read and discarded first, up to [`DRAIN_MAX_BYTES`] and
//! [`LINGER_FOR_UNREAD_BODY`]: the stream then ends without a reset. A larger or slower body is
//! held until the answer has gone, so that the reset at least says NO_ERROR. HTTP/1.1 needs
//! neither, but reading a short body first does it no harm.

use super::LINGER_FOR_UNREAD_BODY;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most bytes of a body read and discarded before an early answer.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Answer with `response` a request whose body is `unread` (the rest of it): read and discard the
/// rest first, within the bounds above, else hold it until the answer has gone.
pub(super) async fn answer_before_body<S>(
    response: HttpResponse,
    mut unread: S,
    request: &HttpRequest,
) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    let declared = super::body::content_length(request);
    let drain = async {
        let mut read = 0usize;
        loop {
            // What the connection has already read first; then only what the body still owes.
            let chunk = match unread.next().now_or_never() {
                Some(chunk) => chunk,
                None => {
                    let left = super::body::body_left(declared, read);
                    let _reading = super::paced::wait_for_body(request, left);
                    unread.next().await
                }
            };
            let Some(chunk) = chunk else { break };
            match chunk {
                Ok(chunk) => {
                    read += chunk.len();
                    if read > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
                // The body broke off: there is nothing more to read.
                Err(_) => return true,
            }
        }
        true
    };
    let drained = tokio::time::timeout(LINGER_FOR_UNREAD_BODY, drain)
        .await
        .unwrap_or(false);
    if drained {
        response
    } else {
        holding_unread_body(response, unread)
    }
}

/// `response`, holding `unread` (the request's body, or what reads it) until the response's
/// body has been sent in full.
fn holding_unread_body<T: Unpin + 'static>(response: HttpResponse, unread: T) -> HttpResponse {
    response.map_body(|_, body| HoldUntilSent::boxed(body, unread))
}

/// A response body that keeps `_held` alive for as long as the body is (the dispatcher drops it
/// once the body has been given to the connection whole).
pub(super) struct HoldUntilSent<T> {
    body: BoxBody,
    _held: T,
}

impl<T: Unpin + 'static> HoldUntilSent<T> {
    /// `body`, holding `held` until it has been given to the connection whole.
    pub(super) fn boxed(body: BoxBody, held: T) -> BoxBody {
        BoxBody::new(HoldUntilSent { body, _held: held })
    }
}

impl<T: Unpin> MessageBody for HoldUntilSent<T> {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
