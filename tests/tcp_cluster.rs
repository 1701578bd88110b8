//! Real nodes: loopback TCP between them, RocksDB under a temporary directory, wall-clock time.

use bytes::Bytes;
use raftor::kv::{decode_get, KvCommand, KvOutcome, KvQuery};
use raftor::local_cluster::{current_leader, local_node_config, start_local_cluster};
use raftor::server::{start_node, RunningNode};
use raftor::NodeId;
use std::time::Duration;

/// A base port such that base+1..=base+n are free now.
fn free_base_port(n: u16) -> u16 {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = probe
            .local_addr()
            .expect("addr")
            .port()
            .saturating_sub(n + 1);
        drop(probe);
        if base > 1024
            && (1..=n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
    panic!("no free ports");
}

async fn wait_leader(nodes: &[RunningNode]) -> NodeId {
    for _ in 0..200 {
        if let Some((leader, _)) = current_leader(nodes).await {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 10 s");
}

async fn put(nodes: &[RunningNode], key: &str, value: &str) {
    for _ in 0..100 {
        let leader = wait_leader(nodes).await;
        let Some(node) = nodes.iter().find(|n| n.handle.id() == leader) else {
            continue;
        };
        let command = KvCommand::Put {
            key: key.to_string(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        if let Ok(result) = node.handle.propose(command.encode()).await {
            assert!(matches!(
                KvOutcome::decode(&result),
                Some(KvOutcome::Put { .. })
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not put {key}");
}

async fn wait_value(node: &RunningNode, key: &str, value: &str) {
    let query = KvQuery::Get {
        key: key.to_string(),
    }
    .encode();
    for _ in 0..200 {
        if let Some(answer) = node.handle.query_local(query.clone()).await {
            if decode_get(&answer).as_deref() == Some(value.as_bytes()) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {} never applied {key}={value}", node.handle.id());
}

#[actix_rt::test]
async fn three_nodes_over_tcp_and_rocksdb_replicate_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base_port(3);
    let mut nodes = start_local_cluster(3, base, dir.path())
        .await
        .expect("cluster starts");
    for i in 0..100 {
        put(&nodes, &format!("k{i}"), &format!("v{i}")).await;
    }
    for node in &nodes {
        wait_value(node, "k99", "v99").await;
    }

    // Stop a follower, write more, restart it from its RocksDB directory: it catches up.
    let leader = wait_leader(&nodes).await;
    let position = nodes
        .iter()
        .position(|n| n.handle.id() != leader)
        .expect("a follower");
    let follower = nodes.remove(position);
    let follower_id = follower.handle.id();
    follower.shutdown();
    drop(follower);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 100..150 {
        put(&nodes, &format!("k{i}"), &format!("v{i}")).await;
    }
    let config = local_node_config(follower_id.0, 3, base, dir.path());
    let mut restarted = None;
    for _ in 0..50 {
        // The old listener and RocksDB lock are released asynchronously; retry briefly.
        match start_node(&config).await {
            Ok(node) => {
                restarted = Some(node);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let restarted = restarted.expect("the follower restarts from its data directory");
    let status = restarted.handle.status().await.expect("running");
    assert!(
        status.last_log_id.index.0 >= 100,
        "recovered its log: {status:?}"
    );
    wait_value(&restarted, "k0", "v0").await;
    wait_value(&restarted, "k149", "v149").await;
    nodes.push(restarted);
    for node in &nodes {
        node.shutdown();
    }
}
