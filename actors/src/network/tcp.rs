//! The TCP endpoint: carries [`Outbound`] envelopes to peers and delivers what peers send as
//! [`Inbound`] envelopes.
//!
//! Every node dials every peer it sends to, and accepts the connections peers dial to it: a
//! connection carries frames one way only, from the dialler to the acceptor (see
//! [`codec`](super::codec)). Delivery is best effort: a full queue, a lost connection or an
//! unreachable peer drops messages, and Raft's own retries recover them.

mod accept;
mod peer;

use crate::network::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::transport::{Inbound, Outbound};
use actix::prelude::*;
use raftor_core::{Envelope, NodeId};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How a [`TcpEndpoint`] runs.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// This node's id: the `from` of every envelope sent, the `to` of every envelope accepted.
    pub node_id: NodeId,
    /// Peers must present the same cluster id in their `Hello`, or their connection is closed (a
    /// guard against mistakes, not against attackers: that is [`EndpointConfig::tls`]'s job).
    pub cluster_id: String,
    /// The address to listen on; port 0 picks a free port (see [`start`]).
    pub listen: SocketAddr,
    /// Every other member and its `host:port`, resolved (DNS included) at each connection attempt,
    /// so a name that does not resolve yet is simply retried. The node replaces them with the
    /// members of each new configuration ([`UpdatePeers`]). Any node presenting the cluster id may
    /// connect to us (a member added later is not in here yet); the Raft rules decide what its
    /// messages count for.
    pub peers: BTreeMap<NodeId, String>,
    /// The largest frame sent or accepted, in bytes; a larger message is dropped (when sending) or
    /// closes the connection (when receiving). Keep AppendEntries batches well below it.
    pub max_frame_bytes: usize,
    /// The first pause after a failed connection attempt; doubles up to `connect_backoff_max`.
    pub connect_backoff_min: Duration,
    /// The longest pause between connection attempts. After a partition heals, neither side
    /// may hear from the other until one side's next attempt: this bounds that wait (with the
    /// attempt's own timeout of 2 s, a fresh SYN goes out at least every 1.5 s by default).
    pub connect_backoff_max: Duration,
    /// How many envelopes may wait for one peer; beyond that new envelopes are dropped.
    pub peer_queue_len: usize,
    /// Answers client sessions (see [`super::client`]); until it is set, clients are turned away.
    pub client_handler: super::client::ClientHandlerSlot,
    /// The most client sessions served at once; a client connecting past it is turned away (its
    /// connection closed after its hello). Default:
    /// [`super::client::default_client_connection_limit`].
    pub max_client_sessions: usize,
    /// The most connections accepted at once that have not yet said who they are (a TLS
    /// handshake and a `Hello` or `ClientHello`, within 10 s); past it, the oldest of them is
    /// closed to make room. So connections that never say hello cannot take the descriptors that
    /// the log store, the peers and the sessions need, nor shut out a peer that redials. Default:
    /// [`Self::DEFAULT_MAX_OPENING_CONNECTIONS`], or
    /// [`super::client::default_client_connection_limit`] when that is lower.
    pub max_opening_connections: usize,
    /// The most bytes all client sessions together may hold in request bodies being answered and
    /// answers not yet written ([`super::answer_budget`]; each session also holds at most
    /// [`super::answer_budget::SESSION_ANSWER_BYTES`]), and as much again in requests still
    /// arriving ([`super::incoming`]). A session waits for room before it reads the rest of a
    /// request and before it runs it; while one waits, sessions whose clients take no answers are
    /// closed. Default: [`super::answer_budget::DEFAULT_NODE_ANSWER_BYTES`].
    pub max_unwritten_answer_bytes: usize,
    /// Mutual TLS between members, and TLS for clients ([`super::tls`]); `None`: plain TCP, where
    /// anyone who reaches the port can claim to be any member.
    pub tls: Option<super::tls::NodeTls>,
}

impl EndpointConfig {
    /// The default [`EndpointConfig::connect_backoff_min`].
    pub const DEFAULT_CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
    /// The default [`EndpointConfig::connect_backoff_max`].
    pub const DEFAULT_CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
    /// The default [`EndpointConfig::peer_queue_len`].
    pub const DEFAULT_PEER_QUEUE_LEN: usize = 4096;
    /// The default [`EndpointConfig::max_opening_connections`], where descriptors allow it.
    pub const DEFAULT_MAX_OPENING_CONNECTIONS: usize = 1024;

    /// A configuration with the default frame limit, backoff and queue length.
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        EndpointConfig {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            peers,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_backoff_min: Self::DEFAULT_CONNECT_BACKOFF_MIN,
            connect_backoff_max: Self::DEFAULT_CONNECT_BACKOFF_MAX,
            peer_queue_len: Self::DEFAULT_PEER_QUEUE_LEN,
            client_handler: super::client::ClientHandlerSlot::default(),
            max_client_sessions: super::client::default_client_connection_limit(),
            max_opening_connections: super::client::default_client_connection_limit()
                .min(Self::DEFAULT_MAX_OPENING_CONNECTIONS),
            max_unwritten_answer_bytes: super::answer_budget::DEFAULT_NODE_ANSWER_BYTES,
            tls: None,
        }
    }

    fn validate(&self) -> Result<(), NetworkError> {
        let invalid = |reason: &str| Err(NetworkError::InvalidConfig(reason.to_owned()));
        if self.peers.contains_key(&self.node_id) {
            return invalid("peers must not contain this node's own id");
        }
        if self.max_frame_bytes < 64 {
            return invalid("max_frame_bytes must be at least 64");
        }
        if self.connect_backoff_min.is_zero() {
            return invalid("connect_backoff_min must be positive");
        }
        if self.connect_backoff_min > self.connect_backoff_max {
            return invalid("connect_backoff_min must not exceed connect_backoff_max");
        }
        if self.peer_queue_len == 0 {
            return invalid("peer_queue_len must be positive");
        }
        if self.max_client_sessions == 0 {
            return invalid("max_client_sessions must be positive");
        }
        if self.max_unwritten_answer_bytes == 0 {
            return invalid("max_unwritten_answer_bytes must be positive");
        }
        if let Some(tls) = &self.tls {
            if tls.id() != self.node_id {
                return invalid("the TLS certificate is another node's");
            }
        }
        Ok(())
    }
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The listening socket could not be bound (address in use, not local, no permission...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The configuration is inconsistent; the reason says which field.
    #[error("invalid endpoint configuration: {0}")]
    InvalidConfig(String),
}

/// Stops the endpoint: its listener (freeing the port, by the time the reply arrives), its
/// connections and its writer tasks.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CloseEndpoint;

/// The members changed: send to `members` (this node aside) only, at the address given in
/// `addresses`, or at the one already known for a member with none given. Ignored when `members`
/// is empty (a node that joins knows no configuration yet, and keeps its configured peers).
#[derive(Message, Debug, Clone, Default, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct UpdatePeers {
    pub members: std::collections::BTreeSet<NodeId>,
    pub addresses: BTreeMap<NodeId, String>,
}

/// Asks for the endpoint's counters.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "EndpointStats")]
pub struct GetStats;

/// What an endpoint has dropped, refused and delivered since it started. Counters only grow.
#[derive(MessageResponse, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Envelopes dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Envelopes dropped because their `to` is not a peer or their `from` is not this node.
    pub dropped_unroutable: u64,
    /// Envelopes discarded while the peer was unreachable, or too large for a frame.
    pub dropped_undeliverable: u64,
    /// Inbound connections closed for breaking the protocol (bad hello, bad frame, bad sender...).
    pub rejected_connections: u64,
    /// Envelopes received from peers and handed to the inbound recipient.
    pub delivered: u64,
}

/// What a peer's writer shares with the acceptor: whether the writer holds a working connection,
/// and how to cut its wait short when it does not.
#[derive(Debug, Default)]
pub(crate) struct PeerLink {
    /// Notified when the peer is heard from (it connects to us, or sends on its connection) while
    /// the writer is not connected: the peer is reachable, so a backoff pause ends (once it has
    /// lasted 200 ms) and a connection attempt pending for 200 ms is dropped for a fresh one.
    wake: tokio::sync::Notify,
    /// True from the writer's first flushed batch on a connection until that connection fails or
    /// the writer ends.
    connected: AtomicBool,
}

impl PeerLink {
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The peer was heard from: if the writer is not connected, it redials now (after a
    /// partition heals, answers then reach the peer at once instead of after up to
    /// `connect_backoff_max`, or after a lost SYN's retransmission).
    pub(crate) fn heard_from(&self) {
        if !self.is_connected() {
            self.wake.notify_one();
        }
    }

    /// Waits for [`PeerLink::heard_from`] (at once if it was called since the last wait).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// [`PeerLink::woken`], but returns no earlier than `earliest`: a writer woken this way
    /// redials at most every so often, however much a peer that refuses or cannot take our
    /// connections sends us.
    pub(crate) async fn woken_after(&self, earliest: tokio::time::Instant) {
        self.woken().await;
        tokio::time::sleep_until(earliest).await;
    }
}

/// Each peer's [`PeerLink`], shared by the endpoint (which registers writers) and the acceptor.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wakers(Arc<std::sync::Mutex<HashMap<NodeId, Arc<PeerLink>>>>);

impl Wakers {
    fn register(&self, peer: NodeId) -> Arc<PeerLink> {
        let link = Arc::new(PeerLink::default());
        if let Ok(mut wakers) = self.0.lock() {
            wakers.insert(peer, link.clone());
        }
        link
    }

    fn forget(&self, keep: impl Fn(&NodeId) -> bool) {
        if let Ok(mut wakers) = self.0.lock() {
            wakers.retain(|peer, _| keep(peer));
        }
    }

    /// The link of our current writer to `peer`, if we send to it.
    pub(crate) fn link(&self, peer: NodeId) -> Option<Arc<PeerLink>> {
        self.0.lock().ok().and_then(|w| w.get(&peer).cloned())
    }
}

/// Counters shared between the actor and its tasks.
#[derive(Debug, Default)]
struct Counters {
    dropped_queue_full: AtomicU64,
    dropped_unroutable: AtomicU64,
    dropped_undeliverable: AtomicU64,
    rejected_connections: AtomicU64,
    delivered: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> EndpointStats {
        EndpointStats {
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_unroutable: self.dropped_unroutable.load(Ordering::Relaxed),
            dropped_undeliverable: self.dropped_undeliverable.load(Ordering::Relaxed),
            rejected_connections: self.rejected_connections.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }
}

/// The actor owning a node's TCP listener and its connections to peers.
///
/// Invariants: it never panics or stops on anything a peer sends; each peer has at most one writer
/// task and one bounded queue, created on the first envelope for it; when the actor stops or is
/// dropped, every task it spawned ends.
pub struct TcpEndpoint {
    config: Arc<EndpointConfig>,
    /// Where each peer is reached: the configured peers, then the latest [`UpdatePeers`].
    peers: BTreeMap<NodeId, String>,
    local_addr: SocketAddr,
    writers: HashMap<NodeId, mpsc::Sender<Envelope>>,
    wakers: Wakers,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    _cancel_on_drop: DropGuard,
    accept_task: Option<JoinHandle<()>>,
}

/// Binds `config.listen`, starts the endpoint actor and its accept loop, and returns the actor's
/// address with the address actually bound (useful with port 0).
///
/// Must be called from inside a running actix `System` (or actix-rt runtime): the tasks live on the
/// current arbiter. Envelopes received are handed to `inbound` with `do_send`; the recipient may be
/// the node actor's address, created before the node starts (e.g. with `actix::Context::new()` and
/// `ctx.address()`, then `ctx.run(actor)`) or a forwarding actor.
pub async fn start(
    config: EndpointConfig,
    inbound: Recipient<Inbound>,
) -> Result<(Addr<TcpEndpoint>, SocketAddr), NetworkError> {
    config.validate()?;
    let bind_error = |source| NetworkError::Bind {
        addr: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let config = Arc::new(config);
    let counters = Arc::new(Counters::default());
    let wakers = Wakers::default();
    let cancel = CancellationToken::new();
    let accept_task = actix_rt::spawn(accept::run(
        listener,
        accept::Acceptor::new(config.clone(), inbound, counters.clone(), wakers.clone()),
        cancel.clone(),
    ));
    let endpoint = TcpEndpoint {
        peers: config.peers.clone(),
        config,
        local_addr,
        writers: HashMap::new(),
        wakers,
        counters,
        _cancel_on_drop: cancel.clone().drop_guard(),
        cancel,
        accept_task: Some(accept_task),
    };
    Ok((endpoint.start(), local_addr))
}

impl TcpEndpoint {
    fn writer_for(&mut self, peer: NodeId, addr: &str) -> &mpsc::Sender<Envelope> {
        self.writers.entry(peer).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.config.peer_queue_len);
            actix_rt::spawn(
                peer::Writer::new(
                    self.config.clone(),
                    peer,
                    addr.to_owned(),
                    rx,
                    self.wakers.register(peer),
                    self.counters.clone(),
                    self.cancel.clone(),
                )
                .run(),
            );
            tx
        })
    }

    /// Puts changed TLS files in force for the connections made from now on (those of the HTTP
    /// API too: they share the credentials).
    fn reload_tls(&self) {
        let Some(tls) = &self.config.tls else { return };
        let node = self.config.node_id;
        match tls.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(%node, "TLS files changed: certificate and CA reloaded");
                tls.log_certificate_validity(true);
            }
            Err(error) if error.again => {}
            Err(error) => {
                tracing::error!(%node, %error, "cannot reload the TLS files; the certificate and CA loaded before stay in force")
            }
        }
    }
}

impl Actor for TcpEndpoint {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            node = %self.config.node_id,
            listen = %self.local_addr,
            peers = self.config.peers.len(),
            "tcp endpoint started"
        );
        if let Some(tls) = &self.config.tls {
            tls.log_certificate_validity(true);
            ctx.run_interval(super::tls::RELOAD_PERIOD, |endpoint, _| {
                endpoint.reload_tls()
            });
            ctx.run_interval(super::tls::EXPIRY_CHECK_PERIOD, |endpoint, _| {
                if let Some(tls) = &endpoint.config.tls {
                    tls.log_certificate_validity(false);
                }
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.cancel.cancel();
        tracing::info!(node = %self.config.node_id, "tcp endpoint stopped");
    }
}

impl Handler<Outbound> for TcpEndpoint {
    type Result = ();

    fn handle(&mut self, Outbound(envelope): Outbound, _ctx: &mut Context<Self>) {
        let node = self.config.node_id;
        let to = envelope.to;
        if envelope.from != node {
            tracing::debug!(node = %node, from = %envelope.from, %to, "dropping envelope not sent by this node");
            Counters::bump(&self.counters.dropped_unroutable);
            return;
        }
        let Some(addr) = self.peers.get(&to).cloned() else {
            tracing::debug!(node = %node, %to, "dropping envelope for an unknown peer");
            Counters::bump(&self.counters.dropped_unroutable);
            return;
        };
        match self.writer_for(to, &addr).try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(node = %node, peer = %to, "peer queue full; dropping envelope");
                Counters::bump(&self.counters.dropped_queue_full);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer only ends when the endpoint is shutting down.
                tracing::debug!(node = %node, peer = %to, "peer writer gone; dropping envelope");
                Counters::bump(&self.counters.dropped_undeliverable);
            }
        }
    }
}

impl Handler<UpdatePeers> for TcpEndpoint {
    type Result = ();

    fn handle(&mut self, update: UpdatePeers, _ctx: &mut Context<Self>) {
        if update.members.is_empty() {
            return;
        }
        let me = self.config.node_id;
        let peers: BTreeMap<NodeId, String> = update
            .members
            .iter()
            .filter(|id| **id != me)
            .filter_map(|id| {
                let address = update.addresses.get(id).or_else(|| self.peers.get(id))?;
                Some((*id, address.clone()))
            })
            .collect();
        if peers == self.peers {
            return;
        }
        // A peer that is gone, or moved, loses its writer (its task ends with its queue).
        self.writers
            .retain(|id, _| peers.contains_key(id) && peers.get(id) == self.peers.get(id));
        tracing::info!(node = %me, peers = ?peers, "peers changed");
        let writers = &self.writers;
        self.wakers.forget(|peer| writers.contains_key(peer));
        self.peers = peers;
    }
}

impl Handler<CloseEndpoint> for TcpEndpoint {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: CloseEndpoint, ctx: &mut Context<Self>) -> ResponseFuture<()> {
        tracing::info!(node = %self.config.node_id, "tcp endpoint shutting down");
        self.cancel.cancel();
        self.writers.clear();
        ctx.stop();
        let accept_task = self.accept_task.take();
        Box::pin(async move {
            if let Some(task) = accept_task {
                // The accept loop drops the listener as it returns: the port is free after this.
                let _ = task.await;
            }
        })
    }
}

impl Handler<GetStats> for TcpEndpoint {
    type Result = EndpointStats;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> EndpointStats {
        self.counters.snapshot()
    }
}
