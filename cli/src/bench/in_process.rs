//! The cluster `raftor bench --network memory` drives: three nodes in this process on one actix
//! System (a thread), talking through an in-memory network (messages handed over as values: no
//! socket, no encoding), the log in memory (`--storage memory`: it never blocks, so it stays on
//! the node's thread) or in RocksDB, synced, in a temporary directory (its store on a thread of
//! its own, as in a real node, so that a sync blocks no other actor); snapshots are written on
//! threads of their own, as in a real node. The load
//! calls the leader's [`RaftNode::propose`] and [`RaftNode::read`] directly, so what is measured
//! is the Raft library and the state machine without a client protocol: with `--state-machine
//! count`, a state machine that only counts the commands it applies, the set-up of openraft's
//! benchmark (BENCHMARKS.md, "The Raft overhead, against openraft").

use super::system_thread::SystemThread;
use super::{StateMachineChoice, Storage};
use bytes::Bytes;
use raftor::testing::MemoryNetwork;
use raftor::{Consistency, LogIndex, NodeId, NodeStatus, RaftNode, RaftNodeBuilder, StateMachine};
use raftor_kv::store::{KvCommand, KvOp, KvQuery, KvStateMachine};

/// A state machine that decodes each command and counts it, keeping nothing else: what is left
/// of a benchmark's cost with it is the Raft library's (openraft's benchmark applies to an empty
/// state machine too).
#[derive(Default)]
pub(super) struct CountingMachine {
    /// Commands applied; the whole state (and snapshot).
    applied: u64,
}

impl StateMachine for CountingMachine {
    type Command = KvCommand;
    type Response = ();
    type Query = ();
    type QueryResponse = u64;
    type Snapshot = u64;

    fn apply(&mut self, _index: LogIndex, _command: KvCommand) {
        self.applied += 1;
    }

    fn query(&self, _query: &()) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> u64 {
        self.applied
    }

    fn restore(&mut self, applied: u64) {
        self.applied = applied;
    }
}

/// One node of the in-process cluster, with the state machine chosen.
#[derive(Clone)]
pub(super) enum InProcessNode {
    Kv(RaftNode<KvStateMachine>),
    Counting(RaftNode<CountingMachine>),
}

impl InProcessNode {
    pub(super) fn id(&self) -> NodeId {
        match self {
            InProcessNode::Kv(node) => node.id(),
            InProcessNode::Counting(node) => node.id(),
        }
    }

    /// Propose writing `value` at `key` (no client session: a benchmark's write that fails is
    /// counted, not retried).
    pub(super) async fn put(&self, key: String, value: Bytes) -> Result<(), raftor::Error> {
        let command = KvCommand {
            session: None,
            op: KvOp::Put { key, value },
        };
        match self {
            InProcessNode::Kv(node) => node.propose(command).await.map(|_| ()),
            InProcessNode::Counting(node) => node.propose(command).await,
        }
    }

    /// Read `key` (the counting machine answers its count).
    pub(super) async fn get(
        &self,
        key: String,
        consistency: Consistency,
    ) -> Result<(), raftor::Error> {
        match self {
            InProcessNode::Kv(node) => node
                .read(KvQuery::Get { key }, consistency)
                .await
                .map(|_| ()),
            InProcessNode::Counting(node) => node.read((), consistency).await.map(|_| ()),
        }
    }

    pub(super) async fn status(&self) -> Option<NodeStatus> {
        match self {
            InProcessNode::Kv(node) => node.status().await.ok(),
            InProcessNode::Counting(node) => node.status().await.ok(),
        }
    }

    async fn shutdown(&self) {
        match self {
            InProcessNode::Kv(node) => node.shutdown().await,
            InProcessNode::Counting(node) => node.shutdown().await,
        }
    }
}

pub(super) struct InProcessCluster {
    /// The nodes' handles, usable from any thread; node `i + 1` at `i`.
    nodes: Vec<InProcessNode>,
    thread: SystemThread,
    /// Logs (RocksDB) and snapshots; removed when the cluster is dropped, after the nodes stopped.
    _dir: tempfile::TempDir,
}

impl InProcessCluster {
    /// Start `count` nodes and return once each runs (a leader is elected shortly after).
    pub(super) fn start(
        count: u64,
        storage: Storage,
        machine: StateMachineChoice,
    ) -> Result<InProcessCluster, String> {
        let dir = super::embedded::bench_dir(storage)?;
        let root = dir.path().to_path_buf();
        let (thread, nodes) = SystemThread::spawn(
            "raftor-bench-cluster".into(),
            "the in-process cluster",
            move || async move {
                let nodes = start_nodes(count, storage, machine, &root).await?;
                Ok((nodes.clone(), nodes))
            },
            |nodes: Vec<InProcessNode>| {
                Box::pin(async move {
                    for node in &nodes {
                        node.shutdown().await;
                    }
                })
            },
        )?;
        Ok(InProcessCluster {
            nodes,
            thread,
            _dir: dir,
        })
    }

    pub(super) fn nodes(&self) -> Vec<InProcessNode> {
        self.nodes.clone()
    }

    /// Stop every node and wait for the cluster's thread.
    pub(super) fn stop(mut self) {
        self.thread.stop();
    }
}

/// The nodes, started on the current thread's System, on one in-memory network, with the
/// timing of a real node (`raftor serve`'s defaults).
async fn start_nodes(
    count: u64,
    storage: Storage,
    machine: StateMachineChoice,
    root: &std::path::Path,
) -> Result<Vec<InProcessNode>, String> {
    use actix::Actor;
    let network = MemoryNetwork::new(1).start();
    let peers: Vec<(NodeId, String)> = (1..=count)
        .map(|id| (NodeId(id), format!("memory:{id}")))
        .collect();
    let mut nodes = Vec::new();
    for id in 1..=count {
        let node_dir = root.join(format!("node-{id}"));
        // An in-memory log never blocks: handing its writes to another thread would only add
        // two thread switches per write. Snapshots are written aside, as in a real node (an
        // inline one stalls all three nodes while it encodes the state).
        let builder = RaftNodeBuilder::new()
            .id(NodeId(id))
            .peers(peers.clone())
            .cluster_id("raftor-bench")
            .in_memory_network(network.clone())
            .log_thread(storage == Storage::Rocksdb)
            .snapshot_thread(true);
        let builder = storage.node_log().configure(builder, &node_dir);
        let started = match machine {
            StateMachineChoice::Kv => builder
                .start(KvStateMachine::new())
                .await
                .map(InProcessNode::Kv),
            StateMachineChoice::Count => builder
                .start(CountingMachine::default())
                .await
                .map(InProcessNode::Counting),
        };
        match started {
            Ok(node) => nodes.push(node),
            Err(error) => {
                for node in &nodes {
                    node.shutdown().await;
                }
                return Err(format!("node {id}: {error}"));
            }
        }
    }
    Ok(nodes)
}
