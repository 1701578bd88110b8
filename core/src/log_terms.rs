//! The terms of the log, kept in memory as runs, so the rules can answer "what term is the entry at
//! index i?" (the Log Matching check of §5.3, the up-to-date check of §5.4.1, the commit rule of
//! §5.4.2) without reading the disk.
//!
//! Terms never decrease along a log, so a log of millions of entries written in a handful of terms
//! is a handful of runs.

use crate::types::{Entry, LogId, LogIndex, Term};

/// The id of every entry of the log, as runs of equal terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTerms {
    /// The first entry of each run, in index order. Invariants: strictly increasing terms and indexes;
    /// `runs[0].index == 1` when the log is not empty; empty iff the log is empty.
    runs: Vec<LogId>,
    /// The last entry of the log; `LogId::ZERO` when empty. `last.index >= runs.last().index`.
    last: LogId,
}

impl LogTerms {
    /// Rebuilds the runs from the boundaries a store recovered: the first id of each run followed by
    /// the last id of the log (see `raftor_storage::term_boundaries`).
    pub fn from_boundaries(boundaries: &[LogId]) -> LogTerms {
        let mut terms = LogTerms::default();
        for id in boundaries {
            terms.push(*id);
        }
        terms
    }

    /// The boundaries that [`LogTerms::from_boundaries`] takes back.
    pub fn boundaries(&self) -> Vec<LogId> {
        let mut out = self.runs.clone();
        if out.last() != Some(&self.last) && self.last != LogId::ZERO {
            out.push(self.last);
        }
        out
    }

    fn push(&mut self, id: LogId) {
        if self.runs.last().map(|run| run.term) != Some(id.term) {
            self.runs.push(id);
        }
        self.last = id;
    }

    /// The last entry's id, `LogId::ZERO` for an empty log.
    pub fn last_log_id(&self) -> LogId {
        self.last
    }

    pub fn last_index(&self) -> LogIndex {
        self.last.index
    }

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, `None` past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        if index > self.last.index {
            return None;
        }
        let run = self.run_containing(index)?;
        Some(self.runs[run].term)
    }

    /// Whether the log holds an entry with this id (index 0 always matches).
    pub fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// The first index of the run of equal terms that contains `index`.
    pub fn first_index_of_run(&self, index: LogIndex) -> Option<LogIndex> {
        self.run_containing(index).map(|run| self.runs[run].index)
    }

    fn run_containing(&self, index: LogIndex) -> Option<usize> {
        if index == LogIndex::ZERO || index > self.last.index {
            return None;
        }
        // The last run whose first index is <= index.
        let after = self.runs.partition_point(|run| run.index <= index);
        after.checked_sub(1)
    }

    /// Records appended entries. The caller guarantees they follow the last entry.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            debug_assert_eq!(entry.index, self.last.index.next());
            self.push(entry.log_id());
        }
    }

    /// Forgets every entry at or after `index`.
    pub fn truncate_from(&mut self, index: LogIndex) {
        if index > self.last.index {
            return;
        }
        let new_last_index = index.prev();
        let new_last_term = self.term_at(new_last_index).unwrap_or(Term::ZERO);
        self.runs.retain(|run| run.index < index);
        self.last = LogId::new(new_last_term, new_last_index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Blank,
        }
    }

    fn log(terms: &[u64]) -> LogTerms {
        let mut log = LogTerms::default();
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as u64 + 1, *t))
            .collect();
        log.append(&entries);
        log
    }

    #[test]
    fn empty_log_matches_only_the_zero_id() {
        let log = LogTerms::default();
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(1)), None);
        assert!(log.matches(LogId::ZERO));
        assert_eq!(log.last_log_id(), LogId::ZERO);
        assert!(log.boundaries().is_empty());
    }

    #[test]
    fn answers_the_term_at_every_index() {
        let log = log(&[1, 1, 2, 2, 2, 5]);
        let terms: Vec<Option<Term>> = (0..=7).map(|i| log.term_at(LogIndex(i))).collect();
        assert_eq!(
            terms,
            [0, 1, 1, 2, 2, 2, 5]
                .iter()
                .map(|t| Some(Term(*t)))
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert_eq!(log.first_index_of_run(LogIndex(5)), Some(LogIndex(3)));
        assert_eq!(log.last_log_id(), LogId::new(Term(5), LogIndex(6)));
    }

    #[test]
    fn truncation_keeps_the_prefix() {
        let mut log = log(&[1, 1, 2, 2, 2, 5]);
        log.truncate_from(LogIndex(4));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), LogIndex(3)));
        assert_eq!(log.term_at(LogIndex(4)), None);
        log.truncate_from(LogIndex(3));
        assert_eq!(log.last_log_id(), LogId::new(Term(1), LogIndex(2)));
        log.append(&[entry(3, 3)]);
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(3)));
        log.truncate_from(LogIndex(1));
        assert_eq!(log, LogTerms::default());
    }

    #[test]
    fn boundaries_round_trip() {
        for terms in [&[1u64][..], &[1, 1, 1], &[1, 2, 3], &[1, 1, 2, 2, 2, 5]] {
            let log = log(terms);
            assert_eq!(
                LogTerms::from_boundaries(&log.boundaries()),
                log,
                "{terms:?}"
            );
        }
    }
}
