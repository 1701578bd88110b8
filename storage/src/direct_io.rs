//! Writing large files past the page cache (Linux `O_DIRECT`), where the filesystem allows it.
//!
//! A snapshot (hundreds of megabytes) and RocksDB's table files are written once and seldom read
//! back soon. Written through the page cache, every page is first allocated to the cache and
//! copied into, then written back: under a load of 1 MiB values, copying into newly allocated
//! cache pages was half of all CPU while the nodes wrote their snapshots and RocksDB flushed
//! (`copy_folio_from_iter_atomic`; BENCHMARKS.md, issue 23). Written directly, the disk reads
//! the data from one reused, block-aligned buffer.
//!
//! Not every filesystem takes direct writes (tmpfs before Linux 6.6, some FUSE ones): a store
//! probes its directory once ([`direct_writes_supported`]) and writes through the page cache
//! where the probe fails.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Direct writes are made in whole blocks of this size, from a buffer aligned to it, at offsets
/// that are multiples of it: 4 KiB, a multiple of every common disk's logical block size.
pub const BLOCK_BYTES: usize = 4096;

/// The buffer a [`BlockWriter`] fills before each write: each direct write waits for the disk,
/// so it is made in large pieces.
const BUFFER_BYTES: usize = 4 << 20;

/// A file written through the page cache is synced every this many bytes as it is written
/// (RocksDB's `bytes_per_sync`): written whole and synced at the end, a snapshot of hundreds of
/// megabytes left that much for the disk to write back at once, and the log's syncs, on the same
/// disk, waited behind it. A direct writer leaves nothing to write back.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// The name of the file [`direct_writes_supported`] writes and removes.
const PROBE_NAME: &str = ".direct-io-probe";

#[cfg(target_os = "linux")]
fn with_direct(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_DIRECT)
}

/// Whether files in directory `dir` can be written past the page cache: a probe file is opened
/// there with `O_DIRECT`, one aligned block written to it, and removed. Always false off Linux.
pub fn direct_writes_supported(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        let path = dir.join(PROBE_NAME);
        let written = with_direct(OpenOptions::new().write(true).create(true).truncate(true))
            .open(&path)
            .and_then(|mut file| {
                let mut block = AlignedBuffer::new(BLOCK_BYTES);
                block.filled = BLOCK_BYTES;
                file.write_all(block.filled())
            });
        let _ = std::fs::remove_file(&path);
        if let Err(error) = &written {
            tracing::debug!(dir = %dir.display(), %error, "direct writes not supported here: writing through the page cache");
        }
        written.is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (dir, PROBE_NAME);
        false
    }
}

/// A buffer whose usable part starts at a [`BLOCK_BYTES`] boundary (a `Vec` with room to slide
/// the start forward: no unsafe allocation).
struct AlignedBuffer {
    bytes: Vec<u8>,
    /// Where the aligned part starts in `bytes`.
    start: usize,
    capacity: usize,
    /// Bytes of the aligned part in use; at most `capacity`.
    filled: usize,
}

impl AlignedBuffer {
    fn new(capacity: usize) -> AlignedBuffer {
        let bytes = vec![0u8; capacity + BLOCK_BYTES];
        let start = bytes.as_ptr().align_offset(BLOCK_BYTES);
        debug_assert!(start < BLOCK_BYTES);
        AlignedBuffer {
            bytes,
            start,
            capacity,
            filled: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.filled]
    }

    /// Copies what fits of `data` in; how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.filled);
        let at = self.start + self.filled;
        self.bytes[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        n
    }

    /// Drops the first `n` filled bytes, moving the rest to the start.
    fn consume(&mut self, n: usize) {
        let at = self.start;
        self.bytes.copy_within(at + n..at + self.filled, at);
        self.filled -= n;
    }

    /// Pads the filled part with zeros to a whole number of blocks.
    fn pad_to_block(&mut self) {
        let padded = self.filled.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let at = self.start;
        self.bytes[at + self.filled..at + padded].fill(0);
        self.filled = padded;
    }
}

/// A file written from start to end through a block-aligned buffer: past the page cache when
/// direct, through it otherwise (synced every [`SYNC_EVERY_BYTES`] then). Whatever the mode,
/// [`BlockWriter::finish`] leaves the file exactly as long as what was written, and synced.
pub struct BlockWriter {
    file: File,
    buffer: AlignedBuffer,
    direct: bool,
    /// Bytes handed to [`Write::write`] so far (what the file holds once finished).
    len: u64,
    /// Bytes written out through the page cache since the file was last synced; below
    /// [`SYNC_EVERY_BYTES`] after each write out. Always 0 when direct.
    unsynced: u64,
}

impl BlockWriter {
    /// Creates (or truncates) `path`, to be written directly if `direct`.
    pub fn create(path: &Path, direct: bool) -> io::Result<BlockWriter> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(target_os = "linux")]
        if direct {
            with_direct(&mut options);
        }
        Ok(BlockWriter {
            file: options.open(path)?,
            buffer: AlignedBuffer::new(BUFFER_BYTES),
            direct: direct && cfg!(target_os = "linux"),
            len: 0,
            unsynced: 0,
        })
    }

    /// Whether writes bypass the page cache.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Writes out the buffer's whole blocks (all of it when not direct), keeping the rest; through
    /// the page cache, syncs once [`SYNC_EVERY_BYTES`] are unsynced.
    fn write_out(&mut self) -> io::Result<()> {
        let whole = if self.direct {
            self.buffer.filled / BLOCK_BYTES * BLOCK_BYTES
        } else {
            self.buffer.filled
        };
        if whole > 0 {
            self.file.write_all(&self.buffer.filled()[..whole])?;
            self.buffer.consume(whole);
        }
        if !self.direct {
            self.unsynced += whole as u64;
            if self.unsynced >= SYNC_EVERY_BYTES {
                self.file.sync_data()?;
                self.unsynced = 0;
            }
        }
        Ok(())
    }

    /// Writes what is left (a direct file's last partial block padded, then cut back to the
    /// length written) and syncs the file: data and length are durable when this returns.
    pub fn finish(mut self) -> io::Result<File> {
        if self.direct && !self.buffer.filled.is_multiple_of(BLOCK_BYTES) {
            self.buffer.pad_to_block();
        }
        self.write_out()?;
        if self.direct {
            self.file.set_len(self.len)?;
        }
        self.file.sync_all()?;
        Ok(self.file)
    }

    /// Writes out what it can (see [`Write::flush`]) and syncs what was written so far.
    pub fn sync_written(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.file.sync_data()?;
        self.unsynced = 0;
        Ok(())
    }
}

impl Write for BlockWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buffer.filled == self.buffer.capacity {
            self.write_out()?;
        }
        let n = self.buffer.fill(data);
        self.len += n as u64;
        Ok(n)
    }

    /// Writes out the buffer but, when direct, a last partial block, which waits for more data or
    /// for [`BlockWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn what_is_written_is_read_back_exactly_in_either_mode() {
        let dir = tempfile::tempdir().unwrap();
        let direct = direct_writes_supported(dir.path());
        let lengths = [
            0,
            1,
            BLOCK_BYTES - 1,
            BLOCK_BYTES,
            BLOCK_BYTES + 1,
            BUFFER_BYTES,
            BUFFER_BYTES + 3,
            2 * BUFFER_BYTES + BLOCK_BYTES + 17,
        ];
        for mode in [direct, false] {
            for len in lengths {
                let path = dir.path().join(format!("f-{mode}-{len}"));
                let data = pattern(len);
                let mut writer = BlockWriter::create(&path, mode).unwrap();
                assert_eq!(writer.direct(), mode);
                // Pieces of awkward sizes, a flush in the middle, as a serializer would.
                for (i, piece) in data.chunks(10_007).enumerate() {
                    writer.write_all(piece).unwrap();
                    if i == 3 {
                        writer.flush().unwrap();
                    }
                }
                writer.finish().unwrap();
                let back = std::fs::read(&path).unwrap();
                assert_eq!(back.len(), len, "direct {mode}, {len} bytes");
                assert!(back == data, "direct {mode}, {len} bytes: contents differ");
            }
        }
    }

    #[test]
    fn syncing_midway_keeps_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let direct = direct_writes_supported(dir.path());
        let path = dir.path().join("f");
        let data = pattern(3 * BLOCK_BYTES + 5);
        let mut writer = BlockWriter::create(&path, direct).unwrap();
        writer.write_all(&data[..BLOCK_BYTES + 9]).unwrap();
        writer.sync_written().unwrap();
        writer.write_all(&data[BLOCK_BYTES + 9..]).unwrap();
        writer.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn the_probe_leaves_nothing_and_fails_where_nothing_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let _ = direct_writes_supported(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!direct_writes_supported(&dir.path().join("missing")));
    }
}
