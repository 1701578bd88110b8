//! Log store cost: appending a batch of entries with `LogStorage::write`, which returns only once
//! the batch is durable.
//!
//! A follower acknowledges an AppendEntries, and a leader counts its own copy toward a commit, only
//! after this write returns (Figure 2: "respond after updating stable storage"), so its latency is
//! on the critical path of every commit, and how it scales with the batch size says how much
//! batching proposals buys.
//!
//! Measured, for batches of 1, 64 and 1,024 entries with 256-byte command payloads (throughput in
//! entries per second), each write appending after the previous one with no hard state:
//! - `rocksdb`: [`RocksStorage`] in a fresh temporary directory (one synced `WriteBatch` per write,
//!   so mostly the WAL `fsync` of the disk under the directory). The log keeps growing across the
//!   run, as a real log does. Set `RAFTOR_BENCH_DIR` to put the store on another disk than the
//!   system's temporary directory.
//! - `memory`: [`MemStorage`], the in-memory store of tests and simulation, for contrast: the cost
//!   of everything but the disk. It is started afresh every `MEM_CHUNK_ENTRIES` entries (untimed),
//!   so a fast run does not fill the machine's memory.
//!
//! Building the entries is never timed. Runs are kept short (10 samples, 3 s each) so the whole
//! file takes about a minute; expect some noise on the disk figures.
//!
//! Run: `cargo bench --bench log_store` (add `-- --quick` for a shorter run).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use raftor_core::{Entry, EntryPayload, LogIndex, LogWrite, Term};
use raftor_storage::{LogStorage, MemStorage, RocksStorage, StoreIdentity};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Entries per write: a single proposal, a typical batch, a large catch-up.
const BATCH_SIZES: [u64; 3] = [1, 64, 1_024];
/// The size of each entry's command.
const PAYLOAD_BYTES: usize = 256;
/// The in-memory store is replaced after this many entries, to bound the memory a run uses.
const MEM_CHUNK_ENTRIES: u64 = 65_536;

/// A write appending `count` entries of term 1 at indexes `first..first + count`.
fn append(first: u64, count: u64, payload: &Bytes) -> LogWrite {
    LogWrite {
        hard_state: None,
        truncate_from: None,
        compact_to: None,
        standing: None,
        entries: (first..first + count)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Command(payload.clone()),
            })
            .collect(),
    }
}

fn rocksdb(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xa5; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("log_store/rocksdb");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for entries in BATCH_SIZES {
        let dir = match std::env::var_os("RAFTOR_BENCH_DIR") {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("temporary directory");
        let identity = StoreIdentity {
            cluster_id: "bench".into(),
            node_id: 1,
        };
        let mut store = RocksStorage::open(dir.path(), &identity).expect("open the store");
        let mut next_index = 1;
        group.throughput(Throughput::Elements(entries));
        group.bench_function(BenchmarkId::new("append_sync", entries), |b| {
            b.iter_batched(
                || {
                    let write = append(next_index, entries, &payload);
                    next_index += entries;
                    write
                },
                |write| store.write(black_box(&write)).expect("write"),
                // A synced write takes far longer than reading the clock: time each one alone.
                BatchSize::PerIteration,
            )
        });
        drop(store);
    }
    group.finish();
}

fn memory(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xa5; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("log_store/memory");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for entries in BATCH_SIZES {
        // One chunk of consecutive writes from index 1, replayed into a fresh store each time.
        let chunk: Vec<LogWrite> = (0..(MEM_CHUNK_ENTRIES / entries).max(1))
            .map(|i| append(1 + i * entries, entries, &payload))
            .collect();
        group.throughput(Throughput::Elements(entries));
        group.bench_function(BenchmarkId::new("append", entries), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let count = (iters - done).min(chunk.len() as u64) as usize;
                    let mut store = MemStorage::new();
                    let start = Instant::now();
                    for write in &chunk[..count] {
                        store.write(black_box(write)).expect("write");
                    }
                    elapsed += start.elapsed();
                    drop(store);
                    done += count as u64;
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rocksdb, memory);
criterion_main!(benches);
