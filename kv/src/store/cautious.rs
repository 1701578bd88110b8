//! Decoding the snapshot's `imbl` collections without trusting the lengths written in it.
//!
//! `imbl`'s own `Deserialize` reserves room for as many elements as the data says before reading
//! one: a damaged length in a snapshot or backup whose checksum still matches would ask the
//! allocator for terabytes, and a failed allocation aborts the node instead of failing the
//! restore. These decode the same bytes, reserving at most [`MAX_RESERVED`] elements up front
//! (as serde's own collections do), so memory follows the elements that exist and a length that
//! runs past the end is a clean error. Used with `#[serde(deserialize_with = ...)]` and by the
//! snapshot's visitor; the encoding is `imbl`'s, unchanged.

use imbl::{OrdMap, OrdSet, Vector};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// The most elements reserved from a length read, before they are read.
const MAX_RESERVED: usize = 4096;

fn reserve<T>(hint: Option<usize>) -> Vec<T> {
    Vec::with_capacity(hint.unwrap_or(0).min(MAX_RESERVED))
}

/// Collects a sequence into any collection made from a vector.
struct SeqInto<S, A>(PhantomData<(S, A)>);

impl<'de, S: From<Vec<A>>, A: Deserialize<'de>> Visitor<'de> for SeqInto<S, A> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<Access: SeqAccess<'de>>(self, mut seq: Access) -> Result<S, Access::Error> {
        let mut elements = reserve(seq.size_hint());
        while let Some(element) = seq.next_element()? {
            elements.push(element);
        }
        Ok(S::from(elements))
    }
}

/// Collects a map into any collection made from a vector of pairs.
struct MapInto<S, K, V>(PhantomData<(S, K, V)>);

impl<'de, S: From<Vec<(K, V)>>, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de>
    for MapInto<S, K, V>
{
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<Access: MapAccess<'de>>(self, mut map: Access) -> Result<S, Access::Error> {
        let mut entries = reserve(map.size_hint());
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(S::from(entries))
    }
}

/// An [`OrdMap`], as `imbl` encodes it.
pub(super) fn ord_map<'de, D, K, V>(deserializer: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    deserializer.deserialize_map(MapInto(PhantomData))
}

/// An [`OrdSet`], as `imbl` encodes it.
pub(super) fn ord_set<'de, D, A>(deserializer: D) -> Result<OrdSet<A>, D::Error>
where
    D: Deserializer<'de>,
    A: Deserialize<'de> + Ord + Clone,
{
    deserializer.deserialize_seq(SeqInto(PhantomData))
}

/// A [`Vector`], as `imbl` encodes it.
pub(super) fn vector<'de, D, A>(deserializer: D) -> Result<Vector<A>, D::Error>
where
    D: Deserializer<'de>,
    A: Deserialize<'de> + Clone,
{
    deserializer.deserialize_seq(SeqInto(PhantomData))
}

/// An [`OrdMap`] decoded by [`ord_map`]: for a visitor that reads its elements one by one.
pub(super) struct CautiousOrdMap<K, V>(pub OrdMap<K, V>);

impl<'de, K, V> Deserialize<'de> for CautiousOrdMap<K, V>
where
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ord_map(deserializer).map(CautiousOrdMap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct All {
        #[serde(deserialize_with = "ord_map")]
        map: OrdMap<String, u64>,
        #[serde(deserialize_with = "ord_set")]
        set: OrdSet<String>,
        #[serde(deserialize_with = "vector")]
        vector: Vector<u32>,
    }

    fn sample() -> All {
        All {
            map: (0..5000u64).map(|i| (format!("k{i}"), i)).collect(),
            set: ["a", "b"].into_iter().map(String::from).collect(),
            vector: (0..10).collect(),
        }
    }

    #[test]
    fn reads_what_imbl_writes() {
        let bytes = bincode::serialize(&sample()).expect("encodes");
        let read: All = bincode::deserialize(&bytes).expect("decodes");
        assert_eq!(read, sample());
    }

    /// A map whose length says 2^40 entries in a few bytes: imbl's own decoding reserves room for
    /// all of them first (and the process aborts); here it is an error.
    #[test]
    fn a_length_past_the_end_is_an_error_not_an_allocation() {
        let mut bytes = bincode::serialize(&sample()).expect("encodes");
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(bincode::deserialize::<All>(&bytes).is_err());
        let mut bytes = bincode::serialize(&(OrdMap::<String, u64>::new(), [0u8; 8])).unwrap();
        bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(bincode::deserialize::<All>(&bytes).is_err());
    }
}
