//! Spare followers (`replication/spare.rs`): which voting followers the leader tells that its
//! commits need not wait for them, and how a follower's `Ready` carries that to its driver.

use super::{append, config, entry, id, ids, succeed};
use crate::tests::cluster::Cluster;
use crate::{
    AppendEntries, ConfChange, EntriesOrder, LogId, Message, NodeId, PeerSend, Raft, Term,
};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A cluster of `n` whose leader is then cut off, so that the test alone answers for its peers.
fn isolated_leader(n: u64) -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(ids(n).iter().map(|i| config(i.0, n, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    cluster.tick_all(5);
    cluster.isolate(leader);
    let _ = cluster.raft(leader.0).take_ready();
    (cluster, leader)
}

/// The entries orders of `sends`, by peer: whether each says the peer's sync may wait.
fn may_wait(sends: &[PeerSend]) -> BTreeMap<NodeId, bool> {
    sends
        .iter()
        .filter_map(|send| match send {
            PeerSend::Entries(order) => Some((order.to, order.sync_may_wait)),
            _ => None,
        })
        .collect()
}

fn orders(sends: &[PeerSend]) -> BTreeMap<NodeId, EntriesOrder> {
    sends
        .iter()
        .filter_map(|send| match send {
            PeerSend::Entries(order) => Some((order.to, order.clone())),
            _ => None,
        })
        .collect()
}

/// The first follower whose order says its sync may wait (`true`), or may not.
fn one_told(sent: &BTreeMap<NodeId, EntriesOrder>, may_wait: bool) -> NodeId {
    *sent
        .iter()
        .find(|(_, order)| order.sync_may_wait == may_wait)
        .unwrap_or_else(|| panic!("an order with sync_may_wait {may_wait}: {sent:?}"))
        .0
}

/// Propose one command and flush it on the leader; returns the orders that left.
fn propose(raft: &mut Raft) -> BTreeMap<NodeId, EntriesOrder> {
    raft.propose(vec![Bytes::from("x")]).expect("leader");
    let ready = raft.take_ready();
    if let Some(last) = ready.write.last_log_id() {
        raft.on_log_flushed(last);
    }
    orders(&ready.sends)
}

/// `peer` reports the order sent and answers it, holding what it carried.
fn answer(raft: &mut Raft, order: &EntriesOrder) {
    report(raft, &BTreeMap::from([(order.to, order.clone())]));
    let term = raft
        .log_terms()
        .term_at(order.last_index)
        .expect("in the log");
    succeed(
        raft,
        order.to,
        order.request_id,
        LogId::new(term, order.last_index),
    );
}

/// Report every order of `sent` as sent, without an answer.
fn report(raft: &mut Raft, sent: &BTreeMap<NodeId, EntriesOrder>) {
    for order in sent.values() {
        raft.on_send_outcome(crate::SendOutcome::EntriesSent {
            to: order.to,
            request_id: order.request_id,
            last_index: order.last_index,
            bytes: 1,
        });
    }
}

#[test]
fn of_three_voters_one_follower_is_spare_and_the_message_says_so() {
    let (mut cluster, leader) = isolated_leader(3);
    let raft = cluster.raft(leader.0);
    let sent = propose(raft);
    let flags: Vec<bool> = sent.values().map(|order| order.sync_may_wait).collect();
    assert_eq!(flags.len(), 2, "an order to each follower");
    assert_eq!(
        flags.iter().filter(|spare| **spare).count(),
        1,
        "a commit needs one follower: the other is spare ({sent:?})"
    );
    for order in sent.values() {
        let Message::AppendEntries(AppendEntries { sync_may_wait, .. }) =
            order.message(leader, Vec::new()).message
        else {
            panic!("an AppendEntries");
        };
        assert_eq!(sync_may_wait, order.sync_may_wait, "the message carries it");
    }
}

#[test]
fn the_follower_that_answers_ahead_is_the_partner() {
    let (mut cluster, leader) = isolated_leader(3);
    let raft = cluster.raft(leader.0);
    let sent = propose(raft);
    let spare = one_told(&sent, true);
    let partner = *sent.keys().find(|peer| **peer != spare).expect("a partner");
    // Only the spare follower answers (a partner that fell silent, say): the entry commits
    // with it, and it is ahead now, so the next entry goes to it as to a partner; the silent
    // one is spare.
    answer(raft, &sent[&spare]);
    report(raft, &BTreeMap::from([(partner, sent[&partner].clone())]));
    assert!(raft.commit_index() >= sent[&spare].last_index);
    let next = propose(raft);
    assert_eq!(
        next.get(&spare).map(|order| order.sync_may_wait),
        Some(false)
    );
}

#[test]
fn a_partner_silent_for_a_heartbeat_period_ranks_last() {
    let (mut cluster, leader) = isolated_leader(3);
    let raft = cluster.raft(leader.0);
    let sent = propose(raft);
    let partner = one_told(&sent, false);
    let spare = *sent.keys().find(|peer| **peer != partner).expect("a spare");
    // Both answer the first entry; then only the spare answers the leader's heartbeats for
    // longer than a period, while the partner stays silent.
    for order in sent.values() {
        answer(raft, order);
    }
    let heartbeat_ticks = raft.config().heartbeat_ticks;
    for _ in 0..=heartbeat_ticks {
        raft.tick();
        for send in raft.take_ready().sends {
            if let PeerSend::Message(crate::Envelope {
                to,
                message: Message::AppendEntries(heartbeat),
                ..
            }) = send
            {
                if to == spare {
                    succeed(raft, spare, heartbeat.request_id, heartbeat.prev_log_id);
                }
            }
        }
    }
    let next = propose(raft);
    assert_eq!(next.get(&spare).map(|o| o.sync_may_wait), Some(false));
    assert_eq!(next.get(&partner).map(|o| o.sync_may_wait), Some(true));
}

#[test]
fn of_five_voters_two_followers_are_spare() {
    let (mut cluster, leader) = isolated_leader(5);
    let raft = cluster.raft(leader.0);
    let sent = propose(raft);
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent.values().filter(|order| order.sync_may_wait).count(),
        2,
        "a commit needs two followers of four"
    );
}

/// Whether each peer of `raft`, a leader, is marked spare now.
fn spares(raft: &Raft) -> BTreeMap<NodeId, bool> {
    let leader = raft.leader.as_ref().expect("leader");
    leader
        .peers
        .iter()
        .map(|(id, peer)| (*id, peer.spare))
        .collect()
}

#[test]
fn nobody_is_spare_in_a_joint_configuration_nor_the_target_of_a_transfer() {
    // The target of a transfer must catch up at once.
    let (mut cluster, leader) = isolated_leader(3);
    let raft = cluster.raft(leader.0);
    let sent = propose(raft);
    let spare = one_told(&sent, true);
    assert_eq!(spares(raft).get(&spare), Some(&true));
    report(raft, &sent);
    raft.transfer_leadership(spare).expect("a voter");
    let _ = raft.take_ready();
    assert!(
        spares(raft).values().all(|spare| !spare),
        "the target is not spare: {:?}",
        spares(raft)
    );

    // Joint: two majorities to reason about.
    let (mut cluster, leader) = isolated_leader(3);
    let raft = cluster.raft(leader.0);
    let first = propose(raft);
    for order in first.values() {
        answer(raft, order);
    }
    let _ = raft.take_ready();
    assert_eq!(spares(raft).values().filter(|spare| **spare).count(), 1);
    let outgoing = *first.keys().next().expect("a follower");
    raft.propose_membership(&[
        ConfChange::AddVoter {
            id: NodeId(9),
            address: Some("n9:1".into()),
        },
        ConfChange::Remove { id: outgoing },
    ])
    .expect("a joint change");
    assert!(raft.membership().conf.is_joint());
    let ready = raft.take_ready();
    assert!(
        may_wait(&ready.sends).values().all(|spare| !spare),
        "nobody is told to wait while joint: {:?}",
        ready.sends
    );
    assert!(
        spares(raft).values().all(|spare| !spare),
        "nobody is spare while joint: {:?}",
        spares(raft)
    );
}

/// A follower's `Ready` for an AppendEntries of `term` (after `prev`) with `entries`.
fn follower_ready(
    follower: &mut Raft,
    term: u64,
    prev: LogId,
    entries: Vec<crate::Entry>,
    sync_may_wait: bool,
) -> crate::Ready {
    let Message::AppendEntries(mut request) = append(term, prev, entries, 0) else {
        unreachable!()
    };
    request.sync_may_wait = sync_may_wait;
    follower.step(NodeId(1), Message::AppendEntries(request));
    follower.take_ready()
}

#[test]
fn a_spare_followers_write_may_wait_but_not_one_that_records_a_new_term() {
    let mut follower =
        Raft::new(config(2, 3, true), crate::RecoveredState::default(), 2).expect("a node");
    // The first message of term 1 records the term: it may not wait, told or not.
    let ready = follower_ready(&mut follower, 1, LogId::ZERO, vec![entry(1, 1, "a")], true);
    assert!(ready.write.hard_state.is_some());
    assert!(
        !ready.write_may_wait,
        "a new term is promised by the answer"
    );
    // Entries alone, told they may wait: they may.
    let ready = follower_ready(&mut follower, 1, id(1, 1), vec![entry(2, 1, "b")], true);
    assert_eq!(ready.write.entries.len(), 1);
    assert!(ready.write_may_wait);
    // Not told: they may not.
    let ready = follower_ready(&mut follower, 1, id(2, 1), vec![entry(3, 1, "c")], false);
    assert!(!ready.write_may_wait);
    // Nothing to append (a heartbeat): nothing to hold.
    let ready = follower_ready(&mut follower, 1, id(3, 1), vec![], true);
    assert!(!ready.write_may_wait);
    // Two messages in one Ready, one not told: the write may not wait.
    for (index, told) in [(4, true), (5, false)] {
        let Message::AppendEntries(mut request) =
            append(1, id(index - 1, 1), vec![entry(index, 1, "d")], 0)
        else {
            unreachable!()
        };
        request.sync_may_wait = told;
        follower.step(NodeId(1), Message::AppendEntries(request));
    }
    assert!(!follower.take_ready().write_may_wait);
    // A later term's leader: the term is written with the entries, so they may not wait.
    let ready = follower_ready(&mut follower, 2, id(5, 1), vec![entry(6, 2, "e")], true);
    assert_eq!(
        ready.write.hard_state.map(|hard| hard.current_term),
        Some(Term(2))
    );
    assert!(!ready.write_may_wait);
}
