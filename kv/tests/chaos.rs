//! Chaos on the real actors, checked for linearizability (see `chaos_harness`): real nodes with
//! the key-value state machine under partitions, one-way cuts, links cut both ways, loss,
//! duplication, delays and crashes (some restarted at once), leadership transfers (to nodes cut
//! off too, repeated, retried, cancelled) and membership changes (new nodes join as learners
//! and are promoted, voters are removed, leaders too), with concurrent clients doing put / get /
//! cas (as a transaction), two-key transactions, single-key and range reads (a range read
//! checked as a read of each key) by ReadIndex or by the leader's lease; every history goes
//! through the WGL linearizability checker; and a watcher of every key that moves from node to
//! node must see exactly the cluster's history (every change once, in log order). A violation
//! saves the history (JSON) and the per-key timeline under the target directory and prints both paths.
//!
//! By default seeds 0..2 run, each on 3 and 5 nodes (seconds); more with `RAFTOR_CHAOS_SEEDS=<n>`
//! (seeds 0..n) or `RAFTOR_CHAOS_SEEDS=<a>..<b>`, one with `RAFTOR_CHAOS_SEED=<s>`:
//!
//! ```text
//! RAFTOR_CHAOS_SEEDS=200 cargo test --release --test chaos -- --nocapture
//! ```

mod chaos_harness;

use chaos_harness::{run, ChaosConfig, ChaosRun, ChaosStats, ReadMode};
use std::time::Duration;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// `RAFTOR_CHAOS_SEEDS`: `n` (seeds 0..n) or `a..b`; 0..2 by default.
fn seed_range() -> std::ops::Range<u64> {
    let Ok(text) = std::env::var("RAFTOR_CHAOS_SEEDS") else {
        return 0..2;
    };
    let number = |t: &str| -> u64 {
        t.trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAFTOR_CHAOS_SEEDS must be n or a..b, not {text:?}"))
    };
    match text.split_once("..") {
        Some((a, b)) => number(a)..number(b),
        None => 0..number(&text),
    }
}

/// Fails the test on a violation (or a history the checker could not decide), after saving it.
fn assert_linearizable(run: &ChaosRun) {
    if run.check.is_linearizable() {
        return;
    }
    let (json, text) = run.save("violation");
    panic!(
        "seed {} ({} nodes): the history is {}\nhistory: {}\ntimeline: {}\n\
         replay: RAFTOR_CHAOS_SEED={} cargo test --test chaos -- --nocapture\n{}",
        run.config.seed,
        run.config.nodes,
        if run.check.has_violation() {
            "NOT linearizable".to_owned()
        } else {
            format!("undecided (keys {:?})", run.check.inconclusive())
        },
        json.display(),
        text.display(),
        run.config.seed,
        run.violations()
    );
}

/// The watcher, moved from node to node through the faults, saw every change exactly once and in
/// log order: what it collected is the cluster's history.
fn assert_watched(run: &ChaosRun) {
    if let Some(problem) = &run.watch.problem {
        panic!(
            "seed {} ({} nodes): the watch went wrong: {problem}
replay: RAFTOR_CHAOS_SEED={} cargo test --test chaos -- --nocapture",
            run.config.seed, run.config.nodes, run.config.seed
        );
    }
    assert!(
        run.watch.events > 0,
        "the watcher saw nothing: {:?}",
        run.watch
    );
}

/// The run did what a chaos run should: faults happened, operations completed, also after the
/// faults stopped (the cluster recovered), and some node led. (What the operator managed to do
/// under the faults is checked over all runs, `assert_every_kind_of_event`: one seed may have
/// every membership change refused, as seed 2044 on 3 nodes did, with nothing wrong.)
fn assert_eventful(run: &ChaosRun) {
    let stats = &run.stats;
    assert!(stats.crashes > 0 && stats.partitions > 0, "{stats:?}");
    assert!(stats.ok > 100, "{stats:?}");
    assert!(
        stats.ok_after_faults > 0,
        "nothing completed after the faults stopped: {stats:?}"
    );
    assert!(stats.leaders >= 1, "{stats:?}");
}

/// Over all runs, every kind of operator event happened: transfers, nodes added, promoted,
/// removed, leaders among them; transfers toward a node cut off, abandoned by the leader and asked
/// again, repeated, cancelled; and reads answered both ways, lease reads also from the lease
/// itself.
fn assert_every_kind_of_event(total: &ChaosStats) {
    let kinds = [
        ("leadership transfers", total.transfers),
        ("lease reads", total.lease_reads),
        ("ReadIndex reads", total.read_index_reads),
        ("transfers completed", total.transfers_completed),
        ("learners added", total.learners_added),
        ("learners promoted", total.promotions),
        ("voters removed", total.removals),
        ("transfers to a node cut off", total.transfers_to_cut_off),
        ("transfers abandoned", total.transfers_abandoned),
        ("transfers retried", total.transfers_retried),
        ("transfers repeated", total.transfers_repeated),
        ("transfers cancelled", total.transfers_cancelled),
        ("leaders removed", total.leader_removals),
        ("lease reads served at once", total.lease_reads_at_once),
    ];
    for (kind, count) in kinds {
        assert!(count > 0, "no {kind} in any run: {total:?}");
    }
}

/// Adds `run`'s operator and read counters to `total`.
fn add_up(total: &mut ChaosStats, run: &ChaosStats) {
    total.lease_reads += run.lease_reads;
    total.read_index_reads += run.read_index_reads;
    total.lease_reads_at_once += run.lease_reads_at_once;
    total.transfers += run.transfers;
    total.transfers_to_cut_off += run.transfers_to_cut_off;
    total.transfers_repeated += run.transfers_repeated;
    total.transfers_cancelled += run.transfers_cancelled;
    total.transfers_retried += run.transfers_retried;
    total.transfers_refused += run.transfers_refused;
    total.transfers_completed += run.transfers_completed;
    total.transfers_abandoned += run.transfers_abandoned;
    total.learners_added += run.learners_added;
    total.promotions += run.promotions;
    total.removals += run.removals;
    total.leader_removals += run.leader_removals;
    total.changes_refused += run.changes_refused;
    total.changes_unknown += run.changes_unknown;
}

#[test]
fn the_real_actors_stay_linearizable_under_chaos() {
    let runs: Vec<(u64, u64)> = if let Some(seed) = env_u64("RAFTOR_CHAOS_SEED") {
        vec![(seed, 3), (seed, 5)]
    } else {
        seed_range()
            .flat_map(|seed| [(seed, 3), (seed, 5)])
            .collect()
    };
    let started = std::time::Instant::now();
    let (mut ops, mut unknown, mut leaders) = (0, 0, 0);
    let mut total = ChaosStats::default();
    for (seed, nodes) in &runs {
        let run = run(&ChaosConfig::new(*seed, *nodes));
        println!(
            "seed {seed}, {nodes} nodes: {} operations in the history; {:?}; watch {:?}",
            run.history.len(),
            run.stats,
            run.watch
        );
        assert_linearizable(&run);
        assert_eventful(&run);
        assert_watched(&run);
        ops += run.history.len();
        unknown += run.stats.unknown;
        leaders += run.stats.leaders;
        add_up(&mut total, &run.stats);
    }
    // Leadership changed hands under the faults (in most runs; one leader may survive them all).
    assert!(
        leaders > runs.len() as u64,
        "{leaders} leaders in {} runs",
        runs.len()
    );
    // (A single seed may lack a rare kind.)
    if runs.len() > 2 {
        assert_every_kind_of_event(&total);
    }
    println!(
        "{} histories, {ops} operations ({unknown} with unknown outcome), all linearizable, in {:?}\n\
         operator and reads over all runs: {total:?}",
        runs.len(),
        started.elapsed()
    );
}

#[test]
fn a_calm_run_completes_every_operation() {
    let mut config = ChaosConfig::new(11, 3);
    config.faults = false;
    config.calm = Duration::from_secs(3);
    let run = run(&config);
    assert_linearizable(&run);
    assert_watched(&run);
    let stats = &run.stats;
    assert_eq!((stats.unknown, stats.failed), (0, 0), "{stats:?}");
    assert_eq!(stats.ok, stats.ops, "{stats:?}");
    assert!(stats.ok > 300, "{stats:?}");
    assert_eq!(stats.leaders, 1, "{stats:?}");
}

/// The operator alone, without the nemesis's faults (but with its own cuts toward transfer
/// targets): every transfer to a reachable node completes, the membership goes round its cycle,
/// and every operation completes but the writes pending on a leader that removed itself.
#[test]
fn transfers_and_membership_changes_alone_lose_no_operation() {
    let mut config = ChaosConfig::new(2, 5);
    config.nemesis = false;
    config.faulty = Duration::from_secs(6);
    config.calm = Duration::from_secs(1);
    let run = run(&config);
    println!("{} operations; {:?}", run.history.len(), run.stats);
    assert_linearizable(&run);
    let stats = &run.stats;
    assert_eq!(stats.failed, 0, "{stats:?}");
    // A leader that removes itself answers none of the writes it took after the removal: once it
    // stepped down, it hears of them no more (the next leader may have committed them). Their
    // clients give up on them (unknown outcome), at most one per client per such removal.
    assert!(
        stats.unknown <= config.clients * stats.leader_removals,
        "{stats:?}"
    );
    assert_eq!(stats.ok + stats.unknown, stats.ops, "{stats:?}");
    assert!(stats.ok > 300, "{stats:?}");
    // (A transfer toward a node cut off completes too when the cut heals in time.)
    assert!(
        stats.transfers_completed + stats.transfers_to_cut_off + stats.transfers_cancelled
            >= stats.transfers,
        "{stats:?}"
    );
    assert!(stats.transfers_completed > 0, "{stats:?}");
    assert!(
        stats.learners_added > 0 && stats.promotions > 0 && stats.removals > 0,
        "{stats:?}"
    );
    assert!(stats.lease_reads > 0, "{stats:?}");
}

#[test]
fn a_seed_replays_the_same_history() {
    let mut config = ChaosConfig::new(5, 3);
    config.faulty = Duration::from_secs(4);
    config.calm = Duration::from_secs(1);
    let first = run(&config);
    let second = run(&config);
    assert!(first.history.len() > 50, "{:?}", first.stats);
    assert_eq!(first.stats, second.stats);
    assert_eq!(
        raftor_sim::linearizability::to_json(&first.history),
        raftor_sim::linearizability::to_json(&second.history)
    );
}

/// The planted bug: a client answers "linearizable" reads from a follower's local state, without
/// ReadIndex. The checker must flag it (it is off in every other test: `ReadMode::Mixed`).
#[test]
fn the_checker_catches_follower_reads_without_read_index() {
    let mut caught = None;
    for seed in 0..5 {
        let mut config = ChaosConfig::new(seed, 3);
        config.reads = ReadMode::FollowerLocalRead;
        let run = run(&config);
        if run.check.has_violation() {
            caught = Some(run);
            break;
        }
    }
    let run = caught.expect("stale follower reads were not caught in seeds 0..5");
    let (json, text) = run.save("planted-follower-read");
    println!(
        "planted follower read caught at seed {}: history {}, timeline {}\n{}",
        run.config.seed,
        json.display(),
        text.display(),
        run.violations()
    );
    // The culprit is a read: the longest linearizable prefix ends where a read cannot go next.
    let stuck_on_a_read = run.check.keys.iter().any(|(key, verdict)| match verdict {
        raftor_sim::linearizability::Verdict::Violation(c) => {
            let op = &run.history[run.check.positions[key][c.deadline]];
            op.input == raftor_sim::linearizability::KvInput::Get
        }
        _ => false,
    });
    assert!(stuck_on_a_read, "{}", run.violations());
}
