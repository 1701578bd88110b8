//! Real nodes: loopback TCP between them, RocksDB under a temporary directory, wall-clock time.

mod common;

use common::Cluster;
use raftor_kv::local_cluster::{local_node_config, quick_timing};
use raftor_kv::protocol::Consistency;
use raftor_kv::server::start_node;
use raftor_kv::{Client, ClientOptions};
use std::time::Duration;

async fn wait_local(client_node: &raftor_kv::server::RunningNode, key: &str, value: &str) {
    use raftor_kv::store::{KvAnswer, KvQuery};
    let query = KvQuery::Get {
        key: key.to_string(),
    };
    for _ in 0..200 {
        if let Ok(KvAnswer::Value(Some(answer))) = client_node
            .handle
            .read(query.clone(), Consistency::Local)
            .await
        {
            if answer == value.as_bytes() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "node {} never applied {key}={value}",
        client_node.handle.id()
    );
}

#[actix_rt::test]
async fn three_nodes_over_tcp_and_rocksdb_replicate_and_recover() {
    let mut cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    for i in 0..100 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    for node in &cluster.nodes {
        wait_local(node, "k99", "v99").await;
    }

    // Stop a follower, write more, restart it from its RocksDB directory: it catches up.
    let follower_id = cluster.follower().await;
    cluster.stop(follower_id).await;
    for i in 100..150 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    let mut config = local_node_config(follower_id.0, 3, cluster.base, None, cluster.dir.path());
    quick_timing(&mut config);
    let mut restarted = None;
    for _ in 0..50 {
        // The old node's RocksDB lock is released asynchronously; retry briefly.
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
    wait_local(&restarted, "k0", "v0").await;
    wait_local(&restarted, "k149", "v149").await;
    cluster.nodes.push(restarted);
    assert_eq!(
        client
            .get("k149", Consistency::Linearizable)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"v149"[..])
    );
    cluster.shutdown().await;
}
