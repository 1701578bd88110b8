//! The watch hub: where the state machine hands each applied entry's events to the watchers
//! following live changes, each into a bounded queue of its own.
//!
//! A watcher's slot is opened by the service ([`WatchHub::open`]) and activated by a query that
//! runs on the applier between two entries ([`WatchHub::activate`]): the query replays the
//! history up to the applied index and the hub delivers every entry applied after it, so a
//! watcher misses nothing and sees nothing twice. A watcher that does not take its events falls
//! behind; once its queue holds more than [`WatchLimits`] allow (or all queues together do) it
//! is ended with [`WatchEnd::TooSlow`] (and its queue freed), naming the index to resume from —
//! slow readers never grow the node's memory without bound. A node serves at most
//! [`WatchLimits::max_watchers`] watchers at once.

use crate::store::{Event, History, KeySet};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// How much one watcher may have waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// The most bytes of events ([`crate::store::KeyValue::cost`]) a watcher may have queued.
    pub max_queued_bytes: usize,
    /// The most events a watcher may have queued.
    pub max_queued_events: usize,
    /// The most bytes of events all watchers together may have queued: past it, the watcher
    /// being delivered to is ended as too slow.
    pub max_total_queued_bytes: usize,
    /// The most watchers a node serves at once; more are refused (HTTP 503).
    pub max_watchers: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            max_queued_bytes: 8 * 1024 * 1024,
            max_queued_events: 100_000,
            max_total_queued_bytes: 256 * 1024 * 1024,
            max_watchers: 10_000,
        }
    }
}

/// Why a watcher's stream ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WatchEnd {
    /// The watcher did not take its events quickly enough: its queue passed the limits. Every
    /// event below `resume_from` was delivered; watch again from it.
    TooSlow { resume_from: u64 },
    /// The events after the watcher's position were compacted away (a snapshot installed on a
    /// node that was far behind): read the keys again, then watch from after `index`.
    Compacted { compacted_through: u64, index: u64 },
}

struct Slot {
    /// Set when a query activated the slot (and it is in the hub's index under them until it
    /// closes). The slot receives events, and counts as active, while it has keys and has not
    /// ended.
    keys: Option<KeySet>,
    /// Events at or below this index are not delivered (the replay covered them, or the
    /// watcher asked to start later).
    after: u64,
    queue: VecDeque<Event>,
    queued_bytes: usize,
    ended: Option<WatchEnd>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
    /// The sum of the slots' `queued_bytes`.
    queued_bytes: usize,
    /// The activated slots watching one key, by that key: an entry's events are offered to
    /// these by a lookup, not a scan (a thousand watchers of a thousand keys cost a write one
    /// lookup per key it changes).
    by_key: BTreeMap<String, BTreeSet<u64>>,
    /// The activated slots watching a prefix, by that prefix: an event's key is looked up here
    /// cut at each length in `prefix_lengths`, so ten thousand watchers of a few kinds of prefix
    /// cost an event a few lookups, not ten thousand comparisons.
    by_prefix: BTreeMap<String, BTreeSet<u64>>,
    /// How many of `by_prefix`'s prefixes have each length (in bytes).
    prefix_lengths: BTreeMap<usize, usize>,
    /// The activated slots watching a range: offered every event.
    ranges: BTreeSet<u64>,
}

impl Inner {
    fn index(&mut self, id: u64, keys: &KeySet) {
        match keys {
            KeySet::Key(key) => {
                self.by_key.entry(key.clone()).or_default().insert(id);
            }
            KeySet::Prefix(prefix) => {
                let ids = self.by_prefix.entry(prefix.clone()).or_default();
                if ids.is_empty() {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                ids.insert(id);
            }
            KeySet::Range { .. } => {
                self.ranges.insert(id);
            }
        }
    }

    fn unindex(&mut self, id: u64, keys: &KeySet) {
        match keys {
            KeySet::Key(key) => {
                if let Some(ids) = self.by_key.get_mut(key) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
            KeySet::Prefix(prefix) => {
                let Some(ids) = self.by_prefix.get_mut(prefix) else {
                    return;
                };
                ids.remove(&id);
                if !ids.is_empty() {
                    return;
                }
                self.by_prefix.remove(prefix);
                if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                    *count -= 1;
                    if *count == 0 {
                        self.prefix_lengths.remove(&prefix.len());
                    }
                }
            }
            KeySet::Range { .. } => {
                self.ranges.remove(&id);
            }
        }
    }

    /// The activated slots whose keys may hold `key`: those of exactly it, those of a prefix of
    /// it, and every range's (the caller checks those). Each slot at most once.
    fn offered<'a>(
        by_key: &'a BTreeMap<String, BTreeSet<u64>>,
        by_prefix: &'a BTreeMap<String, BTreeSet<u64>>,
        prefix_lengths: &'a BTreeMap<usize, usize>,
        ranges: &'a BTreeSet<u64>,
        key: &'a str,
    ) -> impl Iterator<Item = &'a u64> + 'a {
        let prefixed = prefix_lengths
            .keys()
            .take_while(move |&&length| length <= key.len())
            // A cut inside a character is no prefix's: every prefix is whole characters.
            .filter_map(move |&length| key.get(..length))
            .filter_map(move |prefix| by_prefix.get(prefix))
            .flatten();
        by_key
            .get(key)
            .into_iter()
            .flatten()
            .chain(prefixed)
            .chain(ranges)
    }
}

/// Every watcher of one node.
pub struct WatchHub {
    inner: Mutex<Inner>,
    /// How many slots are active (publishing takes the lock only when some are).
    active: AtomicUsize,
    /// The state machine's applied index, as last published.
    applied: AtomicU64,
    limits: WatchLimits,
}

impl WatchHub {
    pub fn new(limits: WatchLimits) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            inner: Mutex::default(),
            active: AtomicUsize::new(0),
            applied: AtomicU64::new(0),
            limits,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the slots consistent before it can panic, so a poisoned lock
        // still guards a usable state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The applied index last published.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// How many watchers are following live changes.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A new, inactive slot (dropping the handle closes it), or `None` when the node already
    /// serves [`WatchLimits::max_watchers`].
    pub fn open(self: &Arc<Self>) -> Option<SlotHandle> {
        let notify = Arc::new(Notify::new());
        let mut inner = self.lock();
        if inner.slots.len() >= self.limits.max_watchers {
            return None;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.slots.insert(
            id,
            Slot {
                keys: None,
                after: 0,
                queue: VecDeque::new(),
                queued_bytes: 0,
                ended: None,
                notify: notify.clone(),
            },
        );
        Some(SlotHandle {
            hub: self.clone(),
            id,
            notify,
        })
    }

    /// Start delivering to slot `id` the events of `keys` with indexes above `after` (on the
    /// applier, between two entries). Returns false if the slot was closed meanwhile.
    pub(crate) fn activate(&self, id: u64, keys: KeySet, after: u64) -> bool {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(&id) else {
            return false;
        };
        if slot.ended.is_some() {
            return false;
        }
        let previous = slot.keys.replace(keys.clone());
        if previous.is_none() {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        slot.after = after;
        if let Some(previous) = previous {
            inner.unindex(id, &previous);
        }
        inner.index(id, &keys);
        true
    }

    /// The events of the entry at `index` (on the applier, as it is applied).
    pub(crate) fn publish(&self, index: u64, events: &[Event]) {
        if self.active() == 0 || events.is_empty() {
            self.applied.store(index, Ordering::Release);
            return;
        }
        let mut inner = self.lock();
        self.applied.store(index, Ordering::Release);
        let Inner {
            slots,
            queued_bytes,
            by_key,
            by_prefix,
            prefix_lengths,
            ranges,
            ..
        } = &mut *inner;
        for event in events {
            let key = event.kv.key.as_str();
            for id in Inner::offered(by_key, by_prefix, prefix_lengths, ranges, key) {
                if let Some(slot) = slots.get_mut(id) {
                    self.deliver(slot, queued_bytes, std::iter::once(event));
                }
            }
        }
    }

    /// The state machine was replaced by a snapshot at `index` whose history is `history`:
    /// deliver the events each active watcher has not seen, or end it if they are gone.
    pub(crate) fn restored(&self, index: u64, history: &History) {
        let mut inner = self.lock();
        let before = self.applied.swap(index, Ordering::AcqRel);
        let Inner {
            slots,
            queued_bytes,
            ..
        } = &mut *inner;
        for slot in slots.values_mut() {
            if slot.keys.is_none() || slot.ended.is_some() {
                continue;
            }
            let from = slot.after.max(before);
            if history.compacted_through() > from {
                self.end(
                    slot,
                    queued_bytes,
                    WatchEnd::Compacted {
                        compacted_through: history.compacted_through(),
                        index,
                    },
                );
                continue;
            }
            self.deliver(slot, queued_bytes, history.between(from, index));
        }
    }

    /// Queue the events of `slot`'s keys past its position; `total` is every slot's queued bytes.
    fn deliver<'a>(
        &self,
        slot: &mut Slot,
        total: &mut usize,
        events: impl Iterator<Item = &'a Event>,
    ) {
        let Some(keys) = &slot.keys else {
            return;
        };
        if slot.ended.is_some() {
            return;
        }
        let mut added = false;
        for event in events {
            if event.index() <= slot.after || !keys.contains(&event.kv.key) {
                continue;
            }
            if slot.queue.len() >= self.limits.max_queued_events
                || slot.queued_bytes + event.kv.cost() > self.limits.max_queued_bytes
                || *total + event.kv.cost() > self.limits.max_total_queued_bytes
            {
                let resume_from = slot.queue.front().map_or(event.index(), Event::index);
                self.end(slot, total, WatchEnd::TooSlow { resume_from });
                return;
            }
            slot.queued_bytes += event.kv.cost();
            *total += event.kv.cost();
            slot.queue.push_back(event.clone());
            added = true;
        }
        if added {
            slot.notify.notify_one();
        }
    }

    /// End the slot's watch: it receives nothing more and counts as active no longer.
    fn end(&self, slot: &mut Slot, total: &mut usize, reason: WatchEnd) {
        if slot.keys.is_some() && slot.ended.is_none() {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        *total -= slot.queued_bytes;
        slot.queue = VecDeque::new();
        slot.queued_bytes = 0;
        slot.ended = Some(reason);
        slot.notify.notify_one();
    }

    /// Take the slot's queued events (whole entries, about `max_bytes`), with the index they
    /// cover: every event of the slot's keys at or below it has now been taken.
    fn take(&self, id: u64, max_bytes: usize) -> Taken {
        let mut inner = self.lock();
        let Inner {
            slots,
            queued_bytes: total,
            ..
        } = &mut *inner;
        let Some(slot) = slots.get_mut(&id) else {
            return Taken::Ended(WatchEnd::TooSlow { resume_from: 0 });
        };
        if let Some(reason) = &slot.ended {
            return Taken::Ended(reason.clone());
        }
        let mut events = Vec::new();
        let mut bytes = 0;
        while let Some(front) = slot.queue.front() {
            let index = front.index();
            if bytes >= max_bytes && !events.is_empty() {
                // The rest waits for the next take; this batch covers up to the entry before.
                return Taken::Events {
                    events,
                    through: index - 1,
                };
            }
            while slot.queue.front().is_some_and(|e| e.index() == index) {
                if let Some(event) = slot.queue.pop_front() {
                    slot.queued_bytes -= event.kv.cost();
                    *total -= event.kv.cost();
                    bytes += event.kv.cost();
                    events.push(event);
                }
            }
        }
        // The queue is empty: everything applied so far was delivered.
        let through = self.applied().max(slot.after);
        Taken::Events { events, through }
    }

    fn close(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.remove(&id) {
            inner.queued_bytes -= slot.queued_bytes;
            if let Some(keys) = &slot.keys {
                inner.unindex(id, keys);
                if slot.ended.is_none() {
                    self.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What a take found.
pub(crate) enum Taken {
    Events { events: Vec<Event>, through: u64 },
    Ended(WatchEnd),
}

/// A watcher's slot in the hub; closed when dropped.
pub struct SlotHandle {
    hub: Arc<WatchHub>,
    id: u64,
    notify: Arc<Notify>,
}

impl SlotHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn take(&self, max_bytes: usize) -> Taken {
        self.hub.take(self.id, max_bytes)
    }

    /// Resolves when events arrive or the slot ends (or at once if that happened since the last
    /// take).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        self.hub.close(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix index forgets a prefix, and its length, with its last watcher.
    #[test]
    fn the_prefix_index_is_empty_once_its_watchers_closed() {
        let hub = WatchHub::new(WatchLimits::default());
        let prefixes = ["a", "b", "b", "cd", ""];
        let slots: Vec<_> = prefixes
            .iter()
            .map(|prefix| {
                let slot = hub.open().expect("a slot");
                assert!(hub.activate(slot.id(), KeySet::Prefix(prefix.to_string()), 0));
                slot
            })
            .collect();
        {
            let inner = hub.lock();
            assert_eq!(inner.by_prefix.len(), 4);
            let lengths: Vec<_> = inner.prefix_lengths.iter().map(|(l, n)| (*l, *n)).collect();
            assert_eq!(lengths, [(0, 1), (1, 2), (2, 1)]);
        }
        // Watching another prefix moves the slot in the index.
        assert!(hub.activate(slots[3].id(), KeySet::Prefix("e".into()), 0));
        let lengths: Vec<_> = hub
            .lock()
            .prefix_lengths
            .iter()
            .map(|(l, n)| (*l, *n))
            .collect();
        assert_eq!(lengths, [(0, 1), (1, 3)]);
        drop(slots);
        let inner = hub.lock();
        assert!(inner.by_prefix.is_empty() && inner.prefix_lengths.is_empty());
        assert!(inner.ranges.is_empty() && inner.by_key.is_empty());
    }
}
