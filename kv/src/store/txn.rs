//! Transactions: compares on keys, then one list of operations if they all hold and another if
//! not, applied atomically at one log index (the model of etcd's v3 `Txn`). A compare-and-swap is
//! the transaction "the value is X, then put Y, else get the key".

use super::keys::{KeySet, KeyValue, Stored};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A transaction: `success` is applied if every compare holds, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One condition on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a compare looks at. An absent key has version, create index, modification index and
/// lease 0 (so "version = 0" tests that a key is absent), and no value: a compare of the value
/// of an absent key never holds, whatever its operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Bytes),
    Version(u64),
    CreateIndex(u64),
    ModIndex(u64),
    /// The lease id (0: none).
    Lease(u64),
}

/// An operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Write the key; with a lease, attach it (the lease must exist), else detach it from any.
    Put {
        key: String,
        value: Bytes,
        lease: Option<u64>,
    },
    /// Delete the keys of the set.
    Delete(KeySet),
    /// Read the key as the transaction sees it at this point.
    Get { key: String },
}

impl TxnOp {
    pub fn payload_bytes(&self) -> usize {
        match self {
            TxnOp::Put { key, value, .. } => key.len() + value.len(),
            TxnOp::Delete(keys) => keys.payload_bytes(),
            TxnOp::Get { key } => key.len(),
        }
    }
}

impl Txn {
    /// The bytes the transaction carries: what it costs to replicate.
    pub fn payload_bytes(&self) -> usize {
        let compares: usize = self
            .compare
            .iter()
            .map(|c| {
                c.key.len()
                    + match &c.target {
                        CompareTarget::Value(value) => value.len(),
                        _ => 8,
                    }
            })
            .sum();
        compares
            + self
                .success
                .iter()
                .chain(&self.failure)
                .map(TxnOp::payload_bytes)
                .sum::<usize>()
    }

    /// Every key and key set the transaction names, with what it is (for validation).
    pub fn key_sets(&self) -> impl Iterator<Item = KeySet> + '_ {
        self.compare
            .iter()
            .map(|c| KeySet::Key(c.key.clone()))
            .chain(self.success.iter().chain(&self.failure).map(|op| match op {
                TxnOp::Put { key, .. } | TxnOp::Get { key } => KeySet::Key(key.clone()),
                TxnOp::Delete(keys) => keys.clone(),
            }))
    }

    /// The values it writes.
    pub fn values(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.success
            .iter()
            .chain(&self.failure)
            .filter_map(|op| match op {
                TxnOp::Put { value, .. } => Some(value),
                _ => None,
            })
            .chain(self.compare.iter().filter_map(|c| match &c.target {
                CompareTarget::Value(value) => Some(value),
                _ => None,
            }))
    }
}

/// What one operation of a transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    /// The key was written; `replaced` when it held a value before.
    Put { replaced: bool },
    /// This many keys were deleted.
    Deleted { count: u64 },
    /// The key as the transaction saw it (`None`: absent).
    Got(Option<KeyValue>),
}

/// What a transaction did: which branch ran, and each of its operations' results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub results: Vec<TxnOpResult>,
}

impl Txn {
    /// The compare-and-swap "`key` holds `expected` (`None`: is absent), then put `value`, else
    /// read `key`": a CAS is this transaction (its outcome read back by [`cas_outcome`]).
    pub fn cas(key: &str, expected: Option<Bytes>, value: Bytes) -> Txn {
        let target = match expected {
            Some(expected) => CompareTarget::Value(expected),
            None => CompareTarget::Version(0),
        };
        Txn {
            compare: vec![Compare {
                key: key.to_owned(),
                op: CompareOp::Equal,
                target,
            }],
            success: vec![TxnOp::Put {
                key: key.to_owned(),
                value,
                lease: None,
            }],
            failure: vec![TxnOp::Get {
                key: key.to_owned(),
            }],
        }
    }
}

/// A [`Txn::cas`] transaction's outcome as the compare-and-swap it stands for.
pub fn cas_outcome(outcome: TxnOutcome) -> super::KvOutcome {
    if outcome.succeeded {
        return super::KvOutcome::Swapped;
    }
    let current = match outcome.results.into_iter().next() {
        Some(TxnOpResult::Got(kv)) => kv.and_then(|kv| kv.value),
        _ => None,
    };
    super::KvOutcome::Mismatch { current }
}

/// Whether `compare` holds for the key's current state (`None`: absent).
pub(crate) fn holds(compare: &Compare, current: Option<&Stored>) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match (&compare.target, current) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(expected), Some(stored)) => stored.value.cmp(expected),
        (CompareTarget::Version(n), _) => current.map_or(0, |s| s.version).cmp(n),
        (CompareTarget::CreateIndex(n), _) => current.map_or(0, |s| s.create_index).cmp(n),
        (CompareTarget::ModIndex(n), _) => current.map_or(0, |s| s.mod_index).cmp(n),
        (CompareTarget::Lease(n), _) => current.map_or(0, |s| s.lease).cmp(n),
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
    }
}
