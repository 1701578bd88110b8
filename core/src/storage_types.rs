//! What the rules ask the log store to make durable, and what a store hands back on recovery.

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
    /// Then append these consecutive entries; the first follows the log's last entry after truncation.
    pub entries: Vec<Entry>,
}

impl LogWrite {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.truncate_from.is_none() && self.entries.is_empty()
    }

    /// The id of the last entry this write appends, if any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.last().map(Entry::log_id)
    }
}

/// What a node finds in its store when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The log's term boundaries: the id of the first entry of each run of equal terms, in index
    /// order, followed by the id of the last entry (see [`crate::LogTerms::from_boundaries`]).
    /// Empty when the log is empty.
    pub term_boundaries: Vec<LogId>,
}
