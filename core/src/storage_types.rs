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
