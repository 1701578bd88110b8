//! The replicated key-value map: raftor's first state machine.

use bytes::Bytes;
use raftor_actors::StateMachine;
use raftor_core::LogIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change to the map, proposed through Raft and applied on every node in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

/// A read of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    Get { key: String },
    Len,
}

/// What applying a [`KvCommand`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutcome {
    /// The key was written; `replaced` when it held a value before.
    Put { replaced: bool },
    /// The key was removed; `existed` when it held a value.
    Deleted { existed: bool },
    /// The command could not be decoded; nothing changed (every node decides the same).
    Invalid,
}

impl KvCommand {
    pub fn encode(&self) -> Bytes {
        // Encoding plain strings and bytes into a Vec cannot fail.
        Bytes::from(bincode::serialize(self).unwrap_or_default())
    }
}

impl KvQuery {
    pub fn encode(&self) -> Bytes {
        Bytes::from(bincode::serialize(self).unwrap_or_default())
    }
}

impl KvOutcome {
    pub fn decode(bytes: &[u8]) -> Option<KvOutcome> {
        bincode::deserialize(bytes).ok()
    }
}

/// Decodes the answer to [`KvQuery::Get`].
pub fn decode_get(bytes: &[u8]) -> Option<Bytes> {
    bincode::deserialize::<Option<Bytes>>(bytes).ok().flatten()
}

/// Decodes the answer to [`KvQuery::Len`].
pub fn decode_len(bytes: &[u8]) -> Option<u64> {
    bincode::deserialize::<u64>(bytes).ok()
}

/// The map itself, with the index of the last command applied to it.
#[derive(Debug, Default)]
pub struct KvStateMachine {
    map: BTreeMap<String, Bytes>,
    /// The index of the last entry applied; grows by log order.
    applied: LogIndex,
}

impl KvStateMachine {
    pub fn new() -> KvStateMachine {
        KvStateMachine::default()
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.applied = index;
        let outcome = match bincode::deserialize::<KvCommand>(command) {
            Ok(KvCommand::Put { key, value }) => KvOutcome::Put {
                replaced: self.map.insert(key, value).is_some(),
            },
            Ok(KvCommand::Delete { key }) => KvOutcome::Deleted {
                existed: self.map.remove(&key).is_some(),
            },
            Err(_) => KvOutcome::Invalid,
        };
        Bytes::from(bincode::serialize(&outcome).unwrap_or_default())
    }

    fn query(&self, query: &[u8]) -> Bytes {
        let answer = match bincode::deserialize::<KvQuery>(query) {
            Ok(KvQuery::Get { key }) => bincode::serialize(&self.map.get(&key)),
            Ok(KvQuery::Len) => bincode::serialize(&(self.map.len() as u64)),
            Err(_) => bincode::serialize(&Option::<Bytes>::None),
        };
        Bytes::from(answer.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete() {
        let mut kv = KvStateMachine::new();
        let put = KvCommand::Put {
            key: "a".into(),
            value: Bytes::from_static(b"1"),
        };
        assert_eq!(
            KvOutcome::decode(&kv.apply(LogIndex(1), &put.encode())),
            Some(KvOutcome::Put { replaced: false })
        );
        assert_eq!(
            KvOutcome::decode(&kv.apply(LogIndex(2), &put.encode())),
            Some(KvOutcome::Put { replaced: true })
        );
        let get = KvQuery::Get { key: "a".into() }.encode();
        assert_eq!(decode_get(&kv.query(&get)), Some(Bytes::from_static(b"1")));
        let delete = KvCommand::Delete { key: "a".into() }.encode();
        assert_eq!(
            KvOutcome::decode(&kv.apply(LogIndex(3), &delete)),
            Some(KvOutcome::Deleted { existed: true })
        );
        assert_eq!(decode_get(&kv.query(&get)), None);
        assert_eq!(
            KvOutcome::decode(&kv.apply(LogIndex(4), b"garbage")),
            Some(KvOutcome::Invalid)
        );
        assert_eq!(kv.applied(), LogIndex(4));
        assert_eq!(decode_len(&kv.query(&KvQuery::Len.encode())), Some(0));
    }
}
