//! `raftor sim` as a user runs it: a range of seeds passes with a summary; a planted bug is
//! caught, and the printed replay command reproduces the same failure with every event; bad
//! arguments are usage errors.

use std::process::{Command, Output};

fn raftor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftor"))
        .args(args)
        .output()
        .expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_range_of_seeds_passes_with_a_summary() {
    let output = raftor(&["sim", "--seeds", "0..40"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("seeds 0..40, 3 nodes"), "{text}");
    assert!(text.contains("40 seed(s) in"), "{text}");
    assert!(text.contains("40 runs, 0 failed"), "{text}");
    assert!(
        text.contains("every invariant held on every seed"),
        "{text}"
    );

    let output = raftor(&[
        "sim",
        "--seeds",
        "100..=109",
        "--nodes",
        "5",
        "--events",
        "800",
        "--no-pre-vote",
        "--jobs",
        "1",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("10 runs, 0 failed"), "{text}");
    assert!(text.contains("5 nodes, 800 events"), "{text}");
}

/// The line of `text` that starts with `prefix`, without it.
fn line_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[test]
fn a_planted_bug_fails_and_the_printed_command_replays_it() {
    let output = raftor(&["sim", "--seeds", "0..200", "--bug", "vote-before-sync"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let failed = text
        .lines()
        .find(|line| line.starts_with("seed ") && line.contains(" FAILED: "))
        .unwrap_or_else(|| panic!("no failure line in:\n{text}"));
    assert!(failed.contains("Election Safety"), "{failed}");
    // The trace's tail (at most 200 events) is printed.
    let tail: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("last ")?.strip_suffix(" events:"))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no \"last N events:\" line in:\n{text}"));
    assert!((1..=200).contains(&tail), "{text}");
    assert!(
        text.contains("caught by the ElectionSafety check"),
        "{text}"
    );
    assert!(text.contains("FAILED seeds: "), "{text}");

    let replay = line_after(&text, "replay it: ");
    let args: Vec<&str> = replay.split_whitespace().collect();
    assert_eq!(args[..2], ["raftor", "sim"], "{replay}");
    assert!(args.contains(&"--trace"), "{replay}");
    assert!(replay.contains("--bug vote-before-sync"), "{replay}");
    // A planted bug is meant to fail: no regression entry is suggested for it.
    assert!(!text.contains("REGRESSIONS"), "{text}");
    let again = raftor(&args[1..]);
    let replayed = stdout(&again);
    assert_eq!(again.status.code(), Some(1), "{replayed}");
    // Every event is printed, and the run ends in the same violation at the same step.
    let seed = failed.split_whitespace().nth(1).expect("seed");
    assert!(
        replayed.contains(&format!("--- seed {seed}: every event ---")),
        "{replayed}"
    );
    assert!(replayed.lines().count() > tail, "{replayed}");
    assert!(replayed.lines().any(|line| line == failed), "{replayed}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for (args, expected) in [
        (&["sim", "--seeds", "9..3"][..], "is empty"),
        (&["sim", "--seeds", "x"][..], "not a seed"),
        (&["sim", "--bug", "nope"][..], "vote-before-sync"),
        (&["sim", "--nodes", "0"][..], "0"),
    ] {
        let output = raftor(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
