//! What a simulation run looks like: cluster size, how long the faulty phase lasts, how hostile the
//! network and the machines are, the Raft timing, and an optional planted bug.

use crate::invariants::Invariant;
use raftor_core::{NodeId, RaftConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// A deliberately wrong behaviour of the *simulator* (never of the rules), to prove that the
/// invariant checkers bite. See the crate documentation for which invariant catches which bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The messages of a `Ready` leave as soon as it is taken, before its write is durable: a vote
    /// granted or an append acknowledged can be forgotten by a crash ("vote without persisting").
    SendBeforeSync,
    /// Only vote grants leave before the hard state that records the vote is durable; every other
    /// message waits for its write as it should. A voter that crashes before the sync forgets the
    /// vote and may grant another candidate in the same term ("granting a vote without persisting
    /// it", exactly and nothing else).
    VoteBeforeSync,
    /// A leader applies every entry of its log as soon as it is there, committed or not.
    ApplyUncommitted,
    /// A leader computes its own commit index by counting replicas of *any* entry, also one of an
    /// older term (the rule Figure 8 of the Raft paper forbids), and applies up to it.
    CommitOldTermByCounting,
    /// A change of two voters at once (a replacement) is stored and sent as the direct change to
    /// the final configuration, skipping the joint configuration the rules asked for (§6: the old
    /// and the new majorities may then decide apart).
    NoJointConsensus,
    /// A node whose disk was lost restarts as a member, as if its empty store held every
    /// promise it made: it votes without rejoining ("a wiped voter that votes twice").
    ForgetfulRejoin,
    /// The driver asks the rules for a lease read without the ticks its stalled clock owes
    /// (`tick_lag` 0): a leader whose timer thread stood still judges its lease by the
    /// stalled clock, while the others elect a new leader.
    LeaseIgnoresStall,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 7] = [
        Bug::SendBeforeSync,
        Bug::VoteBeforeSync,
        Bug::ApplyUncommitted,
        Bug::CommitOldTermByCounting,
        Bug::NoJointConsensus,
        Bug::ForgetfulRejoin,
        Bug::LeaseIgnoresStall,
    ];

    /// The bug's name on the command line (`raftor sim --bug NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::SendBeforeSync => "send-before-sync",
            Bug::VoteBeforeSync => "vote-before-sync",
            Bug::ApplyUncommitted => "apply-uncommitted",
            Bug::CommitOldTermByCounting => "commit-old-term",
            Bug::NoJointConsensus => "no-joint-consensus",
            Bug::ForgetfulRejoin => "forgetful-rejoin",
            Bug::LeaseIgnoresStall => "lease-ignores-stall",
        }
    }
}

/// A name that is not one of [`Bug::ALL`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown bug {0:?}; one of: send-before-sync, vote-before-sync, apply-uncommitted, commit-old-term, no-joint-consensus, forgetful-rejoin, lease-ignores-stall")]
pub struct UnknownBug(pub String);

impl std::str::FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(name: &str) -> Result<Bug, UnknownBug> {
        Bug::ALL
            .into_iter()
            .find(|bug| bug.name() == name)
            .ok_or_else(|| UnknownBug(name.to_owned()))
    }
}

/// What `raftor sim` takes besides the seeds. It names a configuration completely, so a seed and
/// these options replay a run, on the command line ([`SimOptions::command_line`]) or in a test
/// ([`SimOptions::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Cluster size.
    pub nodes: u64,
    /// Events of faults before the liveness phase ([`SimConfig::steps`]).
    pub events: u64,
    /// Pre-vote and check-quorum off ([`SimConfig::without_pre_vote`]).
    pub no_pre_vote: bool,
    /// A planted bug ([`SimConfig::with_planted_bug`]).
    pub bug: Option<Bug>,
    /// Lost disks among the faults, with a fixed set of voters ([`SimConfig::with_disk_loss`]).
    pub disk_loss: bool,
    /// Lost disks among the faults while the configuration changes: nodes added later lose
    /// theirs too; safety only ([`SimConfig::with_disk_loss_and_membership_changes`]).
    pub disk_loss_with_changes: bool,
}

impl SimOptions {
    /// The default hostile configuration of `nodes` nodes.
    pub fn new(nodes: u64) -> SimOptions {
        SimOptions {
            nodes,
            events: SimConfig::default_for(nodes).steps,
            no_pre_vote: false,
            bug: None,
            disk_loss: false,
            disk_loss_with_changes: false,
        }
    }

    /// The configuration these options name.
    pub fn config(&self) -> SimConfig {
        let mut config = SimConfig::default_for(self.nodes).with_steps(self.events);
        if self.no_pre_vote {
            config = config.without_pre_vote();
        }
        if self.disk_loss {
            config = config.with_disk_loss();
        }
        if self.disk_loss_with_changes {
            config = config.with_disk_loss_and_membership_changes();
        }
        if let Some(bug) = self.bug {
            config = config.with_planted_bug(bug);
        }
        config
    }

    /// The `raftor sim` command that reruns `seed` with these options and prints every event.
    pub fn command_line(&self, seed: u64) -> String {
        let mut line = format!(
            "raftor sim --seeds {seed} --nodes {} --events {}",
            self.nodes, self.events
        );
        if self.no_pre_vote {
            line.push_str(" --no-pre-vote");
        }
        if self.disk_loss {
            line.push_str(" --disk-loss");
        }
        if self.disk_loss_with_changes {
            line.push_str(" --disk-loss-with-changes");
        }
        if let Some(bug) = self.bug {
            line.push_str(" --bug ");
            line.push_str(bug.name());
        }
        line.push_str(" --trace");
        line
    }

    /// The Rust expression of these options, for a regression test.
    pub fn rust_expression(&self) -> String {
        format!(
            "SimOptions {{ nodes: {}, events: {}, no_pre_vote: {}, bug: {}, disk_loss: {}, \
             disk_loss_with_changes: {} }}",
            self.nodes,
            self.events,
            self.no_pre_vote,
            self.bug
                .map_or("None".to_owned(), |bug| format!("Some(Bug::{bug:?})")),
            self.disk_loss,
            self.disk_loss_with_changes
        )
    }
}

/// The parameters of a run. Times are in simulated milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Cluster size at the start; node ids are `1..=nodes`. Nodes added later get the next ids.
    pub nodes: u64,
    /// Events processed with faults on. Then faults stop and, when `liveness` is set, the run goes on
    /// until the liveness check passes (or fails).
    pub steps: u64,
    /// Probability that a message is lost (faulty phase only).
    pub drop_rate: f64,
    /// Probability that a message is delivered twice (faulty phase only).
    pub duplicate_rate: f64,
    /// Symmetric partitions and one-way cuts, each healing after a while.
    pub partitions: bool,
    /// Among the partitions, links cut both ways: two nodes lose each other while each still
    /// reaches every other node (a partial partition, as a failed switch port or a firewall rule
    /// between two hosts makes; the other nodes see both sides).
    pub link_cuts: bool,
    /// Crashes (losing unsynced writes and volatile state) and restarts from the durable disk.
    pub crashes: bool,
    /// Mean time between two fault events (crash, partition, cut).
    pub fault_interval: u64,
    /// Probability that a node crashes between queuing a write and the sync that would make it
    /// durable (crashes at the worst moment, on top of the random ones).
    pub crash_before_sync_rate: f64,
    /// How long a crashed node stays down: uniform in this range...
    pub downtime: (u64, u64),
    /// ...except this fraction of crashes, after which it is back uniform in `quick_restart`: a
    /// supervisor restarting the process at once, well within the leases and votes the node
    /// gave before it crashed.
    pub quick_restart_rate: f64,
    pub quick_restart: (u64, u64),
    /// How long a partition or cut lasts: uniform in this range.
    pub partition_time: (u64, u64),
    /// Disk losses among the fault events: a node's disk is replaced by an empty one and it
    /// restarts from nothing under its old id (one at a time: only while every other node's disk
    /// holds what it promised). Off by default; `SimOptions::disk_loss` turns it on with a fixed
    /// set of voters (a node that lost its data while the configuration changes may wait for a
    /// removed voter's answer: safe, but not live, see docs/design.md).
    pub disk_loss: bool,
    /// How long one node's clock stands still when it stalls (a fault event, like a crash):
    /// uniform in this range; `(0, 0)`: no stalls. The node goes on receiving messages and
    /// answering reads meanwhile, and its missed ticks come in a burst afterwards.
    pub clock_stall: (u64, u64),
    /// A message takes uniform `1..=max_delay` to arrive...
    pub max_delay: u64,
    /// ...except this fraction, which takes up to `long_delay` (heavy reordering).
    pub long_delay_rate: f64,
    pub long_delay: u64,
    /// Mean time between two client proposals (each to a random node; non-leaders refuse).
    pub propose_interval: u64,
    /// Mean time between two linearizable reads (ReadIndex, to a random node); 0: none.
    pub read_interval: u64,
    /// With each ReadIndex read, also try a lease read there. Lease reads assume bounded clock
    /// drift and round trips below half the minimum election timeout, and they rely on the leader
    /// stickiness of check-quorum: with `check_quorum` off they can be stale (a known core bug,
    /// see `tests/core_regressions.rs`).
    pub lease_reads: bool,
    /// Mean time between two membership events (faulty phase only): add a new empty node as a
    /// learner, promote a learner, remove a voter (the leader too) or a learner, replace a voter
    /// by a learner at once (joint consensus), or transfer leadership. 0: none.
    pub membership_interval: u64,
    /// At most this many nodes are added over a run, and a configuration has at most `nodes + 2`
    /// members and at least `(nodes + 1) / 2` voters (removals below that are not asked for).
    pub max_added_nodes: u64,
    /// Mean time between two snapshots (each on a random running node, of its applied state,
    /// then compacting its log). 0: none.
    pub snapshot_interval: u64,
    /// A compaction keeps uniform `0..=snapshot_trailing` entries before the snapshot's end.
    pub snapshot_trailing: u64,
    /// A snapshot's bytes: 24 and uniform `0..=snapshot_padding` more; each run draws the chunk
    /// size in `8..=32` bytes, so a snapshot takes one to a few chunks.
    pub snapshot_padding: usize,
    /// A sync makes a node's queued writes durable; the next one comes uniform `1..=max_sync_delay`
    /// after a write is queued.
    pub max_sync_delay: u64,
    /// A sync of writes that may all wait (a spare follower's, `Ready::write_may_wait`) comes up
    /// to this much later still, as the node actor holds them (`spare_sync_hold`); 0: such
    /// writes are synced as any other. With [`SimConfig::swarm`], half the runs use 0.
    pub spare_sync_hold: u64,
    /// The node hears of a sync (`on_log_flushed`) uniform `0..=max_flush_notice_delay` after it,
    /// in order: other events may come first, as in the node actor's mailbox.
    pub max_flush_notice_delay: u64,
    /// The base tick period; each node's period is this plus a per-node jitter in `0..=tick_jitter`.
    pub tick_period: u64,
    pub tick_jitter: u64,
    /// Raft timing, in ticks.
    pub election_ticks: (u32, u32),
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Replicator flow control: each run draws entries per message in `1..=max_entries` and the
    /// pipeline window in `1..=max_inflight`.
    pub max_entries: u64,
    pub max_inflight: usize,
    /// After the faulty phase: a leader must appear within `liveness_timeouts` maximal election
    /// timeouts, and a proposal made then must be applied everywhere within as many again.
    pub liveness: bool,
    pub liveness_timeouts: u64,
    /// Each run draws its own environment from its seed ([`SimConfig::for_run`]): a fast network
    /// or this one, the load, how often faults come, how many crashes are quick restarts, and
    /// whether the membership changes. Swarm testing (Groce et al., "Swarm Testing", ISSTA
    /// 2012): runs that leave some features out reach states that runs with every feature at
    /// its average rate rarely do. A run never gets a feature this configuration turned off.
    pub swarm: bool,
    /// A planted bug, for the checker's own tests. `None` for the real thing.
    pub bug: Option<Bug>,
    /// Invariants not to check (to show that another one catches a planted bug too).
    pub disabled: BTreeSet<Invariant>,
    /// How many trace lines a failure carries.
    pub trace_len: usize,
}

impl SimConfig {
    /// A hostile but live default for a cluster of `nodes`: drops, duplicates, reordering,
    /// partitions, one-way cuts, crashes; 2000 events of faults, then the liveness check.
    pub fn default_for(nodes: u64) -> SimConfig {
        SimConfig {
            nodes,
            steps: 2000,
            drop_rate: 0.05,
            duplicate_rate: 0.02,
            partitions: true,
            link_cuts: true,
            crashes: true,
            fault_interval: 300,
            crash_before_sync_rate: 0.01,
            downtime: (20, 800),
            quick_restart_rate: 0.3,
            quick_restart: (1, 30),
            partition_time: (50, 1200),
            clock_stall: (20, 600),
            disk_loss: false,
            max_delay: 12,
            long_delay_rate: 0.03,
            long_delay: 150,
            propose_interval: 40,
            read_interval: 60,
            lease_reads: true,
            membership_interval: 250,
            max_added_nodes: 4,
            snapshot_interval: 150,
            snapshot_trailing: 4,
            snapshot_padding: 64,
            max_sync_delay: 10,
            spare_sync_hold: 8,
            max_flush_notice_delay: 6,
            tick_period: 10,
            tick_jitter: 2,
            election_ticks: (15, 30),
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_entries: 3,
            max_inflight: 4,
            liveness: true,
            liveness_timeouts: 10,
            swarm: true,
            bug: None,
            disabled: BTreeSet::new(),
            trace_len: 200,
        }
    }

    /// The same configuration with a planted bug.
    pub fn with_bug(mut self, bug: Bug) -> SimConfig {
        self.bug = Some(bug);
        self
    }

    /// The same configuration with lost disks among the faults, and a fixed set of voters.
    pub fn with_disk_loss(mut self) -> SimConfig {
        self.disk_loss = true;
        self.membership_interval = 0;
        self
    }

    /// The same configuration with lost disks among the faults while the configuration changes
    /// (any node's, one added later too): safety only, since a node that lost its data may still
    /// wait for a leader in rare runs (docs/design.md, "A node that lost its data", limit (2)).
    pub fn with_disk_loss_and_membership_changes(mut self) -> SimConfig {
        self.disk_loss = true;
        self.liveness = false;
        self
    }

    /// The same configuration with `steps` events of faults.
    pub fn with_steps(mut self, steps: u64) -> SimConfig {
        self.steps = steps;
        self
    }

    /// The same configuration without pre-vote and check-quorum, and so without lease reads
    /// (which rely on check-quorum's leader stickiness).
    pub fn without_pre_vote(mut self) -> SimConfig {
        self.pre_vote = false;
        self.check_quorum = false;
        self.lease_reads = false;
        self
    }

    /// The same configuration as runs were before 2026-12-07: no links cut both ways, no quick
    /// restarts, every run in this one environment. The seeds of `tests/core_regressions.rs`
    /// were found so; each replays its run with it.
    pub fn classic(mut self) -> SimConfig {
        self.link_cuts = false;
        self.quick_restart_rate = 0.0;
        self.spare_sync_hold = 0;
        self.swarm = false;
        self
    }

    /// What [`SimConfig::for_run`] draws, in one line (a failure's report and a full trace
    /// start with it).
    pub fn environment(&self) -> String {
        let every = |interval: u64| match interval {
            0 => "none".to_owned(),
            ms => format!("every ~{ms} ms"),
        };
        format!(
            "messages take 1-{} ms, syncs 1-{} ms (a spare follower's up to {} ms later); \
             proposals {}; faults {}; {:.0}% of crashes restart at once; membership changes {}",
            self.max_delay,
            self.max_sync_delay,
            self.spare_sync_hold,
            every(self.propose_interval),
            every(self.fault_interval),
            self.quick_restart_rate * 100.0,
            every(self.membership_interval),
        )
    }

    /// The configuration the run of `seed` uses: this one, or with [`SimConfig::swarm`] its
    /// environment drawn from the seed (apart from the run's other draws). Each choice keeps
    /// this configuration's value in some runs.
    pub fn for_run(&self, seed: u64) -> SimConfig {
        let mut run = self.clone();
        if !self.swarm {
            return run;
        }
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x7377_6172_6d5f_656e);
        // Half the runs: messages and syncs as fast as the clock tells apart (1-2 ms, against a
        // 150 ms election timeout), as on a LAN with a fast disk, so that an election and a
        // commit fit in one lease, between two heartbeats.
        if rng.gen_bool(0.5) {
            run.max_delay = self.max_delay.min(2);
            run.max_sync_delay = self.max_sync_delay.min(2);
            run.max_flush_notice_delay = self.max_flush_notice_delay.min(1);
        }
        // The load: as given, or 4 or 25 times quieter (a follower cut off long enough to
        // campaign may still be as up to date as the voters).
        run.propose_interval *= [1, 1, 4, 25][rng.gen_range(0..4)];
        // Faults: as often as given, or three times as often.
        if rng.gen_bool(0.5) {
            run.fault_interval = (self.fault_interval / 3).max(1);
        }
        // Quick restarts: none, at the given rate, or after every crash.
        if self.quick_restart_rate > 0.0 {
            run.quick_restart_rate = [0.0, self.quick_restart_rate, 1.0][rng.gen_range(0..3)];
        }
        // The membership: changing as given in half the runs, fixed in the others.
        if rng.gen_bool(0.5) {
            run.membership_interval = 0;
        }
        // Spare followers: holding their syncs as told in half the runs, ignoring it in the
        // others (drawn last, so the draws above stay as they were).
        if rng.gen_bool(0.5) {
            run.spare_sync_hold = 0;
        }
        run
    }

    /// A planted bug as the planted-bug tests run it: no liveness phase and no reads (so the
    /// violation reported is the first safety property the bug breaks), and for the bugs that
    /// send before a sync, frequent crashes between a write and its sync and a fixed membership.
    pub fn with_planted_bug(mut self, bug: Bug) -> SimConfig {
        // One environment, and no links cut both ways or quick restarts: the bounds of
        // `tests/planted_bugs.rs` were measured so.
        self = self.classic();
        self.bug = Some(bug);
        self.liveness = false;
        self.read_interval = 0;
        if bug == Bug::LeaseIgnoresStall {
            // Leases are checked at every event, reads or not. The bug's trigger is a leader's
            // clock standing still past an election timeout while a rival is elected out of its
            // reach: stalls take the crashes' slots, and last that long.
            self.crashes = false;
            self.clock_stall = (150, 600);
            return self;
        }
        // Clock stalls and lost disks take fault slots from the crashes these bugs need.
        self.clock_stall = (0, 0);
        self.disk_loss = bug == Bug::ForgetfulRejoin;
        if matches!(bug, Bug::SendBeforeSync | Bug::VoteBeforeSync) {
            self.crash_before_sync_rate = 0.1;
            // A double vote needs a voter to crash between granting and syncing while two
            // candidates compete: keep the voters fixed (membership changes make that rarer, and
            // the proof slower, without bearing on the bug).
            self.membership_interval = 0;
        }
        if bug == Bug::NoJointConsensus {
            self.membership_interval = 100;
        }
        self
    }

    /// The same configuration without checking `invariant`.
    pub fn without(mut self, invariant: Invariant) -> SimConfig {
        self.disabled.insert(invariant);
        self
    }

    /// Panics with a clear message on a configuration that cannot run.
    pub fn validate(&self) {
        assert!(self.nodes >= 1, "a cluster has at least one node");
        for (name, rate) in [
            ("drop_rate", self.drop_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("long_delay_rate", self.long_delay_rate),
            ("crash_before_sync_rate", self.crash_before_sync_rate),
            ("quick_restart_rate", self.quick_restart_rate),
        ] {
            assert!(
                (0.0..=1.0).contains(&rate),
                "{name} = {rate} is not a probability"
            );
        }
        assert!(
            self.downtime.0 <= self.downtime.1,
            "downtime range is empty"
        );
        assert!(
            self.quick_restart.0 <= self.quick_restart.1,
            "quick_restart range is empty"
        );
        assert!(
            self.partition_time.0 <= self.partition_time.1,
            "partition_time range is empty"
        );
        assert!(
            self.clock_stall.0 <= self.clock_stall.1,
            "clock_stall range is empty"
        );
        self.raft_config(NodeId(1), false)
            .validate()
            .expect("valid Raft timing");
    }

    /// The rules' configuration of node `id`: an initial voter, or (`joining`) a node added later,
    /// which knows no voters.
    pub(crate) fn raft_config(&self, id: NodeId, joining: bool) -> RaftConfig {
        let voters: Vec<NodeId> = if joining {
            Vec::new()
        } else {
            (1..=self.nodes).map(NodeId).collect()
        };
        let mut config = RaftConfig::new(id, voters);
        config.promote_lag = 8;
        config.election_ticks_min = self.election_ticks.0;
        config.election_ticks_max = self.election_ticks.1;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config
    }

    /// The longest election timeout in simulated time (slowest clock).
    pub(crate) fn max_election_time(&self) -> u64 {
        u64::from(self.election_ticks.1) * (self.tick_period + self.tick_jitter + 1)
    }
}
