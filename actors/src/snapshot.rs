//! Snapshots, the actors' side (§7): when to take one, writing it to the [`SnapshotStore`], and
//! receiving one from the leader in chunks. The rules decide what the log becomes; this is IO.

use raftor_core::{ConfState, InstallSnapshot, LogId, Membership, NodeId, SnapshotMeta};
use raftor_storage::{SnapshotFile, SnapshotStore, StagedSnapshot, StorageError};
use std::io::Write;
use std::sync::Arc;

use crate::state_machine::{SnapshotWriter, StateMachine};

/// Where a node keeps its snapshots, and its policy.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Where snapshots live (one directory per node).
    pub store: Arc<SnapshotStore>,
    pub policy: SnapshotPolicy,
}

impl SnapshotOptions {
    pub fn new(store: Arc<SnapshotStore>, policy: SnapshotPolicy) -> SnapshotOptions {
        SnapshotOptions { store, policy }
    }
}

/// When a node takes snapshots of its state machine and compacts its log behind them (§7), and
/// how it sends them to followers that need compacted entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Take a snapshot once this many entries were applied since the last one (0: not by count).
    pub every_entries: u64,
    /// ...or once this many payload bytes were applied since the last one, and at least twice the
    /// last snapshot's size ([`SNAPSHOT_AMORTIZATION`]) (0: not by size).
    pub every_bytes: u64,
    /// How many entries the log keeps behind the newest snapshot, so that a follower slightly
    /// behind still catches up from the log rather than with a whole snapshot.
    pub trailing_entries: u64,
    /// The size of one InstallSnapshot chunk.
    pub chunk_bytes: usize,
}

impl Default for SnapshotPolicy {
    /// A snapshot every 100,000 entries or 512 MiB of payload, 10,000 entries kept behind it,
    /// 1 MiB chunks.
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            every_entries: 100_000,
            every_bytes: 512 * 1024 * 1024,
            trailing_entries: 10_000,
            chunk_bytes: 1024 * 1024,
        }
    }
}

/// The size trigger waits, besides `every_bytes`, for at least this many times the last
/// snapshot's size of payload: a snapshot writes the whole state, so snapshots taken for size
/// then write at most half as many bytes as the log does, however large the state grows against
/// `every_bytes` (with 1 MiB values over a thousand keys, a snapshot of the whole map every
/// 512 MiB cost a fifth of the throughput and a third more p99 latency; BENCHMARKS.md, issue 23).
pub const SNAPSHOT_AMORTIZATION: u64 = 2;

impl SnapshotPolicy {
    /// Whether what was applied since the last snapshot (`entries`, `bytes` of payload) calls for
    /// a new one, the last being `last_snapshot_bytes` long (0 if none), both triggers stretched
    /// by `stagger`.
    pub fn due(
        &self,
        entries: u64,
        bytes: u64,
        last_snapshot_bytes: u64,
        stagger: Stagger,
    ) -> bool {
        let size_trigger = self
            .every_bytes
            .max(last_snapshot_bytes.saturating_mul(SNAPSHOT_AMORTIZATION));
        (self.every_entries > 0 && entries >= stagger.stretch(self.every_entries))
            || (self.every_bytes > 0 && bytes >= stagger.stretch(size_trigger))
    }
}

/// A node's place among the members, which puts its snapshots out of step with theirs.
///
/// Every node applies the same entries, so with one policy they would all reach a trigger at the
/// same index and write the whole state at the same moment: with 1 MiB values all three nodes of
/// a saturated cluster writing 680 MB at once took the p99 latency from 0.7 s to 1.5 s, while
/// thresholds stretched by a third per rank kept it at 0.6–0.75 s (BENCHMARKS.md, issue 23). The
/// node of rank `r` among `n` members waits `(n + r) / n` times as long for its first snapshot
/// after it starts (or restores one), and then keeps the plain period: the nodes' snapshots stay
/// a period's `1/n` apart (by count; by size while the state's size holds steady, each
/// period being twice the node's own last snapshot), so a quorum that is not writing one keeps
/// serving. Only the timing of snapshots changes, never what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stagger {
    /// The node's position among the sorted members (`0..members`).
    rank: u64,
    /// How many members there are (at least 1).
    members: u64,
}

impl Stagger {
    /// No stretch: the plain policy.
    pub const NONE: Stagger = Stagger {
        rank: 0,
        members: 1,
    };

    /// The place of `node` among the members of `conf` (voters of either half and learners); no
    /// stretch for a node that is not a member.
    pub fn of(node: NodeId, conf: &ConfState) -> Stagger {
        let members = conf.members();
        match members.iter().position(|member| *member == node) {
            Some(rank) => Stagger {
                rank: rank as u64,
                members: members.len() as u64,
            },
            None => Stagger::NONE,
        }
    }

    /// `threshold` stretched by `(members + rank) / members` (at most twice; saturating).
    pub fn stretch(self, threshold: u64) -> u64 {
        debug_assert!(self.rank < self.members, "a rank among the members");
        let stretched =
            u128::from(threshold) * u128::from(self.members + self.rank) / u128::from(self.members);
        u64::try_from(stretched).unwrap_or(u64::MAX)
    }
}

/// `ioprio_set` (linux/ioprio.h): the target is one thread; the idle class, whose requests the
/// disk's scheduler serves only when no other class has any waiting.
#[cfg(target_os = "linux")]
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_IDLE: libc::c_long = 3;
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_SHIFT: libc::c_long = 13;

/// The CPU priority (nice value) of the thread writing a snapshot in the background.
pub const SNAPSHOT_THREAD_NICE: i32 = 10;

/// Lower the calling thread's CPU priority to [`SNAPSHOT_THREAD_NICE`], and its disk priority to
/// the idle class: a snapshot is written from a copy of the state and nobody waits for it, so it
/// takes the CPU and the disk time the node's threads leave. Writing the whole state at full
/// priority (hundreds of megabytes, on every node at about the same time, since they apply the
/// same entries) doubled the slowest writes of a saturating load; written past the page cache
/// (`raftor_storage::direct_io`) at the disk's full speed, it held the log's synced writes up for
/// a second (BENCHMARKS.md, issue 23). At nice 10 it still gets about a tenth of a contended
/// core; the idle class is served whenever the disk has nothing else queued, and by
/// `mq-deadline` and BFQ after at most seconds even when it always has (schedulers without
/// priorities, such as `none`, ignore it). Linux only; elsewhere, and if refused, the thread keeps
/// its priorities.
pub fn yield_to_serving() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on Linux a thread id
        // names one thread for PRIO_PROCESS.
        let refused = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, SNAPSHOT_THREAD_NICE) != 0
        };
        if refused {
            tracing::debug!("cannot lower the snapshot thread's priority");
        }
        // SAFETY: as above; ioprio_set takes plain integers.
        let refused = unsafe {
            let thread = libc::syscall(libc::SYS_gettid);
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                thread,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            ) != 0
        };
        if refused {
            tracing::debug!("cannot lower the snapshot thread's disk priority");
        }
    }
}

/// Run `writer` into a new snapshot file of `store` and make it the newest, as of `last`, when
/// `membership` was the configuration in force.
pub fn write_snapshot(
    store: &SnapshotStore,
    writer: SnapshotWriter,
    last: LogId,
    membership: Membership,
) -> Result<SnapshotMeta, String> {
    let mut file = store
        .create(&format!("take-{}", last.index))
        .map_err(|e| e.to_string())?;
    writer(&mut file)
        .map_err(|e| format!("the state machine could not write its snapshot: {e}"))?;
    file.flush().map_err(|e| e.to_string())?;
    file.finish(store, last, membership)
        .map_err(|e| e.to_string())
}

/// Replace `state_machine`'s state with snapshot `meta` from `store`, streamed.
pub(crate) fn restore_from(
    store: &SnapshotStore,
    meta: &SnapshotMeta,
    state_machine: &mut dyn StateMachine,
) -> Result<(), String> {
    let file = store.open_data(meta).map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    state_machine.restore(&mut reader).map_err(|e| {
        format!(
            "cannot restore the state machine from snapshot {}: {e}",
            meta.last_included
        )
    })
}

/// A snapshot arriving from the leader, chunk by chunk, into a temporary file.
pub(crate) struct Receiving {
    pub(crate) from: NodeId,
    pub(crate) meta: SnapshotMeta,
    /// The offset of the next chunk expected.
    pub(crate) next_offset: u64,
    file: SnapshotFile,
}

/// What became of one chunk.
pub(crate) enum ChunkOutcome {
    /// Stored or skipped; ask for the chunk at this offset next.
    Next(u64),
    /// The last chunk: the whole snapshot is checked and durable, staged: it becomes the
    /// store's newest only once the rules accept it (`SnapshotStore::promote`).
    Complete(StagedSnapshot),
}

impl Receiving {
    /// Take in `chunk` from `from`. A chunk of another snapshot or sender restarts the transfer if
    /// it is the first one, else asks for the first; a chunk out of order (duplicate, stale, lost
    /// predecessor) is ignored and the expected offset asked for.
    pub(crate) fn accept(
        receiving: &mut Option<Receiving>,
        store: &SnapshotStore,
        from: NodeId,
        chunk: &InstallSnapshot,
    ) -> Result<ChunkOutcome, StorageError> {
        let same = receiving
            .as_ref()
            .is_some_and(|r| r.from == from && r.meta == chunk.meta);
        if !same {
            if chunk.offset != 0 {
                return Ok(ChunkOutcome::Next(0));
            }
            // One transfer at a time: a new one replaces (truncates) the previous temporary file.
            *receiving = None;
            *receiving = Some(Receiving {
                from,
                meta: chunk.meta.clone(),
                next_offset: 0,
                file: store.create("receive")?,
            });
        }
        let Some(current) = receiving.as_mut() else {
            return Ok(ChunkOutcome::Next(0));
        };
        if chunk.offset != current.next_offset {
            return Ok(ChunkOutcome::Next(current.next_offset));
        }
        let end = current.next_offset.saturating_add(chunk.data.len() as u64);
        if end > current.meta.size {
            // More than the snapshot holds: not from a correct leader, whose chunks end at its
            // size. Written, it would fill the disk; the transfer starts over.
            *receiving = None;
            return Err(StorageError::Corrupt(format!(
                "a chunk of snapshot {} ends at byte {end}, past its {} bytes",
                chunk.meta.last_included, chunk.meta.size
            )));
        }
        let io = |e: std::io::Error| StorageError::Io {
            path: store.dir().display().to_string(),
            source: e,
        };
        current.file.write_all(&chunk.data).map_err(io)?;
        current.next_offset += chunk.data.len() as u64;
        if !chunk.done {
            return Ok(ChunkOutcome::Next(current.next_offset));
        }
        let Some(done) = receiving.take() else {
            return Ok(ChunkOutcome::Next(0));
        };
        let staged = done.file.finish_received(store, done.meta)?;
        Ok(ChunkOutcome::Complete(staged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftor_core::{LogIndex, Term};

    fn chunk(meta: SnapshotMeta, offset: u64, data: &'static [u8], done: bool) -> InstallSnapshot {
        InstallSnapshot {
            term: Term(1),
            request_id: offset,
            meta,
            offset,
            data: Bytes::from_static(data),
            done,
        }
    }

    /// The metadata of a six-byte snapshot, "abcdef", ending at 9@1.
    fn abcdef_at_9() -> SnapshotMeta {
        SnapshotMeta {
            last_included: LogId::new(Term(1), LogIndex(9)),
            size: 6,
            checksum: crc32fast::hash(b"abcdef"),
            membership: Box::default(),
        }
    }

    fn next(outcome: ChunkOutcome) -> u64 {
        match outcome {
            ChunkOutcome::Next(offset) => offset,
            ChunkOutcome::Complete(staged) => panic!("completed early: {:?}", staged.meta),
        }
    }

    #[test]
    fn the_size_trigger_waits_for_twice_the_last_snapshot_and_the_count_trigger_does_not() {
        let policy = SnapshotPolicy {
            every_entries: 1000,
            every_bytes: 100,
            ..SnapshotPolicy::default()
        };
        let plain = Stagger::NONE;
        assert!(!policy.due(10, 99, 0, plain));
        assert!(policy.due(10, 100, 0, plain));
        // The last snapshot held 300 bytes: another one for size only after 600 more.
        assert!(!policy.due(10, 599, 300, plain));
        assert!(policy.due(10, 600, 300, plain));
        assert!(policy.due(1000, 1, 300, plain), "by count, as before");
        let by_count_only = SnapshotPolicy {
            every_bytes: 0,
            ..policy
        };
        assert!(!by_count_only.due(10, 10_000, 0, plain));
    }

    fn three_voters() -> ConfState {
        ConfState {
            voters: [NodeId(7), NodeId(3), NodeId(5)].into_iter().collect(),
            ..ConfState::default()
        }
    }

    #[test]
    fn each_member_reaches_its_first_trigger_a_third_of_a_period_after_the_one_before() {
        let policy = SnapshotPolicy {
            every_entries: 300,
            every_bytes: 3000,
            ..SnapshotPolicy::default()
        };
        let conf = three_voters();
        // Ranked by id: 3, 5, 7.
        let first_due_by_count = |node| {
            (1..=1000)
                .find(|&entries| policy.due(entries, 0, 0, Stagger::of(NodeId(node), &conf)))
                .expect("due within 1000")
        };
        assert_eq!(
            [3, 5, 7].map(first_due_by_count),
            [300, 400, 500],
            "apart by a third of the period"
        );
        let first_due_by_size = |node, last| {
            (1..=20_000)
                .find(|&bytes| policy.due(0, bytes, last, Stagger::of(NodeId(node), &conf)))
                .expect("due within 20000")
        };
        assert_eq!(
            [3, 5, 7].map(|n| first_due_by_size(n, 0)),
            [3000, 4000, 5000]
        );
        // The amortization's threshold is stretched as well: twice 6000 bytes, then by rank.
        assert_eq!(
            [3, 5, 7].map(|n| first_due_by_size(n, 6000)),
            [12_000, 16_000, 20_000]
        );
        // A node that is not (or not yet) a member keeps the plain policy.
        assert_eq!(Stagger::of(NodeId(9), &conf), Stagger::NONE);
        assert_eq!(Stagger::of(NodeId(9), &ConfState::default()), Stagger::NONE);
        // Learners and the outgoing half of a joint configuration count as members.
        let joint = ConfState {
            learners: [NodeId(1)].into_iter().collect(),
            voters_outgoing: [NodeId(4)].into_iter().collect(),
            ..three_voters()
        };
        assert_eq!(Stagger::of(NodeId(7), &joint).stretch(500), 900);
        assert_eq!(Stagger::NONE.stretch(u64::MAX), u64::MAX);
        assert_eq!(
            Stagger::of(NodeId(7), &conf).stretch(u64::MAX),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn stale_duplicate_and_foreign_chunks_are_ignored_and_a_new_transfer_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let meta = abcdef_at_9();
        let leader = NodeId(1);
        let mut receiving = None;
        // A transfer that does not start at 0 is sent back to the beginning.
        let accept = |receiving: &mut Option<Receiving>, from, c: &InstallSnapshot| {
            Receiving::accept(receiving, &store, from, c).expect("accepted")
        };
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(meta.clone(), 2, b"cd", false)
            )),
            0
        );
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(meta.clone(), 0, b"ab", false)
            )),
            2
        );
        // A duplicate of the first chunk, and one from the future, change nothing.
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(meta.clone(), 0, b"ab", false)
            )),
            2
        );
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(meta.clone(), 4, b"ef", true)
            )),
            2
        );
        // Another node's chunk in the middle of it is sent to offset 0 of its own transfer.
        assert_eq!(
            next(accept(
                &mut receiving,
                NodeId(3),
                &chunk(meta.clone(), 2, b"cd", false)
            )),
            0
        );
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(meta.clone(), 2, b"cd", false)
            )),
            4
        );
        match accept(&mut receiving, leader, &chunk(meta.clone(), 4, b"ef", true)) {
            ChunkOutcome::Complete(done) => {
                assert_eq!(done.meta, meta.clone());
                assert_eq!(store.latest().expect("latest"), None, "staged only");
                store.promote(done).expect("promote");
            }
            ChunkOutcome::Next(offset) => panic!("not complete, next {offset}"),
        }
        assert_eq!(store.latest().expect("latest"), Some(meta.clone()));
        // A damaged transfer is refused as a whole.
        let bad = SnapshotMeta {
            checksum: 1,
            ..meta.clone()
        };
        assert_eq!(
            next(accept(
                &mut receiving,
                leader,
                &chunk(bad.clone(), 0, b"abc", false)
            )),
            3
        );
        assert!(
            Receiving::accept(&mut receiving, &store, leader, &chunk(bad, 3, b"def", true))
                .is_err()
        );
        assert_eq!(
            store.latest().expect("latest"),
            Some(meta),
            "the good one stays"
        );
    }

    #[test]
    fn a_transfer_survives_its_leaders_re_election_when_the_snapshot_is_unchanged() {
        // Issue 24, review finding 3: with a large snapshot, a leader that stepped down and was
        // re-elected must not start the transfer over (a livelock); the receiver keeps what it
        // has and asks the new term's first chunk for the offset it expects.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let meta = abcdef_at_9();
        let leader = NodeId(1);
        let mut receiving = None;
        let accept = |receiving: &mut Option<Receiving>, c: &InstallSnapshot| {
            Receiving::accept(receiving, &store, leader, c).expect("accepted")
        };
        assert_eq!(
            next(accept(
                &mut receiving,
                &chunk(meta.clone(), 0, b"abcd", false)
            )),
            4
        );
        // Re-elected in term 2: it starts the same snapshot from the beginning.
        let again = InstallSnapshot {
            term: Term(2),
            ..chunk(meta.clone(), 0, b"abcd", false)
        };
        assert_eq!(
            next(accept(&mut receiving, &again)),
            4,
            "resumes where it was"
        );
        let rest = InstallSnapshot {
            term: Term(2),
            ..chunk(meta.clone(), 4, b"ef", true)
        };
        match accept(&mut receiving, &rest) {
            ChunkOutcome::Complete(staged) => assert_eq!(staged.meta, meta),
            ChunkOutcome::Next(offset) => panic!("not complete, next {offset}"),
        }
    }

    #[test]
    fn chunks_past_the_snapshots_size_are_refused_and_the_transfer_starts_over() {
        // A sender that streams chunks past the size its metadata gives would fill the disk if
        // they were written until one said `done`.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let meta = abcdef_at_9();
        let leader = NodeId(1);
        let mut receiving = None;
        let first = chunk(meta.clone(), 0, b"abcd", false);
        let outcome = Receiving::accept(&mut receiving, &store, leader, &first).expect("accepted");
        assert_eq!(next(outcome), 4);
        let past = chunk(meta.clone(), 4, b"efgh", false);
        let refused = Receiving::accept(&mut receiving, &store, leader, &past);
        assert!(
            matches!(&refused, Err(StorageError::Corrupt(reason)) if reason.contains("past its 6 bytes")),
            "{:?}",
            refused.map(next)
        );
        assert!(receiving.is_none(), "the transfer starts over");
        let again = Receiving::accept(&mut receiving, &store, leader, &first).expect("accepted");
        assert_eq!(next(again), 4);
        let rest = chunk(meta.clone(), 4, b"ef", true);
        match Receiving::accept(&mut receiving, &store, leader, &rest).expect("accepted") {
            ChunkOutcome::Complete(staged) => assert_eq!(staged.meta, meta),
            ChunkOutcome::Next(offset) => panic!("not complete, next {offset}"),
        }
    }
}
