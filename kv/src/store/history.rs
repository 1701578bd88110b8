//! The map's recent changes, in log order: what a watch that starts in the past replays before it
//! follows live changes.
//!
//! The history is part of the replicated state: every node appends the same events at the same
//! entries and drops the oldest by the same bounds ([`HISTORY_MAX_EVENTS`],
//! [`HISTORY_MAX_BYTES`]), and snapshots carry it. So a node that restarted, or caught up from
//! a snapshot, can still replay what happened before it; and every node says alike which
//! indexes are compacted away ([`History::compacted_through`]).

use super::keys::{KeySet, KeyValue};
use imbl::Vector;
use serde::{Deserialize, Serialize};

/// At most this many events are kept.
pub const HISTORY_MAX_EVENTS: usize = 100_000;
/// At most this many bytes of events ([`KeyValue::cost`]) are kept.
pub const HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key. Every event of one log entry has that entry's index
/// (`kv.mod_index`); an entry that changed several keys (a transaction, a range delete, a
/// lease's end) has several events with the same index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// After a put: the key as written. After a delete: the key, no value, version 0 and
    /// `mod_index` the index of the delete.
    pub kv: KeyValue,
}

impl Event {
    /// The log index of the change.
    pub fn index(&self) -> u64 {
        self.kv.mod_index
    }
}

/// The recent events, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Invariant: indexes never decrease along the vector, and all are above
    /// `compacted_through`.
    #[serde(deserialize_with = "super::cautious::vector")]
    events: Vector<Event>,
    /// The sum of the events' costs; at most [`HISTORY_MAX_BYTES`] after every append.
    bytes: usize,
    /// Every event at or below this index was dropped (or predates the history): a watch must
    /// start after it.
    compacted_through: u64,
}

impl History {
    /// An empty history of a map whose earlier changes are unknown up to `index`.
    pub fn starting_after(index: u64) -> History {
        History {
            compacted_through: index,
            ..History::default()
        }
    }

    pub fn compacted_through(&self) -> u64 {
        self.compacted_through
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Append the events of one entry (moved out of `events`, which is left empty), then drop the
    /// oldest entries' events while over a bound. Events of one entry are dropped together, so a
    /// watch never sees half of an entry.
    pub fn append(&mut self, events: &mut Vec<Event>) {
        let cost: usize = events.iter().map(|e| e.kv.cost()).sum();
        if events.len() > HISTORY_MAX_EVENTS || cost > HISTORY_MAX_BYTES {
            // One entry larger than the whole history (a range delete of very many keys): keep
            // nothing rather than copy it all and drop it; a watch must start after it.
            if let Some(last) = events.last() {
                *self = History::starting_after(last.index());
            }
            events.clear();
            return;
        }
        for event in events.drain(..) {
            debug_assert!(self
                .events
                .back()
                .is_none_or(|last| last.index() <= event.index()));
            self.bytes += event.kv.cost();
            self.events.push_back(event);
        }
        while self.events.len() > HISTORY_MAX_EVENTS || self.bytes > HISTORY_MAX_BYTES {
            let Some(index) = self.events.front().map(Event::index) else {
                break;
            };
            while self.events.front().is_some_and(|e| e.index() == index) {
                if let Some(event) = self.events.pop_front() {
                    self.bytes = self.bytes.saturating_sub(event.kv.cost());
                }
            }
            self.compacted_through = index;
        }
    }

    /// The position of the first event with an index above `after`.
    fn first_after(&self, after: u64) -> usize {
        let (mut low, mut high) = (0, self.events.len());
        while low < high {
            let middle = (low + high) / 2;
            if self.events[middle].index() <= after {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// The events of `keys` with indexes above `after`, oldest first, until about `max_bytes`
    /// (always whole entries, and at least one entry's events). With them, the index the scan
    /// covered: every event of `keys` at or below it is in the answer or at or below `after`;
    /// `None` when the scan reached the end of the history.
    pub fn scan(&self, keys: &KeySet, after: u64, max_bytes: usize) -> (Vec<Event>, Option<u64>) {
        let mut found = Vec::new();
        let mut bytes = 0;
        let mut position = self.first_after(after);
        while position < self.events.len() {
            let index = self.events[position].index();
            if bytes >= max_bytes && !found.is_empty() {
                return (found, Some(index - 1));
            }
            while position < self.events.len() && self.events[position].index() == index {
                let event = &self.events[position];
                if keys.contains(&event.kv.key) {
                    bytes += event.kv.cost();
                    found.push(event.clone());
                }
                position += 1;
            }
        }
        (found, None)
    }

    /// The events with indexes in `(after, through]`, oldest first.
    pub fn between(&self, after: u64, through: u64) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .skip(self.first_after(after))
            .take_while(move |event| event.index() <= through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(key: &str, index: u64, value_bytes: usize) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: Some(Bytes::from(vec![0u8; value_bytes])),
                create_index: index,
                mod_index: index,
                version: 1,
                lease: None,
            },
        }
    }

    #[test]
    fn scans_resume_without_gaps_or_repeats_and_never_split_an_entry() {
        let mut history = History::default();
        for index in 1..=10 {
            // Two events per entry: one of "a", one of "b".
            history.append(&mut vec![put("a", index, 10), put("b", index, 10)]);
        }
        let all = KeySet::Prefix(String::new());
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            // A cap smaller than one event: each page is exactly one entry.
            let (events, covered) = history.scan(&all, after, 1);
            assert!(events.iter().all(|e| e.index() == events[0].index()));
            seen.extend(events.iter().map(|e| (e.index(), e.kv.key.clone())));
            match covered {
                Some(covered) => after = covered,
                None => break,
            }
        }
        assert_eq!(seen.len(), 20);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, no repeats");
        let (only_a, _) = history.scan(&KeySet::Key("a".into()), 7, usize::MAX);
        assert_eq!(
            only_a.iter().map(Event::index).collect::<Vec<_>>(),
            [8, 9, 10]
        );
    }

    #[test]
    fn the_oldest_entries_go_first_and_whole() {
        let mut history = History::starting_after(4);
        assert_eq!(history.compacted_through(), 4);
        let big = HISTORY_MAX_BYTES / 4;
        for index in 5..=9 {
            history.append(&mut vec![put("k", index, big)]);
        }
        // Five events of a quarter of the budget each: the oldest two went.
        assert_eq!(history.len(), 3);
        assert_eq!(history.compacted_through(), 6);
        let (events, _) = history.scan(&KeySet::Key("k".into()), 0, usize::MAX);
        assert_eq!(events.first().map(Event::index), Some(7));
        assert_eq!(history.between(7, 8).count(), 1);

        // One entry bigger than the whole history leaves nothing but its index.
        let mut huge: Vec<Event> = (0..=HISTORY_MAX_EVENTS)
            .map(|i| put(&format!("k{i}"), 10, 0))
            .collect();
        history.append(&mut huge);
        assert!(history.is_empty());
        assert_eq!(history.compacted_through(), 10);
    }
}
