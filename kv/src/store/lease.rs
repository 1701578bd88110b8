//! Leases as the replicated map holds them: an id, a TTL and the keys attached.
//!
//! The map never looks at a clock. A lease ends only by an entry in the log — revoked by a
//! client, or expired by the leader, whose lessor ([`crate::lessor`]) keeps each lease's
//! deadline — so every node removes a lease and its keys at the same index.

use imbl::OrdSet;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The shortest TTL a lease may have.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// The longest TTL a lease may have.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why `ttl` is not a lease TTL, if it is not.
pub fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    let (min, max) = (MIN_LEASE_TTL.as_millis(), MAX_LEASE_TTL.as_millis());
    if u128::from(ttl_ms) < min || u128::from(ttl_ms) > max {
        return Err(format!(
            "a lease's TTL must be from {} s to {} s (7 days); it is {} ms",
            MIN_LEASE_TTL.as_secs(),
            MAX_LEASE_TTL.as_secs(),
            ttl_ms
        ));
    }
    Ok(())
}

/// A lease in the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub ttl_ms: u64,
    /// The keys attached to it; each such key's `lease` names this lease.
    #[serde(deserialize_with = "super::cautious::ord_set")]
    pub keys: OrdSet<String>,
}

/// A lease as reads return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The lease's id: the log index of the entry that granted it.
    pub id: u64,
    pub ttl_ms: u64,
    /// How long until the leader expires it unless kept alive (from the leader's lessor; `None`
    /// where the leader did not say).
    pub remaining_ms: Option<u64>,
    /// The keys attached to it (at most [`LEASE_VIEW_MAX_KEYS`]); `keys_total` counts them all.
    pub keys: Vec<String>,
    pub keys_total: u64,
}

/// At most this many of a lease's keys are listed when it is read.
pub const LEASE_VIEW_MAX_KEYS: usize = 1_000;

impl LeaseRecord {
    pub fn view(&self, id: u64) -> LeaseView {
        LeaseView {
            keys: self
                .keys
                .iter()
                .take(LEASE_VIEW_MAX_KEYS)
                .cloned()
                .collect(),
            ..self.view_without_keys(id)
        }
    }

    pub fn view_without_keys(&self, id: u64) -> LeaseView {
        LeaseView {
            id,
            ttl_ms: self.ttl_ms,
            remaining_ms: None,
            keys: Vec::new(),
            keys_total: self.keys.len() as u64,
        }
    }
}
