//! A deterministic simulator of a raftor cluster, with invariant checks after every event.
//!
//! N nodes run the real rules of `raftor-core`; everything else is simulated and driven by *one*
//! seeded [`rand::rngs::SmallRng`], so a seed replays exactly:
//!
//! - **Disk** (`node/`): a Ready's write goes into an unsynced queue (the rules' in-memory log
//!   holds it at once); a random *sync* event makes a prefix of the queue durable, in order, and
//!   only then are those writes' messages released — the production contract — and a flush
//!   notice queued for the node (`on_log_flushed`, delivered a little later and in order, as the
//!   log store's message would be). Messages of a Ready without a write wait behind earlier
//!   unsynced writes too.
//! - **Crash / restart**: a crash loses the unsynced queue with its held messages, and all
//!   in-memory state (rules, open snapshots, applied entries); messages already on the wire stay
//!   there. A restart rebuilds the rules from the durable hard state and log (term boundaries from
//!   [`raftor_core::LogTerms`]) with a new seed from the RNG, and re-applies up to the persisted
//!   commit index.
//! - **Replicators**: one [`raftor_core::Progress`] per peer, created on `Became`, dropped on
//!   `Lost`, reading entries from the node's in-memory log (a leader may send entries it has not
//!   synced); heartbeats in Replicate state carry `prev = matched`, `commit = min(commit, matched)`;
//!   every AppendEntries gets an increasing `request_id`.
//! - **Network** (`network.rs`): random loss, duplication, delay (and so reordering); symmetric
//!   partitions, one-way cuts, and single links cut both ways (a partial partition: the two ends
//!   still reach every other node) that heal after a while. Events sit in a `BTreeMap` keyed by
//!   (time, sequence number): no hash-map order anywhere.
//! - **Clients**: proposals and reads (ReadIndex, and lease reads when enabled) to random nodes
//!   (non-leaders refuse).
//! - **Environment** ([`SimConfig::for_run`]): each seed draws its own (swarm testing): a network
//!   and disk of 1-2 ms against a 150 ms election timeout (a LAN) or the configured ones, the
//!   configured load or one 4 or 25 times quieter, faults as often as configured or three times
//!   as often, no quick restarts, some or all (a crashed node back within 1-30 ms, as under a
//!   supervisor), a changing or a fixed membership. A failure's report names what it drew.
//!
//! After every event the checker (`invariants.rs`) verifies: Election Safety (one leader per term,
//! over the whole run, counting a leader once its term is durable or it has sent anything: a lone
//! voter's win, lost unseen in a crash before its write is synced, is won again), Log Matching
//! (pairwise on the running nodes' in-memory logs), Leader Completeness (every applied entry is
//! in the log of every leader of a later term than the one it was applied in, checked when a
//! leader appears and whenever an entry is newly committed),
//! State Machine Safety (no two applications differ at an index, across nodes and incarnations),
//! commit index monotonic per incarnation, nothing applied beyond the commit index, and the Ready
//! contract (writes extend the log; the written log equals the rules' log), and linearizable
//! reads (a ReadIndex answer, or a lease read when enabled, is at least the highest index any node
//! had applied when the read was asked; and at every event, the lease each leader holds, read or
//! not, is at least that index: a read rarely lands in the few milliseconds a stale lease
//! lasts; leaders confirm leadership with the rules' own rounds, as in production: a heartbeat
//! per peer, the first answer to it or a later message confirms). After `steps` events
//! faults stop: links heal, crashed nodes restart, nothing is lost; a leader must then appear, and
//! a proposal be applied on every node, each within `liveness_timeouts` maximal election
//! timeouts ([`Violation::Liveness`] otherwise).
//!
//! # Planted bugs: which invariant catches which
//! [`SimConfig::bug`] corrupts the *simulator* (never the rules) to prove the checkers bite; the
//! tests in `tests/planted_bugs.rs` assert each is caught, by the invariant named here, within a
//! bounded number of seeds (in practice the first or one of the first few):
//!
//! | bug | caught first by | with that check disabled |
//! |---|---|---|
//! | [`Bug::SendBeforeSync`]: a Ready's messages leave before its write is durable ("vote without persisting"), with frequent crashes between write and sync | Leader Completeness (an acknowledged entry lost in a crash got "committed"), or Election Safety (5 nodes) | State Machine Safety; with that and Log Matching off too, Election Safety (a vote granted, lost in a crash, granted again to another candidate) |
//! | [`Bug::VoteBeforeSync`]: only vote grants leave before the vote is durable ("granting a vote without persisting it", exactly), with frequent crashes between write and sync | Election Safety: the voter crashes before the sync, restarts without the vote and grants it again to another candidate of the same term | — |
//! | [`Bug::ApplyUncommitted`]: a leader applies its entries as soon as they are in its log | AppliedWithinCommit, at once | State Machine Safety (Leader Completeness off too) |
//! | [`Bug::CommitOldTermByCounting`]: a leader computes its commit index by counting replicas of any entry, old terms included (what Figure 8 forbids), and applies up to it | AppliedWithinCommit (the rules never count an old-term entry) | Leader Completeness: the Figure 8 anomaly itself, a later leader lacks the "committed" entry and overwrites it; then State Machine Safety |
//! | [`Bug::NoJointConsensus`]: a replacement (two voters change) is stored and sent as the direct change to the final configuration, skipping the joint one | MembershipSafety: two consecutive committed configurations differ by two voters | Election Safety (3 nodes): the old and the new majorities each elect a leader of one term |
//! | [`Bug::ForgetfulRejoin`]: a node whose disk was lost restarts as a member | Election Safety or Leader Completeness | — |
//! | [`Bug::LeaseIgnoresStall`]: the driver asks for a lease read without the ticks its stalled clock owes, with long clock stalls instead of crashes | Linearizability: the stalled leader holds a lease while a rival elected out of its reach commits | — |
//!
//! # Membership changes and snapshots
//! Every `membership_interval` (on average) the leader is asked to add a new, empty node as a
//! learner (started with no voters; sometimes with `promote_when_caught_up`), promote a learner,
//! remove a voter (the leader too) or a learner, replace a voter by a learner or by a new node at
//! once (joint consensus, left by the rules), or transfer leadership. The driver replicates to
//! every member of the configuration in force (`Ready::membership`), stops sending to removed
//! ones, and restarts nodes with the configurations of their durable log and snapshot; a node
//! removed by a committed configuration is shut down a little later. Every `snapshot_interval` a
//! random node snapshots its applied state (the configuration as of there included) and compacts
//! its log; a leader sends the newest snapshot, in chunks, to a follower that needs compacted
//! entries; a follower assembles it, checks it, stores it and hands it to the rules; restarts
//! restore the newest snapshot. Checked on top: the committed configurations form a chain (each
//! differs from the previous by at most one voter, or enters/leaves a joint configuration); a
//! leader that is no voter of its configuration steps down once it is committed and settled,
//! or an election timeout after (`raftor_core::Raft::settled_membership_index`); a restored
//! state equals applying the committed prefix, and carries the configuration committed as of it;
//! liveness also requires the leader to be a voter, every member to apply, and no configuration
//! left joint or uncommitted.
//!
//! # Core bugs found
//! Lease reads with `check_quorum` off were stale: `Raft::lease_read_index` did not require
//! check-quorum, whose leader stickiness the lease relies on. Fixed in the core; the seeds stay
//! in the regression table of `tests/core_regressions.rs`.
//!
//! A leader that appended its own removal and stepped down before committing it (check-quorum)
//! never campaigned again, being no voter of its latest configuration, although its vote was
//! needed and its log was the only complete one: no leader, ever (3 nodes, seed 107). Fixed in
//! the core (`Raft::removal_pending`: such a node still campaigns); in `tests/core_regressions.rs`.
//!
//! A voter restarted at once forgot the lease its answer had lent the leader, and voted for a
//! rival the leader could not reach, which committed within the lease. A review found it by
//! reading; the simulator of the time ran 43,000 seeds aimed at it without a failure, since it
//! needs a quick restart, a partial partition and an election and a commit between two
//! heartbeats, and a read landing in the milliseconds the stale lease lasts. With links cut both
//! ways, quick restarts, per-seed environments and the lease checked at every event, 4 of 30,000
//! seeds of 3 nodes fail on the rules before the fix (`e02b976`): seeds 2600024680 and
//! 2600000275 are in `tests/core_regressions.rs`.
//!
//! # Replaying a failing seed
//! A [`SimFailure`] carries the seed, the step, the violation and the last `trace_len` events.
//! `raftor sim --seeds 1234 --nodes 5 --trace` (options: [`SimOptions::command_line`]) reruns a
//! seed and prints every event; so does `raftor_sim::replay(seed, &config)`:
//! ```text
//! RAFTOR_SIM_SEED=1234 RAFTOR_SIM_NODES=5 cargo test -p raftor-sim --test replay -- --ignored --nocapture
//! ```
//! or from any test: `raftor_sim::replay(1234, &SimConfig::default_for(5));`.

mod config;
mod invariants;
pub mod linearizability;
mod log;
mod network;
mod node;
mod sim;
mod trace;

pub use config::{Bug, SimConfig, SimOptions, UnknownBug};
pub use invariants::{Invariant, Violation};

use thiserror::Error;

/// What a run did. Two runs of one seed and configuration have equal reports, digest included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    /// Events processed (faulty phase and liveness phase).
    pub steps: u64,
    /// Simulated time at the end, in ms.
    pub time: u64,
    /// FNV-1a over every event of the run (kind, time, nodes, message contents...).
    pub digest: u64,
    /// Elections started (a node voted for itself in a new term).
    pub elections: u64,
    /// Terms that had a leader.
    pub leaders: u64,
    /// Distinct entries committed (applied by some node).
    pub commits: u64,
    /// Applications of entries, over all nodes and incarnations.
    pub applied: u64,
    /// Highest term of a running node at the end.
    pub max_term: u64,
    pub proposals: u64,
    pub proposals_accepted: u64,
    /// ReadIndex reads a leader took, and answered with an index.
    pub reads: u64,
    pub reads_answered: u64,
    /// Lease reads served.
    pub lease_reads: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub crashes: u64,
    /// Unsynced writes (and the messages held behind them) lost in crashes.
    pub lost_writes: u64,
    /// Crashes after which the node was back at once (`SimConfig::quick_restart`).
    pub quick_restarts: u64,
    pub restarts: u64,
    /// Partitions, one-way cuts and links cut both ways.
    pub partitions: u64,
    /// Stalls of one node's clock.
    pub clock_stalls: u64,
    /// Disks replaced by empty ones.
    pub disks_lost: u64,
    /// Membership changes asked for, and accepted by a leader.
    pub membership_changes: u64,
    pub membership_changes_accepted: u64,
    /// Configuration entries committed.
    pub configs_committed: u64,
    /// Leadership transfers asked for, and started by a leader.
    pub transfers: u64,
    pub transfers_started: u64,
    /// Nodes added (started empty, to join), and removed nodes shut down.
    pub joined: u64,
    pub retired: u64,
    /// Snapshots taken, received whole from a leader, and state machines restored from one.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub restores: u64,
    /// When (simulated ms) the liveness phase saw a leader, and saw its proposal applied everywhere.
    pub liveness_leader_at: Option<u64>,
    pub liveness_applied_at: Option<u64>,
}

impl SimReport {
    /// Adds `other`'s counters to these (the maximum for `max_term`; `seed`, `digest` and the
    /// liveness times are left alone): the totals of a sweep.
    pub fn add(&mut self, other: &SimReport) {
        self.steps += other.steps;
        self.time += other.time;
        self.elections += other.elections;
        self.leaders += other.leaders;
        self.commits += other.commits;
        self.applied += other.applied;
        self.max_term = self.max_term.max(other.max_term);
        self.proposals += other.proposals;
        self.proposals_accepted += other.proposals_accepted;
        self.reads += other.reads;
        self.reads_answered += other.reads_answered;
        self.lease_reads += other.lease_reads;
        self.messages_sent += other.messages_sent;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.messages_duplicated += other.messages_duplicated;
        self.crashes += other.crashes;
        self.lost_writes += other.lost_writes;
        self.quick_restarts += other.quick_restarts;
        self.restarts += other.restarts;
        self.partitions += other.partitions;
        self.clock_stalls += other.clock_stalls;
        self.disks_lost += other.disks_lost;
        self.membership_changes += other.membership_changes;
        self.membership_changes_accepted += other.membership_changes_accepted;
        self.configs_committed += other.configs_committed;
        self.transfers += other.transfers;
        self.transfers_started += other.transfers_started;
        self.joined += other.joined;
        self.retired += other.retired;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_installed += other.snapshots_installed;
        self.restores += other.restores;
    }
}

/// A broken invariant, with what is needed to replay and understand it.
#[derive(Clone, Debug, Error)]
#[error("seed {seed}, step {step}, t={time}: {violation}")]
pub struct SimFailure {
    /// Boxed: a failure is rare, and a small `Err` keeps `Result`s cheap.
    pub violation: Box<Violation>,
    pub seed: u64,
    /// The event (1-based) after which the violation was seen.
    pub step: u64,
    /// Simulated time of that event.
    pub time: u64,
    /// The last events before the violation, one readable line each.
    pub trace: Vec<String>,
    /// The environment the run drew ([`SimConfig::environment`]).
    pub environment: String,
}

impl SimFailure {
    /// The failure and its trace, ready to print.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "{self}\nenvironment: {}\nlast {} events:\n",
            self.environment,
            self.trace.len()
        );
        for line in &self.trace {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    sim::Sim::new(seed, &config.for_run(seed), false).run().0
}

/// Runs one seed and returns every event as a line (slower: everything is formatted).
pub fn run_with_trace(
    seed: u64,
    config: &SimConfig,
) -> (Result<SimReport, SimFailure>, Vec<String>) {
    sim::Sim::new(seed, &config.for_run(seed), true).run()
}

/// Reruns a seed, prints its full trace and the outcome to stdout, and returns the outcome.
pub fn replay(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let (result, lines) = run_with_trace(seed, config);
    for line in &lines {
        println!("{line}");
    }
    match &result {
        Ok(report) => println!("seed {seed}: ok: {report:?}"),
        Err(failure) => println!("seed {seed}: FAILED: {failure}"),
    }
    result
}

/// The outcome of many seeds of one configuration.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    pub runs: u64,
    /// Counters summed over the passing runs (`seed` and `digest` are meaningless here).
    pub total: SimReport,
    pub failures: Vec<SimFailure>,
}

impl Sweep {
    /// A one-line summary of what the runs did.
    pub fn summary(&self) -> String {
        let t = &self.total;
        format!(
            "{} runs, {} failed; {} events, {} elections, {} leaders, {} entries committed, \
             {} proposals accepted, {} reads answered, {} lease reads, {} messages delivered, {} dropped, {} duplicated, \
             {} crashes ({} back at once, {} unsynced writes lost), {} partitions/cuts, {} clock stalls, {} disks lost; membership: {} of {} changes \
             accepted, {} configurations committed, {} of {} transfers started, {} nodes joined, \
             {} retired; snapshots: {} taken, {} sent whole, {} restores",
            self.runs,
            self.failures.len(),
            t.steps,
            t.elections,
            t.leaders,
            t.commits,
            t.proposals_accepted,
            t.reads_answered,
            t.lease_reads,
            t.messages_delivered,
            t.messages_dropped,
            t.messages_duplicated,
            t.crashes,
            t.quick_restarts,
            t.lost_writes,
            t.partitions,
            t.clock_stalls,
            t.disks_lost,
            t.membership_changes_accepted,
            t.membership_changes,
            t.configs_committed,
            t.transfers_started,
            t.transfers,
            t.joined,
            t.retired,
            t.snapshots_taken,
            t.snapshots_installed,
            t.restores
        )
    }
}

/// Runs every seed of `seeds` and collects the failures.
pub fn sweep(seeds: impl IntoIterator<Item = u64>, config: &SimConfig) -> Sweep {
    let mut out = Sweep::default();
    for seed in seeds {
        out.runs += 1;
        match run(seed, config) {
            Ok(report) => out.total.add(&report),
            Err(failure) => out.failures.push(failure),
        }
    }
    out
}

/// The first failing seed of `seeds`, if any (for planted-bug tests and bug hunts).
pub fn first_failure(
    seeds: impl IntoIterator<Item = u64>,
    config: &SimConfig,
) -> Option<SimFailure> {
    seeds.into_iter().find_map(|seed| run(seed, config).err())
}
