//! Snapshots with real nodes: loopback TCP, RocksDB and snapshot files under a temporary
//! directory, wall-clock time. The key-value map is snapshotted, the log compacted, a follower
//! that missed the compacted entries is brought up to date with InstallSnapshot, and nodes restart
//! from their snapshot plus the log after it.

mod common;

use common::{free_base_port, start_node_retrying};
use raftor::{NodeId, SnapshotPolicy};
use raftor_kv::local_cluster::{local_node_config, quick_timing};
use raftor_kv::protocol::Consistency;
use raftor_kv::server::RunningNode;
use raftor_kv::store::{KvAnswer, KvQuery};
use raftor_kv::{Client, ClientOptions};
use std::path::Path;
use std::time::Duration;

fn config(id: u64, base: u16, dir: &Path) -> raftor_kv::config::NodeConfig {
    let mut config = local_node_config(id, 3, base, None, dir);
    quick_timing(&mut config);
    config.snapshots = SnapshotPolicy {
        every_entries: 100,
        every_bytes: 0,
        trailing_entries: 20,
        // Small chunks: a transfer takes several.
        chunk_bytes: 2048,
    };
    config
}

async fn start(id: u64, base: u16, dir: &Path) -> RunningNode {
    start_node_retrying(&config(id, base, dir)).await
}

async fn value_on(node: &RunningNode, key: &str) -> Option<Vec<u8>> {
    let query = KvQuery::Get {
        key: key.to_string(),
    };
    match node.handle.read(query, Consistency::Local).await {
        Ok(KvAnswer::Value(value)) => value.map(|v| v.to_vec()),
        _ => None,
    }
}

async fn wait_for(node: &RunningNode, key: &str, value: &str) {
    for _ in 0..300 {
        if value_on(node, key).await.as_deref() == Some(value.as_bytes()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {} never applied {key}={value}", node.handle.id());
}

async fn put_range(client: &Client, range: std::ops::Range<u32>) {
    for i in range {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
}

#[actix_rt::test]
async fn compaction_install_snapshot_and_restart_over_tcp_and_rocksdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base_port(3);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, base, dir.path()).await);
    }
    let endpoints: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let client = Client::new(endpoints.clone(), ClientOptions::default()).expect("client");
    put_range(&client, 0..150).await;

    // A follower goes down; the others take snapshots and compact well past where it stopped.
    let status = client.status().await.expect("status");
    let leader = NodeId(status.leader.expect("a leader").id);
    let down = NodeId(if leader.0 == 3 { 2 } else { 3 });
    let position = nodes
        .iter()
        .position(|n| n.handle.id() == down)
        .expect("present");
    let stopped = nodes.remove(position);
    stopped.shutdown().await;
    drop(stopped);
    put_range(&client, 150..600).await;
    let leader_node = nodes
        .iter()
        .find(|n| n.handle.id() == leader)
        .expect("leader");
    let leader_status = leader_node.handle.status().await.expect("status");
    assert!(
        leader_status.log_start.index.0 > 300,
        "the leader compacted its log: {leader_status:?}"
    );

    // On demand, over the native protocol: the node reports what it took.
    let admin = Client::new(
        vec![format!("127.0.0.1:{}", base + leader.0 as u16)],
        ClientOptions::default(),
    )
    .expect("client");
    let report = admin.snapshot().await.expect("snapshot on demand");
    assert_eq!(report.node, leader.0);
    assert!(report.index >= 600 && report.bytes > 0, "{report:?}");

    // The follower comes back: it needs entries nobody has any more, and gets a snapshot.
    let restarted = start(down.0, base, dir.path()).await;
    wait_for(&restarted, "k0", "v0").await;
    wait_for(&restarted, "k599", "v599").await;
    let status = restarted.handle.status().await.expect("status");
    assert!(
        status.log_start.index.0 > 300,
        "the follower's log starts after the snapshot it installed: {status:?}"
    );
    nodes.push(restarted);

    // Everyone restarts: each comes back from its newest snapshot plus the log after it.
    for node in nodes.drain(..) {
        node.shutdown().await;
    }
    for id in 1..=3 {
        let snapshots = dir.path().join(format!("node-{id}")).join("snapshots");
        let files = std::fs::read_dir(&snapshots).expect("snapshot dir").count();
        assert!(
            files == 2 || files == 4,
            "node {id} keeps its newest snapshot and at most the one before it (data and metadata each): {files} files"
        );
    }
    for id in 1..=3 {
        nodes.push(start(id, base, dir.path()).await);
    }
    for node in &nodes {
        wait_for(node, "k0", "v0").await;
        wait_for(node, "k599", "v599").await;
    }
    put_range(&client, 600..610).await;
    assert_eq!(
        client
            .get("k609", Consistency::Linearizable)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"v609"[..])
    );
    for node in &nodes {
        node.shutdown().await;
    }
}
