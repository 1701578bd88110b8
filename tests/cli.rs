//! The `raftor` binary as a user runs it: clear errors for bad input, and a local cluster that
//! elects a leader.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn raftor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raftor"))
}

fn fails_with(args: &[&str], envs: &[(&str, &str)], expected: &str) {
    let output = raftor()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("runs");
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr:?} should say {expected:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn bad_flags_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let data = data.to_str().expect("utf-8 path");
    fails_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
            "--data-dir",
            data,
        ],
        &[],
        "missing setting: --id",
    );
    fails_with(
        &[
            "serve",
            "--id",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=a:1,2=b:2",
            "--data-dir",
            data,
        ],
        &[],
        "not in --peers",
    );
    fails_with(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            "nope",
            "--peers",
            "1=a:1",
            "--data-dir",
            data,
        ],
        &[],
        "bad --listen",
    );
    fails_with(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=a",
            "--data-dir",
            data,
        ],
        &[],
        "bad --peers",
    );
    fails_with(&["serve", "--id", "x"], &[], "invalid value");
    fails_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=a:1",
            "--data-dir",
            data,
        ],
        &[("RAFTOR_ID", "7")],
        "not in --peers",
    );
    fails_with(
        &["serve", "--config", "/nonexistent/raftor.toml"],
        &[],
        "cannot read config file",
    );
    fails_with(&["cluster", "--nodes", "0"], &[], "0 is not in 1..=9");
    // A data directory that is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").expect("write");
    fails_with(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
            "--data-dir",
            file.to_str().expect("utf-8"),
        ],
        &[],
        "data directory",
    );
}

#[test]
fn a_data_directory_of_another_node_or_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let data = data.to_str().expect("utf-8 path");
    let start = |id: &str, peers: &str, cluster: &str| {
        raftor()
            .args([
                "serve",
                "--id",
                id,
                "--listen",
                "127.0.0.1:0",
                "--peers",
                peers,
                "--data-dir",
                data,
                "--cluster-id",
                cluster,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    // A single-node cluster "one" takes the directory, then is stopped.
    let mut first = start("1", "1=127.0.0.1:1", "one");
    let stderr = first.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.contains("serving") => break,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = first.kill();
    let _ = first.wait();
    fails_with(
        &[
            "serve",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "2=127.0.0.1:1",
            "--data-dir",
            data,
            "--cluster-id",
            "one",
        ],
        &[],
        "belongs to node 1",
    );
    fails_with(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
            "--data-dir",
            data,
            "--cluster-id",
            "two",
        ],
        &[],
        "cluster 'one'",
    );
}

#[test]
fn the_local_cluster_elects_and_reports_a_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = probe.local_addr().expect("addr").port().saturating_sub(10);
    drop(probe);
    let mut child = raftor()
        .args([
            "cluster",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut found = false;
    while Instant::now() < deadline && !found {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            found = line.contains("leads term");
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no leader reported; output: {seen:#?}");
    for node in 1..=3 {
        assert!(
            dir.path().join(format!("node-{node}")).is_dir(),
            "node {node} has its data directory"
        );
    }
}
