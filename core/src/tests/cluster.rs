//! A synchronous in-memory cluster of rules, with a replicator per peer built on `Progress`, a
//! durable "disk" per node that a crash keeps, and a network that can be cut. Messages are
//! delivered one at a time in FIFO order, so every scenario is exact.

use crate::{
    AppendEntries, Entry, Envelope, HardState, LeadershipChange, LogIndex, LogTerms, LogWrite,
    Message, NodeId, PendingRounds, Progress, Raft, RaftConfig, RecoveredState, ResponseEffect,
    Role, Standing, Term,
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
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) applied: Vec<Entry>,
    pub(crate) up: bool,
    /// Per peer: leadership confirmation rounds waiting for an answer, with the first message
    /// number that answers for each (as the replicators keep them).
    pub(crate) confirming: BTreeMap<NodeId, PendingRounds>,
    /// The number of the next AppendEntries this node sends.
    pub(crate) next_request_id: u64,
}

impl Node {
    fn take_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }
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
                progress: BTreeMap::new(),
                applied: Vec::new(),
                up: true,
                confirming: BTreeMap::new(),
                next_request_id: 0,
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

    fn deliver(&mut self, envelope: Envelope) {
        let Envelope { from, to, message } = envelope;
        if self.cut.contains(&(from, to)) || !self.nodes.get(&to).is_some_and(|n| n.up) {
            return;
        }
        let node = self.nodes.get_mut(&to).expect("known node");
        if let Message::AppendEntriesResponse(response) = &message {
            let term = node.raft.current_term();
            if node.raft.role() == Role::Leader {
                if response.term == term && response.vouches() {
                    let rounds = node.confirming.entry(from).or_default();
                    if let Some(round) = rounds.answered(response.request_id) {
                        node.raft.on_leadership_confirmed(from, term, round);
                    }
                }
                if let Some(progress) = node.progress.get_mut(&from) {
                    let effect = progress.on_response(term, response);
                    if progress.take_data_loss() {
                        node.raft.on_follower_data_loss(from, term);
                    }
                    match effect {
                        ResponseEffect::Contact { matched } => {
                            node.raft.on_replication_report(from, term, matched)
                        }
                        ResponseEffect::Unvouched
                        | ResponseEffect::HigherTerm(_)
                        | ResponseEffect::Stale => {}
                    }
                }
            }
        }
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
            node.disk.apply(&ready.write);
            if let Some(last) = ready.write.last_log_id() {
                node.raft.on_log_flushed(last);
            }
            self.queue.extend(ready.messages);
            let node = self.nodes.get_mut(&id).expect("known node");
            match ready.leadership {
                Some(LeadershipChange::Became { term, last_index }) => {
                    let previous = self.leaders.insert(term, id);
                    assert!(
                        previous.is_none() || previous == Some(id),
                        "two leaders in term {term}: {previous:?} and {id}"
                    );
                    node.progress = node
                        .raft
                        .replication_targets()
                        .into_iter()
                        .map(|p| (p, Progress::new(last_index, 4)))
                        .collect();
                }
                Some(LeadershipChange::Lost) => {
                    node.progress.clear();
                    node.confirming.clear();
                }
                None => {}
            }
            if node.raft.role() == Role::Leader {
                // Replicate to the targets the rules name (they change with the configuration
                // and its commit), and to nobody else.
                let targets = node.raft.replication_targets();
                let last = node.raft.last_log_id().index;
                node.progress.retain(|peer, _| targets.contains(peer));
                for member in targets {
                    node.progress
                        .entry(member)
                        .or_insert_with(|| Progress::new(last, 4));
                }
            }
            let applicable = node.raft.applicable_index().0 as usize;
            while node.applied.len() < applicable.min(node.disk.log.len()) {
                let next = node.disk.log[node.applied.len()].clone();
                node.applied.push(next);
            }
            if let Some(round) = ready.confirm_round {
                let first = node.next_request_id + 1;
                for peer in node.progress.keys() {
                    node.confirming.entry(*peer).or_default().note(round, first);
                }
            }
            if ready.heartbeat || ready.confirm_round.is_some() {
                // A round between heartbeats (for reads) sends one to every peer.
                self.send_heartbeats(id, !ready.heartbeat);
            }
            self.replicate(id);
        }
    }

    /// Heartbeats to the peers in Replicate state, or (`to_all`, for a confirmation round
    /// between heartbeats) to every peer, without a heartbeat tick.
    fn send_heartbeats(&mut self, id: NodeId, to_all: bool) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let term = node.raft.current_term();
        let commit = node.raft.commit_index();
        let peers: Vec<NodeId> = node.progress.keys().copied().collect();
        for peer in peers {
            let progress = node.progress.get_mut(&peer).expect("listed");
            if !to_all {
                progress.on_heartbeat_tick();
            }
            if to_all || progress.state() == crate::ProgressState::Replicate {
                let matched = progress.matched();
                let request_id = node.take_request_id();
                self.queue.push_back(Envelope {
                    from: id,
                    to: peer,
                    message: Message::AppendEntries(AppendEntries {
                        term,
                        prev_log_id: matched,
                        entries: vec![],
                        leader_commit: commit.min(matched.index),
                        request_id,
                    }),
                });
            }
        }
    }

    fn replicate(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.raft.role() != Role::Leader {
            return;
        }
        let term = node.raft.current_term();
        let commit = node.raft.commit_index();
        let last = node.raft.last_log_id().index;
        let mut next_request_id = node.next_request_id;
        for (peer, progress) in node.progress.iter_mut() {
            while let Some(range) = progress.next_send(last, 3) {
                let entries: Vec<Entry> = node.disk.log
                    [range.prev_index.0 as usize..range.last_index.0 as usize]
                    .to_vec();
                let prev_term = if range.prev_index == LogIndex::ZERO {
                    Term::ZERO
                } else {
                    node.disk.log[range.prev_index.0 as usize - 1].term
                };
                progress.on_sent(range);
                next_request_id += 1;
                self.queue.push_back(Envelope {
                    from: id,
                    to: *peer,
                    message: Message::AppendEntries(AppendEntries {
                        term,
                        prev_log_id: crate::LogId::new(prev_term, range.prev_index),
                        entries,
                        leader_commit: commit,
                        request_id: next_request_id,
                    }),
                });
            }
        }
        node.next_request_id = next_request_id;
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
