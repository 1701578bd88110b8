//! `--watch-disk`: while the load runs, a thread syncs a small overwrite of a file on the probe
//! directory's disk every [`INTERVAL`] and records how long each sync took, so that a latency
//! tail can be told apart from the disk. On a shared virtual disk a lone sync sometimes stalls
//! for hundreds of milliseconds with nothing else running (BENCHMARKS.md); a benchmark round that
//! has a tail and a stall here at the same moment measured the disk, not the cluster. A hundred
//! syncs a second are too few to disturb the load.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pause between two syncs.
pub(super) const INTERVAL: Duration = Duration::from_millis(10);
/// A sync slower than this is a stall, listed with the time it ended.
pub(super) const STALL: Duration = Duration::from_millis(20);
/// The most stalls listed one by one (all are counted).
const MAX_LISTED: usize = 100;
/// The file is this many 4 KiB blocks, written once before the first timed sync: every timed sync
/// overwrites a block the file already has, as a reused write-ahead log does (no allocation, no
/// size change for `fdatasync` to record).
const BLOCKS: u64 = 64;
const BLOCK: u64 = 4096;
/// What each timed sync writes.
const RECORD: [u8; 400] = [b'r'; 400];

/// One stall: when it ended, in seconds since the watch started, and how long the sync took.
#[derive(Debug, Serialize)]
pub(super) struct Stall {
    pub at_s: f64,
    pub ms: f64,
}

/// What the disk did while the load ran.
#[derive(Debug, Serialize)]
pub(super) struct DiskDuringLoad {
    /// Where the file was synced.
    pub dir: String,
    pub interval_ms: f64,
    pub syncs: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_ms: f64,
    /// A sync slower than this counts as a stall.
    pub stall_threshold_ms: f64,
    /// Every stall, counted.
    pub stalls_total: u64,
    /// The first stalls, at most 100.
    pub stalls: Vec<Stall>,
    /// Why the watch stopped before the load ended (a sync failed), if it did.
    pub error: Option<String>,
}

impl DiskDuringLoad {
    /// One line for the human-readable report.
    pub(super) fn describe(&self) -> String {
        let mut line = format!(
            "  disk        {} syncs every {:.0} ms during the load: p50 {:.0} µs, p99 {:.0} µs, max {:.1} ms; {} over {:.0} ms",
            self.syncs,
            self.interval_ms,
            self.p50_us,
            self.p99_us,
            self.max_ms,
            self.stalls_total,
            self.stall_threshold_ms,
        );
        for (n, stall) in self.stalls.iter().take(10).enumerate() {
            line.push_str(if n == 0 { ": " } else { ", " });
            line.push_str(&format!("{:.0} ms at {:.1} s", stall.ms, stall.at_s));
        }
        if self.stalls_total > 10 {
            line.push_str(", ...");
        }
        if let Some(error) = &self.error {
            line.push_str(&format!("; the watch stopped early: {error}"));
        }
        line
    }
}

/// The watching thread, until [`DiskWatch::finish`].
pub(super) struct DiskWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<DiskDuringLoad>,
}

impl DiskWatch {
    /// Create the file in `dir` (an error here, before the load, if that cannot be done) and start
    /// syncing it every `interval`, counting syncs slower than `stall` as stalls.
    pub(super) fn start(
        dir: &Path,
        interval: Duration,
        stall: Duration,
    ) -> Result<DiskWatch, String> {
        let failed = |e: std::io::Error| format!("cannot watch the disk in {}: {e}", dir.display());
        let file = tempfile::Builder::new()
            .prefix("raftor-disk-watch-")
            .tempfile_in(dir)
            .map_err(failed)?;
        file.as_file()
            .write_all_at(&vec![0; (BLOCKS * BLOCK) as usize], 0)
            .and_then(|()| file.as_file().sync_all())
            .map_err(failed)?;
        let stop = Arc::new(AtomicBool::new(false));
        let watching = stop.clone();
        let dir = dir.display().to_string();
        let thread = std::thread::Builder::new()
            .name("disk-watch".into())
            .spawn(move || {
                // The file is removed when `file` drops, at the end of the thread.
                let watched = watch(file.as_file(), &watching, interval, stall);
                let us = |quantile: f64| watched.histogram.value_at_quantile(quantile) as f64;
                DiskDuringLoad {
                    dir,
                    interval_ms: interval.as_secs_f64() * 1000.0,
                    syncs: watched.histogram.len(),
                    p50_us: us(0.5),
                    p99_us: us(0.99),
                    max_ms: watched.histogram.max() as f64 / 1000.0,
                    stall_threshold_ms: stall.as_secs_f64() * 1000.0,
                    stalls_total: watched.stalls_total,
                    stalls: watched.stalls,
                    error: watched.error,
                }
            })
            .map_err(failed)?;
        Ok(DiskWatch { stop, thread })
    }

    /// Stop watching (after the sync in progress, if any) and say what the disk did.
    pub(super) fn finish(self) -> Result<DiskDuringLoad, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the disk watch's thread panicked".to_string())
    }
}

/// Sync times in microseconds, from 1 µs to an hour (a longer one is recorded as an hour).
fn sync_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// What [`watch`] saw.
struct Watched {
    histogram: Histogram<u64>,
    stalls_total: u64,
    stalls: Vec<Stall>,
    error: Option<String>,
}

/// Sync `file` until `stop` (at least once), or until a sync fails: what was timed until then
/// is kept with the error, so the benchmark's own figures are not lost to the watch.
fn watch(file: &File, stop: &AtomicBool, interval: Duration, stall: Duration) -> Watched {
    let mut watched = Watched {
        histogram: sync_histogram(),
        stalls_total: 0,
        stalls: Vec::new(),
        error: None,
    };
    let started = Instant::now();
    let mut block = 0;
    loop {
        let began = Instant::now();
        if let Err(error) = file
            .write_all_at(&RECORD, block * BLOCK)
            .and_then(|()| file.sync_data())
        {
            watched.error = Some(format!("a sync failed: {error}"));
            return watched;
        }
        let took = began.elapsed();
        watched
            .histogram
            .saturating_record(took.as_micros().try_into().unwrap_or(u64::MAX));
        if took > stall {
            watched.stalls_total += 1;
            if watched.stalls.len() < MAX_LISTED {
                watched.stalls.push(Stall {
                    at_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    ms: (took.as_secs_f64() * 10_000.0).round() / 10.0,
                });
            }
        }
        block = (block + 1) % BLOCKS;
        if stop.load(Ordering::Relaxed) {
            return watched;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_times_syncs_and_lists_the_slow_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Every sync takes longer than nothing: each is a stall, listed up to the bound.
        let watch = DiskWatch::start(dir.path(), Duration::ZERO, Duration::ZERO).expect("started");
        std::thread::sleep(Duration::from_millis(200));
        let disk = watch.finish().expect("finished");
        assert!(disk.syncs >= 1, "{disk:?}");
        assert_eq!(disk.stalls_total, disk.syncs);
        assert_eq!(disk.stalls.len() as u64, disk.syncs.min(MAX_LISTED as u64));
        assert!(
            disk.p50_us <= disk.p99_us && disk.p99_us <= disk.max_ms * 1000.0 + 1.0,
            "{disk:?}"
        );
        assert!(
            disk.describe().contains("over 0 ms: "),
            "{}",
            disk.describe()
        );
        assert!(
            std::fs::read_dir(dir.path())
                .expect("listed")
                .next()
                .is_none(),
            "the watch's file is removed"
        );
    }

    #[test]
    fn a_long_sync_is_recorded_whole() {
        let mut histogram = sync_histogram();
        histogram.saturating_record(200);
        histogram.saturating_record(110_000);
        histogram.saturating_record(u64::MAX);
        assert!(histogram.max() >= 3_600_000_000, "{}", histogram.max());
        assert!(histogram.value_at_quantile(0.6) >= 110_000);
        assert!(histogram.value_at_quantile(0.3) < 1_000);
    }

    #[test]
    fn a_failed_sync_ends_the_watch_and_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read-only");
        std::fs::write(&path, [0; 4096]).expect("written");
        let read_only = File::open(&path).expect("opened");
        let watched = watch(&read_only, &AtomicBool::new(false), INTERVAL, STALL);
        assert_eq!(watched.histogram.len(), 0);
        let error = watched.error.expect("the failed write is reported");
        assert!(error.starts_with("a sync failed: "), "{error}");
    }

    #[test]
    fn a_quick_disk_has_no_stalls_to_list_and_a_missing_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watch =
            DiskWatch::start(dir.path(), INTERVAL, Duration::from_secs(3600)).expect("started");
        let disk = watch.finish().expect("finished");
        assert!(
            disk.syncs >= 1,
            "at least one sync, the stop seen after it: {disk:?}"
        );
        assert_eq!((disk.stalls_total, disk.stalls.len()), (0, 0));
        assert!(disk.error.is_none(), "{disk:?}");
        assert!(
            disk.describe().ends_with("0 over 3600000 ms"),
            "{}",
            disk.describe()
        );
        let missing = DiskWatch::start(&dir.path().join("absent"), INTERVAL, STALL);
        assert!(missing
            .err()
            .expect("refused")
            .contains("cannot watch the disk"));
    }
}
