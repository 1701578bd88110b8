//! Range and prefix reads, a page at a time.
//!
//! A page holds at most `limit` keys and stops once it holds `max_bytes` (a page always holds at
//! least one key, so a single value over the cap is still readable), so no answer can exhaust a
//! node's memory however large the range (etcd#12342). The next page starts after the page's last
//! key. Each page is read at one index ([`RangePage::index`]); pages of one range may be read at
//! different indexes.

use super::keys::{KeySet, KeyValue, MapKey, Stored};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// The most keys one page may ask for.
pub const MAX_RANGE_LIMIT: u32 = 10_000;
/// The keys per page when the request does not say.
pub const DEFAULT_RANGE_LIMIT: u32 = 1_000;
/// The largest byte cap a page may ask for.
/// (Half the native protocol's largest frame, so a full page always fits in one.)
pub const MAX_RANGE_BYTES: u64 = 32 * 1024 * 1024;
/// The byte cap when the request does not say.
pub const DEFAULT_RANGE_BYTES: u64 = 4 * 1024 * 1024;

/// A read of the keys of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    pub keys: KeySet,
    /// Continue after this key (the previous page's last key, [`RangePage::next_after`]).
    pub after: Option<String>,
    /// At most this many keys (1 to [`MAX_RANGE_LIMIT`]).
    pub limit: u32,
    /// Stop once the page holds this many bytes of keys and values (1 to [`MAX_RANGE_BYTES`]).
    pub max_bytes: u64,
    /// Keys and revisions without values.
    pub keys_only: bool,
    /// Only count the keys (all of them, from `after` on; `limit` and `max_bytes` do not apply).
    pub count_only: bool,
}

impl RangeQuery {
    /// A page of `keys` with the default limits.
    pub fn new(keys: KeySet) -> RangeQuery {
        RangeQuery {
            keys,
            after: None,
            limit: DEFAULT_RANGE_LIMIT,
            max_bytes: DEFAULT_RANGE_BYTES,
            keys_only: false,
            count_only: false,
        }
    }

    /// Why the query is not valid, if it is not.
    pub fn check(&self, max_key_bytes: usize) -> Result<(), String> {
        self.keys.check(max_key_bytes)?;
        if self.limit == 0 || self.limit > MAX_RANGE_LIMIT {
            return Err(format!(
                "limit must be from 1 to {MAX_RANGE_LIMIT}; it is {}",
                self.limit
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > MAX_RANGE_BYTES {
            return Err(format!(
                "max_bytes must be from 1 to {MAX_RANGE_BYTES}; it is {}",
                self.max_bytes
            ));
        }
        match &self.after {
            Some(after) if after.len() > max_key_bytes => {
                Err("the continuation token is longer than any key".into())
            }
            _ => Ok(()),
        }
    }
}

/// One page of a range read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangePage {
    /// The log index the page reflects: every write at or below it, nothing after.
    pub index: u64,
    /// The keys, in order (empty for a count).
    pub kvs: Vec<KeyValue>,
    /// The number of keys in `kvs`, or for a count, in the range.
    pub count: u64,
    /// Whether keys of the range follow this page: ask again with `after` =
    /// [`RangePage::next_after`].
    pub more: bool,
}

impl RangePage {
    /// Where the next page starts (after this key), if there is one.
    pub fn next_after(&self) -> Option<&str> {
        if self.more {
            self.kvs.last().map(|kv| kv.key.as_str())
        } else {
            None
        }
    }
}

/// Read one page of `query` from `map`, as of `index`.
pub(crate) fn read(map: &OrdMap<MapKey, Stored>, query: &RangeQuery, index: u64) -> RangePage {
    let mut keys = query.keys.iter(map, query.after.as_deref());
    if query.count_only {
        return RangePage {
            index,
            kvs: Vec::new(),
            count: keys.count() as u64,
            more: false,
        };
    }
    let mut kvs = Vec::new();
    let mut bytes = 0u64;
    let mut more = false;
    for (key, stored) in keys.by_ref() {
        if kvs.len() as u64 >= u64::from(query.limit)
            || (bytes >= query.max_bytes && !kvs.is_empty())
        {
            more = true;
            break;
        }
        let kv = stored.key_value(key, !query.keys_only);
        bytes += kv.cost() as u64;
        kvs.push(kv);
    }
    RangePage {
        index,
        count: kvs.len() as u64,
        kvs,
        more,
    }
}
