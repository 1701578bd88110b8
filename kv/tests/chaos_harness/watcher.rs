//! A watcher of every key under the chaos: it follows one node for a few batches, then moves to
//! another (as a client whose connection breaks would), resuming after the last index it saw —
//! on followers that lag, nodes that restarted from a snapshot, and the leader. At the end what
//! it saw must be exactly the cluster's history: every change once, in log order.

use super::{Cluster, Shared};
use raftor::state_machine::unframe;
use raftor_actors::NodeHandle;
use raftor_kv::store::{Event, KeySet, KvAnswer, KvQuery};
use raftor_kv::watch::{LocalReader, Subscription, WatchBatch, WatchError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// A node's local queries, as a subscription makes them.
struct NodeReader(Rc<NodeHandle>);

impl LocalReader for NodeReader {
    async fn read_local(&self, query: KvQuery) -> Result<KvAnswer, String> {
        let bytes = self
            .0
            .query_local(query.encode())
            .await
            .ok_or("the node stopped")?;
        unframe::<KvAnswer>(&bytes).map_err(|e| format!("{e:?}"))
    }
}

/// What the watcher saw, and whether it matched the history.
#[derive(Clone, Debug, Default)]
pub struct WatchCheck {
    pub events: usize,
    /// Times it moved to another node (or reopened on the same one).
    pub reconnects: u64,
    /// What went wrong, if anything: a gap, a repeat, an event out of order, a compacted start.
    pub problem: Option<String>,
}

pub struct Watcher {
    cluster: Shared<Cluster>,
    rng: SmallRng,
    events: Vec<Event>,
    /// Every change up to this index has been seen.
    position: u64,
    reconnects: u64,
    problem: Option<String>,
}

impl Watcher {
    pub fn new(cluster: Shared<Cluster>, seed: u64) -> Watcher {
        Watcher {
            cluster,
            rng: SmallRng::seed_from_u64(seed ^ 0x0077_6174_6368_6572),
            events: Vec::new(),
            position: 0,
            reconnects: 0,
            problem: None,
        }
    }

    fn take(&mut self, batch: WatchBatch) {
        self.events.extend(batch.events);
        self.position = self.position.max(batch.through);
    }

    async fn open(
        &self,
        node: raftor_core::NodeId,
    ) -> Option<Result<(Subscription<NodeReader>, Option<WatchBatch>), WatchError>> {
        let (handle, hub) = self.cluster.borrow().watchable(node)?;
        let keys = KeySet::Prefix(String::new());
        Some(Subscription::open(NodeReader(handle), &hub, keys, Some(self.position + 1)).await)
    }

    /// Watch from node to node until `until`.
    pub async fn run(mut self, until: Instant) -> Watcher {
        while Instant::now() < until && self.problem.is_none() {
            let running = self.cluster.borrow().running();
            if running.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let node = running[self.rng.gen_range(0..running.len())];
            self.reconnects += 1;
            let (mut subscription, first) = match self.open(node).await {
                None | Some(Err(WatchError::Unavailable(_))) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Some(Err(WatchError::Ended(end))) => {
                    self.problem = Some(format!(
                        "watch from {} on node {node}: {end:?}",
                        self.position + 1
                    ));
                    break;
                }
                Some(Ok(opened)) => opened,
            };
            if let Some(batch) = first {
                self.take(batch);
            }
            for _ in 0..self.rng.gen_range(1..8) {
                let wait = Duration::from_millis(self.rng.gen_range(10..200));
                match subscription.next(wait).await {
                    Ok(batch) => self.take(batch),
                    // The node stopped, or the watcher fell behind there: go on elsewhere.
                    Err(WatchError::Unavailable(_))
                    | Err(WatchError::Ended(raftor_kv::watch::WatchEnd::TooSlow { .. })) => break,
                    Err(WatchError::Ended(end)) => {
                        self.problem = Some(format!("on node {node}: {end:?}"));
                        break;
                    }
                }
            }
        }
        self
    }

    /// Catch up with the node furthest ahead, replay its whole history, and compare.
    pub async fn check_against_the_history(mut self) -> WatchCheck {
        if self.problem.is_none() {
            self.problem = self.compare().await.err();
        }
        WatchCheck {
            events: self.events.len(),
            reconnects: self.reconnects,
            problem: self.problem,
        }
    }

    async fn compare(&mut self) -> Result<(), String> {
        // The node that applied the most.
        let mut best = None;
        let running = self.cluster.borrow().running();
        for node in running {
            let Some((handle, hub)) = self.cluster.borrow().watchable(node) else {
                continue;
            };
            let _ = handle;
            if best
                .as_ref()
                .is_none_or(|(_, applied)| hub.applied() > *applied)
            {
                best = Some((node, hub.applied()));
            }
        }
        let (node, applied) = best.ok_or("no node runs at the end")?;
        let (mut mine, first) = self
            .open(node)
            .await
            .ok_or("the node stopped")?
            .map_err(|e| format!("catching up on node {node}: {e}"))?;
        if let Some(batch) = first {
            self.take(batch);
        }
        while self.position < applied {
            let batch = mine
                .next(Duration::from_millis(50))
                .await
                .map_err(|e| format!("catching up on node {node}: {e}"))?;
            self.take(batch);
        }
        // The history, replayed afresh from the start.
        let (handle, hub) = self.cluster.borrow().watchable(node).ok_or("stopped")?;
        let (mut replay, first) = Subscription::open(
            NodeReader(handle),
            &hub,
            KeySet::Prefix(String::new()),
            Some(1),
        )
        .await
        .map_err(|e| format!("replaying node {node}'s history: {e}"))?;
        let mut history: Vec<Event> = first.map(|b| b.events).unwrap_or_default();
        while replay.position() < self.position {
            let batch = replay
                .next(Duration::from_millis(50))
                .await
                .map_err(|e| format!("replaying node {node}'s history: {e}"))?;
            history.extend(batch.events);
        }
        history.retain(|e| e.index() <= self.position);
        let seen: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.index() <= self.position)
            .collect();
        if seen.len() != history.len() || seen.iter().zip(&history).any(|(a, b)| *a != b) {
            let first_difference = seen
                .iter()
                .zip(&history)
                .position(|(a, b)| *a != b)
                .unwrap_or(seen.len().min(history.len()));
            return Err(format!(
                "the watcher saw {} events, the history holds {} (up to index {}); first difference at #{first_difference}: saw {:?}, history {:?}",
                seen.len(),
                history.len(),
                self.position,
                seen.get(first_difference),
                history.get(first_difference)
            ));
        }
        Ok(())
    }
}
