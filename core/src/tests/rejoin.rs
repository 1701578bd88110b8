//! A node whose store started empty rejoins before it votes (`rejoin.rs`; issue 24, review
//! finding 1: a voter that lost its data came back at term 0 with no vote and voted again).

use super::cluster::{Cluster, Disk};
use super::{append, config, entry, id, ids};
use crate::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, HardState, LogId, LogIndex, Message,
    NodeId, RejoinAnswer, RejoinQuery, RequestVote, RequestVoteResponse, Role, Standing, Term,
};

pub(super) fn vote_request(term: Term, last: LogId) -> Message {
    Message::RequestVote(RequestVote {
        term,
        last_log_id: last,
        pre_vote: false,
        leadership_transfer: false,
    })
}

pub(super) fn granted(cluster: &mut Cluster, id: u64) -> Vec<bool> {
    cluster
        .raft(id)
        .take_ready()
        .messages
        .into_iter()
        .filter_map(|m| match m.message {
            Message::RequestVoteResponse(RequestVoteResponse { vote_granted, .. }) => {
                Some(vote_granted)
            }
            _ => None,
        })
        .collect()
}

/// A 3-node cluster with a leader that committed `entries` commands.
fn cluster_with_entries(entries: usize) -> (Cluster, NodeId) {
    let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = c.elect(200).expect("a leader");
    for i in 0..entries {
        assert!(c.propose(leader, &format!("entry {i}")));
    }
    c.tick_all(5);
    (c, leader)
}

/// `id` crashes and restarts on a new, empty disk, under its old id.
pub(super) fn wipe(c: &mut Cluster, id: NodeId) {
    c.crash(id);
    c.replace_disk(
        id,
        Disk {
            hard_state: HardState::default(),
            standing: Standing::default(),
            log: Vec::new(),
        },
    );
}

#[test]
fn a_voter_that_lost_its_data_does_not_vote_again_in_a_term_it_voted_in() {
    let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = c.elect(200).expect("a leader");
    c.tick_all(3);
    let term = c.raft(leader.0).current_term();
    let voter = ids(3)
        .into_iter()
        .find(|id| *id != leader && c.raft(id.0).voted_for() == Some(leader))
        .expect("someone voted for the leader");
    let other = ids(3)
        .into_iter()
        .find(|id| *id != leader && *id != voter)
        .expect("a third node");
    // The voter's disk is replaced: it restarts empty, under its old id.
    wipe(&mut c, voter);
    assert_eq!(c.raft(voter.0).standing(), Standing::Rejoining);
    let _ = c.raft(voter.0).take_ready();
    // Another candidate asks it for a vote in the term it already voted in: refused (before the
    // fix, its term was 0 and it had voted for nobody, so it granted: two leaders in `term`).
    c.raft(voter.0).step(other, vote_request(term, LogId::ZERO));
    assert_eq!(granted(&mut c, voter.0), vec![false]);
    assert_eq!(c.raft(voter.0).voted_for(), None, "no vote recorded");

    // Both others answer: its floor is their highest term; it adopts it.
    let leader_log = c.raft(leader.0).last_log_id();
    for id in [leader, other] {
        let conf = c.raft(id.0).membership().conf.clone();
        c.raft(voter.0).step(
            id,
            Message::RejoinAnswer(RejoinAnswer {
                term,
                configs: vec![(crate::LogId::ZERO, conf)],
                last_log_id: leader_log,
                leader_commit: None,
                commit: crate::LogId::ZERO,
            }),
        );
    }
    assert_eq!(
        c.raft(voter.0).standing(),
        Standing::CatchingUp {
            floor: term,
            floor_log: leader_log,
            floor_leader_commit: None,
        }
    );
    assert_eq!(c.raft(voter.0).current_term(), term);
    let _ = c.raft(voter.0).take_ready();
    // Still no vote in that term, nor in a later one for a log behind the floor log...
    c.raft(voter.0).step(other, vote_request(term, leader_log));
    assert_eq!(granted(&mut c, voter.0), vec![false]);
    c.raft(voter.0)
        .step(other, vote_request(Term(term.0 + 1), LogId::ZERO));
    assert_eq!(granted(&mut c, voter.0), vec![false]);
    // ...but for an up-to-date candidate in a later term, yes.
    c.raft(voter.0)
        .step(other, vote_request(Term(term.0 + 2), leader_log));
    assert_eq!(granted(&mut c, voter.0), vec![true]);
}

#[test]
fn a_rejoined_node_catches_up_and_becomes_a_member_and_the_cluster_goes_on() {
    let (mut c, leader) = cluster_with_entries(5);
    let lost = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    wipe(&mut c, lost);
    // It asks, catches up from the leader, and is a member once it holds an entry of a term
    // after the floor: the leader's term is the floor, so that takes a new leader.
    c.tick_all(40);
    assert!(matches!(
        c.raft(lost.0).standing(),
        Standing::CatchingUp { .. }
    ));
    assert_eq!(
        c.raft(lost.0).last_log_id(),
        c.raft(leader.0).last_log_id(),
        "caught up"
    );
    c.crash(leader);
    let mut rounds = 0;
    while c.leader().is_none_or(|l| l == leader) {
        c.tick_all(1);
        rounds += 1;
        assert!(rounds < 300, "a new leader is elected");
    }
    c.tick_all(5);
    assert_eq!(c.raft(lost.0).standing(), Standing::Member);
    assert_eq!(c.node(lost.0).disk.standing, Standing::Member, "persisted");
    let new_leader = c.leader().expect("leader");
    assert!(c.propose(new_leader, "after"));
    c.tick_all(5);
    let applied = c.node(lost.0).applied.len();
    assert!(
        applied >= 7,
        "the lost node applies everything again: {applied}"
    );
    assert_eq!(c.raft(new_leader.0).role(), Role::Leader);
    c.assert_consistent();
}

#[test]
fn a_new_cluster_starts_with_one_round_of_answers() {
    let mut c = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, true)).collect());
    for id in ids(3) {
        assert_eq!(c.raft(id.0).standing(), Standing::Rejoining);
    }
    c.deliver_all();
    for id in ids(3) {
        assert_eq!(
            c.raft(id.0).standing(),
            Standing::Member,
            "every answer says term 0: nothing to catch up"
        );
    }
    assert!(c.elect(200).is_some());
    // A lone voter is a member at once.
    let single = Cluster::new(vec![config(1, 1, true)]);
    assert_eq!(single.node(1).raft.standing(), Standing::Member);
}

/// A quorum-intersecting set of answers is not enough: they may all predate a vote still in
/// flight to them. Five voters: the old self of n5 granted n4's request in term 5, then lost its
/// store; n1, n2 and n3 answer (term 4: n4's requests have not reached them yet) and would later
/// vote for n4 too. Before the fix, three answers of four set the floor at 4, and n5 voted in
/// term 5 a second time, for n1 (n1, n2, n5 against n4, n3 and the old n5: two leaders in term 5).
/// Now it waits for n4, whose answer says term 5.
#[test]
fn a_rejoining_node_waits_for_every_member_not_a_quorum_of_them() {
    let mut c = Cluster::new_members(ids(5).iter().map(|i| config(i.0, 5, false)).collect());
    let rejoiner = ids(5)[4];
    let conf = c.raft(1).membership().conf.clone();
    wipe(&mut c, rejoiner);
    let _ = c.raft(rejoiner.0).take_ready();
    let answer = |term: u64| {
        Message::RejoinAnswer(RejoinAnswer {
            term: Term(term),
            configs: vec![(crate::LogId::ZERO, conf.clone())],
            last_log_id: LogId::ZERO,
            leader_commit: None,
            commit: crate::LogId::ZERO,
        })
    };
    for id in &ids(5)[..3] {
        c.raft(rejoiner.0).step(*id, answer(4));
    }
    assert_eq!(c.raft(rejoiner.0).standing(), Standing::Rejoining);
    let _ = c.raft(rejoiner.0).take_ready();
    c.raft(rejoiner.0)
        .step(ids(5)[0], vote_request(Term(5), LogId::ZERO));
    assert_eq!(granted(&mut c, rejoiner.0), vec![false]);

    c.raft(rejoiner.0).step(ids(5)[3], answer(5));
    assert_eq!(
        c.raft(rejoiner.0).standing(),
        Standing::CatchingUp {
            floor: Term(5),
            floor_log: LogId::ZERO,
            floor_leader_commit: None,
        }
    );
    let _ = c.raft(rejoiner.0).take_ready();
    c.raft(rejoiner.0)
        .step(ids(5)[0], vote_request(Term(5), LogId::ZERO));
    assert_eq!(
        granted(&mut c, rejoiner.0),
        vec![false],
        "term 5 is at the floor"
    );
    c.raft(rejoiner.0)
        .step(ids(5)[0], vote_request(Term(6), LogId::ZERO));
    assert_eq!(
        granted(&mut c, rejoiner.0),
        vec![true],
        "term 6 is after it"
    );
}

#[test]
fn a_leader_asked_to_rejoin_stops_counting_what_the_asker_acknowledged_before() {
    let (mut c, leader) = cluster_with_entries(3);
    let term = c.raft(leader.0).current_term();
    let last = c.raft(leader.0).last_log_id();
    let peer = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let matched = |c: &mut Cluster| {
        c.raft(leader.0)
            .matched()
            .and_then(|m| m.get(&peer).copied())
    };
    assert_eq!(matched(&mut c), Some(last.index));
    c.isolate(peer);

    // The peer's store is new: it asks. The leader answers with its commit index and stops
    // counting what the old store acknowledged.
    c.raft(leader.0)
        .step(peer, Message::RejoinQuery(RejoinQuery { term: Term::ZERO }));
    let commit = c.raft(leader.0).commit_index();
    let answers: Vec<Option<LogIndex>> = c
        .raft(leader.0)
        .take_ready()
        .messages
        .into_iter()
        .filter(|m| m.to == peer)
        .filter_map(|m| match m.message {
            Message::RejoinAnswer(answer) => Some(answer.leader_commit),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![Some(commit)]);
    assert_eq!(
        matched(&mut c),
        None,
        "the old acknowledgements no longer count"
    );

    // A late success from the old store, to a message sent before the question: ignored.
    c.raft(leader.0).step(
        peer,
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term,
            request_id: 1,
            outcome: AppendOutcome::Success { matched: last },
        }),
    );
    assert_eq!(
        matched(&mut c),
        None,
        "a late answer of the old store vouches for nothing"
    );
}

/// Seeds 4200023438 and 4200170803 (3 nodes, pre-vote off): the floor log came from the leader
/// of the floor's term, whose tail no remaining voter held, and that leader was then removed and
/// shut down; the rejoined voter, needed for any quorum, voted for nobody, for ever.
#[test]
fn a_rejoined_voter_votes_once_it_holds_the_floor_leaders_commits_though_the_floor_log_left() {
    for leader_reported in [false, true] {
        let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
        let lost = NodeId(1);
        let conf = c.raft(lost.0).membership().conf.clone();
        wipe(&mut c, lost);
        // What it sends goes nowhere: n3 is gone after the messages below, n2 never answers
        // again (the sharpest case: no fresh round of questions can complete).
        c.isolate(lost);
        let answer = |last_log_id: LogId, leader_commit: Option<LogIndex>| {
            Message::RejoinAnswer(RejoinAnswer {
                term: Term(3),
                configs: vec![(LogId::ZERO, conf.clone())],
                last_log_id,
                leader_commit,
                commit: crate::LogId::ZERO,
            })
        };
        // n3 leads term 3 with an uncommitted tail up to 11, commit 5; n2 holds 7.
        let reported = leader_reported.then_some(LogIndex(5));
        c.raft(lost.0).step(NodeId(3), answer(id(11, 3), reported));
        c.raft(lost.0).step(NodeId(2), answer(id(7, 3), None));
        c.process(lost);
        assert_eq!(
            c.raft(lost.0).standing(),
            Standing::CatchingUp {
                floor: Term(3),
                floor_log: id(11, 3),
                floor_leader_commit: reported,
            }
        );
        // n3 sends its log up to 10, then is removed and shut down.
        c.raft(lost.0).step(
            NodeId(3),
            Message::AppendEntries(AppendEntries {
                term: Term(3),
                prev_log_id: LogId::ZERO,
                entries: (1..=10).map(|i| entry(i, 3, "x")).collect(),
                leader_commit: LogIndex(5),
                sync_may_wait: false,
                request_id: 7,
            }),
        );
        c.process(lost);
        assert_eq!(c.raft(lost.0).last_log_id(), id(10, 3));
        assert!(
            matches!(c.raft(lost.0).standing(), Standing::CatchingUp { .. }),
            "a member in the floor's term could vote a second time in it"
        );
        // No leader any more: it campaigns only if it knows its log holds what its old self
        // helped commit (n2, at 7@3, could never win: its log is behind).
        let mut campaigned = false;
        for _ in 0..200 {
            c.tick(lost);
            if c.raft(lost.0).role() == Role::Candidate {
                campaigned = true;
                break;
            }
        }
        assert_eq!(campaigned, leader_reported);
        if leader_reported {
            assert_eq!(c.raft(lost.0).standing(), Standing::Member);
            assert_eq!(c.node(lost.0).disk.standing, Standing::Member, "persisted");
        }
    }
}

/// Seed 21000687693 (3 nodes, pre-vote off): a rejoining node's answers made it `CatchingUp`,
/// and its answer to the leader's next message, vouching for entries it had synced, left at once,
/// ahead of the write recording that standing. The leader counted it and committed the removal
/// of the third voter, which retired; the node crashed before its standing was durable and came
/// back `Rejoining`, waiting for the retired voter's answer for ever. Now a vouching answer
/// leaves after the standing's write, until an entry appended after it is durable.
#[test]
fn an_answer_vouching_for_a_rejoined_node_waits_for_its_standing_to_be_durable() {
    let (mut c, leader) = cluster_with_entries(3);
    let term = c.raft(leader.0).current_term();
    let last = c.raft(leader.0).last_log_id();
    let conf = c.raft(leader.0).membership().conf.clone();
    let commit = c.raft(leader.0).commit_index();
    let rejoiner = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let other = ids(3)
        .into_iter()
        .find(|id| *id != leader && *id != rejoiner)
        .expect("the other follower");
    wipe(&mut c, rejoiner);
    let node = c.raft(rejoiner.0);
    let _ = node.take_ready();
    let entries: Vec<_> = (1..=last.index.0).map(|i| entry(i, term.0, "x")).collect();
    // It takes the leader's log while rejoining (vouching for nothing) and syncs it.
    node.step(leader, append(term.0, LogId::ZERO, entries, commit.0));
    let ready = node.take_ready();
    assert_eq!(ready.write.entries.len(), last.index.0 as usize);
    node.on_log_flushed(LogId::new(term, last.index));
    // Every other member answers: it catches up from here, its standing on its way to disk.
    for from in [leader, other] {
        node.step(
            from,
            Message::RejoinAnswer(RejoinAnswer {
                term,
                configs: vec![(LogId::ZERO, conf.clone())],
                last_log_id: LogId::new(term, last.index),
                leader_commit: Some(commit),
                commit: crate::LogId::ZERO,
            }),
        );
    }
    let ready = node.take_ready();
    assert!(
        matches!(
            ready.write.standing,
            Some(Standing::CatchingUp { .. } | Standing::Member)
        ),
        "{:?}",
        ready.write.standing
    );
    // A heartbeat: the entries it vouches for are synced, its standing is not.
    let vouches = |messages: &[crate::Envelope]| {
        messages.iter().any(|m| {
            matches!(
                m.message,
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    outcome: AppendOutcome::Success { .. },
                    ..
                })
            )
        })
    };
    let node = c.raft(rejoiner.0);
    node.step(leader, append(term.0, last, Vec::new(), commit.0));
    let ready = node.take_ready();
    assert!(
        !vouches(&ready.prompt_messages),
        "not ahead of the standing"
    );
    assert!(vouches(&ready.messages), "after the writes in flight");
    // An entry appended after the standing is durable: so is the standing, and heartbeats are
    // answered at once again.
    let next = LogId::new(term, last.index.next());
    node.step(
        leader,
        append(
            term.0,
            last,
            vec![entry(next.index.0, term.0, "y")],
            commit.0,
        ),
    );
    let _ = node.take_ready();
    node.on_log_flushed(next);
    node.step(leader, append(term.0, next, Vec::new(), commit.0));
    let ready = node.take_ready();
    assert!(vouches(&ready.prompt_messages), "promptly again");
}

/// An answer listing more configurations than any member's log holds past its commit is not
/// counted (merging it would take time quadratic in its length on the node's thread): with it,
/// the last member has still not answered; its real answer then completes the round.
#[test]
fn an_answer_listing_too_many_configurations_is_ignored() {
    let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let rejoiner = ids(3)[2];
    let conf = c.raft(1).membership().conf.clone();
    wipe(&mut c, rejoiner);
    let _ = c.raft(rejoiner.0).take_ready();
    let answer = |configs: Vec<(LogId, crate::membership::ConfState)>| {
        Message::RejoinAnswer(RejoinAnswer {
            term: Term(4),
            configs,
            last_log_id: LogId::ZERO,
            leader_commit: None,
            commit: crate::LogId::ZERO,
        })
    };
    c.raft(rejoiner.0)
        .step(ids(3)[0], answer(vec![(LogId::ZERO, conf.clone())]));
    let flood: Vec<_> = (0..=crate::rejoin::MAX_CONFIGS_PER_REJOIN_ANSWER as u64)
        .map(|i| {
            let mut other = conf.clone();
            other.learners.insert(NodeId(100 + i));
            (LogId::new(Term(1), LogIndex(i)), other)
        })
        .collect();
    c.raft(rejoiner.0).step(ids(3)[1], answer(flood));
    assert_eq!(c.raft(rejoiner.0).standing(), Standing::Rejoining);
    c.raft(rejoiner.0)
        .step(ids(3)[1], answer(vec![(LogId::ZERO, conf.clone())]));
    assert!(
        matches!(
            c.raft(rejoiner.0).standing(),
            Standing::CatchingUp { floor: Term(4), .. }
        ),
        "{:?}",
        c.raft(rejoiner.0).standing()
    );
}

/// A rejoining node that holds the leader's whole log refuses each probe the same way while it
/// waits for a member that is down; the leader probes it again at its heartbeats, not at once
/// (it and the leader traded probes and refusals as fast as messages went, for as long as it
/// waited).
#[test]
fn a_caught_up_rejoining_node_is_probed_at_heartbeats_not_at_once() {
    let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = c.elect(200).expect("a leader");
    c.tick_all(5);
    let rest: Vec<NodeId> = ids(3).into_iter().filter(|id| *id != leader).collect();
    let (rejoiner, down) = (rest[0], rest[1]);
    c.crash(down);
    wipe(&mut c, rejoiner);
    let heartbeats = 10;
    let heartbeat_ticks = c.raft(leader.0).config().heartbeat_ticks;
    let mut probes = 0;
    for _ in 0..heartbeats * heartbeat_ticks {
        c.tick(leader);
        c.tick(rejoiner);
        let mut budget = 10_000;
        while let Some(envelope) = c.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if envelope.from == leader
                && envelope.to == rejoiner
                && matches!(envelope.message, Message::AppendEntries(_))
            {
                probes += 1;
            }
            c.deliver(envelope);
        }
    }
    assert_eq!(
        c.raft(rejoiner.0).standing(),
        Standing::Rejoining,
        "waits for {down}"
    );
    assert_eq!(
        c.raft(rejoiner.0).last_log_id(),
        c.raft(leader.0).last_log_id(),
        "it holds the leader's log"
    );
    assert!(
        probes <= 3 * heartbeats as usize,
        "{probes} AppendEntries in {heartbeats} heartbeats"
    );
}

/// A configuration that lies in no log holding the newest commit an answer reported is not
/// waited for (a member of it retired for good would keep the node from ever voting): one at the
/// index of the configuration in force at that commit but different from it, one between that
/// configuration and the commit, one past the commit whose entry's term is before the commit's,
/// whatever came after it in the reporter's log (Raft's Figure 8: a leader that lacked the
/// committed entry may have appended entries of a later term behind it). A configuration past
/// the commit of the commit's term or later may still decide: its members are waited for.
#[test]
fn a_stale_configuration_does_not_hold_up_a_rejoin() {
    let committed = crate::ConfState::with_voters(ids(5).into_iter().filter(|id| id.0 != 3));
    let stale = crate::ConfState::with_voters([1, 2, 3, 4, 5, 6].map(NodeId));
    let answer = |configs: Vec<(LogId, crate::ConfState)>, last: LogId, commit: LogId| {
        Message::RejoinAnswer(RejoinAnswer {
            term: Term(6),
            configs,
            last_log_id: last,
            leader_commit: None,
            commit,
        })
    };
    let at = |term, index| LogId::new(Term(term), LogIndex(index));
    // Nodes 1 and 2 committed through `commit`, under the configuration at 10; node 4, whose
    // durable log ends at `last` with its commit at 8, reports `tail` besides the founders'
    // configuration.
    let rejoined = |commit: LogId, tail: (LogId, crate::ConfState), last: LogId| {
        let mut c = Cluster::new_members(ids(5).iter().map(|i| config(i.0, 5, false)).collect());
        let rejoiner = ids(5)[4];
        wipe(&mut c, rejoiner);
        let _ = c.raft(rejoiner.0).take_ready();
        for id in [1, 2] {
            let configs = vec![(at(3, 10), committed.clone())];
            let last = at(6, commit.index.0 + 1);
            c.raft(rejoiner.0)
                .step(NodeId(id), answer(configs, last, commit));
        }
        let founding = crate::ConfState::with_voters(ids(5));
        let configs = vec![(at(1, 8), founding), tail];
        c.raft(rejoiner.0)
            .step(NodeId(4), answer(configs, last, at(1, 8)));
        c.raft(rejoiner.0).standing()
    };
    let caught_up = |standing| matches!(standing, Standing::CatchingUp { floor: Term(6), .. });
    // Another entry at the committed configuration's index.
    let standing = rejoined(at(3, 10), (at(2, 10), stale.clone()), at(2, 11));
    assert!(caught_up(standing), "{standing:?}");
    // An entry between the configuration in force at the commit and the commit.
    let standing = rejoined(at(3, 12), (at(3, 11), stale.clone()), at(3, 12));
    assert!(caught_up(standing), "{standing:?}");
    // Past the commit, of a term before the commit's, at the end of the reporter's log.
    let standing = rejoined(at(3, 10), (at(2, 11), stale.clone()), at(2, 11));
    assert!(caught_up(standing), "{standing:?}");
    // The same, followed by entries of a later term than the commit's (Figure 8: node 4 took
    // them from the leader of term 5, which lacked the entry at 10 that the leader of term 6
    // committed later; node 1 learned that commit before it held the entry after it).
    let standing = rejoined(at(3, 10), (at(2, 11), stale.clone()), at(5, 13));
    assert!(caught_up(standing), "{standing:?}");
    // Past the commit, of the commit's term: in a log that holds it, so waited for.
    let standing = rejoined(at(3, 10), (at(3, 11), stale.clone()), at(3, 12));
    assert_eq!(standing, Standing::Rejoining);
    // The same, appended but not yet durable behind a durable end of an older term (a
    // configuration counts once appended): waited for too.
    let standing = rejoined(at(3, 10), (at(3, 11), stale), at(2, 9));
    assert_eq!(standing, Standing::Rejoining);
}

/// Index 0 holds no entry: a joiner's own empty configuration there does not make the founders'
/// configuration reported at 0 a superseded one, so a leader's word alone (in a cluster that has
/// committed nothing yet) does not make the joiner a member: a majority of the founders must
/// answer too.
#[test]
fn the_founding_configuration_at_index_zero_is_not_superseded_by_a_joiners() {
    let mut c = Cluster::new_members(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = c.elect(200).expect("a leader");
    let term = c.raft(leader.0).current_term();
    c.add_node(NodeId(4), leader);
    let _ = c.raft(4).take_ready();
    let founding = crate::ConfState::with_voters(ids(3));
    let answer = |leader_commit| {
        Message::RejoinAnswer(RejoinAnswer {
            term,
            configs: vec![(LogId::ZERO, founding.clone())],
            last_log_id: LogId::ZERO,
            leader_commit,
            commit: crate::LogId::ZERO,
        })
    };
    c.raft(4).step(leader, answer(Some(LogIndex::ZERO)));
    assert_eq!(
        c.raft(4).standing(),
        Standing::Rejoining,
        "one answer of three"
    );
    let other = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a voter");
    c.raft(4).step(other, answer(None));
    assert_eq!(
        c.raft(4).standing(),
        Standing::Member,
        "a majority answered"
    );
}
