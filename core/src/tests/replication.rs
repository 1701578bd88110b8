//! Log replication (§5.3) and the commit rule (§5.4.2), one rule per test.

use super::cluster::Cluster;
use super::{append, config, entry, id, ids};
use crate::{
    AppendEntriesResponse, AppendOutcome, ConflictHint, Entry, HardState, LogIndex, LogTerms,
    Message, NodeId, Progress, Raft, RecoveredState, ResponseEffect, Role, Term,
};

pub(super) fn node_with_log(id: u64, n: u64, term: u64, log: &[Entry], commit: u64) -> Raft {
    let mut terms = LogTerms::default();
    terms.append(log);
    let recovered = RecoveredState {
        hard_state: HardState {
            current_term: Term(term),
            voted_for: None,
            commit_index: LogIndex(commit),
        },
        term_boundaries: terms.boundaries(),
        log_start: crate::LogId::ZERO,
        standing: crate::Standing::Member,
        ..Default::default()
    };
    let mut raft = Raft::new(config(id, n, false), recovered, id).expect("valid config");
    let _ = raft.take_ready();
    raft
}

fn only_response(ready: &crate::Ready) -> AppendEntriesResponse {
    match ready.messages.as_slice() {
        [envelope] => match &envelope.message {
            Message::AppendEntriesResponse(response) => response.clone(),
            other => panic!("expected an append response, got {other:?}"),
        },
        other => panic!("expected one message, got {other:?}"),
    }
}

/// The seed's example: a follower holding [1:1:a][2:1:b][3:1:x][4:1:y], a leader of term 2 holding
/// [1:1:a][2:1:b][3:2:c][4:2:d]. The follower rejects prevLogIndex=3/prevLogTerm=2, the leader moves
/// back, and the follower ends with exactly the leader's log.
#[test]
fn follower_converges_on_the_leaders_log() {
    let leader_log = vec![
        entry(1, 1, "a"),
        entry(2, 1, "b"),
        entry(3, 2, "c"),
        entry(4, 2, "d"),
    ];
    let mut follower_log = vec![
        entry(1, 1, "a"),
        entry(2, 1, "b"),
        entry(3, 1, "x"),
        entry(4, 1, "y"),
    ];
    let mut follower = node_with_log(2, 3, 1, &follower_log, 0);
    let mut progress = Progress::new(LogIndex(3), 4);
    // The leader knows its log up to 3 when it first probes (entry 4 came later).
    let send = progress.next_send(LogIndex(4), 10).expect("a probe");
    assert_eq!(send.prev_index, LogIndex(3));
    progress.on_sent(send, 0);
    follower.step(
        NodeId(1),
        append(2, id(3, 2), vec![leader_log[3].clone()], 0),
    );
    let ready = follower.take_ready();
    let response = only_response(&ready);
    assert_eq!(
        response,
        AppendEntriesResponse {
            term: Term(2),
            request_id: 0,
            outcome: AppendOutcome::Reject {
                rejected_prev_index: LogIndex(3),
                hint: ConflictHint {
                    conflict_term: Some(Term(1)),
                    first_index: LogIndex(1)
                }
            }
        }
    );
    assert!(ready.write.entries.is_empty() && ready.write.truncate_from.is_none());

    // The leader skips back the follower's whole term 1 and resends from there.
    assert_eq!(
        progress.on_response(Term(2), &response, 0),
        ResponseEffect::Contact { matched: None }
    );
    let send = progress.next_send(LogIndex(4), 10).expect("a second probe");
    assert_eq!(
        (send.prev_index, send.last_index),
        (LogIndex(0), LogIndex(4))
    );
    follower.step(NodeId(1), append(2, id(0, 0), leader_log.clone(), 0));
    let ready = follower.take_ready();
    assert_eq!(ready.write.truncate_from, Some(LogIndex(3)));
    assert_eq!(ready.write.entries, leader_log[2..].to_vec());
    assert_eq!(
        only_response(&ready).outcome,
        AppendOutcome::Success { matched: id(4, 2) }
    );
    // Apply the write the way a store does: truncate, then append.
    follower_log.truncate(2);
    follower_log.extend(ready.write.entries.clone());
    assert_eq!(follower_log, leader_log);
    assert_eq!(follower.last_log_id(), id(4, 2));
}

#[test]
fn a_stale_leader_is_refused_with_the_newer_term_and_steps_down() {
    let mut follower = node_with_log(2, 3, 3, &[entry(1, 1, "a")], 0);
    follower.step(NodeId(1), append(2, id(1, 1), vec![entry(2, 2, "b")], 1));
    let ready = follower.take_ready();
    assert_eq!(
        only_response(&ready),
        AppendEntriesResponse {
            term: Term(3),
            request_id: 0,
            outcome: AppendOutcome::StaleTerm
        }
    );
    assert!(
        ready.write.is_empty(),
        "the stale leader's entries are not taken"
    );

    // The stale leader hears term 3 and steps down.
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = cluster.elect(100).expect("a leader");
    let raft = cluster.raft(leader.0);
    let term = raft.current_term();
    let peer = if leader.0 == 2 { 1 } else { 2 };
    raft.step(
        NodeId(peer),
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term: Term(term.0 + 1),
            request_id: 0,
            outcome: AppendOutcome::StaleTerm,
        }),
    );
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.current_term(), Term(term.0 + 1));
}

#[test]
fn duplicate_and_reordered_appends_never_truncate_matching_entries() {
    let mut follower = node_with_log(2, 3, 2, &[], 0);
    let all = vec![entry(1, 2, "a"), entry(2, 2, "b"), entry(3, 2, "c")];
    follower.step(NodeId(1), append(2, id(0, 0), all.clone(), 0));
    let _ = follower.take_ready();
    // An older, shorter message arrives late: it matches, so nothing is cut.
    follower.step(NodeId(1), append(2, id(0, 0), all[..1].to_vec(), 0));
    let ready = follower.take_ready();
    assert!(ready.write.entries.is_empty() && ready.write.truncate_from.is_none());
    assert_eq!(follower.last_log_id(), id(3, 2));
    assert_eq!(
        only_response(&ready).outcome,
        AppendOutcome::Success { matched: id(1, 2) }
    );
}

#[test]
fn follower_commit_follows_the_leader_but_never_past_what_it_verified_nor_backwards() {
    let mut follower = node_with_log(2, 3, 2, &[entry(1, 2, "a"), entry(2, 2, "b")], 0);
    // A heartbeat vouching only for entry 1 cannot commit entry 2, whatever the leader's commit.
    follower.step(NodeId(1), append(2, id(1, 2), vec![], 2));
    assert_eq!(follower.take_ready().commit_index, Some(LogIndex(1)));
    follower.step(NodeId(1), append(2, id(2, 2), vec![], 2));
    assert_eq!(follower.take_ready().commit_index, Some(LogIndex(2)));
    follower.step(NodeId(1), append(2, id(2, 2), vec![], 1));
    assert_eq!(follower.take_ready().commit_index, None);
    assert_eq!(follower.commit_index(), LogIndex(2));
}

#[test]
fn contradicting_a_committed_entry_is_refused() {
    let mut follower = node_with_log(2, 3, 3, &[entry(1, 1, "a"), entry(2, 1, "b")], 2);
    follower.step(NodeId(1), append(3, id(1, 1), vec![entry(2, 3, "evil")], 2));
    let ready = follower.take_ready();
    assert!(ready.write.entries.is_empty() && ready.write.truncate_from.is_none());
    assert!(ready.messages.is_empty());
    assert_eq!(follower.last_log_id(), id(2, 1));
}

#[test]
fn malformed_appends_are_dropped() {
    let mut follower = node_with_log(2, 3, 2, &[], 0);
    // Not consecutive; a term above the message's; an index of zero; u64::MAX.
    let bad = [
        vec![entry(1, 2, "a"), entry(3, 2, "c")],
        vec![entry(1, 9, "a")],
        vec![entry(0, 2, "a")],
    ];
    for entries in bad {
        follower.step(NodeId(1), append(2, id(0, 0), entries, 0));
        assert!(follower.take_ready().write.is_empty());
    }
    follower.step(NodeId(1), append(2, id(u64::MAX, 2), vec![], u64::MAX));
    let ready = follower.take_ready();
    assert!(matches!(
        only_response(&ready).outcome,
        AppendOutcome::Reject { .. }
    ));
    assert_eq!(follower.commit_index(), LogIndex(0));
}

/// Figure 8: a leader may not commit an entry of an earlier term by counting replicas, even when it
/// is on a majority; it commits only with an entry of its own term.
#[test]
fn only_current_term_entries_commit_by_counting() {
    // Node 1 leads term 4 with [1@1, 2@2] (entry 2 from its own earlier term 2, never committed).
    let log = vec![entry(1, 1, "a"), entry(2, 2, "b")];
    let mut leader = node_with_log(1, 5, 3, &log, 1);
    let _ = leader.take_ready();
    // Win term 4.
    for _ in 0..leader.randomized_election_timeout {
        leader.tick();
    }
    let _ = leader.take_ready();
    for voter in [2, 3] {
        leader.step(
            NodeId(voter),
            Message::RequestVoteResponse(crate::RequestVoteResponse {
                term: Term(4),
                vote_granted: true,
                pre_vote: false,
            }),
        );
    }
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.take_ready();
    // The leader appended its blank entry 3@4.
    assert_eq!(ready.write.entries.len(), 1);
    assert_eq!(leader.last_log_id(), id(3, 4));
    leader.on_log_flushed(id(3, 4));
    // Entry 2 (term 2) reaches a majority: 1 (via its flush), 2, 3. Not committed.
    super::succeed(&mut leader, NodeId(2), 1, id(2, 2));
    super::succeed(&mut leader, NodeId(3), 1, id(2, 2));
    assert_eq!(leader.commit_index(), LogIndex(1));
    assert_eq!(leader.take_ready().commit_index, None);
    // Entry 3 (term 4) reaches a majority: now 2 commits with it.
    super::succeed(&mut leader, NodeId(2), 1, id(3, 4));
    assert_eq!(leader.commit_index(), LogIndex(1));
    super::succeed(&mut leader, NodeId(3), 1, id(3, 4));
    assert_eq!(leader.commit_index(), LogIndex(3));
    assert_eq!(leader.take_ready().commit_index, Some(LogIndex(3)));
    // Reports from an older term, or of entries the leader does not hold, change nothing.
    leader.step(
        NodeId(4),
        Message::AppendEntriesResponse(crate::AppendEntriesResponse {
            term: Term(3),
            request_id: 1,
            outcome: AppendOutcome::Success { matched: id(3, 4) },
        }),
    );
    super::succeed(&mut leader, NodeId(4), 1, id(3, 9));
    assert_eq!(leader.matched().expect("leader").get(&NodeId(4)), None);
}

#[test]
fn proposals_replicate_commit_and_apply_in_order_everywhere() {
    for n in [3, 5] {
        let mut cluster = Cluster::new(ids(n).iter().map(|i| config(i.0, n, true)).collect());
        let leader = cluster.elect(200).expect("a leader");
        for i in 0..100 {
            assert!(cluster.propose(leader, &format!("cmd-{i}")));
            if i % 10 == 0 {
                cluster.deliver_all();
            }
        }
        cluster.tick_all(20);
        for node in cluster.nodes.values() {
            let commands = node.applied.iter().filter(|e| e.payload_len() > 0).count();
            assert_eq!(
                commands,
                100,
                "node {} applied every command",
                node.raft.id()
            );
        }
        cluster.assert_consistent();
    }
}

#[test]
fn leader_crash_elects_a_new_leader_that_keeps_every_committed_entry() {
    let mut cluster = Cluster::new(ids(5).iter().map(|i| config(i.0, 5, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    for i in 0..20 {
        cluster.propose(leader, &format!("cmd-{i}"));
    }
    cluster.tick_all(10);
    let committed = cluster.raft(leader.0).commit_index();
    cluster.crash(leader);
    let new_leader = cluster.elect(200).expect("a new leader");
    assert_ne!(new_leader, leader);
    assert!(cluster.raft(new_leader.0).last_log_id().index >= committed);
    cluster.propose(new_leader, "after");
    cluster.tick_all(10);
    cluster.restart(leader);
    cluster.tick_all(30);
    assert_eq!(cluster.leader(), Some(new_leader));
    for node in cluster.nodes.values() {
        assert_eq!(
            node.raft.commit_index(),
            cluster.node(new_leader.0).raft.commit_index()
        );
    }
    cluster.assert_consistent();
}

/// Only what is committed *and* on this node's disk may be applied: a follower told of a commit
/// index beyond its last flush waits for the flush; a truncation takes back what it cut; a late
/// flush report about entries since replaced counts for nothing.
#[test]
fn applicable_index_is_committed_and_locally_durable() {
    let log = vec![entry(1, 1, "a"), entry(2, 1, "b")];
    let mut follower = node_with_log(2, 3, 1, &log, 0);
    assert_eq!(follower.applicable_index(), LogIndex::ZERO);

    // Entries 3 and 4 arrive together with a commit index of 4: committed, not yet on disk here.
    follower.step(
        NodeId(1),
        append(1, id(2, 1), vec![entry(3, 1, "c"), entry(4, 1, "d")], 4),
    );
    let _ = follower.take_ready();
    assert_eq!(follower.commit_index(), LogIndex(4));
    assert_eq!(
        follower.applicable_index(),
        LogIndex(2),
        "3 and 4 are not durable yet"
    );
    follower.on_log_flushed(id(4, 1));
    assert_eq!(follower.applicable_index(), LogIndex(4));

    // A new leader of term 2 replaces an uncommitted entry 5 of term 1.
    follower.step(NodeId(1), append(1, id(4, 1), vec![entry(5, 1, "e")], 4));
    let _ = follower.take_ready();
    follower.on_log_flushed(id(5, 1));
    follower.step(NodeId(3), append(2, id(4, 1), vec![entry(5, 2, "E")], 5));
    let _ = follower.take_ready();
    assert_eq!(follower.commit_index(), LogIndex(5));
    assert_eq!(
        follower.applicable_index(),
        LogIndex(4),
        "the new entry 5 is not on disk yet, whatever the old one was"
    );
    follower.on_log_flushed(id(5, 1));
    assert_eq!(
        follower.applicable_index(),
        LogIndex(4),
        "a report about the replaced entry"
    );
    follower.on_log_flushed(id(5, 2));
    assert_eq!(follower.applicable_index(), LogIndex(5));
}

/// Issue 23: a follower whose write is still syncing answers a heartbeat at once
/// (`Ready::prompt_messages`), acknowledging only what it has synced; the answer that
/// acknowledges the new entries waits for their write, and so does the first answer in a new
/// term (the term is recorded with it).
#[test]
fn a_heartbeat_is_answered_at_once_while_a_write_syncs_and_vouches_only_for_synced_entries() {
    let log = vec![entry(1, 1, "a"), entry(2, 1, "b")];
    let mut follower = node_with_log(2, 3, 1, &log, 0);
    // The first message of the leader of term 2: the answer waits for the term's write.
    follower.step(NodeId(1), append(2, id(2, 1), vec![], 0));
    let ready = follower.take_ready();
    assert!(ready.write.hard_state.is_some());
    assert!(
        ready.prompt_messages.is_empty(),
        "the new term is not yet durable"
    );
    assert_eq!(
        only_response(&ready).outcome,
        AppendOutcome::Success { matched: id(2, 1) }
    );
    // Two new entries: appended, their answer held behind their write, which is still syncing.
    follower.step(
        NodeId(1),
        append(2, id(2, 1), vec![entry(3, 2, "c"), entry(4, 2, "d")], 0),
    );
    let ready = follower.take_ready();
    assert_eq!(ready.write.entries.len(), 2);
    assert!(ready.prompt_messages.is_empty());
    assert_eq!(
        only_response(&ready).outcome,
        AppendOutcome::Success { matched: id(4, 2) }
    );
    // A heartbeat at the match point the leader knows (2): answered at once.
    follower.step(NodeId(1), append(2, id(2, 1), vec![], 2));
    let ready = follower.take_ready();
    assert!(ready.messages.is_empty() && ready.write.is_empty());
    let [prompt] = ready.prompt_messages.as_slice() else {
        panic!("one prompt answer: {:?}", ready.prompt_messages);
    };
    assert!(matches!(
        &prompt.message,
        Message::AppendEntriesResponse(AppendEntriesResponse {
            outcome: AppendOutcome::Success { matched },
            ..
        }) if *matched == id(2, 1)
    ));
    // Entries it holds but has not synced are not vouched for at once, even when resent.
    follower.step(NodeId(1), append(2, id(2, 1), vec![entry(3, 2, "c")], 2));
    let ready = follower.take_ready();
    assert!(ready.prompt_messages.is_empty());
    assert_eq!(
        only_response(&ready).outcome,
        AppendOutcome::Success { matched: id(3, 2) }
    );
    // Once synced, they are.
    follower.on_log_flushed(id(4, 2));
    let _ = follower.take_ready();
    follower.step(NodeId(1), append(2, id(4, 2), vec![], 2));
    let ready = follower.take_ready();
    assert_eq!(ready.prompt_messages.len(), 1);
}
