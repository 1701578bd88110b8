//! Spare followers (`raftor_core`'s `replication/spare.rs`, `NodeActor::persist`): the voter a
//! three-node leader's commits need not wait for holds its writes a little and syncs several at
//! once; the leader commits with the other follower meanwhile, and goes on committing with the
//! spare one when that follower falls silent. On tokio's paused clock, with in-memory storage.

mod support;

use raftor_actors::NetworkControl;
use raftor_core::{NodeId, Role};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{run_paused, TestCluster};

/// How many synced writes each node's log store has made so far.
fn writes(cluster: &TestCluster) -> BTreeMap<NodeId, usize> {
    cluster
        .log_writes
        .iter()
        .map(|(id, writes)| (*id, writes.lock().expect("writes lock").len()))
        .collect()
}

/// Commit `count` commands one after another, each awaited before the next (one client);
/// returns the synced writes each follower made meanwhile.
async fn one_client(
    cluster: &TestCluster,
    leader: NodeId,
    count: usize,
) -> BTreeMap<NodeId, usize> {
    let before = writes(cluster);
    for i in 0..count {
        tokio::time::timeout(
            Duration::from_secs(5),
            cluster.propose_on_leader(&format!("w-{i}")),
        )
        .await
        .unwrap_or_else(|_| panic!("w-{i} was not committed within 5 s"));
    }
    // The spare follower's last hold ends, and its writes are applied.
    cluster.wait_applied(count, Duration::from_secs(5)).await;
    writes(cluster)
        .into_iter()
        .filter(|(id, _)| *id != leader)
        .map(|(id, after)| (id, after - before[&id]))
        .collect()
}

async fn leader_of(cluster: &TestCluster) -> NodeId {
    cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("leader")
        .0
}

#[test]
fn a_spare_follower_syncs_once_for_several_writes() {
    run_paused(|| async move {
        let cluster = TestCluster::with_spare_sync_hold(3, 41, Duration::from_millis(1));
        let leader = leader_of(&cluster).await;
        let writes = one_client(&cluster, leader, 40).await;
        let (fewest, most) = (
            *writes.values().min().expect("followers"),
            *writes.values().max().expect("followers"),
        );
        assert!(
            most >= 40,
            "the partner syncs each write, a commit waits for it: {writes:?}"
        );
        assert!(
            fewest <= 10,
            "the spare follower holds its writes and syncs several at once: {writes:?}"
        );
        cluster.assert_same_order();
        cluster.shutdown();
    });
}

#[test]
fn with_no_hold_every_follower_syncs_each_write() {
    run_paused(|| async move {
        let cluster = TestCluster::with_spare_sync_hold(3, 41, Duration::ZERO);
        let leader = leader_of(&cluster).await;
        let writes = one_client(&cluster, leader, 40).await;
        assert!(
            writes.values().all(|count| *count >= 40),
            "each follower syncs each write: {writes:?}"
        );
        cluster.shutdown();
    });
}

#[test]
fn commits_go_on_with_the_spare_follower_when_the_partner_falls_silent() {
    run_paused(|| async move {
        let cluster = TestCluster::with_spare_sync_hold(3, 43, Duration::from_millis(1));
        let leader = leader_of(&cluster).await;
        let first = one_client(&cluster, leader, 10).await;
        let partner = *first
            .iter()
            .max_by_key(|(_, count)| **count)
            .expect("followers")
            .0;
        // The partner is cut off from the others, both ways.
        for other in (1..=3).map(NodeId).filter(|id| *id != partner) {
            cluster.control(NetworkControl::CutOneWay(partner, other));
            cluster.control(NetworkControl::CutOneWay(other, partner));
        }
        let spare = (1..=3)
            .map(NodeId)
            .find(|id| *id != leader && *id != partner)
            .expect("the spare follower");
        let spare_writes_before = writes(&cluster)[&spare];
        let started = tokio::time::Instant::now();
        for i in 0..20 {
            cluster
                .propose(leader, &format!("after-{i}"))
                .await
                .expect("the leader commits with the spare follower");
        }
        // On the paused clock only timers move time, and a commit takes none: what the clock
        // shows is the holds that the first commits waited for, until the spare follower
        // answered ahead of the silent partner and became the partner itself.
        assert!(
            started.elapsed() <= Duration::from_millis(5),
            "20 commits took {:?} of the clock: more than a few holds",
            started.elapsed()
        );
        let spare_writes = writes(&cluster)[&spare] - spare_writes_before;
        assert!(
            spare_writes >= 18,
            "the former spare follower syncs each write now: {spare_writes} writes for 20"
        );
        let statuses = cluster.statuses().await;
        let leader_status = statuses
            .iter()
            .find(|status| status.id == leader)
            .expect("leader");
        assert_eq!(
            leader_status.role,
            Role::Leader,
            "the same leader throughout"
        );
        cluster.shutdown();
    });
}
