//! A simulated log, in memory or on the simulated disk: the entries after the log's start (the
//! last compacted entry), and a running hash of the whole log from index 1, compacted prefix
//! included, for a cheap Log Matching check.
//!
//! The hash of the prefix up to index `i` is also the digest of a state machine that applied
//! entries `1..=i` (the simulated state machine applies every entry, blanks and configurations
//! included): a snapshot carries it, so a log compacted behind a snapshot keeps its hash chain.

use crate::trace::Fnv;
use raftor_core::{Entry, LogId, LogIndex, LogWrite, Membership, Term};

/// The running hash of a log (and the digest of a state machine) after `entry`.
pub(crate) fn hash_entry(previous: u64, entry: &Entry) -> u64 {
    let mut h = Fnv::new();
    h.u64(previous);
    h.entry(entry);
    h.finish()
}

#[derive(Clone, Debug, Default)]
pub(crate) struct SimLog {
    /// The last compacted entry (`LogId::ZERO` if none was).
    pub(crate) start: LogId,
    /// The hash of the log up to and including `start`.
    pub(crate) start_hash: u64,
    /// `entries[i]` is at index `start.index + 1 + i`.
    pub(crate) entries: Vec<Entry>,
    /// `hashes[i]`: the hash of the log up to and including `entries[i]`.
    hashes: Vec<u64>,
}

impl SimLog {
    pub(crate) fn last_id(&self) -> LogId {
        self.entries.last().map(Entry::log_id).unwrap_or(self.start)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_id().index
    }

    fn position(&self, index: LogIndex) -> Option<usize> {
        if index <= self.start.index {
            return None;
        }
        let position = (index.0 - self.start.index.0 - 1) as usize;
        (position < self.entries.len()).then_some(position)
    }

    /// The entry at `index`, if the log holds it (not compacted, not past the end).
    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        self.position(index).map(|p| &self.entries[p])
    }

    /// The term at `index`: the start's term there, `None` before the start or past the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The hash of the log up to `index` (from the start on).
    pub(crate) fn hash_at(&self, index: LogIndex) -> Option<u64> {
        if index == self.start.index {
            return Some(self.start_hash);
        }
        self.position(index).map(|p| self.hashes[p])
    }

    /// The entries after `prev` up to and including `last` (all held).
    pub(crate) fn slice(&self, prev: LogIndex, last: LogIndex) -> Vec<Entry> {
        match (self.position(prev.next()), self.position(last)) {
            (Some(a), Some(b)) => self.entries[a..=b].to_vec(),
            _ => Vec::new(),
        }
    }

    /// The configuration entries, for `RecoveredState::memberships`.
    pub(crate) fn memberships(&self) -> Vec<(LogIndex, Membership)> {
        raftor_core::configuration_entries(&self.entries)
    }

    fn rehash_from(&mut self, position: usize) {
        self.hashes.truncate(position);
        let mut previous = if position == 0 {
            self.start_hash
        } else {
            self.hashes[position - 1]
        };
        for entry in &self.entries[position..] {
            previous = hash_entry(previous, entry);
            self.hashes.push(previous);
        }
    }

    /// Carries out `write` as the storage contract says (truncate, then compact, then append),
    /// checking what the rules promise of it. `snapshots` are those this node holds,
    /// `(last_included, hash)`: a compaction beyond what the log holds must be to one of them. Returns whether
    /// entries were lost (truncated, or discarded for a snapshot).
    pub(crate) fn apply_write(
        &mut self,
        write: &LogWrite,
        snapshots: &[(LogId, u64)],
    ) -> Result<bool, String> {
        let mut lost = false;
        if let Some(from) = write.truncate_from {
            if from <= self.start.index || from > self.last_index() {
                return Err(format!(
                    "truncate_from {from} is outside the log ({}..={})",
                    self.start.index.next(),
                    self.last_index()
                ));
            }
            let keep = (from.0 - self.start.index.0 - 1) as usize;
            self.entries.truncate(keep);
            self.hashes.truncate(keep);
            lost = true;
        }
        if let Some(upto) = write.compact_to.filter(|u| u.index > self.start.index) {
            if self.term_at(upto.index) == Some(upto.term) {
                let hash = self.hash_at(upto.index).expect("held");
                let drop = (upto.index.0 - self.start.index.0) as usize;
                self.entries.drain(..drop);
                self.hashes.drain(..drop);
                self.start = upto;
                self.start_hash = hash;
            } else {
                let Some((_, hash)) = snapshots.iter().find(|(last, _)| *last == upto) else {
                    return Err(format!(
                        "compacts to {upto}, which neither the log nor a snapshot holds"
                    ));
                };
                lost |= !self.entries.is_empty();
                self.entries.clear();
                self.hashes.clear();
                self.start = upto;
                self.start_hash = *hash;
            }
        }
        let first_new = self.entries.len();
        for entry in &write.entries {
            let last = self.last_id();
            if entry.index != last.index.next() {
                return Err(format!(
                    "entry {} does not follow the log's last index {}",
                    entry.log_id(),
                    last.index
                ));
            }
            if last.term > entry.term {
                return Err(format!("entry {} goes back in term", entry.log_id()));
            }
            self.entries.push(entry.clone());
        }
        self.rehash_from(first_new);
        Ok(lost)
    }
}
