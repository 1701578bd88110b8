//! An in-memory [`LogStorage`] for tests and deterministic simulation.

use crate::{term_boundaries, validate_write, LogStorage, StorageError};
use raftor_core::{Entry, HardState, LogIndex, LogWrite, RecoveredState, Term};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    /// `log[i]` holds the entry at index `i + 1`.
    log: Vec<Entry>,
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
            term_boundaries: term_boundaries(inner.log.iter().map(Entry::log_id)),
        })
    }

    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        let mut inner = self.lock();
        validate_write(write, LogIndex(inner.log.len() as u64))?;
        if let Some(from) = write.truncate_from {
            let keep = from.0.saturating_sub(1) as usize;
            inner.log.truncate(keep);
        }
        inner.log.extend(write.entries.iter().cloned());
        if let Some(hard_state) = write.hard_state {
            inner.hard_state = hard_state;
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
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let from = from.0.max(1);
        let to = to.0.min(inner.log.len() as u64);
        for index in from..=to {
            let entry = &inner.log[(index - 1) as usize];
            if !out.is_empty() && bytes + entry.payload_len() > max_bytes {
                break;
            }
            bytes += entry.payload_len();
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index == LogIndex::ZERO {
            return Ok(Some(Term::ZERO));
        }
        let inner = self.lock();
        Ok(inner.log.get((index.0 - 1) as usize).map(|e| e.term))
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.lock().log.len() as u64))
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
