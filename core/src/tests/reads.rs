//! ReadIndex and lease reads (§8, thesis §6.4).

use super::rejoin::{granted, vote_request};
use super::{carry_out, config, ids, succeed};
use crate::tests::cluster::Cluster;
use crate::{LeaseError, Message, NodeId, NotLeader, ReadState, RequestVoteResponse, Role};

fn leader_cluster(n: u64) -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(ids(n).iter().map(|i| config(i.0, n, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    cluster.tick_all(5);
    (cluster, leader)
}

#[test]
fn a_read_is_answered_only_after_a_majority_confirms_leadership() {
    let (mut cluster, leader) = leader_cluster(3);
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    let commit = raft.commit_index();
    raft.read_index(7).expect("leader");
    let ready = raft.take_ready();
    assert!(ready.reads.is_empty(), "not before confirmation");
    // The round asks every peer with a heartbeat.
    let sent = carry_out(raft, ready.sends);
    let peers: Vec<NodeId> = ids(3).into_iter().filter(|p| *p != leader).collect();
    assert_eq!(
        sent.iter().map(|(to, ..)| *to).collect::<Vec<_>>(),
        peers,
        "a heartbeat to each peer"
    );
    let (_, request_id, matched) = sent[0];
    // An answer to a message sent before the round does not count.
    succeed(raft, peers[0], request_id - 2, matched);
    assert!(raft.take_ready().reads.is_empty());
    succeed(raft, peers[0], request_id, matched);
    assert_eq!(
        raft.take_ready().reads,
        vec![ReadState {
            id: 7,
            result: Ok(commit)
        }]
    );
}

#[test]
fn reads_fail_when_leadership_is_lost_and_a_follower_refuses() {
    let (mut cluster, leader) = leader_cluster(3);
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    assert_eq!(
        cluster.raft(follower.0).read_index(1),
        Err(NotLeader {
            leader: Some(leader)
        })
    );
    let raft = cluster.raft(leader.0);
    raft.read_index(9).expect("leader");
    let _ = raft.take_ready();
    let newer = crate::Term(raft.current_term().0 + 1);
    raft.step(
        follower,
        crate::Message::RequestVoteResponse(crate::RequestVoteResponse {
            term: newer,
            vote_granted: false,
            pre_vote: false,
        }),
    );
    assert_eq!(raft.role(), Role::Follower);
    let reads = raft.take_ready().reads;
    assert_eq!(reads.len(), 1);
    assert!(reads[0].result.is_err());
}

#[test]
fn a_new_leader_defers_reads_until_it_commits_in_its_term() {
    let recovered = crate::RecoveredState {
        standing: crate::Standing::Member,
        ..crate::RecoveredState::default()
    };
    let mut raft = crate::Raft::new(config(1, 3, false), recovered, 1).expect("valid");
    for _ in 0..raft.randomized_election_timeout {
        raft.tick();
    }
    let term = raft.current_term();
    raft.step(
        NodeId(2),
        crate::Message::RequestVoteResponse(crate::RequestVoteResponse {
            term,
            vote_granted: true,
            pre_vote: false,
        }),
    );
    assert_eq!(raft.role(), Role::Leader);
    let blank = raft.last_log_id();
    assert_eq!(blank.term, term);
    let first = raft.take_ready().sends;
    let probes = carry_out(&mut raft, first);
    raft.read_index(5).expect("leader");
    let ready = raft.take_ready();
    assert_eq!(
        (ready.sends.len(), ready.reads.len()),
        (0, 0),
        "waits for a commit: no round yet"
    );
    raft.on_log_flushed(blank);
    let (_, probe, _) = probes[0];
    succeed(&mut raft, NodeId(2), probe, blank);
    assert_eq!(raft.commit_index(), blank.index);
    let ready = raft.take_ready();
    let round = carry_out(&mut raft, ready.sends);
    assert_eq!(round.len(), 2, "the deferred read gets its round");
    let (_, request_id, matched) = round[0];
    succeed(&mut raft, NodeId(2), request_id, matched);
    assert_eq!(
        raft.take_ready().reads,
        vec![ReadState {
            id: 5,
            result: Ok(blank.index)
        }]
    );
}

#[test]
fn lease_reads_need_recent_contact_with_a_majority() {
    let (mut cluster, leader) = leader_cluster(3);
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    cluster.isolate(leader);
    // Half an election timeout without answers: the lease is gone (well before check-quorum).
    for _ in 0..8 {
        cluster.tick(leader);
    }
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(0),
        Err(LeaseError::Expired)
    );
}

#[test]
fn there_is_no_lease_without_check_quorum() {
    // Found by the simulator (seed 1391): without leader stickiness a follower votes at once for a
    // new candidate, so a lease read on the old leader could be stale.
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = cluster.elect(200).expect("a leader");
    cluster.tick_all(5);
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(0),
        Err(LeaseError::Expired)
    );
}

#[test]
fn no_lease_after_timeout_now_for_the_rest_of_the_term() {
    // Found by the simulator (seed 8114818, 5 nodes): once TimeoutNow is sent its target
    // campaigns with `leadership_transfer` set and voters elect it at once, stickiness set
    // aside; the old leader served a lease read that missed the new leader's commit.
    let (mut cluster, leader) = leader_cluster(3);
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    let target = NodeId(if leader.0 == 1 { 2 } else { 1 });
    // The target never gets the TimeoutNow (or gets it late): the transfer is abandoned.
    cluster.cut.insert((leader, target));
    cluster
        .raft(leader.0)
        .transfer_leadership(target)
        .expect("a voter");
    cluster.process(leader);
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(0),
        Err(LeaseError::Expired)
    );
    let timeout = cluster.raft(leader.0).config().election_ticks_min;
    cluster.tick_all(timeout + 1);
    assert_eq!(cluster.raft(leader.0).transfer_target(), None, "abandoned");
    assert_eq!(cluster.raft(leader.0).role(), Role::Leader);
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(0),
        Err(LeaseError::Expired),
        "a late TimeoutNow may still arrive: no lease for the rest of the term"
    );
    // ReadIndex still works.
    cluster.raft(leader.0).read_index(3).expect("leader");
    cluster.process(leader);
    cluster.deliver_all();
    cluster.tick_all(1);
}

#[test]
fn the_lease_runs_from_when_the_answered_heartbeat_was_sent() {
    // Review finding (issue 24, 2.4): contact was stamped when an answer arrived, so a late
    // answer (a retransmission) extended the lease past the followers' refusal window.
    let (mut cluster, leader) = leader_cluster(3);
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    let peers: Vec<NodeId> = ids(3).into_iter().filter(|p| *p != leader).collect();
    // A round is issued now; its answers are held back.
    raft.read_index(11).expect("leader");
    let ready = raft.take_ready();
    let held = carry_out(raft, ready.sends);
    let window = u64::from(raft.config().election_ticks_min / 2);
    for _ in 0..window {
        raft.tick();
    }
    let _ = raft.take_ready();
    // Answers to the old round arrive now: they prove contact as of the round's issue.
    for (peer, request_id, matched) in held {
        succeed(raft, peer, request_id, matched);
    }
    assert_eq!(
        raft.lease_read_index(0),
        Err(LeaseError::Expired),
        "the answered message left a lease window ago"
    );
    // A fresh round answered at once gives a lease again.
    raft.read_index(12).expect("leader");
    let ready = raft.take_ready();
    let fresh = carry_out(raft, ready.sends);
    let (_, request_id, matched) = fresh[0];
    succeed(raft, peers[0], request_id, matched);
    assert!(raft.lease_read_index(0).is_ok());
    // A driver whose clock ran past the ticks it delivered (a stalled thread) gets no lease.
    assert_eq!(
        raft.lease_read_index(window),
        Err(LeaseError::Expired),
        "ticks owed by a stalled clock count"
    );
}

#[test]
fn check_quorum_counts_a_peer_that_only_answers_snapshot_chunks() {
    // Review finding (issue 24, 2.3): while a snapshot streams the replicator sends no heartbeat,
    // and chunk answers updated no contact: a leader whose only live peer was receiving a long
    // snapshot stepped down. The drivers now report a chunk answer as contact (a report with no
    // match), and that keeps the leader.
    let (mut cluster, leader) = leader_cluster(3);
    let peer = NodeId(if leader.0 == 1 { 2 } else { 1 });
    let silent = NodeId(6 - leader.0 - peer.0);
    cluster.isolate(leader);
    let raft = cluster.raft(leader.0);
    let term = raft.current_term();
    let timeout = raft.config().election_ticks_min;
    // The leader compacts its log, then finds that `peer` lost its data (its log ends before
    // what it acknowledged): only a snapshot can catch it up.
    let commit = raft.commit_index();
    assert!(raft.compact_log(commit).is_some());
    let _ = raft.take_ready();
    let mut heartbeat = Vec::new();
    while heartbeat.is_empty() {
        raft.tick();
        let ready = raft.take_ready();
        heartbeat = carry_out(raft, ready.sends);
        heartbeat.retain(|(to, ..)| *to == peer);
    }
    let (_, request_id, matched) = heartbeat[0];
    raft.step(
        peer,
        crate::Message::AppendEntriesResponse(crate::AppendEntriesResponse {
            term,
            request_id,
            outcome: crate::AppendOutcome::Reject {
                rejected_prev_index: matched.index,
                hint: crate::ConflictHint {
                    conflict_term: None,
                    first_index: crate::LogIndex(1),
                },
            },
        }),
    );
    let ready = raft.take_ready();
    assert_eq!(ready.peers_lost_data, vec![peer]);
    assert!(
        ready
            .sends
            .iter()
            .any(|send| matches!(send, crate::PeerSend::OpenSnapshot { to, .. } if *to == peer)),
        "a snapshot for {peer}: {:?}",
        ready.sends
    );
    // From now on `peer` answers only snapshot chunks.
    for tick in 0..4 * timeout {
        raft.tick();
        let _ = raft.take_ready();
        if tick % 3 == 0 {
            raft.step(
                peer,
                crate::Message::InstallSnapshotResponse(crate::InstallSnapshotResponse {
                    term,
                    request_id: 0,
                    outcome: crate::SnapshotOutcome::NextOffset(0),
                }),
            );
        }
    }
    assert_eq!(
        raft.role(),
        Role::Leader,
        "{silent} was silent, {peer} answered chunks"
    );
    for _ in 0..2 * timeout {
        raft.tick();
    }
    assert_eq!(
        raft.role(),
        Role::Follower,
        "and without those answers it steps down"
    );
}

/// After a stall of the node's thread, the missed ticks move the lease clock on but judge no
/// one: a leader keeps its term and a follower does not campaign, though each missed far more
/// than an election timeout, since what they missed may be waiting in their queues unread. Before,
/// the driver delivered every missed tick at once: a stall of a few hundred milliseconds (a new
/// store's start, measured here in `tests/lost_data.rs`) made the leader step down and the
/// followers campaign before they read the heartbeats and answers queued meanwhile.
#[test]
fn skipped_ticks_age_the_lease_but_time_no_one_out() {
    let (mut cluster, leader) = leader_cluster(3);
    let follower = ids(3).into_iter().find(|p| *p != leader).unwrap();
    let term = cluster.raft(leader.0).current_term();
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    let stall = u64::from(cluster.raft(leader.0).config().election_ticks_max) * 3;
    for id in ids(3) {
        let raft = cluster.raft(id.0);
        raft.skip_ticks(stall);
        raft.tick();
        let _ = raft.take_ready();
    }
    assert_eq!(cluster.raft(leader.0).role(), Role::Leader);
    assert_eq!(cluster.raft(follower.0).role(), Role::Follower);
    assert_eq!(cluster.raft(follower.0).current_term(), term);
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(0),
        Err(LeaseError::Expired),
        "the answers the lease rested on are a stall old"
    );
    // The next heartbeat's answers give it back.
    let heartbeat = cluster.raft(leader.0).config().heartbeat_ticks;
    cluster.tick_all(heartbeat + 1);
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.raft(leader.0).current_term(), term);
}

/// The two followers of a 3-node cluster led by `leader`: the voter whose answers the lease
/// rests on, and the rival that would campaign.
fn followers(leader: NodeId) -> (NodeId, NodeId) {
    let others: Vec<NodeId> = ids(3).into_iter().filter(|p| *p != leader).collect();
    (others[0], others[1])
}

/// `raft` learns the next term from `from` by a message that names no leader (a late refusal of
/// a pre-vote it once asked for); returns that term.
fn learn_a_newer_term_without_a_leader(raft: &mut crate::Raft, from: NodeId) -> crate::Term {
    let term = raft.current_term().next();
    raft.step(
        from,
        Message::RequestVoteResponse(RequestVoteResponse {
            term,
            vote_granted: false,
            pre_vote: true,
        }),
    );
    term
}

#[test]
fn a_restarted_voter_keeps_the_lease_it_granted_before_the_crash() {
    // A voter's answer lends the leader a lease: it refuses other candidates for a minimum
    // election timeout. A voter that crashed and restarted at once had forgotten it had heard a
    // leader, and voted for a candidate cut off from that leader, which then committed a write
    // the old leader's lease read missed.
    let (mut cluster, leader) = leader_cluster(3);
    let (voter, rival) = followers(leader);
    cluster.cut.insert((leader, rival));
    cluster.cut.insert((rival, leader));
    // The rival hears no leader; run until its next tick starts a campaign.
    for _ in 0..200 {
        let raft = cluster.raft(rival.0);
        if raft.election_elapsed + 1 >= raft.randomized_election_timeout {
            break;
        }
        cluster.tick_all(1);
    }
    // The leader renews its lease with the voter, which then crashes and restarts at once.
    cluster.raft(leader.0).read_index(1).expect("leader");
    cluster.process(leader);
    cluster.deliver_all();
    let _ = cluster.raft(leader.0).take_ready();
    let lease = cluster
        .raft(leader.0)
        .lease_read_index(0)
        .expect("a fresh lease");
    // The restarted voter hears nothing more from the leader, so only its start can remind it.
    cluster.cut.insert((leader, voter));
    cluster.cut.insert((voter, leader));
    cluster.crash(voter);
    cluster.restart(voter);
    let window = cluster.raft(leader.0).config().election_ticks_min / 2;
    let term = cluster.raft(rival.0).current_term();
    cluster.tick_all(1);
    assert_ne!(
        cluster.raft(rival.0).role(),
        Role::Follower,
        "the rival campaigns at once"
    );
    for _ in 1..window {
        cluster.tick_all(1);
        if cluster.leader() == Some(rival) || cluster.raft(rival.0).role() == Role::Leader {
            cluster.propose(rival, "x");
            cluster.deliver_all();
        }
        if let Ok(index) = cluster.raft(leader.0).lease_read_index(0) {
            let rival_commit = cluster.raft(rival.0).commit_index();
            assert!(
                rival_commit <= index || cluster.raft(rival.0).role() != Role::Leader,
                "a lease read at {index:?} (lease taken at {lease:?}) misses the rival's commit at {rival_commit:?}"
            );
        }
    }
    assert_eq!(
        cluster.raft(rival.0).current_term(),
        term,
        "refused: the rival's pre-votes failed"
    );
}

#[test]
fn a_stalled_voter_refuses_from_when_it_heard_the_leader() {
    // Review finding: a voter whose clock stood still took the leader's heartbeats, stamped with
    // the stalled clock; once the missed ticks came in, its refusal had run out while the leader's
    // lease, counted from when it sent them, had not. A newer term learned without a leader
    // then left nothing else to refuse a vote request of that term.
    let (mut cluster, leader) = leader_cluster(3);
    let (voter, rival) = followers(leader);
    let min = cluster.raft(voter.0).config().election_ticks_min;
    // The voter's clock stands still while the others run and it answers their heartbeats.
    for _ in 0..min {
        for id in [leader, rival] {
            cluster.tick(id);
        }
        cluster.deliver_all();
    }
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    let raft = cluster.raft(voter.0);
    raft.skip_ticks(u64::from(min));
    raft.tick();
    let _ = raft.take_ready();
    let term = learn_a_newer_term_without_a_leader(raft, rival);
    let last_log_id = raft.last_log_id();
    raft.step(rival, vote_request(term, last_log_id));
    assert_eq!(
        granted(&mut cluster, voter.0),
        vec![false],
        "refused within the leader's lease"
    );
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
}

#[test]
fn a_newer_term_without_a_leader_keeps_the_lease_a_voter_granted() {
    // Review finding: a newer term carried by a message that names no leader (here a late
    // refusal of a pre-vote this voter once asked for) made the voter forget the leader it had
    // just answered. A vote request of that term was then no longer newer, skipped leader
    // stickiness, and was granted: with it the rival could win while the leader held a lease.
    let (mut cluster, leader) = leader_cluster(3);
    assert!(cluster.raft(leader.0).lease_read_index(0).is_ok());
    let (voter, rival) = followers(leader);
    let raft = cluster.raft(voter.0);
    let min = u64::from(raft.config().election_ticks_min);
    assert!(raft.ticks >= min, "past its start's own refusal");
    let _ = raft.take_ready();
    let term = learn_a_newer_term_without_a_leader(raft, rival);
    let last_log_id = raft.last_log_id();
    assert_eq!(raft.current_term(), term, "a newer term is adopted (§5.1)");
    raft.step(rival, vote_request(term, last_log_id));
    assert_eq!(
        granted(&mut cluster, voter.0),
        vec![false],
        "refused within the leader's lease"
    );
    let raft = cluster.raft(voter.0);
    // A minimum election timeout after it last heard the leader, it votes again.
    for _ in 0..min {
        raft.tick();
    }
    let _ = raft.take_ready();
    raft.step(rival, vote_request(term, last_log_id));
    assert_eq!(
        granted(&mut cluster, voter.0),
        vec![true],
        "the refusal ends"
    );
}
