//! The Rust client against a real in-process cluster: leader discovery, retries across a leader
//! failover, and exactly-once writes.

mod common;

use common::{http, Cluster};
use futures::{SinkExt, StreamExt};
use raftor_actors::network::codec::{Frame, FrameCodec};
use raftor_kv::protocol::{decode, encode, Consistency, KvRequest, KvResponse, RequestEnvelope};
use raftor_kv::store::{KvOutcome, Session};
use raftor_kv::{Client, ClientError, ClientOptions};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio_util::codec::Framed;

#[actix_rt::test]
async fn a_counter_incremented_by_cas_across_a_leader_failover_counts_exactly() {
    let mut cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    client.put("counter", "0").await.expect("put");
    for i in 0..40u32 {
        if i == 20 {
            // Kill the leader in the middle of the run.
            cluster.stop_leader().await;
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
    cluster.stop(leader).await;
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
        matches!(error, raftor_kv::ClientError::Rejected(_)),
        "{error:?}"
    );
    let huge = vec![0u8; 2 * 1024 * 1024];
    let error = client.put("k", huge).await.expect_err("too large");
    assert!(
        matches!(error, raftor_kv::ClientError::Rejected(_)),
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
        matches!(error, raftor_kv::ClientError::Unavailable(_)),
        "{error:?}"
    );
}

/// A write whose first arrival is refused because the cluster does not know the session (here:
/// the client's write 1 was rejected before it was proposed, so its write 2 reaches a cluster that
/// never saw the client) is sent again under a new session, applied once, and the caller never
/// notices.
#[actix_rt::test]
async fn a_write_refused_for_an_unknown_session_on_its_first_arrival_is_sent_under_a_new_one() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let first_id = client.client_id();
    let error = client.put("", "x").await.expect_err("empty key");
    assert!(matches!(error, ClientError::Rejected(_)), "{error:?}");
    let result = client.put("k", "v").await.expect("put");
    assert_eq!(result.outcome, KvOutcome::Put { replaced: false });
    assert_ne!(client.client_id(), first_id, "a new session");
    let result = client.put("k", "w").await.expect("put");
    assert_eq!(result.outcome, KvOutcome::Put { replaced: true });
    let value = client
        .get("k", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(value.as_deref(), Some(&b"w"[..]));
    cluster.shutdown().await;
}

/// What a [`fake_node`] does with the next request it receives.
enum Step {
    Answer(KvResponse),
    /// Close the connection without answering: the client cannot know whether it was applied.
    Hang,
}

/// A stand-in for a node on the native protocol, answering requests as `script` says and
/// recording the session of each write it receives. (Real sockets and the real clock: the paused
/// clock would run the request timeouts out while a socket waits.)
async fn fake_node(script: Vec<Step>) -> (String, Arc<Mutex<Vec<Session>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen: Arc<Mutex<Vec<Session>>> = Arc::default();
    let sessions = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, sessions) = (script.clone(), sessions.clone());
            tokio::spawn(async move {
                let mut frames = Framed::new(stream, FrameCodec::default());
                while let Some(Ok(frame)) = frames.next().await {
                    let Frame::ClientRequest { id, body } = frame else {
                        continue; // the hello
                    };
                    let envelope: RequestEnvelope = decode(&body).expect("a request");
                    if let KvRequest::Put {
                        session: Some(session),
                        ..
                    } = envelope.request
                    {
                        sessions.lock().expect("lock").push(session);
                    }
                    let step = script.lock().expect("lock").pop_front();
                    match step {
                        Some(Step::Answer(response)) => {
                            let body = encode(&response);
                            if frames
                                .send(Frame::ClientResponse { id, body })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Some(Step::Hang) | None => return,
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Thesis §6.3: a client whose session the cluster forgot learns it. A write whose answer was
/// lost (it may have been applied) and whose retry is refused as from an expired session is
/// reported as `SessionExpired` — not resent under a new session, which could apply it twice —
/// and the client's next write starts a new session at sequence 1.
#[tokio::test]
async fn an_expired_session_is_reported_and_the_next_write_starts_a_new_one() {
    let written = |index, outcome| Step::Answer(KvResponse::Written { index, outcome });
    let (addr, seen) = fake_node(vec![
        written(1, KvOutcome::Put { replaced: false }),
        Step::Hang,
        written(2_000_000, KvOutcome::SessionExpired),
        written(2_000_001, KvOutcome::Put { replaced: true }),
    ])
    .await;
    let options = ClientOptions {
        operation_timeout: std::time::Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let client = Client::new(vec![addr], options).expect("client");
    let old_id = client.client_id();
    client.put("a", "1").await.expect("write 1");
    let error = client.put("a", "2").await.expect_err("write 2");
    assert_eq!(error, ClientError::SessionExpired);
    let new_id = client.client_id();
    assert_ne!(new_id, old_id, "a new session");
    client.put("a", "3").await.expect("write 3");
    let session = |client_id, sequence| Session {
        client_id,
        sequence,
    };
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            session(old_id, 1),
            session(old_id, 2),
            // The retry of write 2, refused: it is not sent again.
            session(old_id, 2),
            session(new_id, 1),
        ]
    );
}
