//! Tests of the rules: exact-output unit tests, and scenarios on a tiny synchronous cluster.

mod cluster;
mod election;
mod invariants;
mod membership;
mod reads;
mod rejoin;
mod replication;
mod sends;
mod snapshots;
mod spare;

use crate::{
    AppendEntries, Entry, EntryPayload, LogId, LogIndex, Message, NodeId, RaftConfig, Term,
};
use bytes::Bytes;

pub(crate) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// A configuration for `id` in a cluster of `n`, with pre-vote and check-quorum as given.
pub(crate) fn config(id: u64, n: u64, pre_vote: bool) -> RaftConfig {
    let mut config = RaftConfig::new(NodeId(id), ids(n));
    config.pre_vote = pre_vote;
    config.check_quorum = pre_vote;
    // Small messages and a short pipeline, so that scenarios exercise flow control.
    config.replication.max_entries_per_message = 3;
    config.replication.max_inflight = 4;
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

/// An AppendEntries of `term` after `prev`, carrying `entries`, with the leader's `commit`.
pub(crate) fn append(term: u64, prev: LogId, entries: Vec<Entry>, commit: u64) -> Message {
    Message::AppendEntries(AppendEntries {
        term: Term(term),
        prev_log_id: prev,
        entries,
        leader_commit: LogIndex(commit),
        sync_may_wait: false,
        request_id: 0,
    })
}

/// Carry out the leader's sends as a driver would, every order sent whole; returns each
/// AppendEntries as (peer, request id, the last entry it carries or vouches for).
pub(crate) fn carry_out(
    raft: &mut crate::Raft,
    sends: Vec<crate::PeerSend>,
) -> Vec<(NodeId, u64, LogId)> {
    let mut sent = Vec::new();
    for send in sends {
        match send {
            crate::PeerSend::Message(crate::Envelope {
                to,
                message: crate::Message::AppendEntries(request),
                ..
            }) => {
                let last = request
                    .entries
                    .last()
                    .map_or(request.prev_log_id, Entry::log_id);
                sent.push((to, request.request_id, last));
            }
            crate::PeerSend::Entries(order) => {
                raft.on_send_outcome(crate::SendOutcome::EntriesSent {
                    to: order.to,
                    request_id: order.request_id,
                    last_index: order.last_index,
                    bytes: 0,
                });
                let term = raft
                    .log_terms()
                    .term_at(order.last_index)
                    .expect("ordered from the log");
                sent.push((
                    order.to,
                    order.request_id,
                    LogId::new(term, order.last_index),
                ));
            }
            _ => {}
        }
    }
    sent
}

/// `peer` answers the leader's message `request_id`: it holds the leader's log up to `matched`.
pub(crate) fn succeed(raft: &mut crate::Raft, peer: NodeId, request_id: u64, matched: LogId) {
    let term = raft.current_term();
    raft.step(
        peer,
        crate::Message::AppendEntriesResponse(crate::AppendEntriesResponse {
            term,
            request_id,
            outcome: crate::AppendOutcome::Success { matched },
        }),
    );
}
