//! The event loop: one seeded RNG, one queue of timed events, the nodes, the network, the faults,
//! the checker after every event, and the liveness phase once the faults stop.

use crate::config::SimConfig;
use crate::invariants::{Checker, Violation};
use crate::network::{Fate, Network};
use crate::node::{Effects, Knobs, SimNode};
use crate::trace::{Trace, TraceEvent};
use crate::{SimFailure, SimReport};
use raftor_core::{
    ConfChange, EntryPayload, Envelope, LogId, LogIndex, Membership, NodeId, RaftConfig, Role, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// Something due at a given time.
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver(Envelope),
    Sync {
        node: NodeId,
        incarnation: u64,
    },
    Flushed {
        node: NodeId,
        incarnation: u64,
        last: LogId,
    },
    Propose,
    Read,
    Fault,
    Crash {
        node: NodeId,
        incarnation: u64,
    },
    Restart {
        node: NodeId,
    },
    Heal {
        links: Vec<(NodeId, NodeId)>,
    },
    Membership,
    Snapshot,
    /// A leader's read of entries for a peer (a cache miss) completes.
    Fetch {
        node: NodeId,
        incarnation: u64,
        order: raftor_core::EntriesOrder,
    },
    /// Shut a node down for good: its removal is committed.
    Retire {
        node: NodeId,
    },
}

/// Where the liveness check stands.
#[derive(Clone, Copy, Debug)]
enum Liveness {
    /// Faults still on, or no liveness check.
    Off,
    WaitLeader {
        deadline: u64,
    },
    WaitApplied {
        deadline: u64,
        target: Option<LogId>,
    },
    Done,
}

pub(crate) struct Sim<'c> {
    config: &'c SimConfig,
    seed: u64,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, SimNode>,
    periods: BTreeMap<NodeId, u64>,
    /// When each node's latest flush notice is due (notices keep their order).
    flush_notice_at: BTreeMap<NodeId, u64>,
    net: Network,
    checker: Checker,
    trace: Trace,
    knobs: Knobs,
    report: SimReport,
    faults: bool,
    next_command: u64,
    next_read: u64,
    /// ReadIndex reads under way: id -> the commit index they must reflect.
    pending_reads: BTreeMap<u64, LogIndex>,
    liveness: Liveness,
    /// The members of the latest committed configuration (to retire the nodes it removes).
    committed_members: BTreeSet<NodeId>,
    committed_config_index: LogIndex,
    /// Nodes removed by a committed configuration (its index), to retire once a leader reports
    /// the change settled (`Raft::settled_membership_index`): the operator is told it is done.
    removals_to_settle: Vec<(LogIndex, Vec<NodeId>)>,
    /// The id the next added node gets.
    next_id: u64,
    /// Per node: when its clock's next tick is due. A stall delays the tick event, not this.
    tick_due: BTreeMap<NodeId, u64>,
    /// Per node: its clock stands still until then (a stalled timer thread); the ticks missed
    /// meanwhile come in a burst when it resumes, as a driver that counts ticks by its clock does.
    stalled_until: BTreeMap<NodeId, u64>,
}

impl<'c> Sim<'c> {
    /// The rules' configuration of node `id`, with this run's flow control.
    fn raft_config(&self, id: NodeId, joining: bool) -> RaftConfig {
        let mut config = self.config.raft_config(id, joining);
        config.replication.max_entries_per_message = self.knobs.max_entries;
        config.replication.max_inflight = self.knobs.max_inflight;
        config.replication.coalesce_below_bytes = self.knobs.coalesce_below_bytes;
        config
    }

    pub(crate) fn new(seed: u64, config: &'c SimConfig, full_trace: bool) -> Sim<'c> {
        config.validate();
        let mut rng = SmallRng::seed_from_u64(seed);
        // Drawn apart from `rng`, so that adding it changed no other draw of a seed's run.
        let mut nagle = SmallRng::seed_from_u64(seed ^ 0x6e61_676c_655f_7273);
        let coalesce_below_bytes = match nagle.gen_range(0..3) {
            0 => 0,
            1 => nagle.gen_range(1..=64),
            _ => usize::MAX,
        };
        let knobs = Knobs {
            bug: config.bug,
            max_entries: rng.gen_range(1..=config.max_entries.max(1)),
            max_inflight: rng.gen_range(1..=config.max_inflight.max(1)),
            coalesce_below_bytes,
            chunk_bytes: rng.gen_range(8..=32),
            message_bytes: rng.gen_range(4..=64),
            cache_entries: rng.gen_range(1..=12),
        };
        let initial: BTreeSet<NodeId> = (1..=config.nodes).map(NodeId).collect();
        let bootstrap = Membership::bootstrap(&initial, &BTreeMap::new());
        Sim {
            config,
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            periods: BTreeMap::new(),
            flush_notice_at: BTreeMap::new(),
            net: Network::default(),
            checker: Checker::new(config.disabled.clone(), bootstrap),
            trace: Trace::new(config.trace_len, full_trace),
            knobs,
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            faults: true,
            next_command: 0,
            next_read: 0,
            pending_reads: BTreeMap::new(),
            liveness: Liveness::Off,
            committed_members: initial,
            committed_config_index: LogIndex::ZERO,
            removals_to_settle: Vec::new(),
            next_id: config.nodes + 1,
            tick_due: BTreeMap::new(),
            stalled_until: BTreeMap::new(),
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), event);
    }

    fn fail(&self, violation: Violation) -> SimFailure {
        SimFailure {
            violation: Box::new(violation),
            seed: self.seed,
            step: self.report.steps,
            time: self.now,
            trace: self.trace.last_lines(),
            environment: self.config.environment(),
        }
    }

    /// Runs to the end; hands back the trace too (for a full listing).
    pub(crate) fn run(mut self) -> (Result<SimReport, SimFailure>, Vec<String>) {
        let result = self.run_inner().map_err(|v| self.fail(v));
        let result = result.map(|()| {
            let mut report = std::mem::take(&mut self.report);
            report.time = self.now;
            report.digest = self.trace.digest();
            report.leaders = self.checker.leader_terms();
            report.commits = self.checker.committed_entries();
            report.configs_committed = self.checker.committed_configs();
            report.max_term = self
                .nodes
                .values()
                .filter_map(|n| n.raft().map(|r| r.current_term().0))
                .max()
                .unwrap_or(0);
            report
        });
        let mut lines = self.trace.take_full();
        if !lines.is_empty() {
            lines.insert(0, format!("environment: {}", self.config.environment()));
        }
        (result, lines)
    }

    fn run_inner(&mut self) -> Result<(), Violation> {
        let mut fx = Effects::default();
        for id in (1..=self.config.nodes).map(NodeId) {
            self.add_node(id, false, &mut fx);
        }
        self.absorb(fx)?;
        if self.config.membership_interval > 0 {
            let first = self.rng.gen_range(1..=2 * self.config.membership_interval);
            self.schedule(first, Event::Membership);
        }
        if self.config.snapshot_interval > 0 {
            let first = self.rng.gen_range(1..=2 * self.config.snapshot_interval);
            self.schedule(first, Event::Snapshot);
        }
        if self.config.propose_interval > 0 {
            let first = self.rng.gen_range(1..=2 * self.config.propose_interval);
            self.schedule(first, Event::Propose);
        }
        if self.config.read_interval > 0 {
            let first = self.rng.gen_range(1..=2 * self.config.read_interval);
            self.schedule(first, Event::Read);
        }
        if self.config.crashes || self.config.partitions {
            let first = self
                .rng
                .gen_range(1..=2 * self.config.fault_interval.max(1));
            self.schedule(first, Event::Fault);
        }
        loop {
            if self.faults && self.report.steps >= self.config.steps {
                self.end_faults()?;
                if !self.config.liveness {
                    return Ok(());
                }
            }
            if matches!(self.liveness, Liveness::Done) {
                return Ok(());
            }
            let Some(((time, _), event)) = self.queue.pop_first() else {
                return Ok(());
            };
            self.now = time;
            self.report.steps += 1;
            let mut fx = Effects::default();
            self.handle(event, &mut fx);
            self.absorb(fx)?;
            if let Err(violation) = self.liveness_step() {
                self.checker.report(violation)?;
                // Liveness is not checked in this run: stop here.
                self.liveness = Liveness::Done;
            }
            self.checker.after_event(&self.nodes)?;
            self.check_leases()?;
        }
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Create node `id` (an initial voter, or a new empty node joining) and start it.
    fn add_node(&mut self, id: NodeId, joining: bool, fx: &mut Effects) {
        let period =
            self.config.tick_period.max(1) + self.rng.gen_range(0..=self.config.tick_jitter);
        self.periods.insert(id, period);
        self.nodes
            .insert(id, SimNode::new(self.raft_config(id, joining)));
        self.start_node(id, fx);
    }

    /// The nodes not retired, in id order.
    fn active_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect()
    }

    /// A random node that is not retired.
    fn random_node(&mut self) -> NodeId {
        let ids = self.active_ids();
        ids[self.rng.gen_range(0..ids.len())]
    }

    /// One random membership event, asked of the leader (of the highest term; now and then of a
    /// random node, which refuses unless it leads).
    fn membership_event(&mut self, fx: &mut Effects) {
        let knobs = self.knobs;
        let target = match self.stable_leader() {
            Some((leader, _)) if self.rng.gen_bool(0.9) => leader,
            _ => self.random_node(),
        };
        let Some(raft) = self.nodes[&target].raft() else {
            return;
        };
        let conf = raft.membership().conf.clone();
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let nodes = self.config.nodes;
        let can_add = conf.members().len() < (nodes + 2) as usize
            && self.next_id <= nodes + self.config.max_added_nodes;
        let can_remove_voter = voters.len() > nodes.div_ceil(2) as usize;
        // 0 add a learner, 1 promote, 2 remove a voter, 3 remove a learner, 4 replace, 5 transfer,
        // 6 add a new voter directly and remove one (joint), 7 add a new voter directly.
        let mut kinds = vec![5];
        if can_add {
            kinds.extend([0, 0, 0]);
        }
        if !learners.is_empty() {
            kinds.extend([1, 3, 4, 4]);
        }
        if can_remove_voter {
            kinds.extend([2, 2]);
        }
        if can_add && !voters.is_empty() {
            kinds.extend([6, 7]);
        }
        let kind = kinds[self.rng.gen_range(0..kinds.len())];
        let pick = |rng: &mut SmallRng, ids: &[NodeId]| ids[rng.gen_range(0..ids.len())];
        let new_node = |id: u64| (NodeId(id), Some(format!("n{id}")));
        let changes = match kind {
            0 => {
                let (id, address) = new_node(self.next_id);
                vec![ConfChange::AddLearner {
                    id,
                    address,
                    promote_when_caught_up: self.rng.gen_bool(0.5),
                }]
            }
            1 => vec![ConfChange::AddVoter {
                id: pick(&mut self.rng, &learners),
                address: None,
            }],
            2 => vec![ConfChange::Remove {
                id: pick(&mut self.rng, &voters),
            }],
            3 => vec![ConfChange::Remove {
                id: pick(&mut self.rng, &learners),
            }],
            4 => vec![
                ConfChange::AddVoter {
                    id: pick(&mut self.rng, &learners),
                    address: None,
                },
                ConfChange::Remove {
                    id: pick(&mut self.rng, &voters),
                },
            ],
            6 => {
                let (id, address) = new_node(self.next_id);
                vec![
                    ConfChange::AddVoter { id, address },
                    ConfChange::Remove {
                        id: pick(&mut self.rng, &voters),
                    },
                ]
            }
            7 => {
                let (id, address) = new_node(self.next_id);
                vec![ConfChange::AddVoter { id, address }]
            }
            _ => {
                let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != target).collect();
                if others.is_empty() {
                    return;
                }
                let to = pick(&mut self.rng, &others);
                self.report.transfers += 1;
                if let Some(Ok(())) = self.node(target).transfer_leadership(to, &knobs, fx) {
                    self.report.transfers_started += 1;
                }
                return;
            }
        };
        self.report.membership_changes += 1;
        let accepted = matches!(
            self.node(target).propose_membership(&changes, &knobs, fx),
            Some(Ok(_))
        );
        if accepted {
            self.report.membership_changes_accepted += 1;
            if matches!(kind, 0 | 6 | 7) {
                // The new node starts empty, knowing no voters; the leader brings it in.
                let id = NodeId(self.next_id);
                self.next_id += 1;
                self.report.joined += 1;
                fx.trace.push(TraceEvent::Joined { node: id });
                self.add_node(id, true, fx);
            }
        }
    }

    /// A committed configuration entry at `index` (first applied anywhere): the nodes it removes
    /// are shut down for good a little after it settles (`retire_settled_removals`).
    fn on_config_committed(&mut self, index: LogIndex, membership: &Membership) {
        if index <= self.committed_config_index {
            return;
        }
        self.committed_config_index = index;
        let members = membership.conf.members();
        let removed: Vec<NodeId> = self
            .committed_members
            .difference(&members)
            .copied()
            .collect();
        self.committed_members = members;
        if !removed.is_empty() {
            self.removals_to_settle.push((index, removed));
        }
    }

    /// The nodes a settled configuration removed are shut down for good a little later, as an
    /// operator would once the membership API reports the change done: once a leader saw a
    /// majority of the new voters hold its commit (`raftor_core::Raft::settled_membership_index`).
    fn retire_settled_removals(&mut self) {
        if self.removals_to_settle.is_empty() {
            return;
        }
        let settled = self
            .nodes
            .values()
            .filter_map(|node| node.raft())
            .map(|raft| raft.settled_membership_index())
            .max()
            .unwrap_or(LogIndex::ZERO);
        while self
            .removals_to_settle
            .first()
            .is_some_and(|(index, _)| *index <= settled)
        {
            let (_, removed) = self.removals_to_settle.remove(0);
            for node in removed {
                let delay = self
                    .rng
                    .gen_range(0..=3 * self.config.max_election_time() / 2);
                self.schedule(delay, Event::Retire { node });
            }
        }
    }

    /// (Re)start a node with a fresh seed and start its clock.
    fn start_node(&mut self, id: NodeId, fx: &mut Effects) {
        let seed = self.rng.gen();
        let knobs = self.knobs;
        let node = self.node(id);
        node.start(seed, &knobs, fx);
        let incarnation = node.incarnation;
        let first = self.rng.gen_range(1..=self.periods[&id]);
        self.tick_due.insert(id, self.now + first);
        self.stalled_until.remove(&id);
        self.schedule(
            first,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    fn handle(&mut self, event: Event, fx: &mut Effects) {
        let knobs = self.knobs;
        match event {
            Event::Tick { node, incarnation } => {
                let sim_node = self.node(node);
                if !sim_node.is_up() || sim_node.incarnation != incarnation {
                    return;
                }
                let stalled_until = self.stalled_until.get(&node).copied().unwrap_or(0);
                if self.now < stalled_until {
                    self.schedule(stalled_until - self.now, Event::Tick { node, incarnation });
                    return;
                }
                // Every tick the clock owes: after a stall, the missed ones only move the lease
                // clock on, as the node actor does (`Raft::skip_ticks`).
                let owed = self.ticks_owed(node).max(1);
                self.trace.push(self.now, TraceEvent::Tick { node });
                self.node(node).skip_ticks(owed - 1);
                self.node(node).tick(&knobs, fx);
                if fx.trace.is_empty() && fx.send.is_empty() {
                    // Nothing came of it: keep it in the digest, not in the readable trace.
                    self.trace.retract_last_line();
                }
                let period = self.periods[&node];
                let due = self.tick_due.entry(node).or_insert(self.now);
                *due += owed * period;
                let next = due.saturating_sub(self.now).max(1);
                self.schedule(next, Event::Tick { node, incarnation });
            }
            Event::Deliver(Envelope { from, to, message }) => {
                let reason = if self.net.is_cut(from, to) {
                    Some(crate::trace::DropReason::Cut)
                } else if !self.nodes[&to].is_up() {
                    Some(crate::trace::DropReason::Down)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.report.messages_dropped += 1;
                    self.trace.push(
                        self.now,
                        TraceEvent::Dropped {
                            from,
                            to,
                            message,
                            reason,
                        },
                    );
                    return;
                }
                self.report.messages_delivered += 1;
                self.trace.push(
                    self.now,
                    TraceEvent::Recv {
                        node: to,
                        from,
                        message: message.clone(),
                    },
                );
                self.node(to).receive(from, message, &knobs, fx);
            }
            Event::Sync { node, incarnation } => {
                let sim_node = self.node(node);
                if !sim_node.is_up() || sim_node.incarnation != incarnation {
                    return;
                }
                sim_node.sync_scheduled = false;
                let pending = sim_node.unsynced();
                if pending > 0 {
                    let count = self.rng.gen_range(1..=pending);
                    self.node(node).sync(count, &knobs, fx);
                }
            }
            Event::Flushed {
                node,
                incarnation,
                last,
            } => {
                let sim_node = self.node(node);
                if sim_node.is_up() && sim_node.incarnation == incarnation {
                    sim_node.flushed(last, &knobs, fx);
                }
            }
            Event::Fetch {
                node,
                incarnation,
                order,
            } => {
                let sim_node = self.node(node);
                if sim_node.is_up() && sim_node.incarnation == incarnation {
                    sim_node.fetch(order, &knobs, fx);
                }
            }
            Event::Propose => {
                if !self.faults {
                    return;
                }
                let node = self.random_node();
                self.next_command += 1;
                let command = self.next_command;
                if self.node(node).is_up() {
                    self.report.proposals += 1;
                    if self.node(node).propose(command, &knobs, fx).is_some() {
                        self.report.proposals_accepted += 1;
                    }
                }
                let next = self.rng.gen_range(1..=2 * self.config.propose_interval);
                self.schedule(next, Event::Propose);
            }
            Event::Read => {
                if !self.faults {
                    return;
                }
                let node = self.random_node();
                self.next_read += 1;
                let id = self.next_read;
                let committed = self.checker.committed_index();
                let lease = if self.config.lease_reads {
                    let lag = self.lease_lag(node);
                    self.nodes[&node].lease_read(lag).and_then(Result::ok)
                } else {
                    None
                };
                let mut read_fx = Effects::default();
                let taken = self.node(node).read_index(id, &knobs, &mut read_fx);
                fx.trace.push(TraceEvent::ReadAsked {
                    node,
                    id,
                    taken,
                    must_see: committed,
                    lease,
                });
                fx.merge(read_fx);
                if taken {
                    self.report.reads += 1;
                    self.pending_reads.insert(id, committed);
                }
                // A stale lease is caught one event earlier, by `check_leases` after the last
                // event: nothing changed since, and the node's clock has only aged the lease.
                if lease.is_some() {
                    self.report.lease_reads += 1;
                }
                let next = self.rng.gen_range(1..=2 * self.config.read_interval);
                self.schedule(next, Event::Read);
            }
            Event::Fault => {
                if !self.faults {
                    return;
                }
                self.fault(fx);
                let next = self
                    .rng
                    .gen_range(1..=2 * self.config.fault_interval.max(1));
                self.schedule(next, Event::Fault);
            }
            Event::Crash { node, incarnation } => {
                if self.faults && self.nodes[&node].incarnation == incarnation {
                    self.crash(node, fx);
                }
            }
            Event::Restart { node } => {
                if !self.nodes[&node].is_up() && !self.nodes[&node].retired {
                    self.report.restarts += 1;
                    self.start_node(node, fx);
                }
            }
            Event::Heal { links } => {
                let healed = self.net.heal(&links);
                if healed > 0 {
                    self.trace
                        .push(self.now, TraceEvent::Healed { links: healed });
                }
            }
            Event::Membership => {
                if !self.faults {
                    return;
                }
                self.membership_event(fx);
                let next = self.rng.gen_range(1..=2 * self.config.membership_interval);
                self.schedule(next, Event::Membership);
            }
            Event::Snapshot => {
                if !self.faults {
                    return;
                }
                let node = self.random_node();
                let trailing = self.rng.gen_range(0..=self.config.snapshot_trailing);
                let padding = self.rng.gen_range(0..=self.config.snapshot_padding);
                if self.node(node).take_snapshot(trailing, padding, &knobs, fx) {
                    self.report.snapshots_taken += 1;
                }
                let next = self.rng.gen_range(1..=2 * self.config.snapshot_interval);
                self.schedule(next, Event::Snapshot);
            }
            Event::Retire { node } => {
                let sim_node = self.node(node);
                if sim_node.retired {
                    return;
                }
                if sim_node.is_up() {
                    sim_node.crash(fx);
                }
                sim_node.retired = true;
                self.report.retired += 1;
                fx.trace.push(TraceEvent::Retired { node });
            }
        }
    }

    /// One random fault: a crash, a symmetric partition, a one-way cut, a link cut both ways, a
    /// clock stall or a lost disk.
    fn fault(&mut self, fx: &mut Effects) {
        let mut kinds = Vec::new();
        if self.config.crashes {
            kinds.extend([0, 0]);
        }
        if self.config.partitions {
            kinds.extend([1, 2]);
            if self.config.link_cuts {
                kinds.push(5);
            }
        }
        if self.config.clock_stall.1 > 0 {
            kinds.push(3);
        }
        if self.config.disk_loss {
            kinds.push(4);
        }
        if kinds.is_empty() {
            return;
        }
        let ids = self.active_ids();
        match kinds[self.rng.gen_range(0..kinds.len())] {
            0 => {
                let up: Vec<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|id| self.nodes[id].is_up())
                    .collect();
                if up.is_empty() {
                    return;
                }
                let victim = up[self.rng.gen_range(0..up.len())];
                self.crash(victim, fx);
            }
            1 if ids.len() >= 2 => {
                let mut side: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                if side.iter().all(|s| *s == side[0]) {
                    let flip = self.rng.gen_range(0..side.len());
                    side[flip] = !side[flip];
                }
                let side_a: Vec<NodeId> = ids
                    .iter()
                    .zip(&side)
                    .filter(|(_, s)| **s)
                    .map(|(id, _)| *id)
                    .collect();
                let side_b: Vec<NodeId> = ids
                    .iter()
                    .zip(&side)
                    .filter(|(_, s)| !**s)
                    .map(|(id, _)| *id)
                    .collect();
                let mut links = Vec::new();
                for a in &side_a {
                    for b in &side_b {
                        links.push((*a, *b));
                        links.push((*b, *a));
                    }
                }
                self.cut_for_a_while(links, TraceEvent::Partition { side_a, side_b }, fx);
            }
            2 if ids.len() >= 2 => {
                let (from, to) = self.two_nodes(&ids);
                self.cut_for_a_while(vec![(from, to)], TraceEvent::Cut { from, to }, fx);
            }
            3 => self.stall_clock(fx),
            4 => self.lose_disk(fx),
            5 if ids.len() >= 2 => {
                let (a, b) = self.two_nodes(&ids);
                self.cut_for_a_while(vec![(a, b), (b, a)], TraceEvent::LinkCut { a, b }, fx);
            }
            _ => {}
        }
    }

    /// Two distinct nodes of `ids` (at least two), drawn in order.
    fn two_nodes(&mut self, ids: &[NodeId]) -> (NodeId, NodeId) {
        let first = ids[self.rng.gen_range(0..ids.len())];
        let others: Vec<NodeId> = ids.iter().copied().filter(|id| *id != first).collect();
        (first, others[self.rng.gen_range(0..others.len())])
    }

    /// Cut `links` (from, to) until they heal, uniform in `partition_time` from now.
    fn cut_for_a_while(
        &mut self,
        links: Vec<(NodeId, NodeId)>,
        traced: TraceEvent,
        fx: &mut Effects,
    ) {
        self.net.cut(&links);
        self.report.partitions += 1;
        fx.trace.push(traced);
        let lasts = self
            .rng
            .gen_range(self.config.partition_time.0..=self.config.partition_time.1);
        self.schedule(lasts, Event::Heal { links });
    }

    /// No leader holds a lease behind what another node applied: at every instant, not only
    /// when a lease read happens to be asked (a read lands in the brief gap while a rival leader
    /// commits only rarely). A lease read is served at the leader's commit index; any index
    /// applied anywhere is one a read asked from now on must see.
    fn check_leases(&mut self) -> Result<(), Violation> {
        if !self.config.lease_reads {
            return Ok(());
        }
        let committed = self.checker.committed_index();
        let stale = self.nodes.iter().find_map(|(&node, sim_node)| {
            let leads = sim_node
                .raft()
                .is_some_and(|raft| raft.role() == Role::Leader);
            if !leads {
                return None;
            }
            match sim_node.lease_read(self.lease_lag(node)) {
                Some(Ok(index)) if index < committed => Some(Violation::StaleLease {
                    node,
                    index,
                    committed,
                }),
                _ => None,
            }
        });
        match stale {
            Some(violation) => self.checker.report(violation),
            None => Ok(()),
        }
    }

    /// The ticks `node`'s clock owes, as the driver hands them to a lease read (none under the
    /// planted bug `LeaseIgnoresStall`).
    fn lease_lag(&self, node: NodeId) -> u64 {
        if self.config.bug == Some(crate::Bug::LeaseIgnoresStall) {
            0
        } else {
            self.ticks_owed(node)
        }
    }

    /// How many ticks `node`'s clock has run past the ticks it delivered (0 when on time).
    fn ticks_owed(&self, node: NodeId) -> u64 {
        let due = self.tick_due.get(&node).copied().unwrap_or(self.now);
        if self.now < due {
            0
        } else {
            (self.now - due) / self.periods[&node].max(1) + 1
        }
    }

    /// Stall one running node's clock for a while: it goes on receiving messages and answering
    /// reads, but its ticks wait (a timer thread starved of CPU), then come at once: the missed
    /// ones as `Raft::skip_ticks`, then one tick.
    fn stall_clock(&mut self, fx: &mut Effects) {
        let up: Vec<NodeId> = self
            .active_ids()
            .into_iter()
            .filter(|id| self.nodes[id].is_up())
            .collect();
        if up.is_empty() {
            return;
        }
        let node = up[self.rng.gen_range(0..up.len())];
        let lasts = self
            .rng
            .gen_range(self.config.clock_stall.0..=self.config.clock_stall.1);
        let until = self.now + lasts;
        let entry = self.stalled_until.entry(node).or_insert(0);
        *entry = (*entry).max(until);
        self.report.clock_stalls += 1;
        fx.trace.push(TraceEvent::ClockStall { node, until });
    }

    /// Replace one node's disk with an empty one: it restarts from nothing under its old id.
    /// One at a time (Raft, like any replication, cannot keep what a majority of a quorum lost):
    /// only while every other node's disk holds what it promised.
    fn lose_disk(&mut self, fx: &mut Effects) {
        let ids = self.active_ids();
        if ids.iter().any(|id| !self.nodes[id].is_member()) {
            return;
        }
        // Any node: a founding voter, or one added later (which restarts knowing no voters, as
        // one started with `--join` does).
        if ids.is_empty() {
            return;
        }
        let node = ids[self.rng.gen_range(0..ids.len())];
        let was_up = self.nodes[&node].is_up();
        let forgetful = self.config.bug == Some(crate::Bug::ForgetfulRejoin);
        self.node(node).lose_disk(forgetful, fx);
        self.report.disks_lost += 1;
        if was_up {
            self.report.crashes += 1;
            let downtime = self
                .rng
                .gen_range(self.config.downtime.0..=self.config.downtime.1);
            self.schedule(downtime, Event::Restart { node });
        }
    }

    fn crash(&mut self, node: NodeId, fx: &mut Effects) {
        if !self.nodes[&node].is_up() {
            return;
        }
        self.node(node).crash(fx);
        self.report.crashes += 1;
        let quick = self.config.quick_restart_rate > 0.0
            && self.rng.gen_bool(self.config.quick_restart_rate);
        let (shortest, longest) = if quick {
            self.report.quick_restarts += 1;
            self.config.quick_restart
        } else {
            self.config.downtime
        };
        let downtime = self.rng.gen_range(shortest..=longest);
        self.schedule(downtime, Event::Restart { node });
    }

    /// Carry out what the nodes asked for; check what must be checked at once.
    fn absorb(&mut self, fx: Effects) -> Result<(), Violation> {
        let Effects {
            send,
            trace,
            applied,
            restored,
            became_leader,
            led,
            contract,
            elections,
            lost_writes,
            flushed,
            reads,
            snapshots_installed,
            fetches,
        } = fx;
        self.report.snapshots_installed += snapshots_installed;
        for (node, read) in reads {
            let Some(committed) = self.pending_reads.remove(&read.id) else {
                continue;
            };
            self.trace.push(
                self.now,
                TraceEvent::ReadAnswered {
                    node,
                    id: read.id,
                    index: read.result.ok(),
                },
            );
            if let Ok(index) = read.result {
                self.report.reads_answered += 1;
                if index < committed {
                    self.checker.report(Violation::StaleRead {
                        node,
                        id: read.id,
                        index,
                        committed,
                    })?;
                }
            }
        }
        for (node, last) in flushed {
            // In order per node: never before the previous notice.
            let delay = self.rng.gen_range(0..=self.config.max_flush_notice_delay);
            let at = (self.now + delay).max(self.flush_notice_at.get(&node).copied().unwrap_or(0));
            self.flush_notice_at.insert(node, at);
            let incarnation = self.nodes[&node].incarnation;
            self.seq += 1;
            self.queue.insert(
                (at, self.seq),
                Event::Flushed {
                    node,
                    incarnation,
                    last,
                },
            );
        }
        self.report.lost_writes += lost_writes;
        for event in trace {
            self.trace.push(self.now, event);
        }
        self.report.elections += elections;
        for (node, detail) in contract {
            self.checker
                .report(Violation::ReadyContract { node, detail })?;
        }
        for (node, term) in became_leader {
            let durable_term = self
                .nodes
                .get(&node)
                .map(|n| n.disk.hard_state.current_term);
            if durable_term >= Some(term) {
                self.checker.on_became_leader(node, term)?;
            }
        }
        for (node, term) in led {
            self.checker.on_became_leader(node, term)?;
        }
        for (node, last, hash, membership) in restored {
            self.report.restores += 1;
            self.checker.on_restore(node, last, hash, &membership)?;
        }
        for (node, term, entry) in applied {
            self.report.applied += 1;
            self.checker.on_apply(node, term, &entry)?;
            if let EntryPayload::Config(membership) = &entry.payload {
                self.on_config_committed(entry.index, membership);
            }
        }
        for envelope in send {
            self.send(envelope);
        }
        for (node, order) in fetches {
            let incarnation = self.nodes[&node].incarnation;
            let delay = self.rng.gen_range(0..=self.config.max_sync_delay);
            self.schedule(
                delay,
                Event::Fetch {
                    node,
                    incarnation,
                    order,
                },
            );
        }
        let mut syncs = Vec::new();
        for node in self.nodes.values_mut() {
            if node.is_up() && node.unsynced() > 0 && !node.sync_scheduled {
                node.sync_scheduled = true;
                syncs.push((node.id, node.incarnation, node.unsynced_may_wait()));
            }
        }
        for (node, incarnation, may_wait) in syncs {
            let mut delay = self.rng.gen_range(1..=self.config.max_sync_delay.max(1));
            if may_wait && self.config.spare_sync_hold > 0 {
                // A spare follower holds its write to merge later ones into one sync.
                delay += self.rng.gen_range(0..=self.config.spare_sync_hold);
            }
            self.schedule(delay, Event::Sync { node, incarnation });
            if self.faults
                && self.config.crashes
                && self.rng.gen_bool(self.config.crash_before_sync_rate)
            {
                let at = self.rng.gen_range(0..delay);
                self.schedule(at, Event::Crash { node, incarnation });
            }
        }
        self.retire_settled_removals();
        Ok(())
    }

    fn send(&mut self, envelope: Envelope) {
        self.report.messages_sent += 1;
        let fate = self.net.fate(
            &mut self.rng,
            self.config,
            self.faults,
            envelope.from,
            envelope.to,
        );
        match fate {
            Fate::Dropped(reason) => {
                self.report.messages_dropped += 1;
                self.trace.push(
                    self.now,
                    TraceEvent::Dropped {
                        from: envelope.from,
                        to: envelope.to,
                        message: envelope.message,
                        reason,
                    },
                );
            }
            Fate::Delivered(delays) => {
                if delays.len() > 1 {
                    self.report.messages_duplicated += 1;
                    self.trace.push(
                        self.now,
                        TraceEvent::Duplicated {
                            from: envelope.from,
                            to: envelope.to,
                        },
                    );
                }
                for delay in delays {
                    self.schedule(delay, Event::Deliver(envelope.clone()));
                }
            }
        }
    }

    /// Faults stop: every link heals, every crashed node restarts, no more losses or duplicates.
    fn end_faults(&mut self) -> Result<(), Violation> {
        self.faults = false;
        self.trace.push(self.now, TraceEvent::FaultsEnd);
        self.net.heal_all();
        let mut fx = Effects::default();
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.is_up() && !n.retired)
            .map(|n| n.id)
            .collect();
        for id in down {
            self.report.restarts += 1;
            self.start_node(id, &mut fx);
        }
        self.absorb(fx)?;
        if self.config.liveness {
            self.liveness = Liveness::WaitLeader {
                deadline: self.now + self.liveness_bound(),
            };
        }
        self.checker.after_event(&self.nodes)
    }

    fn liveness_bound(&self) -> u64 {
        self.config.liveness_timeouts * self.config.max_election_time()
    }

    /// The leader of the highest term any running node is in, if there is one.
    fn stable_leader(&self) -> Option<(NodeId, Term)> {
        // A leader whose term no member of its configuration has passed. A node outside it (one
        // added by a change that never committed, then forgotten) may campaign on its own
        // without pre-vote; nobody listens to it, so it does not count.
        self.nodes.values().find_map(|n| {
            let raft = n.raft()?;
            if raft.role() != Role::Leader || !raft.is_promotable() {
                return None;
            }
            let members = raft.membership().conf.members();
            let top = self
                .nodes
                .values()
                .filter(|other| members.contains(&other.id))
                .filter_map(|other| other.raft().map(|r| r.current_term()))
                .max()
                .unwrap_or(raft.current_term());
            (raft.current_term() >= top).then_some((n.id, raft.current_term()))
        })
    }

    /// The members of `leader`'s configuration, which must all apply the liveness proposal.
    fn members_of(&self, leader: NodeId) -> BTreeSet<NodeId> {
        self.nodes[&leader]
            .raft()
            .map(|r| r.membership().conf.members())
            .unwrap_or_default()
    }

    fn cluster_state(&self) -> String {
        self.nodes
            .values()
            .map(|n| match n.raft() {
                Some(r) => format!(
                    "n{} {}{} term {} last {} commit {} applied {} config {}@{}",
                    n.id,
                    match r.standing() {
                        raftor_core::Standing::Member => String::new(),
                        other => format!("{other:?} "),
                    },
                    r.role().as_str(),
                    r.current_term(),
                    r.last_log_id(),
                    r.commit_index(),
                    n.applied_index,
                    crate::trace::ShowConf(&r.membership().conf),
                    r.membership_index()
                ),
                None if n.retired => format!("n{} retired", n.id),
                None => format!("n{} down", n.id),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn liveness_step(&mut self) -> Result<(), Violation> {
        match self.liveness {
            Liveness::Off | Liveness::Done => Ok(()),
            Liveness::WaitLeader { deadline } => {
                if let Some((node, term)) = self.stable_leader() {
                    self.trace
                        .push(self.now, TraceEvent::LivenessLeader { node, term });
                    self.report.liveness_leader_at = Some(self.now);
                    // Bringing a lagging node up to date takes a round trip (and a sync) per
                    // message: the bound grows with the backlog.
                    let last = self.nodes[&node].log.last_index().0;
                    let lag = self
                        .members_of(node)
                        .iter()
                        .filter_map(|id| self.nodes.get(id))
                        .map(|n| last.saturating_sub(n.applied_index.0))
                        .max()
                        .unwrap_or(0);
                    let round_trip = 2 * self.config.max_delay + self.config.max_sync_delay;
                    // Entries per message: the rules' bound, or fewer at the driver's byte
                    // bound (commands are at most 8 bytes here).
                    let per_message = (self.knobs.message_bytes as u64 / 8)
                        .clamp(1, self.knobs.max_entries.max(1));
                    let catch_up = lag * round_trip / per_message;
                    self.liveness = Liveness::WaitApplied {
                        deadline: self.now + self.liveness_bound() + catch_up,
                        target: None,
                    };
                    return self.liveness_step();
                }
                if self.now > deadline {
                    return Err(Violation::Liveness(format!(
                        "no leader {} ms after the faults stopped: {}",
                        self.liveness_bound(),
                        self.cluster_state()
                    )));
                }
                Ok(())
            }
            Liveness::WaitApplied { deadline, target } => {
                if let (Some(target), Some((leader, _))) = (target, self.stable_leader()) {
                    let committed = self.checker.committed_at(target.index) == Some(target);
                    let everywhere = committed
                        && self.members_of(leader).iter().all(|id| {
                            self.nodes
                                .get(id)
                                .is_some_and(|n| n.is_up() && n.applied_index >= target.index)
                        });
                    // No configuration left joint or uncommitted.
                    let settled = self.nodes[&leader].raft().is_some_and(|r| {
                        !r.membership().conf.is_joint() && r.membership_index() <= r.commit_index()
                    });
                    if everywhere && settled {
                        self.trace.push(self.now, TraceEvent::LivenessDone);
                        self.report.liveness_applied_at = Some(self.now);
                        self.liveness = Liveness::Done;
                        return Ok(());
                    }
                }
                if let Some((leader, _)) = self.stable_leader() {
                    let holds = target.is_some_and(|t| {
                        let log = &self.nodes[&leader].log;
                        log.term_at(t.index) == Some(t.term)
                    });
                    if !holds {
                        // First proposal, or the leader changed and lost it: (re)propose there.
                        let knobs = self.knobs;
                        self.next_command += 1;
                        let command = self.next_command;
                        let mut fx = Effects::default();
                        let placed = self.node(leader).propose(command, &knobs, &mut fx);
                        self.absorb(fx)?;
                        self.liveness = Liveness::WaitApplied {
                            deadline,
                            target: placed.or(target),
                        };
                    }
                }
                if self.now > deadline {
                    return Err(Violation::Liveness(format!(
                        "proposal {} not applied on every node by t={deadline}: {}",
                        target.map_or("(none placed)".to_string(), |t| t.to_string()),
                        self.cluster_state()
                    )));
                }
                Ok(())
            }
        }
    }
}
