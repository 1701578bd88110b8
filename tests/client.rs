//! The Rust client against a real in-process cluster: leader discovery, retries across a leader
//! failover, and exactly-once writes.

mod common;

use common::{http, Cluster};
use raftor::kv::KvOutcome;
use raftor::protocol::Consistency;
use raftor::{Client, ClientOptions};

#[actix_rt::test]
async fn a_counter_incremented_by_cas_across_a_leader_failover_counts_exactly() {
    let mut cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    client.put("counter", "0").await.expect("put");
    for i in 0..40u32 {
        if i == 20 {
            // Kill the leader in the middle of the run.
            let leader = cluster.leader().await;
            let position = cluster
                .nodes
                .iter()
                .position(|n| n.handle.id() == leader)
                .expect("present");
            let node = cluster.nodes.remove(position);
            node.shutdown().await;
        }
        let current = client
            .get("counter", Consistency::Linearizable)
            .await
            .expect("read")
            .expect("present");
        let n: u32 = String::from_utf8_lossy(&current).parse().expect("a number");
        assert_eq!(n, i, "every increment applied exactly once");
        let result = client
            .cas("counter", Some(current), (n + 1).to_string())
            .await
            .expect("cas");
        assert_eq!(result.outcome, KvOutcome::Swapped, "increment {i}");
    }
    let last = client
        .get("counter", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(last.as_deref(), Some(&b"40"[..]));
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn a_write_retried_after_failover_is_applied_once() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let session = [("X-Raftor-Client", "4242"), ("X-Raftor-Seq", "1")];
    let body = br#"{"expected": null, "value": "first"}"#;
    let first = http(
        &cluster.http(leader),
        "POST",
        "/v1/kv/once/cas",
        &session,
        body,
    )
    .await;
    assert_eq!(first.status, 200);
    let index = first.json()["index"].clone();

    // The leader dies; the client, unsure whether its write landed, retries elsewhere.
    let position = cluster
        .nodes
        .iter()
        .position(|n| n.handle.id() == leader)
        .expect("present");
    let node = cluster.nodes.remove(position);
    node.shutdown().await;
    let survivor = cluster.nodes[0].handle.id();
    // Until the survivors notice and elect a new leader, they answer 503 (not applied): retry.
    let mut retry = http(
        &cluster.http(survivor),
        "POST",
        "/v1/kv/once/cas",
        &session,
        body,
    )
    .await;
    for _ in 0..100 {
        if retry.status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        retry = http(
            &cluster.http(survivor),
            "POST",
            "/v1/kv/once/cas",
            &session,
            body,
        )
        .await;
    }
    assert_eq!(
        retry.status,
        200,
        "answered as the first time: {}",
        retry.text()
    );
    assert_eq!(retry.json()["index"], index, "same index: applied once");
    // Without the session, the same CAS now fails: the key is taken.
    let plain = http(
        &cluster.http(survivor),
        "POST",
        "/v1/kv/once/cas",
        &[],
        body,
    )
    .await;
    assert_eq!(plain.status, 409);
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn the_client_reports_bad_requests_and_unreachable_clusters_clearly() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let error = client.put("", "x").await.expect_err("empty key");
    assert!(
        matches!(error, raftor::ClientError::Rejected(_)),
        "{error:?}"
    );
    let huge = vec![0u8; 2 * 1024 * 1024];
    let error = client.put("k", huge).await.expect_err("too large");
    assert!(
        matches!(error, raftor::ClientError::Rejected(_)),
        "{error:?}"
    );
    cluster.shutdown().await;

    let options = ClientOptions {
        operation_timeout: std::time::Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let nobody = Client::new(vec!["127.0.0.1:1".into()], options).expect("client");
    let error = nobody.put("k", "v").await.expect_err("nobody there");
    assert!(
        matches!(error, raftor::ClientError::Unavailable(_)),
        "{error:?}"
    );
}
