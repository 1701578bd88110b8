//! The `raftor` binary as a user runs it: clear errors for bad input, and a local cluster that
//! elects a leader.

#[path = "../../kv/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn raftor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raftor"))
}

/// The lines a child writes to `stderr`, as they come (read on a thread of their own).
fn lines_of(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    receiver
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

/// A data directory that holds someone else's files (a mistyped path, a home directory) is
/// refused before anything is written in it, and what it held is left as it was.
#[test]
fn a_data_directory_holding_other_files_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A name RocksDB would take for an obsolete write-ahead log of its own, and delete.
    std::fs::write(dir.path().join("000003.log"), b"someone's log").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"notes").expect("write");
    let data = dir.path().to_str().expect("utf-8 path");
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
        ],
        &[],
        "holds no raftor store (2 entries, among them 000003.log, notes.txt)",
    );
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["000003.log", "notes.txt"]);
    assert_eq!(
        std::fs::read(dir.path().join("000003.log")).expect("read"),
        b"someone's log"
    );
    // A path through a file cannot be a data directory: a joining node says why.
    let through_a_file = dir.path().join("notes.txt").join("data");
    fails_with(
        &[
            "serve",
            "--id",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "127.0.0.1:1",
            "--join",
            "http://127.0.0.1:1",
            "--data-dir",
            through_a_file.to_str().expect("utf-8 path"),
        ],
        &[],
        "Not a directory",
    );
}

/// `--log-format json` (or `RAFTOR_LOG_FORMAT`, or `log_format` in the config file): every line a
/// node logs is one JSON object, for log shippers; a value it does not know is a clear error.
#[test]
fn a_node_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let data = data.to_str().expect("utf-8 path");
    let port = common::free_base_port(1) + 1;
    let raft = format!("127.0.0.1:{port}");
    let peers = format!("1={raft}");
    let args = [
        "serve",
        "--id",
        "1",
        "--listen",
        &raft,
        "--peers",
        &peers,
        "--data-dir",
        data,
    ];
    fails_with(&args, &[("RAFTOR_LOG_FORMAT", "xml")], "invalid value");

    let mut child = raftor()
        .args(args)
        .env("RAFTOR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let receiver = lines_of(stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut serving = false;
    while Instant::now() < deadline && !serving {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(
                parsed["level"].is_string() && parsed["timestamp"].is_string(),
                "{line}"
            );
            serving = parsed["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving"));
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "no JSON line saying it serves: {seen:#?}");
}

/// `raftor serve` as one node of a cluster of one, on `data`, its Raft port `raft`.
fn serve_alone(raft: &str, data: &std::path::Path) -> Command {
    let mut command = raftor();
    command
        .args(["serve", "--id", "1", "--listen", raft, "--peers"])
        .arg(format!("1={raft}"))
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null());
    command
}

/// `raftor put key value` against `raft`, retried for `patience` (while the node has no
/// leader yet); whether it was acknowledged.
fn put_alone(raft: &str, key: &str, value: &str, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        let output = raftor()
            .args(["put", key, value, "--endpoints", raft])
            .output()
            .expect("runs");
        if output.status.success() || Instant::now() >= deadline {
            return output.status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`serve_alone`] started, once it has acknowledged a write of `key`.
fn serving_alone(raft: &str, data: &std::path::Path, key: &str) -> std::process::Child {
    let mut child = serve_alone(raft, data)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    if !put_alone(raft, key, "1", Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the node took no write of {key}");
    }
    child
}

/// `command` set to run where no file may grow past `bytes` (`RLIMIT_FSIZE`, with `SIGXFSZ`
/// ignored, so a write past it fails as a full disk's would).
fn limit_file_size(command: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: between fork and exec this only calls signal and setrlimit, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Writes `value` under keys `k0`, `k1`, ... through `endpoints` (patient for the first write
/// only) until a write fails or `child` exits, then waits up to 30 s for it to exit, and checks
/// that it exited with status 1 and no panic. Returns the keys acknowledged and the last line
/// `child` wrote to `stderr`.
fn write_until_failed_exit(
    child: &mut std::process::Child,
    stderr: &std::sync::mpsc::Receiver<String>,
    endpoints: &str,
    value: &str,
) -> (Vec<String>, String) {
    let mut acknowledged = Vec::new();
    let mut status = None;
    for i in 0..300 {
        let key = format!("k{i}");
        let patience = if i == 0 { 10 } else { 0 };
        if !put_alone(endpoints, &key, value, Duration::from_secs(patience)) {
            break;
        }
        acknowledged.push(key);
        status = child.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        status = child.try_wait().expect("try_wait");
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the process did not exit; {} writes acknowledged",
            acknowledged.len()
        );
    };
    // Its stderr ends with the process.
    let lines: Vec<String> = stderr.iter().collect();
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
    assert!(
        acknowledged.len() >= 2,
        "writes went through first: {acknowledged:?}"
    );
    (acknowledged, lines.last().cloned().unwrap_or_default())
}

#[test]
fn a_node_whose_disk_fails_exits_with_the_reason_and_restarts_on_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let raft = format!("127.0.0.1:{}", common::free_base_port(1) + 1);
    // A first run creates the store (its write-ahead log files are made full-size then).
    let mut first = serving_alone(&raft, &data, "first");
    let _ = first.kill();
    let _ = first.wait();

    // Run again where no file may grow past 2 MB (RLIMIT_FSIZE, as a full disk would refuse):
    // appending to the log fails once its file is that long.
    let mut limited = serve_alone(&raft, &data);
    let mut child = limit_file_size(&mut limited, 2_000_000)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let value = "v".repeat(60_000);
    let (acknowledged, last) = write_until_failed_exit(&mut child, &lines, &raft, &value);
    assert!(
        last.contains("node 1 stopped itself: storage failed") && last.contains("File too large"),
        "{last}"
    );

    // Restarted without the limit, it serves every write it acknowledged.
    let mut restarted = serving_alone(&raft, &data, "after");
    for key in &acknowledged {
        let output = raftor()
            .args(["get", key, "--endpoints", &raft])
            .output()
            .expect("runs");
        assert!(output.status.success(), "{key} is readable");
        assert_eq!(output.stdout.len(), value.len() + 1, "{key}'s value");
    }
    let _ = restarted.kill();
    let _ = restarted.wait();
}

/// A running `raftor cluster` child process, killed on drop.
struct LocalCluster {
    child: std::process::Child,
    endpoints: String,
    /// Node 1's HTTP address.
    http: String,
    /// The ports node 0 would have (node i listens on base + i).
    base: u16,
    http_base: u16,
    dir: tempfile::TempDir,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `raftor cluster` and wait until it reports a leader.
fn local_cluster() -> LocalCluster {
    local_cluster_with(&[])
}

/// `raftor cluster` of three nodes in `dir`, node i listening on `base + i` and `http_base + i`,
/// logging to a piped stderr.
fn cluster_command(dir: &std::path::Path, base: u16, http_base: u16) -> Command {
    let mut command = raftor();
    command
        .args([
            "cluster",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--http-base-port",
            &http_base.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits until a `raftor cluster`'s stderr reports a leader; if none does in 30 s, everything it
/// logged meanwhile is the error.
fn wait_for_leader(stderr: &std::sync::mpsc::Receiver<String>) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = stderr.recv_timeout(Duration::from_millis(200)) {
            let found = line.contains("leads term");
            seen.push(line);
            if found {
                return Ok(());
            }
        }
    }
    Err(seen)
}

/// [`local_cluster`] with more flags (`--tls`).
fn local_cluster_with(extra: &[&str]) -> LocalCluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_base_port(3);
    let http_base = common::free_base_port(3);
    let endpoints = (1..=3)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");
    let mut child = cluster_command(dir.path(), base, http_base)
        .args(extra)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    // Owned from here on, so the process is killed and reaped on every path, a panic included.
    let cluster = LocalCluster {
        child,
        endpoints,
        http: format!("127.0.0.1:{}", http_base + 1),
        base,
        http_base,
        dir,
    };
    match wait_for_leader(&lines_of(stderr)) {
        Ok(()) => {
            for node in 1..=3 {
                assert!(
                    cluster.dir.path().join(format!("node-{node}")).is_dir(),
                    "node {node} has its data directory"
                );
            }
            cluster
        }
        Err(seen) => {
            drop(cluster);
            panic!("no leader reported; output: {seen:#?}");
        }
    }
}

fn client(cluster: &LocalCluster, args: &[&str]) -> (i32, String, String) {
    let output = raftor()
        .args(args)
        .args(["--endpoints", &cluster.endpoints])
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_local_cluster_whose_node_fails_exits_with_the_reason_and_restarts_on_what_it_acknowledged() {
    // A first run creates the three stores (their write-ahead log files are made full-size then).
    let mut cluster = local_cluster();
    let (code, _, stderr) = client(&cluster, &["put", "first", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let _ = cluster.child.kill();
    let _ = cluster.child.wait();

    // Again where no file may grow past 2 MB: a node's log append fails once its file is that
    // long (the nodes' files differ, so one fails first).
    let mut limited = cluster_command(cluster.dir.path(), cluster.base, cluster.http_base);
    cluster.child = limit_file_size(&mut limited, 2_000_000)
        .spawn()
        .expect("spawn");
    let lines = lines_of(cluster.child.stderr.take().expect("stderr"));
    if let Err(seen) = wait_for_leader(&lines) {
        panic!("no leader under the limit: {seen:#?}");
    }
    let value = "v".repeat(60_000);
    let (acknowledged, last) =
        write_until_failed_exit(&mut cluster.child, &lines, &cluster.endpoints, &value);
    assert!(
        last.contains("stopped itself: storage failed")
            && last.contains("the cluster was shut down"),
        "{last}"
    );

    // Run again without the limit, the cluster serves every write it acknowledged.
    cluster.child = cluster_command(cluster.dir.path(), cluster.base, cluster.http_base)
        .spawn()
        .expect("spawn");
    if let Err(seen) = wait_for_leader(&lines_of(cluster.child.stderr.take().expect("stderr"))) {
        panic!("no leader after the restart: {seen:#?}");
    }
    for key in &acknowledged {
        let (code, stdout, stderr) = client(&cluster, &["get", key]);
        assert_eq!(code, 0, "{key}: {stderr}");
        assert_eq!(stdout.len(), value.len() + 1, "{key}'s value");
    }
}

#[test]
fn the_local_cluster_elects_a_leader_and_the_cli_talks_to_it() {
    let cluster = local_cluster();
    let (code, out, err) = client(&cluster, &["put", "greeting", "hello"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("greeting: ok (index "), "{out}");
    let (code, out, _) = client(&cluster, &["get", "greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    let (code, out, _) = client(
        &cluster,
        &["get", "greeting", "--consistency", "local", "--json"],
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        json["value"] == "hello" || json["value"].is_null(),
        "local read may lag: {json}"
    );
    let (code, _, err) = client(&cluster, &["get", "nothing"]);
    assert_eq!(code, 3, "not found: {err}");
    let (code, out, _) = client(&cluster, &["cas", "greeting", "bye", "--expected", "nope"]);
    assert_eq!(code, 3, "condition not met: {out}");
    assert!(out.contains("current value is \"hello\""), "{out}");
    let (code, out, _) = client(
        &cluster,
        &["cas", "greeting", "bye", "--expected", "hello", "--json"],
    );
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["ok"], true);
    let (code, out, _) = client(&cluster, &["cas", "fresh", "v", "--absent"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = client(&cluster, &["del", "greeting"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted"), "{out}");
    let (code, out, _) = client(&cluster, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(status["leader"]["id"].as_u64().is_some(), "{status}");
    let (code, out, _) = client(&cluster, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(" in term "), "{out}");
    let first = cluster
        .endpoints
        .split(',')
        .next()
        .expect("an endpoint")
        .to_owned();
    let health = raftor()
        .args(["health", "--endpoint", &first])
        .output()
        .expect("runs");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stdout)
    );
    let snapshot = raftor()
        .args(["snapshot", "--endpoint", &first, "--json"])
        .output()
        .expect("runs");
    assert!(
        snapshot.status.success(),
        "{}",
        String::from_utf8_lossy(&snapshot.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&snapshot.stdout).expect("snapshot json");
    assert!(report["index"].as_u64().expect("index") > 0, "{report}");
    // Usage errors exit 2 (clap), unreachable clusters 1.
    let (code, _, _) = client(&cluster, &["cas", "k", "v"]);
    assert_eq!(code, 2, "cas needs --expected or --absent");
    let unreachable = raftor()
        .args([
            "put",
            "k",
            "v",
            "--endpoints",
            "127.0.0.1:1",
            "--timeout",
            "1",
        ])
        .output()
        .expect("runs");
    assert_eq!(unreachable.status.code(), Some(1));
    let health = raftor()
        .args(["health", "--endpoint", "127.0.0.1:1"])
        .output()
        .expect("runs");
    assert_eq!(health.status.code(), Some(1));
}

/// `raftor bench --json` with a request budget: the record adds up.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = raftor()
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn assert_sound_record(record: &serde_json::Value, requests: u64) {
    let ok = record["requests_ok"].as_u64().expect("requests_ok");
    let failed = record["requests_failed"].as_u64().expect("requests_failed");
    assert_eq!(ok + failed, requests, "{record}");
    assert!(ok > 0, "{record}");
    assert!(record["requests_per_sec"].as_f64().expect("rate") > 0.0);
    let latency = &record["latency"];
    let p50 = latency["p50_ms"].as_f64().expect("p50");
    let p99 = latency["p99_ms"].as_f64().expect("p99");
    let max = latency["max_ms"].as_f64().expect("max");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    assert!(record["leader"].as_u64().is_some(), "{record}");
    // The machine is recorded with the figures.
    let machine = &record["machine"];
    assert!(machine["cores"].as_u64() >= Some(1), "{machine}");
    assert!(
        machine["fdatasync_p50_us"].as_f64() > Some(0.0),
        "{machine}"
    );
}

#[test]
fn bench_drives_an_embedded_cluster() {
    let record = bench_json(&["--requests", "300", "--clients", "4"]);
    assert_sound_record(&record, 300);
    assert_eq!(record["cluster"], "embedded");
    assert_eq!(record["nodes"], 3);
    // Every write reached both followers' logs.
    let replicated = record["replicated_entries_per_sec"].as_f64().expect("rate");
    let seconds = record["seconds"].as_f64().expect("seconds");
    let entries = replicated * seconds;
    assert!(
        entries >= 2.0 * 300.0 - 0.5,
        "{entries} entries replicated: {record}"
    );
    let record = bench_json(&[
        "--requests",
        "200",
        "--clients",
        "4",
        "--protocol",
        "http",
        "--read-ratio",
        "0.5",
        "--value-size",
        "1024",
        "--watch-disk",
    ]);
    assert_sound_record(&record, 200);
    assert_eq!(record["protocol"], "http");
    assert!(record["read_latency"]["count"].as_u64().expect("reads") > 0);
    assert!(record["write_latency"]["count"].as_u64().expect("writes") > 0);
    // `--watch-disk`: the disk was synced while the load ran, its stalls counted.
    let disk = &record["disk_during_load"];
    assert!(disk["syncs"].as_u64() >= Some(1), "{disk}");
    assert_eq!(disk["stall_threshold_ms"], 20.0, "{disk}");
    assert!(disk["stalls_total"].as_u64().is_some(), "{disk}");
    assert!(disk["stalls"].is_array(), "{disk}");
}

/// `--storage memory` and `--network memory`: the same load, with the disk, then the sockets and
/// the client protocol, left out; the writes still reach the followers' logs.
#[test]
fn bench_runs_without_disk_and_without_network() {
    let cases: [(&[&str], &str, &str, &str); 3] = [
        (&["--storage", "memory"], "memory", "tcp", "native"),
        (&["--network", "memory"], "rocksdb", "memory", "in-process"),
        (
            &[
                "--storage",
                "memory",
                "--network",
                "memory",
                "--read-ratio",
                "0.5",
            ],
            "memory",
            "memory",
            "in-process",
        ),
    ];
    for (flags, storage, network, protocol) in cases {
        let mut args = vec!["--requests", "300", "--clients", "4"];
        args.extend_from_slice(flags);
        let record = bench_json(&args);
        assert_sound_record(&record, 300);
        assert_eq!(record["requests_failed"], 0, "{record}");
        assert_eq!(record["storage"], storage, "{record}");
        assert_eq!(record["network"], network, "{record}");
        assert_eq!(record["protocol"], protocol, "{record}");
        assert!(
            record["disk_during_load"].is_null(),
            "watched only when asked: {record}"
        );
        let followers: Vec<_> = record["per_node"]
            .as_array()
            .expect("per node")
            .iter()
            .filter(|node| node["role"] == "follower")
            .collect();
        assert_eq!(followers.len(), 2, "{record}");
        // A write is acknowledged once the leader and one follower hold it: between them, the
        // followers appended every acknowledged write.
        let writes = record["write_latency"]["count"].as_u64().expect("writes");
        let seconds = record["seconds"].as_f64().expect("seconds");
        let appended: f64 = followers
            .iter()
            .map(|node| node["entries_per_sec"].as_f64().expect("rate") * seconds)
            .sum();
        assert!(
            writes > 0 && appended >= writes as f64 - 0.5,
            "{appended} entries for {writes} writes: {record}"
        );
    }
}

#[test]
fn bench_drives_a_running_cluster() {
    let cluster = local_cluster();
    let record = bench_json(&[
        "--endpoints",
        &cluster.endpoints,
        "--requests",
        "200",
        "--clients",
        "8",
        "--read-ratio",
        "0.25",
        "--consistency",
        "lease",
    ]);
    assert_sound_record(&record, 200);
    assert_eq!(record["cluster"], "external");
    let (code, out, _) = client(&cluster, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        status["log_entries_appended"].as_u64().expect("counted") > 100,
        "{status}"
    );
}

#[test]
fn bench_refuses_bad_flags() {
    fails_with(
        &["bench", "--read-ratio", "1.5"],
        &[],
        "not a ratio between 0 and 1",
    );
    fails_with(&["bench", "--clients", "0"], &[], "--clients");
    fails_with(&["bench", "--duration=-3"], &[], "not a number of seconds");
    fails_with(
        &["bench", "--duration", "soon"],
        &[],
        "not a number of seconds",
    );
    fails_with(
        &["bench", "--protocol", "carrier-pigeon"],
        &[],
        "--protocol",
    );
    fails_with(
        &[
            "bench",
            "--protocol",
            "http",
            "--endpoints",
            "http://127.0.0.1:1",
        ],
        &[],
        "is not host:port",
    );
    fails_with(
        &["bench", "--network", "memory", "--protocol", "http"],
        &[],
        "--protocol does not apply",
    );
    fails_with(
        &["bench", "--network", "memory", "--endpoints", "127.0.0.1:1"],
        &[],
        "cannot be used with",
    );
    fails_with(&["bench", "--storage", "floppy"], &[], "--storage");
    fails_with(
        &[
            "bench",
            "--endpoints",
            "127.0.0.1:1",
            "--requests",
            "1",
            "--wait",
            "0.5",
        ],
        &[],
        "the cluster took no write",
    );
}

/// `raftor cluster --tls`: the CLI needs the CA and a token with the role of each command, from
/// a flag, a variable or the client config file; without them it is refused with a clear error.
#[test]
fn a_secure_local_cluster_takes_credentials_from_flags_variables_and_a_file() {
    let cluster = local_cluster_with(&["--tls"]);
    let certs = cluster.dir.path().join("certs");
    let path = |name: &str| certs.join(name).to_str().expect("utf-8").to_owned();
    let ca = path("ca.pem");
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let output = raftor()
            .args(args)
            .args(["--endpoints", &cluster.endpoints, "--timeout", "3"])
            .envs(envs.iter().copied())
            .output()
            .expect("runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let writer = path("readwrite.token");
    let (code, out) = run(
        &["put", "k", "v", "--ca", &ca, "--token-file", &writer],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        &["get", "k"],
        &[
            ("RAFTOR_CA", &ca),
            ("RAFTOR_TOKEN_FILE", &path("read.token")),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "v\n"));
    let config = cluster.dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!("ca = {ca:?}\ntoken_file = {:?}\n", path("read.token")),
    )
    .expect("write");
    let config = config.to_str().expect("utf-8");
    let (code, out) = run(&["get", "k", "--client-config", config], &[]);
    assert_eq!((code, out.as_str()), (0, "v\n"));
    // Refused: no token, a read token on a write, and no CA (plain TCP to a TLS port).
    let (code, out) = run(&["get", "k", "--ca", &ca], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unauthenticated"), "{out}");
    let (code, out) = run(&["put", "k", "w", "--client-config", config], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("forbidden"), "{out}");
    // Plain TCP to a TLS port: the node's TLS alert says why.
    let (code, out) = run(&["get", "k", "--token-file", &writer], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("speaks TLS"), "{out}");
    // A backup over HTTPS needs the admin token.
    let out = cluster.dir.path().join("backup.raftor");
    let out_arg = out.to_str().expect("utf-8");
    let backup = |token: &str| {
        raftor()
            .args(["backup", "--endpoint", &cluster.http, "--out", out_arg])
            .args(["--ca", &ca, "--token-file", token])
            .output()
            .expect("runs")
    };
    let refused = backup(&writer);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));
    assert!(!out.exists(), "nothing is left behind");
    // What a backup killed midway leaves behind is replaced, not in the way.
    let partial = cluster.dir.path().join("backup.raftor.partial");
    std::fs::write(&partial, b"{\"format\":\"raftor-kv-backup\"").expect("write");
    let saved = backup(&path("admin.token"));
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let header = raftor_kv::backup::verify(&mut std::fs::File::open(&out).expect("backup"))
        .expect("the backup checks out");
    assert!(header.index > 0, "{header:?}");
    assert!(!partial.exists(), "the partial file became the backup");
    assert!(
        String::from_utf8_lossy(&saved.stderr).contains("left by an interrupted backup"),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let again = backup(&path("admin.token"));
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );
    // The bench against it, natively, with the admin token.
    let record = bench_json(&[
        "--endpoints",
        &cluster.endpoints,
        "--requests",
        "100",
        "--clients",
        "4",
        "--ca",
        &ca,
        "--token-file",
        &path("admin.token"),
    ]);
    assert_sound_record(&record, 100);
}

#[test]
fn certs_and_tokens_are_made_kept_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let out_arg = out.to_str().expect("utf-8");
    let made = raftor()
        .args(["certs", "--out", out_arg, "--nodes", "2", "--host", "2=db2"])
        .output()
        .expect("runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for file in [
        "ca.pem",
        "ca-key.pem",
        "node-1.pem",
        "node-2-key.pem",
        "tokens.toml",
        "admin.token",
        "read.token",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let ca = std::fs::read(out.join("ca.pem")).expect("ca");
    // Again, with a third node: the CA and the first two stay, node 3 is added.
    let again = raftor()
        .args(["certs", "--out", out_arg, "--nodes", "3"])
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert_eq!(std::fs::read(out.join("ca.pem")).expect("ca"), ca);
    assert!(out.join("node-3.pem").is_file());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("kept") && stdout.contains("node-3.pem"),
        "{stdout}"
    );
    fails_with(&["certs", "--out", out_arg, "--nodes", "0"], &[], "--nodes");
    fails_with(
        &["certs", "--out", out_arg, "--host", "9=x"],
        &[],
        "node 9 is not in --nodes",
    );
    // A token made, listed (no secret), and revoked.
    let tokens = out.join("tokens.toml");
    let tokens_arg = tokens.to_str().expect("utf-8");
    let created = raftor()
        .args([
            "token", "create", "--tokens", tokens_arg, "--role", "read", "--name", "ci",
        ])
        .output()
        .expect("runs");
    assert!(created.status.success());
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let id = token.split('_').nth(1).expect("an id").to_owned();
    let listed = raftor()
        .args(["token", "list", "--tokens", tokens_arg])
        .output()
        .expect("runs");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains(&id) && listing.contains("ci"), "{listing}");
    assert!(!listing.contains(token.rsplit('_').next().expect("secret")));
    let revoked = raftor()
        .args(["token", "revoke", "--tokens", tokens_arg, &id])
        .output()
        .expect("runs");
    assert!(revoked.status.success());
    fails_with(
        &["token", "revoke", "--tokens", tokens_arg, &id],
        &[],
        "no token",
    );
}

#[test]
fn ranges_transactions_watches_and_leases_from_the_cli() {
    let cluster = local_cluster();
    for (key, value) in [("app/a", "1"), ("app/b", "2"), ("app/c", "3"), ("zz", "x")] {
        let (code, out, err) = client(&cluster, &["put", key, value]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // get --json carries the revisions.
    let (code, out, _) = client(&cluster, &["get", "app/a", "--json"]);
    assert_eq!(code, 0);
    let entry: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (entry["value"].as_str(), entry["version"].as_u64()),
        (Some("1"), Some(1))
    );
    // A watch from the index after the last write sees what comes next (in the background).
    let (_, out, _) = client(&cluster, &["get", "zz", "--json"]);
    let last: serde_json::Value = serde_json::from_str(&out).expect("json");
    let from = last["mod_index"].as_u64().expect("index") + 1;
    let watcher = raftor()
        .args([
            "watch",
            "--prefix",
            "app/",
            "--from-index",
            &from.to_string(),
            "--count",
            "4",
            "--json",
        ])
        .args(["--endpoints", &cluster.endpoints])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch runs");

    let (code, out, _) = client(&cluster, &["range", "--prefix", "app/"]);
    assert_eq!((code, out.as_str()), (0, "app/a\t1\napp/b\t2\napp/c\t3\n"));
    let (code, out, _) = client(
        &cluster,
        &["range", "--start", "app/b", "--end", "zz", "--keys-only"],
    );
    assert_eq!((code, out.as_str()), (0, "app/b\napp/c\n"));
    let (code, out, _) = client(&cluster, &["range", "--prefix", "", "--count"]);
    assert_eq!((code, out.trim()), (0, "4"));
    let (code, out, _) = client(
        &cluster,
        &["range", "--prefix", "app/", "--limit", "2", "--json"],
    );
    assert_eq!(code, 0);
    let page: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (page["count"].as_u64(), page["more"].as_bool()),
        (Some(2), Some(true))
    );
    let (code, _, err) = client(&cluster, &["range", "--start", "b", "--end", "a"]);
    assert_eq!(code, 2, "an inverted range is a usage error: {err}");
    assert!(err.contains("inverted"), "{err}");

    // A transaction from a file: holds once, then not (exit 3).
    let txn = cluster.dir.path().join("txn.json");
    std::fs::write(
        &txn,
        r#"{"compare": [{"key": "app/lock", "version": 0}],
            "success": [{"put": {"key": "app/lock", "value": "me"}}],
            "failure": [{"get": {"key": "app/lock"}}]}"#,
    )
    .expect("written");
    let txn = txn.to_str().expect("utf-8");
    let (code, out, err) = client(&cluster, &["txn", txn]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("compare succeeded"), "{out}");
    let (code, out, _) = client(&cluster, &["txn", txn, "--json"]);
    assert_eq!(code, 3, "{out}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(answer["results"][0]["get"]["value"], "me");

    // A lease: keys attached to it go with it.
    let (code, out, err) = client(&cluster, &["lease", "grant", "30"]);
    assert_eq!(code, 0, "{err}");
    let lease = out.trim().to_owned();
    let (code, _, err) = client(&cluster, &["put", "app/svc", "up", "--lease", &lease]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = client(&cluster, &["lease", "show", &lease]);
    assert_eq!(code, 0);
    assert!(out.contains("1 keys") && out.contains("app/svc"), "{out}");
    let (code, out, _) = client(&cluster, &["lease", "keep-alive", &lease, "--once"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = client(&cluster, &["lease", "revoke", &lease]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("lease {lease} revoked; 1 keys deleted").as_str())
    );
    let (code, _, _) = client(&cluster, &["lease", "keep-alive", &lease, "--once"]);
    assert_eq!(code, 3, "a revoked lease is not found");
    let (code, _, err) = client(&cluster, &["lease", "grant", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TTL"), "{err}");

    // Range deletes, guarded against deleting everything.
    let (code, _, err) = client(&cluster, &["del", "--prefix", ""]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = client(&cluster, &["del", "--prefix", "app/"]);
    assert_eq!(
        (code, out.starts_with("deleted 4 keys")),
        (0, true),
        "{out}"
    );

    // The watcher saw the four changes after it started, in order: the transaction's put, the
    // leased put, and the two deletes (the lease's, then the range's first key).
    let output = watcher
        .wait_with_output()
        .expect("the watch ends after 4 events");
    assert!(output.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["key"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("put".into(), "app/lock".into()),
            ("put".into(), "app/svc".into()),
            ("delete".into(), "app/svc".into()),
            ("delete".into(), "app/a".into()),
        ]
    );
}
