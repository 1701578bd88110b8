//! Chaos on the real actors: a cluster of real nodes (node, replicators, log store, applier) with
//! the key-value state machine, on in-memory storage and the in-memory network, all on one thread
//! under tokio's paused clock; a nemesis that partitions, cuts links one way or both, drops,
//! delays, duplicates and crashes (some nodes back within milliseconds); an operator that, among
//! the faults, hands leadership over (also to a node cut off, repeated, retried, cancelled) and
//! changes the membership (a new empty node joins as a learner, is promoted, a voter is removed,
//! the leader too); concurrent clients doing put / get / cas on a few keys, reading by ReadIndex
//! or the leader's lease, while a recorder keeps the history; and
//! the linearizability checker (`raftor_sim::linearizability`) on that history.
//!
//! Everything is driven by one seed (the nodes' election timers, the network's RNG, the
//! nemesis, the operator, the clients), and the single-threaded paused-clock runtime runs tasks
//! in a fixed order, so a seed replays the same history.

#![allow(dead_code)]

use actix::{Actor, Addr};
use bytes::Bytes;
use raftor::state_machine::unframe;
use raftor::state_machine::Encoded;
use raftor_actors::{
    MembershipChangeError, MemoryNetwork, NetworkControl, NodeHandle, NodeOptions, NodeStatus,
    PendingNode, ProposeError, ReadError,
};
use raftor_core::{ConfChange, LogIndex, Membership, NodeId, RaftConfig, Role};
use raftor_kv::store::KvStateMachine;
use raftor_kv::store::{
    cas_outcome, decode_get, KeySet, KvAnswer, KvApplied, KvCommand, KvOp, KvOutcome, KvQuery,
    RangeQuery, Session, Txn, TxnOp,
};
use raftor_sim::linearizability::{
    check_kv, render, render_violations, to_json, KvCheck, KvInput, KvOperation, KvOutput,
};
use raftor_storage::MemStorage;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod watcher;

use raftor_kv::watch::{WatchHub, WatchLimits};
pub use watcher::WatchCheck;

/// How reads are served. Everything but `Linearizable` and `Lease` is a planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex on the leader (`NodeHandle::read_linearizable`).
    Linearizable,
    /// Half ReadIndex, half the leader's lease (`NodeHandle::read_lease`).
    Mixed,
    /// PLANTED BUG: answer a "linearizable" read from a follower's local state, without ReadIndex
    /// (`NodeHandle::query_local` on a node other than the leader the client knows of).
    FollowerLocalRead,
}

/// One chaos run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u64,
    pub keys: u64,
    /// How long the nemesis runs (virtual time).
    pub faulty: Duration,
    /// How long the clients go on once the faults stopped and every node is back.
    pub calm: Duration,
    /// A client gives up on an operation after this long; a write it gave up on has an unknown
    /// outcome.
    pub op_timeout: Duration,
    pub reads: ReadMode,
    /// Turn the nemesis and the operator off (a calm run).
    pub faults: bool,
    /// The nemesis: network faults and crashes, for `faulty` (with `faults`).
    pub nemesis: bool,
    /// The operator: leadership transfers and membership changes, for `faulty` (with `faults`).
    pub operations: bool,
}

impl ChaosConfig {
    pub fn new(seed: u64, nodes: u64) -> ChaosConfig {
        ChaosConfig {
            seed,
            nodes,
            clients: 5,
            keys: 3,
            faulty: Duration::from_secs(10),
            calm: Duration::from_secs(3),
            op_timeout: Duration::from_millis(1000),
            reads: ReadMode::Mixed,
            faults: true,
            nemesis: true,
            operations: true,
        }
    }
}

/// What a run did, besides its history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    pub ops: u64,
    pub ok: u64,
    /// Writes whose outcome is unknown.
    pub unknown: u64,
    /// Operations that certainly did not happen (refused, dropped, or reads that failed).
    pub failed: u64,
    /// Operations completed after the faults stopped.
    pub ok_after_faults: u64,
    pub crashes: u64,
    /// Crashed nodes restarted within 5-40 ms (the others stay down 0.1-1.5 s).
    pub quick_restarts: u64,
    pub partitions: u64,
    /// Terms that had a leader, seen by polling.
    pub leaders: u64,
    /// Reads answered through the leader's lease (`NodeHandle::read_lease`; it falls back to
    /// ReadIndex when the lease is not fresh) and through ReadIndex.
    pub lease_reads: u64,
    pub read_index_reads: u64,
    /// Lease reads answered with no virtual time passing, from half a second after the faults
    /// stopped: every message then takes 1–5 ms, so these were served from the lease itself
    /// (ReadIndex needs a round trip).
    pub lease_reads_at_once: u64,
    /// Transfers the leader started (`NodeHandle::transfer_leadership`), those toward a node cut
    /// off or down at the time, those asked again while under way, those cancelled (a transfer to
    /// the leader itself), those started again after the leader gave up, and those refused.
    pub transfers: u64,
    pub transfers_to_cut_off: u64,
    pub transfers_repeated: u64,
    pub transfers_cancelled: u64,
    pub transfers_retried: u64,
    pub transfers_refused: u64,
    /// Transfers whose target led in a later term, and those the leader gave up.
    pub transfers_completed: u64,
    pub transfers_abandoned: u64,
    /// Committed membership changes: new nodes added as learners, learners made voters (by the
    /// operator or by the leader once caught up), voters removed, among them the leader.
    pub learners_added: u64,
    pub promotions: u64,
    pub removals: u64,
    pub leader_removals: u64,
    /// Changes refused with nothing appended (not the leader, another change under way, ...),
    /// and changes whose outcome stayed unknown in time.
    pub changes_refused: u64,
    pub changes_unknown: u64,
}

/// The history of a run and its verdict.
pub struct ChaosRun {
    pub config: ChaosConfig,
    pub history: Vec<KvOperation>,
    pub check: KvCheck,
    pub stats: ChaosStats,
    /// What the watcher saw, checked against the cluster's history.
    pub watch: WatchCheck,
}

impl ChaosRun {
    /// Writes the history as JSON and the checker's per-key timeline as text under the target
    /// directory, and returns the two paths.
    pub fn save(&self, label: &str) -> (PathBuf, PathBuf) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos");
        std::fs::create_dir_all(&dir).expect("create the history directory");
        let stem = format!(
            "{label}-seed-{}-{}-nodes",
            self.config.seed, self.config.nodes
        );
        let json = dir.join(format!("{stem}.json"));
        let text = dir.join(format!("{stem}.txt"));
        std::fs::write(&json, to_json(&self.history)).expect("write the history");
        std::fs::write(&text, self.timeline()).expect("write the timeline");
        (json, text)
    }

    /// The checker's readable report (times in virtual ms).
    pub fn timeline(&self) -> String {
        format!(
            "chaos run {:?}\n{:?}\n{}",
            self.config,
            self.stats,
            render(&self.history, &self.check, "ms")
        )
    }

    /// The per-key timeline around each violation.
    pub fn violations(&self) -> String {
        render_violations(&self.history, &self.check, "ms", 12)
    }
}

/// Runs `test` on a current-thread runtime with the clock paused, inside a LocalSet (actix
/// actors spawn with `spawn_local`).
pub fn run_paused<T, F: Future<Output = T>>(test: impl FnOnce() -> F) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, test())
}

/// The nodes, their storage and the network.
struct Cluster {
    network: Addr<MemoryNetwork>,
    /// The founding voters are 1..=size.
    size: u64,
    seed: u64,
    handles: BTreeMap<NodeId, Rc<NodeHandle>>,
    /// Each running node's watchers (a new hub for each start, like its state machine).
    hubs: BTreeMap<NodeId, Arc<WatchHub>>,
    storage: BTreeMap<NodeId, MemStorage>,
    starts: u64,
    /// Nodes added during the run (size+1, ...): they start empty, with no configuration, and
    /// join as learners.
    joiners: BTreeSet<NodeId>,
    /// Joiners seen in a committed configuration.
    joined: BTreeSet<NodeId>,
    /// Nodes a committed configuration removed: stopped for good, never restarted.
    retired: BTreeSet<NodeId>,
    /// Every voter set that may be (or become) in force: the last committed one, and those of
    /// changes under way or with an unknown outcome. The nemesis crashes a node only while a
    /// majority of each stays up.
    voter_sets: Vec<BTreeSet<NodeId>>,
}

impl Cluster {
    fn new(size: u64, seed: u64) -> Cluster {
        let mut cluster = Cluster {
            network: MemoryNetwork::new(seed).start(),
            size,
            seed,
            handles: BTreeMap::new(),
            hubs: BTreeMap::new(),
            storage: (1..=size)
                .map(|id| (NodeId(id), MemStorage::new()))
                .collect(),
            starts: 0,
            joiners: BTreeSet::new(),
            joined: BTreeSet::new(),
            retired: BTreeSet::new(),
            voter_sets: vec![(1..=size).map(NodeId).collect()],
        };
        // Messages take 1–5 ms until the nemesis changes the weather.
        cluster.network.do_send(NetworkControl::SetDelay(
            Duration::from_millis(1),
            Duration::from_millis(5),
        ));
        for id in 1..=size {
            cluster.start(NodeId(id));
        }
        cluster
    }

    /// Starts node `id` on what its storage holds, with a fresh key-value state machine (the
    /// applier rebuilds it from the log). A retired node stays stopped.
    fn start(&mut self, id: NodeId) {
        if self.retired.contains(&id) {
            return;
        }
        let pending = PendingNode::new();
        self.network
            .do_send(NetworkControl::Register(id, pending.inbound()));
        // A founding node starts from the founding configuration (its log may hold later ones);
        // a joiner from none, until the leader's entries bring it one.
        let raft = if self.joiners.contains(&id) {
            RaftConfig::new(id, [])
        } else {
            RaftConfig::new(id, (1..=self.size).map(NodeId))
        };
        let mut options = NodeOptions::new(raft);
        self.starts += 1;
        options.seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.starts * 101 + id.0);
        options.dedicated_log_thread = false;
        options.background_snapshots = false;
        let hub = WatchHub::new(WatchLimits::default());
        self.hubs.insert(id, hub.clone());
        let handle = pending
            .start(
                options,
                self.storage[&id].clone(),
                Box::new(Encoded(KvStateMachine::with_hub(hub))),
                self.network.clone().recipient(),
            )
            .expect("node starts");
        self.handles.insert(id, Rc::new(handle));
    }

    /// Starts a new node with empty storage and returns its id.
    fn add_empty(&mut self) -> NodeId {
        let id = NodeId(self.size + self.joiners.len() as u64 + 1);
        self.joiners.insert(id);
        self.storage.insert(id, MemStorage::new());
        self.start(id);
        id
    }

    /// Stops node `id` abruptly: it loses its memory and keeps what its storage holds.
    fn crash(&mut self, id: NodeId) {
        self.network.do_send(NetworkControl::Unregister(id));
        if let Some(handle) = self.handles.remove(&id) {
            handle.shutdown();
        }
    }

    /// Stops node `id` for good: a committed configuration removed it.
    fn retire(&mut self, id: NodeId) {
        self.crash(id);
        self.retired.insert(id);
    }

    /// Whether the nemesis may crash `victim`: a majority of every voter set that may be in force
    /// stays up.
    fn may_crash(&self, victim: NodeId) -> bool {
        self.voter_sets.iter().all(|voters| {
            let up = voters
                .iter()
                .filter(|id| **id != victim && self.handles.contains_key(id))
                .count();
            up * 2 > voters.len()
        })
    }

    fn handle(&self, id: NodeId) -> Option<Rc<NodeHandle>> {
        self.handles.get(&id).cloned()
    }

    /// Node `id`'s handle and watch hub, if it runs.
    fn watchable(&self, id: NodeId) -> Option<(Rc<NodeHandle>, Arc<WatchHub>)> {
        Some((self.handles.get(&id)?.clone(), self.hubs.get(&id)?.clone()))
    }

    fn running(&self) -> Vec<NodeId> {
        self.handles.keys().copied().collect()
    }

    /// Every node started and not retired, running or not.
    fn members(&self) -> Vec<NodeId> {
        self.storage
            .keys()
            .copied()
            .filter(|id| !self.retired.contains(id))
            .collect()
    }
}

type Shared<T> = Rc<RefCell<T>>;

/// Keeps the history; hands out increasing event numbers so that real-time order is exact.
struct Recorder {
    start: Instant,
    next_event: u64,
    history: Vec<KvOperation>,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        (Instant::now() - self.start).as_millis() as u64
    }

    fn invoke(&mut self, client: u64, key: &str, input: KvInput) -> usize {
        self.next_event += 1;
        let at = self.now_ms();
        self.history.push(KvOperation {
            client,
            key: key.to_owned(),
            input,
            output: None,
            call: self.next_event,
            ret: None,
            call_at: at,
            ret_at: None,
        });
        self.history.len() - 1
    }

    fn complete(&mut self, op: usize, output: KvOutput) {
        self.next_event += 1;
        let at = self.now_ms();
        let record = &mut self.history[op];
        record.output = Some(output);
        record.ret = Some(self.next_event);
        record.ret_at = Some(at);
    }

    /// The operation certainly had no effect: it leaves the history.
    fn forget(&mut self, op: usize) {
        self.history[op].call = u64::MAX;
    }
}

/// What a client sends: a query, or a write (proposed with the client's session).
enum Request {
    Read(KvQuery),
    Write(KvOp),
}

/// What a request got: the encoded answer of a read, or what a write did.
#[derive(Clone)]
enum Answer {
    Read(Bytes),
    Written(KvOutcome),
}

/// How one attempt at an operation ended.
enum Attempt {
    Done(Answer),
    /// Try again, at this node if known: this attempt certainly had no effect.
    Retry(Option<NodeId>),
    /// Try again: this attempt may have taken effect (its retry carries the same session, so
    /// the state machine applies the operation at most once).
    RetryMaybeApplied,
    /// The state machine refused the write, changing nothing: it does not know the session
    /// (expired, or the session's first write was never applied). A new session is needed.
    SessionExpired,
}

struct Client {
    id: u64,
    config: ChaosConfig,
    cluster: Shared<Cluster>,
    recorder: Shared<Recorder>,
    stats: Shared<ChaosStats>,
    rng: SmallRng,
    /// Where this client believes the leader is.
    target: NodeId,
    /// The exactly-once session: its client id (the low 32 bits are `id`, the high ones count
    /// the sessions this client started) and the last sequence number used.
    session_id: u64,
    sequence: u64,
    /// The last value this client saw per key (what its CASes expect).
    seen: BTreeMap<String, Option<String>>,
    written: u64,
    /// When the faults stop.
    faults_end: Instant,
}

impl Client {
    fn pick_node(&mut self) -> NodeId {
        let running = self.cluster.borrow().running();
        if running.is_empty() {
            return self.target;
        }
        running[self.rng.gen_range(0..running.len())]
    }

    async fn run(mut self, until: Instant, faults_end: Instant) {
        while Instant::now() < until {
            let key = format!("k{}", self.rng.gen_range(0..self.config.keys));
            let roll = self.rng.gen_range(0..10);
            if roll == 0 {
                self.range_read(faults_end).await;
            } else {
                let input = if roll < 4 {
                    KvInput::Get
                } else if roll < 7 {
                    self.written += 1;
                    KvInput::Put(format!("c{}-{}", self.id, self.written))
                } else {
                    self.written += 1;
                    let expected = self.seen.get(&key).cloned().flatten();
                    KvInput::Cas {
                        expected,
                        value: format!("c{}-{}", self.id, self.written),
                    }
                };
                // A third of the puts write a second key in the same transaction (one entry):
                // each key's history holds the put.
                let other = (self.config.keys > 1
                    && matches!(input, KvInput::Put(_))
                    && self.rng.gen_range(0..3) == 0)
                    .then(|| {
                        format!(
                            "k{}",
                            (key[1..].parse::<u64>().unwrap_or(0) + 1) % self.config.keys
                        )
                    });
                let keys: Vec<String> = std::iter::once(key.clone()).chain(other).collect();
                let ops: Vec<usize> = keys
                    .iter()
                    .map(|key| {
                        self.recorder
                            .borrow_mut()
                            .invoke(self.id, key, input.clone())
                    })
                    .collect();
                let outcome = self.execute(&keys, &input).await;
                for (op, key) in ops.into_iter().zip(&keys) {
                    self.record(op, key, &input, outcome.clone(), faults_end);
                }
            }
            let pause = self.rng.gen_range(0..20);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// One read of every key by a range read (one index for all), recorded as a read of each.
    async fn range_read(&mut self, faults_end: Instant) {
        let keys: Vec<String> = (0..self.config.keys).map(|k| format!("k{k}")).collect();
        let ops: Vec<usize> = keys
            .iter()
            .map(|key| {
                self.recorder
                    .borrow_mut()
                    .invoke(self.id, key, KvInput::Get)
            })
            .collect();
        let query = KvQuery::Range(RangeQuery::new(KeySet::Prefix("k".into())));
        let answer = self.perform(Request::Read(query)).await;
        for (op, key) in ops.into_iter().zip(&keys) {
            let output = match &answer {
                Some(Some(Answer::Read(bytes))) => {
                    Some(Some(KvOutput::Value(value_of(range_value(bytes, key)))))
                }
                _ => None,
            };
            self.record(op, key, &KvInput::Get, output, faults_end);
        }
    }

    /// Records how operation `op` ended, and what it taught the client of the key.
    fn record(
        &mut self,
        op: usize,
        key: &str,
        input: &KvInput,
        outcome: Option<Option<KvOutput>>,
        faults_end: Instant,
    ) {
        let mut stats = self.stats.borrow_mut();
        stats.ops += 1;
        match outcome {
            Some(Some(output)) => {
                if let KvOutput::Value(v) | KvOutput::Mismatch { current: v } = &output {
                    self.seen.insert(key.to_owned(), v.clone());
                }
                if let (
                    KvInput::Put(v) | KvInput::Cas { value: v, .. },
                    KvOutput::Written | KvOutput::Swapped,
                ) = (input, &output)
                {
                    self.seen.insert(key.to_owned(), Some(v.clone()));
                }
                self.recorder.borrow_mut().complete(op, output);
                stats.ok += 1;
                if Instant::now() >= faults_end {
                    stats.ok_after_faults += 1;
                }
            }
            Some(None) => stats.unknown += 1,
            None => {
                self.recorder.borrow_mut().forget(op);
                stats.failed += 1;
            }
        }
    }

    /// `input` on `keys` (a put may name two: one transaction writes both); `Some(Some(output))`:
    /// done; `Some(None)`: a write with an unknown outcome; `None`: certainly no effect.
    async fn execute(&mut self, keys: &[String], input: &KvInput) -> Option<Option<KvOutput>> {
        let key = keys[0].clone();
        let request = match input.clone() {
            // Half the reads as a range read of the one key.
            KvInput::Get if self.rng.gen_bool(0.5) => Request::Read(KvQuery::Get { key }),
            KvInput::Get => Request::Read(KvQuery::Range(RangeQuery::new(KeySet::Key(key)))),
            KvInput::Put(value) if keys.len() > 1 => Request::Write(KvOp::Txn(Txn {
                success: keys
                    .iter()
                    .map(|key| TxnOp::Put {
                        key: key.clone(),
                        value: Bytes::from(value.clone()),
                        lease: None,
                    })
                    .collect(),
                ..Txn::default()
            })),
            KvInput::Put(value) => Request::Write(KvOp::Put {
                key,
                value: Bytes::from(value),
            }),
            // A compare-and-swap as the service sends it: a transaction.
            KvInput::Cas { expected, value } => Request::Write(KvOp::Txn(Txn::cas(
                &key,
                expected.map(Bytes::from),
                Bytes::from(value),
            ))),
            KvInput::Delete => Request::Write(KvOp::Delete { key }),
        };
        let answer = self.perform(request).await?;
        Some(answer.map(|answer| match answer {
            Answer::Read(bytes) => KvOutput::Value(value_of(match unframe::<KvAnswer>(&bytes) {
                Ok(KvAnswer::Range(_)) => range_value(&bytes, &keys[0]),
                _ => decode_get(&bytes),
            })),
            Answer::Written(KvOutcome::Txn(outcome)) if matches!(input, KvInput::Cas { .. }) => {
                match cas_outcome(outcome) {
                    KvOutcome::Mismatch { current } => KvOutput::Mismatch {
                        current: value_of(current),
                    },
                    _ => KvOutput::Swapped,
                }
            }
            Answer::Written(_) => KvOutput::Written,
        }))
    }

    /// Send `request` until it is done or the operation times out: `Some(Some(answer))`: done;
    /// `Some(None)`: a write with an unknown outcome; `None`: certainly no effect.
    async fn perform(&mut self, request: Request) -> Option<Option<Answer>> {
        let deadline = Instant::now() + self.config.op_timeout;
        let is_read = matches!(request, Request::Read(_));
        // Only writes are numbered: a session's first write must be its number 1.
        let mut session = if is_read { None } else { self.next_session() };
        let mut maybe_applied = false;
        let lease = matches!(self.config.reads, ReadMode::Mixed) && self.rng.gen_bool(0.5);
        loop {
            let node = self.target;
            // (Never hold a borrow of the cluster across an await: the nemesis changes it.)
            let handle = self.cluster.borrow().handle(node);
            let Some(handle) = handle else {
                self.target = self.pick_node();
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match &request {
                Request::Read(query) => self.read(&handle, query.encode(), lease, remaining).await,
                Request::Write(op) => {
                    let command = KvCommand {
                        session,
                        op: op.clone(),
                    }
                    .encode();
                    write_attempt(&handle, command, remaining).await
                }
            };
            match attempt {
                Attempt::Done(answer) => return Some(Some(answer)),
                Attempt::Retry(leader) => {
                    self.target = match leader {
                        Some(leader) if leader != node => leader,
                        _ => self.pick_node(),
                    };
                }
                Attempt::RetryMaybeApplied => {
                    maybe_applied = true;
                    self.target = self.pick_node();
                }
                Attempt::SessionExpired => {
                    self.session_id += 1 << 32;
                    self.sequence = 0;
                    if maybe_applied {
                        // An earlier attempt may have been applied: resending the write under
                        // the new session could apply it twice.
                        return Some(None);
                    }
                    // No attempt took effect: send the write under the new session.
                    session = self.next_session();
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if is_read || !maybe_applied {
            None
        } else {
            Some(None)
        }
    }

    fn next_session(&mut self) -> Option<Session> {
        self.sequence += 1;
        Some(Session {
            client_id: self.session_id,
            sequence: self.sequence,
        })
    }

    async fn read(
        &mut self,
        handle: &NodeHandle,
        query: Bytes,
        lease: bool,
        remaining: Duration,
    ) -> Attempt {
        if self.config.reads == ReadMode::FollowerLocalRead {
            // The planted bug: read some node other than the leader we know of, locally.
            let leader = self.target;
            let others: Vec<NodeId> = self
                .cluster
                .borrow()
                .running()
                .into_iter()
                .filter(|id| *id != leader)
                .collect();
            let node = if others.is_empty() {
                leader
            } else {
                others[self.rng.gen_range(0..others.len())]
            };
            let follower = self.cluster.borrow().handle(node);
            let Some(follower) = follower else {
                return Attempt::Retry(None);
            };
            return match follower.query_local(query).await {
                Some(bytes) => Attempt::Done(Answer::Read(bytes)),
                None => Attempt::Retry(None),
            };
        }
        let read = async {
            if lease {
                handle.read_lease(query).await
            } else {
                handle.read_linearizable(query).await
            }
        };
        let sent = Instant::now();
        match tokio::time::timeout(remaining, read).await {
            Ok(Ok(bytes)) => {
                let mut stats = self.stats.borrow_mut();
                if !lease {
                    stats.read_index_reads += 1;
                } else {
                    stats.lease_reads += 1;
                    // (The nemesis's last weather may last until half a second after the
                    // faults stop: it can deliver messages without delay.)
                    let clear = self.faults_end + Duration::from_millis(500);
                    if sent >= clear && Instant::now() == sent {
                        stats.lease_reads_at_once += 1;
                    }
                }
                Attempt::Done(Answer::Read(bytes))
            }
            Ok(Err(ReadError::NotLeader { leader })) => Attempt::Retry(leader),
            Ok(Err(ReadError::Shutdown)) | Err(_) => Attempt::Retry(None),
        }
    }
}

fn value_of(bytes: Option<Bytes>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

async fn write_attempt(handle: &NodeHandle, command: Bytes, remaining: Duration) -> Attempt {
    match tokio::time::timeout(remaining, handle.propose(command)).await {
        Ok(Ok(result)) => match KvApplied::decode(&result).map(|applied| applied.outcome) {
            Some(KvOutcome::SessionExpired) => Attempt::SessionExpired,
            // A retry of an older sequence, or an answer that does not decode: nothing the
            // client can interpret; the write may have happened.
            Some(KvOutcome::StaleSequence) | Some(KvOutcome::Invalid) | None => {
                Attempt::RetryMaybeApplied
            }
            Some(outcome) => Attempt::Done(Answer::Written(outcome)),
        },
        Ok(Err(ProposeError::NotLeader { leader })) => Attempt::Retry(leader),
        // Not appended: leadership is moving (the operator hands it over).
        Ok(Err(ProposeError::Dropped)) | Ok(Err(ProposeError::Transferring { .. })) => {
            Attempt::Retry(None)
        }
        Ok(Err(ProposeError::Shutdown)) | Err(_) => Attempt::RetryMaybeApplied,
    }
}

/// The value of `key` in an encoded answer to a range read (`None`: absent).
fn range_value(bytes: &[u8], key: &str) -> Option<Bytes> {
    match unframe::<KvAnswer>(bytes) {
        Ok(KvAnswer::Range(page)) => page
            .kvs
            .into_iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value),
        _ => None,
    }
}

/// The faults: network trouble, crashes and restarts, drop/delay/duplicate rates, until `until`.
async fn nemesis(cluster: Shared<Cluster>, stats: Shared<ChaosStats>, seed: u64, until: Instant) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let network = cluster.borrow().network.clone();
    let mut down: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut healed_at: Option<Instant> = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        let now = Instant::now();
        // Restart the nodes whose downtime is over, heal a network fault whose time is up.
        let due: Vec<NodeId> = down
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            down.remove(&id);
            cluster.borrow_mut().start(id);
        }
        if healed_at.is_some_and(|at| at <= now) {
            network.do_send(NetworkControl::Heal);
            healed_at = None;
        }
        match rng.gen_range(0..10) {
            // Crash a node (keeping a majority of the voters up), back after a while; or back
            // at once, as under a supervisor, well within the leases and votes it gave.
            0..=2 => {
                let running = cluster.borrow().running();
                if running.is_empty() {
                    continue;
                }
                let victim = running[rng.gen_range(0..running.len())];
                if cluster.borrow().may_crash(victim) {
                    cluster.borrow_mut().crash(victim);
                    stats.borrow_mut().crashes += 1;
                    if rng.gen_bool(0.3) {
                        let downtime = Duration::from_millis(rng.gen_range(5..40));
                        tokio::time::sleep(downtime).await;
                        cluster.borrow_mut().start(victim);
                        stats.borrow_mut().quick_restarts += 1;
                    } else {
                        let downtime = Duration::from_millis(rng.gen_range(100..1500));
                        down.insert(victim, now + downtime);
                    }
                }
            }
            // A partition into two sides, an isolated node, a one-way cut, or a link cut both
            // ways (the two ends still reach the others); it heals later.
            3..=5 if healed_at.is_none() => {
                let ids = cluster.borrow().members();
                match rng.gen_range(0..4) {
                    0 => {
                        let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                            ids.iter().partition(|_| rng.gen_bool(0.5));
                        network.do_send(NetworkControl::Partition(vec![a, b]));
                    }
                    1 => network.do_send(NetworkControl::Isolate(ids[rng.gen_range(0..ids.len())])),
                    2 if ids.len() >= 2 => {
                        let (a, b) = two_of(&mut rng, &ids);
                        network.do_send(NetworkControl::CutOneWay(a, b));
                        network.do_send(NetworkControl::CutOneWay(b, a));
                    }
                    _ if ids.len() >= 2 => {
                        let (from, to) = two_of(&mut rng, &ids);
                        network.do_send(NetworkControl::CutOneWay(from, to));
                    }
                    _ => {}
                }
                healed_at = Some(now + Duration::from_millis(rng.gen_range(100..2000)));
                stats.borrow_mut().partitions += 1;
            }
            // The network's weather: loss, duplication, delay (and so reordering).
            6..=7 => {
                network.do_send(NetworkControl::SetDropRate(rng.gen_range(0.0..0.2)));
                network.do_send(NetworkControl::SetDuplicateRate(rng.gen_range(0.0..0.1)));
                let max = rng.gen_range(0..40);
                network.do_send(NetworkControl::SetDelay(
                    Duration::from_millis(rng.gen_range(0..=max / 4)),
                    Duration::from_millis(max),
                ));
            }
            _ => {}
        }
    }
    // The faults end: every link heals, the weather clears, every node comes back.
    network.do_send(NetworkControl::Heal);
    network.do_send(NetworkControl::SetDropRate(0.0));
    network.do_send(NetworkControl::SetDuplicateRate(0.0));
    network.do_send(NetworkControl::SetDelay(
        Duration::from_millis(1),
        Duration::from_millis(5),
    ));
    for id in std::mem::take(&mut down).into_keys() {
        cluster.borrow_mut().start(id);
    }
}

/// Counts the terms that had a leader, by polling every node's status.
/// Two distinct members of `ids` (at least two), in random order.
fn two_of(rng: &mut SmallRng, ids: &[NodeId]) -> (NodeId, NodeId) {
    let a = rng.gen_range(0..ids.len());
    let b = (a + rng.gen_range(1..ids.len())) % ids.len();
    (ids[a], ids[b])
}

async fn watch_leaders(cluster: Shared<Cluster>, stats: Shared<ChaosStats>, until: Instant) {
    let mut terms = std::collections::BTreeSet::new();
    while Instant::now() < until {
        let handles: Vec<Rc<NodeHandle>> = cluster.borrow().handles.values().cloned().collect();
        for handle in handles {
            if let Some(status) = handle.status().await {
                if status.role == Role::Leader {
                    terms.insert(status.term);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats.borrow_mut().leaders = terms.len() as u64;
}

/// A leader found by polling: its id, handle and status.
struct Leader {
    id: NodeId,
    handle: Rc<NodeHandle>,
    status: NodeStatus,
}

/// The running node that leads in the highest term, if any.
async fn find_leader(cluster: &Shared<Cluster>) -> Option<Leader> {
    let handles: Vec<(NodeId, Rc<NodeHandle>)> = cluster
        .borrow()
        .handles
        .iter()
        .map(|(id, handle)| (*id, handle.clone()))
        .collect();
    let mut best: Option<Leader> = None;
    for (id, handle) in handles {
        if let Some(status) = handle.status().await {
            if status.role == Role::Leader
                && best.as_ref().is_none_or(|b| status.term > b.status.term)
            {
                best = Some(Leader { id, handle, status });
            }
        }
    }
    best
}

/// What a membership change does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    AddLearner,
    Promote,
    Remove { leader: bool },
}

/// The operator: among the faults, hands leadership over and changes the membership, one thing at
/// a time, on whichever node leads.
struct Operator {
    cluster: Shared<Cluster>,
    stats: Shared<ChaosStats>,
    network: Addr<MemoryNetwork>,
    rng: SmallRng,
    /// The newest committed configuration seen on a leader, and the index of its entry.
    known: Option<(LogIndex, Membership)>,
    /// Nodes a committed configuration removed, and when to stop them (until then they run on,
    /// removed, and may not know it).
    retiring: Vec<(NodeId, Instant)>,
}

impl Operator {
    async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(100..400))).await;
            let now = Instant::now();
            let due: Vec<NodeId> = self
                .retiring
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            self.retiring.retain(|(_, at)| *at > now);
            for id in due {
                self.cluster.borrow_mut().retire(id);
            }
            let Some(leader) = find_leader(&self.cluster).await else {
                continue;
            };
            self.learn(&leader.status);
            if self.rng.gen_bool(0.5) {
                self.transfer(leader).await;
            } else {
                self.change(leader).await;
            }
        }
        for (id, _) in std::mem::take(&mut self.retiring) {
            self.cluster.borrow_mut().retire(id);
        }
    }

    /// Learns the configuration a leader holds, if it is committed and no older than the newest
    /// one seen: counts the changes since that one, and schedules the removed nodes' stop.
    fn learn(&mut self, status: &NodeStatus) {
        let membership = &status.membership;
        let conf = &membership.conf;
        if conf.is_joint()
            || status.membership_index > status.commit_index
            || self
                .known
                .as_ref()
                .is_some_and(|(index, _)| status.membership_index <= *index)
        {
            return;
        }
        let before = self.known.as_ref().map(|(_, m)| m.conf.clone());
        let mut cluster = self.cluster.borrow_mut();
        let mut stats = self.stats.borrow_mut();
        for id in conf.members() {
            if cluster.joiners.contains(&id) && cluster.joined.insert(id) {
                stats.learners_added += 1;
            }
            let was_voter = before.as_ref().is_none_or(|b| b.voters.contains(&id));
            if conf.voters.contains(&id) && !was_voter {
                stats.promotions += 1;
            }
        }
        let founding = cluster.size;
        for id in cluster.members() {
            let joined = id.0 <= founding || cluster.joined.contains(&id);
            let scheduled = self.retiring.iter().any(|(r, _)| *r == id);
            if joined && !conf.contains(id) && !scheduled {
                stats.removals += 1;
                let at = Instant::now() + Duration::from_millis(self.rng.gen_range(0..1000));
                self.retiring.push((id, at));
            }
        }
        if !cluster.voter_sets.contains(&conf.voters) {
            cluster.voter_sets.push(conf.voters.clone());
        }
        self.known = Some((status.membership_index, membership.clone()));
    }

    /// One step of the membership cycle, on the leader: add a new empty node as a learner
    /// (promoted by the leader once caught up, or not), promote it, remove a voter (the leader
    /// too) while a majority of the founding voters remains, and again.
    async fn change(&mut self, leader: Leader) {
        let Some((index, known)) = self.known.clone() else {
            return;
        };
        let status = &leader.status;
        // Only on a leader holding the newest committed configuration (no change under way).
        if status.membership_index != index || status.membership_index > status.commit_index {
            return;
        }
        let conf = &known.conf;
        let founding = self.cluster.borrow().size;
        // A new node not added yet (a node once added and removed never comes back: ids are not
        // reused).
        let waiting = {
            let cluster = self.cluster.borrow();
            cluster
                .joiners
                .iter()
                .copied()
                .find(|id| !cluster.joined.contains(id) && !cluster.retired.contains(id))
        };
        let mut voters = conf.voters.clone();
        let mut auto_promoted = None;
        let (changes, kind) = if let Some(learner) = conf.learners.iter().next().copied() {
            // Mostly once it has caught up; now and then at once.
            let matched = status.matched.get(&learner).copied().unwrap_or_default();
            if matched.0 + 64 < status.last_log_id.index.0 && self.rng.gen_bool(0.8) {
                return;
            }
            voters.insert(learner);
            (vec![ConfChange::promote(learner)], ChangeKind::Promote)
        } else if conf.voters.len() as u64 > founding {
            let founders = conf.voters.iter().filter(|id| id.0 <= founding).count() as u64;
            let removable: Vec<NodeId> = conf
                .voters
                .iter()
                .copied()
                .filter(|id| id.0 > founding || (founders - 1) * 2 > founding)
                .collect();
            let victim = if removable.contains(&leader.id) && self.rng.gen_bool(0.4) {
                leader.id
            } else {
                removable[self.rng.gen_range(0..removable.len())]
            };
            voters.remove(&victim);
            let kind = ChangeKind::Remove {
                leader: victim == leader.id,
            };
            (vec![ConfChange::remove(victim)], kind)
        } else {
            let joiner = match waiting {
                Some(joiner) => joiner,
                None => self.cluster.borrow_mut().add_empty(),
            };
            let auto = self.rng.gen_bool(0.5);
            if auto {
                let mut promoted = voters.clone();
                promoted.insert(joiner);
                auto_promoted = Some(promoted);
            }
            let change = ConfChange::add_learner(joiner, format!("memory-{}", joiner.0), auto);
            (vec![change], ChangeKind::AddLearner)
        };
        // While the change may take effect, the nemesis keeps a majority of its voters up too.
        let added: Vec<BTreeSet<NodeId>> = {
            let mut cluster = self.cluster.borrow_mut();
            let mut added = Vec::new();
            for set in std::iter::once(voters).chain(auto_promoted) {
                if !cluster.voter_sets.contains(&set) {
                    cluster.voter_sets.push(set.clone());
                    added.push(set);
                }
            }
            added
        };
        let outcome = leader
            .handle
            .change_membership(changes, Duration::from_secs(1))
            .await;
        let mut stats = self.stats.borrow_mut();
        match outcome {
            Ok(membership) => {
                if kind == (ChangeKind::Remove { leader: true }) {
                    stats.leader_removals += 1;
                }
                // Committed, and no other change is under way (this one was accepted): only its
                // configuration is in force, or the one where the leader promoted a learner.
                let mut sets = vec![membership.conf.voters.clone()];
                if !membership.promote_when_caught_up.is_empty() {
                    let mut promoted = membership.conf.voters.clone();
                    promoted.extend(membership.promote_when_caught_up.iter().copied());
                    sets.push(promoted);
                }
                self.cluster.borrow_mut().voter_sets = sets;
            }
            Err(MembershipChangeError::Timeout) | Err(MembershipChangeError::Shutdown) => {
                stats.changes_unknown += 1;
            }
            // Nothing appended, or dropped: the change was not made.
            Err(_) => {
                stats.changes_refused += 1;
                self.cluster
                    .borrow_mut()
                    .voter_sets
                    .retain(|set| !added.contains(set));
            }
        }
    }

    /// Hands leadership to another voter: now and then cut off first (both ways, only from the
    /// leader, or only toward it) or down, the request repeated or redirected while under way,
    /// or cancelled; asked again after the leader gave up.
    async fn transfer(&mut self, leader: Leader) {
        let conf = &leader.status.membership.conf;
        if conf.is_joint() {
            return;
        }
        let others: Vec<NodeId> = conf
            .voters
            .iter()
            .copied()
            .filter(|id| *id != leader.id)
            .collect();
        if others.is_empty() {
            return;
        }
        let mut target = others[self.rng.gen_range(0..others.len())];
        let running = self.cluster.borrow().handle(target).is_some();
        let cut = running && self.rng.gen_bool(0.3);
        let mut heal_at = None;
        if cut {
            self.network.do_send(match self.rng.gen_range(0..3) {
                0 => NetworkControl::Isolate(target),
                1 => NetworkControl::CutOneWay(leader.id, target),
                _ => NetworkControl::CutOneWay(target, leader.id),
            });
            heal_at = Some(Instant::now() + Duration::from_millis(self.rng.gen_range(50..600)));
        }
        if leader.handle.transfer_leadership(target).await.is_err() {
            self.stats.borrow_mut().transfers_refused += 1;
            if cut {
                self.network.do_send(NetworkControl::Heal);
            }
            return;
        }
        {
            let mut stats = self.stats.borrow_mut();
            stats.transfers += 1;
            if cut || !running {
                stats.transfers_to_cut_off += 1;
            }
        }
        let first = target;
        let mut cancelled = false;
        match self.rng.gen_range(0..10) {
            // The same request again (it keeps the first one's deadline), or another target.
            0..=2 => {
                tokio::time::sleep(Duration::from_millis(self.rng.gen_range(0..50))).await;
                if self.rng.gen_bool(0.3) {
                    target = others[self.rng.gen_range(0..others.len())];
                }
                if leader.handle.transfer_leadership(target).await.is_ok() {
                    self.stats.borrow_mut().transfers_repeated += 1;
                }
            }
            // A transfer to the leader itself cancels the one under way.
            3 => {
                tokio::time::sleep(Duration::from_millis(self.rng.gen_range(0..30))).await;
                if leader.handle.transfer_leadership(leader.id).await.is_ok() {
                    self.stats.borrow_mut().transfers_cancelled += 1;
                    cancelled = true;
                }
            }
            _ => {}
        }
        let term = leader.status.term;
        let deadline = Instant::now() + Duration::from_millis(800);
        let (mut retries, mut given_up) = (0, false);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if heal_at.is_some_and(|at| at <= Instant::now()) {
                self.network.do_send(NetworkControl::Heal);
                heal_at = None;
            }
            // (A redirected transfer may have reached its first target before the second.)
            let mut took_over = false;
            for id in BTreeSet::from([first, target]) {
                let handle = self.cluster.borrow().handle(id);
                if let Some(status) = match handle {
                    Some(handle) => handle.status().await,
                    None => None,
                } {
                    took_over |= status.role == Role::Leader && status.term > term;
                }
            }
            if took_over {
                if !cancelled {
                    self.stats.borrow_mut().transfers_completed += 1;
                }
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            if cancelled {
                continue;
            }
            // The leader gave up (an election timeout passed): once the target can be reached,
            // ask again, at most twice.
            let Some(status) = leader.handle.status().await else {
                break;
            };
            if status.role != Role::Leader || status.term != term {
                continue;
            }
            if status.transfer_target.is_none() {
                if !given_up {
                    given_up = true;
                    self.stats.borrow_mut().transfers_abandoned += 1;
                }
                if retries < 2 && heal_at.is_none() {
                    retries += 1;
                    if leader.handle.transfer_leadership(target).await.is_ok() {
                        self.stats.borrow_mut().transfers_retried += 1;
                        given_up = false;
                    }
                }
            }
        }
        if heal_at.is_some() {
            self.network.do_send(NetworkControl::Heal);
        }
    }
}

/// Runs one chaos run to the end and checks its history.
pub fn run(config: &ChaosConfig) -> ChaosRun {
    let config = config.clone();
    let result = run_paused(|| {
        let config = config.clone();
        async move {
            let start = Instant::now();
            let cluster = Rc::new(RefCell::new(Cluster::new(config.nodes, config.seed)));
            let recorder = Rc::new(RefCell::new(Recorder {
                start,
                next_event: 0,
                history: Vec::new(),
            }));
            let stats = Rc::new(RefCell::new(ChaosStats::default()));
            let faults_end = start
                + if config.faults {
                    config.faulty
                } else {
                    Duration::ZERO
                };
            let end = faults_end + config.calm;
            let mut seeds = SmallRng::seed_from_u64(config.seed);
            let mut tasks = Vec::new();
            if config.faults && config.nemesis {
                tasks.push(tokio::task::spawn_local(nemesis(
                    cluster.clone(),
                    stats.clone(),
                    config.seed,
                    faults_end,
                )));
            }
            if config.faults && config.operations {
                let operator = Operator {
                    cluster: cluster.clone(),
                    stats: stats.clone(),
                    network: cluster.borrow().network.clone(),
                    rng: SmallRng::seed_from_u64(config.seed ^ 0x6f70_6572_6174_6f72),
                    known: None,
                    retiring: Vec::new(),
                };
                tasks.push(tokio::task::spawn_local(operator.run(faults_end)));
            }
            tasks.push(tokio::task::spawn_local(watch_leaders(
                cluster.clone(),
                stats.clone(),
                end,
            )));
            let watcher = tokio::task::spawn_local(
                watcher::Watcher::new(cluster.clone(), config.seed).run(end),
            );
            for id in 1..=config.clients {
                let client = Client {
                    id,
                    config: config.clone(),
                    cluster: cluster.clone(),
                    recorder: recorder.clone(),
                    stats: stats.clone(),
                    rng: SmallRng::seed_from_u64(seeds.gen()),
                    target: NodeId(1 + (id - 1) % config.nodes),
                    session_id: id,
                    sequence: 0,
                    seen: BTreeMap::new(),
                    written: 0,
                    faults_end,
                };
                tasks.push(tokio::task::spawn_local(client.run(end, faults_end)));
            }
            for task in tasks {
                task.await.expect("a chaos task panicked");
            }
            let watcher = watcher.await.expect("the watcher panicked");
            let watch = watcher.check_against_the_history().await;
            let cluster = cluster.borrow();
            for handle in cluster.handles.values() {
                handle.shutdown();
            }
            let mut history = std::mem::take(&mut recorder.borrow_mut().history);
            history.retain(|op| op.call != u64::MAX);
            let stats = stats.borrow().clone();
            (history, stats, watch)
        }
    });
    let (history, stats, watch) = result;
    let check = check_kv(&history);
    ChaosRun {
        config,
        history,
        check,
        stats,
        watch,
    }
}
