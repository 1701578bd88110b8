//! The dialling side: one writer task per peer, owning that peer's queue and connection.
//!
//! The task connects (resolving the peer's `host:port` afresh each attempt; with TLS, it then
//! completes a handshake expecting the peer's certificate to name it), says `Hello`, then
//! writes queued envelopes in batches: it feeds every envelope already queued and flushes once.
//! On any failure it drops the connection and reconnects after an exponential backoff, cut short
//! when the peer is heard from (it connects to us or sends on its connection: it is reachable
//! again); that also restarts a connection attempt that has hung for [`STALE_ATTEMPT`], whose SYN
//! may be waiting out a retransmission timer. During a
//! connection attempt envelopes wait in the bounded queue; during a backoff pause the queue is
//! drained and only the latest few envelopes are kept. Raft resends what matters.

use super::{Counters, EndpointConfig, PeerLink};
use crate::network::codec::{CodecError, Frame, FrameCodec, PROTOCOL_VERSION};
use crate::network::keepalive;
use crate::network::stream::{split_plain, split_tls, ReadHalf, WriteHalf};
use crate::network::tls::{node_name, presented_chain, until_distrusted, Presented, DISTRUSTED};
use futures::future::BoxFuture;
use futures::SinkExt;
use raftor_core::{Envelope, NodeId};
use rustls_pki_types::ServerName;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

/// How many envelopes are kept while the peer is unreachable (the latest ones).
const KEEP_WHILE_DISCONNECTED: usize = 16;
/// How long one connection attempt (resolution included) may take. Between peers a connection
/// takes milliseconds; an attempt still pending after this has lost its SYNs (the kernel resends
/// one 1 s after the first, the next only at 3 s), so a fresh one starts after the pause.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection attempt still pending this long after it began, with the peer heard from, is
/// dropped for a fresh one: its SYN was likely lost while the peer was unreachable, and the kernel
/// resends it only 1 s after the first (then at 3 s, past [`CONNECT_TIMEOUT`]). Neither an attempt
/// nor a backoff pause ends on a wake-up before this, so a peer we cannot reach while it reaches
/// us (a one-way partition) costs at most a few attempts a second.
const STALE_ATTEMPT: Duration = Duration::from_millis(200);
/// How long one batch may take to reach the socket before the connection is deemed dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most envelopes fed before a flush.
const MAX_BATCH: usize = 256;
/// How long sent data may stay unacknowledged before the kernel fails the connection
/// (`TCP_USER_TIMEOUT`). Without it a connection cut by a partition stays open, its data waiting
/// for TCP's retransmissions, whose pauses double up to two minutes: once the network heals, the
/// peer hears from us only at the next retransmission, about as long after as the partition
/// lasted. With it the connection fails during the partition and is redialled (the name
/// re-resolved) within the backoff once the peer is reachable again.
const UNACKED_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the writer is told to end.
struct Stop;

/// How one connection attempt ended.
enum Attempt {
    Done(io::Result<TcpStream>),
    /// The peer was heard from while the attempt hung: dial afresh at once.
    Redial,
    /// The task must stop.
    Stop,
}

/// Makes one connection attempt to a `host:port`: [`connect`], but for tests.
type Connect = fn(&str) -> BoxFuture<'_, io::Result<TcpStream>>;

/// The writer task of one peer.
pub(super) struct Writer {
    config: Arc<EndpointConfig>,
    peer: NodeId,
    addr: String,
    queue: mpsc::Receiver<Envelope>,
    /// Shared with the acceptor: says whether we are connected, and wakes us when the peer is
    /// heard from while we are not.
    link: Arc<PeerLink>,
    /// How the writer dials the peer.
    connect: Connect,
    /// Envelopes kept while disconnected, sent first on the next connection.
    pending: VecDeque<Envelope>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    backoff: Duration,
    /// Consecutive failures (connect errors, or connections that did not last).
    failures: u32,
    /// Whether the current connection streak was already reported at info level.
    announced: bool,
}

impl Writer {
    pub(super) fn new(
        config: Arc<EndpointConfig>,
        peer: NodeId,
        addr: String,
        queue: mpsc::Receiver<Envelope>,
        link: Arc<PeerLink>,
        counters: Arc<Counters>,
        cancel: CancellationToken,
    ) -> Self {
        Writer {
            link,
            connect: |addr| Box::pin(connect(addr)),
            backoff: config.connect_backoff_min,
            config,
            peer,
            addr,
            queue,
            pending: VecDeque::new(),
            counters,
            cancel,
            failures: 0,
            announced: false,
        }
    }

    fn node(&self) -> NodeId {
        self.config.node_id
    }

    /// Connects, writes, reconnects, until the endpoint stops or drops the queue's sender.
    pub(super) async fn run(mut self) {
        loop {
            // The queue is left alone while connecting: in the usual case the connection is up
            // at once, and nothing queued meanwhile is lost.
            let connected = match self.attempt().await {
                Attempt::Done(connected) => connected,
                Attempt::Redial => continue,
                Attempt::Stop => return,
            };
            match connected {
                Err(error) => self.failed("cannot connect to peer", &error),
                Ok(stream) => {
                    if self.announced {
                        tracing::debug!(node = %self.node(), peer = %self.peer, addr = %self.addr, "connected to peer");
                    } else {
                        tracing::info!(node = %self.node(), peer = %self.peer, addr = %self.addr, failed_attempts = self.failures, "connected to peer");
                        self.announced = true;
                    }
                    let since = Instant::now();
                    let written = self.write(stream).await;
                    self.link.set_connected(false);
                    let Err(error) = written else {
                        return;
                    };
                    if since.elapsed() >= self.config.connect_backoff_max {
                        // A connection that lasted: this failure starts a new streak.
                        self.failures = 0;
                        self.announced = false;
                        self.backoff = self.config.connect_backoff_min;
                    }
                    self.failed("connection to peer lost", &error);
                }
            }
            let (link, backoff) = (self.link.clone(), self.backoff);
            let pause = async move {
                tokio::select! {
                    biased;
                    _ = link.woken_after(Instant::now() + STALE_ATTEMPT) => true,
                    _ = tokio::time::sleep(backoff) => false,
                }
            };
            match self.drain_while(pause).await {
                Err(_) => return,
                // The peer reached us: it is back, so the next failure starts a new streak.
                Ok(true) => self.backoff = self.config.connect_backoff_min,
                Ok(false) => {
                    self.backoff = (self.backoff * 2).min(self.config.connect_backoff_max);
                }
            }
        }
    }

    /// One connection attempt, given up for a fresh one if the peer is heard from once it has
    /// hung for [`STALE_ATTEMPT`].
    async fn attempt(&self) -> Attempt {
        let stale = Instant::now() + STALE_ATTEMPT;
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Attempt::Stop,
            connected = (self.connect)(&self.addr) => Attempt::Done(connected),
            // The peer reached us, so a route to it is back, but an attempt begun while it was
            // unreachable may wait seconds more for its SYN's next retransmission.
            _ = self.link.woken_after(stale) => Attempt::Redial,
        }
    }

    /// Reports a failure: the first of a streak at info, the others at debug.
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.failures = self.failures.saturating_add(1);
        let (node, peer, addr) = (self.node(), self.peer, &self.addr);
        if self.failures == 1 {
            tracing::info!(node = %node, %peer, %addr, %error, "{what}; retrying");
        } else {
            tracing::debug!(node = %node, %peer, %addr, %error, failures = self.failures, "{what}; retrying");
        }
    }

    /// Runs `work` while draining the queue into `pending`, keeping the latest
    /// [`KEEP_WHILE_DISCONNECTED`] envelopes; `Err` when the task must stop.
    async fn drain_while<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Stop),
                output = &mut work => return Ok(output),
                envelope = self.queue.recv() => {
                    let Some(envelope) = envelope else { return Err(Stop) };
                    if self.pending.len() >= KEEP_WHILE_DISCONNECTED {
                        self.pending.pop_front();
                        Counters::bump(&self.counters.dropped_undeliverable);
                    }
                    self.pending.push_back(envelope);
                }
            }
        }
    }

    /// The connection's halves, after the TLS handshake when TLS is on: the peer's certificate
    /// must be signed by the cluster's CA and name the peer we mean to reach.
    /// Also gives what the peer presented, to check again when this node's TLS files change.
    async fn secure(
        &self,
        stream: TcpStream,
    ) -> Result<(ReadHalf, WriteHalf, Option<Presented>), CodecError> {
        let Some(tls) = &self.config.tls else {
            let (read, write) = split_plain(stream);
            return Ok((read, write, None));
        };
        let name = ServerName::try_from(node_name(self.peer))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let handshake = tls.connector().connect(name.clone(), stream);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => {
                let chain = presented_chain(stream.get_ref().1);
                let (read, write) = split_tls(stream);
                Ok((read, write, Some(Presented::Server(chain, name))))
            }
            Ok(Err(error)) => {
                Err(io::Error::new(error.kind(), format!("TLS handshake failed: {error}")).into())
            }
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out").into())
            }
        }
    }

    /// Says hello and writes the queue to `stream` until it fails (`Err`) or the task must stop.
    async fn write(&mut self, stream: TcpStream) -> Result<Stop, CodecError> {
        configure(&stream)?;
        let (mut reader, writer, presented) = self.secure(stream).await?;
        let distrusted = until_distrusted(self.config.tls.clone(), presented);
        tokio::pin!(distrusted);
        let mut sink = FramedWrite::new(writer, FrameCodec::new(self.config.max_frame_bytes));
        let hello = Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id.clone(),
            node_id: self.node(),
        };
        let pending = std::mem::take(&mut self.pending);
        let first_batch = async {
            sink.feed(hello).await?;
            for envelope in pending {
                self.feed(&mut sink, envelope).await?;
            }
            SinkExt::<Frame>::flush(&mut sink).await
        };
        with_timeout(first_batch).await?;
        self.link.set_connected(true);
        // Peers never write on our connection: reading tells us when they close it.
        let mut probe = [0u8; 64];
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(Stop),
                () = &mut distrusted => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, DISTRUSTED).into());
                }
                read = reader.read(&mut probe) => {
                    return Err(match read {
                        Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection"),
                        Ok(_) => io::Error::new(io::ErrorKind::InvalidData, "peer wrote on a one-way connection"),
                        Err(error) => error,
                    }.into());
                }
                envelope = self.queue.recv() => {
                    let Some(envelope) = envelope else { return Ok(Stop) };
                    with_timeout(self.write_batch(&mut sink, envelope)).await?;
                }
            }
        }
    }

    /// Feeds `first` and whatever else is queued right now (up to [`MAX_BATCH`]), then flushes.
    async fn write_batch(
        &mut self,
        sink: &mut FramedWrite<WriteHalf, FrameCodec>,
        first: Envelope,
    ) -> Result<(), CodecError> {
        self.feed(sink, first).await?;
        for _ in 1..MAX_BATCH {
            let Ok(envelope) = self.queue.try_recv() else {
                break;
            };
            self.feed(sink, envelope).await?;
        }
        SinkExt::<Frame>::flush(sink).await
    }

    /// Feeds one envelope; one too large for a frame is dropped without harming the connection
    /// (the codec refuses it before writing anything).
    async fn feed(
        &self,
        sink: &mut FramedWrite<WriteHalf, FrameCodec>,
        envelope: Envelope,
    ) -> Result<(), CodecError> {
        match sink.feed(Frame::Raft(envelope)).await {
            Err(error @ (CodecError::FrameTooLarge { .. } | CodecError::Encode(_))) => {
                tracing::warn!(node = %self.node(), peer = %self.peer, %error, "dropping envelope that cannot be sent");
                Counters::bump(&self.counters.dropped_undeliverable);
                Ok(())
            }
            other => other,
        }
    }
}

/// Sets up a new connection: no Nagle delay, and a bound on unacknowledged data
/// ([`UNACKED_TIMEOUT`], where the platform has `TCP_USER_TIMEOUT`; without it the connection
/// still works, as before).
fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    keepalive::bound_unacknowledged_data(stream, UNACKED_TIMEOUT);
    Ok(())
}

/// Bounds a write by [`WRITE_TIMEOUT`].
async fn with_timeout<T>(
    write: impl Future<Output = Result<T, CodecError>>,
) -> Result<T, CodecError> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(io::ErrorKind::TimedOut, "write to peer timed out").into())
        })
}

/// One connection attempt: resolves `addr` and tries each address it yields, within
/// [`CONNECT_TIMEOUT`].
async fn connect(addr: &str) -> io::Result<TcpStream> {
    let attempt = async {
        let mut last_error = None;
        for resolved in tokio::net::lookup_host(addr).await? {
            match TcpStream::connect(resolved).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
        }))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};
    use raftor_core::{LogId, LogIndex, Message, RequestVote, Term};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_util::codec::FramedRead;

    /// Far longer than a connection takes on loopback; only a failing test waits it out.
    const WAIT: Duration = Duration::from_secs(10);

    /// Attempts made by [`first_attempt_lost`] (only one test uses it).
    static ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

    /// The first attempt never ends, as one whose SYNs are lost in a partition until long after it
    /// heals; later attempts connect.
    fn first_attempt_lost(addr: &str) -> BoxFuture<'_, io::Result<TcpStream>> {
        if ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            Box::pin(std::future::pending())
        } else {
            Box::pin(connect(addr))
        }
    }

    /// When the peer is heard from while our attempt to reach it has hung for a while, the
    /// writer gives up the attempt and dials afresh: after a partition heals, answers reach the
    /// peer at once.
    #[tokio::test]
    async fn a_peer_that_connects_to_us_restarts_our_connection_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = Arc::new(EndpointConfig::new(
            NodeId(1),
            "test",
            "127.0.0.1:0".parse().expect("address"),
            [(NodeId(2), addr.to_string())].into(),
        ));
        let (tx, queue) = mpsc::channel(16);
        let link = Arc::new(PeerLink::default());
        let cancel = CancellationToken::new();
        let mut writer = Writer::new(
            config,
            NodeId(2),
            addr.to_string(),
            queue,
            link.clone(),
            Arc::default(),
            cancel.clone(),
        );
        writer.connect = first_attempt_lost;
        let task = tokio::spawn(writer.run());
        let vote = Envelope {
            from: NodeId(1),
            to: NodeId(2),
            message: Message::RequestVote(RequestVote {
                term: Term(3),
                last_log_id: LogId::new(Term(2), LogIndex(7)),
                pre_vote: false,
                leadership_transfer: false,
            }),
        };
        tx.send(vote.clone()).await.expect("writer alive");
        while ATTEMPTS.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // A wake-up while the attempt is young does not end it at once ...
        link.heard_from();
        tokio::task::yield_now().await;
        assert_eq!(ATTEMPTS.load(Ordering::SeqCst), 1);
        // ... but once it has hung for a while a new one starts.
        tokio::time::sleep(STALE_ATTEMPT).await;
        link.heard_from();
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the writer dials afresh")
            .expect("accept");
        let mut frames = FramedRead::new(stream, FrameCodec::new(1 << 20));
        let hello = frames.next().await.expect("a frame").expect("decodes");
        assert!(matches!(
            hello,
            Frame::Hello {
                node_id: NodeId(1),
                ..
            }
        ));
        let raft = frames.next().await.expect("a frame").expect("decodes");
        assert!(matches!(raft, Frame::Raft(envelope) if envelope == vote));
        assert_eq!(ATTEMPTS.load(Ordering::SeqCst), 2);
        cancel.cancel();
        task.await.expect("writer ends");
    }

    /// Hearing from a peer wakes its writer only while the writer is not connected, so no wake-up
    /// is left behind to cut a later pause or attempt short for nothing.
    #[test]
    fn a_connected_writer_is_not_woken() {
        let link = PeerLink::default();
        link.set_connected(true);
        link.heard_from();
        assert!(link.woken().now_or_never().is_none());
        link.set_connected(false);
        link.heard_from();
        assert!(link.woken().now_or_never().is_some());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn connections_bound_unacknowledged_data() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let stream = connect(&addr).await.expect("connect");
        configure(&stream).expect("configure");
        assert!(stream.nodelay().expect("nodelay"));
        let timeout = socket2::SockRef::from(&stream)
            .tcp_user_timeout()
            .expect("TCP_USER_TIMEOUT");
        assert_eq!(timeout, Some(UNACKED_TIMEOUT));
    }
}
