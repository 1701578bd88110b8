//! A [`LogStorage`] kept in RocksDB, for production.
//!
//! Layout, in two column families:
//! - `meta`: the hard state under `hard_state`, the store's [`StoreIdentity`] under `identity` and
//!   the log's start (the last compacted entry's id) under `log_start`, all bincode-encoded;
//! - `log`: one entry per key, the key being the entry's index as 8 big-endian bytes (so RocksDB's
//!   byte order is index order), the value the bincode-encoded [`Entry`].
//!
//! Every [`LogStorage::write`] is a single synced `WriteBatch`, so it is atomic and durable. The
//! directory also holds the format file ([`crate::data_dir`]), written before RocksDB's first.
//!
//! ## WAL files are reused
//! A synced write that makes RocksDB's write-ahead log longer costs the filesystem an extra device
//! round trip: `fdatasync` must also write the inode, whose size grew. Overwriting blocks that a
//! file already has does not. So the store keeps obsolete WAL files for reuse
//! ([`RECYCLED_WAL_FILES`]), and a newly created store writes a throw-away filler through two WAL
//! files ([`RocksStorage::prime_wal`]), so that its log is appended to a reused file from the first
//! write on, not only once a few MiB have gone by. Recovery stays point-in-time: a reused
//! file's stale tail carries an older log number, and RocksDB stops replaying where it begins.

use crate::direct_io::direct_writes_supported;
use crate::{term_boundaries, LogStorage, StorageError};
use raftor_core::{Entry, HardState, LogId, LogIndex, LogWrite, RecoveredState, Standing, Term};
use rocksdb::{
    BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor, CompactOptions,
    DBCompressionType, DBRecoveryMode, Direction, FlushOptions, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const META_CF: &str = "meta";
const LOG_CF: &str = "log";
const HARD_STATE_KEY: &[u8] = b"hard_state";
/// The node's [`Standing`], written with a new store's identity (absent only in a store written
/// before standings existed: a member).
const STANDING_KEY: &[u8] = b"standing";
const IDENTITY_KEY: &[u8] = b"identity";

/// A [`Standing`] as stores wrote it before a catching-up node kept the floor leader's commit
/// index: read as catching up without it (it then waits for a term after the floor, as it did).
#[derive(Deserialize)]
enum LegacyStanding {
    Member,
    Rejoining,
    CatchingUp { floor: Term, floor_log: LogId },
}

impl From<LegacyStanding> for Standing {
    fn from(legacy: LegacyStanding) -> Standing {
        match legacy {
            LegacyStanding::Member => Standing::Member,
            LegacyStanding::Rejoining => Standing::Rejoining,
            LegacyStanding::CatchingUp { floor, floor_log } => Standing::CatchingUp {
                floor,
                floor_log,
                floor_leader_commit: None,
            },
        }
    }
}
const LOG_START_KEY: &[u8] = b"log_start";
/// The key, in RocksDB's otherwise unused default column family, that [`RocksStorage::prime_wal`]
/// overwrites and finally deletes.
const WAL_FILLER_KEY: &[u8] = b"wal-filler";

/// The size of each column family's memtable on the node with the lowest id (see
/// [`write_buffer_bytes`]). RocksDB starts a new WAL file when a memtable fills, so this is also
/// about the size a WAL file reaches, and the size of file a reused WAL lets the log be
/// overwritten in. Small enough that priming a new store's WAL is cheap (two of these).
pub const WRITE_BUFFER_BYTES: usize = 4 << 20;
/// How much larger one node's memtables are than the node's with the id before it.
const WRITE_BUFFER_STAGGER_BYTES: usize = 1 << 20;
/// How many memtable sizes the nodes' ids cycle through: one each for up to five voters.
const WRITE_BUFFER_STAGGER_STEPS: u64 = 5;
/// How many obsolete WAL files RocksDB keeps to reuse instead of deleting them.
pub const RECYCLED_WAL_FILES: usize = 4;
/// The size at which RocksDB's own diagnostic log (`LOG` in the store's directory: its flushes,
/// compactions and statistics) is closed and a new one begun. Left to RocksDB it grows until the
/// store is reopened: about a MiB a minute under a saturating write load (a memtable flush every
/// few seconds, each logged in a few lines), over a GiB a day.
pub const INFO_LOG_MAX_BYTES: usize = 4 << 20;
/// How many closed diagnostic logs (`LOG.old.*`) RocksDB keeps beside the current one: with
/// [`INFO_LOG_MAX_BYTES`], at most 20 MiB of diagnostic log per store with the current one, the
/// last 20 minutes or so of a saturating load.
pub const INFO_LOGS_KEPT: usize = 4;

/// The size of each column family's memtable in node `node_id`'s store: [`WRITE_BUFFER_BYTES`]
/// for node 1, a MiB more for each id after it, up to 8 MiB for node 5, then again from 4 MiB.
///
/// The nodes append the same entries, so memtables of one size would fill, and be flushed, at the
/// same moment on every node. A flush writes a few MiB of table file, and syncs on the same disk
/// wait behind it: with three nodes on one slow disk (a sync of about 170 µs), most syncs over
/// 20 ms fell in flushes, which all three nodes made within 30 ms of each other. With sizes that
/// differ, the nodes flush at different moments, and a disk they share takes one node's flush at a
/// time: the p99 at 64 connections there fell from 123 to 65 ms (BENCHMARKS.md, "One sitting on a
/// slower disk"). Nodes on disks of their own gain less: a leader answers a write only once its
/// own copy is durable, so its own flush delays its answers either way.
pub fn write_buffer_bytes(node_id: u64) -> usize {
    let step = node_id.wrapping_sub(1) % WRITE_BUFFER_STAGGER_STEPS;
    WRITE_BUFFER_BYTES + step as usize * WRITE_BUFFER_STAGGER_BYTES
}

/// Which node of which cluster a data directory belongs to.
///
/// Stored on first open and checked on every later open, so that a node started with the wrong
/// directory (another node's, or one from another cluster) refuses to run instead of answering with
/// somebody else's log and vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// The cluster the data belongs to.
    pub cluster_id: String,
    /// The node, within that cluster, the data belongs to.
    pub node_id: u64,
}

/// A durable Raft log and hard state in a RocksDB database. See the [module docs](self) for the
/// on-disk layout.
pub struct RocksStorage {
    db: DB,
    path: PathBuf,
    /// The index of the last entry of the log (`start.index` when no entry follows the start).
    /// Read once at open, then kept up to date by [`LogStorage::write`] after each successful write.
    last_index: u64,
    /// The last compacted entry: the `log` column family holds the entries after it.
    start: LogId,
    /// Where each entry is encoded before RocksDB copies it into the write batch: reused, so that
    /// a large entry is not encoded into newly allocated memory every time (its capacity is at
    /// most [`SCRATCH_KEPT_BYTES`] between writes).
    scratch: Vec<u8>,
}

/// The most encoding space [`RocksStorage`] keeps between writes (larger entries are encoded
/// into space allocated for that write only).
const SCRATCH_KEPT_BYTES: usize = 4 * 1024 * 1024;

/// A write batch's bytes besides its records' keys and values, at most: RocksDB's 12-byte header,
/// and for each record a type tag, a column family id and two length prefixes (varints of at most
/// 5 bytes each).
const BATCH_HEADER_BYTES: usize = 12;
const BATCH_RECORD_OVERHEAD_BYTES: usize = 1 + 5 + 5 + 5;

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.path)
            .field("last_index", &self.last_index)
            .finish_non_exhaustive()
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageError::Corrupt(format!(
            "log key of {} bytes, expected 8: {key:02x?}",
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes the entry stored under `index`, checking that it claims that index.
fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, StorageError> {
    let entry: Entry = bincode::deserialize(value).map_err(|e| {
        StorageError::Corrupt(format!("log entry at index {index} does not decode: {e}"))
    })?;
    if entry.index.0 != index {
        return Err(StorageError::Corrupt(format!(
            "log entry stored at index {index} claims index {}",
            entry.index
        )));
    }
    Ok(entry)
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StorageError> {
    // Encoding plain in-memory data cannot fail, but a store must not panic: report it instead.
    bincode::serialize(value)
        .map_err(|e| StorageError::InvalidWrite(format!("cannot encode {what}: {e}")))
}

/// Options for the store and each column family, with memtables of `write_buffer` bytes.
fn store_options(direct_writes: bool, write_buffer: usize) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // This build has no compression libraries (default features off): say so explicitly rather
    // than rely on RocksDB's default (Snappy), which it would have to fall back from.
    opts.set_compression_type(DBCompressionType::None);
    // A torn last record (a crash mid-write) ends the log there: the write was never acknowledged.
    // This is RocksDB's default; it is named because reusing WAL files relies on it.
    opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);
    opts.set_max_log_file_size(INFO_LOG_MAX_BYTES);
    opts.set_keep_log_file_num(INFO_LOGS_KEPT);
    opts.set_write_buffer_size(write_buffer);
    // RocksDB flushes the column families that hold the oldest WAL once the live WAL files exceed
    // this, so a rarely written column family (`meta`) cannot keep old WAL files alive.
    opts.set_max_total_wal_size(2 * write_buffer as u64);
    // Table files (memtable flushes, compactions) past the page cache where the directory takes
    // direct writes: the log is read back only to catch a follower up or after a restart, and
    // copying every flushed entry into newly allocated cache pages was a quarter of all CPU under
    // a load of large values (see `crate::direct_io`). The write-ahead log, whose files are
    // reused, stays buffered.
    opts.set_use_direct_io_for_flush_and_compaction(direct_writes);
    opts
}

/// Whether the RocksDB database in `dir` has the store's column families. One that cannot be
/// listed (a damaged or foreign `CURRENT`, a file it cannot read) is not opened: RocksDB's reason
/// is given.
fn has_store_column_families(dir: &Path) -> Result<bool, StorageError> {
    let families = DB::list_cf(&Options::default(), dir).map_err(|error| {
        StorageError::Corrupt(format!(
            "{} holds RocksDB's CURRENT but no raftor format file, and its column families \
             cannot be listed ({error}): not opened",
            dir.display()
        ))
    })?;
    Ok([META_CF, LOG_CF]
        .iter()
        .all(|cf| families.iter().any(|f| f == cf)))
}

impl RocksStorage {
    /// Opens (creating it if needed) the store in directory `path`, which must belong to `identity`.
    ///
    /// The first open records `identity`; later opens fail with [`StorageError::WrongIdentity`] if
    /// the recorded identity differs. A `path` that is a regular file or cannot be created gives
    /// [`StorageError::Io`]; a directory holding something else than a store, or a store of a
    /// newer format, is refused untouched ([`crate::data_dir::claim`]).
    pub fn open(path: &Path, identity: &StoreIdentity) -> Result<RocksStorage, StorageError> {
        crate::durable::create_dir_durable(path).map_err(|e| crate::error::io_error(path, e))?;
        crate::data_dir::claim(path, has_store_column_families)?;

        let direct_writes = direct_writes_supported(path);
        let write_buffer = write_buffer_bytes(identity.node_id);
        let opts = store_options(direct_writes, write_buffer);
        // The default column family holds only `prime_wal`'s filler: its memtable is made large
        // enough that the filler never fills it, so RocksDB never switches WAL files on its own
        // in the middle of priming.
        let mut filler_opts = store_options(direct_writes, write_buffer);
        filler_opts.set_write_buffer_size(4 * write_buffer);
        let cfs = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, filler_opts),
            ColumnFamilyDescriptor::new(META_CF, store_options(direct_writes, write_buffer)),
            ColumnFamilyDescriptor::new(LOG_CF, store_options(direct_writes, write_buffer)),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;

        let mut store = RocksStorage {
            db,
            path: path.to_path_buf(),
            last_index: 0,
            start: LogId::ZERO,
            scratch: Vec::new(),
        };
        let created = store.check_identity(identity)?;
        store.start = store.read_log_start()?;
        store.last_index = store.read_last_index()?.max(store.start.index.0);
        if created {
            store.prime_wal(write_buffer)?;
        }
        Ok(store)
    }

    /// Makes the live WAL file a reused one, so the log's synced appends overwrite written blocks
    /// from the first write on (see the [module docs](self)).
    ///
    /// RocksDB reuses only WAL files this open created, and a WAL file it switches away from is cut
    /// to the length written in its last use. So when a store is created this writes a filler value
    /// (unsynced, into the default column family, which holds nothing else) of a little more than
    /// a memtable into each of two WAL files, deleting it and switching to the next file by
    /// flushing every column family. The live file is then the first one reused, and the second
    /// waits to be reused next. It writes two and a half memtables (10 to 20 MiB), which RocksDB
    /// syncs as it switches files, and leaves no data. A reopened store is not primed: that burst
    /// of writes on a disk its peers share would delay their syncs, and with them their answers
    /// to the leader, just as a node rejoins. It reuses WAL files again once its first two have
    /// filled. `write_buffer` is the store's memtable size ([`write_buffer_bytes`]).
    fn prime_wal(&self, write_buffer: usize) -> Result<(), StorageError> {
        const FILLER_CHUNK: usize = 64 << 10;
        // A little more than a WAL file grows to before the log's memtable fills (its records
        // also carry the hard state), so that the whole of the next use overwrites. RocksDB does
        // not switch files on its own meanwhile: the default column family's memtable holds four
        // times this, and each round's file is obsolete before the next round writes, so the live
        // WAL stays under the store's `max_total_wal_size`.
        let chunks_per_file = write_buffer * 5 / 4 / FILLER_CHUNK;
        let filler = vec![0u8; FILLER_CHUNK];
        let mut unsynced = WriteOptions::default();
        unsynced.set_sync(false);
        let default = self.cf(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)?;
        let column_families = [default, self.cf(META_CF)?, self.cf(LOG_CF)?];
        let mut wait = FlushOptions::default();
        wait.set_wait(true);
        for _round in 0..2 {
            for _ in 0..chunks_per_file {
                self.db
                    .put_cf_opt(default, WAL_FILLER_KEY, &filler, &unsynced)?;
            }
            // Deleted in the same memtable, the filler's flush writes only a tombstone.
            self.db.delete_cf_opt(default, WAL_FILLER_KEY, &unsynced)?;
            self.db.flush_cfs_opt(&column_families, &wait)?;
        }
        // Rewriting the tombstones at the bottom level drops them, leaving no file behind.
        let mut compact = CompactOptions::default();
        compact.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(default, None::<&[u8]>, None::<&[u8]>, &compact);
        Ok(())
    }

    /// The directory this store was opened in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt(format!("column family '{name}' is missing")))
    }

    fn sync_writes() -> WriteOptions {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        opts
    }

    /// Checks the recorded identity against `expected`, or records it in a new store. Returns
    /// whether the store is new.
    fn check_identity(&self, expected: &StoreIdentity) -> Result<bool, StorageError> {
        let meta = self.cf(META_CF)?;
        match self.db.get_pinned_cf(meta, IDENTITY_KEY)? {
            Some(bytes) => {
                let found: StoreIdentity = bincode::deserialize(&bytes).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "store identity in {} does not decode: {e}",
                        self.path.display()
                    ))
                })?;
                if &found != expected {
                    return Err(StorageError::WrongIdentity {
                        path: self.path.display().to_string(),
                        found_cluster: found.cluster_id,
                        found_node: found.node_id,
                        expected_cluster: expected.cluster_id.clone(),
                        expected_node: expected.node_id,
                    });
                }
                Ok(false)
            }
            None => {
                // A new store records that it is rejoining with its identity: the rules write a
                // standing only when it changes, and a hard state without one reads as a store
                // older than standings, a member. A node that adopted a term while rejoining,
                // then restarted, would come back voting with its promises forgotten.
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, IDENTITY_KEY, encode(expected, "the store identity")?);
                batch.put_cf(
                    meta,
                    STANDING_KEY,
                    encode(&Standing::Rejoining, "the standing")?,
                );
                self.db.write_opt(batch, &Self::sync_writes())?;
                Ok(true)
            }
        }
    }

    fn read_last_index(&self) -> Result<u64, StorageError> {
        let log = self.cf(LOG_CF)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item?;
                key_index(&key)
            }
        }
    }

    fn read_log_start(&self) -> Result<LogId, StorageError> {
        let meta = self.cf(META_CF)?;
        match self.db.get_pinned_cf(meta, LOG_START_KEY)? {
            None => Ok(LogId::ZERO),
            Some(bytes) => bincode::deserialize(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("log start does not decode: {e}"))),
        }
    }

    fn compacted(&self, index: u64) -> StorageError {
        StorageError::Compacted {
            index,
            start: self.start.index.0,
        }
    }

    /// The stored standing; a store with a hard state but no standing predates standings and
    /// is a member; a store with neither is new. (A store created since records its standing
    /// with its identity, [`Self::check_identity`].)
    fn read_standing(&self) -> Result<Standing, StorageError> {
        let meta = self.cf(META_CF)?;
        match self.db.get_pinned_cf(meta, STANDING_KEY)? {
            Some(bytes) => bincode::deserialize(&bytes)
                .or_else(|e| {
                    bincode::deserialize::<LegacyStanding>(&bytes)
                        .map(Standing::from)
                        .map_err(|_| e)
                })
                .map_err(|e| StorageError::Corrupt(format!("standing does not decode: {e}"))),
            None if self.db.get_pinned_cf(meta, HARD_STATE_KEY)?.is_some() => Ok(Standing::Member),
            None => Ok(Standing::Rejoining),
        }
    }

    fn read_hard_state(&self) -> Result<HardState, StorageError> {
        let meta = self.cf(META_CF)?;
        match self.db.get_pinned_cf(meta, HARD_STATE_KEY)? {
            None => Ok(HardState::default()),
            Some(bytes) => bincode::deserialize(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("hard state does not decode: {e}"))),
        }
    }
}

impl LogStorage for RocksStorage {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        let hard_state = self.read_hard_state()?;
        let standing = self.read_standing()?;
        let log = self.cf(LOG_CF)?;
        let mut ids = Vec::new();
        let mut memberships = Vec::new();
        let first = self.start.index.0 + 1;
        let mut expected = first;
        let from = index_key(first);
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if index != expected {
                return Err(StorageError::Corrupt(format!(
                    "log is not consecutive: expected index {expected}, found {index}"
                )));
            }
            let entry = decode_entry(index, &value)?;
            ids.push(entry.log_id());
            memberships.extend(raftor_core::configuration_entries([&entry]));
            expected += 1;
        }
        let last = expected - 1;
        if last != self.last_index {
            return Err(StorageError::Corrupt(format!(
                "log ends at index {last}, but the store believed it ended at {}",
                self.last_index
            )));
        }
        Ok(RecoveredState {
            hard_state,
            standing,
            log_start: self.start,
            term_boundaries: term_boundaries(ids),
            memberships,
            snapshot_membership: None,
        })
    }

    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        // Validate everything before touching the batch: a rejected write changes nothing.
        let after_truncation = match write.truncate_from {
            Some(from) => from.0.saturating_sub(1).min(self.last_index),
            None => self.last_index,
        };
        let (new_start, new_last_index) =
            crate::validate_write(write, self.start, LogIndex(self.last_index))?;

        // Sized up front for the entries: grown by doubling instead, RocksDB copied a batch of
        // large entries over and over into new memory, a fifth of a node's CPU under 1 MiB writes
        // (BENCHMARKS.md, issue 23). Too small an estimate only costs a reallocation.
        let mut capacity = BATCH_HEADER_BYTES + 4 * (BATCH_RECORD_OVERHEAD_BYTES + 64);
        for entry in &write.entries {
            let encoded = bincode::serialized_size(entry).unwrap_or(0) as usize;
            capacity = capacity
                .saturating_add(BATCH_RECORD_OVERHEAD_BYTES + 8)
                .saturating_add(encoded);
        }
        let mut batch = WriteBatch::with_capacity_bytes(capacity);
        // Taken for the write (the column family handles borrow `self`), given back after it.
        let mut scratch = std::mem::take(&mut self.scratch);
        let log = self.cf(LOG_CF)?;
        if after_truncation < self.last_index {
            // Delete [after_truncation + 1, last_index + 1): every entry from the truncation point.
            batch.delete_range_cf(
                log,
                index_key(after_truncation + 1),
                index_key(self.last_index + 1),
            );
        }
        let meta = self.cf(META_CF)?;
        if new_start != self.start {
            // Delete (start, new start]: the entries the snapshot covers. Space comes back as
            // RocksDB compacts the range.
            batch.delete_range_cf(
                log,
                index_key(self.start.index.0 + 1),
                index_key(new_start.index.0 + 1),
            );
            batch.put_cf(meta, LOG_START_KEY, encode(&new_start, "the log start")?);
        }
        for entry in &write.entries {
            scratch.clear();
            bincode::serialize_into(&mut scratch, entry).map_err(|e| {
                StorageError::InvalidWrite(format!("cannot encode a log entry: {e}"))
            })?;
            batch.put_cf(log, index_key(entry.index.0), &scratch);
        }
        if let Some(hard_state) = &write.hard_state {
            batch.put_cf(meta, HARD_STATE_KEY, encode(hard_state, "the hard state")?);
        }
        if let Some(standing) = &write.standing {
            batch.put_cf(meta, STANDING_KEY, encode(standing, "the standing")?);
        }
        self.db.write_opt(batch, &Self::sync_writes())?;
        if scratch.capacity() <= SCRATCH_KEPT_BYTES {
            self.scratch = scratch;
        }
        self.last_index = new_last_index.0;
        self.start = new_start;
        Ok(())
    }

    fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = from.0.max(1);
        if from <= self.start.index.0 {
            return Err(self.compacted(from));
        }
        let to = to.0.min(self.last_index);
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let log = self.cf(LOG_CF)?;
        let start = index_key(from);
        let mut bytes = 0usize;
        let mut expected = from;
        let mut stopped_by_limit = false;
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if index > to {
                break;
            }
            if index != expected {
                return Err(StorageError::Corrupt(format!(
                    "log is not consecutive: expected index {expected}, found {index}"
                )));
            }
            let entry = decode_entry(index, &value)?;
            if !out.is_empty() && bytes.saturating_add(entry.payload_len()) > max_bytes {
                stopped_by_limit = true;
                break;
            }
            bytes = bytes.saturating_add(entry.payload_len());
            out.push(entry);
            expected += 1;
        }
        if !stopped_by_limit && expected <= to {
            // The log ended before `to`, although `to` is at most the last index.
            return Err(StorageError::Corrupt(format!(
                "log entry {expected} is missing (the log should end at {})",
                self.last_index
            )));
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index == LogIndex::ZERO {
            return Ok(Some(Term::ZERO));
        }
        if index == self.start.index {
            return Ok(Some(self.start.term));
        }
        if index < self.start.index {
            return Err(self.compacted(index.0));
        }
        if index.0 > self.last_index {
            return Ok(None);
        }
        let log = self.cf(LOG_CF)?;
        match self.db.get_pinned_cf(log, index_key(index.0))? {
            Some(value) => Ok(Some(decode_entry(index.0, &value)?.term)),
            None => Err(StorageError::Corrupt(format!(
                "log entry {index} is missing (the log should end at {})",
                self.last_index
            ))),
        }
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.last_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Harness};
    use bytes::Bytes;
    use raftor_core::EntryPayload;
    use tempfile::TempDir;

    fn identity() -> StoreIdentity {
        StoreIdentity {
            cluster_id: "test-cluster".to_string(),
            node_id: 1,
        }
    }

    /// Each fresh store lives in a new temporary directory, kept until the harness is dropped.
    #[derive(Default)]
    struct RocksHarness {
        dirs: Vec<TempDir>,
    }

    impl Harness for RocksHarness {
        type Store = RocksStorage;

        fn fresh(&mut self) -> RocksStorage {
            let dir = TempDir::new().expect("create a temporary directory");
            let store = RocksStorage::open(&dir.path().join("db"), &identity())
                .expect("open a fresh store");
            self.dirs.push(dir);
            store
        }

        fn reopen(&mut self, store: RocksStorage) -> RocksStorage {
            let path = store.path().to_path_buf();
            drop(store);
            RocksStorage::open(&path, &identity()).expect("reopen the store")
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from_static(b"payload")),
        }
    }

    /// Bytes a store wrote before a configuration entry's membership was boxed (commit
    /// `2b5ddac`: `Config(Membership)`), for node 4 joining 1, 2 and 3 as a learner to promote,
    /// then a command and a blank entry: boxing changed the entry's size in memory, not its
    /// encoding, so logs written by earlier versions still read, and what is written now reads
    /// in them.
    const CONFIG_ENTRY_BEFORE_BOXING: &str = concat!(
        "0300000000000000070000000000000002000000030000000000000001000000000000000200000000000000",
        "0300000000000000010000000000000004000000000000000000000000000000000000000000000000040000",
        "0000000000010000000000000007000000000000006e313a3730303002000000000000000700000000000000",
        "6e323a37303030030000000000000007000000000000006e333a373030300400000000000000070000000000",
        "00006e343a3730303001000000000000000400000000000000",
    );
    const COMMAND_ENTRY_BEFORE_BOXING: &str =
        "03000000000000000800000000000000010000000300000000000000707574";
    const BLANK_ENTRY_BEFORE_BOXING: &str = "0300000000000000090000000000000000000000";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn entries_written_before_configurations_were_boxed_read_the_same() {
        let voters = [1, 2, 3].into_iter().map(raftor_core::NodeId).collect();
        let addresses = (1..=4)
            .map(|id| (raftor_core::NodeId(id), format!("n{id}:7000")))
            .collect();
        let joined = raftor_core::Membership::bootstrap(&voters, &addresses)
            .apply(&[raftor_core::ConfChange::add_learner(
                raftor_core::NodeId(4),
                "n4:7000",
                true,
            )])
            .expect("add a learner");
        let expected = [
            (
                CONFIG_ENTRY_BEFORE_BOXING,
                Entry {
                    term: Term(3),
                    index: LogIndex(7),
                    payload: EntryPayload::Config(Box::new(joined)),
                },
            ),
            (
                COMMAND_ENTRY_BEFORE_BOXING,
                Entry {
                    term: Term(3),
                    index: LogIndex(8),
                    payload: EntryPayload::Command(Bytes::from_static(b"put")),
                },
            ),
            (
                BLANK_ENTRY_BEFORE_BOXING,
                Entry {
                    term: Term(3),
                    index: LogIndex(9),
                    payload: EntryPayload::Blank,
                },
            ),
        ];
        for (hex, entry) in expected {
            let bytes = unhex(hex);
            assert_eq!(decode_entry(entry.index.0, &bytes).unwrap(), entry);
            assert_eq!(encode(&entry, "entry").unwrap(), bytes, "{entry:?}");
        }
    }

    fn append(store: &mut RocksStorage, entries: Vec<Entry>) {
        store
            .write(&LogWrite {
                entries,
                ..LogWrite::default()
            })
            .expect("append");
    }

    #[test]
    fn the_first_five_nodes_have_memtables_of_five_sizes() {
        let sizes: Vec<usize> = (1..=5).map(write_buffer_bytes).collect();
        assert_eq!(sizes[0], WRITE_BUFFER_BYTES);
        assert!(sizes.windows(2).all(|pair| pair[0] < pair[1]), "{sizes:?}");
        assert_eq!(write_buffer_bytes(6), WRITE_BUFFER_BYTES);
        assert!(sizes.contains(&write_buffer_bytes(0)));
        assert!(sizes[4] <= 2 * WRITE_BUFFER_BYTES);
    }

    /// RocksDB records the options a store runs with in its `OPTIONS-*` files: the newest one's
    /// value of `name` in section `[DBOptions]`.
    fn recorded_db_option(dir: &Path, name: &str) -> Option<String> {
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                file.starts_with("OPTIONS-") && !file.ends_with(".dbtmp")
            })
            .max()?;
        let text = std::fs::read_to_string(newest).unwrap();
        let section = text.split("\n[").find(|s| s.starts_with("DBOptions]"))?;
        section.lines().find_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            (key == name).then(|| value.to_string())
        })
    }

    /// RocksDB's diagnostic log is bounded: it rolls at a size and only a few old ones are kept
    /// (left to RocksDB, one log grows until the store is reopened, and a thousand are kept).
    #[test]
    fn the_diagnostic_log_rolls_and_few_are_kept() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        drop(RocksStorage::open(&path, &identity()).unwrap());
        assert_eq!(
            recorded_db_option(&path, "max_log_file_size").as_deref(),
            Some(INFO_LOG_MAX_BYTES.to_string().as_str())
        );
        assert_eq!(
            recorded_db_option(&path, "keep_log_file_num").as_deref(),
            Some(INFO_LOGS_KEPT.to_string().as_str())
        );
    }

    #[test]
    fn rocks_store_passes_the_conformance_suite() {
        conformance::run_all(&mut RocksHarness::default());
    }

    #[test]
    fn reopening_with_another_identity_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        drop(RocksStorage::open(&path, &identity()).unwrap());

        let others = [
            StoreIdentity {
                cluster_id: "test-cluster".to_string(),
                node_id: 2,
            },
            StoreIdentity {
                cluster_id: "another-cluster".to_string(),
                node_id: 1,
            },
        ];
        for other in others {
            match RocksStorage::open(&path, &other) {
                Err(StorageError::WrongIdentity {
                    path: error_path,
                    found_cluster,
                    found_node,
                    expected_cluster,
                    expected_node,
                }) => {
                    assert_eq!(error_path, path.display().to_string());
                    assert_eq!(found_cluster, "test-cluster");
                    assert_eq!(found_node, 1);
                    assert_eq!(expected_cluster, other.cluster_id);
                    assert_eq!(expected_node, other.node_id);
                }
                other => panic!("expected WrongIdentity, got {other:?}"),
            }
        }
        // The rightful owner still opens it.
        RocksStorage::open(&path, &identity()).unwrap();
    }

    /// A store written before format files opens and is given one; another program's RocksDB
    /// database is refused, and opened by nothing (its files stay as they were).
    #[test]
    fn a_store_from_before_format_files_opens_and_another_database_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        let mut store = RocksStorage::open(&path, &identity()).unwrap();
        append(&mut store, (1..=3).map(|index| entry(index, 2)).collect());
        drop(store);
        let format = path.join(crate::data_dir::FORMAT_FILE);
        std::fs::remove_file(&format).unwrap();
        let store = RocksStorage::open(&path, &identity()).unwrap();
        assert_eq!(store.last_index().unwrap(), LogIndex(3));
        assert!(format.exists());
        drop(store);

        let other = dir.path().join("other");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, &other).unwrap();
            db.put(b"their key", b"their value").unwrap();
        }
        let listing = |dir: &Path| {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing(&other);
        match RocksStorage::open(&other, &identity()) {
            Err(StorageError::NotAStore { found, .. }) => {
                assert!(found.contains("CURRENT"), "{found}")
            }
            other => panic!("expected NotAStore, got {other:?}"),
        }
        assert_eq!(listing(&other), before);
        // A CURRENT that names no manifest: RocksDB's reason is given, and nothing is written.
        let damaged = dir.path().join("damaged");
        std::fs::create_dir(&damaged).unwrap();
        std::fs::write(damaged.join("CURRENT"), b"MANIFEST-000009\n").unwrap();
        match RocksStorage::open(&damaged, &identity()) {
            Err(StorageError::Corrupt(reason)) => {
                assert!(reason.contains("cannot be listed"), "{reason}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(listing(&damaged), ["CURRENT"]);
        let db = DB::open_default(&other).unwrap();
        assert_eq!(
            db.get(b"their key").unwrap().as_deref(),
            Some(&b"their value"[..])
        );
    }

    #[test]
    fn opening_a_regular_file_is_an_io_error() {
        let dir = TempDir::new().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"hello").unwrap();
        for path in [file.clone(), file.join("db")] {
            match RocksStorage::open(&path, &identity()) {
                Err(StorageError::Io { path: p, .. }) => assert_eq!(p, path.display().to_string()),
                other => panic!("expected an Io error for {}, got {other:?}", path.display()),
            }
        }
    }

    /// A store written before catching-up standings kept the floor leader's commit index still
    /// opens: its standing reads as catching up without one; garbage is still refused.
    #[test]
    fn a_standing_written_before_the_floor_leaders_commit_existed_still_reads() {
        #[derive(Serialize)]
        enum Written {
            #[allow(dead_code)]
            Member,
            #[allow(dead_code)]
            Rejoining,
            CatchingUp {
                floor: Term,
                floor_log: LogId,
            },
        }
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        let store = RocksStorage::open(&path, &identity()).unwrap();
        let floor_log = LogId::new(Term(3), LogIndex(11));
        let old = bincode::serialize(&Written::CatchingUp {
            floor: Term(3),
            floor_log,
        })
        .unwrap();
        let meta = store.cf(META_CF).unwrap();
        store.db.put_cf(meta, STANDING_KEY, old).unwrap();
        assert_eq!(
            store.read_standing().unwrap(),
            Standing::CatchingUp {
                floor: Term(3),
                floor_log,
                floor_leader_commit: None,
            }
        );
        store.db.put_cf(meta, STANDING_KEY, [0xffu8; 5]).unwrap();
        assert!(matches!(
            store.read_standing(),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn a_corrupt_log_value_is_reported_not_panicked_on() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        let mut store = RocksStorage::open(&path, &identity()).unwrap();
        append(&mut store, (1..=3).map(|i| entry(i, 1)).collect());

        let log = store.cf(LOG_CF).unwrap();
        store.db.put_cf(log, index_key(2), [0xffu8; 3]).unwrap();

        let corrupt_at_2 = |result: Result<_, StorageError>, what: &str| match result {
            Err(StorageError::Corrupt(message)) => {
                assert!(
                    message.contains('2'),
                    "{what}: message should name index 2: {message}"
                )
            }
            Err(e) => panic!("{what}: expected Corrupt, got {e:?}"),
            Ok(_) => panic!("{what}: expected Corrupt, got Ok"),
        };
        corrupt_at_2(
            store
                .entries(LogIndex(1), LogIndex(3), usize::MAX)
                .map(drop),
            "entries()",
        );
        corrupt_at_2(store.term(LogIndex(2)).map(drop), "term()");
        corrupt_at_2(store.recover().map(drop), "recover()");
        // Entries before the corrupt one still read.
        assert_eq!(
            store.entries(LogIndex(1), LogIndex(1), usize::MAX).unwrap(),
            vec![entry(1, 1)]
        );

        // Still reported after a restart.
        drop(store);
        let mut store = RocksStorage::open(&path, &identity()).unwrap();
        corrupt_at_2(store.recover().map(drop), "recover() after reopening");

        // A value that decodes but sits under the wrong key is corrupt too.
        let log = store.cf(LOG_CF).unwrap();
        let misplaced = bincode::serialize(&entry(7, 1)).unwrap();
        store.db.put_cf(log, index_key(2), misplaced).unwrap();
        corrupt_at_2(
            store.term(LogIndex(2)).map(drop),
            "term() of a misplaced entry",
        );
    }

    #[test]
    fn a_hole_in_the_log_is_corrupt() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("db");
        let mut store = RocksStorage::open(&path, &identity()).unwrap();
        append(&mut store, (1..=3).map(|i| entry(i, 1)).collect());
        let log = store.cf(LOG_CF).unwrap();
        store.db.delete_cf(log, index_key(2)).unwrap();

        assert!(matches!(
            store.entries(LogIndex(1), LogIndex(3), usize::MAX),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            store.term(LogIndex(2)),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(store.recover(), Err(StorageError::Corrupt(_))));
    }
}
