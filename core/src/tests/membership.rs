//! Membership changes (§6, thesis §4) and leadership transfer (thesis §3.10) on the synchronous
//! cluster, one rule per test.

use super::cluster::Cluster;
use super::{config, ids};
use crate::{
    ChangeError, ConfChange, ConfState, LogIndex, Message, NodeId, Refusal, RequestVote,
    RequestVoteResponse, Role, Term, TransferError,
};
use bytes::Bytes;
use std::collections::BTreeSet;

fn set(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// A cluster of `size` voters with pre-vote and check-quorum (hence leader stickiness) on.
fn cluster(size: u64) -> Cluster {
    Cluster::new(ids(size).iter().map(|i| config(i.0, size, true)).collect())
}

/// Elect a leader and let its first entry commit everywhere.
fn stable_leader(c: &mut Cluster) -> NodeId {
    let leader = c.elect(300).expect("a leader");
    c.tick_all(5);
    assert_eq!(c.leader(), Some(leader));
    leader
}

fn learner(id: u64) -> ConfChange {
    ConfChange::add_learner(NodeId(id), format!("n{id}:7000"), false)
}

fn voter(id: u64) -> ConfChange {
    ConfChange::promote(NodeId(id))
}

fn remove(id: NodeId) -> ConfChange {
    ConfChange::remove(id)
}

/// Propose a membership change on `leader` and carry out its Ready (nothing is delivered yet).
fn change(
    c: &mut Cluster,
    leader: NodeId,
    changes: &[ConfChange],
) -> Result<LogIndex, ChangeError> {
    let result = c.raft(leader.0).propose_membership(changes);
    c.process(leader);
    result.map(|id| id.index)
}

/// Propose one command on `leader` (which must take it); nothing is delivered yet.
fn propose(c: &mut Cluster, leader: NodeId, command: &str) -> LogIndex {
    let ids = c
        .raft(leader.0)
        .propose(vec![Bytes::copy_from_slice(command.as_bytes())])
        .expect("the leader takes proposals");
    c.process(leader);
    ids[0].index
}

fn conf(c: &Cluster, id: NodeId) -> &ConfState {
    &c.nodes[&id].raft.membership().conf
}

/// The nodes of the cluster other than `except`, in id order.
fn others(c: &Cluster, except: &[NodeId]) -> Vec<NodeId> {
    c.nodes
        .keys()
        .copied()
        .filter(|id| !except.contains(id))
        .collect()
}

fn cut_both(c: &mut Cluster, a: NodeId, b: NodeId) {
    c.cut.insert((a, b));
    c.cut.insert((b, a));
}

/// The configuration entries of `id`'s durable log: `(index, joint?)`.
fn config_entries(c: &Cluster, id: NodeId) -> Vec<(LogIndex, ConfState)> {
    crate::configuration_entries(&c.nodes[&id].disk.log)
        .into_iter()
        .map(|(index, membership)| (index, membership.conf))
        .collect()
}

/// Add node `id` as a learner (an empty node that knows no configuration) and let it catch up.
fn add_learner(c: &mut Cluster, leader: NodeId, id: u64) {
    c.add_node(NodeId(id), leader);
    let index = change(c, leader, &[learner(id)]).expect("the change is accepted");
    c.tick_all(20);
    assert!(c.raft(leader.0).commit_index() >= index);
}

#[test]
fn growing_from_three_to_five_goes_through_learners_and_one_joint_change() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    propose(&mut c, leader, "before");
    c.tick_all(2);

    // Two empty nodes join as learners in one (direct: no voter changes) configuration.
    c.add_node(NodeId(4), leader);
    c.add_node(NodeId(5), leader);
    assert!(
        conf(&c, NodeId(4)).voters.is_empty(),
        "a joining node knows no configuration"
    );
    let added = change(&mut c, leader, &[learner(4), learner(5)]).expect("accepted");
    assert!(!conf(&c, leader).is_joint());
    c.tick_all(20);
    for id in 1..=5 {
        let node = c.node(id);
        assert_eq!(
            node.raft.membership().conf.voters,
            set(&[1, 2, 3]),
            "node {id}"
        );
        assert_eq!(
            node.raft.membership().conf.learners,
            set(&[4, 5]),
            "node {id}"
        );
        assert!(
            node.raft.commit_index() >= added,
            "node {id} knows the change committed"
        );
    }
    for id in [4, 5] {
        assert_eq!(
            c.node(id).disk.log,
            c.node(leader.0).disk.log,
            "learner {id} caught up"
        );
        assert!(!c.node(id).raft.is_promotable());
    }

    // Learners never campaign, even cut off from the leader for many election timeouts.
    let term = c.raft(leader.0).current_term();
    c.isolate(NodeId(4));
    c.tick_all(200);
    assert_eq!(c.raft(4).elections_started(), 0);
    assert_eq!(c.raft(4).role(), Role::Follower);
    assert_eq!(c.raft(4).current_term(), term);
    assert_eq!(c.leader(), Some(leader));
    c.heal();
    c.tick_all(20);

    // Learners do not count toward a commit: the leader and both learners hold the entry, but
    // only one of three voters does.
    let voters = others(&c, &[leader, NodeId(4), NodeId(5)]);
    for v in &voters {
        cut_both(&mut c, leader, *v);
    }
    let lonely = propose(&mut c, leader, "learners only");
    c.deliver_all();
    assert_eq!(c.raft(4).last_log_id().index, lonely);
    assert_eq!(c.raft(5).last_log_id().index, lonely);
    assert!(
        c.raft(leader.0).commit_index() < lonely,
        "learners' copies do not commit"
    );
    c.heal();
    c.tick_all(20);
    assert!(c.raft(leader.0).commit_index() >= lonely);

    // Promote both at once: a joint configuration, left by the leader by itself.
    let joint = change(&mut c, leader, &[voter(4), voter(5)]).expect("accepted");
    let now = conf(&c, leader).clone();
    assert_eq!(now.voters, set(&[1, 2, 3, 4, 5]));
    assert_eq!(now.voters_outgoing, set(&[1, 2, 3]));
    assert!(now.auto_leave);
    c.tick_all(20);
    for id in 1..=5 {
        let raft = &c.node(id).raft;
        assert_eq!(
            raft.membership().conf,
            ConfState::with_voters(set(&[1, 2, 3, 4, 5])),
            "node {id}"
        );
        assert!(
            raft.membership_index() > joint,
            "node {id} left the joint configuration"
        );
        assert!(raft.commit_index() >= raft.membership_index(), "node {id}");
    }
    let entries = config_entries(&c, leader);
    assert_eq!(entries.len(), 3, "learners, joint, leave: {entries:?}");
    assert_eq!(entries[1].0, joint);
    assert!(entries[1].1.is_joint());
    assert_eq!(entries[2].1, ConfState::with_voters(set(&[1, 2, 3, 4, 5])));

    // The new majority is three of five: two cut off still commit, three do not.
    let rest = others(&c, &[leader]);
    for v in &rest[..2] {
        c.isolate(*v);
    }
    let with_three = propose(&mut c, leader, "three of five");
    c.deliver_all();
    assert!(c.raft(leader.0).commit_index() >= with_three);
    c.heal();
    c.tick_all(20);
    for v in &rest[..3] {
        c.isolate(*v);
    }
    let with_two = propose(&mut c, leader, "two of five");
    c.deliver_all();
    assert!(
        c.raft(leader.0).commit_index() < with_two,
        "two of five is no majority"
    );
    c.heal();
    c.tick_all(20);
    for id in 1..=5 {
        assert!(c.node(id).raft.commit_index() >= with_two, "node {id}");
    }
    c.assert_consistent();
}

#[test]
fn shrinking_five_to_three_removes_the_leader_which_hands_over_and_stays_quiet() {
    let mut c = cluster(5);
    let leader = stable_leader(&mut c);
    let term = c.raft(leader.0).current_term();
    let also_removed = others(&c, &[leader])[0];
    let remaining: BTreeSet<NodeId> = others(&c, &[leader, also_removed]).into_iter().collect();
    let elections = c.raft(leader.0).elections_started();

    let joint = change(&mut c, leader, &[remove(leader), remove(also_removed)]).expect("accepted");
    assert_eq!(conf(&c, leader).voters, remaining);
    assert_eq!(conf(&c, leader).voters_outgoing, set(&[1, 2, 3, 4, 5]));
    assert_eq!(
        c.raft(leader.0).role(),
        Role::Leader,
        "still leads while joint"
    );

    // Without a single tick: the joint entry commits, the leader leaves the joint configuration,
    // that commits, the leader steps down and tells a remaining voter to campaign at once.
    c.deliver_all();
    assert_eq!(c.raft(leader.0).role(), Role::Follower);
    assert!(!c.raft(leader.0).is_promotable());
    assert!(c.raft(leader.0).commit_index() > joint);
    assert_eq!(
        c.raft(leader.0).membership().conf,
        ConfState::with_voters(remaining.clone())
    );
    let successor = c.leader().expect("a new leader at once, by TimeoutNow");
    assert!(remaining.contains(&successor));
    assert_eq!(c.raft(successor.0).current_term(), Term(term.0 + 1));

    // The remaining three lead and commit, and the removed leader never campaigns.
    c.tick_all(300);
    assert_eq!(c.leader(), Some(successor), "stable leadership");
    assert_eq!(c.raft(successor.0).current_term(), Term(term.0 + 1));
    assert_eq!(c.raft(leader.0).elections_started(), elections);
    assert_eq!(c.raft(leader.0).role(), Role::Follower);
    let index = propose(&mut c, successor, "after");
    c.tick_all(6);
    for id in &remaining {
        assert!(c.nodes[id].raft.commit_index() >= index, "node {id}");
        assert_eq!(conf(&c, *id), &ConfState::with_voters(remaining.clone()));
    }
    // The two removed nodes are out of the loop: a commit needs two of the remaining three.
    c.crash(leader);
    c.crash(also_removed);
    c.isolate(*remaining.iter().find(|id| **id != successor).unwrap());
    let index = propose(&mut c, successor, "two of three");
    c.deliver_all();
    assert!(c.raft(successor.0).commit_index() >= index);
    c.assert_consistent();
}

#[test]
fn only_one_change_is_in_flight_and_a_new_leader_waits_for_its_first_commit() {
    // Without check-quorum (no leases), so that one node can be elected by hand below.
    let mut c = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = stable_leader(&mut c);
    c.add_node(NodeId(4), leader);
    c.add_node(NodeId(5), leader);

    let follower = others(&c, &[leader])[0];
    assert!(matches!(
        c.raft(follower.0).propose_membership(&[learner(4)]),
        Err(ChangeError::Refused(Refusal::NotLeader(_)))
    ));

    let first = change(&mut c, leader, &[learner(4)]).expect("accepted");
    assert_eq!(
        change(&mut c, leader, &[learner(5)]),
        Err(ChangeError::InProgress { index: first }),
        "the first change is not committed yet"
    );
    c.tick_all(20);
    change(&mut c, leader, &[learner(5)]).expect("accepted once the first committed");
    c.tick_all(20);

    // A joint change: in progress until the cluster has left the joint configuration.
    let joint = change(&mut c, leader, &[voter(4), voter(5)]).expect("accepted");
    assert_eq!(
        change(&mut c, leader, &[remove(NodeId(5))]),
        Err(ChangeError::InProgress { index: joint }),
        "joint, uncommitted"
    );
    // Let the joint entry commit on the leader but not the entry that leaves it: only node 4
    // answers (incoming {1..5} needs three, outgoing {1,2,3} needs two: leader + one more voter).
    let old = others(&c, &[leader, NodeId(4), NodeId(5)]);
    cut_both(&mut c, leader, old[1]);
    cut_both(&mut c, leader, NodeId(5));
    c.deliver_all();
    assert!(c.raft(leader.0).commit_index() >= joint);
    let leave = c.raft(leader.0).membership_index();
    assert!(leave > joint, "the leader appended the entry that leaves");
    assert!(!conf(&c, leader).is_joint());
    // Leaving needs three of {1..5} now: the leader, old[0] and 4 do it.
    c.heal();
    c.tick_all(20);
    assert!(c.raft(leader.0).commit_index() >= leave);
    assert!(change(&mut c, leader, &[remove(NodeId(5))]).is_ok());
    c.tick_all(20);

    // A brand-new leader: elected by hand, its blank entry not yet acknowledged by anyone.
    c.crash(leader);
    let a = others(&c, &[leader])[0];
    let raft = c.raft(a.0);
    for _ in 0..raft.randomized_election_timeout {
        raft.tick();
    }
    c.process(a);
    assert_eq!(c.raft(a.0).role(), Role::Candidate);
    // Deliver the vote requests, then the grants, and nothing more.
    for _ in 0..2 {
        let queued: Vec<_> = c.queue.drain(..).collect();
        for envelope in queued {
            if c.nodes[&envelope.to].up {
                let to = envelope.to;
                c.raft(to.0).step(envelope.from, envelope.message);
                c.process(to);
            }
        }
    }
    assert_eq!(c.raft(a.0).role(), Role::Leader);
    assert_eq!(
        change(&mut c, a, &[learner(6)]),
        Err(ChangeError::NotReady),
        "no change before an entry of the new term commits"
    );
    c.deliver_all();
    c.tick_all(6);
    assert!(change(&mut c, a, &[learner(6)]).is_ok());
    c.assert_consistent();
}

/// A leader appends a joint configuration replacing `replaced` by the learner 4, reaching only
/// `reached`, and crashes. Returns (old leader, replaced, joint index).
fn joint_change_interrupted(
    c: &mut Cluster,
    reached: impl Fn(NodeId, NodeId) -> NodeId,
) -> (NodeId, NodeId, LogIndex) {
    let leader = stable_leader(c);
    add_learner(c, leader, 4);
    let voters = others(c, &[leader, NodeId(4)]);
    let replaced = voters[1];
    let reached = reached(voters[0], replaced);
    // Only `reached` receives the entry, and the leader hears nothing back.
    for peer in others(c, &[leader]) {
        c.cut.insert((peer, leader));
        if peer != reached {
            c.cut.insert((leader, peer));
        }
    }
    let joint = change(c, leader, &[voter(4), remove(replaced)]).expect("accepted");
    c.deliver_all();
    assert!(
        conf(c, reached).is_joint(),
        "the joint configuration took effect on {reached}"
    );
    c.crash(leader);
    c.heal();
    (leader, replaced, joint)
}

#[test]
fn a_joint_change_interrupted_by_the_leaders_crash_completes_when_a_voter_holds_it() {
    let mut c = cluster(3);
    // The remaining old voter got the entry: only it can win (the replaced voter's log is behind,
    // the learner does not campaign), and it finishes the change.
    let (old, replaced, joint) = joint_change_interrupted(&mut c, |kept, _| kept);
    let new = c.elect(300).expect("a new leader");
    c.tick_all(20);
    assert_ne!(new, old);
    assert_ne!(new, replaced);
    let done = ConfState::with_voters(set(&[old.0, new.0, 4]));
    for id in [new, NodeId(4)] {
        assert_eq!(conf(&c, id), &done, "node {id}");
        assert!(c.nodes[&id].raft.commit_index() > joint);
    }
    assert_eq!(
        config_entries(&c, new)[1].0,
        joint,
        "the joint entry survived"
    );
    // The removed voter got the joint entry from the new leader but not the one leaving it: it is
    // not a member any more, so nobody replicates to it. It pre-votes in vain and disrupts nobody.
    let term = c.raft(new.0).current_term();
    c.tick_all(200);
    assert_eq!(c.leader(), Some(new));
    assert_eq!(c.raft(new.0).current_term(), term);
    assert_eq!(c.raft(replaced.0).current_term(), term);
    // Faults stop: the old leader comes back and learns the final configuration too.
    c.restart(old);
    c.tick_all(20);
    assert_eq!(conf(&c, old), &done);
    c.assert_consistent();
}

#[test]
fn a_joint_change_interrupted_by_the_leaders_crash_is_rolled_back_when_only_a_learner_holds_it() {
    let mut c = cluster(3);
    let (old, _, joint) = joint_change_interrupted(&mut c, |_, _| NodeId(4));
    // The learner holds the joint entry (and, in its view, is a voter now); the two old voters
    // elect a leader while it is cut off, and that leader's log replaces the entry.
    c.isolate(NodeId(4));
    let new = c.elect(300).expect("a new leader of the old configuration");
    c.tick_all(5);
    assert_eq!(
        conf(&c, new),
        &ConfState {
            learners: set(&[4]),
            ..ConfState::with_voters(set(&[1, 2, 3]))
        }
    );
    let after = propose(&mut c, new, "after");
    c.heal();
    c.restart(old);
    c.tick_all(30);
    let before = ConfState {
        learners: set(&[4]),
        ..ConfState::with_voters(set(&[1, 2, 3]))
    };
    for id in 1..=4 {
        let raft = &c.node(id).raft;
        assert_eq!(
            raft.membership().conf,
            before,
            "node {id} is back on the old configuration"
        );
        assert!(raft.membership_index() < joint);
        assert!(raft.commit_index() >= after);
        assert!(
            config_entries(&c, NodeId(id))
                .iter()
                .all(|(_, conf)| !conf.is_joint()),
            "node {id}: the joint entry was truncated away"
        );
    }
    assert_eq!(c.leader(), Some(new));
    c.assert_consistent();
}

#[test]
fn an_interrupted_joint_change_either_completes_or_is_rolled_back_everywhere() {
    // Whichever node alone received the joint entry (the kept voter, the replaced one, the
    // learner), the cluster ends, once faults stop, with one non-joint configuration on every
    // member: the new one with the joint entry kept, or the old one with it truncated away.
    for variant in 0..3 {
        let mut c = cluster(3);
        let (old, replaced, joint) = joint_change_interrupted(&mut c, |kept, replaced| {
            [kept, replaced, NodeId(4)][variant]
        });
        c.elect(300).expect("a new leader");
        c.tick_all(30);
        c.restart(old);
        c.tick_all(30);
        let leader = c.leader().expect("a leader");
        let final_conf = conf(&c, leader).clone();
        let completed = final_conf
            == ConfState::with_voters(set(&[1, 2, 3, 4]).difference(&set(&[replaced.0])).copied());
        let rolled_back = final_conf
            == ConfState {
                learners: set(&[4]),
                ..ConfState::with_voters(set(&[1, 2, 3]))
            };
        assert!(
            completed || rolled_back,
            "variant {variant}: {final_conf:?}"
        );
        if variant < 2 {
            // A voter holds the entry, and every old majority needs its vote: it wins, and finishes.
            assert!(completed, "variant {variant}");
        }
        let kept_joint = config_entries(&c, leader).iter().any(|(i, _)| *i == joint);
        assert_eq!(kept_joint, completed, "variant {variant}");
        for member in final_conf.members() {
            let raft = &c.nodes[&member].raft;
            assert_eq!(
                raft.membership().conf,
                final_conf,
                "variant {variant}, node {member}"
            );
            assert!(
                raft.commit_index() >= raft.membership_index(),
                "variant {variant}, node {member}"
            );
        }
        let index = propose(&mut c, leader, "after");
        c.tick_all(6);
        assert!(
            c.raft(leader.0).commit_index() >= index,
            "variant {variant}"
        );
        c.assert_consistent();
    }
}

#[test]
fn a_leader_removed_by_a_single_change_steps_down_once_it_commits() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let term = c.raft(leader.0).current_term();
    let elections = c.raft(leader.0).elections_started();
    let rest: BTreeSet<NodeId> = others(&c, &[leader]).into_iter().collect();
    let index = change(&mut c, leader, &[remove(leader)]).expect("accepted");
    assert!(!c.raft(leader.0).is_promotable());
    assert_eq!(
        c.raft(leader.0).role(),
        Role::Leader,
        "leads until the removal commits"
    );
    // The leader's own copy does not count: the removal needs both remaining voters.
    let last = *rest.iter().last().unwrap();
    cut_both(&mut c, leader, last);
    c.deliver_all();
    assert!(c.raft(leader.0).commit_index() < index);
    assert_eq!(c.raft(leader.0).role(), Role::Leader);
    c.heal();
    let mut rounds = 0;
    while c.raft(leader.0).role() == Role::Leader {
        c.tick_all(1);
        rounds += 1;
        assert!(rounds < 20);
    }
    assert!(c.raft(leader.0).commit_index() >= index);
    let successor = c.elect(2).expect("a successor at once");
    assert!(rest.contains(&successor));
    assert_eq!(c.raft(successor.0).current_term(), Term(term.0 + 1));
    c.tick_all(200);
    assert_eq!(c.leader(), Some(successor));
    assert_eq!(c.raft(leader.0).elections_started(), elections);
    c.assert_consistent();
}

/// Deliver the queued messages one by one until `leader` has committed `index`, and no further.
fn deliver_until_committed(c: &mut Cluster, leader: NodeId, index: LogIndex) {
    while c.raft(leader.0).commit_index() < index {
        let envelope = c.queue.pop_front().expect("the entry commits");
        c.deliver(envelope);
    }
}

/// A leader that committed its own removal hands over only once a majority of the remaining
/// voters hold the commit (`crate::settle`): a voter that missed it would count the old
/// configuration as undecided, and once the removed leader is shut down (its operator told the
/// change was done), a voter that then lost its disk would wait for the removed node's answer
/// forever, with no leader for the two.
#[test]
fn a_removed_leader_hands_over_once_the_remaining_voters_hold_the_commit() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let rest = others(&c, &[leader]);
    let (near, far) = (rest[0], rest[1]);
    let index = change(&mut c, leader, &[remove(leader)]).expect("accepted");
    // Both remaining voters acknowledge the entry; once it commits, `far` hears nothing more.
    deliver_until_committed(&mut c, leader, index);
    cut_both(&mut c, leader, far);
    c.deliver_all();
    assert!(c.raft(far.0).commit_index() < index);
    assert!(c.raft(near.0).commit_index() >= index);
    for _ in 0..3 {
        assert_eq!(c.raft(leader.0).role(), Role::Leader, "waits for `far`");
        assert!(c.raft(leader.0).settled_membership_index() < index);
        assert!(
            c.raft(leader.0)
                .propose(vec![Bytes::from_static(b"x")])
                .is_err(),
            "a removed leader takes no proposals"
        );
        c.tick_all(1);
    }
    c.heal();
    let mut rounds = 0;
    while c.raft(leader.0).role() == Role::Leader {
        c.tick_all(1);
        rounds += 1;
        assert!(rounds < 5, "hands over a heartbeat after `far` hears");
    }
    assert_eq!(c.raft(leader.0).settled_membership_index(), index);
    assert!(c.raft(far.0).commit_index() >= index);
    // The operator shuts the removed node down; then `near` loses its disk. `far`'s answer
    // says the removal is committed, so `near` waits for no answer from the removed node.
    c.crash(leader);
    super::rejoin::wipe(&mut c, near);
    let successor = c.elect(300).expect("a leader without the removed node");
    assert!(successor == near || successor == far);
    c.tick_all(5);
    // Both remaining voters are needed for a commit: `near` answers the leader again.
    assert_ne!(c.raft(near.0).standing(), crate::Standing::Rejoining);
    let next = propose(&mut c, successor, "after the removal");
    c.tick_all(5);
    assert!(c.raft(successor.0).commit_index() >= next);
    c.assert_consistent();
}

/// A removed leader cut off from the remaining voters hands over an election timeout after its
/// removal committed, settled or not.
#[test]
fn a_removed_leader_cut_off_hands_over_after_an_election_timeout() {
    // Without check-quorum, which would depose it as early.
    let mut c = Cluster::new(ids(3).iter().map(|i| config(i.0, 3, false)).collect());
    let leader = stable_leader(&mut c);
    let index = change(&mut c, leader, &[remove(leader)]).expect("accepted");
    deliver_until_committed(&mut c, leader, index);
    c.isolate(leader);
    c.deliver_all();
    let timeout = c.raft(leader.0).config().election_ticks_min;
    for _ in 1..timeout {
        c.tick(leader);
    }
    assert_eq!(c.raft(leader.0).role(), Role::Leader);
    c.tick(leader);
    assert_ne!(c.raft(leader.0).role(), Role::Leader);
    assert!(c.raft(leader.0).settled_membership_index() < index);
}

/// A follower whose commit index passes a configuration entry writes it at once and answers only
/// once it is durable: its leader counts the answer as the commit held there (`crate::settle`),
/// and a crash that forgot it would make a removed member's answer needed again by a rejoining
/// node. A commit past commands alone rides along with the next write, as before.
#[test]
fn a_commit_past_a_configuration_is_durable_before_the_follower_answers() {
    use super::{append, entry, id};
    use crate::{Entry, EntryPayload, Membership};
    let mut follower = super::replication::node_with_log(2, 3, 1, &[entry(1, 1, "a")], 1);
    let config = follower.config().clone();
    let removal = Membership::bootstrap(&config.voters, &config.addresses)
        .apply(&[remove(NodeId(3))])
        .expect("valid");
    let entries = vec![
        Entry {
            term: Term(1),
            index: LogIndex(2),
            payload: EntryPayload::Config(Box::new(removal)),
        },
        entry(3, 1, "b"),
    ];
    follower.step(NodeId(1), append(1, id(1, 1), entries, 1));
    let ready = follower.take_ready();
    follower.on_log_flushed(id(3, 1));
    assert_eq!(
        ready.messages.len(),
        1,
        "entries are answered after their write"
    );

    // The commit passes the configuration entry: written now, answered after it.
    follower.step(NodeId(1), append(1, id(3, 1), vec![], 2));
    let ready = follower.take_ready();
    assert_eq!(
        ready.write.hard_state.map(|hard| hard.commit_index),
        Some(LogIndex(2))
    );
    assert!(ready.prompt_messages.is_empty());
    assert_eq!(ready.messages.len(), 1);
    // A repeated heartbeat overtakes no write in flight either.
    follower.step(NodeId(1), append(1, id(3, 1), vec![], 2));
    let ready = follower.take_ready();
    assert!(ready.prompt_messages.is_empty());
    assert_eq!(ready.messages.len(), 1);
    // Once an entry appended after that write is durable, heartbeats are answered at once
    // again, and a commit past commands alone is not written by itself.
    follower.step(NodeId(1), append(1, id(3, 1), vec![entry(4, 1, "c")], 2));
    let _ = follower.take_ready();
    follower.on_log_flushed(id(4, 1));
    follower.step(NodeId(1), append(1, id(4, 1), vec![], 4));
    let ready = follower.take_ready();
    assert_eq!(ready.write.hard_state, None);
    assert_eq!(ready.prompt_messages.len(), 1);
    assert!(ready.messages.is_empty());
}

#[test]
fn a_removed_voter_learns_that_it_was_removed() {
    let mut c = cluster(5);
    let leader = stable_leader(&mut c);
    let rest = others(&c, &[leader]);
    let removed = rest[0];
    change(&mut c, leader, &[remove(rest[0]), remove(rest[1])]).expect("accepted");
    c.tick_all(50);
    assert!(!conf(&c, removed).is_joint(), "{:?}", conf(&c, removed));
    assert!(!c.raft(removed.0).is_promotable());
}

#[test]
fn leadership_goes_to_a_lagging_follower_once_it_catches_up() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let term = c.raft(leader.0).current_term();
    let target = others(&c, &[leader])[0];
    c.isolate(target);
    let mut proposed = Vec::new();
    for i in 0..5 {
        proposed.push(propose(&mut c, leader, &format!("while cut off {i}")));
    }
    c.tick_all(6);
    let last = *proposed.last().unwrap();
    assert!(c.raft(leader.0).commit_index() >= last);
    assert!(c.raft(target.0).last_log_id().index < last);
    c.heal();

    c.raft(leader.0)
        .transfer_leadership(target)
        .expect("a voter");
    c.process(leader);
    assert_eq!(c.raft(leader.0).transfer_target(), Some(target));
    assert_eq!(
        c.raft(leader.0).propose(vec![Bytes::from_static(b"x")]),
        Err(Refusal::Transferring { to: target })
    );
    assert_eq!(
        c.raft(leader.0).propose_membership(&[learner(9)]),
        Err(ChangeError::Refused(Refusal::Transferring { to: target }))
    );
    // Well within an election timeout (so not by an election timer): the target catches up, is
    // told to campaign, and wins although the third node heard from the leader just now.
    let mut rounds = 0;
    while c.leader() != Some(target) {
        c.tick_all(1);
        rounds += 1;
        assert!(
            rounds < c.raft(leader.0).config().election_ticks_min,
            "the transfer took {rounds} ticks"
        );
    }
    assert_eq!(c.raft(target.0).current_term(), Term(term.0 + 1));
    assert_eq!(c.raft(leader.0).role(), Role::Follower);
    c.tick_all(5);
    let applied: Vec<LogIndex> = c.node(target.0).applied.iter().map(|e| e.index).collect();
    for index in proposed {
        assert!(applied.contains(&index), "entry {index} was kept");
    }
    let index = propose(&mut c, target, "new leader");
    c.tick_all(6);
    assert!(c.raft(leader.0).commit_index() >= index);
    c.assert_consistent();
}

#[test]
fn a_transfer_to_an_unreachable_node_is_abandoned_and_only_voters_can_be_targets() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    add_learner(&mut c, leader, 4);
    let term = c.raft(leader.0).current_term();
    let follower = others(&c, &[leader, NodeId(4)])[0];

    assert_eq!(
        c.raft(leader.0).transfer_leadership(NodeId(4)),
        Err(TransferError::NotAVoter(NodeId(4))),
        "a learner"
    );
    assert_eq!(
        c.raft(leader.0).transfer_leadership(NodeId(9)),
        Err(TransferError::NotAVoter(NodeId(9))),
        "a stranger"
    );
    assert!(matches!(
        c.raft(follower.0).transfer_leadership(leader),
        Err(TransferError::NotLeader(_))
    ));
    assert_eq!(c.raft(leader.0).transfer_leadership(leader), Ok(()));
    assert_eq!(
        c.raft(leader.0).transfer_target(),
        None,
        "to itself: nothing to do"
    );

    c.isolate(follower);
    c.raft(leader.0)
        .transfer_leadership(follower)
        .expect("a voter");
    c.process(leader);
    let timeout = c.raft(leader.0).config().election_ticks_min;
    c.tick_all(timeout - 1);
    assert_eq!(c.raft(leader.0).transfer_target(), Some(follower));
    assert!(c
        .raft(leader.0)
        .propose(vec![Bytes::from_static(b"x")])
        .is_err());
    c.tick_all(1);
    assert_eq!(c.raft(leader.0).transfer_target(), None, "abandoned");
    let index = propose(&mut c, leader, "resumed");
    c.tick_all(6);
    assert!(c.raft(leader.0).commit_index() >= index);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.raft(leader.0).current_term(), term);
    c.heal();
    c.tick_all(20);
    c.assert_consistent();
}

#[test]
fn a_removed_node_that_missed_its_removal_cannot_disrupt() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let removed = others(&c, &[leader])[0];
    let term = c.raft(leader.0).current_term();
    c.isolate(removed);
    let index = change(&mut c, leader, &[remove(removed)]).expect("accepted");
    c.tick_all(5);
    assert!(
        c.raft(leader.0).commit_index() >= index,
        "two of two commit it"
    );
    assert!(
        c.raft(removed.0).is_promotable(),
        "it still thinks it votes"
    );
    c.tick_all(100);
    c.heal();

    let mut pre_votes = 0;
    for _ in 0..300 {
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            c.tick(id);
        }
        pre_votes += c
            .queue
            .iter()
            .filter(|e| e.from == removed)
            .filter(|e| matches!(&e.message, Message::RequestVote(r) if r.pre_vote))
            .count();
        c.deliver_all();
    }
    assert!(pre_votes > 0, "it timed out and pre-voted");
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.raft(leader.0).current_term(), term);
    assert_eq!(c.raft(removed.0).current_term(), term);
    assert_eq!(c.raft(removed.0).elections_started(), 0, "no real election");
    let index = propose(&mut c, leader, "undisturbed");
    c.tick_all(6);
    assert!(c.raft(leader.0).commit_index() >= index);
    c.assert_consistent();
}

#[test]
fn an_overwritten_configuration_entry_reverts_to_the_previous_configuration() {
    let mut c = cluster(5);
    let leader = stable_leader(&mut c);
    let before = conf(&c, leader).clone();
    let before_index = c.raft(leader.0).membership_index();
    let rest = others(&c, &[leader]);
    let holder = rest[0];
    // Only `holder` receives the entry; the leader hears nothing back.
    for peer in &rest {
        c.cut.insert((*peer, leader));
        if *peer != holder {
            c.cut.insert((leader, *peer));
        }
    }
    let index = change(&mut c, leader, &[learner(6)]).expect("accepted");
    c.deliver_all();
    assert_eq!(conf(&c, holder).learners, set(&[6]), "in force on append");
    assert_eq!(c.raft(holder.0).membership_index(), index);
    assert!(c.raft(holder.0).commit_index() < index);

    // The leader is gone and `holder` is cut off while the other three elect and commit.
    c.crash(leader);
    c.heal();
    c.isolate(holder);
    let new = c.elect(300).expect("a new leader");
    c.tick_all(5);
    propose(&mut c, new, "overwrites");
    c.tick_all(6);
    assert!(
        c.raft(new.0).commit_index() >= index,
        "index {index} holds another entry now"
    );

    c.heal();
    c.restart(leader);
    assert_eq!(
        conf(&c, leader).learners,
        set(&[6]),
        "recovered from its log"
    );
    c.tick_all(20);
    for id in [holder, leader] {
        assert_eq!(conf(&c, id), &before, "node {id}");
        assert_eq!(c.raft(id.0).membership_index(), before_index);
        assert!(config_entries(&c, id).is_empty(), "node {id}");
    }
    c.assert_consistent();
}

#[test]
fn a_learner_marked_for_promotion_becomes_a_voter_once_caught_up() {
    let mut configs: Vec<_> = ids(3).iter().map(|i| config(i.0, 3, true)).collect();
    for config in &mut configs {
        config.promote_lag = 0;
    }
    let mut c = Cluster::new(configs);
    let leader = stable_leader(&mut c);
    for i in 0..5 {
        propose(&mut c, leader, &format!("{i}"));
    }
    c.tick_all(2);
    c.add_node(NodeId(4), leader);
    c.isolate(NodeId(4));
    let added = change(
        &mut c,
        leader,
        &[ConfChange::AddLearner {
            id: NodeId(4),
            address: Some("n4:7000".into()),
            promote_when_caught_up: true,
        }],
    )
    .expect("accepted");
    c.tick_all(50);
    assert!(c.raft(leader.0).commit_index() >= added);
    assert_eq!(
        conf(&c, leader).learners,
        set(&[4]),
        "not caught up: not promoted"
    );
    assert_eq!(
        c.raft(leader.0).membership().promote_when_caught_up,
        set(&[4])
    );

    c.heal();
    // Node 4's store is new: it rejoins first (asks again within an election timeout), then
    // vouches for what it holds and is promoted.
    c.tick_all(60);
    for id in 1..=4 {
        let raft = &c.node(id).raft;
        assert_eq!(
            raft.membership().conf,
            ConfState::with_voters(set(&[1, 2, 3, 4])),
            "node {id}"
        );
        assert!(raft.membership().promote_when_caught_up.is_empty());
        assert!(raft.commit_index() >= raft.membership_index());
    }
    assert!(c.raft(4).is_promotable());
    assert_eq!(
        config_entries(&c, leader).len(),
        2,
        "added, then promoted: one change each"
    );
    c.assert_consistent();
}

#[test]
fn a_restart_recovers_the_configuration_from_the_log() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    add_learner(&mut c, leader, 4);
    add_learner(&mut c, leader, 5);
    change(&mut c, leader, &[voter(4), voter(5)]).expect("accepted");
    c.tick_all(20);
    let five = ConfState::with_voters(set(&[1, 2, 3, 4, 5]));
    for id in 1..=5 {
        assert_eq!(conf(&c, NodeId(id)), &five);
    }

    // Every node restarts from its disk; nodes 4 and 5 were started knowing no configuration.
    for id in 1..=5 {
        c.crash(NodeId(id));
    }
    c.queue.clear();
    for id in 1..=5 {
        c.restart(NodeId(id));
        assert_eq!(conf(&c, NodeId(id)), &five, "node {id}");
        assert!(c.raft(id).is_promotable());
    }
    let new = c.elect(300).expect("a leader");
    c.tick_all(5);
    // Three of five commit, two of five do not.
    let rest = others(&c, &[new]);
    c.isolate(rest[0]);
    c.isolate(rest[1]);
    let three = propose(&mut c, new, "three of five");
    c.deliver_all();
    assert!(c.raft(new.0).commit_index() >= three);
    c.isolate(rest[2]);
    let two = propose(&mut c, new, "two of five");
    c.deliver_all();
    assert!(c.raft(new.0).commit_index() < two);
    c.heal();
    c.tick_all(20);
    c.assert_consistent();
}

#[test]
fn a_leader_demoted_to_a_learner_hands_over_and_keeps_receiving_the_log() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    add_learner(&mut c, leader, 4);
    let elections = c.raft(leader.0).elections_started();
    // Demote the leader and promote 4 at once: joint, the leader voting in the outgoing half only.
    let demote = ConfChange::AddLearner {
        id: leader,
        address: None,
        promote_when_caught_up: false,
    };
    let joint = change(&mut c, leader, &[demote, voter(4)]).expect("accepted");
    assert_eq!(
        conf(&c, leader).learners_next,
        [leader].into_iter().collect()
    );
    assert!(c.raft(leader.0).is_promotable(), "votes while joint");
    c.deliver_all();
    assert_eq!(c.raft(leader.0).role(), Role::Follower);
    assert!(c.raft(leader.0).commit_index() > joint);
    let successor = c.leader().expect("handed over at once");
    assert_ne!(successor, leader);
    let mut voters: BTreeSet<NodeId> = set(&[1, 2, 3, 4]);
    voters.remove(&leader);
    let expected = ConfState {
        learners: [leader].into_iter().collect(),
        ..ConfState::with_voters(voters)
    };
    c.tick_all(200);
    assert_eq!(c.leader(), Some(successor));
    assert_eq!(c.raft(leader.0).elections_started(), elections);
    let index = propose(&mut c, successor, "to the demoted node too");
    c.tick_all(6);
    for id in 1..=4 {
        assert_eq!(conf(&c, NodeId(id)), &expected, "node {id}");
        assert!(c.raft(id).commit_index() >= index, "node {id}");
    }
    assert!(!c.raft(leader.0).is_promotable());
    c.assert_consistent();
}

#[test]
fn a_joining_node_learns_its_configuration_from_a_snapshot() {
    use crate::{HardState, InstallSnapshot, Membership, Raft, RecoveredState, SnapshotMeta};
    let mut joining = config(4, 3, true);
    joining.voters.clear();
    let mut raft = Raft::new(joining, RecoveredState::default(), 4).expect("valid");
    assert!(!raft.is_promotable());
    let _ = raft.take_ready();
    let membership = Membership::bootstrap(&set(&[1, 2, 3]), &Default::default())
        .apply(&[learner(4)])
        .unwrap()
        .apply(&[voter(4)])
        .unwrap();
    let meta = SnapshotMeta {
        last_included: super::id(20, 3),
        size: 1,
        checksum: 0,
        membership: Box::new(membership.clone()),
    };
    raft.step(
        NodeId(1),
        Message::InstallSnapshot(InstallSnapshot {
            term: Term(3),
            request_id: 1,
            meta: meta.clone(),
            offset: 0,
            data: Bytes::from_static(b"s"),
            done: true,
        }),
    );
    let _ = raft.take_ready();
    raft.on_snapshot_received(NodeId(1), Term(3), 1, meta);
    let ready = raft.take_ready();
    assert_eq!(ready.membership.as_ref(), Some(&membership));
    assert_eq!(raft.membership(), &membership);
    assert_eq!(raft.membership_index(), LogIndex(20));
    // A node that joins with a new store rejoins (its store may be one a voter lost), and one
    // that a configuration names a voter rejoins in full: no shortcut from the leader's answer.
    assert_eq!(raft.standing(), crate::Standing::Rejoining);
    assert!(!raft.is_promotable(), "not before it has rejoined");

    // And a restart from that snapshot keeps it (the log after it holds no configuration).
    let recovered = RecoveredState {
        hard_state: HardState {
            current_term: Term(3),
            voted_for: None,
            commit_index: LogIndex(20),
        },
        log_start: super::id(20, 3),
        snapshot_membership: Some((LogIndex(20), membership.clone())),
        standing: crate::Standing::Member,
        ..RecoveredState::default()
    };
    let mut config4 = config(4, 3, true);
    config4.voters.clear();
    let restarted = Raft::new(config4, recovered, 4).expect("valid");
    assert_eq!(restarted.membership(), &membership);
    assert!(restarted.is_promotable());
}

#[test]
fn a_voter_that_missed_the_additions_still_votes_for_the_new_voters() {
    // Node `lagging` misses every change that grows {1,2,3} to {1..5}; then two old voters crash.
    // The three left (`lagging`, 4, 5) are a majority of {1..5}, but only 4 and 5 can win (their
    // logs are ahead), and `lagging` does not know them: it must vote for them all the same
    // (thesis §4.1: servers do not consult their configuration to answer a RequestVote).
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let lagging = others(&c, &[leader])[0];
    let other = others(&c, &[leader])[1];
    c.isolate(lagging);
    for id in [4, 5] {
        add_learner(&mut c, leader, id);
        let index = change(&mut c, leader, &[voter(id)]).expect("accepted");
        c.tick_all(20);
        assert!(
            c.raft(leader.0).commit_index() >= index,
            "voter {id} added without {lagging}"
        );
    }
    assert_eq!(
        conf(&c, leader),
        &ConfState::with_voters(set(&[1, 2, 3, 4, 5]))
    );
    assert_eq!(conf(&c, lagging), &ConfState::with_voters(set(&[1, 2, 3])));
    c.crash(leader);
    c.crash(other);
    c.heal();
    let new = c.elect(300).expect("three of five elect a leader");
    assert!(new == NodeId(4) || new == NodeId(5));
    let index = propose(&mut c, new, "after");
    c.tick_all(20);
    assert!(c.raft(lagging.0).commit_index() >= index);
    assert_eq!(
        conf(&c, lagging),
        &ConfState::with_voters(set(&[1, 2, 3, 4, 5]))
    );
    c.assert_consistent();
}

#[test]
fn a_joint_change_reaching_too_few_does_not_commit() {
    // Five voters; the leader reaches one follower only, and removes two others: the joint
    // configuration needs three of the five old voters, which it does not have.
    let mut c = cluster(5);
    let leader = stable_leader(&mut c);
    let followers = others(&c, &[leader]);
    for cut in &followers[1..] {
        c.cut.insert((leader, *cut));
    }
    let joint = change(
        &mut c,
        leader,
        &[remove(followers[3]), remove(followers[2])],
    )
    .expect("accepted");
    for _ in 0..20 {
        c.tick_all(1);
        for node in c.nodes.values() {
            assert!(
                node.raft.commit_index() < joint
                    || config_entries(&c, node.raft.id())
                        .iter()
                        .all(|(i, _)| *i != joint),
                "node {} committed the joint entry",
                node.raft.id()
            );
        }
    }
}

#[test]
fn a_repeated_transfer_request_does_not_extend_its_deadline_and_a_transfer_can_be_cancelled() {
    // Review finding (issue 24, 2.2): a client retrying a transfer toward an unreachable node
    // restarted the transfer's timer each time, so the leader refused proposals for as long as
    // the client retried.
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let target = others(&c, &[leader])[0];
    c.isolate(target);
    c.raft(leader.0)
        .transfer_leadership(target)
        .expect("a voter");
    c.process(leader);
    let timeout = c.raft(leader.0).config().election_ticks_min;
    for _ in 0..timeout {
        // The client retries every tick.
        c.raft(leader.0)
            .transfer_leadership(target)
            .expect("a voter");
        c.tick_all(1);
    }
    assert_eq!(
        c.raft(leader.0).transfer_target(),
        None,
        "abandoned an election timeout after the first request"
    );
    assert!(c
        .raft(leader.0)
        .propose(vec![Bytes::from_static(b"after")])
        .is_ok());

    // A transfer to the leader itself cancels the one in progress (as in etcd raft).
    c.raft(leader.0)
        .transfer_leadership(target)
        .expect("a voter");
    assert_eq!(c.raft(leader.0).transfer_target(), Some(target));
    assert_eq!(c.raft(leader.0).transfer_leadership(leader), Ok(()));
    assert_eq!(c.raft(leader.0).transfer_target(), None, "cancelled");
    assert!(c
        .raft(leader.0)
        .propose(vec![Bytes::from_static(b"resumed")])
        .is_ok());
    c.heal();
    c.tick_all(10);
    c.assert_consistent();
}

#[test]
fn a_node_that_never_campaigns_stops_claiming_a_leader_after_an_election_timeout() {
    // Found by the simulator (seeds 8012992, 8004955, 8005136, 8014211, ...): a node that never
    // campaigns (a learner, a node still joining, or one whose configuration is behind and does
    // not list it as a voter) reset its election timer when it fired but kept its leader, so
    // `in_leader_lease` held for most of every period and it refused every pre-vote forever;
    // when the incoming half of a joint configuration needed its vote, no candidate could win.
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    add_learner(&mut c, leader, 4);
    c.tick_all(5);
    let learner = NodeId(4);
    assert_eq!(c.raft(4).leader_id(), Some(leader));
    // The leader goes away; the learner hears from nobody for a maximal election timeout.
    c.isolate(learner);
    let max = c.raft(4).config().election_ticks_max;
    for _ in 0..max {
        c.tick(learner);
    }
    let term = c.raft(4).current_term();
    let last = c.raft(4).last_log_id();
    c.raft(4).step(
        NodeId(2),
        Message::RequestVote(RequestVote {
            term: Term(term.0 + 1),
            last_log_id: last,
            pre_vote: true,
            leadership_transfer: false,
        }),
    );
    let ready = c.raft(4).take_ready();
    assert!(
        ready.messages.iter().any(|m| matches!(
            m.message,
            Message::RequestVoteResponse(RequestVoteResponse {
                vote_granted: true,
                ..
            })
        )),
        "the pre-vote is granted once no leader was heard from for an election timeout: {:?}",
        ready.messages
    );
}

/// Tick `id` alone until it pre-campaigns; whom its (pre-)vote requests go to.
fn campaign_and_see_whom_it_asks(c: &mut Cluster, id: NodeId) -> BTreeSet<NodeId> {
    while c.raft(id.0).role() != Role::PreCandidate {
        c.raft(id.0).tick();
    }
    c.raft(id.0)
        .take_ready()
        .messages
        .into_iter()
        .filter(|e| matches!(e.message, Message::RequestVote(_)))
        .map(|e| e.to)
        .collect()
}

/// A candidate asks the voters of the configuration before its own while that one is not known
/// to be committed: their votes do not count, but the voter the change removes learns the term
/// the others campaign in. It may hold the only complete log (it campaigns while its removal is
/// pending); knowing only its own term, it campaigned in the very term a hopeless candidate had
/// just used, one behind it, again and again (three nodes without pre-vote, seed 2200031986).
#[test]
fn a_candidate_tells_the_voter_a_pending_change_removes_its_term() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let rest = others(&c, &[leader]);
    let (candidate, removed) = (rest[0], rest[1]);
    // Only `candidate` receives the removal of `removed`, and the leader hears nothing back.
    for peer in &rest {
        c.cut.insert((*peer, leader));
    }
    c.cut.insert((leader, removed));
    let index = change(&mut c, leader, &[remove(removed)]).expect("accepted");
    c.deliver_all();
    assert_eq!(conf(&c, candidate).voters, set(&[leader.0, candidate.0]));
    assert!(c.raft(candidate.0).commit_index() < index);
    c.crash(leader);
    c.heal();

    let term = c.raft(candidate.0).current_term();
    let asked = campaign_and_see_whom_it_asks(&mut c, candidate);
    assert_eq!(asked, BTreeSet::from([leader, removed]));
    assert_eq!(c.raft(candidate.0).current_term(), term, "a pre-vote only");

    // Once the change is known committed, only its voters are asked.
    c.restart(leader);
    c.tick_all(200);
    let new_leader = c.leader().expect("a leader");
    c.tick_all(10);
    assert!(c.raft(candidate.0).commit_index() >= index);
    let follower = if new_leader == leader {
        candidate
    } else {
        leader
    };
    c.crash(new_leader);
    let asked = campaign_and_see_whom_it_asks(&mut c, follower);
    assert_eq!(asked, BTreeSet::from([new_leader]));
}

/// A node that joins (no bootstrap voters) starts `Rejoining`: its store may be one a voter
/// lost. The leader that adds it contacts it, it asks the leader, and the leader's answer names
/// it no voter: a member at once, caught up and promoted as before.
#[test]
fn a_joining_node_is_a_member_once_the_leader_answers_that_it_is_no_voter() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    c.add_node(NodeId(4), leader);
    assert_eq!(c.raft(4).standing(), crate::Standing::Rejoining);
    add_learner(&mut c, leader, 4);
    assert_eq!(c.raft(4).standing(), crate::Standing::Member);
    let index = change(&mut c, leader, &[voter(4)]).expect("accepted");
    c.tick_all(20);
    assert!(c.raft(4).commit_index() >= index);
    assert_eq!(conf(&c, NodeId(4)).voters, set(&[1, 2, 3, 4]));
}

/// `rounds` rounds of ticks for every node but `paused`, delivering after each.
fn tick_all_but(c: &mut Cluster, paused: NodeId, rounds: u32) {
    for _ in 0..rounds {
        for id in others(c, &[paused]) {
            c.tick(id);
        }
        c.deliver_all();
    }
}

/// A paused leader, deposed meanwhile, does not vouch alone for a joined node that lost its data:
/// the new leader made the node a voter in a configuration the old one never saw. Asked by the
/// old leader's heartbeat, the node waits for a majority of the voters as well, and their later
/// term sends it through the full rejoin (before, the old leader's word made it a member at
/// once, with no memory of the entries it had helped commit as a voter).
#[test]
fn a_joined_node_does_not_take_a_deposed_leaders_word_that_it_is_no_voter() {
    let mut c = cluster(3);
    let old_leader = stable_leader(&mut c);
    add_learner(&mut c, old_leader, 4);
    let old_term = c.raft(old_leader.0).current_term();
    // The old leader pauses (no ticks, nothing in or out); the rest elect a new leader, which
    // makes 4 a voter and commits with it.
    c.isolate(old_leader);
    let mut new_leader = None;
    for _ in 0..400 {
        tick_all_but(&mut c, old_leader, 1);
        new_leader = others(&c, &[old_leader, NodeId(4)])
            .into_iter()
            .find(|id| c.raft(id.0).role() == crate::Role::Leader);
        if new_leader.is_some() {
            break;
        }
    }
    let new_leader = new_leader.expect("the others elect a leader");
    let new_term = c.raft(new_leader.0).current_term();
    assert!(new_term > old_term);
    tick_all_but(&mut c, old_leader, 5);
    let index = change(&mut c, new_leader, &[voter(4)]).expect("accepted");
    tick_all_but(&mut c, old_leader, 30);
    assert!(c.raft(4).commit_index() >= index);
    assert_eq!(conf(&c, new_leader).voters, set(&[1, 2, 3, 4]));

    // 4 loses its data; only the old leader, resuming, reaches it at first.
    super::rejoin::wipe(&mut c, NodeId(4));
    c.heal();
    for peer in others(&c, &[old_leader, NodeId(4)]) {
        cut_both(&mut c, old_leader, peer);
        cut_both(&mut c, NodeId(4), peer);
    }
    for _ in 0..6 {
        c.tick(old_leader);
        c.deliver_all();
        if c.raft(4).rejoin.leader_commits.contains_key(&old_term) {
            break;
        }
    }
    assert_eq!(c.raft(old_leader.0).role(), crate::Role::Leader);
    assert_eq!(c.raft(old_leader.0).current_term(), old_term);
    assert!(
        c.raft(4).rejoin.leader_commits.contains_key(&old_term),
        "the old leader answered"
    );
    assert_eq!(
        c.raft(4).standing(),
        crate::Standing::Rejoining,
        "one leader's word, with no majority behind it, does not make a member"
    );

    // The voters reach it: their later term and configuration send it through the full rejoin,
    // and it grants no vote in the new leader's term (its old self may have voted there).
    for peer in others(&c, &[old_leader, NodeId(4)]) {
        c.cut.remove(&(NodeId(4), peer));
        c.cut.remove(&(peer, NodeId(4)));
    }
    tick_all_but(&mut c, old_leader, 60);
    assert!(
        matches!(
            c.raft(4).standing(),
            crate::Standing::CatchingUp { floor, .. } if floor >= new_term
        ),
        "{:?}",
        c.raft(4).standing()
    );
    let _ = c.raft(4).take_ready();
    let candidate = others(&c, &[old_leader, NodeId(4), new_leader])[0];
    let candidate_log = c.raft(candidate.0).last_log_id();
    c.raft(4).step(
        candidate,
        super::rejoin::vote_request(new_term, candidate_log),
    );
    assert_eq!(super::rejoin::granted(&mut c, 4), vec![false]);
    c.assert_consistent();
}

/// The majority a joined node waits for counts the answers in terms no later than the leader's;
/// a voter answering from a later term (one that campaigned alone, cut off) is left out rather
/// than holding the node back, and the node is a member once enough others answered.
#[test]
fn a_joined_node_counts_the_answers_no_later_than_the_leaders_term() {
    use crate::{message::RejoinAnswer, LogId};
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    let (a, b) = (others(&c, &[leader])[0], others(&c, &[leader])[1]);
    let term = c.raft(leader.0).current_term();
    let mut conf = conf(&c, leader).clone();
    conf.learners.insert(NodeId(4));
    c.add_node(NodeId(4), leader);
    let _ = c.raft(4).take_ready();
    let answer = |term: Term, leader_commit: Option<LogIndex>| {
        Message::RejoinAnswer(RejoinAnswer {
            term,
            configs: vec![(LogId::new(term, LogIndex(2)), conf.clone())],
            last_log_id: LogId::ZERO,
            leader_commit,
            commit: crate::LogId::ZERO,
        })
    };
    c.raft(4).step(leader, answer(term, Some(LogIndex(2))));
    assert_eq!(
        c.raft(4).standing(),
        crate::Standing::Rejoining,
        "the leader alone"
    );
    c.raft(4).step(a, answer(term.next().next(), None));
    assert_eq!(
        c.raft(4).standing(),
        crate::Standing::Rejoining,
        "a later term is no answer for the leader's majority"
    );
    c.raft(4).step(b, answer(term, None));
    assert_eq!(c.raft(4).standing(), crate::Standing::Member);
}

/// A node that joined, was promoted, and then lost its data comes back under its old id with no
/// bootstrap voters (`raftor serve --join`, `RaftNodeBuilder::join`): the leader's answer names
/// it a voter, so it rejoins in full (every member asked, then caught up past the floor) and
/// grants no vote meanwhile in the term it may have voted in.
#[test]
fn a_joined_voter_that_lost_its_data_rejoins_before_it_votes() {
    let mut c = cluster(3);
    let leader = stable_leader(&mut c);
    add_learner(&mut c, leader, 4);
    change(&mut c, leader, &[voter(4)]).expect("accepted");
    c.tick_all(20);
    assert_eq!(conf(&c, leader).voters, set(&[1, 2, 3, 4]));
    let term = c.raft(leader.0).current_term();

    super::rejoin::wipe(&mut c, NodeId(4));
    assert_eq!(c.raft(4).standing(), crate::Standing::Rejoining);
    // The leader contacts it; it asks the leader, whose answer names it a voter: no shortcut.
    c.tick(leader);
    c.deliver_all();
    assert_ne!(c.raft(4).standing(), crate::Standing::Member);
    let _ = c.raft(4).take_ready();
    // A transfer's vote request, which leader stickiness does not refuse (the node heard the
    // leader and just started): only its standing may.
    let candidate = others(&c, &[leader, NodeId(4)])[0];
    c.raft(4).step(
        candidate,
        Message::RequestVote(crate::RequestVote {
            term,
            last_log_id: crate::LogId::ZERO,
            pre_vote: false,
            leadership_transfer: true,
        }),
    );
    assert_eq!(
        super::rejoin::granted(&mut c, 4),
        vec![false],
        "no vote in a term it may have voted in"
    );
    // Every member answers; it catches up from the leader and, after a leader of a later term,
    // is a member again.
    c.tick_all(30);
    assert!(matches!(
        c.raft(4).standing(),
        crate::Standing::CatchingUp { floor, .. } if floor >= term
    ));
    c.crash(leader);
    c.tick_all(300);
    c.restart(leader);
    c.tick_all(50);
    assert_eq!(c.raft(4).standing(), crate::Standing::Member);
    c.assert_consistent();
}
