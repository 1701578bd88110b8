//! The embedding API (`RaftNodeBuilder`, `RaftNode`) with a state machine of the test's own: three
//! nodes on an in-memory network and in-memory logs, in one actix System on tokio's paused clock.

use raftor::storage::{Entry, LogStorage, LogWrite, MemStorage, RecoveredState, StorageError};
use raftor::testing::{MemoryNetwork, NetworkControl};
use raftor::{
    Consistency, Error, LogIndex, NodeId, RaftNode, RaftNodeBuilder, Role, StartError,
    StateMachine, StopCause, Term,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs `test` in an actix System whose tokio runtime has its clock paused: time moves only when
/// every task waits, straight to the next timer.
fn run_paused<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    });
    system.block_on(test());
}

/// A number that only decodes when even: proposing an odd one commits a command the state
/// machine cannot decode (as a command of another version of the application would be).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64")]
struct Even(u64);

impl TryFrom<u64> for Even {
    type Error = String;
    fn try_from(n: u64) -> Result<Even, String> {
        if n.is_multiple_of(2) {
            Ok(Even(n))
        } else {
            Err(format!("{n} is odd"))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Append(String),
    AppendNumber(Even),
    /// A bug in the state machine.
    Panic,
}

/// Everything appended, in the order applied.
#[derive(Default)]
struct Journal(Vec<String>);

impl StateMachine for Journal {
    type Command = Op;
    /// The index applied at and the journal's length after it.
    type Response = (LogIndex, usize);
    type Query = ();
    type QueryResponse = Vec<String>;
    type Snapshot = Vec<String>;

    fn apply(&mut self, index: LogIndex, op: Op) -> (LogIndex, usize) {
        match op {
            Op::Append(text) => self.0.push(text),
            Op::AppendNumber(Even(n)) => self.0.push(n.to_string()),
            Op::Panic => panic!("the state machine has a bug (planted by the test)"),
        }
        (index, self.0.len())
    }
    fn query(&self, _: &()) -> Vec<String> {
        self.0.clone()
    }
    fn snapshot(&self) -> Vec<String> {
        self.0.clone()
    }
    fn restore(&mut self, snapshot: Vec<String>) {
        self.0 = snapshot;
    }
}

async fn start_cluster(network: &actix::Addr<MemoryNetwork>) -> Vec<RaftNode<Journal>> {
    start_cluster_on(network, |_| MemStorage::new()).await
}

/// Three nodes, each with the store `storage` makes for its id.
async fn start_cluster_on<S: LogStorage>(
    network: &actix::Addr<MemoryNetwork>,
    storage: impl Fn(NodeId) -> S,
) -> Vec<RaftNode<Journal>> {
    let members: Vec<(NodeId, String)> = (1..=3).map(|i| (NodeId(i), format!("mem-{i}"))).collect();
    let mut nodes = Vec::new();
    for (id, _) in &members {
        let node = RaftNodeBuilder::new()
            .id(*id)
            .peers(members.clone())
            .storage(storage(*id))
            .in_memory_network(network.clone())
            .request_timeout(Duration::from_secs(2))
            .start(Journal::default())
            .await
            .expect("node starts");
        assert_eq!(node.local_addr(), None, "no TCP on an in-memory network");
        nodes.push(node);
    }
    nodes
}

/// The position of the node that leads, once one does.
async fn leader(nodes: &[RaftNode<Journal>]) -> usize {
    for _ in 0..500 {
        if let Some(i) = nodes
            .iter()
            .position(|n| n.leadership().borrow().is_leader())
        {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 5 s");
}

async fn local(node: &RaftNode<Journal>) -> Vec<String> {
    node.read((), Consistency::Local).await.expect("local read")
}

#[test]
fn propose_read_and_watch_leadership() {
    run_paused(|| async {
        let network = actix::Actor::start(MemoryNetwork::new(7));
        let nodes = start_cluster(&network).await;
        let l = leader(&nodes).await;
        let leader_id = nodes[l].id();
        let f = (l + 1) % 3;

        // Proposals on the leader are applied in order; each answers with its own result.
        let (first, len) = nodes[l]
            .propose(Op::Append("a".into()))
            .await
            .expect("applied");
        assert_eq!(len, 1);
        let (second, len) = nodes[l]
            .propose(Op::Append("b".into()))
            .await
            .expect("applied");
        assert_eq!((second, len), (first.next(), 2));

        // A follower refuses and names the leader; nothing is appended.
        let refused = nodes[f].propose(Op::Append("x".into())).await;
        match &refused {
            Err(Error::NotLeader { leader }) => assert_eq!(*leader, Some(leader_id)),
            other => panic!("expected NotLeader, got {other:?}"),
        }
        let error = refused.expect_err("refused");
        assert_eq!(error.leader_hint(), Some(leader_id));
        assert!(!error.may_have_applied());

        // Reads at every consistency.
        let both = vec!["a".to_string(), "b".to_string()];
        for consistency in [Consistency::Linearizable, Consistency::Lease] {
            assert_eq!(nodes[l].read((), consistency).await.expect("read"), both);
            assert!(matches!(
                nodes[f].read((), consistency).await,
                Err(Error::NotLeader { leader: Some(id) }) if id == leader_id
            ));
        }
        for _ in 0..100 {
            if local(&nodes[f]).await == both {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(local(&nodes[f]).await, both, "the follower applied both");

        // Cut the leader off: a proposal there cannot commit (outcome unknown), the others elect
        // a new leader, and the watches say so.
        let old_term = nodes[l].leadership().borrow().term;
        network.do_send(NetworkControl::Isolate(leader_id));
        let stuck = nodes[l].propose(Op::Append("lost".into())).await;
        assert!(
            matches!(stuck, Err(Error::Timeout(_)) | Err(Error::NotLeader { .. })),
            "{stuck:?}"
        );
        if let Err(error) = &stuck {
            assert_eq!(error.may_have_applied(), matches!(error, Error::Timeout(_)));
        }
        let mut watch = nodes[f].leadership();
        let seen = *watch
            .wait_for(|l| l.term > old_term && l.leader.is_some())
            .await
            .expect("the follower is running");
        assert_ne!(seen.leader, Some(leader_id));
        let mut old = nodes[l].leadership();
        let stepped_down = *old
            .wait_for(|l| l.role != Role::Leader)
            .await
            .expect("the old leader is running");
        assert_ne!(stepped_down.role, Role::Leader, "check-quorum");

        // The new leader takes writes; once healed, the old one catches up (and "lost", never
        // committed, is gone).
        let new = nodes
            .iter()
            .position(|n| Some(n.id()) == seen.leader)
            .expect("a member");
        nodes[new]
            .propose(Op::Append("c".into()))
            .await
            .expect("applied");
        network.do_send(NetworkControl::Heal);
        let all = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        for _ in 0..200 {
            if local(&nodes[l]).await == all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(local(&nodes[l]).await, all);
        let status = nodes[l].status().await.expect("running");
        assert_eq!(status.id, leader_id);
        assert!(status.applied_index >= second.next());

        // After shutdown: nothing more is taken, and the watch ends.
        let mut watch = nodes[f].leadership();
        nodes[f].shutdown().await;
        assert!(matches!(
            nodes[f].propose(Op::Append("late".into())).await,
            Err(Error::Shutdown { in_flight: false })
        ));
        assert!(matches!(
            nodes[f].read((), Consistency::Local).await,
            Err(Error::Shutdown { .. })
        ));
        assert!(matches!(
            nodes[f].status().await,
            Err(Error::Shutdown { .. })
        ));
        tokio::time::timeout(Duration::from_secs(1), async {
            while watch.changed().await.is_ok() {}
        })
        .await
        .expect("the leadership watch ends once the node has stopped");
        nodes[f].shutdown().await; // a second call does nothing
        for node in &nodes {
            node.shutdown().await;
        }
    });
}

#[test]
fn a_command_the_state_machine_cannot_decode_is_refused_on_every_node() {
    run_paused(|| async {
        let network = actix::Actor::start(MemoryNetwork::new(3));
        let nodes = start_cluster(&network).await;
        let l = leader(&nodes).await;
        nodes[l]
            .propose(Op::AppendNumber(Even(2)))
            .await
            .expect("applied");
        // 3 encodes, but does not decode: committed, then refused by the state machine.
        match nodes[l].propose(Op::AppendNumber(Even(3))).await {
            Err(Error::BadCommand(reason)) => assert!(reason.contains("odd"), "{reason}"),
            other => panic!("expected BadCommand, got {other:?}"),
        }
        // The node is still serving, and no node applied the bad command.
        let (_, len) = nodes[l]
            .propose(Op::Append("after".into()))
            .await
            .expect("applied");
        assert_eq!(len, 2);
        let expected = vec!["2".to_string(), "after".to_string()];
        for node in &nodes {
            for _ in 0..100 {
                if local(node).await == expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(local(node).await, expected, "node {}", node.id());
        }
        for node in &nodes {
            node.shutdown().await;
        }
    });
}

#[test]
fn the_builder_refuses_bad_configurations() {
    run_paused(|| async {
        let config_error = |result: Result<RaftNode<Journal>, StartError>| match result {
            Err(StartError::Config(message)) => message,
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("expected a configuration error, got a node"),
        };
        let message = config_error(
            RaftNodeBuilder::new()
                .peers([(NodeId(1), "127.0.0.1:0")])
                .storage(MemStorage::new())
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("id"), "{message}");
        let message = config_error(
            RaftNodeBuilder::new()
                .id(NodeId(4))
                .peers([(NodeId(1), "127.0.0.1:0")])
                .storage(MemStorage::new())
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("not among the peers"), "{message}");
        let message = config_error(
            RaftNodeBuilder::new()
                .id(NodeId(1))
                .peers([(NodeId(1), "127.0.0.1:0")])
                .storage(MemStorage::new())
                .heartbeat(Duration::from_millis(50))
                .spare_sync_hold(Duration::from_millis(50))
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("shorter than the heartbeat"), "{message}");
        let message = config_error(
            RaftNodeBuilder::new()
                .id(NodeId(1))
                .peers([(NodeId(1), "127.0.0.1:0")])
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("storage"), "{message}");
        let message = config_error(
            RaftNodeBuilder::new()
                .id(NodeId(1))
                .peers([(NodeId(1), "node1:7001")])
                .storage(MemStorage::new())
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("listen"), "{message}");
        let message = config_error(
            RaftNodeBuilder::new()
                .id(NodeId(1))
                .peers([(NodeId(1), "127.0.0.1:0")])
                .storage(MemStorage::new())
                .heartbeat(Duration::from_millis(1000))
                .start(Journal::default())
                .await,
        );
        assert!(message.contains("heartbeat"), "{message}");
    });
}

#[test]
fn a_state_machine_that_panics_stops_every_node_that_applies_the_entry() {
    run_paused(|| async {
        let network = actix::Actor::start(MemoryNetwork::new(5));
        let nodes = start_cluster(&network).await;
        let l = leader(&nodes).await;
        nodes[l]
            .propose(Op::Append("before".into()))
            .await
            .expect("applied");
        // The panic is deterministic: each node that applies the entry panics there, and stops
        // rather than go on leading or voting with a state machine that is gone. Once a majority
        // has stopped, the last node cannot commit (or apply) anything more.
        let outcome = nodes[l].propose(Op::Panic).await;
        assert!(
            matches!(outcome, Err(Error::Shutdown { in_flight: true })),
            "{outcome:?}"
        );
        let mut stopped = 0;
        for node in &nodes {
            let mut watch = node.leadership();
            let ended = tokio::time::timeout(Duration::from_secs(2), async {
                while watch.changed().await.is_ok() {}
            })
            .await;
            if ended.is_ok() {
                stopped += 1;
                assert!(matches!(node.status().await, Err(Error::Shutdown { .. })));
            } else {
                assert_eq!(local(node).await, vec!["before".to_string()]);
            }
        }
        assert!(stopped >= 2, "only {stopped} nodes stopped");
        assert!(nodes[l].status().await.is_err(), "the leader stopped");
        // The leader says why, so that a service can exit and be restarted.
        match nodes[l].stopped().await {
            StopCause::Failed { reason } => assert!(
                reason.contains("the state machine panicked")
                    && reason.contains("planted by the test"),
                "{reason}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        for node in &nodes {
            node.shutdown().await;
        }
    });
}

/// A store in memory whose writes fail once `broken` is set (a full or failing disk).
struct Breakable {
    store: MemStorage,
    broken: Arc<AtomicBool>,
}

impl LogStorage for Breakable {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        self.store.recover()
    }
    fn write(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StorageError::Io {
                path: "the test's disk".into(),
                source: std::io::Error::other("no space left (planted by the test)"),
            });
        }
        self.store.write(write)
    }
    fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.store.entries(from, to, max_bytes)
    }
    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        self.store.term(index)
    }
    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.store.last_index()
    }
}

#[test]
fn a_node_whose_log_write_fails_stops_and_says_why_and_the_others_go_on() {
    run_paused(|| async {
        let network = actix::Actor::start(MemoryNetwork::new(11));
        let broken: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        let nodes = start_cluster_on(&network, |id| Breakable {
            store: MemStorage::new(),
            broken: broken[id.0 as usize - 1].clone(),
        })
        .await;
        let l = leader(&nodes).await;
        nodes[l]
            .propose(Op::Append("before".into()))
            .await
            .expect("applied");

        // The leader's disk fails: its next write fails, and it stops rather than go on without
        // what it could not make durable; the proposal's outcome is unknown to its client.
        broken[l].store(true, Ordering::SeqCst);
        let outcome = nodes[l].propose(Op::Append("lost?".into())).await;
        assert!(
            matches!(outcome, Err(Error::Shutdown { .. })),
            "{outcome:?}"
        );
        match nodes[l].stopped().await {
            StopCause::Failed { reason } => assert!(
                reason.contains("storage failed") && reason.contains("planted by the test"),
                "{reason}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(nodes[l].status().await.is_err(), "the leader stopped");

        // The two others elect one of them and go on; one told to stop says so.
        let others: Vec<RaftNode<Journal>> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != l)
            .map(|(_, node)| node.clone())
            .collect();
        let next = leader(&others).await;
        others[next]
            .propose(Op::Append("after".into()))
            .await
            .expect("the two others commit");
        let follower = &others[1 - next];
        follower.shutdown().await;
        assert_eq!(follower.stopped().await, StopCause::Shutdown);
        for node in &nodes {
            node.shutdown().await;
        }
    });
}
