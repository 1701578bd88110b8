//! Tests of the rules: exact-output unit tests, and scenarios on a tiny synchronous cluster.

mod cluster;
mod election;
mod invariants;
mod membership;
mod reads;
mod rejoin;
mod replication;
mod snapshots;

use crate::{Entry, EntryPayload, LogId, LogIndex, NodeId, RaftConfig, Term};
use bytes::Bytes;

pub(crate) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// A configuration for `id` in a cluster of `n`, with pre-vote and check-quorum as given.
pub(crate) fn config(id: u64, n: u64, pre_vote: bool) -> RaftConfig {
    let mut config = RaftConfig::new(NodeId(id), ids(n));
    config.pre_vote = pre_vote;
    config.check_quorum = pre_vote;
    config
}

pub(crate) fn entry(index: u64, term: u64, command: &str) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::copy_from_slice(command.as_bytes())),
    }
}

pub(crate) fn id(index: u64, term: u64) -> LogId {
    LogId::new(Term(term), LogIndex(index))
}
