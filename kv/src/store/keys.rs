//! Which keys a read, a delete, a watch or a transaction's operation is about ([`KeySet`]), and a
//! key with its value and revisions as reads and watches return it ([`KeyValue`]).

use bytes::Bytes;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// A set of keys: one key, a half-open range, or a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeySet {
    /// Exactly this key.
    Key(String),
    /// The keys `k` with `start <= k < end`, in byte order; `end: None` is every key from `start`
    /// on (and `start` empty with no end is every key).
    Range { start: String, end: Option<String> },
    /// The keys that begin with this prefix (the empty prefix is every key).
    Prefix(String),
}

impl KeySet {
    /// Whether `key` is in the set.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeySet::Key(only) => key == only,
            KeySet::Range { start, end } => {
                key >= start.as_str() && end.as_deref().is_none_or(|end| key < end)
            }
            KeySet::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }

    /// Why the set is not a valid request, if it is not: an empty key, an inverted or empty
    /// range, a key or bound over `max_key_bytes`.
    pub fn check(&self, max_key_bytes: usize) -> Result<(), String> {
        let long = |what: &str, text: &str| {
            (text.len() > max_key_bytes).then(|| {
                format!(
                    "the {what} is {} bytes; the limit is {max_key_bytes}",
                    text.len()
                )
            })
        };
        let problem = match self {
            KeySet::Key(key) if key.is_empty() => Some("the key is empty".to_owned()),
            KeySet::Key(key) => long("key", key),
            KeySet::Range { start, end } => match end {
                Some(end) if end.as_str() <= start.as_str() => Some(format!(
                    "the range is empty or inverted: end {end:?} is not after start {start:?}"
                )),
                Some(end) => long("range start", start).or_else(|| long("range end", end)),
                None => long("range start", start),
            },
            KeySet::Prefix(prefix) => long("prefix", prefix),
        };
        problem.map_or(Ok(()), Err)
    }

    /// The keys of `map` in the set, in key order, from the first key after `after` (or from
    /// the start of the set).
    pub fn iter<'a, V: Clone>(
        &'a self,
        map: &'a OrdMap<MapKey, V>,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a MapKey, &'a V)> + 'a {
        let low: &str = match self {
            KeySet::Key(key) => key,
            KeySet::Range { start, .. } => start,
            KeySet::Prefix(prefix) => prefix,
        };
        let lower = match after {
            Some(after) if after >= low => Bound::Excluded(after),
            _ => Bound::Included(low),
        };
        map.range::<(Bound<&str>, Bound<&str>), str>((lower, Bound::Unbounded))
            .take_while(move |(key, _)| match self {
                KeySet::Key(only) => key.as_str() == only.as_str(),
                KeySet::Range { end, .. } => end.as_deref().is_none_or(|end| key.as_str() < end),
                KeySet::Prefix(prefix) => key.starts_with(prefix.as_str()),
            })
    }

    /// The bytes the set's keys take (what it costs to carry).
    pub fn payload_bytes(&self) -> usize {
        match self {
            KeySet::Key(key) | KeySet::Prefix(key) => key.len(),
            KeySet::Range { start, end } => start.len() + end.as_ref().map_or(0, String::len),
        }
    }
}

/// A key as the map holds it: up to 24 bytes inline (keys are usually short), so that the
/// comparisons of a lookup read the map's own nodes instead of following a pointer per key, a
/// cache miss each in a large map; that made lookups a fifth of all the CPU of an in-memory
/// benchmark (BENCHMARKS.md, "The Raft overhead, against openraft"). Serialized as a string.
pub type MapKey = compact_str::CompactString;

/// A key with its value and revisions, as reads, transactions and watches return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    /// The value; `None` in a keys-only read, and in a watch's delete event.
    pub value: Option<Bytes>,
    /// The log index of the write that created the key (since it last did not exist).
    pub create_index: u64,
    /// The log index of the key's latest write (for a delete event: of the delete).
    pub mod_index: u64,
    /// How many times the key was written since it was created (1 after its creation; 0 in a
    /// delete event).
    pub version: u64,
    /// The lease the key is attached to, if any: the key goes when the lease does.
    pub lease: Option<u64>,
}

impl KeyValue {
    /// The bytes it carries (key and value) plus a fixed overhead for its revisions, as the byte
    /// caps on pages, histories and watch buffers count it.
    pub fn cost(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Bytes::len) + 48
    }
}

/// A key's value and revisions as the map stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub value: Bytes,
    pub create_index: u64,
    pub mod_index: u64,
    pub version: u64,
    /// 0: no lease.
    pub lease: u64,
}

impl Stored {
    pub fn key_value(&self, key: &str, with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: with_value.then(|| self.value.clone()),
            create_index: self.create_index,
            mod_index: self.mod_index,
            version: self.version,
            lease: (self.lease != 0).then_some(self.lease),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> OrdMap<MapKey, ()> {
        keys.iter().map(|k| (MapKey::from(*k), ())).collect()
    }

    fn keys(set: &KeySet, map: &OrdMap<MapKey, ()>, after: Option<&str>) -> Vec<String> {
        set.iter(map, after).map(|(k, _)| k.to_string()).collect()
    }

    #[test]
    fn sets_select_keys_in_order_and_resume_after_a_key() {
        let m = map(&["a", "app", "apple", "b", "ba", "c"]);
        assert_eq!(
            keys(&KeySet::Prefix("ap".into()), &m, None),
            ["app", "apple"]
        );
        assert_eq!(keys(&KeySet::Prefix("".into()), &m, None).len(), 6);
        let range = KeySet::Range {
            start: "app".into(),
            end: Some("ba".into()),
        };
        assert_eq!(keys(&range, &m, None), ["app", "apple", "b"]);
        assert_eq!(keys(&range, &m, Some("apple")), ["b"]);
        assert_eq!(keys(&range, &m, Some("0")), ["app", "apple", "b"]);
        let open = KeySet::Range {
            start: "b".into(),
            end: None,
        };
        assert_eq!(keys(&open, &m, None), ["b", "ba", "c"]);
        assert_eq!(keys(&KeySet::Key("b".into()), &m, None), ["b"]);
        assert_eq!(
            keys(&KeySet::Key("bb".into()), &m, None),
            Vec::<String>::new()
        );
        for key in ["app", "apple", "b"] {
            assert!(range.contains(key));
        }
        assert!(!range.contains("ba") && !range.contains("a"));
    }

    #[test]
    fn bad_sets_are_refused() {
        assert!(KeySet::Key(String::new()).check(10).is_err());
        assert!(KeySet::Key("x".repeat(11)).check(10).is_err());
        let inverted = KeySet::Range {
            start: "b".into(),
            end: Some("a".into()),
        };
        assert!(inverted.check(10).unwrap_err().contains("inverted"));
        let empty = KeySet::Range {
            start: "a".into(),
            end: Some("a".into()),
        };
        assert!(empty.check(10).is_err());
        assert!(KeySet::Prefix(String::new()).check(10).is_ok());
    }
}
