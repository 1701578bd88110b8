//! raftor's durable log: the [`LogStorage`] trait, a RocksDB store for production, an in-memory
//! store for tests and simulation, and a [`conformance`] suite every store must pass.
//!
//! The store knows nothing of actors: it is synchronous, and whoever calls it owns the thread.

pub mod conformance;
pub mod data_dir;
pub mod direct_io;
pub mod durable;
mod error;
mod memory;
mod rocks;
mod snapshots;

pub use error::StorageError;
pub use memory::MemStorage;
pub use rocks::{
    write_buffer_bytes, RocksStorage, StoreIdentity, INFO_LOGS_KEPT, INFO_LOG_MAX_BYTES,
    RECYCLED_WAL_FILES, WRITE_BUFFER_BYTES,
};
pub use snapshots::{SnapshotFile, SnapshotStore, StagedSnapshot};

use raftor_core::{Entry, LogId, LogIndex, LogWrite, RecoveredState, Term};

/// A durable Raft log with its hard state.
///
/// Contract (checked by [`conformance`]):
/// - [`LogStorage::write`] is atomic and durable when it returns `Ok`: after a crash either the whole
///   write is there or none of it.
/// - Entries are stored at consecutive indexes starting after the log's start (its last compacted
///   entry, index 0 before any compaction); `write` truncates first, then compacts, then appends.
/// - Reads see every write that returned `Ok`; a read of a compacted entry is
///   [`StorageError::Compacted`].
pub trait LogStorage: Send + 'static {
    /// The hard state, the log's term boundaries and its configuration entries, as found on disk
    /// (`snapshot_membership` is left `None`: snapshots are not the log's).
    fn recover(&mut self) -> Result<RecoveredState, StorageError>;

    /// Apply `write` atomically and sync it to disk before returning.
    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError>;

    /// Entries `from..=to`, stopping early (but after at least one entry) once `max_bytes` of
    /// payload are gathered. Indexes past the end of the log are not an error: fewer entries come
    /// back. `from` at or before the log's start is [`StorageError::Compacted`].
    fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, the start's term at the log's
    /// start, `None` past the end; [`StorageError::Compacted`] before the start.
    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError>;

    /// The index of the last entry, 0 when the log is empty.
    fn last_index(&self) -> Result<LogIndex, StorageError>;
}

impl<S: LogStorage + ?Sized> LogStorage for Box<S> {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        (**self).recover()
    }
    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        (**self).write(write)
    }
    fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        (**self).entries(from, to, max_bytes)
    }
    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        (**self).term(index)
    }
    fn last_index(&self) -> Result<LogIndex, StorageError> {
        (**self).last_index()
    }
}

/// Checks that `write` can apply to a log that starts after `start` (its last compacted entry)
/// and ends at `last_index`: no truncation into the compacted prefix, and its entries must follow
/// the last entry left after its truncation and compaction. Returns the log's start and last index
/// after the write. Stores call this before touching anything, so a rejected write changes nothing.
pub fn validate_write(
    write: &LogWrite,
    start: LogId,
    last_index: LogIndex,
) -> Result<(LogId, LogIndex), StorageError> {
    let mut last = last_index;
    if let Some(from) = write.truncate_from {
        if from <= start.index {
            return Err(StorageError::InvalidWrite(format!(
                "cannot truncate from {from}: the log is compacted up to {}",
                start.index
            )));
        }
        last = last.min(from.prev());
    }
    let mut new_start = start;
    if let Some(upto) = write.compact_to {
        if upto.index > start.index {
            new_start = upto;
            last = last.max(upto.index);
        }
    }
    let mut previous = last;
    for entry in &write.entries {
        if entry.index != previous.next() || entry.index == previous {
            return Err(StorageError::InvalidWrite(format!(
                "entry {} does not follow index {}",
                entry.index, previous
            )));
        }
        previous = entry.index;
    }
    Ok((new_start, previous))
}

/// Builds the term boundaries of [`RecoveredState`] from the entries' ids in index order.
pub fn term_boundaries(
    ids: impl IntoIterator<Item = raftor_core::LogId>,
) -> Vec<raftor_core::LogId> {
    let mut boundaries: Vec<raftor_core::LogId> = Vec::new();
    let mut last = None;
    for id in ids {
        if boundaries.last().map(|b| b.term) != Some(id.term) {
            boundaries.push(id);
        }
        last = Some(id);
    }
    if let Some(last) = last {
        if boundaries.last() != Some(&last) {
            boundaries.push(last);
        }
    }
    boundaries
}
