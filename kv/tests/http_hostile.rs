//! Hostile HTTP requests against a real node: bad keys, bad JSON, bad query strings and headers,
//! wrong methods, unknown routes, huge bodies. Every answer is a 4xx with a JSON body
//! `{"error": "..."}`, nothing is written, and the node keeps serving.

#[cfg(target_os = "linux")]
#[path = "../../actors/tests/support/accepted_socket.rs"]
mod accepted_socket;
mod common;

use common::{http, Cluster};

/// A request (method, path, headers, body) and the status it must get.
type Case = (
    &'static str,
    String,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
);

/// What a request must get: its status, and a JSON error.
fn assert_clean_error(reply: &common::Reply, expected: u16, what: &str) -> serde_json::Value {
    assert_eq!(reply.status, expected, "{what}: {}", reply.text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", reply.text()));
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error message in {body}"
    );
    body
}

#[actix_rt::test]
async fn every_hostile_request_gets_a_clean_json_4xx() {
    let cluster = Cluster::start(1).await;
    let node = cluster.http(cluster.leader().await);
    let long_key = "k".repeat(5000);
    let deep = "[".repeat(10_000);
    let cases: Vec<Case> = vec![
        // Keys.
        ("GET", format!("/v1/kv/{long_key}"), vec![], vec![], 400),
        (
            "PUT",
            format!("/v1/kv/{long_key}"),
            vec![],
            b"v".to_vec(),
            400,
        ),
        ("PUT", "/v1/kv/".into(), vec![], b"v".to_vec(), 404),
        ("GET", "/v1/kv/a/b/c".into(), vec![], vec![], 404),
        // Query strings.
        ("GET", "/v1/kv/a?consistency=".into(), vec![], vec![], 400),
        (
            "GET",
            "/v1/kv/a?consistency=eventual".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "GET",
            "/v1/kv/a?consistency=local&consistency=lease".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "GET",
            "/v1/kv/a?consistency=%FF".into(),
            vec![],
            vec![],
            400,
        ),
        // Bodies: bad JSON for CAS.
        ("POST", "/v1/kv/a/cas".into(), vec![], b"".to_vec(), 400),
        ("POST", "/v1/kv/a/cas".into(), vec![], b"{".to_vec(), 400),
        ("POST", "/v1/kv/a/cas".into(), vec![], b"[]".to_vec(), 400),
        ("POST", "/v1/kv/a/cas".into(), vec![], b"null".to_vec(), 400),
        (
            "POST",
            "/v1/kv/a/cas".into(),
            vec![],
            br#"{"value": 5}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/kv/a/cas".into(),
            vec![],
            br#"{"expected": null, "value": "b", "extra": 1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/kv/a/cas".into(),
            vec![],
            deep.into_bytes(),
            400,
        ),
        (
            "POST",
            "/v1/kv/a/cas".into(),
            vec![],
            vec![0xff, 0xfe, 0x00, 0x7b],
            400,
        ),
        // Headers.
        (
            "PUT",
            "/v1/kv/a".into(),
            vec![("X-Raftor-Client", "1"), ("X-Raftor-Seq", "-1")],
            b"v".to_vec(),
            400,
        ),
        (
            "PUT",
            "/v1/kv/a".into(),
            vec![
                ("X-Raftor-Client", "1"),
                ("X-Raftor-Seq", "18446744073709551616"),
            ],
            b"v".to_vec(),
            400,
        ),
        (
            "DELETE",
            "/v1/kv/a".into(),
            vec![("X-Raftor-Client", "1")],
            vec![],
            400,
        ),
        // Wrong methods, unknown routes.
        ("POST", "/v1/kv/a".into(), vec![], b"v".to_vec(), 405),
        ("PATCH", "/v1/kv/a".into(), vec![], b"v".to_vec(), 405),
        ("OPTIONS", "/v1/kv/a".into(), vec![], vec![], 405),
        // Keys may hold slashes, so only a POST ending in /cas is a compare-and-swap.
        ("POST", "/v1/kv/a/cast".into(), vec![], b"{}".to_vec(), 405),
        // Range reads, transactions, watches, leases.
        ("GET", "/v1/kv?start=b&end=a".into(), vec![], vec![], 400),
        ("GET", "/v1/kv?prefix=a&limit=0".into(), vec![], vec![], 400),
        (
            "GET",
            "/v1/kv?prefix=a&limit=99999999999".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "GET",
            "/v1/kv?prefix=a&max_bytes=-1".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "GET",
            "/v1/kv?prefix=a&continue=%FF".into(),
            vec![],
            vec![],
            400,
        ),
        ("DELETE", "/v1/kv?prefix=".into(), vec![], vec![], 400),
        ("DELETE", "/v1/kv".into(), vec![], vec![], 400),
        ("POST", "/v1/txn".into(), vec![], b"{".to_vec(), 400),
        (
            "POST",
            "/v1/txn".into(),
            vec![],
            br#"{"success": [{"put": {"key": "a"}}]}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/txn".into(),
            vec![],
            br#"{"success": [{"explode": {}}]}"#.to_vec(),
            400,
        ),
        ("GET", "/v1/watch".into(), vec![], vec![], 400),
        (
            "GET",
            "/v1/watch?prefix=a&from=0".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "GET",
            "/v1/watch?prefix=a&format=xml".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "POST",
            "/v1/leases".into(),
            vec![],
            br#"{"ttl": 0}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/leases".into(),
            vec![],
            br#"{"ttl": 999999999999}"#.to_vec(),
            400,
        ),
        ("POST", "/v1/leases/0/keepalive".into(), vec![], vec![], 400),
        (
            "POST",
            "/v1/leases/77/keepalive".into(),
            vec![],
            vec![],
            404,
        ),
        ("GET", "/v1/leases/x".into(), vec![], vec![], 400),
        (
            "PUT",
            "/v1/kv/a?lease=12345".into(),
            vec![],
            b"v".to_vec(),
            404,
        ),
        ("DELETE", "/v1/status".into(), vec![], vec![], 405),
        ("POST", "/health".into(), vec![], vec![], 405),
        ("PUT", "/metrics".into(), vec![], vec![], 405),
        ("GET", "/".into(), vec![], vec![], 404),
        ("GET", "/v2/kv/a".into(), vec![], vec![], 404),
        ("BREW", "/v1/kv/a".into(), vec![], vec![], 405),
        // Huge bodies.
        (
            "PUT",
            "/v1/kv/big".into(),
            vec![],
            vec![b'x'; 2 * 1024 * 1024],
            413,
        ),
        (
            "POST",
            "/v1/kv/big/cas".into(),
            vec![],
            vec![b' '; 3 * 1024 * 1024],
            413,
        ),
    ];
    for (method, path, headers, body, expected) in &cases {
        let what = format!("{method} {}", &path[..path.len().min(60)]);
        let reply = http(&node, method, path, headers, body).await;
        assert_clean_error(&reply, *expected, &what);
    }

    // Nothing was written, and the node still serves.
    for key in ["a", "big", "b"] {
        let reply = http(&node, "GET", &format!("/v1/kv/{key}"), &[], b"").await;
        assert_clean_error(
            &reply,
            404,
            &format!("GET {key} after the hostile requests"),
        );
    }
    assert_eq!(
        http(&node, "PUT", "/v1/kv/a", &[], b"fine").await.status,
        200
    );
    let read = http(&node, "GET", "/v1/kv/a", &[], b"").await;
    assert_eq!((read.status, read.text().as_str()), (200, "fine"));
    // Unicode, reserved characters and even undecodable percent-escapes in keys are keys like
    // any other: stored and read back under the same path.
    for key in [
        "%E2%9C%93",
        "a%2Fb",
        "with%20space",
        "%00",
        "%FF%FE",
        "%C3%28",
    ] {
        let path = format!("/v1/kv/{key}");
        assert_eq!(
            http(&node, "PUT", &path, &[], b"x").await.status,
            200,
            "{key}"
        );
        let read = http(&node, "GET", &path, &[], b"").await;
        assert_eq!((read.status, read.text().as_str()), (200, "x"), "{key}");
    }
    cluster.shutdown().await;
}

/// A request answered before its body was read (a value over the limit: 413 after the first MiB)
/// still gets its answer, and the client may finish sending: the node reads and discards the
/// rest of the body before it closes. Closing with the client's bytes unread made the kernel
/// reset the connection, and the client then saw a failed write or "connection reset" instead
/// of the 413 (it made a token-refused write in the TLS compose test flaky).
#[actix_rt::test]
async fn a_request_refused_before_its_body_was_read_still_gets_its_answer() {
    use std::io::{Read, Write};
    let cluster = Cluster::start(1).await;
    let addr = cluster.http(cluster.leader().await);
    let reply = tokio::task::spawn_blocking(move || {
        // More than the kernel buffers on both ends: the client is still sending when the node
        // answers, as a client uploading a large value is.
        let body = vec![b'x'; 32 * 1024 * 1024];
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let head = format!(
            "PUT /v1/kv/big HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("send the head");
        stream
            .write_all(&body)
            .expect("the whole body is taken, though refused after its first MiB");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("end the request");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .expect("the answer, then the node's close: no reset");
        common::parse(&raw)
    })
    .await
    .expect("client task");
    assert_clean_error(&reply, 413, "PUT of 32 MiB, sent whole");
    assert_eq!(
        common::http(
            &cluster.http(cluster.leader().await),
            "GET",
            "/v1/kv/big",
            &[],
            b""
        )
        .await
        .status,
        404,
        "nothing was written"
    );
    cluster.shutdown().await;
}

/// Every HTTP connection a node accepts, served on the node's thread (the default) or by
/// actix-web's worker threads, is probed with TCP keepalive and bounds unacknowledged data
/// (`raftor_actors::network::keepalive`), as the Raft port's connections are.
#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn accepted_http_connections_find_out_when_the_client_is_gone() {
    for workers in [0, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (nodes, _, _) = common::start_on_free_ports(1, dir.path(), |config| {
            raftor_kv::local_cluster::quick_timing(config);
            config.http_workers = workers;
        })
        .await;
        let server = nodes[0].http_addr.expect("HTTP is served");
        let mut client = tokio::net::TcpStream::connect(server)
            .await
            .expect("connect");
        common::status_answered(&mut client).await;
        let what = format!("HTTP with {workers} workers");
        accepted_socket::assert_probed(server, client.local_addr().expect("address"), &what);
        nodes[0].shutdown().await;
    }
}

/// One node on free ports, adjusted by `adjust`, once it has a leader (a write succeeded): the
/// node (shut it down), its data directory (keep it) and its HTTP address.
async fn one_node_leading(
    adjust: impl Fn(&mut raftor_kv::config::NodeConfig),
) -> (
    raftor_kv::server::RunningNode,
    tempfile::TempDir,
    std::net::SocketAddr,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, _, _) = common::start_on_free_ports(1, dir.path(), |config| {
        raftor_kv::local_cluster::quick_timing(config);
        adjust(config);
    })
    .await;
    let node = nodes.remove(0);
    let server = node.http_addr.expect("HTTP is served");
    for _ in 0..100 {
        if http(&server.to_string(), "PUT", "/v1/kv/first", &[], b"1")
            .await
            .status
            == 200
        {
            return (node, dir, server);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no leader elected");
}

/// A client that sends the start of a large body and stops: the body held room for its stated
/// length (`max_client_answer_bytes` bounds what bodies being read hold together; here its least,
/// 1 MiB, as much as this body states), so another client's large write waits instead of adding
/// to the node's memory, while a small write goes through at once. Since one waits, the stalled
/// body is refused (408) once no byte of it has come for `STALLED_REQUEST_LIMIT`, nothing of it is
/// written, its connection is closed, and the waiting write is done.
#[actix_rt::test]
async fn a_body_that_stops_arriving_is_answered_408_and_holds_its_room_only_until_then() {
    use raftor_actors::network::incoming::STALLED_REQUEST_LIMIT;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (node, _dir, server) =
        one_node_leading(|config| config.max_client_answer_bytes = 1 << 20).await;
    let addr = server.to_string();

    let mut slow = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/kv/stalled HTTP/1.1\r\nHost: node\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&[b's'; 1000])
        .await
        .expect("the start of the body");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let small = http(&addr, "PUT", "/v1/kv/small", &[], b"v").await;
    assert_eq!(small.status, 200, "{}", small.text());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a small write waits for no room"
    );

    let started = std::time::Instant::now();
    let large = http(&addr, "PUT", "/v1/kv/large", &[], &[b'l'; 100_000]).await;
    let waited = started.elapsed();
    assert_eq!(large.status, 200, "{}", large.text());
    assert!(
        waited >= STALLED_REQUEST_LIMIT - std::time::Duration::from_secs(1)
            && waited <= STALLED_REQUEST_LIMIT + std::time::Duration::from_secs(3),
        "written after {waited:?}: the slow body held no room, or kept it while the write waited"
    );

    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the slow client's connection is closed");
    assert!(read.is_ok() || !answer.is_empty(), "{read:?}");
    let reply = common::parse(&answer);
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(reply.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("nothing was done")));
    let written = http(&addr, "GET", "/v1/kv/stalled", &[], b"").await;
    assert_eq!(written.status, 404, "nothing of the slow write was done");
    node.shutdown().await;
}

/// A client that pipelines GETs of a large value and never reads the answers: each large answer
/// holds room for its size until its bytes are written (`http/answer_room.rs`; the room is
/// `max_client_answer_bytes`, here its least, 1 MiB), so another client's GET of the value waits
/// instead of adding to the node's memory. Since one waits, the stalled connection, which has
/// written nothing of its answer for `STALLED_ANSWER_LIMIT`, is closed, and the waiting GET is
/// answered in full. A small write and a GET of a small value need no room and go through at
/// once meanwhile.
#[actix_rt::test]
async fn answers_a_client_never_reads_hold_their_room_only_until_others_need_it() {
    use raftor_actors::network::client::STALLED_ANSWER_LIMIT;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (node, _dir, server) =
        one_node_leading(|config| config.max_client_answer_bytes = 1 << 20).await;
    let addr = server.to_string();
    let value = vec![b'v'; 900_000];
    let put = http(&addr, "PUT", "/v1/kv/large", &[], &value).await;
    assert_eq!(put.status, 200, "{}", put.text());

    // A small receive buffer: the kernel takes little of an answer the client does not read.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let mut slow = socket.connect(server).await.expect("connect");
    let gets = "GET /v1/kv/large HTTP/1.1\r\nHost: node\r\n\r\n".repeat(20);
    slow.write_all(gets.as_bytes()).await.expect("the GETs");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let small = http(&addr, "PUT", "/v1/kv/small", &[], b"s").await;
    assert_eq!(small.status, 200, "{}", small.text());
    let small = http(&addr, "GET", "/v1/kv/small", &[], b"").await;
    assert_eq!((small.status, small.body.as_slice()), (200, &b"s"[..]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a small write and a GET of a small value wait for no room"
    );

    let started = Instant::now();
    let read = http(&addr, "GET", "/v1/kv/large", &[], b"").await;
    let waited = started.elapsed();
    assert_eq!(read.status, 200, "{}", read.text());
    assert!(read.body == value, "the whole value");
    assert!(
        waited >= STALLED_ANSWER_LIMIT - Duration::from_millis(1500)
            && waited <= STALLED_ANSWER_LIMIT + Duration::from_secs(3),
        "answered after {waited:?}: the unread answer held no room, or kept it while the GET waited"
    );

    let mut taken = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut taken)).await;
    assert!(closed.is_ok(), "the stalled connection is closed");
    assert!(
        taken.len() < 2 * value.len(),
        "it was closed with its first answer unread ({} bytes taken)",
        taken.len()
    );
    node.shutdown().await;
}

/// HTTP/1 connections are read at the pace their requests are answered (`http/paced.rs`: a
/// connection reads no further requests while one is answered, and between answers only a
/// little at a time), so a client that pipelines thousands of requests cannot make the node
/// decode them all at once. Pipelining still works: requests with long heads and bodies larger
/// than one read, sent in one write, are all answered, in order.
#[actix_rt::test]
async fn pipelined_requests_with_long_heads_and_large_bodies_are_all_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (node, _dir, server) = one_node_leading(|_| {}).await;

    let long_header = "x".repeat(3000);
    let mut pipelined = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let value = vec![b'a' + (i % 26) as u8; 1000 + i * 10_000];
        pipelined.extend_from_slice(
            format!(
                "PUT /v1/kv/p{i} HTTP/1.1\r\nHost: node\r\nX-Long: {long_header}\r\nContent-Length: {}\r\n\r\n",
                value.len()
            )
            .as_bytes(),
        );
        pipelined.extend_from_slice(&value);
        pipelined.extend_from_slice(
            format!("GET /v1/kv/p{i} HTTP/1.1\r\nHost: node\r\n\r\n").as_bytes(),
        );
        expected.push(None);
        expected.push(Some(value));
    }
    let mut client = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let (mut read, mut write) = client.split();
    let writing = async {
        write
            .write_all(&pipelined)
            .await
            .expect("the pipelined requests");
    };
    let reading = async {
        let mut raw = Vec::new();
        let mut answers = Vec::new();
        let mut at = 0;
        while answers.len() < expected.len() {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(std::time::Duration::from_secs(20), read.read(&mut chunk))
                .await
                .expect("answers keep coming")
                .expect("read");
            assert!(n > 0, "closed after {} answers", answers.len());
            raw.extend_from_slice(&chunk[..n]);
            while let Some(head_end) = raw[at..].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[at..at + head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                let end = at + head_end + 4 + length;
                if raw.len() < end {
                    break;
                }
                answers.push(common::parse(&raw[at..end]));
                at = end;
            }
        }
        answers
    };
    let ((), answers) = futures::join!(writing, reading);
    for (i, (answer, value)) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(answer.status, 200, "answer {i}: {}", answer.text());
        if let Some(value) = value {
            assert_eq!(&answer.body, value, "answer {i} is its GET's value");
        }
    }
    drop(client);
    node.shutdown().await;
}
