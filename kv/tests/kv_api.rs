//! The key-value API beyond single keys, on a real 3-node cluster over TCP: revisions, range and
//! prefix reads with pagination, transactions, range deletes and leases, over HTTP and through
//! the Rust client (which speaks the native protocol).

mod common;

use bytes::Bytes;
use common::{http, Cluster};
use raftor_kv::protocol::Consistency;
use raftor_kv::store::{
    Compare, CompareOp, CompareTarget, KeySet, RangeQuery, Txn, TxnOp, TxnOpResult,
};
use raftor_kv::{Client, ClientError, ClientOptions};
use std::time::Duration;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[actix_rt::test]
async fn ranges_pages_revisions_transactions_and_range_deletes_over_http() {
    let cluster = Cluster::start(3).await;
    let node = cluster.http(cluster.follower().await);
    for (key, value) in [
        ("app/a", "1"),
        ("app/b", "2"),
        ("app/c", "3"),
        ("other", "x"),
    ] {
        let put = http(
            &node,
            "PUT",
            &format!("/v1/kv/{key}"),
            &[],
            value.as_bytes(),
        )
        .await;
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let rewrite = http(&node, "PUT", "/v1/kv/app/a", &[], b"1b").await.json();

    // One key: the value raw, its revisions in headers, or all of it as JSON.
    let get = http(&node, "GET", "/v1/kv/app/a", &[], b"").await;
    assert_eq!(get.text(), "1b");
    assert_eq!(header(&get.head, "x-raftor-version"), Some("2"));
    assert_eq!(
        header(&get.head, "x-raftor-mod-index"),
        Some(rewrite["index"].to_string().as_str())
    );
    let meta = http(&node, "GET", "/v1/kv/app/a?meta=true", &[], b"")
        .await
        .json();
    assert_eq!(meta["value"], "1b");
    assert!(meta["create_index"].as_u64() < meta["mod_index"].as_u64());
    assert!(meta["index"].as_u64() >= meta["mod_index"].as_u64());

    // A prefix, two keys a page, following the continuation token.
    let mut keys = Vec::new();
    let mut path = "/v1/kv?prefix=app/&limit=2".to_owned();
    loop {
        let page = http(&node, "GET", &path, &[], b"").await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        for kv in page["kvs"].as_array().expect("kvs") {
            keys.push(kv["key"].as_str().expect("key").to_owned());
        }
        match page["continue"].as_str() {
            Some(token) => path = format!("/v1/kv?prefix=app/&limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(keys, ["app/a", "app/b", "app/c"]);
    let range = http(
        &node,
        "GET",
        "/v1/kv?start=app/b&end=other&keys_only=true",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(range["count"], 2);
    assert!(range["kvs"][0].get("value").is_none());
    let count = http(
        &node,
        "GET",
        "/v1/kv?prefix=&count_only=true&consistency=local",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(count["count"], 4);

    // Bad input: a clear 400, nothing read.
    for bad in [
        "/v1/kv?start=b&end=a",
        "/v1/kv?prefix=a&limit=0",
        "/v1/kv?prefix=a&limit=1000000",
        "/v1/kv?prefix=a&max_bytes=0",
        "/v1/kv?prefix=a&key=b",
        "/v1/kv",
        "/v1/kv?prefix=a&continue=zz",
    ] {
        let reply = http(&node, "GET", bad, &[], b"").await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
    }

    // A transaction: compare revisions and values, then several writes at one index.
    let txn = format!(
        r#"{{"compare": [{{"key": "app/a", "mod_index": {}}}, {{"key": "lock", "version": 0}}],
            "success": [{{"put": {{"key": "lock", "value": "me"}}}}, {{"delete": {{"key": "other"}}}}],
            "failure": [{{"get": {{"key": "app/a"}}}}]}}"#,
        rewrite["index"]
    );
    let done = http(&node, "POST", "/v1/txn", &[], txn.as_bytes())
        .await
        .json();
    assert_eq!(done["succeeded"], true, "{done}");
    assert_eq!(done["results"][1]["delete"]["deleted"], 1);
    // The same compares no longer hold (lock exists now): the failure branch reads app/a.
    let again = http(&node, "POST", "/v1/txn", &[], txn.as_bytes())
        .await
        .json();
    assert_eq!(again["succeeded"], false);
    assert_eq!(again["results"][0]["get"]["value"], "1b");
    let bad_txn = http(
        &node,
        "POST",
        "/v1/txn",
        &[],
        br#"{"compare": [{"key": "a"}]}"#,
    )
    .await;
    assert_eq!(bad_txn.status, 400, "{}", bad_txn.text());

    // Range deletes: how many went; deleting everything needs all=true.
    let everything = http(&node, "DELETE", "/v1/kv?prefix=", &[], b"").await;
    assert_eq!(everything.status, 400);
    let deleted = http(&node, "DELETE", "/v1/kv?prefix=app/", &[], b"")
        .await
        .json();
    assert_eq!(deleted["deleted"], 3);
    let left = http(&node, "GET", "/v1/kv?prefix=&keys_only=true", &[], b"")
        .await
        .json();
    assert_eq!(left["kvs"].as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left["kvs"][0]["key"], "lock");
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn the_client_reads_ranges_runs_transactions_and_deletes_ranges() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    for i in 0..25 {
        client
            .put(&format!("svc/{i:02}"), format!("v{i}"))
            .await
            .expect("put");
    }
    let all = client
        .range_all(KeySet::Prefix("svc/".into()), Consistency::Linearizable)
        .await
        .expect("range");
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "in key order");
    let page = client
        .range(
            RangeQuery {
                limit: 10,
                ..RangeQuery::new(KeySet::Prefix("svc/".into()))
            },
            Consistency::Lease,
        )
        .await
        .expect("page");
    assert_eq!((page.kvs.len(), page.next_after()), (10, Some("svc/09")));
    let bad = client
        .range(
            RangeQuery {
                limit: 0,
                ..RangeQuery::new(KeySet::Prefix("svc/".into()))
            },
            Consistency::Local,
        )
        .await;
    assert!(matches!(bad, Err(ClientError::Rejected(_))), "{bad:?}");

    let entry = client
        .get_entry("svc/03", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    let guarded = |mod_index| Txn {
        compare: vec![Compare {
            key: "svc/03".into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModIndex(mod_index),
        }],
        success: vec![TxnOp::Put {
            key: "svc/03".into(),
            value: Bytes::from_static(b"new"),
            lease: None,
        }],
        failure: vec![TxnOp::Get {
            key: "svc/03".into(),
        }],
    };
    let first = client.txn(guarded(entry.mod_index)).await.expect("txn");
    assert!(first.outcome.succeeded);
    let second = client.txn(guarded(entry.mod_index)).await.expect("txn");
    assert!(!second.outcome.succeeded);
    match &second.outcome.results[0] {
        TxnOpResult::Got(Some(kv)) => assert_eq!(kv.mod_index, first.index),
        other => panic!("{other:?}"),
    }
    let (_, deleted) = client
        .delete_range(KeySet::Range {
            start: "svc/10".into(),
            end: Some("svc/20".into()),
        })
        .await
        .expect("delete");
    assert_eq!(deleted, 10);
    let left = client
        .range(
            RangeQuery {
                count_only: true,
                ..RangeQuery::new(KeySet::Prefix("svc/".into()))
            },
            Consistency::Linearizable,
        )
        .await
        .expect("count");
    assert_eq!(left.count, 15);
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn a_lease_keeps_its_keys_while_kept_alive_across_a_leader_kill_then_they_expire() {
    let mut cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    // Bad TTLs are refused with a reason.
    for ttl in [Duration::ZERO, Duration::from_secs(400 * 24 * 3600)] {
        let refused = client.grant_lease(ttl).await;
        assert!(
            matches!(refused, Err(ClientError::Rejected(_))),
            "{refused:?}"
        );
    }
    let lease = client
        .grant_lease(Duration::from_secs(2))
        .await
        .expect("grant");
    client
        .put_with_lease("service/instance-1", "10.0.0.7:80", lease.id)
        .await
        .expect("put");
    client.put("service/config", "static").await.expect("put");
    let attached = client.lease(lease.id).await.expect("lease");
    assert_eq!(attached.keys, ["service/instance-1"]);
    assert!(attached.remaining_ms.is_some_and(|ms| ms <= 2_000));
    // A put naming a lease that does not exist writes nothing.
    let orphan = client.put_with_lease("service/x", "y", 987_654).await;
    assert!(
        matches!(orphan, Err(ClientError::NotFound(_))),
        "{orphan:?}"
    );

    // Kept alive for three TTLs, the leader killed in the middle: the key stays.
    for round in 0..12 {
        if round == 4 {
            cluster.stop_leader().await;
        }
        client.keep_alive(lease.id).await.expect("kept alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let present = client
        .get("service/instance-1", Consistency::Linearizable)
        .await
        .expect("read");
    assert!(present.is_some(), "kept alive across the failover");

    // Not kept alive any more: gone within the TTL (plus the lessor's tick), on every node.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    for node in &cluster.nodes {
        let http_addr = cluster.http(node.handle.id());
        let reply = http(
            &http_addr,
            "GET",
            "/v1/kv/service/instance-1?consistency=local",
            &[],
            b"",
        )
        .await;
        assert_eq!(reply.status, 404, "node {}", node.handle.id());
    }
    let kept = client
        .get("service/config", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(
        kept.as_deref(),
        Some(&b"static"[..]),
        "keys without the lease stay"
    );
    let gone = client.keep_alive(lease.id).await;
    assert!(matches!(gone, Err(ClientError::NotFound(_))), "{gone:?}");

    // Revoked: its keys go at once.
    let second = client
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    client
        .put_with_lease("service/instance-2", "x", second.id)
        .await
        .expect("put");
    assert_eq!(client.revoke_lease(second.id).await, Ok(1));
    assert_eq!(
        client
            .get("service/instance-2", Consistency::Linearizable)
            .await,
        Ok(None)
    );
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn leases_over_http() {
    let cluster = Cluster::start(3).await;
    let node = cluster.http(cluster.follower().await);
    for bad in [
        &br#"{"ttl": 0}"#[..],
        br#"{"ttl": 100000000}"#,
        br#"{"ttl": "x"}"#,
        b"{}",
    ] {
        let reply = http(&node, "POST", "/v1/leases", &[], bad).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
    }
    let granted = http(&node, "POST", "/v1/leases", &[], br#"{"ttl": 30}"#)
        .await
        .json();
    let id = granted["id"].as_u64().expect("id");
    assert_eq!(granted["ttl_ms"], 30_000);
    let put = http(&node, "PUT", &format!("/v1/kv/held?lease={id}"), &[], b"v").await;
    assert_eq!(put.status, 200, "{}", put.text());
    let missing = http(&node, "PUT", "/v1/kv/held?lease=424242", &[], b"v").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    let kept = http(
        &node,
        "POST",
        &format!("/v1/leases/{id}/keepalive"),
        &[],
        b"",
    )
    .await
    .json();
    assert!(
        kept["remaining_ms"].as_u64().is_some_and(|ms| ms > 29_000),
        "{kept}"
    );
    let shown = http(&node, "GET", &format!("/v1/leases/{id}"), &[], b"")
        .await
        .json();
    assert_eq!(shown["keys"][0], "held");
    let meta = http(&node, "GET", "/v1/kv/held?meta=true", &[], b"")
        .await
        .json();
    assert_eq!(meta["lease"], id);
    let list = http(&node, "GET", "/v1/leases", &[], b"").await.json();
    assert_eq!(list["leases"].as_array().map(Vec::len), Some(1));
    let revoked = http(&node, "DELETE", &format!("/v1/leases/{id}"), &[], b"")
        .await
        .json();
    assert_eq!(revoked["deleted"], 1);
    let again = http(&node, "DELETE", &format!("/v1/leases/{id}"), &[], b"").await;
    assert_eq!(again.status, 404);
    assert_eq!(
        http(&node, "GET", "/v1/kv/held", &[], b"").await.status,
        404
    );
    cluster.shutdown().await;
}
