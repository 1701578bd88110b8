//! Membership changes and leadership transfer with real nodes: loopback TCP, RocksDB under a
//! temporary directory, wall-clock time; through the embedding API, HTTP, the native protocol,
//! the CLI and `raftor serve --join`. Every wait is a bounded polling loop: nothing asserts speed.

#[path = "../../kv/tests/common/mod.rs"]
mod common;

use common::{free_base_port, http, Reply};
use raftor::{Error, NodeId, Role};
use raftor_kv::local_cluster::{local_node_config, quick_timing};
use raftor_kv::protocol::Consistency;
use raftor_kv::server::{start_node, RunningNode};
use raftor_kv::store::{KvAnswer, KvQuery};
use raftor_kv::{Client, ClientOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The tests run one at a time: each starts several nodes, on a machine with few cores. (A tokio
/// mutex: the guard is held across awaits, and each test has a runtime of its own.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for `check` to hold, looking every 100 ms, for at most `tries` looks.
async fn wait_until<F, Fut>(what: &str, tries: u32, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting: {what}");
}

/// Nodes with ids up to `max_id` on ports base+id (Raft) and http_base+id (HTTP); the first
/// `founders` found the cluster, the others join it.
struct Nodes {
    dir: tempfile::TempDir,
    base: u16,
    http_base: u16,
    founders: u64,
    running: BTreeMap<u64, RunningNode>,
}

impl Nodes {
    async fn found(founders: u64, max_id: u64) -> Nodes {
        let mut nodes = Nodes {
            dir: tempfile::tempdir().expect("tempdir"),
            base: free_base_port(max_id as u16),
            http_base: free_base_port(max_id as u16),
            founders,
            running: BTreeMap::new(),
        };
        for id in 1..=founders {
            nodes.start(id).await;
        }
        nodes.leader().await;
        nodes
    }

    fn config(&self, id: u64) -> raftor_kv::config::NodeConfig {
        let mut config = local_node_config(
            id,
            self.founders,
            self.base,
            Some(self.http_base),
            self.dir.path(),
        );
        quick_timing(&mut config);
        if id > self.founders {
            // Joins: no configuration; it knows where the founders are, and waits to be added.
            config.join = Some(raftor_kv::config::JoinConfig {
                url: None,
                advertise: self.raft_addr(id),
                members: std::mem::take(&mut config.peers),
            });
        }
        config
    }

    /// Start node `id` (again), retrying while a previous incarnation's RocksDB lock is released.
    async fn start(&mut self, id: u64) {
        let config = self.config(id);
        for _ in 0..50 {
            match start_node(&config).await {
                Ok(node) => {
                    self.running.insert(id, node);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("node {id} did not start");
    }

    async fn stop(&mut self, id: u64) {
        let node = self.running.remove(&id).expect("running");
        node.shutdown().await;
    }

    fn node(&self, id: u64) -> &RunningNode {
        &self.running[&id]
    }

    fn raft_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.base + id as u16)
    }

    fn http_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.http_base + id as u16)
    }

    fn endpoints(&self) -> Vec<String> {
        self.running.keys().map(|id| self.raft_addr(*id)).collect()
    }

    /// The leader of the highest term among the running nodes, once there is one.
    async fn leader(&self) -> u64 {
        for _ in 0..300 {
            let mut best: Option<(u64, u64)> = None;
            for (id, node) in &self.running {
                if let Ok(status) = node.handle.status().await {
                    if status.role == Role::Leader && best.is_none_or(|(_, t)| status.term.0 > t) {
                        best = Some((*id, status.term.0));
                    }
                }
            }
            if let Some((id, _)) = best {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader within 30 s");
    }

    async fn members(&self, id: u64) -> Value {
        let reply = http(&self.http_addr(id), "GET", "/v1/members", &[], b"").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// Wait until node `id` reports exactly `voters` as voters, outside a joint configuration.
    async fn wait_voters(&self, id: u64, voters: &[u64]) {
        let expected = json!(voters);
        for _ in 0..300 {
            let members = self.members(id).await;
            if members["voters"] == expected && members["joint"] == false {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "gave up waiting: node {id} sees voters {voters:?}; the nodes now:\n{}",
            self.dump().await
        );
    }

    /// Every running node's status, for a failure's message.
    async fn dump(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.running {
            out.push_str(&format!("node {id}: {:?}\n", node.handle.status().await));
        }
        out
    }

    /// Wait until every running node has applied what the leader has committed now.
    async fn wait_applied_everywhere(&self) {
        let leader = self.leader().await;
        let commit = self
            .node(leader)
            .handle
            .status()
            .await
            .expect("status")
            .commit_index;
        for (id, node) in &self.running {
            wait_until(&format!("node {id} applies {commit}"), 300, || async {
                node.handle
                    .status()
                    .await
                    .is_ok_and(|status| status.applied_index >= commit)
            })
            .await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.running.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

async fn local_value(node: &RunningNode, key: &str) -> Option<Vec<u8>> {
    let query = KvQuery::Get {
        key: key.to_string(),
    };
    match node.handle.read(query, Consistency::Local).await {
        Ok(KvAnswer::Value(value)) => value.map(|v| v.to_vec()),
        other => panic!("local read of {key} on {}: {other:?}", node.handle.id()),
    }
}

async fn key_count(node: &RunningNode) -> u64 {
    match node.handle.read(KvQuery::Len, Consistency::Local).await {
        Ok(KvAnswer::Len(count)) => count,
        other => panic!("key count on {}: {other:?}", node.handle.id()),
    }
}

/// Retries a membership change the cluster cannot take right now (another change still running,
/// a leader just elected, leadership moving), on whichever node leads.
async fn change_on_leader<F, Fut>(nodes: &Nodes, what: &str, change: F) -> raftor::Membership
where
    F: Fn(raftor::RaftNode<raftor_kv::store::KvStateMachine>) -> Fut,
    Fut: Future<Output = Result<raftor::Membership, Error>>,
{
    for _ in 0..100 {
        let leader = nodes.leader().await;
        match change(nodes.node(leader).handle.clone()).await {
            Ok(membership) => return membership,
            Err(
                Error::MembershipChangeInProgress { .. }
                | Error::NotReady
                | Error::NotLeader { .. }
                | Error::Transferring { .. },
            ) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("{what}: {error}"),
        }
    }
    panic!("{what}: the cluster never took the change");
}

/// POST/DELETE a membership request over HTTP, retrying while another change runs (409).
async fn http_change(addr: &str, method: &str, path: &str, body: &[u8]) -> Reply {
    for _ in 0..100 {
        let reply = http(addr, method, path, &[], body).await;
        if reply.status != 409 && reply.status != 503 {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{method} {path}: still refused after 100 tries");
}

/// One writer's acknowledged writes: `w{writer}-{i}` = `i` for each, and the register
/// `reg-{writer}` = the last `i`; `unknown` holds a write whose outcome is unknown (the writer
/// stopped there).
struct Written {
    writer: u32,
    acked: Vec<u64>,
    unknown: Option<u64>,
}

/// Start `count` concurrent writers; they write until `stop` is set.
fn start_writers(
    endpoints: Vec<String>,
    count: u32,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Written>> {
    (0..count)
        .map(|writer| {
            let client = Client::new(endpoints.clone(), ClientOptions::default()).expect("client");
            let stop = stop.clone();
            actix_rt::spawn(async move {
                let mut written = Written {
                    writer,
                    acked: Vec::new(),
                    unknown: None,
                };
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let ok = client
                        .put(&format!("w{writer}-{i}"), i.to_string())
                        .await
                        .is_ok()
                        && client
                            .put(&format!("reg-{writer}"), i.to_string())
                            .await
                            .is_ok();
                    if !ok {
                        written.unknown = Some(i);
                        break;
                    }
                    written.acked.push(i);
                }
                written
            })
        })
        .collect()
}

/// Every acknowledged write is on every running node, with its value; no write shows twice
/// (a register never went back to an older value), and every node holds the same keys.
async fn check_writes(nodes: &Nodes, written: &[Written]) {
    nodes.wait_applied_everywhere().await;
    let mut counts = BTreeSet::new();
    for (id, node) in &nodes.running {
        for w in written {
            for i in &w.acked {
                assert_eq!(
                    local_value(node, &format!("w{}-{i}", w.writer)).await,
                    Some(i.to_string().into_bytes()),
                    "node {id} lost write {i} of writer {}",
                    w.writer
                );
            }
            let register = local_value(node, &format!("reg-{}", w.writer))
                .await
                .map(|v| String::from_utf8(v).expect("utf-8"));
            let last = w.acked.last().map(|i| i.to_string());
            let allowed = [last, w.unknown.map(|i| i.to_string())];
            assert!(
                allowed.contains(&register),
                "node {id}: register of writer {} is {register:?}, expected one of {allowed:?}",
                w.writer
            );
        }
        counts.insert(key_count(node).await);
    }
    assert_eq!(
        counts.len(),
        1,
        "nodes hold different numbers of keys: {counts:?}"
    );
}

#[actix_rt::test]
async fn grow_from_three_to_five_under_write_load() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::found(3, 5).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(nodes.endpoints(), 4, stop.clone());

    // Node 4 joins through a follower's HTTP API (forwarded to the leader), promoted once caught
    // up by the leader itself.
    nodes.start(4).await;
    let leader = nodes.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let body = json!({ "id": 4, "raft_address": nodes.raft_addr(4), "promote": true });
    let reply = http_change(
        &nodes.http_addr(follower),
        "POST",
        "/v1/members",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let added = reply.json();
    assert!(
        added["learners"]
            .as_array()
            .expect("learners")
            .contains(&json!(4))
            || added["voters"]
                .as_array()
                .expect("voters")
                .contains(&json!(4)),
        "{added}"
    );
    assert_eq!(added["addresses"]["4"], json!(nodes.raft_addr(4)));
    let leader = nodes.leader().await;
    nodes.wait_voters(leader, &[1, 2, 3, 4]).await;

    // Node 5 through the embedding API: a learner, promoted by hand once it has caught up.
    nodes.start(5).await;
    let address = nodes.raft_addr(5);
    let membership = change_on_leader(&nodes, "add learner 5", |leader| {
        let address = address.clone();
        async move { leader.add_learner(NodeId(5), address).await }
    })
    .await;
    assert!(
        membership.conf.learners.contains(&NodeId(5)),
        "{membership:?}"
    );
    let leader = nodes.leader().await;
    let target = nodes
        .node(leader)
        .handle
        .status()
        .await
        .expect("status")
        .commit_index;
    let five = nodes.node(5);
    wait_until("node 5 catches up", 300, || async {
        five.handle
            .status()
            .await
            .is_ok_and(|status| status.applied_index >= target)
    })
    .await;
    let reply = http_change(&nodes.http_addr(5), "POST", "/v1/members/5/promote", b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for id in 1..=5 {
        nodes.wait_voters(id, &[1, 2, 3, 4, 5]).await;
    }

    // The writers go on a while in the five-node cluster, then stop.
    let leader = nodes.leader().await;
    let before = nodes.node(leader).handle.status().await.expect("status");
    wait_until("writes go on with five voters", 300, || async {
        nodes
            .node(leader)
            .handle
            .status()
            .await
            .is_ok_and(|now| now.commit_index.0 >= before.commit_index.0 + 100)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.expect("writer"));
    }
    assert!(
        written.iter().all(|w| !w.acked.is_empty()),
        "every writer got writes through"
    );
    check_writes(&nodes, &written).await;

    // Status and metrics show the new membership.
    let status = http(&nodes.http_addr(4), "GET", "/v1/status", &[], b"")
        .await
        .json();
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 5, "{status}");
    assert!(members.iter().all(|m| m["role"] == "voter"), "{status}");
    assert!(status["membership_index"].as_u64().expect("index") > 0);
    let metrics = http(&nodes.http_addr(5), "GET", "/metrics", &[], b"")
        .await
        .text();
    let voters_line = metrics
        .lines()
        .find(|line| line.starts_with("raftor_members{") && line.contains("role=\"voter\""))
        .unwrap_or_else(|| panic!("no raftor_members voter line in {metrics}"));
    assert!(voters_line.ends_with(" 5"), "{voters_line}");
    nodes.shutdown().await;
}

#[actix_rt::test]
async fn shrink_from_five_to_three_removing_the_leader() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::found(5, 5).await;
    let client = Client::new(nodes.endpoints(), ClientOptions::default()).expect("client");
    for i in 0..20 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }

    // A follower goes first, over HTTP (sent to another follower, forwarded to the leader).
    let leader = nodes.leader().await;
    let mut followers = (1..=5).filter(|id| *id != leader);
    let removed = followers.next().expect("a follower");
    let asked = followers.next().expect("another follower");
    let reply = http_change(
        &nodes.http_addr(asked),
        "DELETE",
        &format!("/v1/members/{removed}"),
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        !reply.json()["voters"]
            .as_array()
            .expect("voters")
            .contains(&json!(removed)),
        "{}",
        reply.text()
    );
    nodes.stop(removed).await;

    // Then the leader removes itself: it steps down, and the three others elect a new leader.
    let membership = match nodes.node(leader).handle.remove(NodeId(leader)).await {
        Ok(membership) => membership,
        Err(error) => panic!(
            "the leader removes itself: {error}; the nodes now:\n{}",
            nodes.dump().await
        ),
    };
    assert!(!membership.conf.contains(NodeId(leader)), "{membership:?}");
    let remaining: Vec<u64> = (1..=5)
        .filter(|id| *id != leader && *id != removed)
        .collect();
    let new_leader = {
        let mut found = None;
        for _ in 0..300 {
            let mut leaders = Vec::new();
            for id in &remaining {
                if let Ok(status) = nodes.node(*id).handle.status().await {
                    if status.role == Role::Leader {
                        leaders.push(*id);
                    }
                }
            }
            if let Some(id) = leaders.first() {
                found = Some(*id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("one of the remaining three leads")
    };
    nodes.stop(leader).await;
    for id in &remaining {
        nodes.wait_voters(*id, &remaining).await;
    }

    // Writes go on in the three-node cluster.
    let client = Client::new(nodes.endpoints(), ClientOptions::default()).expect("client");
    for i in 20..40 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    nodes.wait_applied_everywhere().await;
    for id in &remaining {
        for i in 0..40 {
            assert_eq!(
                local_value(nodes.node(*id), &format!("k{i}")).await,
                Some(format!("v{i}").into_bytes()),
                "node {id} key k{i}"
            );
        }
    }
    let members = nodes.members(new_leader).await;
    assert_eq!(members["leader"]["id"], json!(nodes.leader().await));
    nodes.shutdown().await;
}

fn raftor_cli(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_raftor"))
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        raftor_cli(&args)
    })
    .await
    .expect("cli task")
}

fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[actix_rt::test]
async fn replace_a_dead_node() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::found(3, 4).await;
    let client = Client::new(nodes.endpoints(), ClientOptions::default()).expect("client");
    for i in 0..30 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    // Node 3 dies (a follower, so the cluster keeps its leader; either would do).
    let leader = nodes.leader().await;
    let dead = (1..=3).rev().find(|id| *id != leader).expect("a follower");
    nodes.stop(dead).await;
    let alive: Vec<u64> = (1..=3).filter(|id| *id != dead).collect();

    // Node 4 replaces it: added over the native protocol, promoted once caught up.
    nodes.start(4).await;
    let admin =
        Client::new(vec![nodes.raft_addr(alive[0])], ClientOptions::default()).expect("client");
    let report = admin
        .add_member(4, &nodes.raft_addr(4), true)
        .await
        .expect("add node 4");
    assert!(
        report.learners.contains(&4) || report.voters.contains(&4),
        "{report:?}"
    );
    // Asking again changes nothing (a retry is safe).
    let again = admin
        .add_member(4, &nodes.raft_addr(4), true)
        .await
        .expect("add node 4 again");
    assert!(
        again.learners.contains(&4) || again.voters.contains(&4),
        "{again:?}"
    );
    let leader = nodes.leader().await;
    nodes.wait_voters(leader, &[1, 2, 3, 4]).await;

    // The dead node is removed with the CLI.
    let endpoint = nodes.raft_addr(alive[1]);
    let (code, out, err) = cli(args(&[
        "members",
        "remove",
        &dead.to_string(),
        "--endpoint",
        &endpoint,
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("node {dead} removed")), "{out}");
    let mut expected: Vec<u64> = alive.clone();
    expected.push(4);
    for id in &expected {
        nodes.wait_voters(*id, &expected).await;
    }
    let (code, out, err) = cli(args(&[
        "members",
        "list",
        "--endpoint",
        &endpoint,
        "--json",
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["voters"], json!(expected), "{listed}");
    assert!(
        listed["addresses"].get(dead.to_string()).is_none(),
        "{listed}"
    );

    for i in 30..40 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    nodes.wait_applied_everywhere().await;
    for i in 0..40 {
        assert_eq!(
            local_value(nodes.node(4), &format!("k{i}")).await,
            Some(format!("v{i}").into_bytes())
        );
    }
    nodes.shutdown().await;
}

#[actix_rt::test]
async fn transfer_leadership_to_a_lagging_follower_over_http_and_the_cli() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::found(3, 3).await;
    let client = Client::new(nodes.endpoints(), ClientOptions::default()).expect("client");
    let leader = nodes.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3)
        .find(|id| *id != leader && *id != lagging)
        .expect("the other");

    // The follower misses 300 writes while down, and is asked to lead as soon as it is back.
    nodes.stop(lagging).await;
    for i in 0..300 {
        client
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    nodes.start(lagging).await;
    let body = json!({ "to": lagging }).to_string();
    let mut moved = None;
    for _ in 0..20 {
        // Sent to the other follower: forwarded to the leader, answered once `lagging` leads.
        let reply = http(
            &nodes.http_addr(other),
            "POST",
            "/v1/leader/transfer",
            &[],
            body.as_bytes(),
        )
        .await;
        match reply.status {
            200 => {
                moved = Some(reply.json());
                break;
            }
            // Abandoned (it could not catch up within the time allowed): ask again.
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            status => panic!("transfer: {status} {}", reply.text()),
        }
    }
    let moved = moved.expect("the transfer succeeds");
    assert_eq!(moved["leader"], json!(lagging), "{moved}");
    assert_eq!(nodes.leader().await, lagging);
    for i in (0..300).step_by(37) {
        assert_eq!(
            local_value(nodes.node(lagging), &format!("k{i}")).await,
            Some(format!("v{i}").into_bytes())
        );
    }

    // And back with the CLI, asking the new leader itself.
    let (code, out, err) = cli(args(&[
        "transfer-leader",
        &leader.to_string(),
        "--endpoint",
        &nodes.raft_addr(lagging),
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("node {leader} leads")), "{out}");
    assert_eq!(nodes.leader().await, leader);
    client.put("after", "transfer").await.expect("writes go on");
    nodes.shutdown().await;
}

#[actix_rt::test]
async fn bad_membership_requests_are_refused_with_clear_errors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nodes = Nodes::found(3, 3).await;
    let leader = nodes.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let on = nodes.http_addr(follower);

    // A node that is not a member cannot be promoted or removed: 404.
    for (method, path) in [
        ("POST", "/v1/members/9/promote"),
        ("DELETE", "/v1/members/9"),
    ] {
        let reply = http(&on, method, path, &[], b"").await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
        let error = reply.json()["error"].as_str().expect("error").to_owned();
        assert!(error.contains("not a member"), "{error}");
    }
    // Malformed requests: 400.
    for body in [
        "nonsense".to_string(),
        json!({ "id": 0, "raft_address": "127.0.0.1:1" }).to_string(),
        json!({ "id": 9, "raft_address": "no-port" }).to_string(),
        json!({ "id": 9 }).to_string(),
    ] {
        let reply = http(&on, "POST", "/v1/members", &[], body.as_bytes()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
    }
    let reply = http(&on, "GET", "/v1/members/x/promote", &[], b"").await;
    assert_eq!(reply.status, 405, "{}", reply.text());
    // An existing voter is not demoted by adding it again.
    let body = json!({ "id": leader, "raft_address": nodes.raft_addr(leader) }).to_string();
    let reply = http(&on, "POST", "/v1/members", &[], body.as_bytes()).await;
    assert_eq!(reply.status, 400, "{}", reply.text());

    // Leadership goes only to a voter: not to a stranger, nor to a learner.
    let reply = http(&on, "POST", "/v1/leader/transfer", &[], br#"{"to": 9}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("not a voter"), "{}", reply.text());
    let body = json!({ "id": 7, "raft_address": "127.0.0.1:1" }).to_string();
    let reply = http_change(&on, "POST", "/v1/members", body.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = http(&on, "POST", "/v1/leader/transfer", &[], br#"{"to": 7}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reply = http_change(&on, "DELETE", "/v1/members/7", b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // One change at a time: two sent together, the second finds the first unfinished (409).
    // Whether they overlap is up to the scheduler, so try a few pairs.
    let mut conflict = None;
    for round in 0..30u64 {
        let (a, b) = (100 + 2 * round, 101 + 2 * round);
        let body_a = json!({ "id": a, "raft_address": "127.0.0.1:1" }).to_string();
        let body_b = json!({ "id": b, "raft_address": "127.0.0.1:1" }).to_string();
        let leader_http = nodes.http_addr(nodes.leader().await);
        let (first, second) = futures::join!(
            http(&leader_http, "POST", "/v1/members", &[], body_a.as_bytes()),
            http(&leader_http, "POST", "/v1/members", &[], body_b.as_bytes())
        );
        for (id, reply) in [(a, &first), (b, &second)] {
            match reply.status {
                200 => {
                    let reply = http_change(&on, "DELETE", &format!("/v1/members/{id}"), b"").await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
                409 => conflict = Some(reply.json()),
                status => panic!("adding {id}: {status} {}", reply.text()),
            }
        }
        if conflict.is_some() {
            break;
        }
    }
    let conflict = conflict.expect("two changes at once: one is refused with 409");
    assert!(
        conflict["error"]
            .as_str()
            .expect("error")
            .contains("in progress"),
        "{conflict}"
    );

    // The CLI reports a node that is not a member with exit code 3.
    let (code, _, err) = cli(args(&[
        "members",
        "promote",
        "9",
        "--endpoint",
        &nodes.raft_addr(follower),
    ]))
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not a member"), "{err}");
    nodes.shutdown().await;
}

/// A `raftor serve` child process, killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `raftor serve --join` and collect its log lines.
fn serve_join(args: &[String]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_raftor"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = sender.send(line);
        }
    });
    (Child(child), receiver)
}

/// Waits (bounded) for a log line containing `text`; returns every line seen.
async fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..300 {
        while let Ok(line) = lines.try_recv() {
            let found = line.contains(text);
            seen.push(line);
            if found {
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no log line with {text:?}; saw {seen:#?}");
}

#[actix_rt::test]
async fn serve_join_adds_the_node_and_a_restart_does_not_join_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nodes = Nodes::found(3, 4).await;
    let data: PathBuf = nodes.dir.path().join("node-4");
    let serve_args: Vec<String> = args(&[
        "--id",
        "4",
        "--listen",
        &nodes.raft_addr(4),
        "--http",
        &nodes.http_addr(4),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--cluster-id",
        "raftor-local",
        "--join",
        &format!("http://{}", nodes.http_addr(1)),
    ]);
    let (child, lines) = serve_join(&serve_args);
    wait_for_line(&lines, "joined the cluster").await;
    let leader = nodes.leader().await;
    nodes.wait_voters(leader, &[1, 2, 3, 4]).await;
    let client = Client::new(nodes.endpoints(), ClientOptions::default()).expect("client");
    client.put("joined", "yes").await.expect("put");
    wait_until("node 4 applies the write", 300, || async {
        let reply = http(
            &nodes.http_addr(4),
            "GET",
            "/v1/kv/joined?consistency=local",
            &[],
            b"",
        )
        .await;
        reply.status == 200 && reply.body == b"yes"
    })
    .await;
    let index = nodes.members(leader).await["membership_index"].clone();
    drop(child);

    // Restarted on its data directory, with the same flags: it is a member already.
    let (child, lines) = serve_join(&serve_args);
    let seen = wait_for_line(&lines, "already a member").await;
    assert!(
        !seen.iter().any(|line| line.contains("asking the cluster")),
        "{seen:#?}"
    );
    wait_until("node 4 serves again", 300, || async {
        let reply = http(&nodes.http_addr(4), "GET", "/v1/members", &[], b"").await;
        reply.status == 200 && reply.json()["voters"] == json!([1, 2, 3, 4])
    })
    .await;
    let leader = nodes.leader().await;
    assert_eq!(
        nodes.members(leader).await["membership_index"],
        index,
        "no new configuration"
    );
    drop(child);

    // Its data directory lost, started again with the same flags: the cluster lists it as a
    // voter, so it lost the votes it gave; it does not start (before, it was "added" again and
    // voted as if it never had).
    std::fs::remove_dir_all(&data).expect("data directory removed");
    let (mut child, lines) = serve_join(&serve_args);
    let status = wait_until_exit(&mut child).await;
    assert!(!status.success(), "{status:?}");
    let seen = wait_for_line(
        &lines,
        "node 4 is a voter of the cluster, but its data directory",
    )
    .await;
    assert!(
        !seen.iter().any(|line| line.contains("asking the cluster")),
        "{seen:#?}"
    );
    nodes.shutdown().await;
}

/// Waits (bounded) for `child` to exit by itself.
async fn wait_until_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not stop by itself");
}
