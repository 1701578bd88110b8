//! ReadIndex and lease reads (§8, thesis §6.4).

use super::{config, ids};
use crate::tests::cluster::Cluster;
use crate::{LeaseError, NodeId, NotLeader, ReadState, Role};

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
    let round = ready.confirm_round.expect("a confirmation round");
    assert!(ready.reads.is_empty(), "not before confirmation");
    let term = raft.current_term();
    let peers: Vec<NodeId> = ids(3).into_iter().filter(|p| *p != leader).collect();
    // An answer to an older round does not count.
    raft.on_leadership_confirmed(peers[0], term, round - 1);
    assert!(raft.take_ready().reads.is_empty());
    raft.on_leadership_confirmed(peers[0], term, round);
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
    let mut raft =
        crate::Raft::new(config(1, 3, false), crate::RecoveredState::default(), 1).expect("valid");
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
    let _ = raft.take_ready();
    raft.read_index(5).expect("leader");
    let ready = raft.take_ready();
    assert_eq!(
        (ready.confirm_round, ready.reads.len()),
        (None, 0),
        "waits for a commit"
    );
    raft.on_log_flushed(blank);
    raft.on_replication_report(NodeId(2), term, Some(blank));
    assert_eq!(raft.commit_index(), blank.index);
    let ready = raft.take_ready();
    let round = ready
        .confirm_round
        .expect("the deferred read gets its round");
    raft.on_leadership_confirmed(NodeId(2), term, round);
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
    assert!(cluster.raft(leader.0).lease_read_index().is_ok());
    cluster.isolate(leader);
    // Half an election timeout without answers: the lease is gone (well before check-quorum).
    for _ in 0..8 {
        cluster.tick(leader);
    }
    assert_eq!(
        cluster.raft(leader.0).lease_read_index(),
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
        cluster.raft(leader.0).lease_read_index(),
        Err(LeaseError::Expired)
    );
}
