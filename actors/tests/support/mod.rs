//! A cluster of real actors in one thread, on tokio's paused clock, joined by the in-memory network.

#![allow(dead_code)]

use actix::{Actor, Addr};
use bytes::Bytes;
use raftor_actors::state_machine::SnapshotWriter;
use raftor_actors::{
    MemoryNetwork, NetworkControl, NodeHandle, NodeOptions, NodeStatus, PendingNode, ProposeError,
    StateMachine,
};
use raftor_core::{LogIndex, NodeId, RaftConfig, Role, Term};
use raftor_storage::{LogStorage, MemStorage};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest election timeout with the default 10 ms ticks.
pub const ELECTION_MAX: Duration = Duration::from_millis(300);

/// What a node applied, in order: (index, command).
pub type AppliedLog = Arc<Mutex<Vec<(LogIndex, Bytes)>>>;

/// Records every command it applies, in order.
pub struct Recorder {
    pub applied: AppliedLog,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.applied
            .lock()
            .expect("recorder lock")
            .push((index, Bytes::copy_from_slice(command)));
        Bytes::from(format!("applied {index}"))
    }
    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::from(
            self.applied
                .lock()
                .expect("recorder lock")
                .len()
                .to_string(),
        )
    }
    fn snapshot(&self) -> SnapshotWriter {
        let applied: Vec<(u64, Vec<u8>)> = self
            .applied
            .lock()
            .expect("recorder lock")
            .iter()
            .map(|(index, command)| (index.0, command.to_vec()))
            .collect();
        Box::new(move |out: &mut dyn std::io::Write| {
            bincode::serialize_into(out, &applied).map_err(std::io::Error::other)
        })
    }
    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        let applied: Vec<(u64, Vec<u8>)> =
            bincode::deserialize_from(input).map_err(std::io::Error::other)?;
        *self.applied.lock().expect("recorder lock") = applied
            .into_iter()
            .map(|(index, command)| (LogIndex(index), Bytes::from(command)))
            .collect();
        Ok(())
    }
}

/// Run `test` on a current-thread runtime with the clock paused, inside a LocalSet (actix actors
/// spawn with `spawn_local`).
pub fn run_paused<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, test());
}

/// Propose every one of `commands` to `handle` at once (one burst, as many clients would) and
/// wait for all of them; each must commit.
pub async fn propose_burst(handle: &NodeHandle, commands: &[String]) {
    let proposals = commands
        .iter()
        .map(|command| handle.propose(Bytes::from(command.clone())));
    for result in futures::future::join_all(proposals).await {
        assert!(result.is_ok(), "{result:?}");
    }
}

pub struct TestCluster {
    pub network: Addr<MemoryNetwork>,
    pub size: u64,
    /// Shared, so that a task can use a handle without holding a borrow of the cluster.
    pub handles: BTreeMap<NodeId, std::rc::Rc<NodeHandle>>,
    pub storage: BTreeMap<NodeId, Box<dyn Fn() -> Box<dyn LogStorage>>>,
    pub applied: BTreeMap<NodeId, AppliedLog>,
    /// For each node, the number of entries of every synced write its log store made.
    pub log_writes: BTreeMap<NodeId, Arc<Mutex<Vec<usize>>>>,
    pub seed: u64,
    pub configure: fn(&mut RaftConfig),
    /// Snapshot settings (every, trailing, chunk bytes) and each node's snapshot directory.
    pub snapshots: Option<(u64, u64, usize)>,
    pub snapshot_dirs: BTreeMap<NodeId, tempfile::TempDir>,
    /// Nodes started empty, knowing no configuration (they join: see [`TestCluster::add_empty`]).
    pub joiners: std::collections::BTreeSet<NodeId>,
    /// Start nodes with their log store on a thread of its own, as in production (only outside
    /// the paused clock: another thread lets virtual time run ahead).
    pub dedicated_log_thread: bool,
    /// Nodes whose disk is slow: each synced write takes this long, on tokio's clock (every
    /// write then goes through the log store: the node's own writes would not be slowed).
    pub slow_disks: BTreeMap<NodeId, Duration>,
    /// The entry cache's bounds (newest bytes, needed bytes) for nodes started from now on;
    /// `None`: the defaults.
    pub entry_cache: Option<(usize, usize)>,
    /// `NodeOptions::inline_write_max_entries` for nodes started from now on; `None`: the default.
    pub inline_write_max_entries: Option<usize>,
    /// `NodeOptions::spare_sync_hold` for nodes started from now on; `None`: the default.
    pub spare_sync_hold: Option<Duration>,
}

impl TestCluster {
    /// A cluster of `size` nodes on in-memory storage.
    pub fn new(size: u64, seed: u64) -> TestCluster {
        TestCluster::with_config(size, seed, |_| {})
    }

    pub fn with_config(size: u64, seed: u64, configure: fn(&mut RaftConfig)) -> TestCluster {
        TestCluster::build(size, seed, configure, None, None, None)
    }

    /// A cluster whose spare followers hold their writes this long (`NodeOptions::spare_sync_hold`).
    pub fn with_spare_sync_hold(size: u64, seed: u64, hold: Duration) -> TestCluster {
        TestCluster::build(size, seed, |_| {}, None, None, Some(hold))
    }

    /// A cluster whose nodes write batches of at most `max_entries` entries on their own thread
    /// and hand larger ones to the log store (`NodeOptions::inline_write_max_entries`).
    pub fn with_inline_write_max_entries(size: u64, seed: u64, max_entries: usize) -> TestCluster {
        TestCluster::build(size, seed, |_| {}, None, Some(max_entries), None)
    }

    /// A cluster that takes a snapshot every `every` entries, keeps `trailing` entries behind it
    /// and sends snapshots in chunks of `chunk` bytes; each node's snapshots in a directory of its own.
    pub fn with_snapshots(
        size: u64,
        seed: u64,
        every: u64,
        trailing: u64,
        chunk: usize,
    ) -> TestCluster {
        TestCluster::build(
            size,
            seed,
            |_| {},
            Some((every, trailing, chunk)),
            None,
            None,
        )
    }

    fn build(
        size: u64,
        seed: u64,
        configure: fn(&mut RaftConfig),
        snapshots: Option<(u64, u64, usize)>,
        inline_write_max_entries: Option<usize>,
        spare_sync_hold: Option<Duration>,
    ) -> TestCluster {
        let mut cluster = TestCluster {
            network: MemoryNetwork::new(seed).start(),
            size,
            handles: BTreeMap::new(),
            storage: BTreeMap::new(),
            applied: BTreeMap::new(),
            log_writes: BTreeMap::new(),
            seed,
            configure,
            snapshots,
            snapshot_dirs: BTreeMap::new(),
            joiners: Default::default(),
            dedicated_log_thread: false,
            slow_disks: BTreeMap::new(),
            entry_cache: None,
            inline_write_max_entries,
            spare_sync_hold,
        };
        cluster.start_all();
        cluster
    }

    /// Forget node `id`'s snapshots, as a wiped data directory would.
    pub fn wipe_snapshots(&mut self, id: NodeId) {
        self.snapshot_dirs.remove(&id);
    }

    fn start_all(&mut self) {
        let cluster = self;
        for id in 1..=cluster.size {
            let store = MemStorage::new();
            cluster
                .storage
                .insert(NodeId(id), Box::new(move || Box::new(store.clone())));
            cluster.start(NodeId(id));
        }
    }

    /// Start a new, empty node `id` with no configuration: it waits for a leader to add it.
    pub fn add_empty(&mut self, id: NodeId) {
        self.joiners.insert(id);
        let store = MemStorage::new();
        self.storage
            .insert(id, Box::new(move || Box::new(store.clone())));
        self.start(id);
    }

    /// Use `open` to (re)open node `id`'s storage from now on.
    pub fn set_storage(&mut self, id: NodeId, open: Box<dyn Fn() -> Box<dyn LogStorage>>) {
        self.storage.insert(id, open);
    }

    pub fn start(&mut self, id: NodeId) {
        let pending = PendingNode::new();
        self.network
            .do_send(NetworkControl::Register(id, pending.inbound()));
        let mut raft = RaftConfig::new(id, (1..=self.size).map(NodeId));
        if self.joiners.contains(&id) {
            raft.voters.clear();
        }
        (self.configure)(&mut raft);
        let mut options = NodeOptions::new(raft);
        options.seed = self.seed.wrapping_mul(1_000_003).wrapping_add(id.0);
        options.dedicated_log_thread = self.dedicated_log_thread;
        options.background_snapshots = self.dedicated_log_thread;
        if let Some((recent, needed)) = self.entry_cache {
            options.entry_cache_bytes = recent;
            options.entry_cache_needed_bytes = needed;
        }
        if let Some(max_entries) = self.inline_write_max_entries {
            options.inline_write_max_entries = max_entries;
        }
        if let Some(hold) = self.spare_sync_hold {
            options.spare_sync_hold = hold;
        }
        if let Some(latency) = self.slow_disks.get(&id) {
            options.simulated_sync_latency = Some(*latency);
            options.inline_write_max_entries = 0;
        }
        if let Some((every, trailing, chunk)) = self.snapshots {
            let dir = self
                .snapshot_dirs
                .entry(id)
                .or_insert_with(|| tempfile::tempdir().expect("snapshot dir"));
            let store = raftor_storage::SnapshotStore::open(dir.path()).expect("snapshot store");
            let policy = raftor_actors::snapshot::SnapshotPolicy {
                every_entries: every,
                every_bytes: 0,
                trailing_entries: trailing,
                chunk_bytes: chunk,
            };
            options.snapshots = Some(raftor_actors::snapshot::SnapshotOptions::new(
                Arc::new(store),
                policy,
            ));
        }
        let writes = Arc::new(Mutex::new(Vec::new()));
        self.log_writes.insert(id, writes.clone());
        options.log_write_observer = Some(Arc::new(move |_elapsed, entries| {
            writes.lock().expect("writes lock").push(entries);
        }));
        // A restarted node rebuilds its state machine by replaying the log.
        let applied = Arc::new(Mutex::new(Vec::new()));
        self.applied.insert(id, applied.clone());
        let storage = (self.storage[&id])();
        let handle = pending
            .start(
                options,
                storage,
                Box::new(Recorder { applied }),
                self.network.clone().recipient(),
            )
            .expect("node starts");
        self.handles.insert(id, std::rc::Rc::new(handle));
    }

    /// Stop node `id` abruptly: it loses what it had in memory, keeps what its storage holds.
    pub async fn crash(&mut self, id: NodeId) {
        self.network.do_send(NetworkControl::Unregister(id));
        if let Some(handle) = self.handles.remove(&id) {
            handle.shutdown();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    pub fn control(&self, control: NetworkControl) {
        self.network.do_send(control);
    }

    pub async fn statuses(&self) -> Vec<NodeStatus> {
        let mut out = Vec::new();
        for handle in self.handles.values() {
            if let Some(status) = handle.status().await {
                out.push(status);
            }
        }
        out
    }

    /// The leader of the highest term among running nodes.
    pub async fn leader(&self) -> Option<(NodeId, Term)> {
        self.statuses()
            .await
            .into_iter()
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| (s.id, s.term))
    }

    /// Wait (in virtual time) for a leader that every running node in `among` follows.
    pub async fn wait_for_leader(&self, limit: Duration) -> Option<(NodeId, Term)> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(leader) = self.leader().await {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    pub async fn propose(&self, to: NodeId, command: &str) -> Result<Bytes, ProposeError> {
        let handle = self.handles.get(&to).ok_or(ProposeError::Shutdown)?;
        match tokio::time::timeout(
            Duration::from_secs(5),
            handle.propose(Bytes::copy_from_slice(command.as_bytes())),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProposeError::Shutdown),
        }
    }

    /// Propose through whichever node leads, retrying until it is applied.
    pub async fn propose_on_leader(&self, command: &str) -> Bytes {
        for _ in 0..100 {
            if let Some((leader, _)) = self.wait_for_leader(Duration::from_secs(10)).await {
                if let Ok(result) = self.propose(leader, command).await {
                    return result;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("could not commit {command}");
    }

    pub fn applied_commands(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .lock()
            .expect("recorder lock")
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The client commands node `id` applied, as text, in order (the leaders' empty entries left
    /// out).
    pub fn applied_texts(&self, id: NodeId) -> Vec<String> {
        self.applied_commands(id)
            .iter()
            .filter(|command| !command.is_empty())
            .map(|command| String::from_utf8_lossy(command).into_owned())
            .collect()
    }

    /// Wait until every running node applied `count` commands, or panic after `limit`.
    pub async fn wait_applied(&self, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self
                .handles
                .keys()
                .all(|id| self.applied_commands(*id).len() >= count);
            if done {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every node applied {count} commands: {:?}",
                self.handles
                    .keys()
                    .map(|id| (id.0, self.applied_commands(*id).len()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every running node applied the same commands in the same order (prefixes agree).
    pub fn assert_same_order(&self) {
        let logs: Vec<Vec<Bytes>> = self
            .handles
            .keys()
            .map(|id| self.applied_commands(*id))
            .collect();
        for a in &logs {
            for b in &logs {
                let common = a.len().min(b.len());
                assert_eq!(a[..common], b[..common], "applied sequences diverge");
            }
        }
    }

    pub fn shutdown(&self) {
        for handle in self.handles.values() {
            handle.shutdown();
        }
    }
}
