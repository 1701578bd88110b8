//! Elections (§5.2, §5.4.1) and pre-vote (thesis §9.6), one rule per test.

use super::cluster::Cluster;
use super::{config, id, ids};
use crate::{
    HardState, LogIndex, LogWrite, Message, NodeId, Raft, RecoveredState, RequestVote,
    RequestVoteResponse, Role, Term,
};

fn follower(id: u64, n: u64, term: u64, boundaries: Vec<crate::LogId>) -> Raft {
    let recovered = RecoveredState {
        hard_state: HardState {
            current_term: Term(term),
            voted_for: None,
            commit_index: LogIndex::ZERO,
        },
        term_boundaries: boundaries,
        log_start: crate::LogId::ZERO,
        // A member restarting from its store (rejoin.rs covers a store that started empty).
        standing: crate::Standing::Member,
        ..Default::default()
    };
    Raft::new(config(id, n, false), recovered, id).expect("valid config")
}

fn vote_request(term: u64, last: crate::LogId) -> Message {
    Message::RequestVote(RequestVote {
        term: Term(term),
        last_log_id: last,
        pre_vote: false,
        leadership_transfer: false,
    })
}

fn granted(ready: &crate::Ready) -> Vec<(NodeId, bool, Term)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match &e.message {
            Message::RequestVoteResponse(r) => Some((e.to, r.vote_granted, r.term)),
            _ => None,
        })
        .collect()
}

#[test]
fn one_vote_per_term_and_it_is_persisted_with_the_grant() {
    let mut raft = follower(1, 3, 1, vec![]);
    raft.step(NodeId(2), vote_request(2, id(0, 0)));
    let ready = raft.take_ready();
    // The grant and the durable vote travel together: the messages go only after the write.
    assert_eq!(
        ready.write,
        LogWrite {
            hard_state: Some(HardState {
                current_term: Term(2),
                voted_for: Some(NodeId(2)),
                commit_index: LogIndex::ZERO
            }),
            ..LogWrite::default()
        }
    );
    assert_eq!(granted(&ready), vec![(NodeId(2), true, Term(2))]);

    // Another candidate of the same term is refused; the same one is answered again.
    raft.step(NodeId(3), vote_request(2, id(0, 0)));
    raft.step(NodeId(2), vote_request(2, id(0, 0)));
    let ready = raft.take_ready();
    assert_eq!(ready.write, LogWrite::default(), "nothing new to persist");
    assert_eq!(
        granted(&ready),
        vec![(NodeId(3), false, Term(2)), (NodeId(2), true, Term(2))]
    );
}

#[test]
fn votes_only_for_an_up_to_date_log() {
    // Our log: [1@1, 2@1, 3@2]
    let ours = vec![id(1, 1), id(3, 2)];
    let cases = [
        (id(5, 1), false, "lower last term, longer log"),
        (id(2, 2), false, "same last term, shorter log"),
        (id(3, 2), true, "same last term, same length"),
        (id(4, 2), true, "same last term, longer log"),
        (id(1, 3), true, "higher last term, shorter log"),
    ];
    for (last, expected, why) in cases {
        let mut raft = follower(1, 3, 2, ours.clone());
        raft.step(NodeId(2), vote_request(3, last));
        assert_eq!(
            granted(&raft.take_ready()),
            vec![(NodeId(2), expected, Term(3))],
            "{why}"
        );
    }
}

/// Seed 4600047959 (3 nodes, pre-vote off): n1, whose configuration's other voter was gone and
/// whose log was behind, timed out first in every term, voted for itself, and so refused the
/// one candidate that could win (n5, in the same term a little later), for ever.
#[test]
fn a_candidate_outweighed_by_a_rival_of_its_term_steps_aside_and_waits() {
    for (rival_last, steps_aside) in [(id(1, 3), true), (id(2, 2), false)] {
        let mut raft = follower(1, 3, 2, vec![id(1, 1), id(3, 2)]);
        while raft.role() != Role::Candidate {
            raft.tick();
        }
        let _ = raft.take_ready();
        assert_eq!(raft.current_term(), Term(3));
        raft.tick();
        raft.step(NodeId(2), vote_request(3, rival_last));
        let ready = raft.take_ready();
        assert_eq!(
            granted(&ready),
            vec![(NodeId(2), false, Term(3))],
            "voted already"
        );
        assert_eq!(raft.voted_for(), Some(NodeId(1)), "its vote stands");
        if steps_aside {
            assert_eq!(raft.role(), Role::Follower);
            assert_eq!(
                raft.election_elapsed, 0,
                "a whole timeout before it campaigns again"
            );
        } else {
            assert_eq!(
                raft.role(),
                Role::Candidate,
                "a rival behind it changes nothing"
            );
            assert_eq!(raft.election_elapsed, 1);
        }
    }
}

#[test]
fn higher_term_makes_a_leader_follow_and_lower_term_is_refused() {
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = cluster.elect(100).expect("a leader");
    let term = cluster.raft(leader.0).current_term();
    let raft = cluster.raft(leader.0);
    let _ = raft.take_ready();
    raft.step(
        NodeId(if leader.0 == 1 { 2 } else { 1 }),
        vote_request(term.0 - 1, id(0, 0)),
    );
    let ready = raft.take_ready();
    assert_eq!(granted(&ready).len(), 1);
    assert!(!granted(&ready)[0].1, "a stale candidate is refused");
    assert_eq!(granted(&ready)[0].2, term, "with our term");
    assert_eq!(raft.role(), Role::Leader);

    let other = if leader.0 == 1 { 2 } else { 1 };
    raft.step(
        NodeId(other),
        Message::RequestVoteResponse(RequestVoteResponse {
            term: Term(term.0 + 5),
            vote_granted: false,
            pre_vote: false,
        }),
    );
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.current_term(), Term(term.0 + 5));
    assert_eq!(raft.voted_for(), None);
}

#[test]
fn a_single_election_elects_exactly_one_leader() {
    for n in [1, 3, 5] {
        let mut cluster = Cluster::new(ids(n).iter().map(|i| config(i.0, n, true)).collect());
        let leader = cluster.elect(200).expect("a leader");
        cluster.tick_all(50);
        assert_eq!(
            cluster.leader(),
            Some(leader),
            "stable leadership in a cluster of {n}"
        );
        let leaders = cluster
            .nodes
            .values()
            .filter(|node| node.raft.role() == Role::Leader)
            .count();
        assert_eq!(leaders, 1);
    }
}

#[test]
fn split_votes_resolve() {
    // Two candidates in the same term, each holding two of four votes: nobody wins term 2...
    let mut cluster = Cluster::new_members(ids(4).iter().map(|i| config(i.0, 4, false)).collect());
    cluster.cut.insert((NodeId(1), NodeId(4)));
    cluster.cut.insert((NodeId(2), NodeId(3)));
    cluster.cut.insert((NodeId(2), NodeId(4)));
    cluster.cut.insert((NodeId(1), NodeId(3)));
    // Nodes 1 and 2 time out at the same moment; 3 hears only 2 and 4 hears only 1? Both cut above,
    // so 3 and 4 can vote for 1 or 2 only through the remaining links: 1->2 and 2->1 refuse each other.
    for id in [1, 2] {
        for _ in 0..cluster.raft(id).randomized_election_timeout {
            cluster.raft(id).tick();
        }
        cluster.process(NodeId(id));
    }
    cluster.deliver_all();
    assert_eq!(cluster.raft(1).role(), Role::Candidate);
    assert_eq!(cluster.raft(2).role(), Role::Candidate);
    assert_eq!(cluster.leader(), None, "a split vote elects nobody");
    // ...then randomised timeouts in a healed network break the tie.
    cluster.heal();
    let leader = cluster.elect(200).expect("the split resolves");
    assert!(cluster.raft(leader.0).current_term() > Term(1));
}

#[test]
fn pre_vote_keeps_an_isolated_node_from_raising_its_term() {
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    let term = cluster.raft(leader.0).current_term();
    let loner = NodeId(if leader.0 == 3 { 2 } else { 3 });
    cluster.isolate(loner);
    cluster.tick_all(300);
    assert_eq!(
        cluster.raft(loner.0).current_term(),
        term,
        "pre-votes fail, no term bump"
    );
    cluster.heal();
    cluster.tick_all(100);
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "the returning node does not depose the leader"
    );
    assert_eq!(cluster.raft(leader.0).current_term(), term);
}

#[test]
fn without_pre_vote_a_returning_node_would_disrupt() {
    // The contrast that shows what pre-vote buys: the isolated node campaigns and raises its term.
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = cluster.elect(200).expect("a leader");
    let term = cluster.raft(leader.0).current_term();
    let loner = if leader.0 == 3 { 2 } else { 3 };
    cluster.isolate(NodeId(loner));
    cluster.tick_all(300);
    assert!(cluster.raft(loner).current_term() > term);
}

#[test]
fn check_quorum_makes_a_cut_off_leader_step_down() {
    let mut cluster = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, true)).collect());
    let leader = cluster.elect(200).expect("a leader");
    cluster.isolate(leader);
    cluster.tick_all(100);
    // It stepped down, and its own pre-votes fail while it is cut off.
    assert_ne!(cluster.raft(leader.0).role(), Role::Leader);
    assert_ne!(cluster.raft(leader.0).role(), Role::Candidate);
    let new_leader = cluster
        .leader()
        .expect("the majority elects another leader");
    assert_ne!(new_leader, leader);
}

/// A crash lost the write that adopted a term while a snapshot of that term survived (the
/// driver keeps a received snapshot as the rules install it): the node restarts with a log
/// (starting at the snapshot) whose last term is past its hard state's. It reaches that term,
/// with no vote, and stores it; campaigning from the older term would have put entries of a lower
/// term after higher ones. Found by `Raft::check_invariants` in the simulator (seed 730012246,
/// 5 nodes, pre-vote off).
#[test]
fn a_restart_reaches_the_term_of_its_log() {
    let recovered = RecoveredState {
        hard_state: HardState {
            current_term: Term(6),
            voted_for: Some(NodeId(5)),
            commit_index: LogIndex(11),
        },
        log_start: id(22, 8),
        standing: crate::Standing::Member,
        ..Default::default()
    };
    let mut raft = Raft::new(config(5, 5, false), recovered, 5).expect("valid config");
    assert_eq!(raft.current_term(), Term(8));
    assert_eq!(raft.voted_for(), None, "it voted in no later term");
    assert_eq!(raft.check_invariants(), Ok(()));
    let write = raft.take_ready().write;
    assert_eq!(
        write.hard_state.map(|h| (h.current_term, h.voted_for)),
        Some((Term(8), None)),
        "stored before anything depends on it"
    );
}

/// A lone voter wins an election by its own vote, in the same step that adopts the term: no
/// RequestVote waited for the term to be durable. Its learners hear nothing of the term until it
/// is: had they received the term's first entries and had the leader then lost the unsynced term
/// to a power failure, it would have won the same term again after restarting and appended other
/// entries at the same indexes, and the learners, keeping theirs, would apply what it never
/// committed (Log Matching, §5.3).
#[test]
fn a_lone_voter_sends_nothing_of_a_new_term_until_the_term_is_durable() {
    use crate::{ConfChange, Entry, Envelope, PeerSend, Ready};
    fn run_until_leader(raft: &mut Raft) -> Ready {
        for _ in 0..100 {
            raft.tick();
            if raft.role() == Role::Leader {
                return raft.take_ready();
            }
        }
        panic!("a lone voter wins its election");
    }
    fn heard_by_learner(sends: &[PeerSend]) -> bool {
        sends.iter().any(|send| match send {
            PeerSend::Message(Envelope { to, .. }) => *to == NodeId(2),
            PeerSend::Entries(order) => order.to == NodeId(2),
            _ => true,
        })
    }
    let recovered = RecoveredState {
        standing: crate::Standing::Member,
        ..Default::default()
    };
    let mut raft = Raft::new(config(1, 1, false), recovered, 1).expect("valid config");
    let mut disk: Vec<Entry> = Vec::new();
    let mut hard_state = HardState::default();
    let mut store = |raft: &mut Raft, ready: Ready| {
        disk.extend(ready.write.entries.iter().cloned());
        if let Some(written) = ready.write.hard_state {
            hard_state = written;
        }
        if let Some(last) = ready.write.last_log_id() {
            raft.on_log_flushed(last);
        }
        (disk.clone(), hard_state)
    };
    let won = run_until_leader(&mut raft);
    store(&mut raft, won);
    raft.take_ready();
    raft.propose_membership(&[ConfChange::add_learner(NodeId(2), "n2:7000", false)])
        .expect("a leader with a commit in its term takes a change");
    let ready = raft.take_ready();
    assert!(
        heard_by_learner(&ready.sends),
        "a leader whose term is durable replicates to its learner at once"
    );
    let (log, hard_state) = store(&mut raft, ready);
    assert_eq!(hard_state.current_term, Term(1));

    // Restarted, it campaigns in term 2 and wins at once.
    let mut terms = crate::LogTerms::default();
    terms.append(&log);
    let recovered = RecoveredState {
        hard_state,
        standing: crate::Standing::Member,
        term_boundaries: terms.boundaries(),
        memberships: crate::configuration_entries(&log),
        ..Default::default()
    };
    let mut raft = Raft::new(config(1, 1, false), recovered, 1).expect("valid config");
    raft.take_ready();
    let won = run_until_leader(&mut raft);
    assert_eq!(raft.current_term(), Term(2));
    assert_eq!(
        won.write.hard_state.map(|h| h.current_term),
        Some(Term(2)),
        "the new term is being written"
    );
    assert!(
        !heard_by_learner(&won.sends) && won.messages.is_empty(),
        "nothing of term 2 leaves before term 2 is durable: {:?}",
        won.sends
    );
    raft.tick();
    raft.tick();
    assert!(
        !heard_by_learner(&raft.take_ready().sends),
        "not even a heartbeat"
    );
    let last = won.write.last_log_id().expect("the term's blank entry");
    raft.on_log_flushed(last);
    let sends = raft.take_ready().sends;
    assert!(
        heard_by_learner(&sends),
        "once it is durable, the learner hears of the term: {sends:?}"
    );
}
