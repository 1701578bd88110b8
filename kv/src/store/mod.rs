//! The replicated key-value map: raftor's first state machine, with exactly-once client sessions,
//! revisions, transactions, leases and the recent history that watches replay.
//!
//! Everything here is decided by the log alone: applying the same entries gives every node the
//! same map, the same leases and the same history (no clock, no randomness).

mod cautious;
mod history;
mod keys;
mod lease;
mod range;
mod snapshot;
mod txn;

#[cfg(test)]
mod feature_tests;

pub use history::{Event, EventKind, History, HISTORY_MAX_BYTES, HISTORY_MAX_EVENTS};
pub use keys::{KeySet, KeyValue};
pub use lease::{check_ttl, LeaseView, LEASE_VIEW_MAX_KEYS, MAX_LEASE_TTL, MIN_LEASE_TTL};
pub use range::{
    RangePage, RangeQuery, DEFAULT_RANGE_BYTES, DEFAULT_RANGE_LIMIT, MAX_RANGE_BYTES,
    MAX_RANGE_LIMIT,
};
pub use snapshot::KvSnapshot;
pub use txn::{
    cas_outcome, Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResult, TxnOutcome,
};

use crate::watch::{WatchHub, WatchPageAnswer, WatchPageQuery};
use bytes::Bytes;
use imbl::OrdMap;
use keys::{MapKey, Stored};
use lease::LeaseRecord;
use raftor::state_machine::{unframe, StateMachine};
use raftor_core::LogIndex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A client's identity and the number of one of its writes. A client numbers its writes 1, 2, 3...
/// and retries a write with the same number; the map applies each number at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client_id: u64,
    pub sequence: u64,
}

/// A change to the map, proposed through Raft and applied on every node in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    pub session: Option<Session>,
    pub op: KvOp,
}

/// The operations. The log holds them encoded, so variants are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        key: String,
        value: Bytes,
    },
    Delete {
        key: String,
    },
    /// Set `key` to `value` if it currently holds `expected` (`None`: if it is absent). Kept for
    /// the entries already in logs; the service now proposes a compare-and-swap as a [`Txn`].
    Cas {
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    },
    /// A transaction ([`Txn`]); also how a put with a lease and a range delete are proposed.
    Txn(Txn),
    /// Grant a lease of this TTL; its id is the entry's index.
    LeaseGrant {
        ttl_ms: u64,
    },
    /// End lease `id` and delete its keys: revoked by a client, or (`expired`) by the leader's
    /// lessor when its TTL ran out without a keep-alive.
    LeaseRevoke {
        id: u64,
        expired: bool,
    },
}

impl KvOp {
    /// The bytes the operation carries (its key and values): what it costs to replicate.
    pub fn payload_bytes(&self) -> usize {
        match self {
            KvOp::Put { key, value } => key.len() + value.len(),
            KvOp::Delete { key } => key.len(),
            KvOp::Cas {
                key,
                expected,
                value,
            } => key.len() + expected.as_ref().map_or(0, Bytes::len) + value.len(),
            KvOp::Txn(txn) => txn.payload_bytes(),
            KvOp::LeaseGrant { .. } | KvOp::LeaseRevoke { .. } => 16,
        }
    }
}

/// A read of the map. Variants are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    Get {
        key: String,
    },
    Len,
    /// A page of keys with their revisions.
    Range(RangeQuery),
    /// Replay history for a watch and activate its slot ([`crate::watch`]).
    WatchPage(WatchPageQuery),
    /// One lease.
    Lease {
        id: u64,
    },
    /// Every lease, without its keys' names.
    Leases,
    /// Every lease's id and TTL, unless the set of leases is as it was at `unless_changed_at`
    /// (an index an earlier answer gave): what the leader's lessor polls, so that a tick with no
    /// lease granted or revoked copies nothing.
    LeaseTtls {
        unless_changed_at: Option<u64>,
    },
}

/// What applying a [`KvCommand`] did. Variants are only ever added at the end (snapshots and the
/// native protocol hold them encoded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutcome {
    /// The key was written; `replaced` when it held a value before.
    Put { replaced: bool },
    /// The key was removed; `existed` when it held a value.
    Deleted { existed: bool },
    /// The compare-and-swap happened.
    Swapped,
    /// The compare-and-swap did not happen: the key holds `current`.
    Mismatch { current: Option<Bytes> },
    /// The write's sequence number is older than the client's latest: it was superseded (and
    /// its own result is no longer kept). Nothing changed.
    StaleSequence,
    /// The command could not be decoded; nothing changed (every node decides the same). No longer
    /// produced — the state machine refuses such a command with an error
    /// ([`raftor::Error::BadCommand`]) — but kept so the native protocol's encoding is unchanged.
    Invalid,
    /// The write belongs to a session the map no longer holds: its client's session expired (see
    /// [`SESSION_TTL_ENTRIES`]) and was forgotten, so the map cannot tell whether this write (or a
    /// retry of it) was applied before. Rather than risk applying it twice, it is refused and
    /// nothing changed (thesis §6.3: the client learns its session is gone). The client must start
    /// a new session (a new client id, its sequence numbers again from 1); whether the refused
    /// write was applied earlier stays unknown to it. See [`KvStateMachine`] for the rule.
    SessionExpired,
    /// The transaction ran (one branch or the other).
    Txn(TxnOutcome),
    /// A lease was granted: its id (the entry's index) and TTL.
    LeaseGranted { id: u64, ttl_ms: u64 },
    /// A lease ended (`existed`: it was there) and its keys were deleted.
    LeaseRevoked { existed: bool, deleted: u64 },
    /// A write named a lease that does not exist (it never did, or it ended): nothing changed.
    LeaseNotFound { id: u64 },
}

/// The result of applying a command: the index it was applied at and what it did. A retried write
/// gets the original's result, index included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvApplied {
    pub index: u64,
    pub outcome: KvOutcome,
}

impl KvCommand {
    /// The command as the log holds it (bincode), for code that drives the actors directly.
    pub fn encode(&self) -> Bytes {
        // Encoding strings, bytes and integers into a Vec cannot fail.
        Bytes::from(bincode::serialize(self).unwrap_or_default())
    }
}

impl KvQuery {
    /// The query as the byte-level state machine takes it (bincode).
    pub fn encode(&self) -> Bytes {
        Bytes::from(bincode::serialize(self).unwrap_or_default())
    }
}

/// The answer to a [`KvQuery`]. Variants are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAnswer {
    /// The value of the key asked with [`KvQuery::Get`], `None` when absent.
    Value(Option<Bytes>),
    /// The number of keys ([`KvQuery::Len`]).
    Len(u64),
    Range(RangePage),
    WatchPage(WatchPageAnswer),
    /// The lease, if it exists.
    Lease(Option<LeaseView>),
    /// Every lease, by id (without its keys' names; `keys_total` counts them).
    Leases(Vec<LeaseView>),
    /// The index at which a lease was last granted or revoked (or a snapshot restored), and the
    /// leases' ids and TTLs, by id (`None`: the set is as it was at the index asked about).
    LeaseTtls {
        changed_at: u64,
        leases: Option<Vec<(u64, u64)>>,
    },
}

impl KvApplied {
    /// Decodes a result as the byte-level state machine answers it (see
    /// [`Encoded`](raftor::state_machine::Encoded)); `None` for a refused command.
    pub fn decode(bytes: &[u8]) -> Option<KvApplied> {
        unframe(bytes).ok()
    }
}

/// Decodes the byte-level answer to [`KvQuery::Get`].
pub fn decode_get(bytes: &[u8]) -> Option<Bytes> {
    match unframe(bytes) {
        Ok(KvAnswer::Value(value)) => value,
        _ => None,
    }
}

/// Decodes the byte-level answer to [`KvQuery::Len`].
pub fn decode_len(bytes: &[u8]) -> Option<u64> {
    match unframe(bytes) {
        Ok(KvAnswer::Len(len)) => Some(len),
        _ => None,
    }
}

/// A session is forgotten once this many entries were applied after its last write. The rule is
/// by log index, not wall clock, so every node forgets the same sessions at the same entry. A
/// later write of a forgotten session (other than its first) is refused with
/// [`KvOutcome::SessionExpired`].
pub const SESSION_TTL_ENTRIES: u64 = 1_000_000;
/// How often (in entries) expired sessions are swept.
const SESSION_SWEEP_EVERY: u64 = 4096;

/// What the map remembers of a client: its latest write and that write's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SessionRecord {
    last_sequence: u64,
    last_result: KvApplied,
    /// The index of the client's latest write; the session expires relative to it.
    last_index: u64,
}
/// The map itself, with the clients' sessions.
///
/// # Exactly-once sessions (thesis §6.3)
///
/// A client numbers its writes 1, 2, 3... For each client the map keeps its latest sequence
/// number and that write's result (a `SessionRecord`), and decides a write with a session so,
/// the same on every node (the decision depends only on the log):
///
/// - the client is known and the sequence is its latest: a retry, answered with the original
///   result (same index), nothing changes;
/// - the client is known and the sequence is older: [`KvOutcome::StaleSequence`], nothing changes;
/// - the client is known and the sequence is newer: applied, and becomes the latest;
/// - the client is unknown and the sequence is 1 (or 0): a new session, applied;
/// - the client is unknown and the sequence is above 1: [`KvOutcome::SessionExpired`], nothing
///   changes and no session is created.
///
/// The last rule is what makes expiry safe. A client starts at 1, so a write numbered above 1
/// from a client the map does not know means the map forgot the client's session (it expired), or
/// never applied the client's earlier writes (they failed or are still in flight). Either way the
/// map cannot know whether this very write was applied before its session was forgotten, so
/// applying it could apply it twice; refusing it never does. The cost of the second case is a
/// needless refusal: the client starts a new session, and when it knows that no earlier attempt
/// of the write can have been applied it may send the write again under it, as
/// [`crate::Client`] does.
///
/// No state is kept for this: the rule needs no list of expired client ids, which would have to
/// grow without bound (keeping them is what expiry exists to avoid) or, bounded, forget some —
/// and every expired session's later writes are caught without it. The one case the rule cannot
/// tell apart is a retry of a client's *first* write arriving after its session expired: it
/// looks like a new session and is applied again. That needs the retry to come more than
/// [`SESSION_TTL_ENTRIES`] entries after the original was applied (a client retries for seconds;
/// [`crate::Client`] for its operation timeout, 15 s by default); closing it entirely would need
/// an explicit session registration entry (the thesis's RegisterClient), a change of the log
///
/// # Revisions, leases, history
///
/// Each key keeps the index that created it, the index of its latest write and a version count
/// (etcd's create/mod revision and version, with log indexes as revisions). A lease's id is the
/// index of the entry that granted it; a key attached to a lease is deleted with it. Every change
/// is also an [`Event`] in a bounded [`History`], which watches replay; the same events go to
/// the [`WatchHub`] as they are applied.
#[derive(Default)]
pub struct KvStateMachine {
    /// Persistent maps (shared structure, copy on write): a snapshot is an O(1) copy, so taking one
    /// never holds up the applier however large the map is.
    map: OrdMap<MapKey, Stored>,
    sessions: OrdMap<u64, SessionRecord>,
    /// The leases; every key whose `lease` is non-zero is in its lease's `keys`, and only those.
    leases: OrdMap<u64, LeaseRecord>,
    /// The index of the last entry that granted or revoked a lease, or of the snapshot restored
    /// last: `leases`' ids and TTLs are as every node's were at that index (not replicated; see
    /// [`KvQuery::LeaseTtls`]).
    leases_changed_at: u64,
    history: History,
    /// The index of the last entry applied; grows by log order.
    applied: LogIndex,
    /// Where live watchers are served (none in a machine made without one).
    hub: Option<Arc<WatchHub>>,
    /// The events of the entry being applied (kept to reuse its allocation).
    events: Vec<Event>,
}

impl std::fmt::Debug for KvStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStateMachine")
            .field("keys", &self.map.len())
            .field("sessions", &self.sessions.len())
            .field("leases", &self.leases.len())
            .field("history", &self.history.len())
            .field("applied", &self.applied)
            .finish()
    }
}

impl KvStateMachine {
    pub fn new() -> KvStateMachine {
        KvStateMachine::default()
    }

    /// A machine whose changes are also handed to `hub`'s live watchers.
    pub fn with_hub(hub: Arc<WatchHub>) -> KvStateMachine {
        KvStateMachine {
            hub: Some(hub),
            ..KvStateMachine::default()
        }
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Write `key` at `index` (its lease already checked to exist), recording the event; whether
    /// the key held a value. One walk of the map for a key that exists (the common case), and the
    /// key's string moves into the event rather than being copied.
    fn put(&mut self, index: u64, key: String, value: Bytes, lease: u64) -> bool {
        if let Some(stored) = self.map.get_mut(key.as_str()) {
            let old_lease = stored.lease;
            stored.value = value;
            stored.mod_index = index;
            stored.version += 1;
            stored.lease = lease;
            let kv = KeyValue {
                key,
                value: Some(stored.value.clone()),
                create_index: stored.create_index,
                mod_index: index,
                version: stored.version,
                lease: (lease != 0).then_some(lease),
            };
            if old_lease != lease {
                if let Some(record) = self.leases.get_mut(&old_lease) {
                    record.keys.remove(&kv.key);
                }
                if let Some(record) = self.leases.get_mut(&lease) {
                    record.keys.insert(kv.key.clone());
                }
            }
            self.events.push(Event {
                kind: EventKind::Put,
                kv,
            });
            return true;
        }
        if let Some(record) = self.leases.get_mut(&lease) {
            record.keys.insert(key.clone());
        }
        let stored = Stored {
            value,
            create_index: index,
            mod_index: index,
            version: 1,
            lease,
        };
        self.events.push(Event {
            kind: EventKind::Put,
            kv: stored.key_value(&key, true),
        });
        self.map.insert(MapKey::from(key), stored);
        false
    }

    /// Delete `key` at `index`, recording the event; whether it existed.
    fn delete(&mut self, index: u64, key: &str) -> bool {
        let Some(stored) = self.map.remove(key) else {
            return false;
        };
        if let Some(record) = self.leases.get_mut(&stored.lease) {
            record.keys.remove(key);
        }
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: None,
                create_index: 0,
                mod_index: index,
                version: 0,
                lease: None,
            },
        });
        true
    }

    fn delete_set(&mut self, index: u64, keys: &KeySet) -> u64 {
        let doomed: Vec<String> = keys
            .iter(&self.map, None)
            .map(|(k, _)| k.to_string())
            .collect();
        doomed.iter().filter(|key| self.delete(index, key)).count() as u64
    }

    fn execute(&mut self, index: u64, op: KvOp) -> KvOutcome {
        match op {
            KvOp::Put { key, value } => KvOutcome::Put {
                replaced: self.put(index, key, value, 0),
            },
            KvOp::Delete { key } => KvOutcome::Deleted {
                existed: self.delete(index, &key),
            },
            // Entries written before CAS was proposed as a transaction: run as one.
            KvOp::Cas {
                key,
                expected,
                value,
            } => match self.transact(index, Txn::cas(&key, expected, value)) {
                KvOutcome::Txn(outcome) => txn::cas_outcome(outcome),
                other => other,
            },
            KvOp::Txn(txn) => self.transact(index, txn),
            KvOp::LeaseGrant { ttl_ms } => {
                self.leases_changed_at = index;
                self.leases.insert(
                    index,
                    LeaseRecord {
                        ttl_ms,
                        keys: Default::default(),
                    },
                );
                KvOutcome::LeaseGranted { id: index, ttl_ms }
            }
            KvOp::LeaseRevoke { id, .. } => match self.leases.remove(&id) {
                None => KvOutcome::LeaseRevoked {
                    existed: false,
                    deleted: 0,
                },
                Some(record) => {
                    self.leases_changed_at = index;
                    let deleted = record
                        .keys
                        .iter()
                        .filter(|key| self.delete(index, key))
                        .count() as u64;
                    KvOutcome::LeaseRevoked {
                        existed: true,
                        deleted,
                    }
                }
            },
        }
    }

    /// Run a transaction: its compares against the map as it is, then one branch, all at `index`.
    fn transact(&mut self, index: u64, txn: Txn) -> KvOutcome {
        let succeeded = txn
            .compare
            .iter()
            .all(|compare| txn::holds(compare, self.map.get(compare.key.as_str())));
        let ops = if succeeded { txn.success } else { txn.failure };
        // Every lease the branch attaches keys to must exist, or nothing is done.
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(id), ..
            } = op
            {
                if !self.leases.contains_key(id) {
                    return KvOutcome::LeaseNotFound { id: *id };
                }
            }
        }
        let results = ops
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => TxnOpResult::Put {
                    replaced: self.put(index, key, value, lease.unwrap_or(0)),
                },
                TxnOp::Delete(keys) => TxnOpResult::Deleted {
                    count: self.delete_set(index, &keys),
                },
                TxnOp::Get { key } => {
                    TxnOpResult::Got(self.map.get(key.as_str()).map(|s| s.key_value(&key, true)))
                }
            })
            .collect();
        KvOutcome::Txn(TxnOutcome { succeeded, results })
    }

    fn sweep_sessions(&mut self, index: u64) {
        if index.is_multiple_of(SESSION_SWEEP_EVERY) {
            let expired: Vec<u64> = self
                .sessions
                .iter()
                .filter(|(_, record)| record.last_index + SESSION_TTL_ENTRIES <= index)
                .map(|(client, _)| *client)
                .collect();
            for client in expired {
                self.sessions.remove(&client);
            }
        }
    }

    /// The entry at `index` is applied: its events go to the history and the live watchers.
    fn record_events(&mut self, index: u64) {
        if let Some(hub) = &self.hub {
            hub.publish(index, &self.events);
        }
        if !self.events.is_empty() {
            self.history.append(&mut self.events);
        }
        if self.events.capacity() > 1024 {
            // After an entry that changed very many keys: do not keep its buffer for good.
            self.events = Vec::new();
        }
    }

    fn watch_page(&self, query: &WatchPageQuery) -> WatchPageAnswer {
        let applied = self.applied.0;
        let Some(after) = query.after else {
            self.activate(query, applied);
            return WatchPageAnswer::Page {
                events: Vec::new(),
                through: applied,
                live: true,
            };
        };
        if after < self.history.compacted_through() {
            return WatchPageAnswer::Compacted {
                compacted_through: self.history.compacted_through(),
                index: applied,
            };
        }
        let max_bytes = usize::try_from(query.max_bytes).unwrap_or(usize::MAX);
        match self.history.scan(&query.keys, after, max_bytes) {
            (events, Some(covered)) => WatchPageAnswer::Page {
                events,
                through: covered,
                live: false,
            },
            (events, None) => {
                // The replay reached the end: every later entry goes to the slot.
                let through = after.max(applied);
                self.activate(query, through);
                WatchPageAnswer::Page {
                    events,
                    through,
                    live: true,
                }
            }
        }
    }

    fn activate(&self, query: &WatchPageQuery, after: u64) {
        if let Some(hub) = &self.hub {
            hub.activate(query.slot, query.keys.clone(), after);
        }
    }
}

impl StateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvApplied;
    type Query = KvQuery;
    type QueryResponse = KvAnswer;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, index: LogIndex, command: KvCommand) -> KvApplied {
        debug_assert!(
            index > self.applied,
            "entries are applied in log order, once"
        );
        self.applied = index;
        self.sweep_sessions(index.0);
        let result = self.apply_command(index.0, command);
        self.record_events(index.0);
        result
    }

    fn query(&self, query: &KvQuery) -> KvAnswer {
        match query {
            KvQuery::Get { key } => {
                KvAnswer::Value(self.map.get(key.as_str()).map(|s| s.value.clone()))
            }
            KvQuery::Len => KvAnswer::Len(self.map.len() as u64),
            KvQuery::Range(range) => KvAnswer::Range(range::read(&self.map, range, self.applied.0)),
            KvQuery::WatchPage(page) => KvAnswer::WatchPage(self.watch_page(page)),
            KvQuery::Lease { id } => KvAnswer::Lease(self.leases.get(id).map(|r| r.view(*id))),
            KvQuery::Leases => KvAnswer::Leases(
                self.leases
                    .iter()
                    .map(|(id, record)| record.view_without_keys(*id))
                    .collect(),
            ),
            KvQuery::LeaseTtls { unless_changed_at } => KvAnswer::LeaseTtls {
                changed_at: self.leases_changed_at,
                leases: (*unless_changed_at != Some(self.leases_changed_at)).then(|| {
                    self.leases
                        .iter()
                        .map(|(id, record)| (*id, record.ttl_ms))
                        .collect()
                }),
            },
        }
    }

    fn snapshot(&self) -> KvSnapshot {
        // O(1): the persistent maps and the history share their structure with the copy.
        KvSnapshot {
            applied: self.applied,
            map: self.map.clone(),
            sessions: self.sessions.clone(),
            leases: self.leases.clone(),
            history: self.history.clone(),
        }
    }

    fn restore(&mut self, snapshot: KvSnapshot) {
        self.applied = snapshot.applied;
        self.map = snapshot.map;
        self.sessions = snapshot.sessions;
        self.leases = snapshot.leases;
        self.leases_changed_at = snapshot.applied.0;
        self.history = snapshot.history;
        if let Some(hub) = &self.hub {
            hub.restored(self.applied.0, &self.history);
        }
    }
}

impl KvStateMachine {
    /// Apply `command` at `index` under its session's exactly-once rules.
    fn apply_command(&mut self, index: u64, command: KvCommand) -> KvApplied {
        if let Some(session) = command.session {
            match self.sessions.get(&session.client_id) {
                Some(record) => {
                    if session.sequence == record.last_sequence {
                        // A retry of the latest write: answer as the first time, change nothing.
                        return record.last_result.clone();
                    }
                    if session.sequence < record.last_sequence {
                        return KvApplied {
                            index,
                            outcome: KvOutcome::StaleSequence,
                        };
                    }
                }
                // An unknown client past its first write: its session was forgotten (see the
                // rules on `KvStateMachine`). Refuse; record no session, so its retries are
                // refused too.
                None if session.sequence > 1 => {
                    return KvApplied {
                        index,
                        outcome: KvOutcome::SessionExpired,
                    };
                }
                // An unknown client's first write: a new session.
                None => {}
            }
        }
        let result = KvApplied {
            index,
            outcome: self.execute(index, command.op),
        };
        if let Some(session) = command.session {
            self.sessions.insert(
                session.client_id,
                SessionRecord {
                    last_sequence: session.sequence,
                    last_result: result.clone(),
                    last_index: index,
                },
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The tests drive the machine as the actors do: through bytes.
    use raftor::state_machine::Encoded;
    use raftor_actors::StateMachine as Bytewise;

    #[test]
    fn a_snapshot_restores_the_map_and_the_sessions() {
        let mut kv = Encoded(KvStateMachine::new());
        let session = Session {
            client_id: 7,
            sequence: 1,
        };
        let first = Bytewise::apply(&mut kv, LogIndex(1), &put("a", "1", Some(session)));
        Bytewise::apply(&mut kv, LogIndex(2), &put("b", "2", None));
        let writer = Bytewise::snapshot(&kv);
        // Applying goes on after the snapshot was taken: it must not show in the snapshot.
        Bytewise::apply(&mut kv, LogIndex(3), &put("c", "3", None));
        let mut bytes = Vec::new();
        writer(&mut bytes).expect("written");

        let mut restored = Encoded(KvStateMachine::new());
        Bytewise::restore(&mut restored, &mut bytes.as_slice()).expect("restored");
        assert_eq!(restored.0.applied(), LogIndex(2));
        let get = |kv: &Encoded<KvStateMachine>, key: &str| {
            decode_get(&Bytewise::query(
                kv,
                &KvQuery::Get { key: key.into() }.encode(),
            ))
        };
        assert_eq!(get(&restored, "a"), Some(Bytes::from("1")));
        assert_eq!(get(&restored, "b"), Some(Bytes::from("2")));
        assert_eq!(get(&restored, "c"), None);
        // The session came along: a retried write is answered as the first time.
        assert_eq!(
            Bytewise::apply(&mut restored, LogIndex(3), &put("a", "1", Some(session))),
            first
        );

        // A damaged snapshot is refused and leaves the machine as it was.
        let mut damaged = Encoded(KvStateMachine::new());
        Bytewise::apply(&mut damaged, LogIndex(1), &put("keep", "me", None));
        assert!(Bytewise::restore(&mut damaged, &mut &bytes[..bytes.len() / 2]).is_err());
        assert_eq!(get(&damaged, "keep"), Some(Bytes::from("me")));
    }

    fn put(key: &str, value: &str, session: Option<Session>) -> Bytes {
        KvCommand {
            session,
            op: KvOp::Put {
                key: key.into(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            },
        }
        .encode()
    }

    fn outcome(bytes: Bytes) -> KvOutcome {
        KvApplied::decode(&bytes).expect("decodes").outcome
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = Encoded(KvStateMachine::new());
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(1), &put("a", "1", None))),
            KvOutcome::Put { replaced: false }
        );
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(2), &put("a", "2", None))),
            KvOutcome::Put { replaced: true }
        );
        let get = KvQuery::Get { key: "a".into() }.encode();
        assert_eq!(
            decode_get(&Bytewise::query(&kv, &get)),
            Some(Bytes::from_static(b"2"))
        );
        let cas = |expected: Option<&'static str>, value: &'static str| {
            KvCommand {
                session: None,
                op: KvOp::Cas {
                    key: "a".into(),
                    expected: expected.map(|e| Bytes::from_static(e.as_bytes())),
                    value: Bytes::from_static(value.as_bytes()),
                },
            }
            .encode()
        };
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(3), &cas(Some("1"), "3"))),
            KvOutcome::Mismatch {
                current: Some(Bytes::from_static(b"2"))
            }
        );
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(4), &cas(Some("2"), "3"))),
            KvOutcome::Swapped
        );
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(5), &cas(None, "4"))),
            KvOutcome::Mismatch {
                current: Some(Bytes::from_static(b"3"))
            }
        );
        let delete = KvCommand {
            session: None,
            op: KvOp::Delete { key: "a".into() },
        }
        .encode();
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(6), &delete)),
            KvOutcome::Deleted { existed: true }
        );
        assert_eq!(decode_get(&Bytewise::query(&kv, &get)), None);
        assert_eq!(
            outcome(Bytewise::apply(&mut kv, LogIndex(7), &cas(None, "5"))),
            KvOutcome::Swapped
        );
        // An undecodable command is refused (the same on every node) and changes nothing.
        assert_eq!(
            KvApplied::decode(&Bytewise::apply(&mut kv, LogIndex(8), b"garbage")),
            None
        );
        assert_eq!(kv.0.applied(), LogIndex(7));
        assert_eq!(
            decode_len(&Bytewise::query(&kv, &KvQuery::Len.encode())),
            Some(1)
        );
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_as_the_first_time() {
        let mut kv = Encoded(KvStateMachine::new());
        let session = |sequence| {
            Some(Session {
                client_id: 9,
                sequence,
            })
        };
        let first = Bytewise::apply(&mut kv, LogIndex(1), &put("k", "v1", session(1)));
        // Someone else writes the key in between.
        Bytewise::apply(&mut kv, LogIndex(2), &put("k", "other", None));
        let retry = Bytewise::apply(&mut kv, LogIndex(3), &put("k", "v1", session(1)));
        assert_eq!(first, retry, "same result, same index");
        assert_eq!(KvApplied::decode(&retry).expect("decodes").index, 1);
        let get = KvQuery::Get { key: "k".into() }.encode();
        assert_eq!(
            decode_get(&Bytewise::query(&kv, &get)),
            Some(Bytes::from_static(b"other"))
        );
        Bytewise::apply(&mut kv, LogIndex(4), &put("k", "v2", session(2)));
        assert_eq!(
            outcome(Bytewise::apply(
                &mut kv,
                LogIndex(5),
                &put("k", "v1", session(1))
            )),
            KvOutcome::StaleSequence
        );
        assert_eq!(
            decode_get(&Bytewise::query(&kv, &get)),
            Some(Bytes::from_static(b"v2"))
        );
    }

    /// The index of the first sweep that forgets a session whose last write was at index 1.
    fn first_sweep_forgetting_index_1() -> u64 {
        (SESSION_TTL_ENTRIES / SESSION_SWEEP_EVERY + 1) * SESSION_SWEEP_EVERY
    }

    #[test]
    fn a_retry_from_an_expired_session_is_refused_and_changes_nothing() {
        let mut kv = Encoded(KvStateMachine::new());
        let session = |sequence| {
            Some(Session {
                client_id: 11,
                sequence,
            })
        };
        let get = KvQuery::Get { key: "k".into() }.encode();
        Bytewise::apply(&mut kv, LogIndex(1), &put("k", "v1", session(1)));
        let second = Bytewise::apply(&mut kv, LogIndex(2), &put("k", "v2", session(2)));
        assert_eq!(outcome(second.clone()), KvOutcome::Put { replaced: true });
        // Someone else overwrites the key; the client's answer to write 2 was lost.
        Bytewise::apply(&mut kv, LogIndex(3), &put("k", "other", None));
        // Before expiry a retry is answered as the first time.
        assert_eq!(
            Bytewise::apply(&mut kv, LogIndex(4), &put("k", "v2", session(2))),
            second
        );
        // More than SESSION_TTL_ENTRIES entries later (expiry goes by log index, so the test
        // jumps there instead of applying a million entries) the sweep forgets the session.
        let sweep_at = first_sweep_forgetting_index_1();
        Bytewise::apply(&mut kv, LogIndex(sweep_at), &put("x", "y", None));
        assert_eq!(kv.0.sessions(), 0, "the session expired");

        // The retry of write 2 now arrives: refused, not applied a second time.
        let retry = Bytewise::apply(&mut kv, LogIndex(sweep_at + 1), &put("k", "v2", session(2)));
        assert_eq!(
            KvApplied::decode(&retry),
            Some(KvApplied {
                index: sweep_at + 1,
                outcome: KvOutcome::SessionExpired
            })
        );
        assert_eq!(
            decode_get(&Bytewise::query(&kv, &get)),
            Some(Bytes::from_static(b"other")),
            "nothing changed"
        );
        assert_eq!(kv.0.sessions(), 0, "no session was started by the refusal");
        assert_eq!(kv.0.applied(), LogIndex(sweep_at + 1));
        // So is any later write of that session, and the same after a snapshot is restored
        // (another node deciding from a snapshot decides alike).
        let writer = Bytewise::snapshot(&kv);
        let mut bytes = Vec::new();
        writer(&mut bytes).expect("written");
        let mut restored = Encoded(KvStateMachine::new());
        Bytewise::restore(&mut restored, &mut bytes.as_slice()).expect("restored");
        for machine in [&mut kv, &mut restored] {
            assert_eq!(
                outcome(Bytewise::apply(
                    machine,
                    LogIndex(sweep_at + 2),
                    &put("k", "v3", session(3))
                )),
                KvOutcome::SessionExpired
            );
            assert_eq!(
                decode_get(&Bytewise::query(machine, &get)),
                Some(Bytes::from_static(b"other"))
            );
        }

        // A new session (a new client id, from 1) is applied as usual.
        let fresh = Some(Session {
            client_id: 12,
            sequence: 1,
        });
        assert_eq!(
            outcome(Bytewise::apply(
                &mut kv,
                LogIndex(sweep_at + 3),
                &put("k", "v4", fresh)
            )),
            KvOutcome::Put { replaced: true }
        );
        assert_eq!(kv.0.sessions(), 1);
    }

    #[test]
    fn an_unknown_client_starts_a_session_only_with_its_first_write() {
        let mut kv = Encoded(KvStateMachine::new());
        let session = |sequence| {
            Some(Session {
                client_id: 5,
                sequence,
            })
        };
        // Write 3 of a client the map never saw: its session can only have been forgotten.
        assert_eq!(
            outcome(Bytewise::apply(
                &mut kv,
                LogIndex(1),
                &put("k", "v3", session(3))
            )),
            KvOutcome::SessionExpired
        );
        assert_eq!(kv.0.sessions(), 0);
        assert_eq!(
            decode_len(&Bytewise::query(&kv, &KvQuery::Len.encode())),
            Some(0)
        );
        // Write 1 starts the session; then write 2 follows as usual.
        assert_eq!(
            outcome(Bytewise::apply(
                &mut kv,
                LogIndex(2),
                &put("k", "v1", session(1))
            )),
            KvOutcome::Put { replaced: false }
        );
        assert_eq!(
            outcome(Bytewise::apply(
                &mut kv,
                LogIndex(3),
                &put("k", "v2", session(2))
            )),
            KvOutcome::Put { replaced: true }
        );
        assert_eq!(kv.0.sessions(), 1);
    }

    #[test]
    fn sessions_expire_by_log_index() {
        let mut kv = Encoded(KvStateMachine::new());
        let session = Some(Session {
            client_id: 1,
            sequence: 1,
        });
        Bytewise::apply(&mut kv, LogIndex(1), &put("k", "v", session));
        assert_eq!(kv.0.sessions(), 1);
        let sweep_at = first_sweep_forgetting_index_1();
        Bytewise::apply(
            &mut kv,
            LogIndex(sweep_at - SESSION_SWEEP_EVERY),
            &put("x", "y", None),
        );
        assert_eq!(kv.0.sessions(), 1, "not yet");
        Bytewise::apply(&mut kv, LogIndex(sweep_at), &put("x", "y", None));
        assert_eq!(
            kv.0.sessions(),
            0,
            "forgotten by every node at the same entry"
        );
    }
}
