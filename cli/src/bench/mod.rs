//! `raftor bench`: drive a cluster with a closed-loop load and report throughput, latency
//! percentiles (HDR histogram) and the replication rate to the followers.
//!
//! With no `--endpoints` it starts an embedded 3-node cluster first (real TCP on loopback, RocksDB
//! with synced writes in a temporary directory), each node on a thread and actix System of its own,
//! as separate processes would be. With `--endpoints` it drives a running cluster (for instance the
//! docker-compose one). `--storage memory` keeps the embedded nodes' logs in memory, and
//! `--network memory` runs them in-process on an in-memory network, the load calling the
//! leader's `RaftNode` directly: together they measure what Raft itself costs, without disk,
//! sockets or a client protocol.

mod disk_watch;
mod embedded;
mod http_load;
mod in_process;
mod load;
mod machine;
mod report;
mod system_thread;

use clap::{Args, ValueEnum};
use raftor_kv::protocol::Consistency;
use raftor_kv::ClientOptions;
use report::{BenchReport, NodeFigures};
use std::process::ExitCode;
use std::time::Duration;

/// How the load reaches the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The native protocol (length-prefixed bincode frames on the Raft port), via `raftor_kv::Client`.
    Native,
    /// The HTTP API (`PUT`/`GET /v1/kv/{key}`), one keep-alive connection per client.
    Http,
}

/// Where the embedded cluster keeps its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// RocksDB in a temporary directory, every write synced, as `raftor serve` does.
    Rocksdb,
    /// In memory (snapshots in /dev/shm where there is one): no disk.
    Memory,
}

impl Storage {
    /// How the nodes are told.
    fn node_log(self) -> raftor_kv::server::NodeLog {
        match self {
            Storage::Rocksdb => raftor_kv::server::NodeLog::DataDir,
            Storage::Memory => raftor_kv::server::NodeLog::Memory,
        }
    }
}

/// How the embedded cluster's nodes, and the load, reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// TCP on loopback: the nodes on threads of their own, the load through `--protocol`.
    Tcp,
    /// In this process: the nodes on one thread, messages handed over as values (no socket, no
    /// encoding), the load calling the leader's `RaftNode::propose` and `read` directly (no
    /// client protocol): the set-up of openraft's benchmark.
    Memory,
}

/// What the in-process cluster's nodes apply the writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMachineChoice {
    /// The key-value store, as `raftor serve` runs it.
    Kv,
    /// A state machine that only counts the commands: what is left is the Raft library's cost.
    Count,
}

/// `raftor bench` flags.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The cluster to drive: its members' Raft addresses (native) or HTTP addresses (http),
    /// host:port,... Without it, an embedded 3-node cluster is started and driven.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// How many clients run at once, each one request at a time (closed loop).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub clients: u64,
    /// How long to run, in seconds (ignored when --requests is given).
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub duration: f64,
    /// Stop after this many requests in all, instead of after --duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// The size of each written value, in bytes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=64 * 1024 * 1024))]
    pub value_size: u64,
    /// How many distinct keys the load touches (chosen at random).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// The keys are this prefix followed by a number.
    #[arg(long, default_value = "k")]
    pub key_prefix: String,
    /// The share of requests that are reads, from 0 (all writes) to 1 (all reads).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub read_ratio: f64,
    /// How fresh reads must be: linearizable, lease or local.
    #[arg(long, default_value = "linearizable")]
    pub consistency: Consistency,
    /// native (default) or http.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Print one JSON record instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// How long to wait, in seconds, for the cluster to take a first write before the load starts.
    #[arg(long, default_value_t = 20.0, value_parser = positive_seconds)]
    pub wait: f64,
    /// Seeds the choice of keys and of reads versus writes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The embedded cluster runs with security on (mutual TLS between nodes, TLS for clients,
    /// tokens), to measure what it costs. With --endpoints, give --ca and a token instead.
    #[arg(long, conflicts_with = "endpoints")]
    pub tls: bool,
    /// Where the embedded cluster keeps its logs: rocksdb (synced) or memory.
    #[arg(long, value_enum, default_value_t = Storage::Rocksdb, conflicts_with = "endpoints")]
    pub storage: Storage,
    /// How the embedded cluster's nodes and the load talk: tcp, or memory (in-process, the load
    /// calling the leader's RaftNode directly; --protocol does not apply).
    #[arg(long, value_enum, default_value_t = Network::Tcp, conflicts_with_all = ["endpoints", "tls"])]
    pub network: Network,
    /// What the nodes apply the writes to: kv (the key-value store) or count (a state machine
    /// that only counts them, to measure the Raft library alone). count needs --network memory.
    #[arg(long, value_enum, default_value_t = StateMachineChoice::Kv)]
    pub state_machine: StateMachineChoice,
    /// Where to time fdatasync before the load (recorded with the figures) and, with
    /// --watch-disk, during it: default the system's temporary directory, where the embedded
    /// cluster keeps its data. For a running cluster give a directory on its disk.
    #[arg(long)]
    pub fsync_probe_dir: Option<std::path::PathBuf>,
    /// While the load runs, sync a small overwrite in the probe directory every 10 ms and report
    /// the disk's stalls (syncs over 20 ms) with when they ended, to tell a latency tail from the
    /// disk's.
    #[arg(long)]
    pub watch_disk: bool,
    #[command(flatten)]
    pub credentials: crate::commands::Credentials,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(seconds),
        _ => Err(format!(
            "'{text}' is not a number of seconds between 0 and 86400"
        )),
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("'{text}' is not a ratio between 0 and 1")),
    }
}

/// Run the benchmark; exit 0 when it ran (even with failed requests, which it reports), 1 when it
/// could not run at all.
pub fn run_command(args: &BenchArgs) -> ExitCode {
    match run(args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(error) => {
                        eprintln!("raftor bench: cannot encode the report: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.human());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("raftor bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster the bench started, if any, to stop once the load is done.
enum Started {
    Embedded(embedded::EmbeddedCluster),
    InProcess(in_process::InProcessCluster),
    /// `--endpoints`: a running cluster, not the bench's.
    Nothing,
}

fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    if args.state_machine == StateMachineChoice::Count && args.network != Network::Memory {
        return Err(
            "--state-machine count needs --network memory (a cluster over TCP serves the key-value store)"
                .into(),
        );
    }
    if args.network == Network::Memory && args.protocol != Protocol::Native {
        return Err(
            "--network memory calls the leader's RaftNode directly: --protocol does not apply"
                .into(),
        );
    }
    // Before anything else runs, so the disk is as quiet as the machine allows.
    let probe_dir = probe_dir(args);
    let machine = machine::Machine::measure(&probe_dir)?;
    let (started, endpoints, target) = if args.network == Network::Memory {
        // In-process: the load calls the leader's `RaftNode`.
        let cluster = in_process::InProcessCluster::start(3, args.storage, args.state_machine)?;
        let nodes = cluster.nodes();
        let endpoints = nodes
            .iter()
            .map(|node| format!("node-{}", node.id()))
            .collect();
        (
            Started::InProcess(cluster),
            endpoints,
            load::Target::InProcess { nodes },
        )
    } else {
        let (started, endpoints, credentials) = if args.endpoints.is_empty() {
            let cluster =
                embedded::EmbeddedCluster::start(3, args.protocol, args.tls, args.storage)?;
            let endpoints = cluster.endpoints(args.protocol);
            let credentials = cluster.credentials();
            (Started::Embedded(cluster), endpoints, credentials)
        } else {
            let credentials = args.credentials.apply(ClientOptions::default());
            (Started::Nothing, args.endpoints.clone(), credentials)
        };
        let target = credentials
            .and_then(|credentials| load::Target::new(args.protocol, &endpoints, credentials));
        match target {
            Ok(target) => (started, endpoints, target),
            Err(error) => {
                started.stop();
                return Err(error);
            }
        }
    };
    let system = actix::System::new();
    let result = system.block_on(drive(args, endpoints, target));
    started.stop();
    result.map(|report| BenchReport {
        machine: Some(machine),
        ..report
    })
}

/// Where the disk is timed: `--fsync-probe-dir`, else the system's temporary directory.
fn probe_dir(args: &BenchArgs) -> std::path::PathBuf {
    args.fsync_probe_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
}

impl Started {
    fn stop(self) {
        match self {
            Started::Embedded(cluster) => cluster.stop(),
            Started::InProcess(cluster) => cluster.stop(),
            Started::Nothing => {}
        }
    }
}

async fn drive(
    args: &BenchArgs,
    endpoints: Vec<String>,
    mut target: load::Target,
) -> Result<BenchReport, String> {
    target
        .wait_until_writable(Duration::from_secs_f64(args.wait))
        .await?;
    let before = target.statuses().await;
    let watch = if args.watch_disk {
        Some(disk_watch::DiskWatch::start(
            &probe_dir(args),
            disk_watch::INTERVAL,
            disk_watch::STALL,
        )?)
    } else {
        None
    };
    let outcome = load::run(args, &target).await;
    let disk_during_load = watch.map(disk_watch::DiskWatch::finish).transpose()?;
    let after = target.statuses().await;
    let elapsed = outcome.elapsed.as_secs_f64().max(f64::EPSILON);

    let mut nodes = Vec::new();
    for (endpoint, after) in endpoints.iter().zip(&after) {
        let Some(after) = after else {
            nodes.push(NodeFigures::unreachable(endpoint));
            continue;
        };
        let before = before.iter().flatten().find(|status| status.id == after.id);
        nodes.push(NodeFigures::between(endpoint, before, after, elapsed));
    }
    let leader = after.iter().flatten().find(|s| s.role == "leader");
    Ok(BenchReport {
        disk_during_load,
        ..BenchReport::new(
            args,
            endpoints.len(),
            leader.map(|status| status.id),
            outcome,
            nodes,
        )
    })
}
