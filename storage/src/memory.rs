//! An in-memory [`LogStorage`] for tests and deterministic simulation.

use crate::{term_boundaries, validate_write, LogStorage, StorageError};
use raftor_core::{Entry, HardState, LogId, LogIndex, LogWrite, RecoveredState, Standing, Term};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    /// A new store is [`Standing::Rejoining`] (the default).
    standing: Standing,
    /// The last compacted entry; `log` holds what follows it.
    start: LogId,
    /// `log[i]` holds the entry at index `start.index + 1 + i`.
    log: Vec<Entry>,
}

impl Inner {
    fn last_index(&self) -> LogIndex {
        LogIndex(self.start.index.0 + self.log.len() as u64)
    }

    /// The position in `log` of the entry at `index` (which must be after `start`).
    fn position(&self, index: LogIndex) -> usize {
        (index.0 - self.start.index.0 - 1) as usize
    }

    fn compacted(&self, index: LogIndex) -> StorageError {
        StorageError::Compacted {
            index: index.0,
            start: self.start.index.0,
        }
    }
}

/// A store kept in memory. Clones share the same data, so a test can "restart" a node by handing a
/// clone to its new incarnation: what was written survives, as it would on disk.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<Inner>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-written (every write is a few
        // plain assignments), so the data behind a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LogStorage for MemStorage {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        let inner = self.lock();
        Ok(RecoveredState {
            hard_state: inner.hard_state,
            standing: inner.standing,
            log_start: inner.start,
            term_boundaries: term_boundaries(inner.log.iter().map(Entry::log_id)),
            memberships: raftor_core::configuration_entries(&inner.log),
            snapshot_membership: None,
        })
    }

    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let (new_start, _) = validate_write(write, inner.start, inner.last_index())?;
        if let Some(from) = write.truncate_from {
            if from <= inner.last_index() {
                let keep = inner.position(from);
                inner.log.truncate(keep);
            }
        }
        if new_start != inner.start {
            // The entries up to the new start go; a log that ended before it ends at it.
            let compacted = (new_start.index.0 - inner.start.index.0).min(inner.log.len() as u64);
            inner.log.drain(..compacted as usize);
            inner.start = new_start;
        }
        inner.log.extend(write.entries.iter().cloned());
        if let Some(hard_state) = write.hard_state {
            inner.hard_state = hard_state;
        }
        if let Some(standing) = write.standing {
            inner.standing = standing;
        }
        Ok(())
    }

    fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock();
        let from = from.max(LogIndex(1));
        if from <= inner.start.index {
            return Err(inner.compacted(from));
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let to = to.min(inner.last_index());
        let mut index = from;
        while index <= to {
            let entry = &inner.log[inner.position(index)];
            if !out.is_empty() && bytes + entry.payload_len() > max_bytes {
                break;
            }
            bytes += entry.payload_len();
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index == LogIndex::ZERO {
            return Ok(Some(Term::ZERO));
        }
        let inner = self.lock();
        if index == inner.start.index {
            return Ok(Some(inner.start.term));
        }
        if index < inner.start.index {
            return Err(inner.compacted(index));
        }
        Ok(inner.log.get(inner.position(index)).map(|e| e.term))
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.lock().last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Harness};

    /// "Reopening" a memory store hands back a clone: clones share data, like a directory on disk.
    struct MemHarness;

    impl Harness for MemHarness {
        type Store = MemStorage;

        fn fresh(&mut self) -> MemStorage {
            MemStorage::new()
        }

        fn reopen(&mut self, store: MemStorage) -> MemStorage {
            store.clone()
        }
    }

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(&mut MemHarness);
    }
}
