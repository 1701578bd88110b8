//! Snapshots and log compaction on the real actors (§7), on tokio's paused clock with in-memory
//! logs and each node's snapshots in a directory of its own.

mod support;

use raftor_actors::NetworkControl;
use raftor_core::{LogIndex, NodeId};
use raftor_storage::{LogStorage, MemStorage, SnapshotStore};
use std::time::Duration;
use support::{run_paused, TestCluster};

/// Propose `count` commands named `{prefix}-{i}` on the leader, all committed.
async fn write(cluster: &TestCluster, prefix: &str, count: usize) {
    for i in 0..count {
        cluster.propose_on_leader(&format!("{prefix}-{i}")).await;
    }
}

async fn log_start(cluster: &TestCluster, id: NodeId) -> LogIndex {
    cluster.handles[&id]
        .status()
        .await
        .expect("running")
        .log_start
        .index
}

/// A follower that was down while the leader compacted its log catches up with a snapshot sent
/// in many chunks, then with the entries after it; every node ends with the same state.
#[test]
fn a_follower_behind_the_compacted_log_catches_up_with_a_chunked_snapshot() {
    run_paused(|| async {
        // A snapshot every 50 entries, 10 kept behind it, 64-byte chunks.
        let mut cluster = TestCluster::with_snapshots(3, 21, 50, 10, 64);
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        let lagging = NodeId(if leader.0 == 3 { 2 } else { 3 });
        write(&cluster, "before", 5).await;
        cluster.crash(lagging).await;
        write(&cluster, "while-down", 300).await;
        let (leader, _) = cluster.leader().await.expect("leader");
        assert!(
            log_start(&cluster, leader).await > LogIndex(200),
            "the leader compacted its log"
        );
        cluster.start(lagging);
        write(&cluster, "after", 5).await;
        cluster.wait_applied(310, Duration::from_secs(30)).await;
        cluster.assert_same_order();
        let expected = cluster.applied_commands(leader);
        assert_eq!(cluster.applied_commands(lagging), expected);
        assert!(
            log_start(&cluster, lagging).await > LogIndex(200),
            "the follower's log starts after the installed snapshot"
        );
        cluster.shutdown();
    });
}

/// A node whose data was wiped (empty log, no snapshots, same id) is restored from the leader.
#[test]
fn a_node_with_a_wiped_data_directory_is_restored() {
    run_paused(|| async {
        let mut cluster = TestCluster::with_snapshots(3, 22, 40, 5, 256);
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        write(&cluster, "k", 120).await;
        let wiped = NodeId(if leader.0 == 1 { 2 } else { 1 });
        cluster.crash(wiped).await;
        let fresh = MemStorage::new();
        cluster.set_storage(wiped, Box::new(move || Box::new(fresh.clone())));
        cluster.wipe_snapshots(wiped);
        cluster.start(wiped);
        write(&cluster, "more", 3).await;
        cluster.wait_applied(123, Duration::from_secs(30)).await;
        let (leader, _) = cluster.leader().await.expect("leader");
        assert_eq!(
            cluster.applied_commands(wiped),
            cluster.applied_commands(leader)
        );
        cluster.shutdown();
    });
}

/// A node restarts from its newest snapshot plus the log after it, and the log on disk stays
/// bounded however long the write load runs.
#[test]
fn a_restarted_node_resumes_from_its_snapshot_and_the_log_stays_bounded() {
    run_paused(|| async {
        let mut cluster = TestCluster::with_snapshots(3, 23, 30, 10, 1024);
        cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        write(&cluster, "k", 400).await;
        cluster.wait_applied(400, Duration::from_secs(30)).await;
        for id in cluster.handles.keys().copied().collect::<Vec<_>>() {
            let status = cluster.handles[&id].status().await.expect("running");
            let kept = status.last_log_id.index.0 - status.log_start.index.0;
            // At most one snapshot period plus the trailing margin (and a batch in flight).
            assert!(kept <= 30 + 10 + 20, "node {id} keeps {kept} entries");
            let store = SnapshotStore::open(cluster.snapshot_dirs[&id].path()).expect("store");
            let latest = store.latest().expect("latest").expect("a snapshot");
            assert!(latest.last_included.index >= LogIndex(360), "{latest:?}");
            let files = std::fs::read_dir(cluster.snapshot_dirs[&id].path())
                .expect("list")
                .count();
            assert!(
                files == 2 || files == 4,
                "node {id}: the newest snapshot and at most the one before it are kept: {files} files"
            );
        }
        // A restart: the state machine comes back from the snapshot and the log after it.
        let (leader, _) = cluster.leader().await.expect("leader");
        let restarted = NodeId(if leader.0 == 1 { 3 } else { 1 });
        let before = cluster.applied_commands(restarted);
        cluster.crash(restarted).await;
        cluster.start(restarted);
        cluster.wait_applied(400, Duration::from_secs(30)).await;
        assert_eq!(cluster.applied_commands(restarted), before);
        cluster.shutdown();
    });
}

/// A transfer cut short by a crash leaves the follower consistent: after the restart the
/// leftovers are gone, and a fresh transfer completes.
#[test]
fn a_crash_in_the_middle_of_installing_leaves_the_node_consistent() {
    run_paused(|| async {
        // Tiny chunks and a millisecond per message: the transfer takes many round trips, so the
        // crash lands in its middle.
        let mut cluster = TestCluster::with_snapshots(3, 24, 40, 0, 16);
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        let lagging = NodeId(if leader.0 == 2 { 3 } else { 2 });
        cluster.crash(lagging).await;
        write(&cluster, "k", 200).await;
        cluster.control(NetworkControl::SetDelay(
            Duration::from_millis(1),
            Duration::from_millis(1),
        ));
        cluster.start(lagging);
        let dir = cluster.snapshot_dirs[&lagging].path().to_path_buf();
        let receiving = || {
            std::fs::read_dir(&dir)
                .expect("list")
                .filter_map(Result::ok)
                .any(|e| e.path().to_string_lossy().ends_with(".tmp"))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !receiving() {
            assert!(tokio::time::Instant::now() < deadline, "no transfer began");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(receiving(), "the transfer is still under way");
        cluster.crash(lagging).await;
        cluster.start(lagging);
        write(&cluster, "after", 2).await;
        cluster.wait_applied(202, Duration::from_secs(60)).await;
        let (leader, _) = cluster.leader().await.expect("leader");
        assert_eq!(
            cluster.applied_commands(lagging),
            cluster.applied_commands(leader)
        );
        cluster.shutdown();
    });
}

/// A crash after a received snapshot was kept but before the log's compaction for it was synced:
/// the node restarts with a snapshot past its log's start. It compacts its log up to the
/// snapshot before the rules start (`RecoveredState::catch_up_with_snapshot`); before, its
/// configuration lay past the end of its log, which the rules' own invariants refuse.
#[test]
fn a_snapshot_kept_without_its_compaction_starts_the_log() {
    run_paused(|| async {
        let mut cluster = TestCluster::with_snapshots(3, 25, 30, 0, 1024);
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        let lagging = NodeId(if leader.0 == 2 { 3 } else { 2 });
        cluster.crash(lagging).await;
        write(&cluster, "k", 100).await;
        cluster.start(lagging);
        cluster.wait_applied(100, Duration::from_secs(30)).await;
        let store = SnapshotStore::open(cluster.snapshot_dirs[&lagging].path()).expect("store");
        let snapshot = store.latest().expect("latest").expect("a snapshot");
        cluster.crash(lagging).await;
        // What the store held before the snapshot arrived: its term and vote, no entries.
        let mut before = (cluster.storage[&lagging])();
        let hard_state = before.recover().expect("recover").hard_state;
        let mut lost = MemStorage::new();
        lost.write(&raftor_core::LogWrite {
            hard_state: Some(raftor_core::HardState {
                commit_index: LogIndex::ZERO,
                ..hard_state
            }),
            standing: Some(raftor_core::Standing::Member),
            ..raftor_core::LogWrite::default()
        })
        .expect("write");
        assert_eq!(
            lost.recover().expect("recover").log_start.index,
            LogIndex::ZERO
        );
        cluster.set_storage(lagging, Box::new(move || Box::new(lost.clone())));
        cluster.start(lagging);
        assert!(log_start(&cluster, lagging).await >= snapshot.last_included.index);
        write(&cluster, "after", 2).await;
        cluster.wait_applied(102, Duration::from_secs(30)).await;
        let (leader, _) = cluster.leader().await.expect("leader");
        assert_eq!(
            cluster.applied_commands(lagging),
            cluster.applied_commands(leader)
        );
        cluster.shutdown();
    });
}

/// The nodes apply the same entries but do not snapshot at the same moment: the node of rank `r`
/// among three takes its first snapshot `r` thirds of a period later, and then one every period,
/// so their snapshots stay a third of a period apart.
#[test]
fn the_nodes_snapshots_stay_a_third_of_a_period_apart() {
    run_paused(|| async {
        let cluster = TestCluster::with_snapshots(3, 24, 30, 10, 1024);
        cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        // Every snapshot index each node reports, polled after each write.
        let mut taken: std::collections::BTreeMap<NodeId, Vec<LogIndex>> = Default::default();
        for i in 0..200 {
            cluster.propose_on_leader(&format!("k-{i}")).await;
            // On the paused clock a commit takes no time, and the spare follower holds its
            // writes until time moves (`NodeOptions::spare_sync_hold`): let a hold pass, as a
            // client's pace would, so it applies as the others do.
            tokio::time::sleep(Duration::from_millis(2)).await;
            for (id, handle) in &cluster.handles {
                let status = handle.status().await.expect("running");
                if let Some(snapshot) = status.snapshot {
                    let seen = taken.entry(*id).or_default();
                    if seen.last() != Some(&snapshot.last_included.index) {
                        seen.push(snapshot.last_included.index);
                    }
                }
            }
        }
        let firsts = [1, 2, 3].map(|id| taken[&NodeId(id)][0].0);
        // Ranked by id: the first snapshot after 30, 40 and 50 applied entries (entries arrive
        // in small batches, so a node may pass its threshold by a few).
        for (rank, first) in firsts.iter().enumerate() {
            let due = 30 + 10 * rank as u64;
            assert!(
                (due..due + 5).contains(first),
                "rank {rank}: first snapshot at {first}, due at {due}: {taken:?}"
            );
        }
        for (id, indexes) in &taken {
            assert!(indexes.len() >= 4, "node {id}: {indexes:?}");
            for pair in indexes.windows(2) {
                assert!(
                    (30..36).contains(&(pair[1].0 - pair[0].0)),
                    "node {id}: one period between snapshots: {indexes:?}"
                );
            }
        }
        // No two nodes ever snapshot at (nearly) the same index.
        for (id, indexes) in &taken {
            for (other, others) in &taken {
                if other <= id {
                    continue;
                }
                for index in indexes {
                    assert!(
                        others.iter().all(|o| o.0.abs_diff(index.0) >= 5),
                        "nodes {id} and {other} both snapshot near {index}: {taken:?}"
                    );
                }
            }
        }
        cluster.shutdown();
    });
}
