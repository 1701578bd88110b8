//! What `raftor bench` prints: a progress bar while it runs, then throughput, latency percentiles,
//! the replication rate and each node's memory — as text, or as one JSON record with `--json`.

use super::load::Outcome;
use super::{BenchArgs, Network, Protocol, StateMachineChoice, Storage};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use raftor_kv::protocol::{Consistency, StatusReport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// What the bench reads from one node's status, before and after the load.
#[derive(Clone, Debug)]
pub(super) struct NodeSample {
    pub id: u64,
    pub role: String,
    /// Log entries the node appended since it started, and their payload bytes.
    pub entries_appended: u64,
    pub bytes_appended: u64,
    pub resident_memory_bytes: Option<u64>,
}

impl NodeSample {
    /// From a status report (native protocol or HTTP).
    pub(super) fn of_report(report: &StatusReport) -> NodeSample {
        NodeSample {
            id: report.id,
            role: report.role.clone(),
            entries_appended: report.log_entries_appended,
            bytes_appended: report.log_bytes_appended,
            resident_memory_bytes: report.resident_memory_bytes,
        }
    }

    /// From a node in this process (`--network memory`).
    pub(super) fn of_status(status: &raftor::NodeStatus) -> NodeSample {
        NodeSample {
            id: status.id.0,
            role: status.role.as_str().to_owned(),
            entries_appended: status.log_entries_appended,
            bytes_appended: status.log_bytes_appended,
            resident_memory_bytes: raftor_kv::metrics::resident_memory_bytes(),
        }
    }
}

/// Latency percentiles of one kind of request, in milliseconds.
#[derive(Debug, Serialize)]
pub(super) struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Latency {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// One node's figures over the run.
#[derive(Debug, Serialize)]
pub(super) struct NodeFigures {
    pub endpoint: String,
    pub id: Option<u64>,
    pub role: Option<String>,
    /// Entries the node appended to its log during the run, per second.
    pub entries_per_sec: f64,
    /// Payload bytes it appended during the run, in MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Its process's resident memory at the end of the run.
    pub resident_memory_bytes: Option<u64>,
}

impl NodeFigures {
    pub(super) fn unreachable(endpoint: &str) -> NodeFigures {
        NodeFigures {
            endpoint: endpoint.to_string(),
            id: None,
            role: None,
            entries_per_sec: 0.0,
            mb_per_sec: 0.0,
            resident_memory_bytes: None,
        }
    }

    /// The node's rates between two status reports `seconds` apart (a node that restarted in
    /// between counts from zero).
    pub(super) fn between(
        endpoint: &str,
        before: Option<&NodeSample>,
        after: &NodeSample,
        seconds: f64,
    ) -> NodeFigures {
        let (entries_before, bytes_before) = match before {
            Some(b) if b.entries_appended <= after.entries_appended => {
                (b.entries_appended, b.bytes_appended)
            }
            _ => (0, 0),
        };
        NodeFigures {
            endpoint: endpoint.to_string(),
            id: Some(after.id),
            role: Some(after.role.clone()),
            entries_per_sec: (after.entries_appended - entries_before) as f64 / seconds,
            mb_per_sec: after.bytes_appended.saturating_sub(bytes_before) as f64 / seconds / 1e6,
            resident_memory_bytes: after.resident_memory_bytes,
        }
    }
}

/// The nodes that answered as followers.
fn followers(nodes: &[NodeFigures]) -> impl Iterator<Item = &NodeFigures> {
    nodes
        .iter()
        .filter(|node| node.role.as_deref().is_some_and(|role| role != "leader"))
}

/// The whole result, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(super) struct BenchReport {
    /// `embedded` (started by the bench) or `external`.
    pub cluster: &'static str,
    pub nodes: usize,
    pub leader: Option<u64>,
    /// `native`, `http`, or `in-process` (`--network memory`: the leader's `RaftNode` called).
    pub protocol: &'static str,
    /// Where the embedded cluster kept its logs, and how its nodes talked (`None`: external).
    pub storage: Option<Storage>,
    pub network: Option<Network>,
    /// What the embedded cluster applied the writes to (`None`: external, the key-value store).
    pub state_machine: Option<StateMachineChoice>,
    pub clients: u64,
    pub value_bytes: u64,
    pub keys: u64,
    pub read_ratio: f64,
    pub consistency: Consistency,
    pub seconds: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub requests_per_sec: f64,
    pub latency: Option<Latency>,
    pub write_latency: Option<Latency>,
    pub read_latency: Option<Latency>,
    /// Entries appended by the followers, summed over them, per second.
    pub replicated_entries_per_sec: f64,
    /// Payload MB appended by the followers, summed over them, per second.
    pub replicated_mb_per_sec: f64,
    pub per_node: Vec<NodeFigures>,
    /// The machine the benchmark ran on (cores, CPU, memory, kernel, fdatasync latency).
    pub machine: Option<super::machine::Machine>,
    /// What the disk did while the load ran (`--watch-disk`).
    pub disk_during_load: Option<super::disk_watch::DiskDuringLoad>,
}

impl BenchReport {
    pub(super) fn new(
        args: &BenchArgs,
        nodes: usize,
        leader: Option<u64>,
        outcome: Outcome,
        per_node: Vec<NodeFigures>,
    ) -> BenchReport {
        let seconds = outcome.elapsed.as_secs_f64();
        let requests_ok = outcome.all.len();
        let (entries, mb) = followers(&per_node).fold((0.0, 0.0), |(entries, mb), node| {
            (entries + node.entries_per_sec, mb + node.mb_per_sec)
        });
        let embedded = args.endpoints.is_empty();
        BenchReport {
            cluster: if embedded { "embedded" } else { "external" },
            nodes,
            leader,
            protocol: match (args.network, args.protocol) {
                (Network::Memory, _) => "in-process",
                (Network::Tcp, Protocol::Native) => "native",
                (Network::Tcp, Protocol::Http) => "http",
            },
            storage: embedded.then_some(args.storage),
            network: embedded.then_some(args.network),
            state_machine: embedded.then_some(args.state_machine),
            clients: args.clients,
            value_bytes: args.value_size,
            keys: args.keys,
            read_ratio: args.read_ratio,
            consistency: args.consistency,
            seconds,
            requests_ok,
            requests_failed: outcome.failed.values().sum(),
            failures: outcome.failed,
            requests_per_sec: requests_ok as f64 / seconds.max(f64::EPSILON),
            latency: Latency::of(&outcome.all),
            write_latency: Latency::of(&outcome.writes),
            read_latency: Latency::of(&outcome.reads),
            replicated_entries_per_sec: entries,
            replicated_mb_per_sec: mb,
            per_node,
            machine: None,
            disk_during_load: None,
        }
    }

    /// The human-readable report.
    pub(super) fn human(&self) -> String {
        let mut out = String::new();
        let protocol = match self.protocol {
            "native" => "native protocol",
            "http" => "HTTP",
            _ => "RaftNode calls in-process",
        };
        let setup = match (self.storage, self.network) {
            (Some(storage), Some(network)) => format!(
                " ({} log, {} network{})",
                match storage {
                    Storage::Rocksdb => "RocksDB",
                    Storage::Memory => "in-memory",
                },
                match network {
                    Network::Tcp => "TCP",
                    Network::Memory => "in-memory",
                },
                match self.state_machine {
                    Some(StateMachineChoice::Count) => ", a counting state machine",
                    _ => "",
                }
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "raftor bench: {} cluster of {} nodes{setup}, {protocol}, {} clients, {}-byte values, {} keys, {:.0}% reads ({:?})",
            self.cluster,
            self.nodes,
            self.clients,
            self.value_bytes,
            self.keys,
            self.read_ratio * 100.0,
            self.consistency,
        );
        if let Some(machine) = &self.machine {
            let _ = writeln!(out, "{}", machine.describe());
        }
        let _ = writeln!(
            out,
            "  requests    {} ok, {} failed in {:.2} s: {:.0} req/s",
            self.requests_ok, self.requests_failed, self.seconds, self.requests_per_sec
        );
        for (kind, count) in &self.failures {
            let _ = writeln!(out, "  failed      {count} × {kind}");
        }
        match (&self.latency, &self.write_latency, &self.read_latency) {
            (Some(all), Some(writes), Some(reads)) => {
                let _ = writeln!(out, "  latency     {}", all.line());
                let _ = writeln!(out, "    writes    {}", writes.line());
                let _ = writeln!(out, "    reads     {}", reads.line());
            }
            (Some(all), _, _) => {
                let _ = writeln!(out, "  latency     {}", all.line());
            }
            _ => {}
        }
        if let Some(disk) = &self.disk_during_load {
            let _ = writeln!(out, "{}", disk.describe());
        }
        let followers = followers(&self.per_node).count();
        let _ = writeln!(
            out,
            "  replicated  {:.0} entries/s, {:.2} MB/s to {followers} followers (leader: {})",
            self.replicated_entries_per_sec,
            self.replicated_mb_per_sec,
            self.leader
                .map_or("none".to_string(), |id| format!("node {id}")),
        );
        for node in &self.per_node {
            let memory = node.resident_memory_bytes.map_or("?".to_string(), |bytes| {
                format!("{:.1} MiB", bytes as f64 / 1048576.0)
            });
            match (&node.id, &node.role) {
                (Some(id), Some(role)) => {
                    let _ = writeln!(
                        out,
                        "  node {id:<6} {:<9} {:>8.0} entries/s {:>7.2} MB/s appended, RSS {memory} ({})",
                        role, node.entries_per_sec, node.mb_per_sec, node.endpoint
                    );
                }
                _ => {
                    let _ = writeln!(out, "  {:<11} did not answer", node.endpoint);
                }
            }
        }
        if self.cluster == "embedded" {
            let _ = writeln!(
                out,
                "  (embedded: the three nodes share one process, so RSS is the whole process's)"
            );
        }
        out
    }
}

/// The progress bar on stderr (hidden when stderr is not a terminal).
pub(super) struct Progress {
    bar: ProgressBar,
    /// The task that redraws the bar every 100 ms.
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(super) fn start(args: &BenchArgs, done: impl Fn() -> u64 + 'static) -> Progress {
        // The bar counts requests when there is a budget of them, else tenths of a second.
        let (length, by_requests) = match args.requests {
            Some(requests) => (requests, true),
            None => ((args.duration * 10.0).round() as u64, false),
        };
        let bar = ProgressBar::new(length);
        let template = "{spinner} [{elapsed_precise}] [{bar:40}] {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let ticking = bar.clone();
        let ticker = actix::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let finished = done();
                let elapsed = started.elapsed().as_secs_f64();
                ticking.set_position(if by_requests {
                    finished
                } else {
                    (elapsed * 10.0) as u64
                });
                ticking.set_message(format!(
                    "{finished} requests, {:.0} req/s",
                    finished as f64 / elapsed.max(0.001)
                ));
            }
        });
        Progress { bar, ticker }
    }

    pub(super) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
