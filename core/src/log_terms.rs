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
    /// The last entry folded into a snapshot and compacted away (§7): entries up to here are no
    /// longer in the log, but its id is still known. `LogId::ZERO` before any compaction.
    start: LogId,
    /// The first entry of each run after `start`, in index order. Invariants: strictly increasing
    /// terms and indexes; `runs[0].index == start.index + 1` when entries follow `start`; empty iff
    /// no entry follows `start`.
    runs: Vec<LogId>,
    /// The last entry of the log (`start` when no entry follows it). `last.index >= start.index`.
    last: LogId,
}

impl LogTerms {
    /// Rebuilds the runs from the boundaries a store recovered: the first id of each run followed by
    /// the last id of the log (see `raftor_storage::term_boundaries`).
    pub fn from_boundaries(boundaries: &[LogId]) -> LogTerms {
        LogTerms::starting_at(LogId::ZERO, boundaries)
    }

    /// As [`LogTerms::from_boundaries`], for a log compacted up to `start`: `boundaries` describe the
    /// entries after it.
    pub fn starting_at(start: LogId, boundaries: &[LogId]) -> LogTerms {
        let mut terms = LogTerms {
            start,
            runs: Vec::new(),
            last: start,
        };
        for id in boundaries.iter().filter(|id| id.index > start.index) {
            terms.push(*id);
        }
        terms
    }

    /// The invariants stated on the fields, or which one does not hold.
    pub(crate) fn check(&self) -> Result<(), String> {
        let increasing = self
            .runs
            .iter()
            .zip(self.runs.iter().skip(1))
            .all(|(a, b)| a.index < b.index && a.term < b.term);
        let first_follows_start = self.runs.first().is_none_or(|first| {
            first.index == self.start.index.next() && first.term >= self.start.term
        });
        let empty_iff_nothing_follows =
            self.runs.is_empty() == (self.last.index == self.start.index);
        let last_in_last_run = self
            .runs
            .last()
            .is_none_or(|run| run.index <= self.last.index && run.term == self.last.term);
        if increasing && first_follows_start && empty_iff_nothing_follows && last_in_last_run {
            Ok(())
        } else {
            Err(format!(
                "the log's term runs are inconsistent: start {} runs {:?} last {}",
                self.start, self.runs, self.last
            ))
        }
    }

    /// The last compacted entry (`LogId::ZERO` if none was).
    pub fn start(&self) -> LogId {
        self.start
    }

    /// The first index still in the log (possibly past its end, when nothing follows `start`).
    pub fn first_index(&self) -> LogIndex {
        self.start.index.next()
    }

    /// Forgets the entries up to `upto` (which the log holds), after a snapshot covered them.
    pub fn compact(&mut self, upto: LogId) {
        if upto.index <= self.start.index || !self.matches(upto) {
            return;
        }
        let first_kept = upto.index.next();
        // The run containing the first kept entry now starts there.
        let kept_from = self.runs.partition_point(|run| run.index <= first_kept);
        let mut runs: Vec<LogId> = Vec::new();
        if first_kept <= self.last.index {
            if let Some(term) = self.term_at(first_kept) {
                runs.push(LogId::new(term, first_kept));
            }
        }
        runs.extend(self.runs[kept_from..].iter().copied());
        self.runs = runs;
        self.start = upto;
        if self.last.index < upto.index {
            self.last = upto;
        }
    }

    /// Installs a snapshot ending at `last`: a log that holds `last` keeps what follows it (§7:
    /// "retain log entries following it"); any other log is discarded whole.
    pub fn install_snapshot(&mut self, last: LogId) {
        if self.matches(last) {
            self.compact(last);
        } else {
            *self = LogTerms {
                start: last,
                runs: Vec::new(),
                last,
            };
        }
    }

    /// The boundaries that [`LogTerms::from_boundaries`] takes back.
    pub fn boundaries(&self) -> Vec<LogId> {
        let mut out = self.runs.clone();
        if out.last() != Some(&self.last) && self.last.index > self.start.index {
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

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, the snapshot's term at the
    /// compaction point, `None` past the end or before the compaction point (compacted away).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        if index == self.start.index {
            return Some(self.start.term);
        }
        if index > self.last.index || index < self.start.index {
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
        if index <= self.start.index || index > self.last.index {
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

    /// Forgets every entry at or after `index` (never the compacted prefix: committed entries are
    /// never truncated, and only committed entries are compacted).
    pub fn truncate_from(&mut self, index: LogIndex) {
        if index > self.last.index || index <= self.start.index {
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
    fn compaction_forgets_the_prefix_but_keeps_its_last_id() {
        let mut log = log(&[1, 1, 2, 2, 2, 5]);
        log.compact(LogId::new(Term(2), LogIndex(4)));
        assert_eq!(log.start(), LogId::new(Term(2), LogIndex(4)));
        assert_eq!(log.first_index(), LogIndex(5));
        assert_eq!(log.term_at(LogIndex(3)), None, "compacted");
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(2)));
        assert_eq!(log.first_index_of_run(LogIndex(5)), Some(LogIndex(5)));
        assert_eq!(log.term_at(LogIndex(6)), Some(Term(5)));
        assert_eq!(log.last_log_id(), LogId::new(Term(5), LogIndex(6)));
        let restored = LogTerms::starting_at(log.start(), &log.boundaries());
        assert_eq!(restored, log);
        // Truncation never reaches into the compacted prefix.
        log.truncate_from(LogIndex(2));
        assert_eq!(log.last_log_id(), LogId::new(Term(5), LogIndex(6)));
        log.truncate_from(LogIndex(6));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), LogIndex(5)));
        // Compacting everything leaves an empty log that starts after the snapshot.
        log.compact(LogId::new(Term(2), LogIndex(5)));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), LogIndex(5)));
        assert!(log.boundaries().is_empty());
        log.append(&[entry(6, 7)]);
        assert_eq!(log.term_at(LogIndex(6)), Some(Term(7)));
        // A compaction point the log does not hold is ignored.
        log.compact(LogId::new(Term(3), LogIndex(6)));
        assert_eq!(log.start().index, LogIndex(5));
    }

    #[test]
    fn installing_a_snapshot_keeps_a_matching_suffix_or_discards_the_log() {
        let mut kept = log(&[1, 1, 2, 2]);
        kept.install_snapshot(LogId::new(Term(1), LogIndex(2)));
        assert_eq!(kept.last_log_id(), LogId::new(Term(2), LogIndex(4)));
        assert_eq!(kept.term_at(LogIndex(3)), Some(Term(2)));
        let mut discarded = log(&[1, 1, 2, 2]);
        discarded.install_snapshot(LogId::new(Term(3), LogIndex(3)));
        assert_eq!(discarded.last_log_id(), LogId::new(Term(3), LogIndex(3)));
        assert_eq!(discarded.term_at(LogIndex(4)), None);
        let mut beyond = log(&[1, 1]);
        beyond.install_snapshot(LogId::new(Term(4), LogIndex(10)));
        assert_eq!(beyond.last_log_id(), LogId::new(Term(4), LogIndex(10)));
        assert_eq!(beyond.first_index(), LogIndex(11));
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
