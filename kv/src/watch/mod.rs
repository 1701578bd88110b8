//! Watch: the changes to a key, a range or a prefix, in log order, exactly once, from any index
//! the history still holds, on any node.
//!
//! A [`Subscription`] first replays the replicated history ([`crate::store::History`]) a page at
//! a time with local queries; the query that reaches the end of the history also activates the
//! subscription's slot in the [`WatchHub`], on the applier between two entries, so the entries
//! applied after it arrive through the hub: no gap, no repeat. Each batch says the index it
//! covers (`through`): every change of the keys up to it was delivered, so an idle watcher
//! learns how current it is, and a watcher that reconnects (to this node or another) resumes
//! from `through + 1`. The HTTP API streams a subscription as Server-Sent Events
//! (`crate::http`); the native protocol long-polls one (`KvRequest::Watch`), which
//! [`crate::Client::watch`] turns back into a stream.

mod hub;

pub use hub::{SlotHandle, WatchEnd, WatchHub, WatchLimits};

use crate::store::{Event, KeySet, KvAnswer, KvQuery, KvStateMachine};
use hub::Taken;

/// What a slot's take found (for the state machine's tests).
#[cfg(test)]
pub(crate) use hub::Taken as hub_taken;
use raftor::{Consistency, RaftNode};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// About this many bytes of events per batch (always whole entries, at least one).
pub const WATCH_BATCH_BYTES: usize = 1024 * 1024;

/// The query that replays a page of history and, at its end, activates a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPageQuery {
    pub keys: KeySet,
    /// Replay the events after this index; `None`: none, start with the next entry applied.
    pub after: Option<u64>,
    pub max_bytes: u64,
    /// The slot to activate once the replay reaches the end of the history.
    pub slot: u64,
}

/// The answer to a [`WatchPageQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchPageAnswer {
    /// Events of the keys, and the index the page covers; `live` once the slot is active.
    Page {
        events: Vec<Event>,
        through: u64,
        live: bool,
    },
    /// The events after the asked index are no longer kept: everything at or below
    /// `compacted_through` is gone. `index` is the node's applied index.
    Compacted { compacted_through: u64, index: u64 },
}

/// Changes delivered together: every change of the watched keys with an index at or below
/// `through` has now been delivered (the events, possibly none, are the new ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    pub through: u64,
}

/// Why a subscription stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("{}", describe_end(.0))]
    Ended(WatchEnd),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A human-readable reason for a watch's end.
pub fn describe_end(end: &WatchEnd) -> String {
    match end {
        WatchEnd::TooSlow { resume_from } => format!(
            "the watcher fell too far behind (its buffer on the node filled up) and was cancelled; every change before index {resume_from} was delivered: watch again from {resume_from}"
        ),
        WatchEnd::Compacted {
            compacted_through,
            index,
        } => format!(
            "compacted: the changes up to index {compacted_through} are no longer kept; read the keys again (the node is at index {index}) and watch from after that read's index"
        ),
    }
}

/// How a subscription queries its node's state machine (locally: on that node, as applied).
pub trait LocalReader {
    fn read_local(&self, query: KvQuery) -> impl Future<Output = Result<KvAnswer, String>>;
}

impl LocalReader for RaftNode<KvStateMachine> {
    async fn read_local(&self, query: KvQuery) -> Result<KvAnswer, String> {
        self.read(query, Consistency::Local)
            .await
            .map_err(|e| e.to_string())
    }
}

/// One watcher, on one node.
pub struct Subscription<R: LocalReader = RaftNode<KvStateMachine>> {
    node: R,
    slot: SlotHandle,
    keys: KeySet,
    /// Every change of `keys` at or below this index was delivered (or predates the start).
    position: u64,
    /// Whether the slot is active (the replay is over).
    live: bool,
    /// Replay from `position` not done yet (`false` when starting from now).
    replay: bool,
}

impl<R: LocalReader> Subscription<R> {
    /// Watch `keys` from index `start` (inclusive), or from the next change with `None`, on the
    /// node `node` whose watchers `hub` serves. Fails at once with [`WatchEnd::Compacted`] if
    /// `start` is no longer in the history.
    pub async fn open(
        node: R,
        hub: &Arc<WatchHub>,
        keys: KeySet,
        start: Option<u64>,
    ) -> Result<(Subscription<R>, Option<WatchBatch>), WatchError> {
        let slot = hub.open().ok_or_else(|| {
            WatchError::Unavailable(
                "this node serves as many watchers as it may; try another node, or later".into(),
            )
        })?;
        let mut subscription = Subscription {
            node,
            slot,
            keys,
            position: start.map_or(0, |s| s.saturating_sub(1)),
            live: false,
            replay: start.is_some(),
        };
        let first = subscription.page().await?;
        Ok((subscription, first))
    }

    /// The index every change up to which was delivered.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// One page of replay (activating the slot at its end); the batch if it holds events.
    async fn page(&mut self) -> Result<Option<WatchBatch>, WatchError> {
        let query = KvQuery::WatchPage(WatchPageQuery {
            keys: self.keys.clone(),
            after: self.replay.then_some(self.position),
            max_bytes: WATCH_BATCH_BYTES as u64,
            slot: self.slot.id(),
        });
        let answer = self
            .node
            .read_local(query)
            .await
            .map_err(WatchError::Unavailable)?;
        match answer {
            KvAnswer::WatchPage(WatchPageAnswer::Page {
                events,
                through,
                live,
            }) => {
                self.replay = true;
                self.live = live;
                self.position = self.position.max(through);
                Ok((!events.is_empty()).then_some(WatchBatch {
                    events,
                    through: self.position,
                }))
            }
            KvAnswer::WatchPage(WatchPageAnswer::Compacted {
                compacted_through,
                index,
            }) => Err(WatchError::Ended(WatchEnd::Compacted {
                compacted_through,
                index,
            })),
            other => Err(WatchError::Unavailable(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// The next batch: at once if changes are waiting, else when one comes, else after `wait`
    /// an empty batch (a progress notification: nothing changed up to its `through`).
    pub async fn next(&mut self, wait: Duration) -> Result<WatchBatch, WatchError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.live {
                if let Some(batch) = self.page().await? {
                    return Ok(batch);
                }
                continue;
            }
            match self.slot.take(WATCH_BATCH_BYTES) {
                Taken::Ended(end) => return Err(WatchError::Ended(end)),
                Taken::Events { events, through } => {
                    self.position = self.position.max(through);
                    if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                        return Ok(WatchBatch {
                            events,
                            through: self.position,
                        });
                    }
                }
            }
            let _ = tokio::time::timeout_at(deadline, self.slot.notified()).await;
        }
    }
}
