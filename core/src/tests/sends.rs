//! The leader's sends and the driver's outcomes (`replication/`): orders cut short, orders lost,
//! snapshots that cannot be opened, and a snapshot's chunks following the peer's answers.

use super::{config, ids};
use crate::tests::cluster::Cluster;
use crate::{
    AppendEntriesResponse, AppendOutcome, ChunkOrder, ConflictHint, EntriesOrder,
    InstallSnapshotResponse, LogId, LogIndex, Membership, Message, NodeId, PeerSend, ProgressState,
    Raft, SendOutcome, SnapshotMeta, SnapshotOutcome,
};
use bytes::Bytes;

/// A 3-node cluster whose leader is then cut off, so that the test alone answers for its peers.
fn isolated_leader() -> (Cluster, NodeId, NodeId) {
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    cluster.tick_all(5);
    cluster.isolate(leader);
    let peer = ids(3).into_iter().find(|p| *p != leader).expect("a peer");
    (cluster, leader, peer)
}

fn entries_orders(sends: &[PeerSend], to: NodeId) -> Vec<EntriesOrder> {
    sends
        .iter()
        .filter_map(|send| match send {
            PeerSend::Entries(order) if order.to == to => Some(order.clone()),
            _ => None,
        })
        .collect()
}

fn chunk_orders(sends: &[PeerSend], to: NodeId) -> Vec<ChunkOrder> {
    sends
        .iter()
        .filter_map(|send| match send {
            PeerSend::SnapshotChunk(order) if order.to == to => Some(order.clone()),
            _ => None,
        })
        .collect()
}

fn opens(sends: &[PeerSend], to: NodeId) -> Vec<u64> {
    sends
        .iter()
        .filter_map(|send| match send {
            PeerSend::OpenSnapshot {
                to: peer,
                request_id,
            } if *peer == to => Some(*request_id),
            _ => None,
        })
        .collect()
}

fn progress_state(raft: &Raft, peer: NodeId) -> (ProgressState, LogIndex, LogId) {
    let (_, progress) = raft
        .replication_progress()
        .expect("leader")
        .find(|(id, _)| *id == peer)
        .expect("a target");
    (progress.state(), progress.next_index(), progress.matched())
}

/// Ticks until a heartbeat period passes; returns what the leader sent meanwhile.
fn next_heartbeat(raft: &mut Raft) -> Vec<PeerSend> {
    let mut sends = Vec::new();
    for _ in 0..raft.config().heartbeat_ticks {
        raft.tick();
        sends.extend(raft.take_ready().sends);
    }
    sends
}

#[test]
fn an_order_cut_short_goes_on_from_where_its_message_ended() {
    let (mut cluster, leader, peer) = isolated_leader();
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    let last = raft.last_log_id().index;
    raft.propose(vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")])
        .expect("leader");
    let orders = entries_orders(&raft.take_ready().sends, peer);
    assert_eq!(orders.len(), 1, "one order at a time");
    assert_eq!(
        (orders[0].first_index(), orders[0].last_index),
        (last.next(), LogIndex(last.0 + 3))
    );
    assert!(
        raft.take_sends().is_empty(),
        "nothing more until it is reported"
    );
    // The driver's byte bound let one entry go.
    raft.on_send_outcome(SendOutcome::EntriesSent {
        to: peer,
        request_id: orders[0].request_id,
        last_index: last.next(),
        bytes: 1,
    });
    let next = entries_orders(&raft.take_sends(), peer);
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].prev_log_id.index,
        last.next(),
        "from where the message ended"
    );
    assert_eq!(next[0].last_index, LogIndex(last.0 + 3));
}

#[test]
fn an_order_never_reported_is_given_up_and_its_late_report_ignored() {
    let (mut cluster, leader, peer) = isolated_leader();
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    raft.propose(vec![Bytes::from("a")]).expect("leader");
    let lost = entries_orders(&raft.take_ready().sends, peer).remove(0);
    // Two heartbeat periods: still waiting for the report.
    for _ in 0..2 {
        assert!(entries_orders(&next_heartbeat(raft), peer).is_empty());
    }
    // The third gives it up and orders the entries again.
    let again = entries_orders(&next_heartbeat(raft), peer);
    assert_eq!(again.len(), 1, "ordered again");
    assert_eq!(again[0].first_index(), lost.first_index());
    assert_ne!(again[0].request_id, lost.request_id);
    // The lost order's report comes at last: it is not the current one, and changes nothing.
    raft.on_send_outcome(lost.sent(&[]));
    raft.on_send_outcome(SendOutcome::EntriesSent {
        to: peer,
        request_id: lost.request_id,
        last_index: lost.last_index,
        bytes: 1,
    });
    assert!(raft.take_sends().is_empty(), "the new order still stands");
}

/// Compacts the leader's log and makes `peer` report that it lost its data, so that only a
/// snapshot can catch it up; returns the request id of the open.
fn peer_needs_a_snapshot(raft: &mut Raft, peer: NodeId) -> u64 {
    let commit = raft.commit_index();
    assert!(raft.compact_log(commit).is_some());
    let _ = raft.take_ready();
    let term = raft.current_term();
    let mut heartbeat = None;
    while heartbeat.is_none() {
        heartbeat = next_heartbeat(raft)
            .into_iter()
            .find_map(|send| match send {
                PeerSend::Message(envelope) if envelope.to == peer => match envelope.message {
                    Message::AppendEntries(request) => Some(request),
                    _ => None,
                },
                _ => None,
            });
    }
    let heartbeat = heartbeat.expect("found");
    raft.step(
        peer,
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term,
            request_id: heartbeat.request_id,
            outcome: AppendOutcome::Reject {
                rejected_prev_index: heartbeat.prev_log_id.index,
                hint: ConflictHint {
                    conflict_term: None,
                    first_index: LogIndex(1),
                },
            },
        }),
    );
    let ready = raft.take_ready();
    assert_eq!(ready.peers_lost_data, vec![peer]);
    let open = opens(&ready.sends, peer);
    assert_eq!(open.len(), 1, "{:?}", ready.sends);
    open[0]
}

fn meta(last_included: LogId, size: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_included,
        size,
        checksum: 0,
        membership: Box::new(Membership::bootstrap(
            &ids(3).into_iter().collect(),
            &Default::default(),
        )),
    }
}

#[test]
fn a_snapshot_that_cannot_be_opened_is_tried_again_at_the_next_heartbeat() {
    let (mut cluster, leader, peer) = isolated_leader();
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    let open = peer_needs_a_snapshot(raft, peer);
    raft.on_send_outcome(SendOutcome::SnapshotUnavailable {
        to: peer,
        request_id: open,
    });
    assert_eq!(progress_state(raft, peer).0, ProgressState::Probe);
    assert!(raft.take_sends().is_empty(), "no busy retry");
    let retry = opens(&next_heartbeat(raft), peer);
    assert_eq!(retry.len(), 1, "tried again");
    assert_eq!(progress_state(raft, peer).0, ProgressState::Snapshot);
}

#[test]
fn chunks_follow_the_peer_and_the_install_moves_its_match() {
    let (mut cluster, leader, peer) = isolated_leader();
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    let open = peer_needs_a_snapshot(raft, peer);
    let start = raft.log_start();
    // An outcome for another request changes nothing.
    raft.on_send_outcome(SendOutcome::SnapshotOpened {
        to: peer,
        request_id: open + 1000,
        meta: meta(start, 10),
    });
    assert!(raft.take_sends().is_empty());
    raft.on_send_outcome(SendOutcome::SnapshotOpened {
        to: peer,
        request_id: open,
        meta: meta(start, 10),
    });
    let first = chunk_orders(&raft.take_sends(), peer).remove(0);
    assert_eq!(first.offset, 0);
    let term = raft.current_term();
    let answer = |raft: &mut Raft, request_id, outcome| {
        raft.step(
            peer,
            Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                request_id,
                outcome,
            }),
        );
        raft.take_sends()
    };
    // An answer to an older chunk is only contact.
    assert!(answer(raft, first.request_id - 1, SnapshotOutcome::NextOffset(4)).is_empty());
    let second = chunk_orders(
        &answer(raft, first.request_id, SnapshotOutcome::NextOffset(4)),
        peer,
    )
    .remove(0);
    assert_eq!(second.offset, 4, "where the peer asked to go on");
    // An offset past the end starts over.
    let third = chunk_orders(
        &answer(raft, second.request_id, SnapshotOutcome::NextOffset(99)),
        peer,
    )
    .remove(0);
    assert_eq!(third.offset, 0);
    // Installed: the peer holds the log up to the snapshot, and entries follow.
    answer(
        raft,
        third.request_id,
        SnapshotOutcome::Installed {
            last_included: start,
        },
    );
    assert_eq!(
        progress_state(raft, peer),
        (ProgressState::Replicate, start.index.next(), start)
    );
}
