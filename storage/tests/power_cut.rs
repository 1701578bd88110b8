//! Power cuts. A killed process loses nothing it wrote: its writes wait in the page cache, synced
//! or not, so a kill test (like the one in `wal_reuse.rs`) passes whether the store syncs or not.
//! Here the writer runs under an LD_PRELOAD library, `tests/support/power_cut_shim.c` (compiled by
//! the test with `cc`), that keeps a durable image of the store's directory: what a power cut
//! would leave of it. After the writer is killed, the test rebuilds the directory from the image
//! and opens the store there.
//!
//! What survives a power cut, in the shim's model (strict POSIX):
//! - a file's bytes and length as of its last `fsync` or `fdatasync`; later writes and truncations
//!   are lost, and `close`, `sync_file_range` or the death of the process make nothing durable;
//! - the directory's entries (creations, renames, unlinks) as of its last `fsync`; a file whose
//!   name was not made durable is lost, a durable name whose file was never synced is empty;
//! - what the directory held when the writer started.
//!
//! A sync in flight at the cut may have reached the image in part. Calls the model does not follow
//! (shared writable mappings, stdio streams, hard links, ...) abort the writer: the test fails
//! rather than miss a write.

#[path = "support/power_cut.rs"]
mod support;

use bytes::Bytes;
use raftor_core::{Entry, EntryPayload, HardState, LogIndex, LogWrite, Term};
use raftor_storage::{LogStorage, RocksStorage, StoreIdentity};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::{build_shim, rebuild, DIR_ENV, IMAGE_ENV, UNSYNCED_ENV};
use tempfile::TempDir;

/// The child stops writing, and waits to be killed, once it has acknowledged this index.
const STOP_AT_ENV: &str = "RAFTOR_POWER_CUT_STOP_AT";

fn identity() -> StoreIdentity {
    StoreIdentity {
        cluster_id: "power-cut".to_string(),
        node_id: 1,
    }
}

/// The payload stored at `index`: its length and bytes follow from the index, so a misplaced or
/// stale record cannot pass for the right one.
fn payload(index: u64) -> Bytes {
    let len = 1_000 + (index % 7) as usize * 1_000;
    let seed = index.wrapping_mul(31);
    Bytes::from(
        (0..len)
            .map(|i| (seed + i as u64) as u8)
            .collect::<Vec<_>>(),
    )
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(payload(index)),
    }
}

/// Checks that the store holds entries `1..=last` exactly as written, with no more.
fn check_log(store: &mut RocksStorage, last: u64) {
    let recovered = store.recover().expect("recover");
    assert_eq!(store.last_index().unwrap(), LogIndex(last));
    assert_eq!(
        recovered.term_boundaries.last().map(|id| id.index),
        (last > 0).then_some(LogIndex(last))
    );
    let entries = store
        .entries(LogIndex(1), LogIndex(last), usize::MAX)
        .expect("read the log");
    assert_eq!(entries.len() as u64, last);
    for (entry, index) in entries.iter().zip(1..) {
        assert_eq!(*entry, self::entry(index), "entry {index}");
    }
}

/// Opens the store in `dir` and returns the index of its last entry, after checking the log.
fn recovered_last_index(dir: &Path) -> u64 {
    let mut store = RocksStorage::open(dir, &identity()).expect("open the store");
    let last = store.last_index().unwrap().0;
    check_log(&mut store, last);
    last
}

/// A child process, killed (SIGKILL) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a round's writer is run and cut off.
struct Round {
    /// The power is cut once the writer has acknowledged at least this index.
    cut_after: u64,
    /// Whether the writer stops at `cut_after` and waits for the cut (no write in flight), or
    /// goes on writing until the cut lands.
    quiet: bool,
    /// A file name suffix whose files the writer's syncs do not reach, if any.
    unsynced: Option<&'static str>,
}

/// What a power cut left.
struct Cut {
    /// The last index the writer acknowledged (at least; it may have gone further unseen).
    acked: u64,
    /// The directory as the writer left it, page cache included: what a kill leaves.
    after_kill: PathBuf,
    /// The directory rebuilt from the durable image: what a power cut leaves.
    after_power_cut: PathBuf,
}

/// Runs a writer under the shim on the store in `dir` (taken as durable), cuts the power as
/// `round` says, and rebuilds the directory from the durable image into `work/<n>/db`.
fn power_cut(shim: &Path, dir: &Path, work: &Path, n: usize, round: &Round) -> Cut {
    let image = work.join(format!("image-{n}"));
    let stop_at = if round.quiet {
        round.cut_after
    } else {
        u64::MAX
    };
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "power_cut_child", "--ignored", "--nocapture"])
        .env("LD_PRELOAD", shim)
        .env(DIR_ENV, dir)
        .env(IMAGE_ENV, &image)
        .env(STOP_AT_ENV, stop_at.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(suffix) = round.unsynced {
        command.env(UNSYNCED_ENV, suffix);
    }
    let mut child = Killed(command.spawn().expect("start the child writer"));
    let stdout = child.0.stdout.take().unwrap();
    let mut acked = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the child's output");
        if let Some(index) = line.strip_prefix("acked ") {
            acked = index.parse().expect("an index");
            if acked >= round.cut_after {
                break;
            }
        }
    }
    drop(child);
    assert!(
        acked >= round.cut_after,
        "the child stopped at {acked}, before {}",
        round.cut_after
    );

    let after_power_cut = work.join(n.to_string()).join("db");
    rebuild(&image, &after_power_cut);
    Cut {
        acked,
        after_kill: dir.to_path_buf(),
        after_power_cut,
    }
}

/// The child of the power-cut tests: appends 4 entries at a time to the store in [`DIR_ENV`], with
/// a new hard state, printing `acked <last index>` after each write returns, until it is killed.
/// Past [`STOP_AT_ENV`] it stops writing and waits (for the kill, or for its stdin to close).
#[test]
#[ignore = "run by the power-cut tests as their child process"]
fn power_cut_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        println!("power_cut_child is run by the power-cut tests, with {DIR_ENV} set");
        return;
    };
    let stop_at: u64 = std::env::var(STOP_AT_ENV).unwrap().parse().unwrap();
    let mut store = RocksStorage::open(Path::new(&dir), &identity()).unwrap();
    store.recover().unwrap();
    let mut last = store.last_index().unwrap().0;
    while last < stop_at && last < 100_000 {
        store
            .write(&LogWrite {
                hard_state: Some(HardState {
                    current_term: Term(1),
                    voted_for: None,
                    commit_index: LogIndex(last),
                }),
                entries: (last + 1..=last + 4).map(entry).collect(),
                ..LogWrite::default()
            })
            .expect("append");
        last += 4;
        println!("acked {last}");
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// With the store as it is (every write synced), a power cut loses no acknowledged entry: the
/// directory rebuilt from the durable image holds every entry the writer acknowledged, intact.
/// Cuts land while the writer is busy (a sync may be in flight) and while it waits, over several
/// WAL files' worth of log, each round restarting from what the previous cut left.
#[test]
fn acknowledged_appends_survive_a_power_cut() {
    let work = TempDir::new().unwrap();
    let Some(shim) = build_shim(work.path()) else {
        return;
    };
    let mut dir = work.path().join("0").join("db");
    std::fs::create_dir_all(&dir).unwrap();
    let rounds = [(700, false), (2_300, true), (3_900, false), (6_100, true)];
    for (n, &(cut_after, quiet)) in rounds.iter().enumerate() {
        let round = Round {
            cut_after,
            quiet,
            unsynced: None,
        };
        let cut = power_cut(&shim, &dir, work.path(), n + 1, &round);
        let last = recovered_last_index(&cut.after_power_cut);
        println!(
            "synced, round {}: acknowledged {}, the power cut left {last}",
            n + 1,
            cut.acked
        );
        assert!(
            last >= cut.acked,
            "acknowledged up to {}, the power cut left {last}",
            cut.acked
        );
        dir = cut.after_power_cut;
    }
}

/// The harness sees a missing sync. The writer runs as before, but its WAL files' `fsync` and
/// `fdatasync` do nothing (as if the store wrote with sync off): after a kill every acknowledged
/// entry is still there (a kill test would pass), after a power cut the unsynced tail is lost.
#[test]
fn a_power_cut_loses_acknowledged_appends_whose_wal_was_not_synced() {
    let work = TempDir::new().unwrap();
    let Some(shim) = build_shim(work.path()) else {
        return;
    };
    let mut dir = work.path().join("0").join("db");
    std::fs::create_dir_all(&dir).unwrap();
    let mut start = 0;
    for (n, cut_after) in [2_500, 5_000].into_iter().enumerate() {
        let round = Round {
            cut_after,
            quiet: true,
            unsynced: Some(".log"),
        };
        let cut = power_cut(&shim, &dir, work.path(), n + 1, &round);
        let last = recovered_last_index(&cut.after_power_cut);
        let after_kill = recovered_last_index(&cut.after_kill);
        println!(
            "WAL not synced, round {}: acknowledged {}, a kill left {after_kill}, \
             the power cut left {last}",
            n + 1,
            cut.acked
        );
        assert!(
            after_kill >= cut.acked,
            "acknowledged up to {}, a kill left {after_kill}",
            cut.acked
        );
        assert!(
            last < cut.acked,
            "acknowledged up to {} without syncing the WAL, yet the power cut left {last}: \
             the harness does not see a missing sync",
            cut.acked
        );
        // What was flushed to table files (synced) survives: the image is not just empty.
        assert!(
            last > start,
            "the power cut left {last}, no more than the round started with ({start})"
        );
        start = last;
        dir = cut.after_power_cut;
    }
}
