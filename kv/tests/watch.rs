//! Watch on a real 3-node cluster over TCP: every change of the watched keys in log order,
//! exactly once, across a leader kill and node restarts, checked against the acknowledged writes
//! and the cluster's own history; Server-Sent Events with resumption by `Last-Event-ID`;
//! progress notifications; a compacted start refused with 410; a watcher that never reads cut off
//! with its buffer freed.

mod common;

use common::{http, Cluster};
use raftor_kv::store::{Event, EventKind, KeySet, KvOutcome};
use raftor_kv::{Client, ClientOptions};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

/// A write the cluster acknowledged: its index, key and value (`None`: a delete).
type Acked = (u64, String, Option<String>);

/// Watch `keys` from index 1 until a batch covers `until` (read from the cell once set).
async fn collect(client: Client, until: Rc<RefCell<Option<u64>>>) -> Vec<Event> {
    let mut watch = client
        .watch(KeySet::Prefix("w/".into()), Some(1))
        .with_progress_every(Duration::from_millis(300));
    let mut events = Vec::new();
    loop {
        let batch = watch.next().await.expect("the watch goes on");
        events.extend(batch.events);
        if until.borrow().is_some_and(|until| batch.through >= until) {
            return events;
        }
    }
}

fn check_exactly_once_in_order(events: &[Event], acked: &[Acked], name: &str) {
    let mut seen = BTreeSet::new();
    for pair in events.windows(2) {
        assert!(pair[0].index() <= pair[1].index(), "{name}: out of order");
    }
    for event in events {
        assert!(
            seen.insert((event.index(), event.kv.key.clone())),
            "{name}: delivered twice: {event:?}"
        );
    }
    for (index, key, value) in acked {
        let event = events
            .iter()
            .find(|e| e.index() == *index && &e.kv.key == key)
            .unwrap_or_else(|| panic!("{name}: the write of {key} at {index} was not delivered"));
        match value {
            Some(value) => {
                assert_eq!(event.kind, EventKind::Put);
                assert_eq!(event.kv.value.as_deref(), Some(value.as_bytes()));
            }
            None => assert_eq!(event.kind, EventKind::Delete),
        }
    }
}

#[actix_rt::test]
async fn a_watch_delivers_every_change_once_across_a_leader_kill_and_node_restarts() {
    let mut cluster = Cluster::start(3).await;
    let endpoints = cluster.endpoints();
    let writer = Client::new(endpoints.clone(), ClientOptions::default()).expect("client");
    // Watcher A talks to one follower only: it waits through that node's restart and resumes
    // there. Watcher B follows whichever node answers.
    let watched = cluster.follower().await;
    let only_watched = vec![endpoints[watched.0 as usize - 1].clone()];
    let until = Rc::new(RefCell::new(None));
    let a = actix_rt::spawn(collect(
        Client::new(only_watched, ClientOptions::default()).expect("client"),
        until.clone(),
    ));
    let b = actix_rt::spawn(collect(
        Client::new(endpoints.clone(), ClientOptions::default()).expect("client"),
        until.clone(),
    ));

    let mut acked: Vec<Acked> = Vec::new();
    for i in 0..300u64 {
        let key = format!("w/{}", i % 7);
        // The leader is killed and restarted, then the watched node.
        let down = match i {
            100 => Some(cluster.leader().await),
            200 => Some(watched),
            _ => None,
        };
        if let Some(node) = down {
            cluster.stop(node).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.start_again(node).await;
        }
        if i % 25 == 24 {
            let written = writer.delete(&key).await.expect("delete");
            // A delete of an absent key changes nothing and is no event.
            if written.outcome == (KvOutcome::Deleted { existed: true }) {
                acked.push((written.index, key, None));
            }
        } else {
            let value = format!("v{i}");
            let written = writer.put(&key, value.clone()).await.expect("put");
            acked.push((written.index, key, Some(value)));
        }
        // Other keys' changes must not show.
        writer
            .put(&format!("x/{i}"), "unwatched")
            .await
            .expect("put");
    }
    let last = acked
        .iter()
        .map(|(index, ..)| *index)
        .max()
        .expect("writes");
    *until.borrow_mut() = Some(last);
    let a = tokio::time::timeout(Duration::from_secs(60), a)
        .await
        .expect("watcher A caught up")
        .expect("watcher A");
    let b = tokio::time::timeout(Duration::from_secs(60), b)
        .await
        .expect("watcher B caught up")
        .expect("watcher B");
    check_exactly_once_in_order(&a, &acked, "watcher A");
    check_exactly_once_in_order(&b, &acked, "watcher B");
    assert!(a.iter().chain(&b).all(|e| e.kv.key.starts_with("w/")));
    // Both saw exactly what the cluster's history holds, replayed afresh from index 1.
    let history = collect(
        Client::new(endpoints, ClientOptions::default()).expect("client"),
        Rc::new(RefCell::new(Some(last))),
    )
    .await;
    let upto = |events: &[Event]| -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.index() <= last)
            .cloned()
            .collect()
    };
    assert_eq!(upto(&a), upto(&history), "watcher A against the history");
    assert_eq!(upto(&b), upto(&history), "watcher B against the history");
    cluster.shutdown().await;
}

/// An open Server-Sent Events stream.
struct Sse {
    reader: BufReader<TcpStream>,
}

/// One SSE event: its name, id and data.
#[derive(Debug, Clone)]
struct SseEvent {
    name: String,
    id: Option<u64>,
    data: serde_json::Value,
}

impl Sse {
    fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Sse) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
        }
        (status, Sse { reader })
    }

    /// The next event (chunked framing lines are skipped: they are hex sizes or empty).
    fn next(&mut self) -> SseEvent {
        let (mut name, mut id, mut data) = (None, None, None);
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read");
            assert!(read > 0, "the stream ended");
            let line = line.trim_end();
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse().ok();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(value).expect("JSON data"));
            } else if line.is_empty() {
                if let (Some(name), Some(data)) = (name.take(), data.take()) {
                    return SseEvent {
                        name,
                        id: id.take(),
                        data,
                    };
                }
            }
        }
    }
}

#[actix_rt::test]
async fn server_sent_events_resume_after_the_last_event_id_and_report_progress() {
    let cluster = Cluster::start(3).await;
    let node = cluster.http(cluster.follower().await);
    for i in 0..10 {
        let put = http(
            &node,
            "PUT",
            &format!("/v1/kv/s/{i}"),
            &[],
            format!("{i}").as_bytes(),
        )
        .await;
        assert_eq!(put.status, 200);
    }
    // A transaction writing two watched keys at one index: one id, on the entry's last event.
    let txn = br#"{"success": [{"put": {"key": "s/a", "value": "x"}}, {"put": {"key": "s/b", "value": "y"}}]}"#;
    let together = http(&node, "POST", "/v1/txn", &[], txn).await.json();
    let node_for_thread = node.clone();
    let (first, resumed, progress) = tokio::task::spawn_blocking(move || {
        let (status, mut sse) = Sse::open(&node_for_thread, "/v1/watch?prefix=s/&from=1", &[]);
        assert_eq!(status, 200);
        let created = sse.next();
        assert_eq!((created.name.as_str(), created.id), ("created", Some(0)));
        let first: Vec<SseEvent> = (0..6).map(|_| sse.next()).collect();
        drop(sse);
        let last_id = first
            .iter()
            .filter_map(|e| e.id)
            .max()
            .expect("ids")
            .to_string();
        // As a browser reconnects: the same URL (its `from` included) and the last id seen.
        let (_, mut again) = Sse::open(
            &node_for_thread,
            "/v1/watch?prefix=s/&from=1&progress_ms=200",
            &[("Last-Event-ID", &last_id)],
        );
        again.next(); // created
        let resumed: Vec<SseEvent> = (0..6).map(|_| again.next()).collect();
        let progress = again.next();
        (first, resumed, progress)
    })
    .await
    .expect("reader");
    let indexes = |events: &[SseEvent]| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.data["index"].as_u64().expect("index"))
            .collect()
    };
    let (before, after) = (indexes(&first), indexes(&resumed));
    assert!(before.windows(2).all(|w| w[0] < w[1]));
    assert!(
        before.last() < after.first(),
        "resumed after the last id, nothing repeated: {before:?} then {after:?}"
    );
    assert_eq!(after.len(), 6);
    let pair: Vec<&SseEvent> = resumed
        .iter()
        .filter(|e| e.data["index"] == together["index"])
        .collect();
    assert_eq!(pair.len(), 2, "both keys of the transaction");
    assert_eq!((pair[0].id, pair[1].id), (None, together["index"].as_u64()));
    assert_eq!(progress.name, "progress");
    assert!(progress.data["index"].as_u64() >= together["index"].as_u64());
    assert_eq!(progress.id, progress.data["index"].as_u64());
    cluster.shutdown().await;
}

async fn watchers(node: &str) -> u64 {
    http(node, "GET", "/v1/status", &[], b"").await.json()["watchers"]
        .as_u64()
        .expect("watchers")
}

#[actix_rt::test]
async fn a_compacted_start_is_410_and_a_watcher_that_never_reads_is_cut_off() {
    let cluster = Cluster::start(3).await;
    let node = cluster.http(cluster.leader().await);
    let bad = http(&node, "GET", "/v1/watch?prefix=a&progress_ms=5", &[], b"").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let bad = http(&node, "GET", "/v1/watch?start=b&end=a", &[], b"").await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    // A watcher that reads nothing, of the keys about to change.
    let node_for_thread = node.clone();
    let stalled = std::thread::spawn(move || {
        let (status, sse) = Sse::open(&node_for_thread, "/v1/watch?prefix=big/", &[]);
        assert_eq!(status, 200);
        // Hold the connection without reading.
        std::thread::sleep(Duration::from_secs(40));
        drop(sse);
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watchers(&node).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 80 MiB of values: more than the history keeps (64 MiB), and more than a watcher may have
    // waiting (8 MiB) plus what the sockets buffer.
    let value = vec![b'v'; 1024 * 1024 - 64];
    for i in 0..80 {
        let put = http(&node, "PUT", &format!("/v1/kv/big/{}", i % 4), &[], &value).await;
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while watchers(&node).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher that never read was cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = http(&node, "GET", "/v1/watch?prefix=big/&from=1", &[], b"").await;
    assert_eq!(gone.status, 410, "{}", gone.text());
    let body = gone.json();
    assert_eq!(body["reason"], "compacted");
    assert!(body["compacted_through"].as_u64() > Some(1));
    // The native client gets the same answer as an error it can act on.
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let mut watch = client.watch(KeySet::Prefix("big/".into()), Some(1));
    let compacted = watch.next().await;
    assert!(
        matches!(compacted, Err(raftor_kv::ClientError::Compacted { .. })),
        "{compacted:?}"
    );
    drop(stalled);
    cluster.shutdown().await;
}

/// A watch from the next change whose first batch is larger than the room a poll reserves (a
/// value of 200 KiB): the poll answers that nothing changed before it, and the next poll, which
/// starts there, delivers it (a poll from "now" cannot be run again once dropped for want of
/// room, since it would start later; one that names its start can).
#[actix_rt::test]
async fn a_watch_from_now_gets_a_change_larger_than_a_polls_room() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let mut watch = client
        .watch(KeySet::Prefix("big/".into()), None)
        .with_progress_every(Duration::from_secs(2));
    let writer = client.clone();
    let value = "v".repeat(200 << 10);
    let written = value.clone();
    let put = actix_rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.put("big/one", written).await.expect("put")
    });
    let mut seen = None;
    for _ in 0..10 {
        let batch = watch.next().await.expect("a batch");
        if let Some(event) = batch.events.first() {
            seen = Some(event.clone());
            break;
        }
    }
    let index = put.await.expect("writer").index;
    let event = seen.expect("the change was delivered");
    assert_eq!(event.kind, EventKind::Put);
    assert_eq!(event.kv.key, "big/one");
    assert_eq!(event.kv.mod_index, index);
    assert_eq!(event.kv.value.as_deref(), Some(value.as_bytes()));
    cluster.shutdown().await;
}
