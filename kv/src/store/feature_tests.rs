//! The map's revisions, transactions, range reads, leases and history, driven as the actors
//! drive it (through [`StateMachine`]'s typed calls).

use super::*;
use crate::watch::{WatchEnd, WatchHub, WatchLimits};

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand {
        session: None,
        op: KvOp::Put {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        },
    }
}

fn txn(txn: Txn) -> KvCommand {
    KvCommand {
        session: None,
        op: KvOp::Txn(txn),
    }
}

fn entry(kv: &KvStateMachine, key: &str) -> Option<KeyValue> {
    match kv.query(&KvQuery::Range(RangeQuery::new(KeySet::Key(key.into())))) {
        KvAnswer::Range(page) => page.kvs.into_iter().next(),
        other => panic!("{other:?}"),
    }
}

fn range(kv: &KvStateMachine, query: RangeQuery) -> RangePage {
    match kv.query(&KvQuery::Range(query)) {
        KvAnswer::Range(page) => page,
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_carry_their_creation_modification_and_version() {
    let mut kv = KvStateMachine::new();
    kv.apply(LogIndex(3), put("a", "1"));
    kv.apply(LogIndex(5), put("a", "2"));
    let a = entry(&kv, "a").expect("present");
    assert_eq!((a.create_index, a.mod_index, a.version), (3, 5, 2));
    kv.apply(
        LogIndex(6),
        KvCommand {
            session: None,
            op: KvOp::Delete { key: "a".into() },
        },
    );
    kv.apply(LogIndex(8), put("a", "3"));
    let a = entry(&kv, "a").expect("present");
    assert_eq!(
        (a.create_index, a.mod_index, a.version),
        (8, 8, 1),
        "created anew"
    );
}

#[test]
fn transactions_compare_then_run_one_branch_atomically() {
    let mut kv = KvStateMachine::new();
    kv.apply(LogIndex(1), put("x", "1"));
    let swap = |expected: u64| Txn {
        compare: vec![Compare {
            key: "x".into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModIndex(expected),
        }],
        success: vec![
            TxnOp::Put {
                key: "x".into(),
                value: Bytes::from_static(b"2"),
                lease: None,
            },
            TxnOp::Put {
                key: "y".into(),
                value: Bytes::from_static(b"2"),
                lease: None,
            },
        ],
        failure: vec![TxnOp::Get { key: "x".into() }],
    };
    let applied = kv.apply(LogIndex(2), txn(swap(7)));
    let KvOutcome::Txn(outcome) = applied.outcome else {
        panic!("{applied:?}")
    };
    assert!(!outcome.succeeded);
    assert!(matches!(&outcome.results[0], TxnOpResult::Got(Some(kv)) if kv.mod_index == 1));
    assert!(
        entry(&kv, "y").is_none(),
        "the failed branch's puts did not run"
    );

    let applied = kv.apply(LogIndex(3), txn(swap(1)));
    assert!(matches!(
        applied.outcome,
        KvOutcome::Txn(TxnOutcome {
            succeeded: true,
            ..
        })
    ));
    // Both keys at the transaction's one index.
    assert_eq!(entry(&kv, "x").map(|kv| kv.mod_index), Some(3));
    assert_eq!(entry(&kv, "y").map(|kv| kv.mod_index), Some(3));

    // Absent keys: version 0 holds, any value compare fails.
    let absent = |target| Txn {
        compare: vec![Compare {
            key: "nope".into(),
            op: CompareOp::Equal,
            target,
        }],
        ..Txn::default()
    };
    let outcome = |applied: KvApplied| match applied.outcome {
        KvOutcome::Txn(outcome) => outcome.succeeded,
        other => panic!("{other:?}"),
    };
    assert!(outcome(
        kv.apply(LogIndex(4), txn(absent(CompareTarget::Version(0))))
    ));
    assert!(!outcome(kv.apply(
        LogIndex(5),
        txn(absent(CompareTarget::Value(Bytes::new())))
    )));
}

#[test]
fn ranges_page_in_key_order_within_their_caps() {
    let mut kv = KvStateMachine::new();
    for (i, key) in ["b/1", "a", "b/2", "b/3", "c"].iter().enumerate() {
        kv.apply(LogIndex(i as u64 + 1), put(key, "vvvv"));
    }
    let mut query = RangeQuery {
        limit: 2,
        ..RangeQuery::new(KeySet::Prefix("b/".into()))
    };
    let first = range(&kv, query.clone());
    assert_eq!(first.index, 5);
    assert_eq!(
        first
            .kvs
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["b/1", "b/2"]
    );
    assert!(first.more);
    query.after = first.next_after().map(str::to_owned);
    let second = range(&kv, query.clone());
    assert_eq!(second.kvs.len(), 1);
    assert!(!second.more && second.next_after().is_none());

    // A byte cap smaller than one key still returns one key per page.
    let tiny = range(
        &kv,
        RangeQuery {
            max_bytes: 1,
            ..RangeQuery::new(KeySet::Prefix(String::new()))
        },
    );
    assert_eq!((tiny.kvs.len(), tiny.more), (1, true));
    let keys_only = range(
        &kv,
        RangeQuery {
            keys_only: true,
            ..RangeQuery::new(KeySet::Prefix(String::new()))
        },
    );
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_none()));
    let count = range(
        &kv,
        RangeQuery {
            count_only: true,
            ..RangeQuery::new(KeySet::Range {
                start: "a".into(),
                end: Some("c".into()),
            })
        },
    );
    assert_eq!((count.count, count.kvs.len()), (4, 0));
    assert!(RangeQuery {
        limit: 0,
        ..RangeQuery::new(KeySet::Key("a".into()))
    }
    .check(100)
    .is_err());
}

#[test]
fn a_lease_takes_its_keys_with_it_and_survives_a_snapshot() {
    let mut kv = KvStateMachine::new();
    let granted = kv.apply(
        LogIndex(1),
        KvCommand {
            session: None,
            op: KvOp::LeaseGrant { ttl_ms: 5_000 },
        },
    );
    assert_eq!(
        granted.outcome,
        KvOutcome::LeaseGranted {
            id: 1,
            ttl_ms: 5_000
        }
    );
    let attach = |key: &str, lease| {
        txn(Txn {
            success: vec![TxnOp::Put {
                key: key.into(),
                value: Bytes::from_static(b"v"),
                lease,
            }],
            ..Txn::default()
        })
    };
    kv.apply(LogIndex(2), attach("held/a", Some(1)));
    kv.apply(LogIndex(3), attach("held/b", Some(1)));
    kv.apply(LogIndex(4), attach("free", None));
    // A put naming a lease that does not exist changes nothing.
    assert_eq!(
        kv.apply(LogIndex(5), attach("free", Some(99))).outcome,
        KvOutcome::LeaseNotFound { id: 99 }
    );
    // Rewriting held/b without a lease detaches it.
    kv.apply(LogIndex(6), put("held/b", "kept"));
    assert_eq!(entry(&kv, "held/a").and_then(|kv| kv.lease), Some(1));

    let mut restored = KvStateMachine::new();
    restored.restore(
        bincode::deserialize(&bincode::serialize(&kv.snapshot()).expect("encodes"))
            .expect("decodes"),
    );
    for machine in [&mut kv, &mut restored] {
        let revoked = machine.apply(
            LogIndex(7),
            KvCommand {
                session: None,
                op: KvOp::LeaseRevoke {
                    id: 1,
                    expired: true,
                },
            },
        );
        assert_eq!(
            revoked.outcome,
            KvOutcome::LeaseRevoked {
                existed: true,
                deleted: 1
            }
        );
        assert!(entry(machine, "held/a").is_none());
        assert!(entry(machine, "held/b").is_some());
        assert!(entry(machine, "free").is_some());
        assert_eq!(
            machine.query(&KvQuery::Lease { id: 1 }),
            KvAnswer::Lease(None)
        );
    }
}

/// The lessor's poll lists the leases only when one was granted or revoked (or a snapshot
/// restored) since the index it names: a quiet tick copies nothing however many leases there are.
#[test]
fn lease_ttls_are_listed_only_when_the_set_of_leases_changed() {
    let ttls = |kv: &KvStateMachine, unless_changed_at| match kv
        .query(&KvQuery::LeaseTtls { unless_changed_at })
    {
        KvAnswer::LeaseTtls { changed_at, leases } => (changed_at, leases),
        other => panic!("unexpected answer {other:?}"),
    };
    let lease_op = |op| KvCommand { session: None, op };
    let mut kv = KvStateMachine::new();
    assert_eq!(ttls(&kv, None), (0, Some(vec![])));
    kv.apply(LogIndex(1), lease_op(KvOp::LeaseGrant { ttl_ms: 5_000 }));
    kv.apply(LogIndex(2), lease_op(KvOp::LeaseGrant { ttl_ms: 9_000 }));
    assert_eq!(ttls(&kv, Some(0)), (2, Some(vec![(1, 5_000), (2, 9_000)])));
    // Writes that attach keys, and revoking a lease that is not there, change no lease's TTL.
    kv.apply(LogIndex(3), put("k", "v"));
    let gone = KvOp::LeaseRevoke {
        id: 77,
        expired: true,
    };
    kv.apply(LogIndex(4), lease_op(gone));
    assert_eq!(ttls(&kv, Some(2)), (2, None));
    let revoke = KvOp::LeaseRevoke {
        id: 1,
        expired: true,
    };
    kv.apply(LogIndex(5), lease_op(revoke));
    assert_eq!(ttls(&kv, Some(2)), (5, Some(vec![(2, 9_000)])));
    // A restored snapshot's leases are those of its index: listed again unless that index is the
    // one asked about (the set at an index is the same on every node).
    kv.apply(LogIndex(6), put("k", "w"));
    let mut restored = KvStateMachine::new();
    restored.restore(kv.snapshot());
    assert_eq!(ttls(&restored, Some(5)), (6, Some(vec![(2, 9_000)])));
    assert_eq!(ttls(&restored, Some(6)), (6, None));
}

#[test]
fn the_hub_delivers_live_changes_after_the_replay_and_cuts_off_a_slow_watcher() {
    let hub = WatchHub::new(WatchLimits {
        max_queued_bytes: usize::MAX,
        max_queued_events: 3,
        max_watchers: 1,
        ..WatchLimits::default()
    });
    let mut kv = KvStateMachine::with_hub(hub.clone());
    kv.apply(LogIndex(1), put("w/a", "1"));
    kv.apply(LogIndex(2), put("other", "1"));
    let slot = hub.open().expect("a slot");
    assert!(hub.open().is_none(), "one watcher at most");
    let page = kv.query(&KvQuery::WatchPage(crate::watch::WatchPageQuery {
        keys: KeySet::Prefix("w/".into()),
        after: Some(0),
        max_bytes: 1 << 20,
        slot: slot.id(),
    }));
    let KvAnswer::WatchPage(crate::watch::WatchPageAnswer::Page {
        events,
        through,
        live: true,
    }) = page
    else {
        panic!("{page:?}")
    };
    assert_eq!((events.len(), through), (1, 2), "the replay, then live");
    kv.apply(LogIndex(3), put("w/b", "1"));
    kv.apply(LogIndex(4), put("other", "2"));
    match slot.take(usize::MAX) {
        crate::watch::hub_taken::Events { events, through } => {
            assert_eq!(events.iter().map(Event::index).collect::<Vec<_>>(), [3]);
            assert_eq!(through, 4, "everything applied was looked at");
        }
        crate::watch::hub_taken::Ended(end) => panic!("{end:?}"),
    }
    // A watcher that takes nothing is ended once its queue passes the limit, and told where
    // to resume.
    for index in 5..=8 {
        kv.apply(LogIndex(index), put("w/c", "x"));
    }
    match slot.take(usize::MAX) {
        crate::watch::hub_taken::Ended(end) => {
            assert_eq!(end, WatchEnd::TooSlow { resume_from: 5 })
        }
        crate::watch::hub_taken::Events { .. } => panic!("not cut off"),
    }
    drop(slot);
    assert_eq!(hub.active(), 0);
}

#[test]
fn each_watcher_gets_only_its_keys_whether_it_watches_a_key_or_a_prefix() {
    let hub = WatchHub::new(WatchLimits::default());
    let mut kv = KvStateMachine::with_hub(hub.clone());
    let watch = |kv: &KvStateMachine, keys: KeySet| {
        let slot = hub.open().expect("a slot");
        kv.query(&KvQuery::WatchPage(crate::watch::WatchPageQuery {
            keys,
            after: None,
            max_bytes: 1 << 20,
            slot: slot.id(),
        }));
        slot
    };
    let a = watch(&kv, KeySet::Key("a".into()));
    let a_again = watch(&kv, KeySet::Key("a".into()));
    let b = watch(&kv, KeySet::Key("b".into()));
    let prefix = watch(&kv, KeySet::Prefix("a".into()));
    for (index, key) in [(1, "a"), (2, "b"), (3, "ab"), (4, "c")] {
        kv.apply(LogIndex(index), put(key, "v"));
    }
    let keys = |slot: &crate::watch::SlotHandle| match slot.take(usize::MAX) {
        crate::watch::hub_taken::Events { events, through } => {
            assert_eq!(through, 4);
            events.into_iter().map(|e| e.kv.key).collect::<Vec<_>>()
        }
        crate::watch::hub_taken::Ended(end) => panic!("{end:?}"),
    };
    assert_eq!(keys(&a), ["a"]);
    assert_eq!(keys(&a_again), ["a"]);
    assert_eq!(keys(&b), ["b"]);
    assert_eq!(keys(&prefix), ["a", "ab"]);
    drop((a, a_again, b, prefix));
    assert_eq!(hub.active(), 0);
}

/// Prefix watchers are found by looking an event's key up at each prefix length in use: every
/// watcher still gets exactly the keys its set holds — the empty prefix, prefixes sharing a
/// length, prefixes ending inside another prefix's multi-byte character, ranges beside them —
/// and a watcher closed is looked up no more.
#[test]
fn prefix_and_range_watchers_get_exactly_their_keys() {
    let hub = WatchHub::new(WatchLimits::default());
    let mut kv = KvStateMachine::with_hub(hub.clone());
    let sets = [
        KeySet::Prefix(String::new()),
        KeySet::Prefix("a".into()),
        KeySet::Prefix("b".into()),
        KeySet::Prefix("ab".into()),
        KeySet::Prefix("ab".into()),
        KeySet::Prefix("abc/".into()),
        KeySet::Prefix("é".into()),
        KeySet::Prefix("\u{e8}x".into()),
        KeySet::Range {
            start: "ab".into(),
            end: Some("b".into()),
        },
        KeySet::Key("ab".into()),
    ];
    let slots: Vec<_> = sets
        .iter()
        .map(|keys| {
            let slot = hub.open().expect("a slot");
            kv.query(&KvQuery::WatchPage(crate::watch::WatchPageQuery {
                keys: keys.clone(),
                after: None,
                max_bytes: 1 << 20,
                slot: slot.id(),
            }));
            slot
        })
        .collect();
    // "è" and "é" share their first byte: a cut there is inside a character.
    let written = [
        "a", "ab", "abc", "abc/d", "b", "ba", "é", "éx", "è", "èx", "c", "", "z",
    ];
    let mut index = 0;
    let mut apply = |kv: &mut KvStateMachine, key: &str| {
        index += 1;
        kv.apply(LogIndex(index), put(key, "v"));
    };
    for key in written.iter().filter(|key| !key.is_empty()) {
        apply(&mut kv, key);
    }
    let taken = |slot: &crate::watch::SlotHandle| match slot.take(usize::MAX) {
        crate::watch::hub_taken::Events { events, .. } => {
            events.into_iter().map(|e| e.kv.key).collect::<Vec<_>>()
        }
        crate::watch::hub_taken::Ended(end) => panic!("{end:?}"),
    };
    for (keys, slot) in sets.iter().zip(&slots) {
        let expected: Vec<_> = written
            .iter()
            .filter(|key| !key.is_empty() && keys.contains(key))
            .map(|key| key.to_string())
            .collect();
        assert_eq!(taken(slot), expected, "{keys:?}");
    }
    // Closing one of two watchers of "ab" leaves the other; closing both leaves the length's
    // other prefixes to be looked up still.
    let mut slots = slots;
    let second_ab = slots.remove(4);
    drop(second_ab);
    apply(&mut kv, "abz");
    assert_eq!(taken(&slots[3]), ["abz"]);
    drop(slots.remove(3));
    apply(&mut kv, "abz");
    apply(&mut kv, "bq");
    assert_eq!(taken(&slots[0]), ["abz", "abz", "bq"]);
    assert_eq!(taken(&slots[1]), ["abz", "abz"]);
    assert_eq!(taken(&slots[2]), ["bq"]);
    drop(slots);
    assert_eq!(hub.active(), 0);
}
