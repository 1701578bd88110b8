//! Bug hunting: runs a range of seeds and prints the failures and a summary.
//!
//! `cargo run -p raftor-sim --example explore -- <nodes> <first seed> <count> [steps]`
//!
//! Knobs (environment): `NOPV=1` (no pre-vote, no check-quorum), `PVONLY=1`, `CQONLY=1`,
//! `MAXENT=n`, `MAXINF=n`, `PROP=ms`, `FAULT=ms`, `DOWN=ms`, `QUICK=p`, `PART=ms`, `NOLINKCUTS=1`, `NOSWARM=1`, `DELAY=ms`, `DROP=p`, `NOPART=1`,
//! `CRASHSYNC=p`, `FLUSHDELAY=ms`, `SYNCDELAY=ms`, `LONG=ms`, `LONGRATE=p`, `DUP=p`, `LEASE=1`, `READS=ms`, `STEPS=n`, `LIVE=0`, `BUG=send|vote|apply|fig8|forget|nojoint|stall`,
//! `OFF=abc,lc,sms,es,lm` (disable checks), `EXPLAIN=1` (trace of the first failure),
//! `TRACE=1` (full trace of the first seed).

use raftor_sim::{run, SimConfig};
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("number"))
        .collect();
    let nodes = args.first().copied().unwrap_or(3);
    let from = args.get(1).copied().unwrap_or(0);
    let count = args.get(2).copied().unwrap_or(100);
    let steps = args.get(3).copied();
    let mut config = SimConfig::default_for(nodes);
    if let Some(steps) = steps {
        config.steps = steps;
    }
    match std::env::var("BUG").as_deref() {
        Ok("send") => config.bug = Some(raftor_sim::Bug::SendBeforeSync),
        Ok("apply") => config.bug = Some(raftor_sim::Bug::ApplyUncommitted),
        Ok("fig8") => config.bug = Some(raftor_sim::Bug::CommitOldTermByCounting),
        Ok("vote") => config.bug = Some(raftor_sim::Bug::VoteBeforeSync),
        Ok("forget") => config = config.with_planted_bug(raftor_sim::Bug::ForgetfulRejoin),
        Ok("nojoint") => config = config.with_planted_bug(raftor_sim::Bug::NoJointConsensus),
        Ok("stall") => config = config.with_planted_bug(raftor_sim::Bug::LeaseIgnoresStall),
        _ => {}
    }
    if let Ok(off) = std::env::var("OFF") {
        for name in off.split(',') {
            let invariant = match name {
                "abc" => raftor_sim::Invariant::AppliedWithinCommit,
                "lc" => raftor_sim::Invariant::LeaderCompleteness,
                "sms" => raftor_sim::Invariant::StateMachineSafety,
                "es" => raftor_sim::Invariant::ElectionSafety,
                "ms" => raftor_sim::Invariant::MembershipSafety,
                "lm" => raftor_sim::Invariant::LogMatching,
                _ => continue,
            };
            config.disabled.insert(invariant);
        }
    }
    let num = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<f64>().expect("number"))
    };
    if let Some(v) = num("MAXENT") {
        config.max_entries = v as u64;
    }
    if let Some(v) = num("MAXINF") {
        config.max_inflight = v as usize;
    }
    if let Some(v) = num("FAULT") {
        config.fault_interval = v as u64;
    }
    if let Some(v) = num("DROP") {
        config.drop_rate = v;
    }
    if let Some(v) = num("PROP") {
        config.propose_interval = v as u64;
    }
    if let Some(v) = num("DOWN") {
        config.downtime = (10, v as u64);
    }
    if let Some(v) = num("DELAY") {
        config.max_delay = v as u64;
    }
    if let Some(v) = num("QUICK") {
        config.quick_restart_rate = v;
    }
    if std::env::var("NOSWARM").is_ok() {
        config.swarm = false;
    }
    if std::env::var("NOLINKCUTS").is_ok() {
        config.link_cuts = false;
    }
    if let Some(v) = num("PART") {
        config.partition_time = (10, v as u64);
    }
    if std::env::var("NOPV").is_ok() {
        config.pre_vote = false;
        config.check_quorum = false;
    }
    if let Some(v) = num("STEPS") {
        config.steps = v as u64;
    }
    if let Some(v) = num("LIVE") {
        config.liveness = v > 0.0;
    }
    if std::env::var("PVONLY").is_ok() {
        config.check_quorum = false;
    }
    if std::env::var("CQONLY").is_ok() {
        config.pre_vote = false;
    }
    if let Some(v) = num("FLUSHDELAY") {
        config.max_flush_notice_delay = v as u64;
    }
    if let Some(v) = num("LONG") {
        config.long_delay = v as u64;
    }
    if let Some(v) = num("LONGRATE") {
        config.long_delay_rate = v;
    }
    if let Some(v) = num("DUP") {
        config.duplicate_rate = v;
    }
    if std::env::var("LEASE").is_ok() {
        config.lease_reads = true;
    }
    if let Some(v) = num("READS") {
        config.read_interval = v as u64;
    }
    if let Some(v) = num("SYNCDELAY") {
        config.max_sync_delay = v as u64;
    }
    if let Some(v) = num("MEMB") {
        config.membership_interval = v as u64;
    }
    if let Some(v) = num("DISKLOSS") {
        config.disk_loss = v > 0.0;
    }
    if let Some(v) = num("LIVE") {
        config.liveness = v > 0.0;
    }
    if std::env::var("NOPART").is_ok() {
        config.partitions = false;
    }
    if let Ok(rate) = std::env::var("CRASHSYNC") {
        config.crash_before_sync_rate = rate.parse().expect("rate");
    }
    if std::env::var("TRACE").is_ok() {
        let _ = raftor_sim::replay(from, &config);
        return;
    }
    let start = Instant::now();
    let mut failures = 0;
    let mut total = raftor_sim::SimReport::default();
    for seed in from..from + count {
        match run(seed, &config) {
            Ok(r) => {
                total.steps += r.steps;
                total.elections += r.elections;
                total.leaders += r.leaders;
                total.commits += r.commits;
                total.crashes += r.crashes;
                total.partitions += r.partitions;
                total.messages_delivered += r.messages_delivered;
                total.messages_dropped += r.messages_dropped;
                total.proposals_accepted += r.proposals_accepted;
                total.reads_answered += r.reads_answered;
                total.lease_reads += r.lease_reads;
                total.time += r.time;
            }
            Err(f) => {
                failures += 1;
                if failures <= 1 && std::env::var("EXPLAIN").is_ok() {
                    println!("{}", f.explain());
                } else if failures <= 20 {
                    println!("{f}");
                }
            }
        }
    }
    println!(
        "{count} seeds, {failures} failures, {:?}; avg per seed: steps {} time {} elections {} leaders {} commits {} crashes {} partitions {} delivered {} dropped {} accepted {} reads {} lease reads {}",
        start.elapsed(),
        total.steps / count,
        total.time / count,
        total.elections as f64 / count as f64,
        total.leaders as f64 / count as f64,
        total.commits as f64 / count as f64,
        total.crashes as f64 / count as f64,
        total.partitions as f64 / count as f64,
        total.messages_delivered / count,
        total.messages_dropped / count,
        total.proposals_accepted as f64 / count as f64,
        total.reads_answered as f64 / count as f64,
        total.lease_reads as f64 / count as f64,
    );
}
