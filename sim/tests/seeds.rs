//! Thousands of seeds of hostile runs, on 3 and 5 nodes: every invariant after every event, then
//! the liveness check. A failure prints the seed, the violation and the last events; replay it with
//! `raftor_sim::replay(seed, &config)` (see `tests/replay.rs`).
//!
//! The default configuration also changes the membership (learners added, promoted, removed,
//! voters replaced through joint consensus, the leader removed, leadership transferred) and takes
//! snapshots (compaction, InstallSnapshot, restarts from a snapshot); one sweep runs without
//! either, as the simulator did before they existed.
//!
//! Sized to keep `cargo test -p raftor-sim` under about two minutes in debug builds on 2 cores:
//! the test functions run in parallel, each a slice of the seed space.

use raftor_sim::{sweep, SimConfig, Sweep};
use std::ops::Range;

fn check(name: &str, seeds: Range<u64>, config: &SimConfig) -> Sweep {
    let started = std::time::Instant::now();
    let result = sweep(seeds, config);
    println!("{name}: {} in {:?}", result.summary(), started.elapsed());
    if let Some(first) = result.failures.first() {
        let seeds: Vec<u64> = result.failures.iter().map(|f| f.seed).collect();
        panic!(
            "{name}: {} of {} seeds failed: {seeds:?}\nfirst: {}",
            result.failures.len(),
            result.runs,
            first.explain()
        );
    }
    result
}

#[test]
fn three_nodes_with_every_fault() {
    let result = check("3 nodes", 0..400, &SimConfig::default_for(3));
    // The runs really exercise what they claim to.
    let t = &result.total;
    assert!(t.leaders > 3 * result.runs, "{}", result.summary());
    assert!(t.commits > 10 * result.runs, "{}", result.summary());
    assert!(t.crashes > 0 && t.lost_writes > 0 && t.partitions > 0);
    assert!(t.messages_dropped > 0 && t.messages_duplicated > 0);
    assert!(
        t.configs_committed > 2 * result.runs,
        "{}",
        result.summary()
    );
    assert!(t.joined > 0 && t.retired > 0 && t.transfers_started > 0);
    assert!(t.snapshots_taken > 0 && t.snapshots_installed > 0 && t.restores > 0);
}

#[test]
fn three_nodes_without_membership_changes_or_snapshots() {
    let mut config = SimConfig::default_for(3);
    config.membership_interval = 0;
    config.snapshot_interval = 0;
    let result = check("3 nodes, fixed membership", 1500..1700, &config);
    assert_eq!(result.total.configs_committed, 0);
}

/// A cluster started from one voter and grown through learners (the way `raftor join` grows a
/// one-node cluster): a lone voter wins in the step that adopts its term, so nothing of the term
/// may leave before that write is synced. When its first entries did, a crash before the sync
/// let it win the term again with other entries at the same indexes (seeds 31007001869,
/// 31007001943, 31007002731 and 31007003229 failed, 4 in 5,000).
#[test]
fn one_voter_grown_through_learners() {
    let result = check("1 node", 0..400, &SimConfig::default_for(1));
    let t = &result.total;
    assert!(t.leaders > result.runs, "{}", result.summary());
    assert!(t.crashes > 0 && t.lost_writes > 0, "{}", result.summary());
    assert!(
        t.joined > 0 && t.configs_committed > result.runs,
        "{}",
        result.summary()
    );
}

#[test]
fn five_nodes_with_every_fault() {
    let result = check("5 nodes", 0..250, &SimConfig::default_for(5));
    let t = &result.total;
    assert!(t.leaders > 2 * result.runs, "{}", result.summary());
    assert!(t.commits > 5 * result.runs, "{}", result.summary());
}

#[test]
fn without_pre_vote_or_check_quorum() {
    for nodes in [3, 5] {
        let mut config = SimConfig::default_for(nodes);
        config.pre_vote = false;
        config.check_quorum = false;
        // Lease reads need check-quorum's leader stickiness (see tests/core_regressions.rs).
        config.lease_reads = false;
        check(
            &format!("{nodes} nodes, no pre-vote"),
            10_000..10_120,
            &config,
        );
    }
}

/// Long runs with one entry per message and one message in flight: long logs, long catch-ups,
/// stale leaders with long uncommitted tails (the ground Figure 8 grows on).
#[test]
fn long_runs_with_slow_replication() {
    for (nodes, pre_vote, seeds) in [
        (3, true, 20_000..20_015),
        (3, false, 20_100..20_115),
        (5, false, 20_200..20_208),
    ] {
        let mut config = SimConfig::default_for(nodes);
        config.steps = 8000;
        config.max_entries = 1;
        config.max_inflight = 1;
        config.propose_interval = 5;
        config.pre_vote = pre_vote;
        config.check_quorum = pre_vote;
        config.lease_reads = pre_vote;
        check(
            &format!("{nodes} nodes, long runs, pre-vote {pre_vote}"),
            seeds,
            &config,
        );
    }
}

#[test]
fn calm_network_commits_everything_proposed_to_the_leader() {
    let mut config = SimConfig::default_for(3);
    config.drop_rate = 0.0;
    config.duplicate_rate = 0.0;
    config.partitions = false;
    config.crashes = false;
    config.long_delay_rate = 0.0;
    // Transfers and removals change leaders, and configuration entries count as commits.
    config.membership_interval = 0;
    let result = check("calm", 0..50, &config);
    let t = &result.total;
    assert_eq!(t.crashes, 0);
    assert!(t.proposals_accepted > 0);
    // One leader per run, every accepted proposal committed (plus one blank per leader, plus the
    // liveness proposal).
    assert_eq!(t.leaders, result.runs, "{}", result.summary());
    assert_eq!(
        t.commits,
        t.proposals_accepted + 2 * result.runs,
        "{}",
        result.summary()
    );
}

/// Lost disks (a node restarts empty under its old id, one at a time) with a fixed set of voters:
/// the node rejoins before it votes (`raftor_core::Standing`), every invariant holds, and the
/// cluster is live again after the faults.
#[test]
fn lost_disks_rejoin_before_they_vote() {
    for (nodes, seeds) in [(3, 30_000..30_200), (5, 30_500..30_600)] {
        let config = SimConfig::default_for(nodes).with_disk_loss();
        let result = check(&format!("{nodes} nodes, lost disks"), seeds, &config);
        assert!(result.total.disks_lost > 0, "{}", result.summary());
    }
}

/// Lost disks while the configuration changes, nodes added later losing theirs too: safety
/// holds (the liveness check is off: a node that lost its data may wait for the answer of a
/// voter that was removed meanwhile, see docs/design.md, "A node that lost its data").
#[test]
fn lost_disks_with_membership_changes_stay_safe() {
    let config = SimConfig::default_for(3).with_disk_loss_and_membership_changes();
    let result = check(
        "3 nodes, lost disks and membership changes",
        31_000..31_300,
        &config,
    );
    let t = &result.total;
    assert!(
        t.disks_lost > 0 && t.configs_committed > 0,
        "{}",
        result.summary()
    );
}
