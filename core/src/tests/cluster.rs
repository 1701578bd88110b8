//! A synchronous in-memory cluster of rules, a durable "disk" per node that a crash keeps, and a
//! network that can be cut. Messages are delivered one at a time in FIFO order, so every scenario
//! is exact. The leader's sends are the rules' own (`Ready::sends`); the cluster only fetches the
//! entries from the disk, as the node actor does from its cache.

use crate::{
    Entry, Envelope, HardState, LeadershipChange, LogTerms, LogWrite, NodeId, PeerSend, Raft,
    RaftConfig, RecoveredState, Role, SendOutcome, Standing, Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub(crate) struct Disk {
    pub(crate) hard_state: HardState,
    pub(crate) standing: Standing,
    pub(crate) log: Vec<Entry>,
}

impl Disk {
    fn apply(&mut self, write: &LogWrite) {
        if let Some(from) = write.truncate_from {
            self.log.truncate(from.0 as usize - 1);
        }
        for entry in &write.entries {
            assert_eq!(
                entry.index.0 as usize,
                self.log.len() + 1,
                "appends are consecutive"
            );
            self.log.push(entry.clone());
        }
        if let Some(hard_state) = write.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(standing) = write.standing {
            self.standing = standing;
        }
    }

    fn recovered(&self) -> RecoveredState {
        let mut terms = LogTerms::default();
        terms.append(&self.log);
        RecoveredState {
            hard_state: self.hard_state,
            standing: self.standing,
            term_boundaries: terms.boundaries(),
            log_start: crate::LogId::ZERO,
            memberships: crate::configuration_entries(&self.log),
            snapshot_membership: None,
        }
    }
}

pub(crate) struct Node {
    pub(crate) raft: Raft,
    pub(crate) disk: Disk,
    pub(crate) applied: Vec<Entry>,
    pub(crate) up: bool,
}

pub(crate) struct Cluster {
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) queue: VecDeque<Envelope>,
    /// Directed links that drop everything.
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    configs: BTreeMap<NodeId, RaftConfig>,
    /// Every (term, leader) ever seen, to check Election Safety.
    pub(crate) leaders: BTreeMap<Term, NodeId>,
}

impl Cluster {
    /// A cluster of nodes that were members before: their stores hold what they promised, so
    /// they vote at once (no rejoin round, see `rejoin.rs`), even with links cut from the start.
    pub(crate) fn new_members(configs: Vec<RaftConfig>) -> Cluster {
        let mut cluster = Cluster::new(Vec::new());
        for config in configs {
            let id = config.id;
            cluster.configs.insert(id, config);
            let disk = Disk {
                hard_state: HardState::default(),
                standing: Standing::Member,
                log: Vec::new(),
            };
            cluster.start(id, disk);
        }
        cluster
    }

    pub(crate) fn new(configs: Vec<RaftConfig>) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            configs: BTreeMap::new(),
            leaders: BTreeMap::new(),
        };
        for config in configs {
            let id = config.id;
            cluster.configs.insert(id, config);
            let disk = Disk {
                hard_state: HardState::default(),
                standing: Standing::default(),
                log: Vec::new(),
            };
            cluster.start(id, disk);
        }
        cluster
    }

    fn start(&mut self, id: NodeId, disk: Disk) {
        let raft = Raft::new(self.configs[&id].clone(), disk.recovered(), id.0 * 7919)
            .expect("valid config");
        self.nodes.insert(
            id,
            Node {
                raft,
                disk,
                applied: Vec::new(),
                up: true,
            },
        );
        self.process(id);
    }

    /// Crash `id`: it loses everything but its disk, and is down until restarted.
    pub(crate) fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.up = false;
        }
    }

    /// Start a new, empty node `id` that knows no configuration (it joins an existing cluster),
    /// with the timing of node `like`.
    pub(crate) fn add_node(&mut self, id: NodeId, like: NodeId) {
        let mut config = self.configs[&like].clone();
        config.id = id;
        config.voters.clear();
        self.configs.insert(id, config);
        let disk = Disk {
            hard_state: HardState::default(),
            standing: Standing::default(),
            log: Vec::new(),
        };
        self.start(id, disk);
    }

    /// Restart `id` (crashed) with `disk` in place of its own: a replaced disk.
    pub(crate) fn replace_disk(&mut self, id: NodeId, disk: Disk) {
        self.nodes.remove(&id);
        self.start(id, disk);
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("known node");
        self.start(id, node.disk);
    }

    pub(crate) fn isolate(&mut self, id: NodeId) {
        for other in self.configs.keys().copied().collect::<Vec<_>>() {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub(crate) fn raft(&mut self, id: u64) -> &mut Raft {
        &mut self.nodes.get_mut(&NodeId(id)).expect("known node").raft
    }

    /// Tick one node, then process what it asks for (without delivering messages).
    pub(crate) fn tick(&mut self, id: NodeId) {
        if !self.nodes[&id].up {
            return;
        }
        self.nodes.get_mut(&id).expect("known node").raft.tick();
        self.process(id);
    }

    /// Tick every node `times` times, delivering all messages after each round.
    pub(crate) fn tick_all(&mut self, times: u32) {
        for _ in 0..times {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.tick(id);
            }
            self.deliver_all();
        }
    }

    /// Tick until some node leads, at most `limit` rounds; returns it.
    pub(crate) fn elect(&mut self, limit: u32) -> Option<NodeId> {
        for _ in 0..limit {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            self.tick_all(1);
        }
        self.leader()
    }

    /// The node that is leader in the highest term, if any node is up and leading.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.up && n.raft.role() == Role::Leader)
            .max_by_key(|n| n.raft.current_term())
            .map(|n| n.raft.id())
    }

    pub(crate) fn propose(&mut self, id: NodeId, command: &str) -> bool {
        let node = self.nodes.get_mut(&id).expect("known node");
        let ok = node
            .raft
            .propose(vec![bytes::Bytes::copy_from_slice(command.as_bytes())])
            .is_ok();
        self.process(id);
        ok
    }

    pub(crate) fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while let Some(envelope) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            self.deliver(envelope);
        }
    }

    pub(crate) fn deliver(&mut self, envelope: Envelope) {
        let Envelope { from, to, message } = envelope;
        if self.cut.contains(&(from, to)) || !self.nodes.get(&to).is_some_and(|n| n.up) {
            return;
        }
        let node = self.nodes.get_mut(&to).expect("known node");
        node.raft.step(from, message);
        self.process(to);
    }

    /// Carry out the node's Ready: write to disk (synchronously: durable at once), then send; again
    /// while the events (its own flush, a commit) produce more.
    pub(crate) fn process(&mut self, id: NodeId) {
        for _ in 0..16 {
            let node = self.nodes.get_mut(&id).expect("known node");
            let ready = node.raft.take_ready();
            if ready.is_empty() {
                return;
            }
            self.queue.extend(ready.prompt_messages);
            node.disk.apply(&ready.write);
            if let Some(last) = ready.write.last_log_id() {
                node.raft.on_log_flushed(last);
            }
            self.queue.extend(ready.messages);
            if let Some(LeadershipChange::Became { term, .. }) = ready.leadership {
                let previous = self.leaders.insert(term, id);
                assert!(
                    previous.is_none() || previous == Some(id),
                    "two leaders in term {term}: {previous:?} and {id}"
                );
            }
            let node = self.nodes.get_mut(&id).expect("known node");
            let applicable = node.raft.applicable_index().0 as usize;
            while node.applied.len() < applicable.min(node.disk.log.len()) {
                let next = node.disk.log[node.applied.len()].clone();
                node.applied.push(next);
            }
            self.carry_out(id, ready.sends);
        }
    }

    /// Send what the leader's rules ask for, fetching entries from its disk (which holds its whole
    /// log: writes are durable at once). This cluster keeps no snapshots.
    fn carry_out(&mut self, id: NodeId, sends: Vec<PeerSend>) {
        let node = self.nodes.get_mut(&id).expect("known node");
        for send in sends {
            let outcome = match send {
                PeerSend::Message(envelope) => {
                    self.queue.push_back(envelope);
                    continue;
                }
                PeerSend::Entries(order) => {
                    let from = order.first_index().0 as usize - 1;
                    let to = (order.last_index.0 as usize).min(node.disk.log.len());
                    let entries = node.disk.log.get(from..to).map(<[Entry]>::to_vec);
                    match entries.filter(|entries| !entries.is_empty()) {
                        Some(entries) => {
                            let outcome = order.sent(&entries);
                            self.queue.push_back(order.message(id, entries));
                            outcome
                        }
                        None => order.unavailable(),
                    }
                }
                PeerSend::OpenSnapshot { to, request_id } => {
                    SendOutcome::SnapshotUnavailable { to, request_id }
                }
                PeerSend::SnapshotChunk(order) => order.unavailable(),
            };
            node.raft.on_send_outcome(outcome);
        }
    }

    /// Every node that is up holds the same applied prefix, and logs agree wherever they overlap
    /// below the shortest commit index (State Machine Safety, Log Matching).
    pub(crate) fn assert_consistent(&self) {
        let applied: Vec<&Vec<Entry>> = self.nodes.values().map(|n| &n.applied).collect();
        for a in &applied {
            for b in &applied {
                let common = a.len().min(b.len());
                assert_eq!(a[..common], b[..common], "applied prefixes differ");
            }
        }
    }
}
