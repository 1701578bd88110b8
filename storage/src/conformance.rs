//! A conformance suite for [`LogStorage`]: the behaviour every store must have for raftor to be
//! safe on top of it. Run it from a test of your own store:
//!
//! ```
//! use raftor_storage::{conformance, MemStorage};
//!
//! struct MemHarness;
//!
//! impl conformance::Harness for MemHarness {
//!     type Store = MemStorage;
//!     fn fresh(&mut self) -> MemStorage {
//!         MemStorage::new()
//!     }
//!     fn reopen(&mut self, store: MemStorage) -> MemStorage {
//!         store.clone() // clones share their data, like a directory on disk
//!     }
//! }
//!
//! conformance::run_all(&mut MemHarness);
//! ```
//!
//! Every check panics with an explanatory message when the store misbehaves: this is test code.

use crate::{LogStorage, StorageError};
use bytes::Bytes;
use raftor_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogWrite, NodeId, Standing, Term,
};

/// How the suite gets stores to test.
pub trait Harness {
    /// The store under test.
    type Store: LogStorage;

    /// A new, empty store (for a store on disk: in a new directory).
    fn fresh(&mut self) -> Self::Store;

    /// Drops `store` and opens the same data again, as a restarted node would.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// Runs every check of the suite, each on fresh stores.
pub fn run_all<H: Harness>(harness: &mut H) {
    empty_store(harness);
    append_and_read_back(harness);
    hard_state_round_trip(harness);
    truncate_conflicting_suffix(harness);
    combined_write_survives_reopen(harness);
    term_boundaries_across_terms(harness);
    invalid_writes_change_nothing(harness);
    truncate_everything(harness);
    compaction(harness);
    install_snapshot_over_the_log(harness);
    configuration_entries(harness);
    standing_round_trip(harness);
}

/// A new store is rejoining (`raftor_core::Standing`); a written standing survives a reopen,
/// and a write without one leaves it as it was, also a new store's first hard state.
pub fn standing_round_trip<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    assert_eq!(
        store.recover().expect("recover").standing,
        Standing::Rejoining,
        "a new store has made no promise it could have lost track of"
    );
    let floor = Standing::CatchingUp {
        floor: Term(4),
        floor_log: id(3, 4),
        floor_leader_commit: Some(LogIndex(2)),
    };
    write_ok(
        &mut store,
        &LogWrite {
            standing: Some(floor),
            ..LogWrite::default()
        },
    );
    let mut store = harness.reopen(store);
    assert_eq!(store.recover().expect("recover").standing, floor);
    write_ok(&mut store, &append(vec![entry(1, 4, "a")]));
    write_ok(
        &mut store,
        &LogWrite {
            standing: Some(Standing::Member),
            ..LogWrite::default()
        },
    );
    let mut store = harness.reopen(store);
    assert_eq!(store.recover().expect("recover").standing, Standing::Member);

    // A rejoining node adopts the terms it hears of: the rules write its hard state, and no
    // standing while it stays the same.
    let mut store = harness.fresh();
    write_ok(
        &mut store,
        &LogWrite {
            hard_state: Some(HardState {
                current_term: Term(7),
                voted_for: None,
                commit_index: LogIndex(0),
            }),
            ..LogWrite::default()
        },
    );
    let mut store = harness.reopen(store);
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.hard_state.current_term, Term(7));
    assert_eq!(
        recovered.standing,
        Standing::Rejoining,
        "a new store that wrote only a hard state, reopened, must still be rejoining: it would \
         otherwise vote with the promises it lost"
    );
}

/// An entry with a command payload, `payload` being its bytes.
fn entry(index: u64, term: u64, payload: &str) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::copy_from_slice(payload.as_bytes())),
    }
}

fn id(index: u64, term: u64) -> LogId {
    LogId::new(Term(term), LogIndex(index))
}

fn append(entries: Vec<Entry>) -> LogWrite {
    LogWrite {
        entries,
        ..LogWrite::default()
    }
}

fn write_ok<S: LogStorage>(store: &mut S, write: &LogWrite) {
    if let Err(e) = store.write(write) {
        panic!("write {write:?} failed: {e}");
    }
}

fn all_entries<S: LogStorage>(store: &S) -> Vec<Entry> {
    store
        .entries(LogIndex(1), LogIndex(u64::MAX), usize::MAX)
        .unwrap_or_else(|e| panic!("reading the whole log failed: {e}"))
}

fn last_index<S: LogStorage>(store: &S) -> u64 {
    store
        .last_index()
        .unwrap_or_else(|e| panic!("last_index() failed: {e}"))
        .0
}

fn term_at<S: LogStorage>(store: &S, index: u64) -> Option<u64> {
    store
        .term(LogIndex(index))
        .unwrap_or_else(|e| panic!("term({index}) failed: {e}"))
        .map(|t| t.0)
}

/// Checks that the whole log, last index, terms and recovered state are exactly `expected`
/// (entries from index 1) and `hard_state`; `when` names the moment for the failure message.
fn assert_state<S: LogStorage>(
    store: &mut S,
    expected: &[Entry],
    hard_state: HardState,
    when: &str,
) {
    assert_eq!(all_entries(store), expected, "log {when}");
    assert_eq!(
        last_index(store),
        expected.len() as u64,
        "last_index() {when}"
    );
    for e in expected {
        assert_eq!(
            term_at(store, e.index.0),
            Some(e.term.0),
            "term({}) {when}",
            e.index
        );
    }
    assert_eq!(
        term_at(store, expected.len() as u64 + 1),
        None,
        "term() past the end {when}"
    );
    let recovered = store
        .recover()
        .unwrap_or_else(|e| panic!("recover() {when} failed: {e}"));
    assert_eq!(
        recovered.hard_state, hard_state,
        "recovered hard state {when}"
    );
    assert_eq!(
        recovered.term_boundaries,
        crate::term_boundaries(expected.iter().map(Entry::log_id)),
        "recovered term boundaries {when}"
    );
}

/// An empty store has no entries, the default hard state, and term 0 at index 0.
pub fn empty_store<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    for when in ["in a fresh store", "after reopening an empty store"] {
        let recovered = store
            .recover()
            .unwrap_or_else(|e| panic!("recover() {when} failed: {e}"));
        assert_eq!(
            recovered.hard_state,
            HardState::default(),
            "hard state {when}"
        );
        assert!(
            recovered.term_boundaries.is_empty(),
            "term boundaries {when} should be empty, got {:?}",
            recovered.term_boundaries
        );
        assert_eq!(last_index(&store), 0, "last_index() {when}");
        assert_eq!(term_at(&store, 0), Some(0), "term(0) {when}");
        assert_eq!(term_at(&store, 1), None, "term(1) {when}");
        assert!(
            all_entries(&store).is_empty(),
            "entries() {when} should be empty"
        );
        store = harness.reopen(store);
    }
}

/// Appended entries read back by range, `max_bytes` limits a read (but never below one entry), and
/// reads past the end return fewer entries rather than an error.
pub fn append_and_read_back<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    // Payloads of 10 bytes each, plus a blank entry (0 bytes) at index 5.
    let mut log: Vec<Entry> = (1..=4)
        .map(|i| entry(i, 1, &format!("command-{i:02}")))
        .collect();
    log.push(Entry {
        term: Term(2),
        index: LogIndex(5),
        payload: EntryPayload::Blank,
    });
    write_ok(&mut store, &append(log[..2].to_vec()));
    write_ok(&mut store, &append(log[2..].to_vec()));

    for when in ["after appending", "after reopening"] {
        assert_state(&mut store, &log, HardState::default(), when);
        let read = |from: u64, to: u64, max_bytes: usize| {
            store
                .entries(LogIndex(from), LogIndex(to), max_bytes)
                .unwrap_or_else(|e| panic!("entries({from}, {to}, {max_bytes}) {when} failed: {e}"))
        };
        assert_eq!(read(2, 4, usize::MAX), log[1..4], "entries(2, 4) {when}");
        assert_eq!(read(3, 3, usize::MAX), log[2..3], "entries(3, 3) {when}");
        assert_eq!(
            read(1, 5, 25),
            log[..2],
            "entries(1, 5) with max_bytes 25 {when}"
        );
        assert_eq!(
            read(1, 5, 30),
            log[..3],
            "entries(1, 5) with max_bytes 30 {when}"
        );
        assert_eq!(
            read(2, 5, 0),
            log[1..2],
            "entries(2, 5) with max_bytes 0 {when} must still return one entry"
        );
        assert_eq!(
            read(4, 5, 10),
            log[3..5],
            "entries(4, 5) with max_bytes 10 {when}: the blank entry adds no bytes"
        );
        assert_eq!(read(4, 100, usize::MAX), log[3..], "entries(4, 100) {when}");
        assert!(
            read(6, 100, usize::MAX).is_empty(),
            "entries(6, 100) {when}"
        );
        assert!(read(4, 3, usize::MAX).is_empty(), "entries(4, 3) {when}");
        store = harness.reopen(store);
    }
}

/// The hard state reads back as written, survives a reopen, and is replaced by later writes.
pub fn hard_state_round_trip<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    let first = HardState {
        current_term: Term(3),
        voted_for: Some(NodeId(2)),
        commit_index: LogIndex(0),
    };
    write_ok(
        &mut store,
        &LogWrite {
            hard_state: Some(first),
            ..LogWrite::default()
        },
    );
    assert_state(&mut store, &[], first, "after writing a hard state");
    store = harness.reopen(store);
    assert_state(&mut store, &[], first, "after reopening");

    let second = HardState {
        current_term: Term(4),
        voted_for: None,
        commit_index: LogIndex(0),
    };
    write_ok(
        &mut store,
        &LogWrite {
            hard_state: Some(second),
            ..LogWrite::default()
        },
    );
    assert_state(&mut store, &[], second, "after replacing the hard state");
    // A write without a hard state leaves it alone.
    let log = vec![entry(1, 4, "a")];
    write_ok(&mut store, &append(log.clone()));
    store = harness.reopen(store);
    assert_state(&mut store, &log, second, "after an append and a reopen");
}

/// Raft's conflict resolution (§5.3): a follower's log `[1:1:a][2:1:b][3:1:x][4:1:y]` truncated from
/// 3 and appended `[3:2:c][4:2:d]` reads back exactly `[1:1:a][2:1:b][3:2:c][4:2:d]`.
pub fn truncate_conflicting_suffix<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    write_ok(
        &mut store,
        &append(vec![
            entry(1, 1, "a"),
            entry(2, 1, "b"),
            entry(3, 1, "x"),
            entry(4, 1, "y"),
        ]),
    );
    write_ok(
        &mut store,
        &LogWrite {
            truncate_from: Some(LogIndex(3)),
            entries: vec![entry(3, 2, "c"), entry(4, 2, "d")],
            ..LogWrite::default()
        },
    );
    let expected = vec![
        entry(1, 1, "a"),
        entry(2, 1, "b"),
        entry(3, 2, "c"),
        entry(4, 2, "d"),
    ];
    assert_state(
        &mut store,
        &expected,
        HardState::default(),
        "after truncating",
    );
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &expected,
        HardState::default(),
        "after reopening",
    );

    // Truncating without appending shortens the log; the next append follows the new end.
    write_ok(
        &mut store,
        &LogWrite {
            truncate_from: Some(LogIndex(2)),
            ..LogWrite::default()
        },
    );
    assert_state(
        &mut store,
        &expected[..1],
        HardState::default(),
        "after truncating from 2",
    );
    let expected = vec![entry(1, 1, "a"), entry(2, 3, "e")];
    write_ok(&mut store, &append(vec![entry(2, 3, "e")]));
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &expected,
        HardState::default(),
        "after truncating, appending and reopening",
    );
}

/// One write carrying a hard state, a truncation and entries is all there after a reopen.
pub fn combined_write_survives_reopen<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    write_ok(
        &mut store,
        &append(vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]),
    );
    let hard_state = HardState {
        current_term: Term(2),
        voted_for: Some(NodeId(7)),
        commit_index: LogIndex(1),
    };
    write_ok(
        &mut store,
        &LogWrite {
            hard_state: Some(hard_state),
            truncate_from: Some(LogIndex(2)),
            compact_to: None,
            entries: vec![entry(2, 2, "d"), entry(3, 2, "e"), entry(4, 2, "f")],
            standing: None,
        },
    );
    let expected = vec![
        entry(1, 1, "a"),
        entry(2, 2, "d"),
        entry(3, 2, "e"),
        entry(4, 2, "f"),
    ];
    assert_state(&mut store, &expected, hard_state, "after a combined write");
    store = harness.reopen(store);
    assert_state(&mut store, &expected, hard_state, "after reopening");
}

/// `recover()` reports the first entry of each run of equal terms, then the last entry: terms
/// 1,1,2,2,2,5 give `[1@1, 3@2, 6@5]`, before and after a reopen.
pub fn term_boundaries_across_terms<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    let terms = [1, 1, 2, 2, 2, 5];
    let log: Vec<Entry> = terms
        .iter()
        .zip(1..)
        .map(|(&term, index)| entry(index, term, "x"))
        .collect();
    // Written in three pieces, so that boundaries span writes.
    write_ok(&mut store, &append(log[..1].to_vec()));
    write_ok(&mut store, &append(log[1..4].to_vec()));
    write_ok(&mut store, &append(log[4..].to_vec()));
    let expected = vec![id(1, 1), id(3, 2), id(6, 5)];
    for when in ["after appending", "after reopening"] {
        let recovered = store
            .recover()
            .unwrap_or_else(|e| panic!("recover() {when} failed: {e}"));
        assert_eq!(
            recovered.term_boundaries, expected,
            "term boundaries of a log with terms {terms:?} {when}"
        );
        assert_state(&mut store, &log, HardState::default(), when);
        store = harness.reopen(store);
    }

    // A single entry is both the first of its run and the last entry.
    let mut store = harness.fresh();
    write_ok(&mut store, &append(vec![entry(1, 4, "x")]));
    let recovered = store
        .recover()
        .unwrap_or_else(|e| panic!("recover() failed: {e}"));
    assert_eq!(
        recovered.term_boundaries,
        vec![id(1, 4)],
        "term boundaries of a one-entry log"
    );
}

/// Configuration entries are stored like any other and reported by `recover` (a node's
/// configuration is the last one in its log); a truncated one is no longer reported.
pub fn configuration_entries<H: Harness>(harness: &mut H) {
    let voters = |ids: &[u64]| ids.iter().copied().map(raftor_core::NodeId).collect();
    let three = raftor_core::Membership::bootstrap(&voters(&[1, 2, 3]), &Default::default());
    let four = raftor_core::Membership::bootstrap(&voters(&[1, 2, 3, 4]), &Default::default());
    let config = |index: u64, membership: &raftor_core::Membership| Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Config(Box::new(membership.clone())),
    };
    let mut store = harness.fresh();
    let log = vec![
        entry(1, 1, "a"),
        config(2, &three),
        entry(3, 1, "b"),
        config(4, &four),
    ];
    write_ok(&mut store, &append(log.clone()));
    for when in ["after appending", "after reopening"] {
        let recovered = store
            .recover()
            .unwrap_or_else(|e| panic!("recover() {when} failed: {e}"));
        assert_eq!(
            recovered.memberships,
            vec![(LogIndex(2), three.clone()), (LogIndex(4), four.clone())],
            "configuration entries {when}"
        );
        assert_eq!(all_entries(&store), log, "entries {when}");
        store = harness.reopen(store);
    }
    write_ok(
        &mut store,
        &LogWrite {
            truncate_from: Some(LogIndex(4)),
            ..LogWrite::default()
        },
    );
    let store = harness.reopen(store);
    let recovered = recovered_memberships(store);
    assert_eq!(
        recovered,
        vec![(LogIndex(2), three)],
        "a truncated configuration entry is gone"
    );
}

fn recovered_memberships<S: LogStorage>(mut store: S) -> Vec<(LogIndex, raftor_core::Membership)> {
    store
        .recover()
        .unwrap_or_else(|e| panic!("recover() failed: {e}"))
        .memberships
}

/// A write whose entries do not follow the log (a gap, an overlap without truncation, entries not
/// consecutive among themselves) is rejected with an error and changes nothing at all, not even the
/// hard state or truncation it carries.
pub fn invalid_writes_change_nothing<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();

    // Into an empty log: only index 1 may come first.
    for first in [0, 2] {
        let write = append(vec![entry(first, 1, "z")]);
        assert!(
            store.write(&write).is_err(),
            "appending index {first} to an empty log must be rejected"
        );
    }
    assert_state(
        &mut store,
        &[],
        HardState::default(),
        "after rejected appends to an empty log",
    );

    let hard_state = HardState {
        current_term: Term(1),
        voted_for: Some(NodeId(1)),
        commit_index: LogIndex(0),
    };
    let log = vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")];
    write_ok(
        &mut store,
        &LogWrite {
            hard_state: Some(hard_state),
            entries: log.clone(),
            ..LogWrite::default()
        },
    );

    let other_hard_state = HardState {
        current_term: Term(9),
        voted_for: Some(NodeId(9)),
        commit_index: LogIndex(2),
    };
    let invalid = [
        ("a gap after the last entry", None, vec![entry(5, 2, "z")]),
        (
            "an overlap without truncation",
            None,
            vec![entry(3, 2, "z"), entry(4, 2, "z")],
        ),
        (
            "entries not consecutive among themselves",
            None,
            vec![entry(4, 2, "z"), entry(6, 2, "z")],
        ),
        (
            "entries repeating an index",
            None,
            vec![entry(4, 2, "z"), entry(4, 2, "z")],
        ),
        (
            "entries not following the truncation point",
            Some(LogIndex(2)),
            vec![entry(3, 2, "z")],
        ),
        (
            "entries starting before the truncation point",
            Some(LogIndex(3)),
            vec![entry(2, 2, "z")],
        ),
    ];
    for (what, truncate_from, entries) in invalid {
        let write = LogWrite {
            hard_state: Some(other_hard_state),
            truncate_from,
            compact_to: None,
            entries,
            standing: Some(Standing::Member),
        };
        assert!(
            store.write(&write).is_err(),
            "a write with {what} must be rejected: {write:?}"
        );
        assert_state(
            &mut store,
            &log,
            hard_state,
            &format!("after rejecting a write with {what}"),
        );
    }
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &log,
        hard_state,
        "after rejected writes and a reopen",
    );

    // The store still takes valid writes afterwards.
    let mut log = log;
    log.push(entry(4, 2, "d"));
    write_ok(&mut store, &append(vec![entry(4, 2, "d")]));
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &log,
        hard_state,
        "after a valid append following rejected writes",
    );
}

/// Truncating from index 1 empties the log; it then starts again at index 1.
pub fn truncate_everything<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    write_ok(
        &mut store,
        &append(vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 2, "c")]),
    );
    write_ok(
        &mut store,
        &LogWrite {
            truncate_from: Some(LogIndex(1)),
            ..LogWrite::default()
        },
    );
    assert_state(
        &mut store,
        &[],
        HardState::default(),
        "after truncating from 1",
    );
    assert_eq!(term_at(&store, 1), None, "term(1) after truncating from 1");
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &[],
        HardState::default(),
        "after truncating from 1 and reopening",
    );

    let log = vec![entry(1, 3, "d")];
    write_ok(&mut store, &append(log.clone()));
    store = harness.reopen(store);
    assert_state(
        &mut store,
        &log,
        HardState::default(),
        "after appending to an emptied log and reopening",
    );
}

/// Compaction forgets the entries up to a point but keeps that point's id as the log's start,
/// across a reopen; reads before it are [`StorageError::Compacted`]; appends continue after the end.
pub fn compaction<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    let log: Vec<Entry> = (1..=6).map(|i| entry(i, 1 + i / 3, "x")).collect();
    write_ok(&mut store, &append(log.clone()));
    write_ok(
        &mut store,
        &LogWrite {
            compact_to: Some(id(4, 2)),
            ..LogWrite::default()
        },
    );
    for round in [
        "after compacting to 4",
        "after compacting to 4 and reopening",
    ] {
        assert_eq!(last_index(&store), 6, "{round}");
        assert_eq!(term_at(&store, 4), Some(2), "{round}: the start's term");
        assert_eq!(term_at(&store, 5), Some(2), "{round}");
        assert!(
            matches!(store.term(LogIndex(3)), Err(StorageError::Compacted { .. })),
            "{round}: term(3) is compacted"
        );
        assert!(
            matches!(
                store.entries(LogIndex(4), LogIndex(6), usize::MAX),
                Err(StorageError::Compacted { .. })
            ),
            "{round}: entries from 4 are compacted"
        );
        let rest = store
            .entries(LogIndex(5), LogIndex(6), usize::MAX)
            .expect("read after the start");
        assert_eq!(rest, log[4..].to_vec(), "{round}");
        let recovered = store.recover().expect("recover");
        assert_eq!(recovered.log_start, id(4, 2), "{round}");
        assert_eq!(
            recovered.term_boundaries,
            vec![id(5, 2), id(6, 3)],
            "{round}: boundaries of what follows the start"
        );
        store = harness.reopen(store);
    }
    // Truncating into the compacted prefix is refused and changes nothing.
    let into_prefix = LogWrite {
        truncate_from: Some(LogIndex(3)),
        ..LogWrite::default()
    };
    assert!(
        store.write(&into_prefix).is_err(),
        "truncate below the start"
    );
    assert_eq!(last_index(&store), 6);
    // A lower compaction point than the start changes nothing; appends go on after the end.
    write_ok(
        &mut store,
        &LogWrite {
            compact_to: Some(id(2, 1)),
            entries: vec![entry(7, 3, "y")],
            ..LogWrite::default()
        },
    );
    assert_eq!(store.recover().expect("recover").log_start, id(4, 2));
    assert_eq!(last_index(&store), 7);
    // Compacting everything leaves an empty log that continues after the start.
    write_ok(
        &mut store,
        &LogWrite {
            compact_to: Some(id(7, 3)),
            ..LogWrite::default()
        },
    );
    store = harness.reopen(store);
    assert_eq!(last_index(&store), 7);
    assert_eq!(term_at(&store, 7), Some(3));
    assert!(store
        .entries(LogIndex(8), LogIndex(9), usize::MAX)
        .expect("empty read")
        .is_empty());
    write_ok(&mut store, &append(vec![entry(8, 3, "z")]));
    assert_eq!(last_index(&store), 8);
}

/// Installing a snapshot that the log does not hold: truncate the whole log and compact past its
/// end in one write; the log then starts after the snapshot, and survives a reopen so.
pub fn install_snapshot_over_the_log<H: Harness>(harness: &mut H) {
    let mut store = harness.fresh();
    write_ok(
        &mut store,
        &append((1..=3).map(|i| entry(i, 1, "old")).collect()),
    );
    write_ok(
        &mut store,
        &LogWrite {
            truncate_from: Some(LogIndex(1)),
            compact_to: Some(id(10, 4)),
            entries: vec![entry(11, 4, "new")],
            ..LogWrite::default()
        },
    );
    store = harness.reopen(store);
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.log_start, id(10, 4));
    assert_eq!(recovered.term_boundaries, vec![id(11, 4)]);
    assert_eq!(last_index(&store), 11);
    assert_eq!(term_at(&store, 10), Some(4));
    assert!(matches!(
        store.term(LogIndex(2)),
        Err(StorageError::Compacted { .. })
    ));
}
