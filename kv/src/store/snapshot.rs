//! A snapshot of the map, and reading the snapshots earlier versions wrote.
//!
//! Version 1 (before revisions) was the bincode of `(applied, map of key to value, sessions)`. The
//! current version starts with [`MAGIC_V2`] in place of `applied` — a number no log index can
//! reach (indexes stay far below 2^62) — then `(applied, map, sessions, leases, history)`. A
//! version 1 snapshot (on disk, in a backup, or sent by a node not yet upgraded) is read with each
//! key's revisions set to the snapshot's index (every key was last written at or before it) and
//! version 1, no leases, and an empty history that starts after the snapshot.

use super::history::History;
use super::keys::Stored;
use super::lease::LeaseRecord;
use super::SessionRecord;
use bytes::Bytes;
use imbl::OrdMap;
use raftor_core::LogIndex;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first eight bytes of a version 2 snapshot, where version 1 had its applied index.
const MAGIC_V2: u64 = 0x5246_544B_5632_0000 | (1 << 63); // "RFTKV2", top bit set

/// A snapshot of the map: everything [`super::KvStateMachine`] holds, as of `applied`. The
/// sessions are part of it, so exactly-once answers survive compaction; the leases and the
/// history too, so leases and watches survive it.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    pub(super) applied: LogIndex,
    pub(super) map: OrdMap<String, Stored>,
    pub(super) sessions: OrdMap<u64, SessionRecord>,
    pub(super) leases: OrdMap<u64, LeaseRecord>,
    pub(super) history: History,
}

impl KvSnapshot {
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
            // Version 1: `first` was the applied index.
            let map: OrdMap<String, Bytes> = need::<_, A::Error>(seq.next_element()?, "map")?;
            let sessions = need::<_, A::Error>(seq.next_element()?, "sessions")?;
            return Ok(KvSnapshot {
                applied: LogIndex(first),
                map: map
                    .into_iter()
                    .map(|(key, value)| {
                        let stored = Stored {
                            value,
                            create_index: first,
                            mod_index: first,
                            version: 1,
                            lease: 0,
                        };
                        (key, stored)
                    })
                    .collect(),
                sessions,
                leases: OrdMap::new(),
                history: History::starting_after(first),
            });
        }
        Ok(KvSnapshot {
            applied: need::<_, A::Error>(seq.next_element()?, "applied index")?,
            map: need::<_, A::Error>(seq.next_element()?, "map")?,
            sessions: need::<_, A::Error>(seq.next_element()?, "sessions")?,
            leases: need::<_, A::Error>(seq.next_element()?, "leases")?,
            history: need::<_, A::Error>(seq.next_element()?, "history")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_snapshot_is_read_with_revisions_at_its_index() {
        #[derive(Serialize)]
        struct V1 {
            applied: LogIndex,
            map: OrdMap<String, Bytes>,
            sessions: OrdMap<u64, SessionRecord>,
        }
        let old = V1 {
            applied: LogIndex(42),
            map: [("a".to_owned(), Bytes::from_static(b"1"))]
                .into_iter()
                .collect(),
            sessions: OrdMap::new(),
        };
        let bytes = bincode::serialize(&old).expect("encodes");
        let read: KvSnapshot = bincode::deserialize(&bytes).expect("decodes");
        assert_eq!(read.applied, LogIndex(42));
        let stored = read.map.get("a").expect("kept");
        assert_eq!(stored.value, Bytes::from_static(b"1"));
        assert_eq!(
            (stored.create_index, stored.mod_index, stored.version),
            (42, 42, 1)
        );
        assert_eq!(read.history.compacted_through(), 42);

        // And the current version reads back as written.
        let again: KvSnapshot =
            bincode::deserialize(&bincode::serialize(&read).expect("encodes")).expect("decodes");
        assert_eq!(again.applied, LogIndex(42));
        assert_eq!(again.map, read.map);
        assert_eq!(again.history, read.history);
    }
}
