//! A snapshot of the map, and the snapshots earlier versions wrote.
//!
//! Version 1 (before revisions) was the bincode of `(applied, map of key to value, sessions)`. The
//! current version starts with [`MAGIC_V2`] in place of `applied` — a number no log index can
//! reach (indexes stay far below 2^62) — then `(applied, map, sessions, leases, history)`.
//!
//! A node does not load a version 1 snapshot: it would have to invent its keys' revisions, and
//! each node took its snapshots at its own indexes while a node without one replays the log, so
//! the nodes would disagree on revisions — and a transaction comparing them would take different
//! branches on different nodes. Instead a version 1 snapshot is refused with a message saying how
//! to upgrade: back up with the old version and `raftor restore` the backup into a new cluster.
//! Restoring converts it ([`KvSnapshot::decode_any`]): every founder then starts from the same
//! snapshot, each key's revisions set to its index (every key was last written at or before it)
//! and version 1, no leases, and a history that starts after it — the same on every node.

use super::cautious::{self, CautiousOrdMap};
use super::history::History;
use super::keys::{MapKey, Stored};
use super::lease::LeaseRecord;
use super::SessionRecord;
use bytes::Bytes;
use imbl::OrdMap;
use raftor_core::LogIndex;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first eight bytes of a version 2 snapshot, where version 1 had its applied index.
const MAGIC_V2: u64 = 0x5246_544B_5632_0000 | (1 << 63); // "RFTKV2", top bit set

/// Why a node refuses a version 1 snapshot.
pub const VERSION_1_REFUSED: &str = "this snapshot was written by a raftor version before key revisions (issue 20); a node cannot load it without disagreeing with the others on revisions. To upgrade: `raftor backup` the cluster with the old version, then `raftor restore` the backup into a new cluster's data directories with this version (nothing in this data directory was changed)";

/// A snapshot of the map: everything [`super::KvStateMachine`] holds, as of `applied`. The
/// sessions are part of it, so exactly-once answers survive compaction; the leases and the
/// history too, so leases and watches survive it.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    pub(super) applied: LogIndex,
    pub(super) map: OrdMap<MapKey, Stored>,
    pub(super) sessions: OrdMap<u64, SessionRecord>,
    pub(super) leases: OrdMap<u64, LeaseRecord>,
    pub(super) history: History,
}

/// The layout of version 1.
#[derive(Serialize, Deserialize)]
struct Version1 {
    applied: LogIndex,
    #[serde(deserialize_with = "cautious::ord_map")]
    map: OrdMap<String, Bytes>,
    #[serde(deserialize_with = "cautious::ord_map")]
    sessions: OrdMap<u64, SessionRecord>,
}

impl KvSnapshot {
    /// Decodes a snapshot of either version (a version 1 one converted as the module says): for
    /// seeding every founder of a new cluster from the same backup.
    pub fn decode_any(bytes: &[u8]) -> Result<KvSnapshot, String> {
        if KvSnapshot::is_version_1(bytes) {
            let old: Version1 = bincode::deserialize(bytes)
                .map_err(|e| format!("a version 1 snapshot that does not decode: {e}"))?;
            return Ok(KvSnapshot::from_version_1(old));
        }
        bincode::deserialize(bytes).map_err(|e| e.to_string())
    }

    fn from_version_1(old: Version1) -> KvSnapshot {
        let index = old.applied.0;
        KvSnapshot {
            applied: old.applied,
            map: old
                .map
                .into_iter()
                .map(|(key, value)| {
                    let stored = Stored {
                        value,
                        create_index: index,
                        mod_index: index,
                        version: 1,
                        lease: 0,
                    };
                    (MapKey::from(key), stored)
                })
                .collect(),
            sessions: old.sessions,
            leases: OrdMap::new(),
            history: History::starting_after(index),
        }
    }

    /// Whether `bytes` begin a version 1 snapshot.
    pub fn is_version_1(bytes: &[u8]) -> bool {
        bytes.len() >= 8 && bytes[..8] != MAGIC_V2.to_le_bytes()
    }

    /// The last entry it includes.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// How many keys it holds.
    pub fn keys(&self) -> usize {
        self.map.len()
    }
}

impl Serialize for KvSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(6)?;
        tuple.serialize_element(&MAGIC_V2)?;
        tuple.serialize_element(&self.applied)?;
        tuple.serialize_element(&self.map)?;
        tuple.serialize_element(&self.sessions)?;
        tuple.serialize_element(&self.leases)?;
        tuple.serialize_element(&self.history)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for KvSnapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(6, SnapshotVisitor)
    }
}

struct SnapshotVisitor;

fn need<T, E: serde::de::Error>(value: Option<T>, what: &str) -> Result<T, E> {
    value.ok_or_else(|| E::custom(format!("the snapshot ends before its {what}")))
}

impl<'de> Visitor<'de> for SnapshotVisitor {
    type Value = KvSnapshot;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key-value snapshot")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KvSnapshot, A::Error> {
        let first: u64 = need::<_, A::Error>(seq.next_element()?, "header")?;
        if first != MAGIC_V2 {
            return Err(A::Error::custom(VERSION_1_REFUSED));
        }
        Ok(KvSnapshot {
            applied: need::<_, A::Error>(seq.next_element()?, "applied index")?,
            map: need::<_, A::Error>(seq.next_element::<CautiousOrdMap<_, _>>()?, "map")?.0,
            sessions: need::<_, A::Error>(seq.next_element::<CautiousOrdMap<_, _>>()?, "sessions")?
                .0,
            leases: need::<_, A::Error>(seq.next_element::<CautiousOrdMap<_, _>>()?, "leases")?.0,
            history: need::<_, A::Error>(seq.next_element()?, "history")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_snapshot_is_refused_by_a_node_and_converted_by_a_restore() {
        let old = Version1 {
            applied: LogIndex(42),
            map: [("a".to_owned(), Bytes::from_static(b"1"))]
                .into_iter()
                .collect(),
            sessions: OrdMap::new(),
        };
        let bytes = bincode::serialize(&old).expect("encodes");
        assert!(KvSnapshot::is_version_1(&bytes));
        let refused = bincode::deserialize::<KvSnapshot>(&bytes).expect_err("refused");
        assert!(refused.to_string().contains("raftor restore"), "{refused}");

        let read = KvSnapshot::decode_any(&bytes).expect("converted");
        assert_eq!(read.applied, LogIndex(42));
        let stored = read.map.get("a").expect("kept");
        assert_eq!(stored.value, Bytes::from_static(b"1"));
        assert_eq!(
            (stored.create_index, stored.mod_index, stored.version),
            (42, 42, 1)
        );
        assert_eq!(read.history.compacted_through(), 42);

        // The current version reads back as written, by a node and by a restore.
        let current = bincode::serialize(&read).expect("encodes");
        assert!(!KvSnapshot::is_version_1(&current));
        let again: KvSnapshot = bincode::deserialize(&current).expect("decodes");
        assert_eq!(again.applied, LogIndex(42));
        assert_eq!(again.map, read.map);
        assert_eq!(again.history, read.history);
        assert_eq!(
            KvSnapshot::decode_any(&current).expect("decodes").map,
            read.map
        );
    }

    /// The map's keys became inline strings: snapshots written when they were `String`s read
    /// back the same, and new ones are byte for byte what the old code wrote.
    #[test]
    fn map_keys_are_encoded_as_strings_were() {
        let stored = Stored {
            value: Bytes::from_static(b"v"),
            create_index: 3,
            mod_index: 5,
            version: 2,
            lease: 0,
        };
        let long_key = "a key longer than the twenty-four bytes kept inline".to_owned();
        let as_strings: OrdMap<String, Stored> = [
            ("k1".to_owned(), stored.clone()),
            (long_key.clone(), stored.clone()),
        ]
        .into_iter()
        .collect();
        let as_map_keys: OrdMap<MapKey, Stored> = [
            (MapKey::from("k1"), stored.clone()),
            (MapKey::from(long_key.as_str()), stored),
        ]
        .into_iter()
        .collect();
        let old = bincode::serialize(&as_strings).expect("encodes");
        assert_eq!(bincode::serialize(&as_map_keys).expect("encodes"), old);
        let read: OrdMap<MapKey, Stored> = bincode::deserialize(&old).expect("decodes");
        assert_eq!(read, as_map_keys);
    }

    /// A snapshot whose checksum matched but whose lengths are damaged (another build's file, a
    /// buggy writer) fails to restore with an error, from a file or a backup, instead of asking
    /// the allocator for terabytes and aborting the node; the machine keeps its state.
    #[test]
    fn damaged_lengths_fail_the_restore_cleanly() {
        let snapshot = KvSnapshot {
            applied: LogIndex(9),
            map: [(MapKey::from("key"), stored_value())]
                .into_iter()
                .collect(),
            sessions: OrdMap::new(),
            leases: OrdMap::new(),
            history: History::starting_after(9),
        };
        let bytes = bincode::serialize(&snapshot).expect("encodes");
        // The magic, the applied index, then the map's length, then its first key's length.
        let huge = (1u64 << 40).to_le_bytes();
        let mut long_map = bytes.clone();
        long_map[16..24].copy_from_slice(&huge);
        let mut long_key = bytes.clone();
        long_key[24..32].copy_from_slice(&huge);

        let mut machine = raftor::state_machine::Encoded(super::super::KvStateMachine::new());
        for damaged in [&long_map, &long_key] {
            assert!(KvSnapshot::decode_any(damaged).is_err());
            let restored =
                raftor_actors::StateMachine::restore(&mut machine, &mut damaged.as_slice());
            let error = restored.expect_err("damaged");
            assert!(error.to_string().contains("bad snapshot"), "{error}");
            assert_eq!(machine.0.applied(), LogIndex(0), "untouched");
        }
        raftor_actors::StateMachine::restore(&mut machine, &mut bytes.as_slice()).expect("whole");
        assert_eq!(machine.0.applied(), LogIndex(9));
    }

    fn stored_value() -> Stored {
        Stored {
            value: Bytes::from_static(b"value"),
            create_index: 9,
            mod_index: 9,
            version: 1,
            lease: 0,
        }
    }
}
