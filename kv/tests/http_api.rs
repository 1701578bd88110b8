//! The HTTP API against a real in-process 3-node cluster: every route and error code.

mod common;

use common::{http, Cluster};

#[actix_rt::test]
async fn every_route_and_error_code() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let (l, f) = (cluster.http(leader), cluster.http(follower));

    // A write sent to a follower is forwarded to the leader, not an error for the client.
    let put = http(&f, "PUT", "/v1/kv/color", &[], b"blue").await;
    assert_eq!(put.status, 200, "{}", put.text());
    let index = put.json()["index"].as_u64().expect("an index");
    assert!(index > 0);

    // A snapshot on demand, on whichever node is asked (here a follower), covering the write.
    let snapshot = http(&f, "POST", "/v1/admin/snapshot", &[], b"").await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
    let report = snapshot.json();
    assert_eq!(report["node"].as_u64(), Some(follower.0), "{report}");
    assert!(report["bytes"].as_u64().expect("bytes") > 0, "{report}");
    let wrong = http(&f, "GET", "/v1/admin/snapshot", &[], b"").await;
    assert_eq!(wrong.status, 405, "{}", wrong.text());

    // Reads at each consistency level, on the leader and on the follower.
    for node in [&l, &f] {
        for consistency in ["", "?consistency=linearizable", "?consistency=lease"] {
            let get = http(node, "GET", &format!("/v1/kv/color{consistency}"), &[], b"").await;
            assert_eq!(
                (get.status, get.text().as_str()),
                (200, "blue"),
                "{node}{consistency}"
            );
        }
    }
    // A local read on the follower is eventually the same.
    let mut local = None;
    for _ in 0..100 {
        let get = http(&f, "GET", "/v1/kv/color?consistency=local", &[], b"").await;
        if get.status == 200 {
            local = Some(get.text());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(local.as_deref(), Some("blue"));

    let missing = http(&l, "GET", "/v1/kv/nothing", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    let bad = http(&l, "GET", "/v1/kv/color?consistency=eventual", &[], b"").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .expect("message")
        .contains("eventual"));

    // DELETE says whether there was something to delete.
    let deleted = http(&f, "DELETE", "/v1/kv/color", &[], b"").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["deleted"], true);
    let again = http(&l, "DELETE", "/v1/kv/color", &[], b"").await;
    assert_eq!(again.json()["deleted"], false);

    // CAS: null expects absence; a mismatch is 409 with the current value.
    let cas = |body: &'static str| http(&f, "POST", "/v1/kv/lock/cas", &[], body.as_bytes());
    assert_eq!(cas(r#"{"expected": null, "value": "a"}"#).await.status, 200);
    let conflict = cas(r#"{"expected": null, "value": "b"}"#).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["current"], "a");
    assert_eq!(cas(r#"{"expected": "a", "value": "b"}"#).await.status, 200);
    assert_eq!(
        cas(r#"{"expected": "zzz"}"#).await.status,
        400,
        "missing value"
    );
    assert_eq!(cas("not json").await.status, 400);

    // Sessions: a retried write answers with the original index; headers are checked.
    let session = [("X-Raftor-Client", "77"), ("X-Raftor-Seq", "1")];
    let first = http(&l, "PUT", "/v1/kv/s", &session, b"1").await;
    let retry = http(&f, "PUT", "/v1/kv/s", &session, b"1").await;
    assert_eq!(first.json()["index"], retry.json()["index"]);
    let stale_session = [("X-Raftor-Client", "77"), ("X-Raftor-Seq", "0")];
    assert_eq!(
        http(&l, "PUT", "/v1/kv/s", &stale_session, b"1")
            .await
            .status,
        400
    );
    assert_eq!(
        http(&l, "PUT", "/v1/kv/s", &[("X-Raftor-Seq", "5")], b"1")
            .await
            .status,
        400
    );
    assert_eq!(
        http(
            &l,
            "PUT",
            "/v1/kv/s",
            &[("X-Raftor-Client", "x"), ("X-Raftor-Seq", "5")],
            b"1"
        )
        .await
        .status,
        400
    );

    // Status, health, metrics.
    let status = http(&f, "GET", "/v1/status", &[], b"").await;
    assert_eq!(status.status, 200);
    let status = status.json();
    for field in [
        "id",
        "role",
        "term",
        "leader",
        "commit_index",
        "applied_index",
        "last_log_index",
        "members",
    ] {
        assert!(status.get(field).is_some(), "status has {field}: {status}");
    }
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader"]["id"], leader.0);
    let leader_status = http(&l, "GET", "/v1/status", &[], b"").await.json();
    assert_eq!(leader_status["role"], "leader");
    let peers = leader_status["peers"]
        .as_object()
        .expect("peers on the leader");
    assert_eq!(peers.len(), 2);
    for progress in peers.values() {
        assert!(progress["match_index"].as_u64().is_some());
        assert!(progress.get("next_index").is_some());
        assert!(progress.get("since_contact_ms").is_some());
    }
    assert_eq!(http(&f, "GET", "/health", &[], b"").await.status, 200);
    let metrics = http(&l, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for name in [
        "raftor_term",
        "raftor_role",
        "raftor_commit_index",
        "raftor_applied_index",
        "raftor_proposals_total",
        "raftor_write_seconds_bucket",
        "raftor_log_append_fsync_seconds_bucket",
        "raftor_replication_lag_entries",
        "raftor_elections_started",
        "raftor_log_writes{",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    assert!(
        !text.contains("raftor_tls_"),
        "without TLS, no certificate gauge: {text}"
    );
    // One client at a time: the follower stored its small batches on its own thread.
    let follower_metrics = http(&f, "GET", "/metrics", &[], b"").await.text();
    let inline_writes: u64 = follower_metrics
        .lines()
        .find(|line| line.starts_with("raftor_log_writes{") && line.contains("thread=\"node\""))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no raftor_log_writes{{thread=\"node\"}}:\n{follower_metrics}"));
    assert!(inline_writes > 0, "{follower_metrics}");
    assert!(status["log_writes_inline"].as_u64().is_some(), "{status}");

    // Wrong methods and routes.
    assert_eq!(
        http(&l, "POST", "/v1/kv/color", &[], b"x").await.status,
        405
    );
    assert_eq!(
        http(&l, "PATCH", "/v1/kv/color", &[], b"x").await.status,
        405
    );
    // Keys may hold slashes: this reads the key "lock/cas" (absent).
    assert_eq!(
        http(&l, "GET", "/v1/kv/lock/cas", &[], b"").await.status,
        404
    );
    assert_eq!(http(&l, "GET", "/v2/nothing", &[], b"").await.status, 404);
    // The key is the rest of the path, percent-escapes decoded (`%2F` too); no key is no route;
    // a query string the route does not take is a 400 like any bad request.
    let escaped = http(&l, "PUT", "/v1/kv/app/a%20b%2Fc", &[], b"v").await;
    assert_eq!(escaped.status, 200, "{}", escaped.text());
    let listed = http(&l, "GET", "/v1/kv?prefix=app/", &[], b"").await.json();
    assert_eq!(listed["kvs"][0]["key"], "app/a b/c", "{listed}");
    assert_eq!(
        http(&l, "GET", "/v1/kv/app/a%20b/c", &[], b"").await.text(),
        "v"
    );
    assert_eq!(http(&l, "GET", "/v1/kv/", &[], b"").await.status, 404);
    assert_eq!(http(&l, "HEAD", "/v1/kv/color", &[], b"").await.status, 405);
    let unknown = http(&l, "PUT", "/v1/kv/color?ttl=5", &[], b"x").await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(
        unknown.text().contains("bad query string"),
        "{}",
        unknown.text()
    );

    // A 2 MiB body is refused with 413, and the node is unharmed.
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let refused = http(&l, "PUT", "/v1/kv/big", &[], &huge).await;
    assert_eq!(refused.status, 413, "{}", refused.text());
    let refused = http(&f, "PUT", "/v1/kv/big", &[], &huge).await;
    assert_eq!(refused.status, 413);
    assert_eq!(
        http(&l, "GET", "/v1/kv/big", &[], b"").await.status,
        404,
        "nothing written"
    );
    assert_eq!(
        http(&l, "PUT", "/v1/kv/after", &[], b"fine").await.status,
        200
    );
    cluster.shutdown().await;
}

/// The split probes Kubernetes expects: `/livez` while the process and its actors run,
/// `/readyz` only while the node knows a leader, has applied what it committed and can serve a
/// linearizable read.
#[actix_rt::test]
async fn livez_and_readyz_tell_a_live_node_from_a_ready_one() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    for id in [leader, follower] {
        let url = cluster.http(id);
        let live = http(&url, "GET", "/livez", &[], b"").await;
        assert_eq!(live.status, 200, "{}", live.text());
        assert_eq!(live.json()["live"], true);
        let ready = http(&url, "GET", "/readyz", &[], b"").await;
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert_eq!(ready.json()["leader"].as_u64(), Some(leader.0));
    }
    assert_eq!(
        http(&cluster.http(leader), "POST", "/readyz", &[], b"")
            .await
            .status,
        405
    );

    // The other two stop: the follower left alone is live, and not ready.
    for node in cluster.nodes.iter().filter(|n| n.handle.id() != follower) {
        node.shutdown().await;
    }
    let url = cluster.http(follower);
    let mut answer = None;
    for _ in 0..100 {
        let ready = http(&url, "GET", "/readyz", &[], b"").await;
        if ready.status == 503 {
            answer = Some(ready.json());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let answer = answer.expect("not ready within 10 s of losing its peers");
    assert_eq!(answer["ready"], false);
    assert!(
        ["leader", "linearizable_read"].contains(&answer["failed"].as_str().unwrap_or("")),
        "{answer}"
    );
    assert_eq!(http(&url, "GET", "/livez", &[], b"").await.status, 200);
    cluster.shutdown().await;
}

/// The live cluster page and the JSON it polls: every member's own status, the leader among them;
/// a member that stopped answering is reported with the error, not waited for.
#[actix_rt::test]
async fn the_cluster_page_and_its_json_show_every_member() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let url = cluster.http(follower);
    let page = http(&url, "GET", "/ui", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("/v1/cluster"),
        "the page polls /v1/cluster"
    );
    // Writes through the follower, and a snapshot on the leader: the page's figures for write
    // latency, log and snapshot sizes come from each member's status.
    for i in 0..5 {
        let put = http(&url, "PUT", &format!("/v1/kv/page{i}"), &[], b"v").await;
        assert_eq!(put.status, 200);
    }
    let snapshot = http(
        &cluster.http(leader),
        "POST",
        "/v1/admin/snapshot",
        &[],
        b"",
    )
    .await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
    let view = http(&url, "GET", "/v1/cluster", &[], b"").await.json();
    let status_of = |id: u64| {
        view["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["id"].as_u64() == Some(id))
            .map(|m| m["status"].clone())
            .expect("the member")
    };
    let answering = status_of(follower.0);
    assert_eq!(
        answering["writes_answered"].as_u64(),
        Some(5),
        "{answering}"
    );
    assert!(answering["write_micros_sum"].as_u64().expect("micros") > 0);
    let leading = status_of(leader.0);
    assert!(
        leading["snapshot"]["index"].as_u64().expect("a snapshot") >= 5,
        "{leading}"
    );
    assert!(leading["snapshot"]["bytes"].as_u64().expect("its size") > 0);
    assert!(leading["log_start_index"].as_u64().is_some());
    assert_eq!(view["node"].as_u64(), Some(follower.0));
    let members = view["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    let leaders: Vec<u64> = members
        .iter()
        .filter(|m| m["status"]["role"] == "leader")
        .filter_map(|m| m["status"]["id"].as_u64())
        .collect();
    assert_eq!(leaders, vec![leader.0]);
    let on_leader = members
        .iter()
        .find(|m| m["id"].as_u64() == Some(leader.0))
        .expect("the leader");
    assert_eq!(
        on_leader["status"]["peers"].as_object().map(|p| p.len()),
        Some(2)
    );

    let third = cluster
        .nodes
        .iter()
        .find(|n| n.handle.id() != leader && n.handle.id() != follower)
        .expect("a third node");
    let third_id = third.handle.id().0;
    third.shutdown().await;
    let view = http(&url, "GET", "/v1/cluster", &[], b"").await.json();
    let down = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"].as_u64() == Some(third_id))
        .cloned()
        .expect("the stopped node is still listed");
    assert!(down["status"].is_null(), "{down}");
    assert!(down["error"].is_string(), "{down}");
    cluster.shutdown().await;
}

/// Every metric the Grafana dashboard (`deploy/grafana/raftor.json`) queries is one a node
/// serves at `/metrics`, so no panel of it stays empty for a misspelt or removed name.
#[actix_rt::test]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/raftor.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            let mut rest = expr;
            while let Some(at) = rest.find("raftor_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");

    let cluster = Cluster::start(3).await;
    let leader = cluster.http(cluster.leader().await);
    // A write, so that every series has a sample (proposals by outcome, latencies).
    assert_eq!(
        http(&leader, "PUT", "/v1/kv/k", &[], b"v").await.status,
        200
    );
    let metrics = http(&leader, "GET", "/metrics", &[], b"").await.text();
    let served: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for name in &queried {
        assert!(
            served.contains(name.as_str()),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
    cluster.shutdown().await;
}

/// A write whose session the state machine does not hold (forgotten after
/// `SESSION_TTL_ENTRIES`, which a client's write numbered above 1 from an unknown client can only
/// mean) is refused with 410 on every write route, changes nothing and starts no session; a new
/// session (new client id, sequence 1) works.
#[actix_rt::test]
async fn a_write_from_an_expired_session_is_410_and_changes_nothing() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let (l, f) = (cluster.http(leader), cluster.http(follower));
    assert_eq!(
        http(&l, "PUT", "/v1/kv/g", &[], b"before").await.status,
        200
    );

    // Client 9001's write 2 (say, the retry of a write whose answer was lost) reaches a cluster
    // that forgot the client: on the leader, and forwarded from a follower.
    let expired = [("X-Raftor-Client", "9001"), ("X-Raftor-Seq", "2")];
    for node in [&l, &f] {
        let put = http(node, "PUT", "/v1/kv/g", &expired, b"again").await;
        assert_eq!(put.status, 410, "{node}: {}", put.text());
        let error = put.json()["error"].as_str().expect("message").to_owned();
        assert!(error.contains("session expired"), "{error}");
    }
    let delete = http(&f, "DELETE", "/v1/kv/g", &expired, b"").await;
    assert_eq!(delete.status, 410, "{}", delete.text());
    let cas = http(
        &l,
        "POST",
        "/v1/kv/g/cas",
        &expired,
        br#"{"expected": "before", "value": "again"}"#,
    )
    .await;
    assert_eq!(cas.status, 410, "{}", cas.text());
    let get = http(&l, "GET", "/v1/kv/g", &[], b"").await;
    assert_eq!(
        (get.status, get.text().as_str()),
        (200, "before"),
        "nothing was applied"
    );
    // The refusal started no session: the same client's next write is refused as well.
    let later = [("X-Raftor-Client", "9001"), ("X-Raftor-Seq", "3")];
    assert_eq!(
        http(&l, "PUT", "/v1/kv/g", &later, b"later").await.status,
        410
    );

    // A new session starts at 1 and goes on as usual.
    let fresh = |seq: &'static str| [("X-Raftor-Client", "9002"), ("X-Raftor-Seq", seq)];
    let first = http(&l, "PUT", "/v1/kv/g", &fresh("1"), b"new").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = http(&f, "PUT", "/v1/kv/g", &fresh("2"), b"newer").await;
    assert_eq!(second.status, 200, "{}", second.text());
    let get = http(&l, "GET", "/v1/kv/g", &[], b"").await;
    assert_eq!((get.status, get.text().as_str()), (200, "newer"));
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn two_clients_racing_on_cas_one_wins() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    for round in 0..10 {
        let path = format!("/v1/kv/race{round}/cas");
        let (to_leader, to_follower) = (cluster.http(leader), cluster.http(follower));
        let (a, b) = tokio::join!(
            http(
                &to_leader,
                "POST",
                &path,
                &[],
                br#"{"expected": null, "value": "a"}"#
            ),
            http(
                &to_follower,
                "POST",
                &path,
                &[],
                br#"{"expected": null, "value": "b"}"#
            ),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}: exactly one wins");
        let winner = if a.status == 200 { "a" } else { "b" };
        let loser = if a.status == 200 { &b } else { &a };
        assert_eq!(loser.json()["current"], winner);
    }
    cluster.shutdown().await;
}

/// `--http-workers N`: the API served on threads of its own answers as on the node's thread, and
/// stops with the node.
#[actix_rt::test]
async fn the_api_on_worker_threads_serves_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_base_port(1);
    let http_base = common::free_base_port(1);
    let mut config =
        raftor_kv::local_cluster::local_node_config(1, 1, base, Some(http_base), dir.path());
    raftor_kv::local_cluster::quick_timing(&mut config);
    config.http_workers = 2;
    let node = raftor_kv::server::start_node(&config)
        .await
        .expect("starts");
    let addr = node.http_addr.expect("http").to_string();
    let mut put = http(&addr, "PUT", "/v1/kv/k", &[], b"v").await;
    for _ in 0..50 {
        // A single node elects itself within an election timeout.
        if put.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        put = http(&addr, "PUT", "/v1/kv/k", &[], b"v").await;
    }
    assert_eq!(put.status, 200, "{}", put.text());
    let get = http(&addr, "GET", "/v1/kv/k", &[], b"").await;
    assert_eq!((get.status, get.text().as_str()), (200, "v"));
    node.shutdown().await;
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the HTTP port is closed after shutdown"
    );
}

/// On the node's thread (the default) a request runs in the caller's own task, not through the
/// service's mailbox; another thread (the API on worker threads) goes through the mailbox, and
/// both are answered.
#[actix_rt::test]
async fn a_request_on_the_services_thread_runs_in_the_callers_task() {
    use raftor_kv::protocol::{KvRequest, KvResponse, RequestEnvelope};
    use raftor_kv::service::KvService;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_base_port(1);
    let mut config = raftor_kv::local_cluster::local_node_config(1, 1, base, None, dir.path());
    raftor_kv::local_cluster::quick_timing(&mut config);
    let node = raftor_kv::server::start_node(&config)
        .await
        .expect("starts");
    // The service registers with its thread when it starts.
    for _ in 0..50 {
        if KvService::runs_on_this_thread(&node.service) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(KvService::runs_on_this_thread(&node.service));
    let service = node.service.clone();
    let elsewhere = std::thread::spawn(move || KvService::runs_on_this_thread(&service))
        .join()
        .expect("thread");
    assert!(!elsewhere, "another thread must go through the mailbox");
    let put = || RequestEnvelope {
        forwarded_by: None,
        request: KvRequest::Put {
            key: "k".into(),
            value: bytes::Bytes::from_static(b"v"),
            session: None,
        },
    };
    // A single node elects itself within an election timeout (the call waits for a leader).
    let here = KvService::call(&node.service, put()).await;
    assert!(!matches!(here, KvResponse::Error(_)), "{here:?}");
    // From another thread, awaited here without blocking this one (the service runs on it).
    let service = node.service.clone();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let caller = std::thread::spawn(move || {
        let response =
            actix_rt::System::new().block_on(async move { KvService::call(&service, put()).await });
        let _ = answer.send(response);
    });
    let through_mailbox = answered.await.expect("answered");
    caller.join().expect("thread");
    assert!(
        !matches!(through_mailbox, KvResponse::Error(_)),
        "{through_mailbox:?}"
    );
    node.shutdown().await;
}

/// Back-pressure: with room for one write in flight, concurrent writes past it are refused at
/// once with 503, `Retry-After` and "overloaded" (nothing happened, so nothing is unknown), and
/// the native client retries them until each one is applied.
#[actix_rt::test]
async fn writes_past_the_pending_bound_are_refused_with_retry_after_and_the_client_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_base_port(1);
    let http_base = common::free_base_port(1);
    let mut config =
        raftor_kv::local_cluster::local_node_config(1, 1, base, Some(http_base), dir.path());
    raftor_kv::local_cluster::quick_timing(&mut config);
    let value = vec![b'v'; 64 * 1024];
    // Room for one such write at a time (the key adds a few bytes: one is always admitted).
    config.max_pending_write_bytes = value.len();
    let node = raftor_kv::server::start_node(&config)
        .await
        .expect("starts");
    let addr = node.http_addr.expect("http").to_string();
    let mut put = http(&addr, "PUT", "/v1/kv/warm", &[], b"v").await;
    for _ in 0..50 {
        if put.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        put = http(&addr, "PUT", "/v1/kv/warm", &[], b"v").await;
    }
    assert_eq!(put.status, 200, "{}", put.text());

    let replies = futures::future::join_all((0..32).map(|i| {
        let addr = addr.clone();
        let value = value.clone();
        async move {
            (
                i,
                http(&addr, "PUT", &format!("/v1/kv/k{i}"), &[], &value).await,
            )
        }
    }))
    .await;
    let mut refused = 0;
    for (i, reply) in &replies {
        match reply.status {
            200 => {
                let get = http(&addr, "GET", &format!("/v1/kv/k{i}"), &[], b"").await;
                assert_eq!(get.body.len(), value.len(), "k{i} was acknowledged");
            }
            503 => {
                refused += 1;
                assert!(reply.head.contains("retry-after: 1"), "{}", reply.head);
                assert_eq!(reply.json()["overloaded"], true, "{}", reply.text());
                let get = http(&addr, "GET", &format!("/v1/kv/k{i}"), &[], b"").await;
                assert_eq!(get.status, 404, "a refused write did nothing: k{i}");
            }
            other => panic!("k{i}: {other} {}", reply.text()),
        }
    }
    assert!(
        refused > 0,
        "32 concurrent writes with room for one: some are refused"
    );

    // The native client waits and retries an overloaded write: every one is applied (a client
    // per concurrent writer, each with its own session).
    let writes = futures::future::join_all((0..32).map(|i| {
        let client = raftor_kv::Client::new(
            vec![node.raft_addr.to_string()],
            raftor_kv::ClientOptions::default(),
        )
        .expect("client");
        let value = bytes::Bytes::from(value.clone());
        async move { client.put(&format!("c{i}"), value).await }
    }))
    .await;
    for (i, write) in writes.iter().enumerate() {
        assert!(write.is_ok(), "c{i}: {write:?}");
    }
    node.shutdown().await;
}

/// A follower serves linearizable and lease reads itself (`service/follower_read.rs`): it asks the
/// leader only for a read index and reads its own state machine once it has applied as far. Each
/// read, over HTTP (a range of one key, and a page) and over the native protocol (a GET), comes
/// right after a write the leader acknowledged, so a follower that read before applying as far
/// would answer the value before it.
#[actix_rt::test]
async fn a_follower_serves_reads_that_see_every_write_acknowledged_before_them() {
    use raftor_kv::client::{Client, ClientOptions};
    use raftor_kv::protocol::Consistency;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let (l, f) = (cluster.http(leader), cluster.http(follower));
    let native_follower = cluster.endpoints()[follower.0 as usize - 1].clone();
    let client = Client::new(vec![native_follower], ClientOptions::default()).expect("client");
    for i in 0..150u32 {
        let value = i.to_string();
        let put = http(&l, "PUT", "/v1/kv/seq", &[], value.as_bytes()).await;
        assert_eq!(put.status, 200, "{}", put.text());
        let read = match i % 3 {
            0 => http(&f, "GET", "/v1/kv/seq", &[], b"").await.text(),
            1 => {
                let page = http(&f, "GET", "/v1/kv?prefix=se&consistency=lease", &[], b"").await;
                page.json()["kvs"][0]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }
            _ => {
                let got = client
                    .get("seq", Consistency::Linearizable)
                    .await
                    .expect("a native GET through the follower");
                String::from_utf8_lossy(&got.unwrap_or_default()).into_owned()
            }
        };
        assert_eq!(read, value, "read {i} through the follower");
    }
    cluster.shutdown().await;
}
