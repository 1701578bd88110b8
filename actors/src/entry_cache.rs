//! The newest part of this node's log, kept in memory so that the leader's sends and the applier need
//! not read back from the log store what the node has just handed it (the log store may be busy
//! syncing). The node updates it with every [`LogWrite`] as it hands that write to the log store,
//! so the cache shows the log as the rules see it — durable or not yet.
//!
//! Who may read what: the leader may send entries before its own copy is durable (§10.2.1 of the
//! Raft thesis: the leader's write and the followers' run in parallel; the leader counts itself only
//! once flushed). The applier reads only up to what is both committed and locally durable, which
//! the node tells it; committed entries are never truncated, so what it reads is final.
//!
//! What stays: the newest `recent_bytes` always, and beyond them every entry this node still
//! needs — not yet applied here, or not yet sent to a follower the leader is streaming to — up to
//! `needed_bytes` in all. A window of the newest bytes alone was smaller than the pipeline under a
//! load of large values (64 writes of 1 MiB in flight against 16 MiB): the leader evicted entries
//! before their turn to be sent and before it applied them, then read them back from the log
//! store, between that store's synced writes (BENCHMARKS.md, issue 23).
//!
//! A miss (evicted, or never cached, such as entries from before a restart) is not an error: the
//! reader falls back to the log store.

use raftor_core::{Entry, LogId, LogIndex, LogWrite, Term};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// A byte-bounded window onto the end of the log, shared by the node (a leader sends from it) and
/// its applier. Cloning shares the window.
#[derive(Clone)]
pub struct EntryCache {
    inner: Arc<Mutex<Window>>,
}

struct Window {
    /// Consecutive entries, oldest first. Invariant: `entries[k].index == entries[0].index + k`.
    entries: VecDeque<Entry>,
    /// The id of the entry just before `entries[0]`, when known (so the first cached entry can be
    /// sent with its `prevLogTerm`, §5.3).
    before_first: Option<LogId>,
    /// Payload bytes held (with [`ENTRY_OVERHEAD`] each); over `recent_bytes` only while what is
    /// over is still needed, and never over `needed_bytes` but for the newest single entry.
    bytes: usize,
    recent_bytes: usize,
    needed_bytes: usize,
    /// The applier's progress: entries after it are still needed (to be applied).
    applied: LogIndex,
    /// The lowest index the leader has yet to send to a follower it streams to (in
    /// `Replicate`): entries from it on are still needed. `None`: no such follower.
    unsent_from: Option<LogIndex>,
    /// Reads the window could not serve (the reader went to the log store instead).
    misses: u64,
}

/// What a read from the cache found.
#[derive(Debug, PartialEq, Eq)]
pub struct CachedRange {
    /// The term of the entry just before the first one returned.
    pub prev_term: Term,
    /// Consecutive entries from the index asked for; never empty.
    pub entries: Vec<Entry>,
}

/// Per-entry bookkeeping counted on top of the payload, so that many tiny entries are bounded too.
const ENTRY_OVERHEAD: usize = 64;

fn cost(entry: &Entry) -> usize {
    entry.payload_len() + ENTRY_OVERHEAD
}

impl EntryCache {
    /// An empty cache keeping the newest `recent_bytes` of entries, and older ones while they are
    /// still needed up to `needed_bytes` in all (at least `recent_bytes`).
    pub fn new(recent_bytes: usize, needed_bytes: usize) -> EntryCache {
        EntryCache {
            inner: Arc::new(Mutex::new(Window {
                entries: VecDeque::new(),
                before_first: None,
                bytes: 0,
                recent_bytes,
                needed_bytes: needed_bytes.max(recent_bytes),
                applied: LogIndex::ZERO,
                unsent_from: None,
                misses: 0,
            })),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        // A panic while holding the lock cannot leave the window inconsistent in a way that
        // matters more than losing it: recover the guard rather than propagate the poison.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `write` as the log store will: truncate, then append.
    pub fn apply(&self, write: &LogWrite) {
        let mut window = self.window();
        if let Some(from) = write.truncate_from {
            window.truncate(from);
        }
        if let Some(upto) = write.compact_to {
            window.compact(upto);
        }
        for entry in &write.entries {
            window.push(entry.clone());
        }
        window.evict();
    }

    /// The applier has applied everything up to `applied`: those entries are no longer needed
    /// for applying.
    pub fn applied_through(&self, applied: LogIndex) {
        let mut window = self.window();
        if applied > window.applied {
            window.applied = applied;
            window.evict();
        }
    }

    /// The lowest index the leader has yet to send to a follower it streams to, `None` when there
    /// is none (not leader, or every follower probing or taking a snapshot).
    pub fn unsent_from(&self, index: Option<LogIndex>) {
        let mut window = self.window();
        if window.unsent_from != index {
            window.unsent_from = index;
            window.evict();
        }
    }

    /// Entries `from..=to` (stopping before `max_bytes` of payload, but at least one), with the
    /// term of the entry before `from`; `None` unless the cache holds `from` and knows that term.
    pub fn read(&self, from: LogIndex, to: LogIndex, max_bytes: usize) -> Option<CachedRange> {
        let mut window = self.window();
        let found = window.read(from, to, max_bytes);
        if found.is_none() {
            window.misses += 1;
        }
        found
    }

    /// How many reads the cache could not serve since it was made: each went to the log store.
    pub fn misses(&self) -> u64 {
        self.window().misses
    }

    /// The term of the entry at `index`, if the cache knows it (index 0 has term 0).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.window().term(index)
    }

    /// The index of the oldest entry held, if any.
    pub fn first_index(&self) -> Option<LogIndex> {
        self.window().entries.front().map(|entry| entry.index)
    }
}

impl Window {
    /// See [`EntryCache::read`].
    fn read(&self, from: LogIndex, to: LogIndex, max_bytes: usize) -> Option<CachedRange> {
        let first = self.entries.front()?.index;
        if from < first || from > to {
            return None;
        }
        let prev_term = self.term(from.prev())?;
        let skip = usize::try_from(from.0 - first.0).ok()?;
        let mut bytes = 0usize;
        let mut entries = Vec::new();
        for entry in self.entries.iter().skip(skip) {
            if entry.index > to {
                break;
            }
            if !entries.is_empty() && bytes.saturating_add(entry.payload_len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(entry.payload_len());
            entries.push(entry.clone());
        }
        if entries.is_empty() {
            return None;
        }
        Some(CachedRange { prev_term, entries })
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        if let Some(before) = self.before_first {
            if before.index == index {
                return Some(before.term);
            }
        }
        let first = self.entries.front()?.index;
        if index < first {
            return None;
        }
        let offset = usize::try_from(index.0 - first.0).ok()?;
        self.entries.get(offset).map(|entry| entry.term)
    }

    fn truncate(&mut self, from: LogIndex) {
        while let Some(last) = self.entries.back() {
            if last.index < from {
                break;
            }
            let removed = self.entries.pop_back().map(|e| cost(&e)).unwrap_or(0);
            self.bytes = self.bytes.saturating_sub(removed);
        }
        if self.before_first.is_some_and(|before| before.index >= from) {
            self.before_first = None;
        }
    }

    /// The log now starts after `upto`: entries up to it go, and it is the entry before the window.
    fn compact(&mut self, upto: LogId) {
        while let Some(first) = self.entries.front() {
            if first.index > upto.index {
                break;
            }
            let removed = self.entries.pop_front().map(|e| cost(&e)).unwrap_or(0);
            self.bytes = self.bytes.saturating_sub(removed);
        }
        match self.entries.front() {
            Some(first) if first.index != upto.index.next() => {
                // The window does not continue from `upto` (it holds another log's suffix).
                self.entries.clear();
                self.bytes = 0;
                self.before_first = Some(upto);
            }
            _ => self.before_first = Some(upto),
        }
    }

    fn push(&mut self, entry: Entry) {
        match self.entries.back() {
            Some(last) if last.index.next() == entry.index => {}
            Some(_) => {
                // Not contiguous (the caller skipped something): start over from this entry.
                self.entries.clear();
                self.bytes = 0;
                self.before_first = None;
            }
            None => {
                // A fresh window: the entry before is known only if it was the last one evicted.
                if self
                    .before_first
                    .is_some_and(|before| before.index.next() != entry.index)
                {
                    self.before_first = None;
                }
            }
        }
        self.bytes += cost(&entry);
        self.entries.push_back(entry);
    }

    /// Whether the entry at `index` is still to be applied or sent.
    fn needed(&self, index: LogIndex) -> bool {
        index > self.applied || self.unsent_from.is_some_and(|unsent| index >= unsent)
    }

    /// Drop the oldest entries while over `recent_bytes`, but not those still needed while
    /// within `needed_bytes`. What is needed is a suffix of the window (every entry after the
    /// applied index, every one from the lowest unsent index), so the first needed entry stops it.
    fn evict(&mut self) {
        while self.bytes > self.recent_bytes && self.entries.len() > 1 {
            let Some(oldest) = self.entries.front() else {
                break;
            };
            if self.bytes <= self.needed_bytes && self.needed(oldest.index) {
                break;
            }
            if let Some(oldest) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(cost(&oldest));
                self.before_first = Some(oldest.log_id());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftor_core::EntryPayload;

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from(vec![0u8; len])),
        }
    }

    fn append(entries: Vec<Entry>) -> LogWrite {
        LogWrite {
            entries,
            ..LogWrite::default()
        }
    }

    fn indexes(range: &CachedRange) -> Vec<u64> {
        range.entries.iter().map(|e| e.index.0).collect()
    }

    #[test]
    fn reads_what_was_appended_with_the_previous_term() {
        let cache = EntryCache::new(1 << 20, 1 << 20);
        cache.apply(&append((1..=5).map(|i| entry(i, 1 + i / 3, 10)).collect()));
        let range = cache.read(LogIndex(1), LogIndex(5), usize::MAX).unwrap();
        assert_eq!(range.prev_term, Term::ZERO);
        assert_eq!(indexes(&range), vec![1, 2, 3, 4, 5]);
        let range = cache.read(LogIndex(4), LogIndex(9), usize::MAX).unwrap();
        assert_eq!(range.prev_term, Term(2), "entry 3 has term 2");
        assert_eq!(indexes(&range), vec![4, 5]);
        assert_eq!(cache.read(LogIndex(6), LogIndex(9), usize::MAX), None);
    }

    #[test]
    fn stops_at_the_byte_limit_but_returns_at_least_one_entry() {
        let cache = EntryCache::new(1 << 20, 1 << 20);
        cache.apply(&append((1..=4).map(|i| entry(i, 1, 100)).collect()));
        let range = cache.read(LogIndex(1), LogIndex(4), 250).unwrap();
        assert_eq!(indexes(&range), vec![1, 2]);
        let range = cache.read(LogIndex(1), LogIndex(4), 10).unwrap();
        assert_eq!(indexes(&range), vec![1]);
    }

    #[test]
    fn truncation_replaces_the_conflicting_suffix() {
        let cache = EntryCache::new(1 << 20, 1 << 20);
        cache.apply(&append((1..=5).map(|i| entry(i, 1, 1)).collect()));
        cache.apply(&LogWrite {
            truncate_from: Some(LogIndex(3)),
            entries: vec![entry(3, 2, 1)],
            ..LogWrite::default()
        });
        let range = cache.read(LogIndex(2), LogIndex(10), usize::MAX).unwrap();
        assert_eq!(indexes(&range), vec![2, 3]);
        assert_eq!(range.entries[1].term, Term(2));
    }

    #[test]
    fn eviction_keeps_the_newest_and_remembers_the_term_before_them() {
        let cache = EntryCache::new(3 * (100 + ENTRY_OVERHEAD), 0);
        cache.apply(&append((1..=10).map(|i| entry(i, i, 100)).collect()));
        assert_eq!(cache.first_index(), Some(LogIndex(8)));
        let range = cache.read(LogIndex(8), LogIndex(10), usize::MAX).unwrap();
        assert_eq!(range.prev_term, Term(7));
        assert_eq!(
            cache.read(LogIndex(7), LogIndex(10), usize::MAX),
            None,
            "evicted"
        );
    }

    #[test]
    fn compaction_drops_the_prefix_and_a_snapshot_becomes_the_boundary() {
        let cache = EntryCache::new(1 << 20, 1 << 20);
        cache.apply(&append((1..=5).map(|i| entry(i, 1, 1)).collect()));
        cache.apply(&LogWrite {
            compact_to: Some(LogId::new(Term(1), LogIndex(3))),
            ..LogWrite::default()
        });
        assert_eq!(cache.first_index(), Some(LogIndex(4)));
        assert_eq!(cache.term(LogIndex(3)), Some(Term(1)));
        // A snapshot installed over the log: everything goes, entries continue after it.
        cache.apply(&LogWrite {
            truncate_from: Some(LogIndex(4)),
            compact_to: Some(LogId::new(Term(4), LogIndex(20))),
            ..LogWrite::default()
        });
        assert_eq!(cache.first_index(), None);
        cache.apply(&append(vec![entry(21, 4, 1)]));
        let range = cache.read(LogIndex(21), LogIndex(21), usize::MAX).unwrap();
        assert_eq!(range.prev_term, Term(4));
    }

    #[test]
    fn a_gap_starts_the_window_over() {
        let cache = EntryCache::new(1 << 20, 1 << 20);
        cache.apply(&append(vec![entry(1, 1, 1), entry(2, 1, 1)]));
        cache.apply(&append(vec![entry(7, 2, 1)]));
        assert_eq!(cache.first_index(), Some(LogIndex(7)));
        assert_eq!(
            cache.read(LogIndex(7), LogIndex(7), usize::MAX),
            None,
            "the term before 7 is unknown"
        );
        cache.apply(&append(vec![entry(8, 2, 1)]));
        let range = cache.read(LogIndex(8), LogIndex(8), usize::MAX).unwrap();
        assert_eq!(range.prev_term, Term(2));
    }

    #[test]
    fn truncating_below_the_window_forgets_the_boundary() {
        let cache = EntryCache::new(2 * (1 + ENTRY_OVERHEAD), 0);
        cache.apply(&append((1..=4).map(|i| entry(i, 1, 1)).collect()));
        assert_eq!(cache.first_index(), Some(LogIndex(3)));
        cache.apply(&LogWrite {
            truncate_from: Some(LogIndex(2)),
            entries: vec![entry(2, 5, 1)],
            ..LogWrite::default()
        });
        // The window restarted at 2; the entry before it (1) was never seen here as a boundary.
        assert_eq!(cache.read(LogIndex(2), LogIndex(2), usize::MAX), None);
        cache.apply(&append(vec![entry(3, 5, 1)]));
        assert_eq!(
            cache
                .read(LogIndex(3), LogIndex(3), usize::MAX)
                .unwrap()
                .prev_term,
            Term(5)
        );
    }

    /// The indexes the cache holds.
    fn held(cache: &EntryCache) -> Vec<u64> {
        let first = cache.first_index().map_or(0, |index| index.0);
        cache
            .read(LogIndex(first), LogIndex(u64::MAX), usize::MAX)
            .map(|range| indexes(&range))
            .unwrap_or_default()
    }

    #[test]
    fn entries_not_yet_applied_stay_past_the_recent_bytes_until_applied() {
        let each = 100 + ENTRY_OVERHEAD;
        let cache = EntryCache::new(2 * each, 100 * each);
        cache.apply(&append((1..=6).map(|i| entry(i, 1, 100)).collect()));
        assert_eq!(held(&cache), vec![1, 2, 3, 4, 5, 6], "none applied yet");
        cache.applied_through(LogIndex(3));
        assert_eq!(held(&cache), vec![4, 5, 6], "4 is still to be applied");
        cache.applied_through(LogIndex(6));
        assert_eq!(
            held(&cache),
            vec![5, 6],
            "only the newest bytes once applied"
        );
        cache.applied_through(LogIndex(2));
        assert_eq!(
            held(&cache),
            vec![5, 6],
            "the applied index never goes back"
        );
    }

    #[test]
    fn entries_a_follower_has_yet_to_be_sent_stay_until_sent() {
        let each = 100 + ENTRY_OVERHEAD;
        let cache = EntryCache::new(2 * each, 100 * each);
        cache.apply(&append((1..=6).map(|i| entry(i, 1, 100)).collect()));
        cache.unsent_from(Some(LogIndex(2)));
        cache.applied_through(LogIndex(6));
        assert_eq!(held(&cache), vec![2, 3, 4, 5, 6], "2 is not sent yet");
        assert_eq!(
            cache
                .read(LogIndex(2), LogIndex(6), usize::MAX)
                .unwrap()
                .prev_term,
            Term(1),
            "the term before the first held entry is known"
        );
        cache.unsent_from(Some(LogIndex(5)));
        assert_eq!(held(&cache), vec![5, 6]);
        cache.unsent_from(Some(LogIndex(1)));
        cache.apply(&append(vec![entry(7, 1, 100)]));
        assert_eq!(held(&cache), vec![5, 6, 7], "what went is not brought back");
        cache.unsent_from(Some(LogIndex(7)));
        assert_eq!(held(&cache), vec![6, 7]);
        cache.unsent_from(None);
        assert_eq!(
            held(&cache),
            vec![6, 7],
            "no follower to send to: the newest stay"
        );
    }

    #[test]
    fn what_is_needed_is_kept_only_up_to_the_needed_bytes() {
        let each = 100 + ENTRY_OVERHEAD;
        let cache = EntryCache::new(2 * each, 4 * each);
        cache.apply(&append((1..=10).map(|i| entry(i, 1, 100)).collect()));
        assert_eq!(
            held(&cache),
            vec![7, 8, 9, 10],
            "a lagging applier holds no more"
        );
        cache.applied_through(LogIndex(10));
        assert_eq!(held(&cache), vec![9, 10]);
    }
}
