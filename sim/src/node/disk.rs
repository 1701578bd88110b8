//! The durable part of a simulated node's disk, and the snapshots it stores.

use crate::log::SimLog;
use crate::trace::Fnv;
use bytes::Bytes;
use raftor_core::{HardState, LogId, LogIndex, Membership, SnapshotMeta, Standing, Term};
use std::collections::BTreeMap;

/// A snapshot of the simulated state machine: its metadata and bytes (the state digest, then
/// padding, so that it takes several chunks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SimSnapshot {
    pub(crate) meta: SnapshotMeta,
    /// The digest of the state: the hash of the log up to `meta.last_included`.
    pub(crate) hash: u64,
    pub(crate) data: Bytes,
}

fn checksum(data: &[u8]) -> u32 {
    let mut h = Fnv::new();
    h.bytes(data);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

impl SimSnapshot {
    pub(super) fn new(
        last: LogId,
        hash: u64,
        membership: Membership,
        padding: usize,
    ) -> SimSnapshot {
        let mut data = Vec::with_capacity(24 + padding);
        data.extend_from_slice(&last.index.0.to_le_bytes());
        data.extend_from_slice(&last.term.0.to_le_bytes());
        data.extend_from_slice(&hash.to_le_bytes());
        data.extend((0..padding).map(|i| (i as u8).wrapping_mul(31)));
        SimSnapshot {
            meta: SnapshotMeta {
                last_included: last,
                size: data.len() as u64,
                checksum: checksum(&data),
                membership: Box::new(membership),
            },
            hash,
            data: Bytes::from(data),
        }
    }

    /// The snapshot assembled from received bytes, if they check out against `meta`.
    pub(super) fn parse(meta: SnapshotMeta, data: Vec<u8>) -> Result<SimSnapshot, String> {
        if data.len() as u64 != meta.size || checksum(&data) != meta.checksum || data.len() < 24 {
            return Err(format!(
                "snapshot {} arrived damaged ({} bytes)",
                meta.last_included,
                data.len()
            ));
        }
        let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().expect("8"));
        let last = LogId::new(Term(word(1)), LogIndex(word(0)));
        if last != meta.last_included {
            return Err(format!(
                "snapshot {} holds the state at {last}",
                meta.last_included
            ));
        }
        Ok(SimSnapshot {
            hash: word(2),
            meta,
            data: Bytes::from(data),
        })
    }

    pub(crate) fn last(&self) -> LogId {
        self.meta.last_included
    }
}

/// The durable part of the disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: HardState,
    /// A new disk is rejoining (the default, as for a new store).
    pub(crate) standing: Standing,
    pub(crate) log: SimLog,
    /// The snapshot store: every snapshot taken or received, by last included entry.
    pub(crate) snapshots: BTreeMap<LogId, SimSnapshot>,
}

impl Disk {
    /// The newest snapshot, which a restart restores and a leader sends.
    pub(crate) fn newest(&self) -> Option<&SimSnapshot> {
        self.snapshots.values().max_by_key(|s| s.last().index)
    }

    /// `(last_included, digest)` of every stored snapshot, for compactions to one of them.
    pub(super) fn hashes(&self) -> Vec<(LogId, u64)> {
        self.snapshots
            .values()
            .map(|s| (s.last(), s.hash))
            .collect()
    }

    pub(super) fn store(&mut self, snapshot: SimSnapshot) {
        self.snapshots.insert(snapshot.last(), snapshot);
    }
}
