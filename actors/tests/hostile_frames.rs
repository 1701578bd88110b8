//! Hostile bytes for the frame decoder (`network::codec`) and the TCP endpoint: garbage,
//! truncated, oversized, mutated and wrong-version frames. The decoder never panics, never
//! returns a frame from a truncated buffer, refuses every length over its maximum, and decodes
//! well-formed streams exactly however they are split; the endpoint closes a connection that
//! sends garbage and keeps serving the others.

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raftor_actors::network::client::{ClientHandler, PreparedAnswer};
use raftor_actors::network::codec::{CodecError, Frame, FrameCodec, PROTOCOL_VERSION};
use raftor_actors::network::tcp::{self, EndpointConfig, GetStats};
use raftor_actors::transport::Inbound;
use raftor_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Entry, EntryPayload,
    Envelope, LogId, LogIndex, Message, NodeId, RequestVote, RequestVoteResponse, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

#[cfg(target_os = "linux")]
#[path = "support/accepted_socket.rs"]
mod accepted_socket;
mod support;
#[cfg(target_os = "linux")]
use accepted_socket::assert_probed;

const MAX: usize = 4096;

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<u64>()).prop_map(|(t, i)| LogId::new(Term(t), LogIndex(i)))
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), log_id(), any::<bool>()).prop_map(|(t, last, pre)| {
            Message::RequestVote(RequestVote {
                term: Term(t),
                last_log_id: last,
                pre_vote: pre,
                leadership_transfer: !pre,
            })
        }),
        any::<u64>().prop_map(|t| Message::TimeoutNow(raftor_core::TimeoutNow { term: Term(t) })),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(t, g, pre)| {
            Message::RequestVoteResponse(RequestVoteResponse {
                term: Term(t),
                vote_granted: g,
                pre_vote: pre,
            })
        }),
        (
            any::<u64>(),
            log_id(),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
                ),
                0..6
            ),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(t, prev, entries, commit, id)| {
                Message::AppendEntries(AppendEntries {
                    term: Term(t),
                    prev_log_id: prev,
                    entries: entries
                        .into_iter()
                        .map(|(term, index, payload)| Entry {
                            term: Term(term),
                            index: LogIndex(index),
                            payload: payload.map_or(EntryPayload::Blank, |p| {
                                EntryPayload::Command(Bytes::from(p))
                            }),
                        })
                        .collect(),
                    leader_commit: LogIndex(commit),
                    sync_may_wait: false,
                    request_id: id,
                })
            }),
        (
            any::<u64>(),
            any::<u64>(),
            log_id(),
            proptest::option::of(any::<u64>()),
            0u8..3
        )
            .prop_map(|(t, id, matched, conflict, kind)| {
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term: Term(t),
                    request_id: id,
                    outcome: match kind {
                        0 => AppendOutcome::Success { matched },
                        1 => AppendOutcome::Reject {
                            rejected_prev_index: matched.index,
                            hint: ConflictHint {
                                conflict_term: conflict.map(Term),
                                first_index: matched.index,
                            },
                        },
                        _ => AppendOutcome::StaleTerm,
                    },
                })
            }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u32>(), ".{0,20}", any::<u64>()).prop_map(|(v, c, n)| Frame::Hello {
            protocol_version: v,
            cluster_id: c,
            node_id: NodeId(n),
        }),
        (any::<u64>(), any::<u64>(), message()).prop_map(|(from, to, message)| {
            Frame::Raft(Envelope {
                from: NodeId(from),
                to: NodeId(to),
                message,
            })
        }),
        (any::<u32>(), proptest::option::of(".{0,40}")).prop_map(|(v, token)| {
            Frame::ClientHello {
                protocol_version: v,
                token: token.map(raftor_actors::network::codec::Credential),
            }
        }),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..128)).prop_map(|(id, body)| {
            Frame::ClientRequest {
                id,
                body: Bytes::from(body),
            }
        }),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..128)).prop_map(|(id, body)| {
            Frame::ClientResponse {
                id,
                body: Bytes::from(body),
            }
        }),
    ]
}

/// Decodes everything in `buf`: the frames, then how it stopped (`Ok(())`: needs more bytes).
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut) -> (Vec<Frame>, Result<(), CodecError>) {
    let mut frames = Vec::new();
    loop {
        match codec.decode(buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, Ok(())),
            Err(error) => return (frames, Err(error)),
        }
    }
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    for frame in frames {
        // A frame over the maximum is refused by the encoder; leave it out.
        let mut one = BytesMut::new();
        if codec.encode(frame, &mut one).is_ok() {
            buf.extend_from_slice(&one);
        }
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Garbage never panics, and what it decodes to (if anything) is a frame within the limit.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::new(MAX);
        let mut buf = BytesMut::from(&bytes[..]);
        let (frames, _) = drain(&mut codec, &mut buf);
        for frame in frames {
            let mut again = BytesMut::new();
            prop_assert!(FrameCodec::new(MAX).encode(&frame, &mut again).is_ok());
            prop_assert!(again.len() <= MAX + 4);
        }
    }

    /// Any stream of valid frames decodes to exactly those frames, however it is cut into reads.
    #[test]
    fn valid_streams_decode_exactly_however_split(
        frames in proptest::collection::vec(frame(), 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = encode(&frames);
        let mut codec = FrameCodec::new(MAX);
        let expected = drain(&mut codec, &mut whole.clone()).0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(whole.len() + 1)).collect();
        points.push(whole.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for point in points {
            buf.extend_from_slice(&whole[at..point]);
            at = point;
            let (frames, stop) = drain(&mut codec, &mut buf);
            prop_assert!(stop.is_ok(), "a valid stream is never an error: {stop:?}");
            decoded.extend(frames);
        }
        prop_assert_eq!(&decoded, &expected);
        prop_assert!(buf.is_empty());
        // And every frame the encoder accepted round-trips.
        let accepted: Vec<Frame> = frames
            .into_iter()
            .filter(|f| FrameCodec::new(MAX).encode(f, &mut BytesMut::new()).is_ok())
            .collect();
        prop_assert_eq!(decoded, accepted);
    }

    /// A truncated frame is never a frame and never an error: the decoder waits for the rest.
    #[test]
    fn truncated_frames_wait_for_the_rest(frame in frame(), cut in any::<prop::sample::Index>()) {
        let whole = encode(std::slice::from_ref(&frame));
        prop_assume!(!whole.is_empty());
        let cut = cut.index(whole.len());
        let mut codec = FrameCodec::new(MAX);
        let mut partial = BytesMut::from(&whole[..cut]);
        prop_assert!(matches!(codec.decode(&mut partial), Ok(None)));
        partial.extend_from_slice(&whole[cut..]);
        prop_assert_eq!(codec.decode(&mut partial).ok().flatten(), Some(frame));
    }

    /// Any length prefix over the maximum is refused at once, whatever follows.
    #[test]
    fn oversized_lengths_are_refused(
        length in (MAX as u32 + 1)..=u32::MAX,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&length.to_be_bytes());
        buf.extend_from_slice(&tail);
        let result = FrameCodec::new(MAX).decode(&mut buf);
        prop_assert!(matches!(result, Err(CodecError::FrameTooLarge { max: MAX })), "{result:?}");
    }

    /// A valid frame with bytes flipped, removed or inserted: an error or some frame, never a
    /// panic; the length prefix is kept consistent so the payload itself is what is hostile.
    #[test]
    fn mutated_frames_never_panic(
        frame in frame(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let whole = encode(std::slice::from_ref(&frame));
        prop_assume!(whole.len() > 4);
        let mut payload = whole[4..].to_vec();
        for (at, byte, kind) in mutations {
            let i = at.index(payload.len().max(1));
            match kind {
                0 if !payload.is_empty() => payload[i] ^= byte | 1,
                1 if !payload.is_empty() => {
                    payload.remove(i);
                }
                _ => payload.insert(i.min(payload.len()), byte),
            }
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&payload);
        let mut codec = FrameCodec::new(MAX);
        let _ = drain(&mut codec, &mut buf);
    }
}

/// Every protocol version decodes as a frame (the endpoint, not the codec, refuses other versions).
#[test]
fn wrong_versions_decode_and_are_left_to_the_endpoint() {
    for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        let hello = Frame::Hello {
            protocol_version: version,
            cluster_id: "c".into(),
            node_id: NodeId(1),
        };
        let mut buf = encode(std::slice::from_ref(&hello));
        assert_eq!(
            FrameCodec::new(MAX).decode(&mut buf).expect("decodes"),
            Some(hello)
        );
    }
}

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

/// Node 2's endpoint, on a free loopback port, reading frames of at most [`MAX`] bytes; with
/// `peer_1`, node 1 is its one peer.
fn node_2_config(peer_1: bool) -> EndpointConfig {
    let peers: BTreeMap<NodeId, String> = if peer_1 {
        [(NodeId(1), "127.0.0.1:1".to_owned())].into()
    } else {
        BTreeMap::new()
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = EndpointConfig::new(NodeId(2), "hostile", listen, peers);
    config.max_frame_bytes = MAX;
    config
}

/// Client sessions on `config`'s endpoint answer every request with its own body.
fn echo_client_requests(config: &EndpointConfig) {
    config.client_handler.set(ClientHandler::new(|body: Bytes| {
        Box::pin(async move { body })
    }));
}

/// Node 2's endpoint, `configure`d, its client sessions echoing their requests: the endpoint
/// (keep it) and its address.
async fn echo_endpoint(
    configure: impl FnOnce(&mut EndpointConfig),
) -> (Addr<tcp::TcpEndpoint>, SocketAddr) {
    let (tx, _received) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let mut config = node_2_config(false);
    configure(&mut config);
    echo_client_requests(&config);
    tcp::start(config, collector.recipient())
        .await
        .expect("endpoint starts")
}

/// A client session on `addr`: hello, then one request; the connection, and whether the request
/// was answered (not when the node closed it).
async fn ping_session(
    addr: SocketAddr,
) -> (tokio_util::codec::Framed<TcpStream, FrameCodec>, bool) {
    use futures::{SinkExt, StreamExt};

    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = tokio_util::codec::Framed::new(stream, FrameCodec::new(MAX));
    let _ = framed
        .send(Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            token: None,
        })
        .await;
    let _ = framed
        .send(Frame::ClientRequest {
            id: 1,
            body: Bytes::from_static(b"ping"),
        })
        .await;
    let answer = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .expect("an answer or a close in time");
    let answered = matches!(answer, Some(Ok(Frame::ClientResponse { id: 1, .. })));
    (framed, answered)
}

fn hello(version: u32, node: u64) -> Vec<u8> {
    encode(&[Frame::Hello {
        protocol_version: version,
        cluster_id: "hostile".into(),
        node_id: NodeId(node),
    }])
    .to_vec()
}

fn vote(term: u64) -> Envelope {
    Envelope {
        from: NodeId(1),
        to: NodeId(2),
        message: Message::RequestVote(RequestVote {
            term: Term(term),
            last_log_id: LogId::ZERO,
            pre_vote: false,
            leadership_transfer: false,
        }),
    }
}

/// Writes `bytes` on a fresh connection, then waits until the endpoint closes it (or 200 ms pass:
/// a hello with nothing wrong after it may legitimately stay open).
async fn send_raw(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
}

/// Seeded garbage at a real endpoint: random bytes, a valid hello followed by random or mutated
/// frames, hellos of other versions. Every envelope the endpoint delivers is a well-formed one
/// from the node its connection's hello named, to this node; afterwards a valid connection is
/// still served.
#[actix_rt::test]
async fn an_endpoint_fed_garbage_keeps_serving() {
    let (tx, mut received) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let (endpoint, addr) = tcp::start(node_2_config(true), collector.recipient())
        .await
        .expect("endpoint starts");

    let mut rng = SmallRng::seed_from_u64(2024);
    let valid = encode(&[Frame::Raft(vote(5))]).to_vec();
    for round in 0..40 {
        let mut bytes = Vec::new();
        match round % 4 {
            0 => bytes.extend((0..rng.gen_range(1..300)).map(|_| rng.gen::<u8>())),
            1 => {
                bytes.extend(hello(PROTOCOL_VERSION, 1));
                bytes.extend((0..rng.gen_range(1..300)).map(|_| rng.gen::<u8>()));
            }
            2 => {
                bytes.extend(hello(PROTOCOL_VERSION, 1));
                let mut frame = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(4..frame.len());
                    frame[i] ^= rng.gen_range(1..=255);
                }
                bytes.extend(frame);
            }
            _ => {
                let version = [0, PROTOCOL_VERSION + 1, u32::MAX][rng.gen_range(0..3)];
                bytes.extend(hello(version, 1));
                bytes.extend(&valid);
            }
        }
        send_raw(addr, &bytes).await;
    }
    // Whatever got through is from node 1 to node 2 (a mutated term or vote flag may pass).
    while let Ok(envelope) = received.try_recv() {
        assert_eq!((envelope.from, envelope.to), (NodeId(1), NodeId(2)));
        assert!(
            matches!(envelope.message, Message::RequestVote(_)),
            "{envelope:?}"
        );
    }
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut good = hello(PROTOCOL_VERSION, 1);
    good.extend(encode(&[Frame::Raft(vote(77))]).to_vec());
    stream.write_all(&good).await.expect("write");
    let delivered = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("delivered in time")
        .expect("collector alive");
    assert_eq!(delivered, vote(77));
    let stats = endpoint.send(GetStats).await.expect("stats");
    assert!(stats.rejected_connections >= 20, "{stats:?}");
}

/// How a test's handler answers: every answer is `answer` bytes, built after a short wait (as a
/// read waits for the state machine), with or without stating that size beforehand, and saying
/// whether a request may be run again ([`PreparedAnswer::may_run_again`]).
#[derive(Default)]
struct Answers {
    answer: usize,
    stated: bool,
    may_run_again: bool,
    /// How many answers are in memory now, and the most at once.
    live: Arc<(AtomicUsize, AtomicUsize)>,
}

/// Counts an answer's bytes as live until the last copy of them is dropped.
struct LiveAnswer {
    bytes: Vec<u8>,
    live: Arc<(AtomicUsize, AtomicUsize)>,
}

impl LiveAnswer {
    fn counted(bytes: Vec<u8>, live: Arc<(AtomicUsize, AtomicUsize)>) -> Bytes {
        let now = live.0.fetch_add(1, Ordering::SeqCst) + 1;
        live.1.fetch_max(now, Ordering::SeqCst);
        Bytes::from_owner(LiveAnswer { bytes, live })
    }
}

impl AsRef<[u8]> for LiveAnswer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for LiveAnswer {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Answers {
    /// The handler, and how many answers it has built.
    fn handler(&self) -> (ClientHandler, Arc<AtomicUsize>) {
        let built = Arc::new(AtomicUsize::new(0));
        let counted = built.clone();
        let answer = self.answer;
        let bound = if self.stated {
            answer
        } else {
            ClientHandler::DEFAULT_ANSWER_BOUND
        };
        let may_run_again = self.may_run_again;
        let live = self.live.clone();
        let handler = ClientHandler::bounded(move |_body: Bytes| {
            let counted = counted.clone();
            let live = live.clone();
            PreparedAnswer {
                bound,
                answer: Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                    LiveAnswer::counted(vec![7u8; answer], live)
                }),
                may_run_again,
            }
        });
        (handler, built)
    }

    /// Node 2's endpoint answering client sessions so, its sessions sharing at most `node_budget`
    /// bytes when given: the endpoint (keep it), its address, and how many answers it has built.
    async fn serve(
        &self,
        node_budget: Option<usize>,
    ) -> (Addr<tcp::TcpEndpoint>, SocketAddr, Arc<AtomicUsize>) {
        let (tx, _received) = mpsc::unbounded_channel();
        let collector = Collector(tx).start();
        let mut config = node_2_config(false);
        config.max_frame_bytes = 2 * self.answer;
        if let Some(bytes) = node_budget {
            config.max_unwritten_answer_bytes = bytes;
        }
        let (handler, built) = self.handler();
        config.client_handler.set(handler);
        let (endpoint, addr) = tcp::start(config, collector.recipient())
            .await
            .expect("endpoint starts");
        (endpoint, addr, built)
    }
}

/// Open a client session on `addr` and send `sent` requests without reading anything (from a
/// task of its own: the node stops reading, so the writes may wait). Returns the socket's read
/// half and the writing task.
async fn pipeline_without_reading(
    addr: SocketAddr,
    sent: u64,
    max_frame: usize,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    actix_rt::task::JoinHandle<tokio::net::tcp::OwnedWriteHalf>,
) {
    let (read, mut write) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    let mut requests = encode(&[Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    }]);
    let mut codec = FrameCodec::new(max_frame);
    for id in 0..sent {
        let request = Frame::ClientRequest {
            id,
            body: Bytes::from_static(b"get"),
        };
        codec.encode(request, &mut requests).expect("encodes");
    }
    let writing = actix_rt::spawn(async move {
        // The node may close the session before it has read them all (the last test).
        let _ = write.write_all(&requests).await;
        write
    });
    (read, writing)
}

/// Wait until `built` stops growing (the node has built all it will while nothing is read).
async fn settled(built: &AtomicUsize) -> usize {
    let mut seen = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = built.load(Ordering::SeqCst);
        if now == seen && now > 0 {
            break;
        }
        seen = now;
    }
    seen
}

/// Read answers from `read` until `sent` distinct ones have come, each `answer` bytes.
async fn read_every_answer(read: tokio::net::tcp::OwnedReadHalf, sent: u64, answer: usize) {
    use futures::StreamExt;
    let mut answers = tokio_util::codec::FramedRead::new(read, FrameCodec::new(2 * answer));
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < sent as usize {
        let frame = tokio::time::timeout(Duration::from_secs(20), answers.next())
            .await
            .expect("answers keep coming")
            .expect("the session stays open")
            .expect("a frame");
        match frame {
            Frame::ClientResponse { id, body } => {
                assert_eq!(body.len(), answer);
                assert!(ids.insert(id), "answer {id} twice");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A client pipelines `sent` requests to `addr` and reads nothing: the node builds at most `bound`
/// answers meanwhile (counted by `built`); then the client reads, and every answer arrives.
async fn held_back_then_all_answered(
    addr: SocketAddr,
    built: &AtomicUsize,
    sent: u64,
    answer: usize,
    bound: usize,
) {
    assert!(bound < sent as usize);
    let (read, writing) = pipeline_without_reading(addr, sent, 2 * answer).await;
    let answered = settled(built).await;
    assert!(
        answered > 0 && answered <= bound,
        "{answered} answers of {answer} bytes built while the client read nothing (bound {bound})"
    );
    read_every_answer(read, sent, answer).await;
    assert_eq!(built.load(Ordering::SeqCst), sent as usize);
    drop(writing.await.expect("writer"));
}

/// What the kernel's socket buffers on loopback may hold of a session's answers (a few MiB each
/// way), in bytes.
const SOCKET_BUFFERS: usize = 16 << 20;

/// A client that pipelines requests and never reads its answers is held back: its session
/// stops reading once `MAX_REQUESTS_IN_FLIGHT` requests are unanswered on the wire or its budget
/// (`SESSION_ANSWER_BYTES`) is held, so the node answers (and holds in memory) a bounded number
/// of them, not every request the client sends; once the client reads, every answer arrives.
/// Here the handler states no bound: each answer is charged in full once built.
#[actix_rt::test]
async fn a_client_that_never_reads_its_answers_is_held_back_and_loses_nothing() {
    use raftor_actors::network::answer_budget::SESSION_ANSWER_BYTES;
    use raftor_actors::network::client::MAX_REQUESTS_IN_FLIGHT;

    const ANSWER: usize = 64 << 10;
    let answers = Answers {
        answer: ANSWER,
        stated: false,
        ..Answers::default()
    };
    let (_endpoint, addr, built) = answers.serve(None).await;
    // The requests in flight, the answers within the budget, and the socket buffers.
    let bound = MAX_REQUESTS_IN_FLIGHT + (SESSION_ANSWER_BYTES + SOCKET_BUFFERS) / ANSWER;
    held_back_then_all_answered(addr, &built, 4_000, ANSWER, bound).await;
}

/// When the handler states how large its answers may be, the session reserves that room before
/// it runs a request: a client pipelining large reads and never taking the answers makes the
/// node build no more of them than its budget holds (before, every request admitted, up to
/// `MAX_REQUESTS_IN_FLIGHT`, built its answer and then waited with it for room).
#[actix_rt::test]
async fn answers_are_not_built_past_the_session_budget_when_their_size_is_stated() {
    use raftor_actors::network::answer_budget::SESSION_ANSWER_BYTES;

    const ANSWER: usize = 1 << 20;
    let answers = Answers {
        answer: ANSWER,
        stated: true,
        ..Answers::default()
    };
    let (_endpoint, addr, built) = answers.serve(None).await;
    let bound = (SESSION_ANSWER_BYTES + SOCKET_BUFFERS) / ANSWER;
    held_back_then_all_answered(addr, &built, 400, ANSWER, bound).await;
}

/// Answers that outgrow the room their requests stated (a watch poll's batch, every lease, a
/// retried write's recorded result) are not all built and held at once, uncharged, while they
/// wait for room: a request that may be run again has an answer it finds no room for dropped,
/// and is run again once its size is free. Before, a client pipelining such requests and reading
/// nothing had every request in flight (`MAX_REQUESTS_IN_FLIGHT`) build its answer and hold it.
#[actix_rt::test]
async fn answers_larger_than_their_stated_bound_are_not_held_uncharged() {
    use raftor_actors::network::client::MAX_REQUESTS_IN_FLIGHT;

    const ANSWER: usize = 256 << 10;
    const NODE_BUDGET: usize = 8 << 20;
    let answers = Answers {
        answer: ANSWER,
        stated: false,
        may_run_again: true,
        ..Answers::default()
    };
    let (_endpoint, addr, built) = answers.serve(Some(NODE_BUDGET)).await;
    let sent = MAX_REQUESTS_IN_FLIGHT as u64;
    let (read, writing) = pipeline_without_reading(addr, sent, 2 * ANSWER).await;
    settled(&built).await;
    // What the node's budget holds, what the socket buffers took, and a few being dropped.
    let bound = (NODE_BUDGET + SOCKET_BUFFERS) / ANSWER + 16;
    let most = answers.live.1.load(Ordering::SeqCst);
    assert!(
        most <= bound,
        "{most} answers of {ANSWER} bytes in memory at once while the client read nothing \
         (bound {bound}, {sent} requests)"
    );
    read_every_answer(read, sent, ANSWER).await;
    drop(writing.await.expect("writer"));
}

/// Clients that never read cannot take a node's memory between them: sessions share the node's
/// budget (`max_unwritten_answer_bytes`), and while another session waits for room in it, a
/// session whose client has taken no answer for `STALLED_ANSWER_LIMIT` is closed. So a client
/// that reads gets its answer after at most about that long, and the silent one loses its
/// session.
#[actix_rt::test]
async fn a_session_that_takes_no_answers_while_others_wait_for_room_is_closed() {
    use raftor_actors::network::client::{ClientConnection, STALLED_ANSWER_LIMIT};

    const ANSWER: usize = 1 << 20;
    const SENT: u64 = 400;
    let answers = Answers {
        answer: ANSWER,
        stated: true,
        ..Answers::default()
    };
    let (_endpoint, addr, built) = answers.serve(Some(8 * ANSWER)).await;

    let (read, writing) = pipeline_without_reading(addr, SENT, 2 * ANSWER).await;
    let held_back = settled(&built).await;
    assert!(
        held_back < SENT as usize / 2,
        "{held_back} answers built while the client read nothing"
    );

    let reader = ClientConnection::connect(&addr.to_string(), 2 * ANSWER)
        .await
        .expect("a second client connects");
    let asked = tokio::time::Instant::now();
    let answer = tokio::time::timeout(
        STALLED_ANSWER_LIMIT * 4,
        reader.request(Bytes::from_static(b"get")),
    )
    .await
    .expect("the reading client is answered once the silent session is closed")
    .expect("an answer");
    assert_eq!(answer.len(), ANSWER);
    assert!(
        asked.elapsed() >= STALLED_ANSWER_LIMIT / 2,
        "answered at once: the node's budget never ran short"
    );

    // The silent client finds its session closed: some answers, then the end, never all 400.
    use futures::StreamExt;
    let mut answers = tokio_util::codec::FramedRead::new(read, FrameCodec::new(2 * ANSWER));
    let mut received = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), answers.next())
            .await
            .expect("the stream ends");
        match next {
            Some(Ok(Frame::ClientResponse { .. })) => received += 1,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            None | Some(Err(_)) => break,
        }
    }
    assert!(received < SENT, "the silent session was never closed");
    drop(writing.await.expect("writer"));
}

/// A client that sends the start of a large request and stops cannot hold the node's memory:
/// a session reads the rest of a large request only once the node's budget has room for the
/// length its header declares, and a request that stops arriving while other sessions wait for
/// room loses its session after `STALLED_REQUEST_LIMIT`. Here one client sends 1 MiB of a 3 MiB
/// request and stops, on a node whose budget for arriving requests is 4 MiB: a small request
/// from another client is answered at once (small requests need no room); a third client's
/// 2 MiB request waits for room (it is not read into memory beside the first) and is answered
/// once the first session is closed, which the first client finds closed. On tokio's paused
/// clock.
#[test]
fn a_request_that_stops_arriving_holds_its_room_only_while_no_one_waits_for_it() {
    use raftor_actors::network::client::ClientConnection;
    use raftor_actors::network::incoming::{SMALL_REQUEST_BYTES, STALLED_REQUEST_LIMIT};

    const STALLED: usize = 3 << 20;
    const WAITING: usize = 2 << 20;
    // Timers wait no real time; the sockets are real.
    support::run_paused(|| async {
        let (tx, _received) = mpsc::unbounded_channel();
        let collector = Collector(tx).start();
        let mut config = node_2_config(false);
        config.max_frame_bytes = 8 << 20;
        config.max_unwritten_answer_bytes = 4 << 20;
        config.client_handler.set(ClientHandler::new(|body: Bytes| {
            Box::pin(async move { Bytes::from(body.len().to_string()) })
        }));
        let (_endpoint, addr) = tcp::start(config, collector.recipient())
            .await
            .expect("endpoint starts");

        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        let mut start = encode(&[Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            token: None,
        }]);
        let mut request = BytesMut::new();
        FrameCodec::new(8 << 20)
            .encode(
                Frame::ClientRequest {
                    id: 1,
                    body: Bytes::from(vec![1u8; STALLED]),
                },
                &mut request,
            )
            .expect("encodes");
        start.extend_from_slice(&request[..1 << 20]);
        stalled
            .write_all(&start)
            .await
            .expect("the start of the request");
        // The node has read the header and reserved room for the whole request.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let small = ClientConnection::connect(&addr.to_string(), 8 << 20)
            .await
            .expect("a second client connects");
        let asked = tokio::time::Instant::now();
        let answer = small
            .request(Bytes::from(vec![3u8; SMALL_REQUEST_BYTES / 2]))
            .await
            .expect("an answer");
        assert_eq!(answer, Bytes::from((SMALL_REQUEST_BYTES / 2).to_string()));
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "small requests need no room"
        );

        let waiting = ClientConnection::connect(&addr.to_string(), 8 << 20)
            .await
            .expect("a third client connects");
        let began = tokio::time::Instant::now();
        let answer = tokio::time::timeout(
            STALLED_REQUEST_LIMIT * 4,
            waiting.request(Bytes::from(vec![2u8; WAITING])),
        )
        .await
        .expect("answered once the slow request's session is closed")
        .expect("an answer");
        assert_eq!(answer, Bytes::from(WAITING.to_string()));
        let waited = began.elapsed();
        assert!(
            waited >= STALLED_REQUEST_LIMIT - Duration::from_secs(1)
                && waited <= STALLED_REQUEST_LIMIT + Duration::from_secs(2),
            "answered after {waited:?}: room for both requests at once, or the slow one held its \
             room while another waited for it"
        );

        let mut rest = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(1), stalled.read(&mut rest))
            .await
            .expect("the slow session is closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    });
}

/// Client sessions past `max_client_sessions` are turned away, and a session that ends frees
/// its place.
#[actix_rt::test]
async fn client_sessions_past_the_limit_are_turned_away() {
    let (_endpoint, addr) = echo_endpoint(|config| config.max_client_sessions = 2).await;
    let session = || ping_session(addr);
    let (first, answered) = session().await;
    assert!(answered, "the first session is served");
    let (_second, answered) = session().await;
    assert!(answered, "the second session is served");
    let (_third, answered) = session().await;
    assert!(!answered, "a third session is turned away");
    drop(first);
    // The first session's end frees its place (once the node has seen the close).
    let mut served = false;
    for _ in 0..50 {
        let (_again, answered) = session().await;
        if answered {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a session is served again once one ended");
}

/// Connections that have not said hello hold at most `max_opening_connections` places: one
/// accepted past them closes the oldest of them, so connections that never say hello neither
/// take every descriptor (before, they were not counted) nor shut out a client or a peer that
/// connects after them.
#[actix_rt::test]
async fn a_connection_past_the_opening_limit_closes_the_oldest_silent_one() {
    let (_endpoint, addr) = echo_endpoint(|config| config.max_opening_connections = 2).await;
    let mut oldest = TcpStream::connect(addr).await.expect("connect");
    // (Accepted in order: the second's place is taken after the oldest's.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A client past the limit says hello and is served.
    let (_client, answered) = ping_session(addr).await;
    assert!(answered, "a client past the limit is served");
    // The oldest silent connection made room, at once (not after the 10 s a hello may take); the
    // other still waits.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), oldest.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the oldest is closed: {closed:?}"
    );
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(waiting.is_err(), "the second still waits: {waiting:?}");
}

/// Every connection the endpoint accepts, a client session's or a peer's, is probed with TCP
/// keepalive and bounds unacknowledged data (`network::keepalive`): a client or peer whose
/// machine vanished does not hold its session, descriptor and task for good.
#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn accepted_connections_find_out_when_the_other_end_is_gone() {
    let (tx, mut received) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let config = node_2_config(true);
    echo_client_requests(&config);
    let (_endpoint, addr) = tcp::start(config, collector.recipient())
        .await
        .expect("endpoint starts");

    // A client session, answered once (so the endpoint has accepted and opened it).
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let mut opening = encode(&[Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    }]);
    FrameCodec::new(MAX)
        .encode(
            Frame::ClientRequest {
                id: 1,
                body: Bytes::from_static(b"ping"),
            },
            &mut opening,
        )
        .expect("encodes");
    client.write_all(&opening).await.expect("write");
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("answered");
    // A peer's connection, which delivered a message.
    let mut peer = TcpStream::connect(addr).await.expect("connect");
    let mut hello_and_vote = hello(PROTOCOL_VERSION, 1);
    hello_and_vote.extend(encode(&[Frame::Raft(vote(3))]).to_vec());
    peer.write_all(&hello_and_vote).await.expect("write");
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("delivered in time")
        .expect("collector alive");

    for (what, stream) in [("client session", &client), ("peer", &peer)] {
        assert_probed(addr, stream.local_addr().expect("address"), what);
    }
}

/// An AppendEntries of more than `MAX_ENTRIES_PER_MESSAGE` entries is refused by the decoder (a
/// blank entry takes 3 bytes on the wire and over a hundred in memory: a 64 MiB frame of them
/// decoded to gigabytes); one of exactly that many decodes.
#[test]
fn an_append_entries_over_the_entry_bound_is_refused() {
    use raftor_core::message::MAX_ENTRIES_PER_MESSAGE;
    let append = |count: u64| {
        Frame::Raft(Envelope {
            from: NodeId(1),
            to: NodeId(2),
            message: Message::AppendEntries(AppendEntries {
                term: Term(1),
                prev_log_id: LogId::ZERO,
                entries: (1..=count)
                    .map(|index| Entry {
                        term: Term(1),
                        index: LogIndex(index),
                        payload: EntryPayload::Blank,
                    })
                    .collect(),
                leader_commit: LogIndex::ZERO,
                sync_may_wait: false,
                request_id: 1,
            }),
        })
    };
    let max = 4 << 20;
    let mut codec = FrameCodec::new(max);
    let mut at_bound = BytesMut::new();
    codec
        .encode(append(MAX_ENTRIES_PER_MESSAGE), &mut at_bound)
        .expect("encodes");
    assert_eq!(
        codec.decode(&mut at_bound).expect("decodes"),
        Some(append(MAX_ENTRIES_PER_MESSAGE))
    );
    let mut over = BytesMut::new();
    codec
        .encode(append(MAX_ENTRIES_PER_MESSAGE + 1), &mut over)
        .expect("encodes");
    assert!(over.len() < max / 2, "a small frame: {} bytes", over.len());
    let refused = codec.decode(&mut over);
    assert!(matches!(refused, Err(CodecError::Decode(_))), "{refused:?}");
}
