//! The event loop: one seeded RNG, one queue of timed events, the nodes, the network, the faults,
//! the checker after every event, and the liveness phase once the faults stop.

use crate::config::SimConfig;
use crate::invariants::{Checker, Violation};
use crate::network::{Fate, Network};
use crate::node::{Effects, Knobs, SimNode};
use crate::trace::{Trace, TraceEvent};
use crate::{SimFailure, SimReport};
use raftor_core::{Envelope, LogId, LogIndex, NodeId, Role, Term};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

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
}

impl<'c> Sim<'c> {
    pub(crate) fn new(seed: u64, config: &'c SimConfig, full_trace: bool) -> Sim<'c> {
        config.validate();
        let mut rng = SmallRng::seed_from_u64(seed);
        let knobs = Knobs {
            bug: config.bug,
            max_entries: rng.gen_range(1..=config.max_entries.max(1)),
            max_inflight: rng.gen_range(1..=config.max_inflight.max(1)),
        };
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
            checker: Checker::new(config.disabled.clone()),
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
            report.max_term = self
                .nodes
                .values()
                .filter_map(|n| n.raft().map(|r| r.current_term().0))
                .max()
                .unwrap_or(0);
            report
        });
        (result, self.trace.take_full())
    }

    fn run_inner(&mut self) -> Result<(), Violation> {
        let mut fx = Effects::default();
        for id in (1..=self.config.nodes).map(NodeId) {
            let period =
                self.config.tick_period.max(1) + self.rng.gen_range(0..=self.config.tick_jitter);
            self.periods.insert(id, period);
            self.nodes
                .insert(id, SimNode::new(self.config.raft_config(id)));
            self.start_node(id, &mut fx);
        }
        self.absorb(fx)?;
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
        }
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// (Re)start a node with a fresh seed and start its clock.
    fn start_node(&mut self, id: NodeId, fx: &mut Effects) {
        let seed = self.rng.gen();
        let knobs = self.knobs;
        let node = self.node(id);
        node.start(seed, &knobs, fx);
        let incarnation = node.incarnation;
        let first = self.rng.gen_range(1..=self.periods[&id]);
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
                self.trace.push(self.now, TraceEvent::Tick { node });
                self.node(node).tick(&knobs, fx);
                if fx.trace.is_empty() && fx.send.is_empty() {
                    // Nothing came of it: keep it in the digest, not in the readable trace.
                    self.trace.retract_last_line();
                }
                let period = self.periods[&node];
                self.schedule(period, Event::Tick { node, incarnation });
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
            Event::Propose => {
                if !self.faults {
                    return;
                }
                let node = NodeId(self.rng.gen_range(1..=self.config.nodes));
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
                let node = NodeId(self.rng.gen_range(1..=self.config.nodes));
                self.next_read += 1;
                let id = self.next_read;
                let committed = self.checker.committed_index();
                let lease = if self.config.lease_reads {
                    self.nodes[&node].lease_read().and_then(Result::ok)
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
                if self.config.lease_reads {
                    if let Some(index) = lease {
                        self.report.lease_reads += 1;
                        if index < committed {
                            fx.stale_reads.push(Violation::StaleRead {
                                node,
                                kind: "lease",
                                id,
                                index,
                                committed,
                            });
                        }
                    }
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
                if !self.nodes[&node].is_up() {
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
        }
    }

    /// One random fault: a crash, a symmetric partition or a one-way cut.
    fn fault(&mut self, fx: &mut Effects) {
        let mut kinds = Vec::new();
        if self.config.crashes {
            kinds.extend([0, 0]);
        }
        if self.config.partitions {
            kinds.extend([1, 2]);
        }
        if kinds.is_empty() {
            return;
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
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
                self.net.cut(&links);
                self.report.partitions += 1;
                fx.trace.push(TraceEvent::Partition { side_a, side_b });
                let lasts = self
                    .rng
                    .gen_range(self.config.partition_time.0..=self.config.partition_time.1);
                self.schedule(lasts, Event::Heal { links });
            }
            2 if ids.len() >= 2 => {
                let from = ids[self.rng.gen_range(0..ids.len())];
                let others: Vec<NodeId> = ids.iter().copied().filter(|id| *id != from).collect();
                let to = others[self.rng.gen_range(0..others.len())];
                self.net.cut(&[(from, to)]);
                self.report.partitions += 1;
                fx.trace.push(TraceEvent::Cut { from, to });
                let lasts = self
                    .rng
                    .gen_range(self.config.partition_time.0..=self.config.partition_time.1);
                self.schedule(
                    lasts,
                    Event::Heal {
                        links: vec![(from, to)],
                    },
                );
            }
            _ => {}
        }
    }

    fn crash(&mut self, node: NodeId, fx: &mut Effects) {
        if !self.nodes[&node].is_up() {
            return;
        }
        self.node(node).crash(fx);
        self.report.crashes += 1;
        let downtime = self
            .rng
            .gen_range(self.config.downtime.0..=self.config.downtime.1);
        self.schedule(downtime, Event::Restart { node });
    }

    /// Carry out what the nodes asked for; check what must be checked at once.
    fn absorb(&mut self, fx: Effects) -> Result<(), Violation> {
        let Effects {
            send,
            trace,
            applied,
            became_leader,
            contract,
            elections,
            lost_writes,
            flushed,
            reads,
            stale_reads,
        } = fx;
        for violation in stale_reads {
            self.checker.report(violation)?;
        }
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
                        kind: "ReadIndex",
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
            self.checker.on_became_leader(node, term)?;
        }
        for (node, term, entry) in applied {
            self.report.applied += 1;
            self.checker.on_apply(node, term, &entry)?;
        }
        for envelope in send {
            self.send(envelope);
        }
        let mut syncs = Vec::new();
        for node in self.nodes.values_mut() {
            if node.is_up() && node.unsynced() > 0 && !node.sync_scheduled {
                node.sync_scheduled = true;
                syncs.push((node.id, node.incarnation));
            }
        }
        for (node, incarnation) in syncs {
            let delay = self.rng.gen_range(1..=self.config.max_sync_delay.max(1));
            self.schedule(delay, Event::Sync { node, incarnation });
            if self.faults
                && self.config.crashes
                && self.rng.gen_bool(self.config.crash_before_sync_rate)
            {
                let at = self.rng.gen_range(0..delay);
                self.schedule(at, Event::Crash { node, incarnation });
            }
        }
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
            .filter(|n| !n.is_up())
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
        let top = self
            .nodes
            .values()
            .filter_map(|n| n.raft().map(|r| r.current_term()))
            .max()?;
        self.nodes.values().find_map(|n| {
            let raft = n.raft()?;
            (raft.role() == Role::Leader && raft.current_term() == top).then_some((n.id, top))
        })
    }

    fn cluster_state(&self) -> String {
        self.nodes
            .values()
            .map(|n| match n.raft() {
                Some(r) => format!(
                    "n{} {} term {} last {} commit {} applied {}",
                    n.id,
                    r.role().as_str(),
                    r.current_term(),
                    r.last_log_id(),
                    r.commit_index(),
                    n.applied.len()
                ),
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
                    let last = self.nodes[&node].log.len() as u64;
                    let lag = self
                        .nodes
                        .values()
                        .map(|n| last.saturating_sub(n.applied.len() as u64))
                        .max()
                        .unwrap_or(0);
                    let round_trip = 2 * self.config.max_delay + self.config.max_sync_delay;
                    let catch_up = lag * round_trip / self.knobs.max_entries.max(1);
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
                if let Some(target) = target {
                    let everywhere = self.nodes.values().all(|n| {
                        n.is_up()
                            && n.applied
                                .get(target.index.0 as usize - 1)
                                .is_some_and(|e| e.log_id() == target)
                    });
                    if everywhere {
                        self.trace.push(self.now, TraceEvent::LivenessDone);
                        self.report.liveness_applied_at = Some(self.now);
                        self.liveness = Liveness::Done;
                        return Ok(());
                    }
                }
                if let Some((leader, _)) = self.stable_leader() {
                    let holds = target.is_some_and(|t| {
                        self.nodes[&leader]
                            .log
                            .get(t.index.0 as usize - 1)
                            .is_some_and(|e| e.log_id() == t)
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
