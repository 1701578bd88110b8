//! A voter that lost its data (its data directory deleted, as `docker volume rm` would) comes back
//! under its old id with an empty store: it rejoins before it votes (README, "A node that lost its
//! data"). Real nodes: loopback TCP, RocksDB under a temporary directory, wall-clock time.

mod common;

use common::{free_base_port, start_node_retrying};
use raftor::{NodeId, Standing};
use raftor_kv::local_cluster::{local_node_config, quick_timing};
use raftor_kv::protocol::Consistency;
use raftor_kv::server::RunningNode;
use raftor_kv::store::{KvAnswer, KvQuery};
use raftor_kv::{Client, ClientOptions};
use std::path::Path;
use std::time::Duration;

async fn start(id: u64, base: u16, dir: &Path) -> RunningNode {
    let mut config = local_node_config(id, 3, base, None, dir);
    quick_timing(&mut config);
    start_node_retrying(&config).await
}

/// Shut node `id` down and drop it (its RocksDB lock goes with it).
async fn stop(nodes: &mut Vec<RunningNode>, id: NodeId) {
    let position = nodes
        .iter()
        .position(|n| n.handle.id() == id)
        .expect("present");
    let node = nodes.remove(position);
    node.shutdown().await;
}

async fn applied(node: &RunningNode, key: &str, value: &str) -> bool {
    let query = KvQuery::Get {
        key: key.to_string(),
    };
    matches!(
        node.handle.read(query, Consistency::Local).await,
        Ok(KvAnswer::Value(Some(v))) if v.as_ref() == value.as_bytes()
    )
}

async fn standing(node: &RunningNode) -> Standing {
    node.handle.status().await.expect("status").standing
}

#[actix_rt::test]
async fn a_voter_whose_data_directory_was_deleted_rejoins_before_it_votes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base_port(3);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, base, dir.path()).await);
    }
    let endpoints: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let client = Client::new(endpoints, ClientOptions::default()).expect("client");
    for i in 0..20 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    for node in &nodes {
        assert_eq!(
            standing(node).await,
            Standing::Member,
            "a new cluster: members"
        );
    }
    let leader = NodeId(
        client
            .status()
            .await
            .expect("status")
            .leader
            .expect("leader")
            .id,
    );
    let lost = NodeId(if leader.0 == 1 { 2 } else { 1 });
    let other = NodeId(6 - leader.0 - lost.0);

    // Its data directory goes; it starts again, empty, under its old id.
    stop(&mut nodes, lost).await;
    std::fs::remove_dir_all(dir.path().join(format!("node-{}", lost.0))).expect("wiped");
    let restarted = start(lost.0, base, dir.path()).await;
    let first = standing(&restarted).await;
    assert_ne!(
        first,
        Standing::Member,
        "an empty store is not trusted: {first:?}"
    );

    // It answers the leader again once the others told it their terms, and catches up.
    for i in 20..30 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    let mut caught_up = false;
    for _ in 0..200 {
        if applied(&restarted, "k29", "v29").await && applied(&restarted, "k0", "v0").await {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up, "the node that lost its data caught up");
    let now = standing(&restarted).await;
    assert!(
        matches!(now, Standing::CatchingUp { .. }),
        "it votes only after the floor, until it holds an entry of a later term: {now:?}"
    );

    // A leader of a later term makes it a member again; then it is a voter like any other: with
    // the third node gone, it and the leader still commit.
    let leader_node = nodes
        .iter()
        .find(|n| n.handle.id() == leader)
        .expect("leader");
    leader_node
        .handle
        .transfer_leadership(other)
        .await
        .expect("transfer");
    let mut member = false;
    for _ in 0..200 {
        if standing(&restarted).await == Standing::Member {
            member = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(member, "a member once it holds an entry of a later term");
    nodes.push(restarted);
    stop(&mut nodes, leader).await;
    client
        .put("after", "all")
        .await
        .expect("a write with the rejoined node's vote");
    for node in &nodes {
        node.shutdown().await;
    }
}
