//! `raftor sim`: the deterministic simulator of the Raft rules (crate `raftor-sim`) over a range
//! of seeds, from the command line.
//!
//! ```text
//! raftor sim --seeds 1000..2000 [--nodes 5] [--events 2000] [--no-pre-vote] [--bug NAME] [--trace]
//! ```
//!
//! Every seed is a complete, replayable run: N nodes running the real rules under drops,
//! duplicates, reordering, partitions and crashes, with Raft's safety properties checked after
//! every event and liveness once the faults stop. It prints a summary; on a failure it prints the
//! violation, the last events before it, the exact command that replays the seed with its full
//! trace, and an entry for the regression table (`sim/tests/core_regressions.rs`), and exits 1.

use clap::Args;
use raftor_sim::{run, run_with_trace, Bug, SimFailure, SimOptions, SimReport, Sweep};
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A range of seeds: `A..B` (B excluded), `A..=B`, or one seed `A`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRange(pub Range<u64>);

/// Why a `--seeds` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SeedRangeError {
    #[error("{0:?} is not a seed (an unsigned integer)")]
    NotANumber(String),
    #[error("the range {0} is empty")]
    Empty(String),
}

impl FromStr for SeedRange {
    type Err = SeedRangeError;

    fn from_str(text: &str) -> Result<SeedRange, SeedRangeError> {
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| SeedRangeError::NotANumber(part.to_owned()))
        };
        let range = if let Some((from, to)) = text.split_once("..=") {
            let to = number(to)?;
            number(from)?..to.saturating_add(1)
        } else if let Some((from, to)) = text.split_once("..") {
            number(from)?..number(to)?
        } else {
            let seed = number(text)?;
            seed..seed.saturating_add(1)
        };
        if range.is_empty() {
            return Err(SeedRangeError::Empty(text.to_owned()));
        }
        Ok(SeedRange(range))
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.0.start, self.0.end)
    }
}

/// The arguments of `raftor sim`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Seeds to run: A..B (B excluded), A..=B, or a single seed.
    #[arg(long, default_value = "0..100")]
    pub seeds: SeedRange,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Events of faults per seed before the liveness phase.
    #[arg(long, default_value_t = 2000)]
    pub events: u64,
    /// Turn pre-vote and check-quorum off (and with them lease reads).
    #[arg(long)]
    pub no_pre_vote: bool,
    /// Plant a bug in the simulator, to watch a checker catch it: send-before-sync,
    /// vote-before-sync, apply-uncommitted, commit-old-term, no-joint-consensus,
    /// forgetful-rejoin or lease-ignores-stall.
    #[arg(long)]
    pub bug: Option<Bug>,
    /// Lose disks among the faults: a node restarts empty under its old id and must rejoin
    /// before it votes (with a fixed set of voters).
    #[arg(long)]
    pub disk_loss: bool,
    /// Lose disks among the faults while the configuration changes (nodes added later lose
    /// theirs too): safety is checked, liveness is not (a node that lost its data may wait for a
    /// voter removed meanwhile).
    #[arg(long, conflicts_with = "disk_loss")]
    pub disk_loss_with_changes: bool,
    /// Print every event of every seed (meant for replaying one seed).
    #[arg(long)]
    pub trace: bool,
    /// Run every seed even after a failure, and list all failures.
    #[arg(long)]
    pub keep_going: bool,
    /// Threads to run seeds on (default: the machine's cores; 1 with --trace).
    #[arg(long)]
    pub jobs: Option<usize>,
}

impl SimArgs {
    /// The options naming the simulated configuration.
    pub fn options(&self) -> SimOptions {
        SimOptions {
            nodes: self.nodes,
            events: self.events,
            no_pre_vote: self.no_pre_vote,
            bug: self.bug,
            disk_loss: self.disk_loss,
            disk_loss_with_changes: self.disk_loss_with_changes,
        }
    }
}

/// The outcome of one seed.
type Outcome = Result<SimReport, SimFailure>;

/// Runs `raftor sim` and prints to stdout; exit code 0 when every seed passed, 1 otherwise.
pub fn run_command(args: &SimArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run_and_print(args, &mut out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("raftor sim: cannot write the output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the seeds, writes the report to `out`, and says whether every seed passed.
pub fn run_and_print(args: &SimArgs, out: &mut impl Write) -> std::io::Result<bool> {
    let options = args.options();
    let config = options.config();
    writeln!(
        out,
        "raftor sim: seeds {}, {} nodes, {} events of faults each{}{}{}{}",
        args.seeds,
        options.nodes,
        options.events,
        if options.no_pre_vote {
            ", no pre-vote/check-quorum"
        } else {
            ""
        },
        if options.disk_loss {
            ", lost disks (fixed voters)"
        } else if options.disk_loss_with_changes {
            ", lost disks (any node, membership changing)"
        } else {
            ""
        },
        if config.liveness {
            ", then the liveness check"
        } else {
            ""
        },
        options
            .bug
            .map_or(String::new(), |bug| format!(", planted bug {}", bug.name())),
    )?;
    let started = Instant::now();
    let outcomes = if args.trace {
        let mut outcomes = Vec::new();
        for seed in args.seeds.0.clone() {
            let (outcome, lines) = run_with_trace(seed, &config);
            writeln!(out, "--- seed {seed}: every event ---")?;
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            let failed = outcome.is_err();
            outcomes.push((seed, outcome));
            if failed && !args.keep_going {
                break;
            }
        }
        outcomes
    } else {
        let jobs = args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        run_parallel(args.seeds.0.clone(), &config, jobs.max(1), args.keep_going)
    };
    let elapsed = started.elapsed();

    let mut sweep = Sweep::default();
    for (_, outcome) in outcomes {
        sweep.runs += 1;
        match outcome {
            Ok(report) => sweep.total.add(&report),
            Err(failure) => sweep.failures.push(failure),
        }
    }
    for failure in &sweep.failures {
        print_failure(out, failure, &options, args.trace)?;
    }
    writeln!(
        out,
        "{} seed(s) in {}; {:.1} s of simulated time in the passing runs",
        sweep.runs,
        seconds(elapsed),
        sweep.total.time as f64 / 1000.0
    )?;
    writeln!(out, "{}", sweep.summary())?;
    if sweep.failures.is_empty() {
        writeln!(out, "every invariant held on every seed")?;
    } else {
        let seeds: Vec<String> = sweep.failures.iter().map(|f| f.seed.to_string()).collect();
        writeln!(out, "FAILED seeds: {}", seeds.join(", "))?;
    }
    Ok(sweep.failures.is_empty())
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.2} s", elapsed.as_secs_f64())
}

fn print_failure(
    out: &mut impl Write,
    failure: &SimFailure,
    options: &SimOptions,
    traced: bool,
) -> std::io::Result<()> {
    writeln!(out, "\nseed {} FAILED: {failure}", failure.seed)?;
    writeln!(out, "environment: {}", failure.environment)?;
    if !traced {
        writeln!(out, "last {} events:", failure.trace.len())?;
        for line in &failure.trace {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(out, "replay it: {}", options.command_line(failure.seed))?;
    if let Some(bug) = options.bug {
        return writeln!(
            out,
            "(the planted bug {} was caught by the {:?} check, as it should be)",
            bug.name(),
            failure.violation.invariant()
        );
    }
    writeln!(
        out,
        "once fixed, keep it green: add to REGRESSIONS in sim/tests/core_regressions.rs\n  \
         Regression {{ seed: {}, config: || {}.config(), why: \"...\" }},",
        failure.seed,
        options.rust_expression()
    )?;
    Ok(())
}

/// Runs `seeds` on `jobs` threads. Outcomes come back in seed order; unless `keep_going`, only
/// up to the first failing seed (seeds after it that happened to run are discarded, so the
/// output does not depend on the number of threads).
fn run_parallel(
    seeds: Range<u64>,
    config: &raftor_sim::SimConfig,
    jobs: usize,
    keep_going: bool,
) -> Vec<(u64, Outcome)> {
    let next = AtomicU64::new(seeds.start);
    let first_failure = AtomicU64::new(u64::MAX);
    let results: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end
                    || (!keep_going && seed > first_failure.load(Ordering::Relaxed))
                {
                    return;
                }
                let outcome = run(seed, config);
                if outcome.is_err() {
                    first_failure.fetch_min(seed, Ordering::Relaxed);
                }
                results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((seed, outcome));
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(seed, _)| *seed);
    if !keep_going {
        let first = first_failure.into_inner();
        results.retain(|(seed, _)| *seed <= first);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse() {
        assert_eq!("3..7".parse(), Ok(SeedRange(3..7)));
        assert_eq!("3..=7".parse(), Ok(SeedRange(3..8)));
        assert_eq!("42".parse(), Ok(SeedRange(42..43)));
        assert_eq!(
            "7..3".parse::<SeedRange>(),
            Err(SeedRangeError::Empty("7..3".into()))
        );
        assert_eq!(
            "a..3".parse::<SeedRange>(),
            Err(SeedRangeError::NotANumber("a".into()))
        );
        assert!("".parse::<SeedRange>().is_err());
        assert_eq!(SeedRange(3..7).to_string(), "3..7");
    }

    #[test]
    fn a_failure_prints_its_replay_command_and_a_regression_entry() {
        let options = SimOptions::new(3);
        let failure = raftor_sim::first_failure(
            0..20,
            &options
                .config()
                .with_planted_bug(Bug::CommitOldTermByCounting),
        )
        .expect("the planted bug is caught");
        let mut out = Vec::new();
        print_failure(&mut out, &failure, &options, false).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        let seed = failure.seed;
        assert!(
            text.contains(&format!(
                "replay it: raftor sim --seeds {seed} --nodes 3 --events 2000 --trace"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Regression {{ seed: {seed}, config: || SimOptions {{ nodes: 3, events: 2000, \
                 no_pre_vote: false, bug: None, disk_loss: false, \
                 disk_loss_with_changes: false }}.config(), why: \"...\" }},"
            )),
            "{text}"
        );
        assert!(text.contains(&failure.trace[0]), "{text}");
    }

    #[test]
    fn the_output_does_not_depend_on_the_number_of_threads() {
        let config = SimOptions::new(3)
            .config()
            .with_steps(300)
            .with_planted_bug(Bug::ApplyUncommitted);
        let seeds = |outcomes: Vec<(u64, Outcome)>| -> Vec<(u64, bool)> {
            outcomes.into_iter().map(|(s, o)| (s, o.is_ok())).collect()
        };
        let one = seeds(run_parallel(0..30, &config, 1, false));
        let four = seeds(run_parallel(0..30, &config, 4, false));
        assert_eq!(one, four);
        assert_eq!(
            one.last().map(|(_, ok)| *ok),
            Some(false),
            "ends at the failure"
        );
        let all = seeds(run_parallel(0..30, &config, 3, true));
        assert_eq!(all.len(), 30);
    }
}
