//! [`Client::watch`]: a watch over the native protocol, as a stream of batches.
//!
//! Each call to [`Watch::next`] is one long poll from where the last batch ended, on whichever
//! node the client is talking to; when that node fails the client moves to another and goes on
//! from the same index, so no change is missed or repeated.

use super::{Client, ClientError};
use crate::protocol::{KvRequest, KvResponse, WatchAnswer, WatchRequest};
use crate::store::KeySet;
use crate::watch::{WatchBatch, WatchEnd};
use std::time::Duration;

/// A watch of a set of keys: [`Watch::next`] gives the changes in log order, exactly once.
pub struct Watch {
    client: Client,
    keys: KeySet,
    /// The index the next poll starts at (`None`: from the next change).
    next_start: Option<u64>,
    /// How long one poll waits for a change: an idle watch gets a progress batch this often.
    wait: Duration,
}

impl Client {
    /// Watch the keys of `keys` from index `start` (inclusive; `None`: from the next change).
    pub fn watch(&self, keys: KeySet, start: Option<u64>) -> Watch {
        let wait = (self.inner.options.request_timeout / 2).min(Duration::from_secs(10));
        Watch {
            client: self.clone(),
            keys,
            next_start: start,
            wait,
        }
    }
}

impl Watch {
    /// Wait at most `wait` per poll: an idle watch then yields an empty batch (its progress)
    /// this often. Kept below the client's request timeout.
    pub fn with_progress_every(mut self, wait: Duration) -> Watch {
        self.wait = wait.min(self.client.inner.options.request_timeout / 2);
        self
    }

    /// The index the next batch starts at.
    pub fn next_start(&self) -> Option<u64> {
        self.next_start
    }

    /// The next changes, or after the progress period none: every change of the keys up to the
    /// batch's `through` has then been delivered. [`ClientError::Compacted`] when the changes to
    /// go on from are no longer kept.
    pub async fn next(&mut self) -> Result<WatchBatch, ClientError> {
        loop {
            let request = KvRequest::Watch(WatchRequest {
                keys: self.keys.clone(),
                start: self.next_start,
                wait_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            });
            match self.client.call(request, false).await? {
                KvResponse::Watch(WatchAnswer::Batch(batch)) => {
                    self.next_start = Some(batch.through + 1);
                    return Ok(batch);
                }
                // The node's buffer for this poll filled up: go on from where it stopped.
                KvResponse::Watch(WatchAnswer::Ended(WatchEnd::TooSlow { resume_from })) => {
                    self.next_start = Some(resume_from);
                }
                KvResponse::Watch(WatchAnswer::Ended(WatchEnd::Compacted {
                    compacted_through,
                    index,
                })) => {
                    return Err(ClientError::Compacted {
                        compacted_through,
                        index,
                    })
                }
                other => {
                    return Err(ClientError::Unknown(format!(
                        "unexpected answer: {other:?}"
                    )))
                }
            }
        }
    }
}
