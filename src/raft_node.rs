//! Embedding a Raft node: [`Raft::builder`] configures and starts one, [`RaftNode`] is the typed
//! handle to it.
//!
//! ```no_run
//! # use raftor::{LogIndex, StateMachine};
//! # #[derive(Default)] struct Counter(u64);
//! # impl StateMachine for Counter {
//! #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
//! #     type Snapshot = u64;
//! #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
//! #     fn query(&self, _: &()) -> u64 { self.0 }
//! #     fn snapshot(&self) -> u64 { self.0 }
//! #     fn restore(&mut self, total: u64) { self.0 = total }
//! # }
//! use raftor::{Consistency, NodeId, Raft};
//!
//! # async fn run() -> Result<(), raftor::Error> {
//! let node = Raft::builder()
//!     .id(NodeId(1))
//!     .peers([
//!         (NodeId(1), "10.0.0.1:7001"),
//!         (NodeId(2), "10.0.0.2:7001"),
//!         (NodeId(3), "10.0.0.3:7001"),
//!     ])
//!     .listen("0.0.0.0:7001".parse().unwrap())
//!     .data_dir("/var/lib/counter")
//!     .start(Counter::default())
//!     .await?;
//! match node.propose(5).await {
//!     Ok(total) => println!("total is now {total}"),
//!     Err(raftor::Error::NotLeader { leader }) => println!("ask node {leader:?}"),
//!     Err(error) => println!("failed: {error}"),
//! }
//! let total = node.read((), Consistency::Linearizable).await?;
//! node.shutdown().await;
//! # let _ = total; Ok(()) }
//! ```

use crate::error::Error;
use crate::protocol::Consistency;
use crate::state_machine::{self as typed, unframe, StateMachine, Unframed};
use actix::Addr;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use raftor_actors::network::client::ClientHandlerSlot;
use raftor_actors::network::tcp::{self, EndpointConfig, TcpEndpoint};
use raftor_actors::snapshot::{SnapshotOptions, SnapshotPolicy};
use raftor_actors::{
    MembershipChangeError, MemoryNetwork, NetworkControl, NodeHandle, NodeOptions, NodeStatus,
    PendingNode, ProposeError, ReadError, TransferLeaderError,
};
use raftor_core::{ConfChange, Membership, NodeId, RaftConfig, Role, SnapshotMeta, Term};
use raftor_storage::{LogStorage, RocksStorage, SnapshotStore, StoreIdentity};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Answers one request body of the native client protocol (see
/// [`RaftNode::set_client_handler`]) with a response body. Runs on the endpoint's thread.
pub type ClientHandler = Arc<dyn Fn(Bytes) -> LocalBoxFuture<'static, Bytes> + Send + Sync>;

/// Who leads, as one node sees it. Sent on [`RaftNode::leadership`] when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// This node's role.
    pub role: Role,
    /// This node's current term.
    pub term: Term,
    /// The leader of `term` this node knows of (itself when it leads).
    pub leader: Option<NodeId>,
}

impl Leadership {
    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    fn of(status: &NodeStatus) -> Leadership {
        Leadership {
            role: status.role,
            term: status.term,
            leader: status.leader,
        }
    }
}

/// Where the log lives.
enum StorageChoice {
    None,
    Dir(PathBuf),
    Custom(Box<dyn LogStorage>),
}

/// Configures and starts a [`RaftNode`]; from [`Raft::builder`].
///
/// Required: [`id`](Self::id), [`peers`](Self::peers) (or [`join`](Self::join) for a node that
/// joins a running cluster), and storage ([`data_dir`](Self::data_dir) or
/// [`storage`](Self::storage)). Timing defaults: 10 ms ticks, elections after a random
/// 150–300 ms without a leader, 50 ms heartbeats, pre-vote on; requests time out after 5 s.
pub struct RaftNodeBuilder {
    id: Option<NodeId>,
    peers: BTreeMap<NodeId, String>,
    join: bool,
    /// For a node that joins: the members it can reach before it has the configuration.
    contacts: BTreeMap<NodeId, String>,
    listen: Option<SocketAddr>,
    storage: StorageChoice,
    network: Option<Addr<MemoryNetwork>>,
    cluster_id: String,
    tick: Duration,
    election_min: Duration,
    election_max: Duration,
    heartbeat: Duration,
    pre_vote: bool,
    promote_lag: u64,
    request_timeout: Duration,
    seed: Option<u64>,
    log_write_observer: Option<raftor_actors::log_store::LogWriteObserver>,
    snapshots: SnapshotPolicy,
    snapshot_dir: Option<PathBuf>,
}

impl RaftNodeBuilder {
    fn new() -> RaftNodeBuilder {
        RaftNodeBuilder {
            id: None,
            peers: BTreeMap::new(),
            join: false,
            contacts: BTreeMap::new(),
            listen: None,
            storage: StorageChoice::None,
            network: None,
            cluster_id: "raftor".to_string(),
            tick: Duration::from_millis(10),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            heartbeat: Duration::from_millis(50),
            pre_vote: true,
            promote_lag: RaftConfig::new(NodeId(1), []).promote_lag,
            request_timeout: Duration::from_secs(5),
            seed: None,
            log_write_observer: None,
            snapshots: SnapshotPolicy::default(),
            snapshot_dir: None,
        }
    }

    /// When to take snapshots and compact the log (default: [`SnapshotPolicy::default`]). A node
    /// with a [`data_dir`](Self::data_dir) keeps them in `<data dir>/snapshots`; one with a custom
    /// [`storage`](Self::storage) keeps none unless given a [`snapshot_dir`](Self::snapshot_dir).
    pub fn snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Where snapshots live (default: `<data dir>/snapshots`).
    pub fn snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// This node's id; must be one of [`peers`](Self::peers). Ids are never reused.
    pub fn id(mut self, id: NodeId) -> Self {
        self.id = Some(id);
        self
    }

    /// The voters of a new cluster, this node included, with their Raft addresses (`host:port`,
    /// resolved at each connection attempt, so a name that does not resolve yet is retried). Give
    /// every founding node the same members. They are the bootstrap configuration only: once the
    /// log holds a configuration (from the first leader on), the log wins, and members are added
    /// and removed with [`RaftNode::change_membership`] and friends.
    pub fn peers<A: Into<String>>(mut self, peers: impl IntoIterator<Item = (NodeId, A)>) -> Self {
        self.peers = peers
            .into_iter()
            .map(|(id, address)| (id, address.into()))
            .collect();
        self
    }

    /// Start as a node that joins a running cluster, instead of giving [`peers`](Self::peers): it
    /// starts with an empty configuration, neither campaigns nor votes, and waits to be contacted
    /// by the leader once a member has added it (as a learner, with
    /// [`RaftNode::add_learner`] or [`RaftNode::add_learner_promoting`], at the address it
    /// [`listen`](Self::listen)s on, which is then required). It learns the members from the
    /// leader's log. On a restart its data directory holds the configuration, so `join` changes
    /// nothing then.
    ///
    /// `members` are the current members this node can reach at first (their Raft addresses; the
    /// leader's at least, best all of them, as [`RaftNode::membership`] on a member lists them):
    /// until it holds a configuration, the node answers the leader at the address given here.
    /// They are not made voters. On an in-memory network give none.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, NodeId, Raft, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// // On the new machine:
    /// let node = Raft::builder()
    ///     .id(NodeId(4))
    ///     .join([(NodeId(1), "10.0.0.1:7001"), (NodeId(2), "10.0.0.2:7001"), (NodeId(3), "10.0.0.3:7001")])
    ///     .listen("10.0.0.4:7001".parse().unwrap())
    ///     .data_dir("/var/lib/counter")
    ///     .start(Counter::default())
    ///     .await?;
    /// // On the leader: add it; it votes once it has caught up.
    /// leader.add_learner_promoting(NodeId(4), "10.0.0.4:7001").await?;
    /// # Ok(()) }
    /// ```
    pub fn join<A: Into<String>>(mut self, members: impl IntoIterator<Item = (NodeId, A)>) -> Self {
        self.join = true;
        self.contacts = members
            .into_iter()
            .map(|(id, address)| (id, address.into()))
            .collect();
        self
    }

    /// The address to listen on for peers and clients (default: this node's address in
    /// [`peers`](Self::peers), which must then be an IP address and port). Port 0 picks a free
    /// port; [`RaftNode::local_addr`] tells which.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Keep the log in RocksDB in `dir` (created if missing). The directory remembers the cluster
    /// id and node id, and refuses to open as another node or cluster.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = StorageChoice::Dir(dir.into());
        self
    }

    /// Keep the log in a store of your own (it must pass
    /// [`storage::conformance`](crate::storage::conformance)), instead of
    /// [`data_dir`](Self::data_dir).
    pub fn storage(mut self, storage: impl LogStorage) -> Self {
        self.storage = StorageChoice::Custom(Box::new(storage));
        self
    }

    /// A name shared by the members (default `raftor`): a peer presenting another one is refused,
    /// and a data directory of another cluster does not open.
    pub fn cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// The period of the rules' clock (default 10 ms); the timeouts below are rounded up to it.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// A follower that hears from no leader for a random time in `min..max` starts an election
    /// (default 150–300 ms). Also the check-quorum period of a leader.
    pub fn election_timeout(mut self, min: Duration, max: Duration) -> Self {
        self.election_min = min;
        self.election_max = max;
        self
    }

    /// How often a leader sends heartbeats (default 50 ms); well below the election timeout.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Rehearse an election before starting one (default on), so that a node cut off from the
    /// others does not depose a healthy leader when it returns.
    pub fn pre_vote(mut self, pre_vote: bool) -> Self {
        self.pre_vote = pre_vote;
        self
    }

    /// A learner added with [`RaftNode::add_learner_promoting`] (or `serve --join`) is promoted
    /// by the leader once its log is within this many entries of the leader's (default 64).
    pub fn promote_lag(mut self, entries: u64) -> Self {
        self.promote_lag = entries;
        self
    }

    /// How long [`RaftNode::propose`] and [`RaftNode::read`] wait before [`Error::Timeout`]
    /// (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Seeds the randomised election timeouts (default: the node id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Called with the duration and number of entries of every synced log write (for metrics).
    /// Runs on the log store's thread: keep it quick.
    pub fn on_log_write(
        mut self,
        observer: impl Fn(Duration, usize) + Send + Sync + 'static,
    ) -> Self {
        self.log_write_observer = Some(Arc::new(observer));
        self
    }

    /// For tests: talk through an in-memory network instead of TCP (the addresses in
    /// [`peers`](Self::peers) are then unused), and keep every actor on the current thread, so
    /// that a whole cluster runs on tokio's paused clock. See [`crate::testing`].
    pub fn in_memory_network(mut self, network: Addr<MemoryNetwork>) -> Self {
        self.network = Some(network);
        self
    }

    /// Recover the log, start the node's actors and the TCP endpoint, and return the handle.
    ///
    /// Inside a running actix `System` (`#[actix::main]`, `#[actix_web::main]`, an actix-web
    /// server's thread...) the actors run on the current thread's arbiter, and the log store on a
    /// thread of its own. Anywhere else — a plain tokio runtime (`#[tokio::main]`) — the node
    /// starts a dedicated thread running its own actix `System`, which [`RaftNode::shutdown`]
    /// stops. (The test is `actix::System::try_current()`; a thread that once ran a System still
    /// has one.) The handle works from any thread and tokio runtime either way.
    pub async fn start<M: StateMachine + Send>(self, machine: M) -> Result<RaftNode<M>, Error> {
        if actix::System::try_current().is_some() {
            return self.start_here(machine).await;
        }
        let id = self.id;
        let (started_tx, started_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let name = format!("raftor-node-{}", id.map_or(0, |id| id.0));
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let system = actix::System::new();
                let started = system.block_on(self.start_here(machine));
                let ok = started.is_ok();
                let _ = started_tx.send(started.map(|node| (node, actix::System::current())));
                if ok {
                    let _ = system.run();
                }
                let _ = exited_tx.send(());
            })
            .map_err(Error::Thread)?;
        let (node, system) = started_rx
            .await
            .map_err(|_| Error::Thread(std::io::Error::other("the node's thread ended")))??;
        *lock(&node.inner.own_system) = Some(OwnSystem {
            system,
            exited: exited_rx,
        });
        Ok(node)
    }

    async fn start_here<M: StateMachine>(self, machine: M) -> Result<RaftNode<M>, Error> {
        let id = self
            .id
            .ok_or_else(|| Error::Config("the node id is not set".into()))?;
        if self.join && !self.peers.is_empty() {
            return Err(Error::Config(
                "a node that joins a cluster starts with no peers: give either peers or join, not both"
                    .into(),
            ));
        }
        if self.join && self.listen.is_none() && self.network.is_none() {
            return Err(Error::Config(
                "a node that joins a cluster needs a listen address".into(),
            ));
        }
        if !self.join && self.peers.is_empty() {
            return Err(Error::Config(
                "no peers: give the members of a new cluster, or join an existing one".into(),
            ));
        }
        if !self.join && !self.peers.contains_key(&id) {
            return Err(Error::Config(format!(
                "node {id} is not among the peers {:?}",
                self.peers.keys().map(|p| p.0).collect::<Vec<_>>()
            )));
        }
        if self.tick.is_zero() {
            return Err(Error::Config("the tick must be positive".into()));
        }
        let ticks = |d: Duration| {
            u32::try_from(d.as_nanos().div_ceil(self.tick.as_nanos())).unwrap_or(u32::MAX)
        };
        // A node that joins starts with no voters: it learns the configuration from the leader.
        let mut raft = RaftConfig::new(id, self.peers.keys().copied());
        raft.addresses = self.peers.clone();
        raft.election_ticks_min = ticks(self.election_min);
        raft.election_ticks_max = ticks(self.election_max).max(raft.election_ticks_min + 1);
        raft.heartbeat_ticks = ticks(self.heartbeat).max(1);
        raft.pre_vote = self.pre_vote;
        raft.promote_lag = self.promote_lag;
        raft.validate()
            .map_err(|error| Error::Config(error.to_string()))?;

        let snapshot_dir = match (&self.snapshot_dir, &self.storage) {
            (Some(dir), _) => Some(dir.clone()),
            (None, StorageChoice::Dir(dir)) => Some(dir.join("snapshots")),
            (None, _) => None,
        };
        let storage: Box<dyn LogStorage> = match self.storage {
            StorageChoice::None => {
                return Err(Error::Config(
                    "no storage: give a data directory or a log store".into(),
                ))
            }
            StorageChoice::Custom(storage) => storage,
            StorageChoice::Dir(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| Error::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                let identity = StoreIdentity {
                    cluster_id: self.cluster_id.clone(),
                    node_id: id.0,
                };
                Box::new(RocksStorage::open(&dir, &identity)?)
            }
        };

        let pending = PendingNode::new();
        let mut peer_addresses = None;
        let (transport, link) = match &self.network {
            Some(network) => {
                network.do_send(NetworkControl::Register(id, pending.inbound()));
                (
                    network.clone().recipient(),
                    Link::Memory {
                        network: network.clone(),
                    },
                )
            }
            None => {
                let listen = match self.listen {
                    Some(listen) => listen,
                    None => self.peers[&id].parse().map_err(|_| {
                        Error::Config(format!(
                            "no listen address, and this node's peer address {:?} is not an IP address and port",
                            self.peers[&id]
                        ))
                    })?,
                };
                let known = if self.join {
                    &self.contacts
                } else {
                    &self.peers
                };
                let others = known
                    .iter()
                    .filter(|(peer, _)| **peer != id)
                    .map(|(peer, address)| (*peer, address.clone()))
                    .collect();
                let config = EndpointConfig::new(id, self.cluster_id.clone(), listen, others);
                let clients = config.client_handler.clone();
                let (endpoint, local_addr) = tcp::start(config, pending.inbound()).await?;
                peer_addresses = Some(endpoint.clone().recipient());
                (
                    endpoint.clone().recipient(),
                    Link::Tcp {
                        endpoint,
                        local_addr,
                        clients,
                    },
                )
            }
        };

        let mut options = NodeOptions::new(raft);
        options.tick = self.tick;
        options.peer_addresses = peer_addresses;
        if let Some(seed) = self.seed {
            options.seed = seed;
        }
        // On the paused clock every actor must stay on one thread.
        options.dedicated_log_thread = self.network.is_none();
        options.log_write_observer = self.log_write_observer;
        if let Some(dir) = snapshot_dir {
            let store = match SnapshotStore::open(&dir) {
                Ok(store) => store,
                Err(error) => {
                    link.close(id).await;
                    return Err(error.into());
                }
            };
            options.snapshots = Some(SnapshotOptions::new(Arc::new(store), self.snapshots));
        }
        let panicked = Arc::new(AtomicBool::new(false));
        let machine = Guarded {
            machine,
            panicked: panicked.clone(),
        };
        let handle = match pending.start(options, storage, Box::new(machine), transport) {
            Ok(handle) => Arc::new(handle),
            Err(error) => {
                link.close(id).await;
                return Err(error.into());
            }
        };

        let first = handle
            .status()
            .await
            .map(|status| Leadership::of(&status))
            .ok_or(Error::Shutdown { in_flight: false })?;
        let first_membership = handle
            .status()
            .await
            .map(|status| status.membership)
            .ok_or(Error::Shutdown { in_flight: false })?;
        let (leadership_tx, leadership) = watch::channel(first);
        let (membership_tx, membership) = watch::channel(first_membership);
        actix::spawn(watch_leadership(
            handle.clone(),
            leadership_tx,
            membership_tx,
            panicked,
            self.tick,
        ));
        Ok(RaftNode {
            inner: Arc::new(Inner {
                id,
                node: handle,
                link,
                leadership,
                membership,
                bootstrap: if self.join { self.contacts } else { self.peers },
                election_timeout: self.election_max.max(self.tick),
                request_timeout: self.request_timeout,
                closing: AtomicBool::new(false),
                own_system: Mutex::new(None),
                machine: PhantomData,
            }),
        })
    }
}

/// The application's machine as the applier drives it (as [`typed::Encoded`] does), noting a
/// panic so that the node is stopped.
struct Guarded<M> {
    machine: M,
    panicked: Arc<AtomicBool>,
}

/// Runs `f`; if it panics, notes it in `panicked` and lets the panic go on (it stops the applier).
fn guard<T>(panicked: &AtomicBool, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(panic) => {
            panicked.store(true, Ordering::SeqCst);
            std::panic::resume_unwind(panic)
        }
    }
}

impl<M: StateMachine> raftor_actors::StateMachine for Guarded<M> {
    fn apply(&mut self, index: raftor_core::LogIndex, command: &[u8]) -> Bytes {
        let machine = &mut self.machine;
        guard(&self.panicked, || {
            typed::apply_encoded(machine, index, command)
        })
    }

    fn query(&self, query: &[u8]) -> Bytes {
        guard(&self.panicked, || {
            typed::query_encoded(&self.machine, query)
        })
    }

    fn snapshot(&self) -> raftor_actors::state_machine::SnapshotWriter {
        guard(&self.panicked, || typed::snapshot_encoded(&self.machine))
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        let machine = &mut self.machine;
        guard(&self.panicked, || typed::restore_encoded(machine, input))
    }
}

/// Follows the node's role, leader and membership (one look per tick) until the node stops; then
/// drops the senders, which ends every receiver's `changed()`. Stops the node if the state machine
/// panicked (its applier is gone: it could lead, but never apply or answer).
async fn watch_leadership(
    node: Arc<NodeHandle>,
    leadership: watch::Sender<Leadership>,
    membership: watch::Sender<Membership>,
    panicked: Arc<AtomicBool>,
    every: Duration,
) {
    while let Some(status) = node.status().await {
        if panicked.load(Ordering::SeqCst) {
            tracing::error!(node = %status.id, "the state machine panicked: stopping this node");
            node.shutdown();
        }
        let now = Leadership::of(&status);
        leadership.send_if_modified(|seen| {
            let changed = *seen != now;
            *seen = now;
            changed
        });
        membership.send_if_modified(|seen| {
            let changed = *seen != status.membership;
            if changed {
                *seen = status.membership.clone();
            }
            changed
        });
        tokio::time::sleep(every).await;
    }
}

/// How the node reaches its peers.
enum Link {
    Tcp {
        endpoint: Addr<TcpEndpoint>,
        local_addr: SocketAddr,
        clients: ClientHandlerSlot,
    },
    Memory {
        network: Addr<MemoryNetwork>,
    },
}

impl Link {
    /// Stop taking messages and connections (the TCP port is free once this returns).
    async fn close(&self, id: NodeId) {
        match self {
            Link::Tcp { endpoint, .. } => {
                let _ = endpoint.send(tcp::Shutdown).await;
            }
            Link::Memory { network } => network.do_send(NetworkControl::Unregister(id)),
        }
    }
}

/// The actix System of a node started outside one, on its own thread.
struct OwnSystem {
    system: actix::System,
    exited: oneshot::Receiver<()>,
}

struct Inner<M> {
    id: NodeId,
    node: Arc<NodeHandle>,
    link: Link,
    leadership: watch::Receiver<Leadership>,
    /// The configuration in force on this node, updated within a tick.
    membership: watch::Receiver<Membership>,
    /// The peers the node was started with (for a node that joined, the members it was given).
    bootstrap: BTreeMap<NodeId, String>,
    /// The longest election timeout: a leadership transfer is given two of them.
    election_timeout: Duration,
    request_timeout: Duration,
    closing: AtomicBool,
    own_system: Mutex<Option<OwnSystem>>,
    machine: PhantomData<fn() -> M>,
}

impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        // The last handle is gone without a shutdown: stop what can be stopped without waiting.
        if !self.closing.swap(true, Ordering::SeqCst) {
            if let Link::Tcp { endpoint, .. } = &self.link {
                endpoint.do_send(tcp::Shutdown);
            }
            self.node.shutdown();
            if let Some(own) = lock(&self.own_system).take() {
                own.system.stop();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running Raft node with the application's state machine `M`: propose commands, read, watch
/// who leads, shut down. Cheap to clone (clones share the node); usable from any thread. The node
/// stops when [`RaftNode::shutdown`] is called, or when the last clone is dropped.
pub struct RaftNode<M: StateMachine> {
    inner: Arc<Inner<M>>,
}

impl<M: StateMachine> std::fmt::Debug for RaftNode<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.inner.id)
            .field("leadership", &*self.inner.leadership.borrow())
            .finish()
    }
}

impl<M: StateMachine> Clone for RaftNode<M> {
    fn clone(&self) -> Self {
        RaftNode {
            inner: self.inner.clone(),
        }
    }
}

/// The entry point: [`Raft::builder`] configures a node, whose
/// [`start`](RaftNodeBuilder::start) returns a [`RaftNode`].
#[derive(Debug)]
pub struct Raft(());

impl Raft {
    /// A builder for a node: see [`RaftNodeBuilder`].
    pub fn builder() -> RaftNodeBuilder {
        RaftNodeBuilder::new()
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    bincode::serialize(value)
        .map(Bytes::from)
        .map_err(|error| Error::Codec(error.to_string()))
}

fn decode<T: DeserializeOwned>(answer: &[u8]) -> Result<T, Error> {
    unframe(answer).map_err(|error| match error {
        Unframed::Rejected(reason) => Error::BadCommand(reason),
        Unframed::Undecodable(reason) => Error::Codec(reason),
    })
}

impl<M: StateMachine> RaftNode<M> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the Raft listener bound (`None` on an in-memory network).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner.link {
            Link::Tcp { local_addr, .. } => Some(*local_addr),
            Link::Memory { .. } => None,
        }
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            Err(Error::Shutdown { in_flight: false })
        } else {
            Ok(())
        }
    }

    /// Propose `command` on this node, which must be the leader. Resolves once the command is
    /// committed (durable on a majority) and applied here, with what [`StateMachine::apply`]
    /// answered. See [`Error`] for what each failure means for the command.
    pub async fn propose(&self, command: M::Command) -> Result<M::Response, Error> {
        self.check_running()?;
        let command = encode(&command)?;
        let timeout = self.inner.request_timeout;
        match tokio::time::timeout(timeout, self.inner.node.propose(command)).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(ProposeError::NotLeader { leader })) => Err(Error::NotLeader { leader }),
            Ok(Err(ProposeError::Transferring { to })) => Err(Error::Transferring { to }),
            Ok(Err(ProposeError::Dropped)) => Err(Error::Dropped),
            Ok(Err(ProposeError::Shutdown)) => Err(Error::Shutdown { in_flight: true }),
            Ok(Ok(result)) => decode(&result),
        }
    }

    /// Answer `query` from the state machine:
    ///
    /// - [`Consistency::Linearizable`]: on the leader, after confirming its leadership with a
    ///   majority (ReadIndex) and applying every entry committed when the read arrived — the read
    ///   sees every write acknowledged before it began.
    /// - [`Consistency::Lease`]: on the leader, from its check-quorum lease (no round trip while
    ///   it is fresh; assumes clock drift well under the election timeout), else as linearizable.
    /// - [`Consistency::Local`]: this node's applied state now, on any node: possibly stale,
    ///   never uncommitted.
    ///
    /// Not on the leader, the first two fail with [`Error::NotLeader`].
    pub async fn read(
        &self,
        query: M::Query,
        consistency: Consistency,
    ) -> Result<M::QueryResponse, Error> {
        self.check_running()?;
        let query = encode(&query)?;
        let node = &self.inner.node;
        let timeout = self.inner.request_timeout;
        let answer = match consistency {
            Consistency::Local => node
                .query_local(query)
                .await
                .ok_or(Error::Shutdown { in_flight: false })?,
            Consistency::Linearizable | Consistency::Lease => {
                let read = async {
                    if consistency == Consistency::Lease {
                        node.read_lease(query).await
                    } else {
                        node.read_linearizable(query).await
                    }
                };
                match tokio::time::timeout(timeout, read).await {
                    Err(_) => return Err(Error::Timeout(timeout)),
                    Ok(Err(ReadError::NotLeader { leader })) => {
                        return Err(Error::NotLeader { leader })
                    }
                    Ok(Err(ReadError::Shutdown)) => {
                        return Err(Error::Shutdown { in_flight: false })
                    }
                    Ok(Ok(answer)) => answer,
                }
            }
        };
        decode(&answer)
    }

    /// The node's role, term and leader, updated within a tick of a change. `changed()` on the
    /// receiver fails once the node has stopped.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    /// Take a snapshot of the state machine now, whatever the policy; resolves once it is durable
    /// (the log is then compacted behind it, less the trailing margin).
    pub async fn snapshot(&self) -> Result<SnapshotMeta, Error> {
        self.inner.node.snapshot().await.map_err(Error::Snapshot)
    }

    /// The node's status and counters: role, term, leader, commit and applied index, the log, the
    /// membership in force here (and the index of its configuration entry), and on the leader
    /// each member's progress and any leadership transfer under way.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        self.inner
            .node
            .status()
            .await
            .ok_or(Error::Shutdown { in_flight: false })
    }

    /// The membership in force on this node: voters, learners, the outgoing voters while the
    /// cluster is in a joint configuration, each member's Raft address, and the learners to be
    /// promoted once caught up. A configuration takes effect on a node as soon as it appends it,
    /// so a follower may briefly see one the leader has not committed yet (or not see the newest).
    pub async fn membership(&self) -> Result<Membership, Error> {
        Ok(self.status().await?.membership)
    }

    /// The Raft address of `id` in the newest configuration this node has seen (updated within a
    /// tick), or among the peers it was started with. `None` for a node it knows nothing of.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.inner
            .membership
            .borrow()
            .addresses
            .get(&id)
            .cloned()
            .or_else(|| self.inner.bootstrap.get(&id).cloned())
    }

    /// Change the membership (on the leader): any list of [`ConfChange`]s at once. A change of at
    /// most one voter is made directly; a larger one goes through a joint configuration (every
    /// decision needs a majority of the old voters and of the new), which the leader leaves by
    /// itself. Resolves once the change is committed and applied here (for a joint change, once
    /// the cluster has left the joint configuration), with the membership then in force.
    ///
    /// One change at a time: while one is unfinished, another fails with
    /// [`Error::MembershipChangeInProgress`]. A leader just elected makes none until it has
    /// committed an entry of its term ([`Error::NotReady`]); one handing over leadership makes
    /// none ([`Error::Transferring`]); a change that makes no sense (a node that is not a member,
    /// one already in that role, a new node without an address, no voter left) is
    /// [`Error::InvalidMembership`]. In all these cases nothing was done. [`Error::Timeout`]
    /// means the change was appended and may still complete.
    ///
    /// Removing the leader itself is allowed: it leads until the change commits, then steps down,
    /// and the remaining voters elect a new leader.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// use raftor::{ConfChange, NodeId};
    ///
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// // Replace voter 3 by voter 4 (already a learner that has caught up), in one joint change.
    /// let membership = leader
    ///     .change_membership(vec![
    ///         ConfChange::AddVoter { id: NodeId(4), address: None },
    ///         ConfChange::Remove { id: NodeId(3) },
    ///     ])
    ///     .await?;
    /// assert!(membership.conf.voters.contains(&NodeId(4)));
    /// # Ok(()) }
    /// ```
    pub async fn change_membership(&self, changes: Vec<ConfChange>) -> Result<Membership, Error> {
        self.check_running()?;
        let timeout = self.inner.request_timeout;
        match self.inner.node.change_membership(changes, timeout).await {
            Ok(membership) => Ok(membership),
            Err(error) => Err(match error {
                MembershipChangeError::NotLeader { leader } => Error::NotLeader { leader },
                MembershipChangeError::Transferring { to } => Error::Transferring { to },
                MembershipChangeError::InProgress { index } => {
                    Error::MembershipChangeInProgress { index }
                }
                MembershipChangeError::NotReady => Error::NotReady,
                MembershipChangeError::Invalid(reason) => Error::InvalidMembership(reason),
                MembershipChangeError::Dropped => Error::Dropped,
                MembershipChangeError::Timeout => Error::Timeout(timeout),
                MembershipChangeError::Shutdown => Error::Shutdown { in_flight: true },
            }),
        }
    }

    /// Add `id` as a learner at Raft address `raft_address` (`host:port`): it receives the log
    /// (a snapshot first if the leader has compacted what it needs) but does not vote, so the
    /// cluster's quorum is unchanged while it catches up. Promote it with [`promote`](Self::promote),
    /// or use [`add_learner_promoting`](Self::add_learner_promoting). Start the new node with
    /// [`RaftNodeBuilder::join`]. On the leader; see [`change_membership`](Self::change_membership)
    /// for the errors.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # use raftor::NodeId;
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// leader.add_learner(NodeId(4), "10.0.0.4:7001").await?;
    /// // ... once its status shows it caught up:
    /// let membership = leader.promote(NodeId(4)).await?;
    /// assert!(membership.conf.voters.contains(&NodeId(4)));
    /// # Ok(()) }
    /// ```
    pub async fn add_learner(
        &self,
        id: NodeId,
        raft_address: impl Into<String>,
    ) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::add_learner(id, raft_address, false)])
            .await
    }

    /// Add `id` as a learner at `raft_address`, to be promoted to voter by the leader once its log
    /// is within [`RaftConfig::promote_lag`] entries of the leader's. Resolves once the learner is
    /// added (not promoted): watch [`membership`](Self::membership) for the promotion.
    pub async fn add_learner_promoting(
        &self,
        id: NodeId,
        raft_address: impl Into<String>,
    ) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::add_learner(id, raft_address, true)])
            .await
    }

    /// Make the learner `id` a voter. Promote a learner once it has caught up (its match index on
    /// the leader's [`status`](Self::status) near the leader's log): until then a voter that
    /// cannot acknowledge entries weakens the quorum.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::promote(id)]).await
    }

    /// Remove `id`, voter or learner, from the cluster. Removing the leader itself is allowed
    /// (it steps down once the change commits). Stop the removed node afterwards.
    pub async fn remove(&self, id: NodeId) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::remove(id)]).await
    }

    /// Hand leadership to the voter `to` (thesis §3.10), on the leader: it stops taking
    /// proposals, brings `to` up to date, and tells it to campaign at once. Resolves once this
    /// node sees `to` lead; fails with [`Error::TransferAbandoned`] if `to` has not taken over
    /// within two election timeouts (the leader then goes on leading), [`Error::NotAVoter`] for a
    /// node that is not a voter, [`Error::NotLeader`] off the leader. A transfer to this node
    /// itself succeeds at once.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # use raftor::NodeId;
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// // Before taking the leader's machine down for maintenance:
    /// leader.transfer_leadership(NodeId(2)).await?;
    /// assert_eq!(leader.leadership().borrow().leader, Some(NodeId(2)));
    /// # Ok(()) }
    /// ```
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Error> {
        self.check_running()?;
        match self.inner.node.transfer_leadership(to).await {
            Ok(()) => {}
            Err(TransferLeaderError::NotLeader { leader }) => {
                return Err(Error::NotLeader { leader })
            }
            Err(TransferLeaderError::NotAVoter(id)) => return Err(Error::NotAVoter(id)),
            Err(TransferLeaderError::Shutdown) => return Err(Error::Shutdown { in_flight: false }),
        }
        if to == self.inner.id {
            return Ok(());
        }
        let me = self.inner.id;
        let mut leadership = self.leadership();
        let wait = self.inner.election_timeout * 2;
        // Done when another node leads: `to`, or someone else if the transfer went astray.
        let moved = tokio::time::timeout(
            wait,
            leadership.wait_for(|seen| seen.leader.is_some_and(|leader| leader != me)),
        )
        .await
        .map(|seen| seen.map(|seen| *seen));
        match moved {
            Ok(Ok(seen)) if seen.leader == Some(to) => Ok(()),
            Ok(Ok(seen)) => Err(Error::TransferAbandoned {
                to,
                leader: seen.leader,
            }),
            Ok(Err(_)) => Err(Error::Shutdown { in_flight: false }),
            Err(_) => Err(Error::TransferAbandoned {
                to,
                leader: leadership.borrow().leader,
            }),
        }
    }

    /// Serve a request/response protocol of your own on the Raft port: a connection that opens
    /// with the native client protocol's hello (as [`ClientConnection`] does) is handed to
    /// `handler`, one request body at a time. Returns `false` if a handler is already installed,
    /// or the node has no TCP endpoint. Until a handler is installed, clients are turned away.
    ///
    /// [`ClientConnection`]: raftor_actors::network::client::ClientConnection
    pub fn set_client_handler(&self, handler: ClientHandler) -> bool {
        match &self.inner.link {
            Link::Tcp { clients, .. } => clients.set(handler),
            Link::Memory { .. } => false,
        }
    }

    /// Stop cleanly: stop taking peer messages and client connections (the port is free when this
    /// returns), stop the node (pending proposals fail with [`Error::Shutdown`]; the log store
    /// flushes what it had queued), and wait until every actor has stopped and the log storage is
    /// closed, so the data directory can be opened again. A node started outside an actix System
    /// also stops its thread. Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.link.close(self.inner.id).await;
        self.inner.node.shutdown();
        self.inner.node.stopped().await;
        let own = lock(&self.inner.own_system).take();
        if let Some(own) = own {
            own.system.stop();
            let _ = own.exited.await;
        }
    }
}
