//! The vocabulary of Raft: terms, log indexes, node ids, entries and the hard state.
//!
//! Newtypes keep a term from being mistaken for an index (Raft paper §5.1, Figure 2).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value: before the first term, or the index before the first entry.
            pub const ZERO: $name = $name(0);

            /// The next value, saturating at `u64::MAX` so that hostile input cannot overflow it.
            pub fn next(self) -> $name {
                $name(self.0.saturating_add(1))
            }

            /// The previous value, saturating at zero.
            pub fn prev(self) -> $name {
                $name(self.0.saturating_sub(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter_newtype!(
    /// A Raft term: a logical clock that only grows (§5.1). Term 0 exists before any election.
    Term
);
counter_newtype!(
    /// The position of an entry in the log, starting at 1 (§5.3). Index 0 means "before the log".
    LogIndex
);

/// The identity of one node in the cluster. Ids are chosen by the operator and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of a log entry: two entries with the same index and term hold the same command and
/// are preceded by identical logs (the Log Matching property, §5.3).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// The term of the leader that created the entry. Ordered before `index` so that comparing two
    /// `LogId`s compares "up-to-dateness" as §5.4.1 defines it (last term first, then last index).
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
}

impl LogId {
    /// The id "before the log": term 0, index 0. Every log matches it.
    pub const ZERO: LogId = LogId {
        term: Term::ZERO,
        index: LogIndex::ZERO,
    };

    pub fn new(term: Term, index: LogIndex) -> LogId {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// No command: the entry a new leader appends so earlier entries can commit with it (§5.4.2, §8).
    Blank,
    /// An application command, opaque to Raft, handed to the state machine once committed.
    Command(Bytes),
    /// A new cluster configuration; it takes effect on each node as soon as that node appends it
    /// (thesis §4.1), and is not handed to the state machine. Boxed: a configuration is rare and
    /// large (about 120 bytes of sets and maps), and unboxed it made every entry that size, which
    /// the leader's cache, its sends and the applier copy with each entry they move (an entry is
    /// 56 bytes with it boxed, 168 without). The encoding is the same either way.
    Config(Box<crate::membership::Membership>),
}

/// One log entry (§5.3): a command with the term it was received in and its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that appended the entry.
    pub term: Term,
    /// The entry's position in the log; entries of one log have consecutive indexes.
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// The configuration this entry carries, if it is a configuration entry.
    pub fn membership(&self) -> Option<&crate::membership::Membership> {
        match &self.payload {
            EntryPayload::Config(membership) => Some(membership),
            EntryPayload::Blank | EntryPayload::Command(_) => None,
        }
    }

    /// The size of the payload in bytes, for batching limits.
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            EntryPayload::Blank | EntryPayload::Config(_) => 0,
            EntryPayload::Command(bytes) => bytes.len(),
        }
    }
}

/// The state that must survive a crash before the node answers anything that depends on it
/// (Figure 2, "persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// `currentTerm`: the latest term this node has seen; never decreases.
    pub current_term: Term,
    /// `votedFor`: the candidate this node voted for in `current_term`, if any. At most one per term.
    pub voted_for: Option<NodeId>,
    /// `commitIndex` as last persisted: a lower bound of the cluster's commit index, so a restarted
    /// node can re-apply its committed entries without waiting for a leader. Never decreases.
    pub commit_index: LogIndex,
}

/// Terms no real cluster reaches: a message may carry a term up to this ceiling, or up to
/// [`TERM_STEP`] past the higher of the ceiling and the receiver's term; a message with a larger
/// term is ignored whole (`Raft::step`). One hostile or corrupt message could otherwise move every
/// node to the last term, `u64::MAX`, where no election can start again, for good (terms are
/// durable). 2^62 elections would take a cluster electing every millisecond 146 million years,
/// so a real term never meets the ceiling; past it (only after such a message) each message
/// moves a term by at most 2^16, so climbing to the last term takes about 10^14 messages.
pub const TERM_CEILING: Term = Term(1 << 62);

/// How far past [`TERM_CEILING`] (or past its own term, if higher) a message may move a node's
/// term.
pub const TERM_STEP: u64 = 1 << 16;

impl Term {
    /// Whether a node at term `self` may adopt `term` from a message ([`TERM_CEILING`]).
    pub fn admits(self, term: Term) -> bool {
        term.0 <= self.0.max(TERM_CEILING.0).saturating_add(TERM_STEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry the leader caches, sends and applies is moved by value: a configuration's sets
    /// unboxed in the payload made each one 168 bytes, copied with every command.
    #[test]
    fn an_entry_is_its_ids_and_a_handle_to_its_payload() {
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "an entry is {} bytes",
            std::mem::size_of::<Entry>()
        );
    }
}
