//! The TCP endpoint over real loopback sockets.

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use raftor_actors::network::codec::{Frame, FrameCodec, PROTOCOL_VERSION};
use raftor_actors::network::tcp::{
    self, CloseEndpoint, EndpointConfig, GetStats, NetworkError, TcpEndpoint,
};
use raftor_actors::transport::{Inbound, Outbound};
use raftor_core::{
    AppendEntries, Entry, EntryPayload, Envelope, LogId, LogIndex, Message, NodeId, RequestVote,
    Term,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

const CLUSTER: &str = "test-cluster";
const WAIT: Duration = Duration::from_secs(10);

/// Forwards every inbound envelope to the test.
struct Collector(mpsc::UnboundedSender<Envelope>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Inbound> for Collector {
    type Result = ();

    fn handle(&mut self, Inbound(envelope): Inbound, _ctx: &mut Context<Self>) {
        let _ = self.0.send(envelope);
    }
}

struct Node {
    endpoint: Addr<TcpEndpoint>,
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Envelope>,
}

impl Node {
    async fn next(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("an envelope in time")
            .expect("collector alive")
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(loopback(0)).expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

async fn start_node(id: u64, listen: SocketAddr, peers: &[(u64, String)]) -> Node {
    let peers: BTreeMap<NodeId, String> = peers
        .iter()
        .map(|(peer, addr)| (NodeId(*peer), addr.clone()))
        .collect();
    let (tx, received) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let config = EndpointConfig::new(NodeId(id), CLUSTER, listen, peers);
    let (endpoint, addr) = tcp::start(config, collector.recipient())
        .await
        .expect("endpoint starts");
    Node {
        endpoint,
        addr,
        received,
    }
}

/// Node 2 listening on a free port, accepting node 1; then node 1, which knows node 2's address.
async fn pair() -> (Node, Node) {
    let two = start_node(2, loopback(0), &[(1, "127.0.0.1:1".into())]).await;
    let one = start_node(1, loopback(0), &[(2, two.addr.to_string())]).await;
    (one, two)
}

fn vote(from: u64, to: u64, term: u64) -> Envelope {
    Envelope {
        from: NodeId(from),
        to: NodeId(to),
        message: Message::RequestVote(RequestVote {
            term: Term(term),
            last_log_id: LogId::new(Term(term), LogIndex(term * 10)),
            pre_vote: term.is_multiple_of(2),
            leadership_transfer: false,
        }),
    }
}

fn append(from: u64, to: u64, entries: u64) -> Envelope {
    Envelope {
        from: NodeId(from),
        to: NodeId(to),
        message: Message::AppendEntries(AppendEntries {
            term: Term(4),
            prev_log_id: LogId::new(Term(3), LogIndex(99)),
            entries: (100..100 + entries)
                .map(|i| Entry {
                    term: Term(4),
                    index: LogIndex(i),
                    payload: EntryPayload::Command(Bytes::from(vec![i as u8; 100])),
                })
                .collect(),
            leader_commit: LogIndex(98),
            sync_may_wait: false,
            request_id: 7,
        }),
    }
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(frame, &mut buf)
        .expect("encode");
    buf.to_vec()
}

fn hello(version: u32, cluster: &str, node: u64) -> Vec<u8> {
    encode(Frame::Hello {
        protocol_version: version,
        cluster_id: cluster.into(),
        node_id: NodeId(node),
    })
}

/// Connects to `addr`, writes `bytes`, and asserts the endpoint closes the connection.
async fn assert_closed_after(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: endpoint wrote {n} bytes instead of closing"),
        Err(_) => panic!("{what}: connection still open"),
    }
}

#[actix_rt::test]
async fn a_message_arrives_intact() {
    let (one, mut two) = pair().await;
    let envelope = append(1, 2, 50);
    one.endpoint.do_send(Outbound(envelope.clone()));
    assert_eq!(two.next().await, envelope);
}

#[actix_rt::test]
async fn messages_arrive_in_order() {
    let (one, mut two) = pair().await;
    for term in 1..=100 {
        one.endpoint.do_send(Outbound(vote(1, 2, term)));
    }
    for term in 1..=100 {
        assert_eq!(two.next().await, vote(1, 2, term));
    }
    let stats = one.endpoint.send(GetStats).await.expect("stats");
    assert_eq!(stats.dropped_queue_full, 0);
    assert_eq!(stats.dropped_undeliverable, 0);
    let stats = two.endpoint.send(GetStats).await.expect("stats");
    assert_eq!(stats.delivered, 100);
}

#[actix_rt::test]
async fn both_directions_work() {
    let port_one = free_port();
    let port_two = free_port();
    let mut one = start_node(
        1,
        loopback(port_one),
        &[(2, format!("127.0.0.1:{port_two}"))],
    )
    .await;
    let mut two = start_node(
        2,
        loopback(port_two),
        &[(1, format!("127.0.0.1:{port_one}"))],
    )
    .await;
    one.endpoint.do_send(Outbound(vote(1, 2, 7)));
    two.endpoint.do_send(Outbound(vote(2, 1, 8)));
    assert_eq!(two.next().await, vote(1, 2, 7));
    assert_eq!(one.next().await, vote(2, 1, 8));
}

#[actix_rt::test]
async fn a_peer_that_starts_later_is_reached() {
    let port_two = free_port();
    // A DNS name, resolved at each attempt.
    let one = start_node(1, loopback(0), &[(2, format!("localhost:{port_two}"))]).await;
    let sender = one.endpoint.clone();
    let resend = actix_rt::spawn(async move {
        for term in 1.. {
            sender.do_send(Outbound(vote(1, 2, term)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut two = start_node(2, loopback(port_two), &[(1, "127.0.0.1:1".into())]).await;
    let first = two.next().await;
    assert_eq!((first.from, first.to), (NodeId(1), NodeId(2)));
    // Later messages keep flowing, in order.
    let Message::RequestVote(RequestVote {
        term: first_term, ..
    }) = first.message
    else {
        panic!("unexpected message {first:?}");
    };
    let second = two.next().await;
    let Message::RequestVote(RequestVote {
        term: second_term, ..
    }) = second.message
    else {
        panic!("unexpected message {second:?}");
    };
    assert!(second_term > first_term);
    resend.abort();
}

/// Node 1, which sends to node 2 at `two` and pauses 600 s after a failed connection, far
/// longer than a test waits: only a wake-up can end its pause. Returns its endpoint, its address
/// and what it receives.
async fn start_slow_to_redial(
    two: String,
) -> (
    Addr<TcpEndpoint>,
    SocketAddr,
    mpsc::UnboundedReceiver<Envelope>,
) {
    let (tx, received) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let mut config =
        EndpointConfig::new(NodeId(1), CLUSTER, loopback(0), [(NodeId(2), two)].into());
    config.connect_backoff_min = Duration::from_secs(600);
    config.connect_backoff_max = Duration::from_secs(600);
    let (one, addr) = tcp::start(config, collector.recipient())
        .await
        .expect("endpoint starts");
    (one, addr, received)
}

/// A writer pausing before it redials an unreachable peer redials at once when that peer
/// connects to us: after a partition heals, answers reach the peer without waiting out the pause.
#[actix_rt::test]
async fn a_peer_that_connects_to_us_ends_our_reconnection_pause() {
    let port_two = free_port();
    let (one, one_addr, mut received_by_one) =
        start_slow_to_redial(format!("127.0.0.1:{port_two}")).await;
    // Node 2 is down: the first attempt fails and node 1's writer pauses for 600 s.
    one.do_send(Outbound(vote(1, 2, 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut two = start_node(2, loopback(port_two), &[(1, one_addr.to_string())]).await;
    // Node 2 speaks first: its connection to node 1 wakes node 1's writer.
    two.endpoint.do_send(Outbound(vote(2, 1, 2)));
    let from_two = tokio::time::timeout(WAIT, received_by_one.recv())
        .await
        .expect("node 2 reaches node 1")
        .expect("collector alive");
    assert_eq!(from_two.from, NodeId(2));
    one.do_send(Outbound(vote(1, 2, 3)));
    let from_one = two.next().await;
    assert_eq!((from_one.from, from_one.to), (NodeId(1), NodeId(2)));
}

/// A writer pausing before it redials a peer redials at once when that peer sends on the
/// connection it already had to us: after a partition heals, the side whose own connection
/// survived dials nobody, so only its messages tell us it is back.
#[actix_rt::test]
async fn a_peer_that_sends_to_us_ends_our_reconnection_pause() {
    // Node 2 is played by the test: a listener for node 1's connections, and a connection of its
    // own to node 1.
    let two = tokio::net::TcpListener::bind(loopback(0))
        .await
        .expect("bind");
    let (one, one_addr, mut received_by_one) =
        start_slow_to_redial(two.local_addr().expect("addr").to_string()).await;
    // Node 2 connects to node 1 while node 1's writer to it is still to come: no wake yet.
    let mut from_two = TcpStream::connect(one_addr).await.expect("connect");
    from_two
        .write_all(&hello(PROTOCOL_VERSION, CLUSTER, 2))
        .await
        .expect("hello");
    one.do_send(Outbound(vote(1, 2, 1)));
    let (first, _) = tokio::time::timeout(WAIT, two.accept())
        .await
        .expect("node 1 dials node 2")
        .expect("accept");
    // Node 2 drops node 1's connection: node 1's writer fails and pauses for 600 s.
    drop(first);
    one.do_send(Outbound(vote(1, 2, 2)));
    // Node 2 keeps sending on its own connection (until the writer has noticed the failure,
    // a message finds it connected and wakes nothing).
    let mut term = 3;
    let mut second = loop {
        from_two
            .write_all(&encode(Frame::Raft(vote(2, 1, term))))
            .await
            .expect("node 2's connection stays up");
        let arrived = tokio::time::timeout(WAIT, received_by_one.recv())
            .await
            .expect("node 2 reaches node 1")
            .expect("collector alive");
        assert_eq!(arrived.from, NodeId(2));
        if let Ok(accepted) = tokio::time::timeout(Duration::from_millis(100), two.accept()).await {
            break accepted.expect("accept").0;
        }
        term += 1;
        assert!(term < 3 + 100, "node 1 never redialled node 2");
    };
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, second.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(n)) if n > 0),
        "node 1 says hello on its new connection"
    );
}

#[actix_rt::test]
async fn a_restarted_peer_is_reached_again() {
    let port_two = free_port();
    let one = start_node(1, loopback(0), &[(2, format!("127.0.0.1:{port_two}"))]).await;
    let mut two = start_node(2, loopback(port_two), &[(1, "127.0.0.1:1".into())]).await;
    one.endpoint.do_send(Outbound(vote(1, 2, 1)));
    assert_eq!(two.next().await, vote(1, 2, 1));
    two.endpoint.send(CloseEndpoint).await.expect("shutdown");
    drop(two);

    let mut two = start_node(2, loopback(port_two), &[(1, "127.0.0.1:1".into())]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut term = 2;
    loop {
        one.endpoint.do_send(Outbound(vote(1, 2, term)));
        if let Ok(Some(envelope)) =
            tokio::time::timeout(Duration::from_millis(100), two.received.recv()).await
        {
            assert_eq!((envelope.from, envelope.to), (NodeId(1), NodeId(2)));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restarted peer never reached"
        );
        term += 1;
    }
}

#[actix_rt::test]
async fn hostile_connections_are_closed_and_the_endpoint_survives() {
    let (one, mut two) = pair().await;
    let addr = two.addr;

    assert_closed_after(addr, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], "garbage").await;
    assert_closed_after(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http").await;
    assert_closed_after(
        addr,
        &hello(PROTOCOL_VERSION, "other-cluster", 1),
        "cluster",
    )
    .await;
    assert_closed_after(addr, &hello(PROTOCOL_VERSION + 1, CLUSTER, 1), "version").await;
    assert_closed_after(addr, &hello(PROTOCOL_VERSION, CLUSTER, 2), "own id").await;
    assert_closed_after(addr, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3], "oversized").await;
    assert_closed_after(addr, &encode(Frame::Raft(vote(1, 2, 1))), "no hello").await;

    let mut twice = hello(PROTOCOL_VERSION, CLUSTER, 1);
    twice.extend(hello(PROTOCOL_VERSION, CLUSTER, 1));
    assert_closed_after(addr, &twice, "second hello").await;

    let mut impostor = hello(PROTOCOL_VERSION, CLUSTER, 1);
    impostor.extend(encode(Frame::Raft(vote(3, 2, 1))));
    assert_closed_after(addr, &impostor, "from differs from hello").await;

    let mut misrouted = hello(PROTOCOL_VERSION, CLUSTER, 1);
    misrouted.extend(encode(Frame::Raft(vote(1, 5, 1))));
    assert_closed_after(addr, &misrouted, "to is not this node").await;

    // A valid raw connection still works, and so does the real peer.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    let mut valid = hello(PROTOCOL_VERSION, CLUSTER, 1);
    valid.extend(encode(Frame::Raft(vote(1, 2, 41))));
    raw.write_all(&valid).await.expect("write");
    assert_eq!(two.next().await, vote(1, 2, 41));

    one.endpoint.do_send(Outbound(vote(1, 2, 42)));
    assert_eq!(two.next().await, vote(1, 2, 42));
    let stats = two.endpoint.send(GetStats).await.expect("stats");
    assert_eq!(stats.rejected_connections, 10);
    assert_eq!(stats.delivered, 2);
}

#[actix_rt::test]
async fn unroutable_envelopes_are_dropped_and_counted() {
    let (one, _two) = pair().await;
    one.endpoint.do_send(Outbound(vote(1, 9, 1))); // unknown peer
    one.endpoint.do_send(Outbound(vote(3, 2, 1))); // not from this node
    let stats = one.endpoint.send(GetStats).await.expect("stats");
    assert_eq!(stats.dropped_unroutable, 2);
}

#[actix_rt::test]
async fn bind_failure_is_reported() {
    let taken = std::net::TcpListener::bind(loopback(0)).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (tx, _rx) = mpsc::unbounded_channel();
    let config = EndpointConfig::new(NodeId(1), CLUSTER, addr, BTreeMap::new());
    let result = tcp::start(config, Collector(tx).start().recipient()).await;
    assert!(matches!(result, Err(NetworkError::Bind { addr: a, .. }) if a == addr));
}

#[actix_rt::test]
async fn invalid_config_is_reported() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut config = EndpointConfig::new(NodeId(1), CLUSTER, loopback(0), BTreeMap::new());
    config.peer_queue_len = 0;
    let result = tcp::start(config, Collector(tx).start().recipient()).await;
    assert!(matches!(result, Err(NetworkError::InvalidConfig(_))));
}

#[actix_rt::test]
async fn shutdown_frees_the_port() {
    let (one, two) = pair().await;
    one.endpoint.do_send(Outbound(vote(1, 2, 1)));
    two.endpoint.send(CloseEndpoint).await.expect("shutdown");
    std::net::TcpListener::bind(two.addr).expect("the port is free again");
    one.endpoint.send(CloseEndpoint).await.expect("shutdown");
    std::net::TcpListener::bind(one.addr).expect("the port is free again");
}

#[actix_rt::test]
async fn dropping_the_address_stops_the_endpoint() {
    let (one, two) = pair().await;
    one.endpoint.do_send(Outbound(vote(1, 2, 1)));
    let addr = two.addr;
    drop(two);
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener outlived its endpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
