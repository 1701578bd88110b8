//! The native client protocol, carried on the Raft port: a connection that opens with
//! [`Frame::ClientHello`] instead of a peer's `Hello` is a client session. The client sends
//! [`Frame::ClientRequest`]s, each with an id of its choosing, and the node answers each with a
//! [`Frame::ClientResponse`] of the same id, in any order (requests are pipelined).
//!
//! The bodies are opaque here: the service that installs the [`ClientHandler`] gives them meaning.

use crate::network::answer_budget::{Held, NodeAnswerBudget, SessionBudget};
use crate::network::codec::{Credential, Frame, FrameCodec, PROTOCOL_VERSION};
use crate::network::incoming::{IncomingFrames, SMALL_REQUEST_BYTES};
use crate::network::stream::{split_plain, split_tls, ReadHalf, WriteHalf};
use crate::network::tls::{presented_chain, ClientTls};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::{SinkExt, StreamExt};
use raftor_core::NodeId;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Answers one request body with a response body, and says beforehand how large that answer may
/// be, so the session can hold room for it before it is computed ([`super::answer_budget`]).
#[derive(Clone)]
pub struct ClientHandler {
    prepare: Arc<dyn Fn(Bytes) -> PreparedAnswer + Send + Sync>,
}

/// The answer to one request, not computed yet (nothing runs until it is polled), and the most
/// bytes it may take.
pub struct PreparedAnswer {
    /// The largest answer `answer` may give: the session reserves this much (with the request's
    /// body) before it polls `answer`, and reads no further request while its budget has no room
    /// for it. A bound too small lets the rest be charged only once the answer is built; one too
    /// large limits how many requests a session runs at once.
    pub bound: usize,
    pub answer: LocalBoxFuture<'static, Bytes>,
    /// The request may be run again with the same outcome (a read that names where it starts, a
    /// write its client's session makes exactly-once). An answer of it larger than `bound` that
    /// finds no room at once is then dropped, its size waited for with nothing held, and the
    /// request run again until an answer fits: built answers are never held uncharged while they
    /// wait, however many a client asks for. The request is kept meanwhile, and charged twice its
    /// size (the handler holds a decoded copy). Otherwise such an answer waits for room as it is,
    /// charged nothing meanwhile.
    pub may_run_again: bool,
}

impl ClientHandler {
    /// The room reserved for an answer when the handler states no bound ([`ClientHandler::new`]):
    /// an answer larger than this is charged the rest once computed.
    pub const DEFAULT_ANSWER_BOUND: usize = 4096;

    /// A handler answering with `answer`, whose answers' sizes are not known beforehand (each is
    /// reserved [`Self::DEFAULT_ANSWER_BOUND`] and charged the rest once computed).
    pub fn new(
        answer: impl Fn(Bytes) -> LocalBoxFuture<'static, Bytes> + Send + Sync + 'static,
    ) -> ClientHandler {
        ClientHandler::bounded(move |body| PreparedAnswer {
            bound: Self::DEFAULT_ANSWER_BOUND,
            answer: answer(body),
            may_run_again: false,
        })
    }

    /// A handler that states, for each request, the largest answer it may give
    /// ([`PreparedAnswer::bound`]) before the answer is computed.
    pub fn bounded(prepare: impl Fn(Bytes) -> PreparedAnswer + Send + Sync + 'static) -> Self {
        ClientHandler {
            prepare: Arc::new(prepare),
        }
    }

    /// The answer to `body`, with its bound; nothing runs until the answer is polled.
    pub fn prepare(&self, body: Bytes) -> PreparedAnswer {
        (self.prepare)(body)
    }
}

impl fmt::Debug for ClientHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientHandler")
    }
}

/// Who opened a client session, as far as the endpoint knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The member whose certificate the client presented, verified against the cluster's CA (a
    /// node forwarding a request to the leader). Always `None` without TLS.
    pub member: Option<NodeId>,
    /// The bearer token sent in the client's hello, if any (not checked here).
    pub token: Option<Credential>,
}

/// Opens a session: the handler answering the requests of a client of this identity (which
/// decides what it may do).
pub type ClientSessions = Arc<dyn Fn(&ClientIdentity) -> ClientHandler + Send + Sync>;

/// Where the endpoint finds how to answer client sessions. Empty until the service installs it; a
/// client that connects before then is disconnected and retries.
#[derive(Clone, Default)]
pub struct ClientHandlerSlot(Arc<OnceLock<ClientSessions>>);

impl ClientHandlerSlot {
    /// Install one handler for every session, whoever opens it; a second installation is
    /// ignored (returns false).
    pub fn set(&self, handler: ClientHandler) -> bool {
        self.set_sessions(Arc::new(move |_: &ClientIdentity| handler.clone()))
    }

    /// Install a handler chosen per session by who opens it; a second installation is ignored
    /// (returns false).
    pub fn set_sessions(&self, sessions: ClientSessions) -> bool {
        self.0.set(sessions).is_ok()
    }

    /// The handler for a session opened by `identity`, once one is installed.
    pub fn open(&self, identity: &ClientIdentity) -> Option<ClientHandler> {
        self.0.get().map(|sessions| sessions(identity))
    }
}

impl fmt::Debug for ClientHandlerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.get().is_some() {
            "installed"
        } else {
            "empty"
        };
        write!(f, "ClientHandlerSlot({state})")
    }
}

/// The most client connections a node serves at once by default, for each protocol (native
/// sessions on the Raft port; HTTP connections): 10,000, or a quarter of the process's limit on
/// open files when that is lower (at least 16), so clients cannot take the descriptors the log
/// store and the peers' connections need. A connection past it is closed at once (native) or
/// waits to be accepted (HTTP).
pub fn default_client_connection_limit() -> usize {
    const MOST: usize = 10_000;
    #[cfg(unix)]
    if let Some(limit) = open_files_limit().filter(|l| l.rlim_cur != libc::RLIM_INFINITY) {
        return usize::try_from(limit.rlim_cur / 4)
            .unwrap_or(MOST)
            .clamp(16, MOST);
    }
    MOST
}

/// This process's limit on open files (soft and hard), if it can be read.
#[cfg(unix)]
fn open_files_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is handed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Raise this process's soft limit on open files to its hard limit (Go's runtime does so for
/// etcd): a node holds a descriptor per client connection, peer connection and RocksDB file.
/// Returns the soft limit in force afterwards, `None` where it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = open_files_limit()?;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads only the struct it is handed.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// How many of a session's requests may be read and not yet answered on the wire: past it, the
/// session reads no more until an answer is written (TCP then holds the client back). A node
/// forwarding its clients' requests to the leader uses one session for all of them, and a
/// client's watches each hold a request open for up to 10 s (a long poll) on its session.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 1024;

/// How long a session's answer may wait for its client to take it, while other sessions wait
/// for room in the node's budget, before the session is closed to free its share (as Redis
/// disconnects a client whose output buffer stays over its soft limit).
pub const STALLED_ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// What an answer holds on its way to the client: its place among the requests in flight and its
/// bytes in the budgets, both given back once it is written.
struct Unwritten {
    frame: Frame,
    request: OwnedSemaphorePermit,
    bytes: Held,
}

/// Serve one client session until the client closes it, breaks the protocol, stops taking its
/// answers while the node is short of room for others' ([`STALLED_ANSWER_LIMIT`]), takes too long
/// to send a request it has begun ([`super::incoming::arrival_limit`]), or `cancel` fires: the
/// answers being computed are then still written, unless `abort` fires too (cancelled with
/// `cancel`, it closes the connection at once).
/// Requests are answered concurrently, up to [`MAX_REQUESTS_IN_FLIGHT`] at a time. Each request
/// is read once the node's budget ([`super::answer_budget`]) has room for it as it arrives, and
/// admitted once the session's and the node's budgets have room for its body and the largest
/// answer its handler may give.
pub(crate) async fn serve_session(
    frames: FramedRead<ReadHalf, FrameCodec>,
    write: WriteHalf,
    handler: ClientHandler,
    max_frame_bytes: usize,
    node_budget: Arc<NodeAnswerBudget>,
    cancel: CancellationToken,
    abort: CancellationToken,
) -> Result<(), String> {
    let in_flight = Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    let budget = Rc::new(SessionBudget::new(node_budget));
    let writing = Rc::new(WriterProgress::default());
    // Never full: every answer in it holds one of the permits in flight.
    let (answers, to_write) = mpsc::channel::<Unwritten>(MAX_REQUESTS_IN_FLIGHT);
    // Ends the session early: `cancel`, or the writer finding the client stalled (then `ended`
    // alone is cancelled).
    let ended = cancel.child_token();
    let why_ended = || {
        if cancel.is_cancelled() {
            Ok(())
        } else {
            Err(stalled_reason())
        }
    };
    let mut writer = {
        let budget = budget.clone();
        let ended = ended.clone();
        let writing = writing.clone();
        let sink = FramedWrite::new(write, FrameCodec::new(max_frame_bytes));
        actix_rt::spawn(async move {
            let written = write_answers(sink, to_write, &budget, &writing).await;
            if let Err(WriteEnd::Stalled) = written {
                ended.cancel();
            }
        })
    };
    let mut incoming = IncomingFrames::new(frames);
    let result = loop {
        if ended.is_cancelled() {
            break why_ended();
        }
        // (Each wait tries without waiting first: the common case sets up no wake-ups.)
        let request = match unless_ended(&ended, in_flight.clone().acquire_owned()).await {
            Some(Ok(request)) => request,
            Some(Err(_closed)) => break Ok(()),
            None => break why_ended(),
        };
        // The request's length from its header, room for it, then the rest of it.
        let Some(length) = unless_ended(&ended, incoming.next_length()).await else {
            break why_ended();
        };
        let length = match length {
            Ok(Some(length)) => length,
            Ok(None) => break Ok(()),
            Err(error) => break Err(error.to_string()),
        };
        let arriving = if length <= SMALL_REQUEST_BYTES {
            None
        } else {
            match unless_ended(&ended, budget.reserve_arriving(length)).await {
                Some(arriving) => Some(arriving),
                None => break why_ended(),
            }
        };
        let others_wait = || budget.node_is_short();
        let Some(next) = unless_ended(&ended, incoming.frame(length, others_wait)).await else {
            break why_ended();
        };
        let (id, body) = match next {
            Ok(Frame::ClientRequest { id, body }) => (id, body),
            Ok(_) => break Err("unexpected frame in a client session".to_owned()),
            Err(error) => break Err(error.to_string()),
        };
        // Room for the request and the largest answer it may get, before it runs (a client that
        // stops reading its answers stops being read).
        let body_bytes = body.len();
        let request_body = body.clone();
        let PreparedAnswer {
            bound,
            answer,
            may_run_again,
        } = handler.prepare(body);
        // A request that may be run again is kept until its answer fits: charged twice, since the
        // handler holds a decoded copy of it meanwhile.
        let again = may_run_again.then(|| (handler.clone(), request_body));
        let kept = if again.is_some() { body_bytes } else { 0 };
        let cost = body_bytes.saturating_add(kept).saturating_add(bound);
        // With no room now, first wait until the client takes what it was sent: a session whose
        // client reads nothing does not queue for the node's room ahead of those that read.
        let mut bytes = match budget.try_reserve(cost) {
            Some(bytes) => bytes,
            None => tokio::select! {
                _ = ended.cancelled() => break why_ended(),
                bytes = async {
                    writing.unblocked().await;
                    budget.reserve(cost).await
                } => bytes,
            },
        };
        // Charged as a request being answered now.
        drop(arriving);
        let answers = answers.clone();
        let budget = budget.clone();
        actix_rt::spawn(async move {
            // An answer nobody will write (the session aborted, or its client stopped taking
            // answers) is not waited for.
            let mut body = tokio::select! {
                body = answer => body,
                _ = answers.closed() => return,
            };
            // Until the answer holds room for its size: an answer past its bound takes the rest
            // if there is room now; else one that may be had again is dropped rather than held
            // uncharged (a client pipelining requests whose answers outgrow their bounds would
            // have them all built and held at once), its size (and the kept request) waited for
            // with nothing held, and the request run again, until an answer fits.
            loop {
                if budget.shrink(&mut bytes, body.len()) {
                    break;
                }
                if let Some(more) = budget.try_reserve(body.len()) {
                    bytes = more;
                    break;
                }
                let Some((handler, request_body)) = &again else {
                    tokio::select! {
                        _ = budget.grow(&mut bytes, body.len()) => break,
                        // The session ended (its client stopped taking answers): nothing waits.
                        _ = answers.closed() => return,
                    }
                };
                let wanted = body.len().saturating_add(request_body.len());
                drop(body);
                tokio::select! {
                    _ = budget.grow(&mut bytes, wanted) => {}
                    _ = answers.closed() => return,
                }
                body = handler.prepare(request_body.clone()).answer.await;
            }
            drop(again);
            let frame = Frame::ClientResponse { id, body };
            let _ = answers
                .send(Unwritten {
                    frame,
                    request,
                    bytes,
                })
                .await;
        });
    };
    drop(answers);
    // Answers still being computed finish and are written before the writer ends, unless the
    // session is aborted.
    tokio::select! {
        _ = &mut writer => {}
        _ = abort.cancelled() => writer.abort(),
    }
    result
}

/// Write the session's answers as they come, a batch at a time, until the session ends or a write
/// fails or stalls ([`unless_stalled`]). Each answer's budget and place in flight are given back
/// once it is in the socket's buffer.
async fn write_answers(
    mut sink: FramedWrite<WriteHalf, FrameCodec>,
    mut to_write: mpsc::Receiver<Unwritten>,
    budget: &SessionBudget,
    writing: &WriterProgress,
) -> Result<(), WriteEnd> {
    let mut written = Vec::new();
    while let Some(first) = to_write.recv().await {
        let mut next = Some(first);
        while let Some(answer) = next.take().or_else(|| to_write.try_recv().ok()) {
            written.push((answer.request, answer.bytes));
            unless_stalled(sink.feed(answer.frame), budget, writing).await?;
        }
        unless_stalled(SinkExt::<Frame>::flush(&mut sink), budget, writing).await?;
        // On the wire (in the socket's buffer): the session may read more.
        written.clear();
    }
    Ok(())
}

/// `work`'s output, or `None` if `ended` fires first. `work` is tried once before the wake-up for
/// `ended` is set up: the usual case, work done at once, sets up none.
async fn unless_ended<T>(
    ended: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    if let std::task::Poll::Ready(done) = futures::poll!(work.as_mut()) {
        return Some(done);
    }
    tokio::select! {
        _ = ended.cancelled() => None,
        done = work => Some(done),
    }
}

fn stalled_reason() -> String {
    format!(
        "the client took no answer for {} s while the node was short of room for answers",
        STALLED_ANSWER_LIMIT.as_secs()
    )
}

/// Whether a session's writer waits for its client to take answers (the socket's buffer is
/// full), and a wake-up when it stops waiting.
#[derive(Default)]
struct WriterProgress {
    blocked: Cell<bool>,
    moved: tokio::sync::Notify,
}

/// Marks the writer blocked while it lives.
struct Blocked<'a>(&'a WriterProgress);

impl WriterProgress {
    fn block(&self) -> Blocked<'_> {
        self.blocked.set(true);
        Blocked(self)
    }

    /// Returns once the writer is not blocked.
    async fn unblocked(&self) {
        loop {
            let moved = self.moved.notified();
            if !self.blocked.get() {
                return;
            }
            moved.await;
        }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.blocked.set(false);
        self.0.moved.notify_waiters();
    }
}

/// Why the writer stopped.
enum WriteEnd {
    /// The connection failed.
    Failed,
    /// The client has not taken an answer for [`STALLED_ANSWER_LIMIT`], and other sessions wait
    /// for the node's room.
    Stalled,
}

/// Run `write` (one answer fed to the connection, or a flush: each waits for at most about one
/// answer's bytes to leave), giving up once it has waited [`STALLED_ANSWER_LIMIT`] or longer while
/// another session waits for room in the node's budget. A write that is done at once (the usual
/// case) sets no timer.
async fn unless_stalled<E>(
    write: impl std::future::Future<Output = Result<(), E>>,
    budget: &SessionBudget,
    writing: &WriterProgress,
) -> Result<(), WriteEnd> {
    tokio::pin!(write);
    if let std::task::Poll::Ready(done) = futures::poll!(write.as_mut()) {
        return done.map_err(|_| WriteEnd::Failed);
    }
    let _blocked = writing.block();
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            done = &mut write => return done.map_err(|_| WriteEnd::Failed),
            _ = tokio::time::sleep(STALLED_ANSWER_LIMIT / 5) => {
                if started.elapsed() >= STALLED_ANSWER_LIMIT && budget.node_is_short() {
                    return Err(WriteEnd::Stalled);
                }
            }
        }
    }
}

/// Why a request on a [`ClientConnection`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientConnectionError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection closed before the answer came: the request may or may not have run.
    #[error("connection closed before the answer arrived")]
    Closed,
    /// The node refused the connection before reading any request (nothing ran): the reason.
    #[error("the node refused the connection: {0}")]
    Refused(String),
}

/// Whether a node's first bytes are a TLS record (an alert or a handshake, TLS 1.0–1.3): what a
/// node running TLS answers a client that speaks plain TCP to it.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, 0x01..=0x04, ..])
}

/// How a [`ClientConnection`] connects.
#[derive(Clone, Debug)]
pub struct ClientConnectOptions {
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// TLS, when the node serves it (it then serves nothing else).
    pub tls: Option<ClientTls>,
    /// The bearer token to present, when the service asks for one.
    pub token: Option<Credential>,
}

impl ClientConnectOptions {
    /// Plain TCP, no token.
    pub fn new(max_frame_bytes: usize) -> Self {
        ClientConnectOptions {
            max_frame_bytes,
            tls: None,
            token: None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// A client's connection to one node: requests are pipelined and matched to answers by id.
/// Cheap to share (`&self` methods); its tasks end when it is dropped or the connection breaks.
pub struct ClientConnection {
    requests: mpsc::Sender<(u64, Bytes)>,
    pending: Pending,
    /// Why the node refused the connection, when it said so before answering anything.
    refused: Arc<OnceLock<String>>,
    next_id: std::sync::atomic::AtomicU64,
    closed: CancellationToken,
    _close_on_drop: tokio_util::sync::DropGuard,
}

impl ClientConnection {
    /// Connect to `addr` (host:port) and open a client session, in plain TCP and without a
    /// token. Runs on any tokio runtime.
    pub async fn connect(
        addr: &str,
        max_frame_bytes: usize,
    ) -> Result<ClientConnection, ClientConnectionError> {
        Self::connect_with(addr, &ClientConnectOptions::new(max_frame_bytes)).await
    }

    /// Connect to `addr` (host:port) and open a client session as `options` say (TLS, token).
    /// Runs on any tokio runtime.
    pub async fn connect_with(
        addr: &str,
        options: &ClientConnectOptions,
    ) -> Result<ClientConnection, ClientConnectionError> {
        let max_frame_bytes = options.max_frame_bytes;
        let connect_error = |source| ClientConnectionError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let stream = TcpStream::connect(addr).await.map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let closed = CancellationToken::new();
        // Taken before anything is spawned: whatever fails below stops what was.
        let close_on_drop = closed.clone().drop_guard();
        let (read, write) = match &options.tls {
            None => split_plain(stream),
            Some(tls) => {
                let name = tls
                    .server_name_for(addr)
                    .map_err(|e| connect_error(std::io::Error::other(e.to_string())))?;
                let stream = tls
                    .connector()
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| {
                        connect_error(std::io::Error::other(format!(
                            "TLS handshake failed ({e}): does the node run TLS, and is the CA given the cluster's?"
                        )))
                    })?;
                // A member's connection closes once its reloaded files no longer trust the
                // node dialled (a CA dropped), or that node's certificate expires: its next
                // request dials afresh.
                let presented = presented_chain(stream.get_ref().1);
                if let Some(distrusted) = tls.distrust_watch(presented, name) {
                    let watch_closed = closed.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = watch_closed.cancelled() => {}
                            _ = distrusted => watch_closed.cancel(),
                        }
                    });
                }
                split_tls(stream)
            }
        };
        let mut sink = FramedWrite::new(write, FrameCodec::new(max_frame_bytes));
        sink.send(Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            token: options.token.clone(),
        })
        .await
        .map_err(|e| connect_error(std::io::Error::other(e.to_string())))?;
        let pending: Pending = Arc::default();
        let (requests, mut to_send) = mpsc::channel::<(u64, Bytes)>(1024);

        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = writer_closed.cancelled() => break,
                    request = to_send.recv() => request,
                };
                let Some((id, body)) = request else { break };
                if sink.feed(Frame::ClientRequest { id, body }).await.is_err() {
                    break;
                }
                while let Ok((id, body)) = to_send.try_recv() {
                    if sink.feed(Frame::ClientRequest { id, body }).await.is_err() {
                        break;
                    }
                }
                if SinkExt::<Frame>::flush(&mut sink).await.is_err() {
                    break;
                }
            }
            writer_closed.cancel();
        });

        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let refused: Arc<OnceLock<String>> = Arc::default();
        let reader_refused = refused.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, FrameCodec::new(max_frame_bytes));
            let mut answered = false;
            loop {
                let next = tokio::select! {
                    _ = reader_closed.cancelled() => break,
                    next = frames.next() => next,
                };
                match next {
                    Some(Err(_)) if !answered && looks_like_tls(frames.read_buffer()) => {
                        let _ = reader_refused.set(
                            "it speaks TLS: connect with the cluster's CA (--ca, RAFTOR_CA)"
                                .to_owned(),
                        );
                        break;
                    }
                    Some(Ok(Frame::ClientResponse { id, body })) => {
                        answered = true;
                        let waiter = reader_pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(body);
                        }
                    }
                    _ => break,
                }
            }
            reader_closed.cancel();
            // Dropping the waiters answers them with `Closed`.
            reader_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        });

        Ok(ClientConnection {
            requests,
            pending,
            refused,
            next_id: std::sync::atomic::AtomicU64::new(1),
            _close_on_drop: close_on_drop,
            closed,
        })
    }

    /// Send one request and wait for its answer.
    pub async fn request(&self, body: Bytes) -> Result<Bytes, ClientConnectionError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, reply);
        if self.requests.send((id, body)).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(ClientConnectionError::Closed);
        }
        answer.await.map_err(|_| self.closed_error())
    }

    /// Why a request has no answer: the node's refusal, if it refused the connection.
    fn closed_error(&self) -> ClientConnectionError {
        match self.refused.get() {
            Some(reason) => ClientConnectionError::Refused(reason.clone()),
            None => ClientConnectionError::Closed,
        }
    }

    /// Whether the connection is known to be broken.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_tls;

    #[test]
    fn a_tls_record_is_told_from_a_frame() {
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        // A frame's length prefix (a small frame), and too few bytes to tell.
        assert!(!looks_like_tls(&[0x00, 0x00, 0x01, 0x20]));
        assert!(!looks_like_tls(&[0x15]));
    }
}
