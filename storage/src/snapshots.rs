//! Snapshots on disk (§7): one file of state-machine bytes per snapshot, with a small metadata file
//! beside it (last included entry, size, CRC-32). Both are written to a temporary name, synced and
//! renamed, so a crash leaves either the old snapshot or the new one, never half of one; leftovers
//! of an interrupted write or transfer are removed when the store is opened.

use crate::StorageError;
use raftor_core::{LogId, Membership, SnapshotMeta};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const TEMP_SUFFIX: &str = ".tmp";

/// A directory of snapshots; the newest one counts. Cheap to share (`Arc`) between the applier that
/// writes snapshots, the replicators that send them and the node that receives them.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn base_name(last: LogId) -> String {
    format!("snapshot-{:020}-{:020}", last.index.0, last.term.0)
}

/// Syncs a directory, so that a rename in it is durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

impl SnapshotStore {
    /// Opens (creating it if needed) the snapshot directory `dir`, removing what an interrupted
    /// write or transfer left behind.
    pub fn open(dir: &Path) -> Result<SnapshotStore, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
        };
        for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
                fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data_path(&self, last: LogId) -> PathBuf {
        self.dir.join(format!("{}.data", base_name(last)))
    }

    fn meta_path(&self, last: LogId) -> PathBuf {
        self.dir.join(format!("{}.meta", base_name(last)))
    }

    /// The newest complete snapshot, if any: its metadata decodes and its data file has the size
    /// the metadata says (the checksum is checked when it is read whole).
    pub fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let mut best: Option<SnapshotMeta> = None;
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let path = entry.map_err(|e| io_error(&self.dir, e))?.path();
            if path.extension().is_none_or(|ext| ext != "meta") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
            let Ok(meta) = bincode::deserialize::<SnapshotMeta>(&bytes) else {
                tracing::warn!(path = %path.display(), "ignoring a snapshot whose metadata does not decode");
                continue;
            };
            let size = fs::metadata(self.data_path(meta.last_included)).map(|m| m.len());
            if size.ok() != Some(meta.size) {
                tracing::warn!(path = %path.display(), "ignoring a snapshot whose data file is missing or short");
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|b| b.last_included.index < meta.last_included.index)
            {
                best = Some(meta);
            }
        }
        Ok(best)
    }

    /// Opens snapshot `meta` for reading. The open file stays readable even if a newer snapshot
    /// replaces it meanwhile.
    pub fn open_data(&self, meta: &SnapshotMeta) -> Result<File, StorageError> {
        let path = self.data_path(meta.last_included);
        File::open(&path).map_err(|e| io_error(&path, e))
    }

    /// Reads at most `max` bytes of `file` (a snapshot's data) at `offset`.
    pub fn read_chunk(file: &mut File, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = Vec::with_capacity(max.min(1 << 20));
        file.take(max as u64).read_to_end(&mut chunk)?;
        Ok(chunk)
    }

    /// A new snapshot being written, under a temporary name (`name` tells writers apart).
    pub fn create(&self, name: &str) -> Result<SnapshotFile, StorageError> {
        let path = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(SnapshotFile {
            writer: BufWriter::with_capacity(1 << 20, file),
            path,
            hasher: crc32fast::Hasher::new(),
            size: 0,
        })
    }

    /// Makes a fully written snapshot the store's newest: sync its data, rename it into place,
    /// write its metadata the same way, and remove older snapshots.
    fn install(
        &self,
        file: SnapshotFile,
        meta: SnapshotMeta,
    ) -> Result<SnapshotMeta, StorageError> {
        let SnapshotFile { writer, path, .. } = file;
        let data = writer
            .into_inner()
            .map_err(|e| io_error(&path, e.into_error()))?;
        data.sync_all().map_err(|e| io_error(&path, e))?;
        drop(data);
        let data_path = self.data_path(meta.last_included);
        fs::rename(&path, &data_path).map_err(|e| io_error(&data_path, e))?;

        let meta_temp = self.dir.join(format!(
            "{}.meta{TEMP_SUFFIX}",
            base_name(meta.last_included)
        ));
        let encoded = bincode::serialize(&meta).map_err(|e| {
            StorageError::InvalidWrite(format!("cannot encode snapshot metadata: {e}"))
        })?;
        let mut meta_file = File::create(&meta_temp).map_err(|e| io_error(&meta_temp, e))?;
        meta_file
            .write_all(&encoded)
            .and_then(|()| meta_file.sync_all())
            .map_err(|e| io_error(&meta_temp, e))?;
        let meta_path = self.meta_path(meta.last_included);
        fs::rename(&meta_temp, &meta_path).map_err(|e| io_error(&meta_path, e))?;
        sync_dir(&self.dir)?;
        self.remove_older_than(meta.last_included)?;
        Ok(meta)
    }

    /// Removes every snapshot older than `keep`: all their metadata first, then their data, so
    /// that a crash in between leaves no metadata without its data.
    fn remove_older_than(&self, keep: LogId) -> Result<(), StorageError> {
        let mut older = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let path = entry.map_err(|e| io_error(&self.dir, e))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let index = name
                .strip_prefix("snapshot-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|index| index.parse::<u64>().ok());
            if index.is_some_and(|index| index < keep.index.0) {
                older.push((!name.ends_with(".meta"), path));
            }
        }
        // Metadata (false) sorts before data (true).
        older.sort();
        for (_, path) in older {
            fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }
}

/// A snapshot being written: plain `io::Write`, checksummed as it goes.
pub struct SnapshotFile {
    writer: BufWriter<File>,
    path: PathBuf,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl Write for SnapshotFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.writer.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl SnapshotFile {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Ends a snapshot this node took of its own state, which includes `last_included`; `membership`
    /// is the configuration in force there.
    pub fn finish(
        self,
        store: &SnapshotStore,
        last_included: LogId,
        membership: Membership,
    ) -> Result<SnapshotMeta, StorageError> {
        let meta = SnapshotMeta {
            last_included,
            size: self.size,
            checksum: self.hasher.clone().finalize(),
            membership: Box::new(membership),
        };
        store.install(self, meta)
    }

    /// Ends a snapshot received from the leader, which must be exactly `expected`; anything else
    /// (short, long, damaged) is refused and removed.
    pub fn finish_received(
        self,
        store: &SnapshotStore,
        expected: SnapshotMeta,
    ) -> Result<SnapshotMeta, StorageError> {
        let checksum = self.hasher.clone().finalize();
        let size = self.size;
        if size != expected.size || checksum != expected.checksum {
            let path = self.path.clone();
            drop(self);
            let _ = fs::remove_file(&path);
            return Err(StorageError::Corrupt(format!(
                "received snapshot {} has {size} bytes and checksum {checksum:08x}, expected {} bytes and {:08x}",
                expected.last_included, expected.size, expected.checksum
            )));
        }
        store.install(self, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftor_core::{LogIndex, Term};

    fn id(index: u64, term: u64) -> LogId {
        LogId::new(Term(term), LogIndex(index))
    }

    fn write(store: &SnapshotStore, last: LogId, bytes: &[u8]) -> SnapshotMeta {
        let mut file = store.create("test").expect("create");
        file.write_all(bytes).expect("write");
        // The configuration travels with the snapshot: the tests compare what comes back.
        let voters = [1, 2, 3].map(raftor_core::NodeId).into_iter().collect();
        let membership = Membership::bootstrap(&voters, &Default::default());
        file.finish(store, last, membership).expect("finish")
    }

    #[test]
    fn the_newest_snapshot_counts_and_older_ones_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        assert_eq!(store.latest().expect("latest"), None);
        let first = write(&store, id(10, 1), b"first state");
        assert_eq!(store.latest().expect("latest"), Some(first));
        let second = write(&store, id(20, 2), b"second, longer state");
        assert_eq!(store.latest().expect("latest"), Some(second.clone()));
        assert_eq!(second.size, 20);
        assert_eq!(second.checksum, crc32fast::hash(b"second, longer state"));
        let mut data = store.open_data(&second).expect("open data");
        assert_eq!(
            SnapshotStore::read_chunk(&mut data, 8, 6).expect("chunk"),
            b"longer"
        );
        let files = fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(
            files, 2,
            "only the newest snapshot's data and metadata are left"
        );
        // Reopened, the store finds the same snapshot.
        let store = SnapshotStore::open(dir.path()).expect("reopen");
        assert_eq!(store.latest().expect("latest"), Some(second));
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let kept = write(&store, id(5, 1), b"kept");
        let mut half = store.create("interrupted").expect("create");
        half.write_all(b"half a snap").expect("write");
        half.flush().expect("flush");
        drop(half);
        let store = SnapshotStore::open(dir.path()).expect("reopen");
        assert_eq!(store.latest().expect("latest"), Some(kept));
        let leftovers = fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().to_string_lossy().ends_with(TEMP_SUFFIX))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(leftovers, 0, "the temporary file was removed");
    }

    #[test]
    fn a_received_snapshot_must_match_its_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let expected = SnapshotMeta {
            last_included: id(7, 3),
            size: 5,
            checksum: crc32fast::hash(b"hello"),
            membership: Box::default(),
        };
        let mut damaged = store.create("recv").expect("create");
        damaged.write_all(b"hellO").expect("write");
        assert!(damaged.finish_received(&store, expected.clone()).is_err());
        assert_eq!(store.latest().expect("latest"), None);
        let mut good = store.create("recv").expect("create");
        good.write_all(b"hello").expect("write");
        assert_eq!(
            good.finish_received(&store, expected.clone()).expect("ok"),
            expected
        );
        assert_eq!(store.latest().expect("latest"), Some(expected));
    }
}
