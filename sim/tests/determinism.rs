//! One seed, one run: two runs of a seed are bit-for-bit identical (the digest hashes every event),
//! and printing the full trace changes nothing.

use raftor_sim::{run, run_with_trace, Bug, SimConfig};

#[test]
fn same_seed_same_run() {
    for nodes in [3, 5] {
        let config = SimConfig::default_for(nodes);
        for seed in [0, 1, 42, 7_777, u64::MAX] {
            let a = run(seed, &config).expect("passes");
            let b = run(seed, &config).expect("passes");
            assert_eq!(a, b, "seed {seed} on {nodes} nodes");
            let (c, lines) = run_with_trace(seed, &config);
            assert_eq!(a, c.expect("passes"), "tracing changes nothing");
            assert!(
                lines.len() as u64 >= a.steps / 4,
                "a full trace has the events"
            );
        }
    }
}

#[test]
fn different_seeds_different_runs() {
    let config = SimConfig::default_for(3);
    let digests: std::collections::BTreeSet<u64> = (0..20)
        .map(|seed| run(seed, &config).expect("passes").digest)
        .collect();
    assert_eq!(digests.len(), 20);
}

#[test]
fn failures_replay_identically() {
    let config = SimConfig::default_for(3).with_bug(Bug::ApplyUncommitted);
    let a = run(5, &config).expect_err("planted bug");
    let b = run(5, &config).expect_err("planted bug");
    assert_eq!(
        (a.step, a.time, &a.violation),
        (b.step, b.time, &b.violation)
    );
    assert_eq!(a.trace, b.trace);
    assert!(!a.trace.is_empty() && a.trace.len() <= config.trace_len);
}
