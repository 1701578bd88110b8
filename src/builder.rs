//! [`RaftNodeBuilder`]: a node's settings, checked before anything starts
//! ([`start`](RaftNodeBuilder::start) is in `start.rs`).

use crate::error::StartError;
use actix::Addr;
use raftor_actors::snapshot::SnapshotPolicy;
use raftor_actors::MemoryNetwork;
use raftor_core::{NodeId, RaftConfig};
use raftor_storage::LogStorage;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the log lives.
pub(crate) enum StorageChoice {
    None,
    Dir(PathBuf),
    Custom(Box<dyn LogStorage>),
}

/// Configures and starts a [`RaftNode`]; from [`RaftNodeBuilder::new`].
///
/// Required: [`id`](Self::id), [`peers`](Self::peers) (or [`join`](Self::join) for a node that
/// joins a running cluster), and storage ([`data_dir`](Self::data_dir) or
/// [`storage`](Self::storage)). Timing defaults: 10 ms ticks, elections after a random
/// 1–2 s without a leader, 100 ms heartbeats (etcd's; the paper's 150–300 ms elections cost a
/// live leader its term under saturating load, docs/design.md "Timing"), pre-vote on; requests
/// time out after 5 s.
pub struct RaftNodeBuilder {
    pub(crate) id: Option<NodeId>,
    pub(crate) peers: BTreeMap<NodeId, String>,
    pub(crate) join: bool,
    /// For a node that joins: the members it can reach before it has the configuration.
    pub(crate) contacts: BTreeMap<NodeId, String>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) storage: StorageChoice,
    pub(crate) network: Option<Addr<MemoryNetwork>>,
    /// Whether the log store runs on a thread of its own (`None`: unless on an in-memory network).
    pub(crate) log_thread: Option<bool>,
    /// Whether snapshots are written on a thread of their own (`None`: as `log_thread`'s default).
    pub(crate) snapshot_thread: Option<bool>,
    pub(crate) cluster_id: String,
    pub(crate) tls: Option<raftor_actors::network::tls::NodeTls>,
    pub(crate) max_client_answer_bytes: usize,
    pub(crate) tick: Duration,
    pub(crate) election_min: Duration,
    pub(crate) election_max: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) pre_vote: bool,
    pub(crate) promote_lag: u64,
    pub(crate) spare_sync_hold: Option<Duration>,
    pub(crate) request_timeout: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) log_write_observer: Option<raftor_actors::log_store::LogWriteObserver>,
    pub(crate) snapshots: SnapshotPolicy,
    pub(crate) snapshot_dir: Option<PathBuf>,
}

impl Default for RaftNodeBuilder {
    fn default() -> Self {
        RaftNodeBuilder::new()
    }
}

impl RaftNodeBuilder {
    /// A node with nothing set yet but the timing defaults (see [`RaftNodeBuilder`]).
    pub fn new() -> RaftNodeBuilder {
        RaftNodeBuilder {
            id: None,
            peers: BTreeMap::new(),
            join: false,
            contacts: BTreeMap::new(),
            listen: None,
            storage: StorageChoice::None,
            network: None,
            log_thread: None,
            snapshot_thread: None,
            cluster_id: "raftor".to_string(),
            tls: None,
            max_client_answer_bytes:
                raftor_actors::network::answer_budget::DEFAULT_NODE_ANSWER_BYTES,
            tick: Duration::from_millis(10),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            heartbeat: Duration::from_millis(100),
            pre_vote: true,
            promote_lag: RaftConfig::new(NodeId(1), []).promote_lag,
            spare_sync_hold: None,
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
    /// nothing then. A new store starts `rejoining` (it may be one a voter lost): the node asks
    /// the leader that contacts it, and is a member at once if no configuration names it a voter;
    /// named one, it lost a voter's data and rejoins in full before it votes (README, "A node
    /// that lost its data").
    ///
    /// `members` are the current members this node can reach at first (their Raft addresses; the
    /// leader's at least, best all of them, as [`RaftNode::membership`] on a member lists them):
    /// until it holds a configuration, the node answers the leader at the address given here.
    /// They are not made voters. On an in-memory network give none.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, NodeId, RaftNodeBuilder, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), Box<dyn std::error::Error>> {
    /// // On the new machine:
    /// let node = RaftNodeBuilder::new()
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

    /// Mutual TLS between the members, and TLS for client sessions on the Raft port (default:
    /// none, plain TCP, where anyone who can reach the port can claim to be any member and take
    /// the cluster over). Every member needs a certificate from the cluster's CA naming it
    /// ([`node_name`](raftor_actors::network::tls::node_name)); load it with
    /// [`NodeTls::load`](raftor_actors::network::tls::NodeTls::load). The node reads those files
    /// again every 2 s and uses changed ones, once they pass the same checks, for the
    /// connections made from then on (rotation without a restart).
    pub fn tls(mut self, tls: raftor_actors::network::tls::NodeTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The most bytes the node's native client sessions together may hold in requests being
    /// answered and answers not yet written (default 1 GiB; see
    /// [`EndpointConfig::max_unwritten_answer_bytes`](raftor_actors::network::tcp::EndpointConfig)).
    /// Only with the TCP endpoint.
    pub fn max_client_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_client_answer_bytes = bytes;
        self
    }

    /// The period of the rules' clock (default 10 ms); the timeouts below are rounded up to it.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// A follower that hears from no leader for a random time in `min..max` starts an election
    /// (default 1–2 s). Also the check-quorum period of a leader.
    pub fn election_timeout(mut self, min: Duration, max: Duration) -> Self {
        self.election_min = min;
        self.election_max = max;
        self
    }

    /// How often a leader sends heartbeats (default 100 ms); well below the election timeout.
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

    /// How long a follower that the leader's commits do not wait for now (the third of three
    /// voters, say) holds a small log write, so that the writes arriving meanwhile share one
    /// sync (default 1 ms; zero: never held; shorter than the heartbeat). Nodes that share a
    /// disk make fewer syncs; every answer still waits for its sync.
    pub fn spare_sync_hold(mut self, hold: Duration) -> Self {
        self.spare_sync_hold = Some(hold);
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

    /// Whether the log store runs on a thread of its own, so that a disk sync blocks no other
    /// actor (default: yes, except on an [in-memory network](Self::in_memory_network), where
    /// every actor stays on the current thread for tokio's paused clock). Set it on an in-memory
    /// network running on the real clock to keep the thread layout of a real node (as
    /// `raftor bench --network memory` does).
    pub fn log_thread(mut self, own_thread: bool) -> Self {
        self.log_thread = Some(own_thread);
        self
    }

    /// Whether each snapshot is written on a thread of its own, so that encoding a large state
    /// holds up no actor (default: yes, except on an [in-memory network](Self::in_memory_network),
    /// for tokio's paused clock).
    pub fn snapshot_thread(mut self, own_thread: bool) -> Self {
        self.snapshot_thread = Some(own_thread);
        self
    }

    /// The rules' configuration these settings make, or what is wrong with them (nothing has
    /// started yet).
    pub(crate) fn raft_config(&self) -> Result<RaftConfig, StartError> {
        let id = self
            .id
            .ok_or_else(|| StartError::Config("the node id is not set".into()))?;
        if self.join && !self.peers.is_empty() {
            return Err(StartError::Config(
                "a node that joins a cluster starts with no peers: give either peers or join, not both"
                    .into(),
            ));
        }
        if self.join && self.listen.is_none() && self.network.is_none() {
            return Err(StartError::Config(
                "a node that joins a cluster needs a listen address".into(),
            ));
        }
        if !self.join && self.peers.is_empty() {
            return Err(StartError::Config(
                "no peers: give the members of a new cluster, or join an existing one".into(),
            ));
        }
        if let Some(hold) = self.spare_sync_hold.filter(|hold| *hold >= self.heartbeat) {
            return Err(StartError::Config(format!(
                "a spare follower's hold ({hold:?}) must be shorter than the heartbeat ({:?}): \
                 what waits behind a held write (answers, votes) would be late by a heartbeat",
                self.heartbeat
            )));
        }
        if !self.join && !self.peers.contains_key(&id) {
            return Err(StartError::Config(format!(
                "node {id} is not among the peers {:?}",
                self.peers.keys().map(|p| p.0).collect::<Vec<_>>()
            )));
        }
        if self.tick.is_zero() {
            return Err(StartError::Config("the tick must be positive".into()));
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
            .map_err(|error| StartError::Config(error.to_string()))?;
        Ok(raft)
    }
}
