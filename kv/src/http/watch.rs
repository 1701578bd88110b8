//! `GET /v1/watch?prefix=P&from=N`: the changes of a key, a range or a prefix, streamed as
//! Server-Sent Events (or, with `format=jsonl`, one JSON object per line), from index `from`
//! (inclusive; default: from the next change), on any node.
//!
//! Events: `created` (the index the watch starts after), `put` and `delete` (one per changed
//! key), `progress` (every `progress_ms` while nothing changed: every change up to its index was
//! sent), and a final `cancelled` if the node ends the watch (it fell behind, or the history it
//! needs was compacted). An event's SSE `id` is its index, set once an entry's events are all
//! sent (and `created`'s is the index the watch starts after), so a client that reconnects with
//! `Last-Event-ID` (as browsers do, to the same URL) resumes after it, without a gap or a repeat,
//! whatever `from` says. A start that is already compacted is refused with 410 before the stream
//! begins; too many watchers on the node, with 503.

use super::json::{self, Selector};
use super::{bad_request, HttpState};
use crate::watch::{describe_end, Subscription, WatchBatch, WatchEnd, WatchError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Progress notifications' default period.
pub const DEFAULT_PROGRESS: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    key: Option<String>,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    from: Option<u64>,
    progress_ms: Option<u64>,
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    ServerSentEvents,
    JsonLines,
}

pub async fn watch(
    state: web::Data<HttpState>,
    request: HttpRequest,
    params: web::Query<WatchParams>,
) -> HttpResponse {
    let params = params.into_inner();
    let format = match params.format.as_deref() {
        None | Some("sse") => Format::ServerSentEvents,
        Some("jsonl") => Format::JsonLines,
        Some(other) => return bad_request(format!("format {other:?} is not sse or jsonl")),
    };
    let progress = match params.progress_ms {
        None => DEFAULT_PROGRESS,
        Some(ms @ 100..=600_000) => Duration::from_millis(ms),
        Some(ms) => {
            return bad_request(format!(
                "progress_ms must be from 100 to 600000; it is {ms}"
            ))
        }
    };
    let keys = match (Selector {
        key: params.key,
        prefix: params.prefix,
        start: params.start,
        end: params.end,
    })
    .key_set()
    .and_then(|keys| keys.check(crate::service::MAX_KEY_BYTES).map(|()| keys))
    {
        Ok(keys) => keys,
        Err(message) => return bad_request(message),
    };
    // After the last event the client saw (an SSE reconnection: `EventSource` sends the same URL
    // again, `from` included), else `from`, else from now.
    let last_seen = request
        .headers()
        .get("Last-Event-ID")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let start = match (params.from, last_seen) {
        (Some(0), _) => return bad_request("from: log indexes start at 1"),
        (from, Some(seen)) => Some(seen.saturating_add(1).max(from.unwrap_or(0))),
        (Some(from), None) => Some(from),
        (None, None) => None,
    };
    let (subscription, first) =
        match Subscription::open(state.node.clone(), &state.hub, keys, start).await {
            Ok(opened) => opened,
            Err(WatchError::Ended(end)) => return ended_response(&end),
            Err(WatchError::Unavailable(message)) => {
                return HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "1"))
                    .json(json!({ "error": message, "leader": null }))
            }
        };
    // Its id is the index the watch starts after: a reconnection before any other event resumes
    // from there, not from a later "now".
    let after = start.map_or(subscription.position(), |s| s - 1);
    let created = render(
        format,
        "created",
        Some(after),
        json!({ "type": "created", "after": after }),
    );
    let stream = Stream {
        subscription,
        pending: first,
        progress,
        format,
        over: false,
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), stream))
    });
    let body =
        futures::stream::once(async move { Ok::<_, actix_web::Error>(created) }).chain(events);
    let content_type = match format {
        Format::ServerSentEvents => "text/event-stream",
        Format::JsonLines => "application/x-ndjson",
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// 410 for a start the history no longer holds.
fn ended_response(end: &WatchEnd) -> HttpResponse {
    let mut body = end_json(end);
    if let Value::Object(object) = &mut body {
        object.insert("error".into(), json!(describe_end(end)));
        object.insert("leader".into(), Value::Null);
    }
    HttpResponse::Gone().json(body)
}

fn end_json(end: &WatchEnd) -> Value {
    match end {
        WatchEnd::TooSlow { resume_from } => {
            json!({ "type": "cancelled", "reason": "too_slow", "resume_from": resume_from, "message": describe_end(end) })
        }
        WatchEnd::Compacted {
            compacted_through,
            index,
        } => json!({
            "type": "cancelled",
            "reason": "compacted",
            "compacted_through": compacted_through,
            "index": index,
            "message": describe_end(end),
        }),
    }
}

/// One event in the stream's framing; `id` sets the SSE id (the index to resume after).
fn render(format: Format, event: &str, id: Option<u64>, data: Value) -> Bytes {
    match format {
        Format::JsonLines => Bytes::from(format!("{data}\n")),
        Format::ServerSentEvents => {
            let id = id.map_or(String::new(), |id| format!("id: {id}\n"));
            Bytes::from(format!("event: {event}\n{id}data: {data}\n\n"))
        }
    }
}

struct Stream {
    subscription: Subscription,
    /// The replay's first batch, sent first.
    pending: Option<WatchBatch>,
    progress: Duration,
    format: Format,
    /// Set once the watch ended (the stream then ends).
    over: bool,
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.over {
            return None;
        }
        let batch = match self.pending.take() {
            Some(batch) => Ok(batch),
            None => self.subscription.next(self.progress).await,
        };
        match batch {
            Ok(batch) => Some(self.render_batch(&batch)),
            Err(WatchError::Ended(end)) => {
                self.over = true;
                Some(render(self.format, "cancelled", None, end_json(&end)))
            }
            Err(WatchError::Unavailable(message)) => {
                self.over = true;
                let data = json!({ "type": "cancelled", "reason": "unavailable", "message": message, "resume_from": self.subscription.position() + 1 });
                Some(render(self.format, "cancelled", None, data))
            }
        }
    }

    fn render_batch(&self, batch: &WatchBatch) -> Bytes {
        let mut chunk = Vec::new();
        if batch.events.is_empty() {
            let data = json!({ "type": "progress", "index": batch.through });
            chunk.extend_from_slice(&render(self.format, "progress", Some(batch.through), data));
            return Bytes::from(chunk);
        }
        for (i, event) in batch.events.iter().enumerate() {
            // The id goes on an entry's last event: resuming after it repeats nothing and skips
            // nothing.
            let last_of_entry = batch
                .events
                .get(i + 1)
                .is_none_or(|next| next.index() != event.index());
            let id = last_of_entry.then_some(event.index());
            let data = json::event(event);
            let name = if data["type"] == "put" {
                "put"
            } else {
                "delete"
            };
            chunk.extend_from_slice(&render(self.format, name, id, data));
        }
        Bytes::from(chunk)
    }
}
