//! Membership changes and leadership transfer on the real actors (node, replicators, log store,
//! applier) on tokio's paused clock: growing and shrinking under write load, replacing a dead node,
//! a change cut short by the leader's failure, and handing leadership to a lagging follower.

// The test's own task holds shared borrows of the cluster across awaits; it alone borrows it
// mutably (adding or crashing a node), between them, and the writer task borrows it only briefly and
// never across an await. So no borrow can conflict.
#![allow(clippy::await_holding_refcell_ref)]

mod support;

use bytes::Bytes;
use raftor_actors::{MembershipChangeError, NetworkControl, NodeHandle, ProposeError};
use raftor_core::{ConfChange, Membership, NodeId, Role, Standing, Term};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use support::{run_paused, TestCluster};

const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

fn learner(id: u64) -> ConfChange {
    ConfChange::add_learner(NodeId(id), format!("memory-{id}"), false)
}

fn promote(id: u64) -> ConfChange {
    ConfChange::promote(NodeId(id))
}

fn remove(id: u64) -> ConfChange {
    ConfChange::remove(NodeId(id))
}

fn ids(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// What the writer learned of each of its writes.
#[derive(Default)]
struct Writes {
    /// Acknowledged: committed and applied.
    acknowledged: Vec<String>,
    /// Sent but with an unknown outcome (the node stopped, or no answer in time).
    unknown: Vec<String>,
    stop: bool,
}

/// The running nodes' handles, taken out of the cluster so no borrow of it is held across an await.
fn handles(cluster: &RefCell<TestCluster>) -> Vec<Rc<NodeHandle>> {
    cluster.borrow().handles.values().cloned().collect()
}

/// The handle of the node that leads in the highest term, if any.
async fn leader_handle(cluster: &RefCell<TestCluster>) -> Option<Rc<NodeHandle>> {
    let mut best: Option<(Term, Rc<NodeHandle>)> = None;
    for handle in handles(cluster) {
        if let Some(status) = handle.status().await {
            if status.role == Role::Leader && best.as_ref().is_none_or(|(t, _)| status.term > *t) {
                best = Some((status.term, handle));
            }
        }
    }
    best.map(|(_, handle)| handle)
}

/// Writes `w-0`, `w-1`, ... through whichever node leads until told to stop. A write is retried only
/// when it was certainly not appended (not the leader, a transfer under way) or certainly not
/// committed (dropped), so a value can appear at most once in the log.
async fn write_until_stopped(cluster: Rc<RefCell<TestCluster>>, writes: Rc<RefCell<Writes>>) {
    let mut next = 0u64;
    while !writes.borrow().stop {
        let value = format!("w-{next}");
        next += 1;
        loop {
            let Some(leader) = leader_handle(&cluster).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let outcome = tokio::time::timeout(
                Duration::from_secs(5),
                leader.propose(Bytes::from(value.clone())),
            )
            .await;
            match outcome {
                Ok(Ok(_)) => {
                    writes.borrow_mut().acknowledged.push(value);
                    // On the paused clock, time only moves while every task waits: pace the
                    // writes so that the rest of the test's virtual time passes.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    break;
                }
                Ok(Err(ProposeError::NotLeader { .. }))
                | Ok(Err(ProposeError::Transferring { .. }))
                | Ok(Err(ProposeError::Dropped)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Err(ProposeError::Shutdown)) | Err(_) => {
                    writes.borrow_mut().unknown.push(value);
                    break;
                }
            }
        }
    }
}

/// Change the membership on whichever node leads, retrying while another change or an election is
/// under way.
async fn change(cluster: &RefCell<TestCluster>, changes: Vec<ConfChange>) -> Membership {
    for _ in 0..200 {
        let Some(leader) = leader_handle(cluster).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match leader
            .change_membership(changes.clone(), CHANGE_TIMEOUT)
            .await
        {
            Ok(membership) => return membership,
            Err(MembershipChangeError::Invalid(reason)) => {
                panic!("invalid change {changes:?}: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("could not make the change {changes:?}");
}

/// Wait until every running node holds the same configuration, not joint, with `voters`.
async fn wait_for_configuration(cluster: &RefCell<TestCluster>, voters: &BTreeSet<NodeId>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = cluster.borrow().statuses().await;
        let settled = statuses.iter().all(|s| {
            !s.membership.conf.is_joint()
                && &s.membership.conf.voters == voters
                && s.membership_index <= s.applied_index
        });
        if settled {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the configuration did not settle on {voters:?}: {:?}",
            statuses
                .iter()
                .map(|s| (s.id, s.membership.conf.clone(), s.membership_index))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every running node applied the same commands; each acknowledged write exactly once, and no
/// write twice.
fn assert_no_write_lost_or_duplicated(cluster: &TestCluster, writes: &Writes) {
    cluster.assert_same_order();
    for id in cluster.handles.keys() {
        let applied = cluster.applied_commands(*id);
        let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
        for command in &applied {
            *counts.entry(command.as_ref()).or_default() += 1;
        }
        for (command, count) in &counts {
            assert_eq!(
                *count,
                1,
                "node {id} applied {:?} {count} times",
                String::from_utf8_lossy(command)
            );
        }
        for value in &writes.acknowledged {
            assert!(
                counts.contains_key(value.as_bytes()),
                "node {id} lacks the acknowledged write {value}"
            );
        }
    }
}

/// Wait until every running node has applied every acknowledged write.
async fn wait_all_applied(cluster: &RefCell<TestCluster>, writes: &RefCell<Writes>) {
    let count = writes.borrow().acknowledged.len();
    cluster
        .borrow()
        .wait_applied(count, Duration::from_secs(20))
        .await;
}

#[test]
fn growing_from_3_to_5_under_write_load_loses_and_duplicates_nothing() {
    run_paused(|| async move {
        // Snapshots every 200 entries: the new nodes catch up from a snapshot, which must carry
        // the configuration.
        let cluster = Rc::new(RefCell::new(TestCluster::with_snapshots(
            3, 21, 200, 50, 4096,
        )));
        let writes = Rc::new(RefCell::new(Writes::default()));
        let writer = tokio::task::spawn_local(write_until_stopped(cluster.clone(), writes.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;

        cluster.borrow_mut().add_empty(NodeId(4));
        cluster.borrow_mut().add_empty(NodeId(5));
        let with_learners = change(&cluster, vec![learner(4)]).await;
        assert_eq!(with_learners.conf.learners, ids(&[4]));
        let with_learners = change(&cluster, vec![learner(5)]).await;
        assert_eq!(with_learners.conf.learners, ids(&[4, 5]));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Two voters at once: through a joint configuration, left by itself.
        let five = change(&cluster, vec![promote(4), promote(5)]).await;
        assert_eq!(five.conf.voters, ids(&[1, 2, 3, 4, 5]));
        assert!(!five.conf.is_joint() && five.conf.learners.is_empty());
        wait_for_configuration(&cluster, &ids(&[1, 2, 3, 4, 5])).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        writes.borrow_mut().stop = true;
        writer.await.expect("writer");
        assert!(
            writes.borrow().acknowledged.len() > 100,
            "writes went on during the change: {}",
            writes.borrow().acknowledged.len()
        );
        wait_all_applied(&cluster, &writes).await;
        assert_no_write_lost_or_duplicated(&cluster.borrow(), &writes.borrow());

        // The new majority is 3 of 5: with two nodes cut off, writes still commit.
        let (leader, _) = cluster.borrow().leader().await.expect("leader");
        let others: Vec<NodeId> = (1..=5).map(NodeId).filter(|n| *n != leader).collect();
        cluster.borrow().control(NetworkControl::Isolate(others[0]));
        cluster.borrow().control(NetworkControl::Isolate(others[1]));
        cluster.borrow().propose_on_leader("with-3-of-5").await;
        cluster.borrow().shutdown();
    });
}

#[test]
fn shrinking_from_5_to_3_removes_the_leader_which_steps_down() {
    run_paused(|| async move {
        let cluster = Rc::new(RefCell::new(TestCluster::new(5, 22)));
        let writes = Rc::new(RefCell::new(Writes::default()));
        let writer = tokio::task::spawn_local(write_until_stopped(cluster.clone(), writes.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;

        let (leader, term) = cluster.borrow().leader().await.expect("leader");
        let other = (1..=5).map(NodeId).find(|n| *n != leader).expect("another");
        let removed = [leader, other];
        let remaining: BTreeSet<NodeId> = (1..=5)
            .map(NodeId)
            .filter(|n| !removed.contains(n))
            .collect();
        let three = change(&cluster, vec![remove(leader.0), remove(other.0)]).await;
        assert_eq!(three.conf.voters, remaining);

        // The removed leader stepped down; a remaining node leads, soon.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (now, _) = cluster.borrow().leader().await.unwrap_or((leader, term));
            if remaining.contains(&now) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no remaining node took over"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The removed nodes never lead again, and cannot disrupt the remaining three.
        let (new_leader, new_term) = cluster.borrow().leader().await.expect("leader");
        for _ in 0..200 {
            for status in cluster.borrow().statuses().await {
                if removed.contains(&status.id) {
                    assert_ne!(
                        status.role,
                        Role::Leader,
                        "removed node {} leads",
                        status.id
                    );
                } else if status.id == new_leader {
                    assert_eq!(status.term, new_term, "the remaining leader was deposed");
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writes.borrow_mut().stop = true;
        writer.await.expect("writer");
        for id in removed {
            cluster.borrow_mut().crash(id).await;
        }
        wait_all_applied(&cluster, &writes).await;
        assert_no_write_lost_or_duplicated(&cluster.borrow(), &writes.borrow());
        cluster.borrow().shutdown();
    });
}

#[test]
fn a_dead_node_is_replaced_by_a_new_one() {
    run_paused(|| async move {
        let cluster = Rc::new(RefCell::new(TestCluster::new(3, 23)));
        for i in 0..20 {
            cluster
                .borrow()
                .propose_on_leader(&format!("before-{i}"))
                .await;
        }
        let (leader, _) = cluster.borrow().leader().await.expect("leader");
        let dead = (1..=3)
            .map(NodeId)
            .find(|n| *n != leader)
            .expect("follower");
        cluster.borrow_mut().crash(dead).await;
        cluster.borrow_mut().add_empty(NodeId(4));
        change(&cluster, vec![learner(4)]).await;
        let replaced = change(&cluster, vec![promote(4), remove(dead.0)]).await;
        let expected: BTreeSet<NodeId> = (1..=4).map(NodeId).filter(|n| *n != dead).collect();
        assert_eq!(replaced.conf.voters, expected);
        wait_for_configuration(&cluster, &expected).await;
        // With the new node, a majority survives losing one more.
        let (leader, _) = cluster.borrow().leader().await.expect("leader");
        let third = expected
            .iter()
            .copied()
            .find(|n| *n != leader && *n != NodeId(4))
            .expect("third");
        cluster.borrow_mut().crash(third).await;
        cluster.borrow().propose_on_leader("after").await;
        cluster
            .borrow()
            .wait_applied(21, Duration::from_secs(10))
            .await;
        cluster.borrow().assert_same_order();
        cluster.borrow().shutdown();
    });
}

#[test]
fn a_change_cut_short_by_the_leaders_failure_completes_or_is_rolled_back() {
    for seed in 0..4u64 {
        run_paused(|| async move {
            let cluster = Rc::new(RefCell::new(TestCluster::new(5, 30 + seed)));
            cluster.borrow().propose_on_leader("before").await;
            let (leader, _) = cluster.borrow().leader().await.expect("leader");
            let followers: Vec<NodeId> = (1..=5).map(NodeId).filter(|n| *n != leader).collect();
            // Only followers[0] (and, for odd seeds, followers[1]) hear the leader from now on.
            let reached = 1 + (seed as usize % 2);
            for cut in &followers[reached..] {
                cluster
                    .borrow()
                    .control(NetworkControl::CutOneWay(leader, *cut));
            }
            // A two-voter change goes joint.
            let result = {
                let cluster = cluster.borrow();
                cluster.handles[&leader]
                    .change_membership(
                        vec![remove(followers[3].0), remove(followers[2].0)],
                        Duration::from_millis(200),
                    )
                    .await
            };
            if reached == 1 {
                // The leader and one follower are no majority of the five old voters.
                assert_eq!(result, Err(MembershipChangeError::Timeout));
            } else {
                // Three of five hold it: the change may have completed before the crash.
                assert!(
                    matches!(result, Ok(_) | Err(MembershipChangeError::Timeout)),
                    "{result:?}"
                );
            }
            cluster.borrow_mut().crash(leader).await;
            cluster.borrow().control(NetworkControl::Heal);
            // A new leader; the configuration settles on the old voters or the new ones.
            cluster
                .borrow()
                .wait_for_leader(Duration::from_secs(10))
                .await
                .expect("a new leader");
            let old: BTreeSet<NodeId> = (1..=5).map(NodeId).collect();
            let new: BTreeSet<NodeId> = old
                .iter()
                .copied()
                .filter(|n| *n != followers[3] && *n != followers[2])
                .collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let settled = loop {
                let statuses = cluster.borrow().statuses().await;
                let first = statuses[0].membership.clone();
                // Nodes removed by a completed change stop hearing from the leader: judge by the
                // members of the configuration in force on the leader.
                let leader_conf = statuses
                    .iter()
                    .find(|s| s.role == Role::Leader)
                    .map(|s| s.membership.conf.clone());
                if let Some(conf) = leader_conf {
                    let members: Vec<_> = statuses.iter().filter(|s| conf.contains(s.id)).collect();
                    if !conf.is_joint()
                        && members.iter().all(|s| {
                            s.membership.conf == conf && s.membership_index <= s.applied_index
                        })
                    {
                        break conf.voters;
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "seed {seed}: the configuration never settled: {first:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert!(
                settled == old || settled == new,
                "seed {seed}: settled on {settled:?}, neither the old nor the new voters"
            );
            cluster.borrow().propose_on_leader("after").await;
            cluster.borrow().assert_same_order();
            cluster.borrow().shutdown();
        });
    }
}

#[test]
fn leadership_moves_to_a_lagging_follower_and_nothing_is_lost() {
    run_paused(|| async move {
        let cluster = Rc::new(RefCell::new(TestCluster::new(3, 24)));
        cluster.borrow().propose_on_leader("first").await;
        let (leader, term) = cluster.borrow().leader().await.expect("leader");
        let target = (1..=3)
            .map(NodeId)
            .find(|n| *n != leader)
            .expect("follower");
        // The target falls behind by 300 entries.
        cluster.borrow().control(NetworkControl::Isolate(target));
        for i in 0..300 {
            cluster
                .borrow()
                .propose(leader, &format!("while-away-{i}"))
                .await
                .expect("committed by the other two");
        }
        cluster.borrow().control(NetworkControl::Heal);
        {
            let cluster = cluster.borrow();
            cluster.handles[&leader]
                .transfer_leadership(target)
                .await
                .expect("transfer starts");
            // Proposals are refused while the transfer runs.
            let refused = cluster.propose(leader, "during").await;
            assert!(
                matches!(
                    refused,
                    Err(ProposeError::Transferring { to }) if to == target
                ) || matches!(refused, Err(ProposeError::NotLeader { .. })),
                "{refused:?}"
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if let Some((now, now_term)) = cluster.borrow().leader().await {
                if now == target {
                    assert!(now_term > term);
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the target never took over"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.borrow().propose_on_leader("after").await;
        cluster
            .borrow()
            .wait_applied(302, Duration::from_secs(10))
            .await;
        cluster.borrow().assert_same_order();
        let applied = cluster.borrow().applied_commands(target);
        assert!(!applied.contains(&Bytes::from_static(b"during")));
        cluster.borrow().shutdown();
    });
}

#[test]
fn a_transfer_that_cannot_finish_is_abandoned_and_proposals_resume() {
    run_paused(|| async move {
        let cluster = TestCluster::new(3, 25);
        cluster.propose_on_leader("first").await;
        let (leader, term) = cluster.leader().await.expect("leader");
        let target = (1..=3)
            .map(NodeId)
            .find(|n| *n != leader)
            .expect("follower");
        cluster.control(NetworkControl::Isolate(target));
        cluster.handles[&leader]
            .transfer_leadership(target)
            .await
            .expect("starts");
        assert!(matches!(
            cluster.propose(leader, "refused").await,
            Err(ProposeError::Transferring { .. })
        ));
        // An election timeout later the leader gives up and takes proposals again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cluster.leader().await, Some((leader, term)));
        cluster
            .propose(leader, "resumed")
            .await
            .expect("proposals resume");
        assert!(matches!(
            cluster.handles[&leader]
                .transfer_leadership(NodeId(9))
                .await,
            Err(raftor_actors::TransferLeaderError::NotAVoter(NodeId(9)))
        ));
        let _ = Term::ZERO;
        cluster.shutdown();
    });
}

/// Wait until node `id` runs with the standing of a member, or panic after `limit`.
async fn wait_until_member(cluster: &RefCell<TestCluster>, id: NodeId, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let statuses = cluster.borrow().statuses().await;
        let standing = statuses.iter().find(|s| s.id == id).map(|s| s.standing);
        if standing == Some(Standing::Member) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} is not a member after {limit:?}: {standing:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A node that joined and was promoted loses its store (a new, empty one under its old id, still
/// with no bootstrap voters, as `RaftNodeBuilder::join` starts it): the configuration names it a
/// voter, so it rejoins in full before it votes, while the cluster goes on; once a leader of a
/// later term is elected it is a member again and holds every write. A new learner, by contrast,
/// is a member as soon as the leader answers it.
#[test]
fn a_joined_voter_that_lost_its_store_rejoins_before_it_votes() {
    run_paused(|| async move {
        let cluster = Rc::new(RefCell::new(TestCluster::new(3, 31)));
        for i in 0..10 {
            cluster
                .borrow()
                .propose_on_leader(&format!("before-{i}"))
                .await;
        }
        cluster.borrow_mut().add_empty(NodeId(4));
        change(&cluster, vec![learner(4)]).await;
        wait_until_member(&cluster, NodeId(4), Duration::from_secs(5)).await;
        change(&cluster, vec![promote(4)]).await;
        wait_for_configuration(&cluster, &ids(&[1, 2, 3, 4])).await;

        cluster.borrow_mut().crash(NodeId(4)).await;
        let fresh = raftor_storage::MemStorage::new();
        cluster
            .borrow_mut()
            .set_storage(NodeId(4), Box::new(move || Box::new(fresh.clone())));
        cluster.borrow_mut().start(NodeId(4));
        cluster.borrow().propose_on_leader("while-rejoining").await;
        // Named a voter by every configuration it hears of: never a member before a later term.
        let (_, term) = cluster.borrow().leader().await.expect("leader");
        for _ in 0..100 {
            let statuses = cluster.borrow().statuses().await;
            let node = statuses.iter().find(|s| s.id == NodeId(4)).expect("node 4");
            assert!(
                node.standing != Standing::Member || node.term > term,
                "a member again in the term it may have voted in: {node:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A leader of a later term makes it a member; it holds every write.
        let (leader, _) = cluster.borrow().leader().await.expect("leader");
        cluster.borrow_mut().crash(leader).await;
        cluster
            .borrow()
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a new leader");
        cluster.borrow().propose_on_leader("after").await;
        wait_until_member(&cluster, NodeId(4), Duration::from_secs(10)).await;
        cluster
            .borrow()
            .wait_applied(12, Duration::from_secs(10))
            .await;
        cluster.borrow().assert_same_order();
        cluster.borrow().shutdown();
    });
}
