//! What the rules ask the log store to make durable, and what a store hands back on recovery.

use crate::membership::Membership;
use crate::rejoin::Standing;
use crate::types::{Entry, HardState, LogId, LogIndex};

/// One atomic, synced change to the durable state: the store applies all of it or none of it, and
/// only after it is on disk may anything that depends on it be sent (§5.1, Figure 2: "respond to
/// RPCs" only after updating stable storage).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogWrite {
    /// A new hard state (term, vote, commit) to store, if it changed.
    pub hard_state: Option<HardState>,
    /// Delete every entry at or after this index first (a conflicting suffix, §5.3).
    pub truncate_from: Option<LogIndex>,
    /// Then forget every entry up to and including this one (§7: covered by a snapshot), keeping its
    /// id as the log's new start. A log that ends before it ends at it afterwards.
    pub compact_to: Option<LogId>,
    /// Then append these consecutive entries; the first follows the log's last entry after
    /// truncation and compaction.
    pub entries: Vec<Entry>,
    /// A new standing to store, if it changed (`crate::rejoin`).
    pub standing: Option<Standing>,
}

impl LogWrite {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.standing.is_none()
            && self.truncate_from.is_none()
            && self.compact_to.is_none()
            && self.entries.is_empty()
    }

    /// The id of the last entry this write appends, if any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.last().map(Entry::log_id)
    }

    /// Folds `later` into `self`, so that storing the result once has the same effect as storing
    /// `self` and then `later` (group commit: one synced batch for every write queued meanwhile).
    ///
    /// The later hard state wins; a later truncation drops what `self` would have appended from
    /// that index on and moves the truncation point down to it; a later compaction drops what
    /// `self` would have appended up to it and moves the compaction point up; the later entries
    /// follow.
    pub fn merge(&mut self, later: LogWrite) {
        if later.hard_state.is_some() {
            self.hard_state = later.hard_state;
        }
        if later.standing.is_some() {
            self.standing = later.standing;
        }
        if let Some(from) = later.truncate_from {
            self.entries.retain(|entry| entry.index < from);
            self.truncate_from = Some(self.truncate_from.map_or(from, |earlier| earlier.min(from)));
        }
        if let Some(upto) = later.compact_to {
            self.entries.retain(|entry| entry.index > upto.index);
            if self
                .compact_to
                .is_none_or(|earlier| earlier.index < upto.index)
            {
                self.compact_to = Some(upto);
            }
        }
        if self.entries.is_empty() {
            self.entries = later.entries;
        } else {
            self.entries.extend(later.entries);
        }
    }
}

/// The configuration entries among `entries`, in their order: what a store reports as
/// [`RecoveredState::memberships`].
pub fn configuration_entries<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Vec<(LogIndex, Membership)> {
    entries
        .into_iter()
        .filter_map(|entry| Some((entry.index, entry.membership()?.clone())))
        .collect()
}

/// What a node finds in its store when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// Whether the store holds every promise this node made (`crate::rejoin`): a new store is
    /// [`Standing::Rejoining`] (the default); a store written before standings existed, which
    /// has a hard state but no standing, is a [`Standing::Member`].
    pub standing: Standing,
    /// The last compacted entry (the log holds what follows it); `LogId::ZERO` if none was.
    pub log_start: LogId,
    /// The log's term boundaries: the id of the first entry of each run of equal terms, in index
    /// order, followed by the id of the last entry (see [`crate::LogTerms::from_boundaries`]).
    /// Empty when the log is empty.
    pub term_boundaries: Vec<LogId>,
    /// Every configuration entry in the log, `(index, membership)` in index order.
    pub memberships: Vec<(LogIndex, Membership)>,
    /// The configuration in force at `.0`, at or after the log's start, from the snapshot the
    /// state machine is restored from; `None` without a snapshot (the bootstrap configuration
    /// then applies before the log's first configuration entry).
    pub snapshot_membership: Option<(LogIndex, Membership)>,
}

impl RecoveredState {
    /// The write that makes a recovered log start at the snapshot the state machine is restored
    /// from, when that snapshot ends past the log's start: a crash after the snapshot was kept
    /// but before the write compacting the log for it (the one [`crate::Raft`] asks for when it
    /// installs a snapshot) was synced. The same write: an entry at the snapshot's last index
    /// with another term goes with every entry after it (§5.3), and the log then starts at the
    /// snapshot, ending there if it ended before (§7). `None` when the log already starts at or
    /// after it. The driver stores it and recovers again before starting the rules.
    pub fn catch_up_with_snapshot(&self, snapshot_last: LogId) -> Option<LogWrite> {
        if snapshot_last.index <= self.log_start.index {
            return None;
        }
        let terms = crate::LogTerms::starting_at(self.log_start, &self.term_boundaries);
        let conflicts = terms
            .term_at(snapshot_last.index)
            .is_some_and(|term| term != snapshot_last.term);
        Some(LogWrite {
            truncate_from: conflicts.then_some(snapshot_last.index),
            compact_to: Some(snapshot_last),
            ..LogWrite::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryPayload, Term};
    use std::collections::BTreeMap;

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    /// A log as a store holds it (the entries, and the start: the last compacted id), with
    /// `write` applied the way the storage contract says.
    fn apply(log: &mut (BTreeMap<u64, Term>, LogId), write: &LogWrite) {
        let (entries, start) = log;
        if let Some(from) = write.truncate_from {
            entries.retain(|index, _| *index < from.0);
        }
        if let Some(upto) = write.compact_to.filter(|upto| upto.index > start.index) {
            entries.retain(|index, _| *index > upto.index.0);
            *start = upto;
        }
        for entry in &write.entries {
            let last = entries.keys().next_back().copied().unwrap_or(start.index.0);
            assert_eq!(
                entry.index.0,
                last.max(start.index.0) + 1,
                "entries follow the log"
            );
            entries.insert(entry.index.0, entry.term);
        }
    }

    /// A snapshot kept past the log's start (a crash before the compaction for it was synced):
    /// the log is made to start at it, as installing it does.
    #[test]
    fn a_snapshot_past_the_log_start_compacts_the_log_up_to_it() {
        let recovered = |start: LogId, boundaries: Vec<LogId>| RecoveredState {
            log_start: start,
            term_boundaries: boundaries,
            ..RecoveredState::default()
        };
        let id = |index: u64, term: u64| LogId::new(Term(term), LogIndex(index));
        // Entries 1..=3 of term 1, 4..=8 of term 2.
        let log = recovered(LogId::ZERO, vec![id(1, 1), id(4, 2), id(8, 2)]);
        assert_eq!(log.catch_up_with_snapshot(LogId::ZERO), None);
        assert_eq!(
            recovered(id(6, 2), vec![id(7, 2), id(8, 2)]).catch_up_with_snapshot(id(5, 2)),
            None,
            "the log already starts past it"
        );
        let compact = |upto| LogWrite {
            compact_to: Some(upto),
            ..LogWrite::default()
        };
        assert_eq!(
            log.catch_up_with_snapshot(id(6, 2)),
            Some(compact(id(6, 2)))
        );
        assert_eq!(
            log.catch_up_with_snapshot(id(9, 3)),
            Some(compact(id(9, 3)))
        );
        assert_eq!(
            log.catch_up_with_snapshot(id(6, 3)),
            Some(LogWrite {
                truncate_from: Some(LogIndex(6)),
                ..compact(id(6, 3))
            }),
            "a conflicting entry goes with those after it"
        );
        let mut stored = (
            (1..=8)
                .map(|i| (i, Term(if i <= 3 { 1 } else { 2 })))
                .collect(),
            LogId::ZERO,
        );
        apply(&mut stored, &log.catch_up_with_snapshot(id(6, 3)).unwrap());
        assert!(stored.0.is_empty());
        assert_eq!(stored.1, id(6, 3));
    }

    #[test]
    fn merged_writes_store_what_the_writes_store_one_after_the_other() {
        let start = (
            (1..=10)
                .map(|i| (i, Term(1)))
                .collect::<BTreeMap<u64, Term>>(),
            LogId::ZERO,
        );
        let hard = |term| {
            Some(HardState {
                current_term: Term(term),
                voted_for: None,
                commit_index: LogIndex::ZERO,
            })
        };
        let cases = [
            // Plain appends.
            (
                LogWrite {
                    entries: entries(11, 12, 2),
                    ..Default::default()
                },
                LogWrite {
                    hard_state: hard(3),
                    entries: entries(13, 13, 3),
                    ..Default::default()
                },
            ),
            // The later write truncates part of what the earlier one appended.
            (
                LogWrite {
                    entries: entries(11, 15, 2),
                    ..Default::default()
                },
                LogWrite {
                    truncate_from: Some(LogIndex(13)),
                    entries: entries(13, 14, 3),
                    ..Default::default()
                },
            ),
            // The later write truncates below everything the earlier one appended.
            (
                LogWrite {
                    truncate_from: Some(LogIndex(9)),
                    entries: entries(9, 12, 2),
                    ..Default::default()
                },
                LogWrite {
                    truncate_from: Some(LogIndex(5)),
                    entries: entries(5, 6, 3),
                    ..Default::default()
                },
            ),
            // The earlier write truncates, the later one truncates higher up.
            (
                LogWrite {
                    truncate_from: Some(LogIndex(4)),
                    entries: entries(4, 8, 2),
                    ..Default::default()
                },
                LogWrite {
                    truncate_from: Some(LogIndex(7)),
                    entries: entries(7, 7, 3),
                    ..Default::default()
                },
            ),
            // Compaction of what the earlier write appended.
            (
                LogWrite {
                    entries: entries(11, 15, 2),
                    ..Default::default()
                },
                LogWrite {
                    compact_to: Some(LogId::new(Term(2), LogIndex(12))),
                    ..Default::default()
                },
            ),
            // Entries appended after a compaction.
            (
                LogWrite {
                    compact_to: Some(LogId::new(Term(1), LogIndex(8))),
                    ..Default::default()
                },
                LogWrite {
                    entries: entries(11, 12, 2),
                    ..Default::default()
                },
            ),
            // A snapshot installed (log discarded), then entries after it.
            (
                LogWrite {
                    truncate_from: Some(LogIndex(9)),
                    compact_to: Some(LogId::new(Term(3), LogIndex(20))),
                    ..Default::default()
                },
                LogWrite {
                    entries: entries(21, 22, 3),
                    ..Default::default()
                },
            ),
            // Two compactions: the higher one wins.
            (
                LogWrite {
                    compact_to: Some(LogId::new(Term(1), LogIndex(6))),
                    ..Default::default()
                },
                LogWrite {
                    compact_to: Some(LogId::new(Term(1), LogIndex(4))),
                    ..Default::default()
                },
            ),
            // A truncation past the end of the log is a no-op in both.
            (
                LogWrite {
                    hard_state: hard(2),
                    ..Default::default()
                },
                LogWrite {
                    truncate_from: Some(LogIndex(20)),
                    entries: entries(11, 11, 2),
                    ..Default::default()
                },
            ),
        ];
        for (first, second) in cases {
            let mut sequential = start.clone();
            apply(&mut sequential, &first);
            apply(&mut sequential, &second);
            let mut merged = first.clone();
            merged.merge(second.clone());
            let mut at_once = start.clone();
            apply(&mut at_once, &merged);
            assert_eq!(
                at_once, sequential,
                "{first:?} then {second:?} merged to {merged:?}"
            );
            let expected_hard = second.hard_state.or(first.hard_state);
            assert_eq!(merged.hard_state, expected_hard);
        }
    }
}
