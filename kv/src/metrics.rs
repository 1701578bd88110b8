//! Prometheus metrics of one node, rendered by `GET /metrics`.
//!
//! Counters and histograms are fed as things happen; gauges (term, role, indexes, replication
//! lag) are read from the node's status at scrape time, so they are never stale.

use crate::protocol::KvResponse;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use raftor_actors::network::tls::NodeTls;
use raftor_actors::NodeStatus;
use raftor_core::Role;
use std::time::Duration;

/// Latency buckets from 100 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct ServiceMetrics {
    registry: Registry,
    writes: IntCounterVec,
    write_seconds: Histogram,
    log_write_seconds: Histogram,
    log_entries_written: IntCounter,
    log_writes: IntGaugeVec,
    entry_cache_misses: IntGauge,
    term: IntGauge,
    role: IntGaugeVec,
    commit_index: IntGauge,
    applied_index: IntGauge,
    last_log_index: IntGauge,
    elections: IntGauge,
    lag: IntGaugeVec,
    inflight_bytes: IntGaugeVec,
    budget_bytes: IntGaugeVec,
    members: IntGaugeVec,
    membership_index: IntGauge,
    log_start_index: IntGauge,
    watchers: IntGauge,
    /// With TLS: the gauge of the node's certificate's expiry, and the credentials it reads.
    certificate_not_after: Option<(IntGauge, NodeTls)>,
}

impl ServiceMetrics {
    pub fn new(node_id: u64) -> ServiceMetrics {
        let registry = Registry::new_custom(
            Some("raftor".into()),
            Some([("node".to_string(), node_id.to_string())].into()),
        )
        .unwrap_or_default();
        let writes = IntCounterVec::new(
            Opts::new("proposals_total", "Client writes proposed, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let write_seconds = Histogram::with_opts(
            HistogramOpts::new("write_seconds", "Client write latency: received to applied")
                .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let log_write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "log_append_fsync_seconds",
                "Log store write latency: append of a batch and its fsync (one synced RocksDB write)",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let log_entries_written = IntCounter::new(
            "log_entries_written_total",
            "Entries appended to the durable log",
        )
        .expect("valid metric");
        let log_writes = IntGaugeVec::new(
            Opts::new(
                "log_writes",
                "Log writes since start, by thread (node: synced on the node's own thread, small batches while lightly loaded; log_store: handed to the log store's thread, where the writes that queue during a sync share the next one)",
            ),
            &["thread"],
        )
        .expect("valid metric");
        let entry_cache_misses = IntGauge::new(
            "entry_cache_misses",
            "Reads of log entries since start (the leader's sends, the applier's) that the entry cache could not serve and the log store did",
        )
        .expect("valid metric");
        let term = IntGauge::new("term", "Current term").expect("valid metric");
        let role = IntGaugeVec::new(
            Opts::new("role", "1 for the role this node plays"),
            &["role"],
        )
        .expect("valid metric");
        let commit_index = IntGauge::new("commit_index", "Commit index").expect("valid metric");
        let applied_index =
            IntGauge::new("applied_index", "Last applied index").expect("valid metric");
        let last_log_index =
            IntGauge::new("last_log_index", "Last log index").expect("valid metric");
        let elections = IntGauge::new(
            "elections_started",
            "Elections this node started since it started",
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "replication_lag_entries",
                "On the leader: entries a peer (voter or learner) is behind the leader's log",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let inflight_bytes = IntGaugeVec::new(
            Opts::new(
                "replication_inflight_bytes",
                "On the leader: payload bytes sent to a peer and not yet acknowledged",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let budget_bytes = IntGaugeVec::new(
            Opts::new(
                "replication_budget_bytes",
                "On the leader: the byte budget of what may be in flight to a peer (it adapts to how fast the peer acknowledges)",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let members = IntGaugeVec::new(
            Opts::new(
                "members",
                "Members of the configuration in force on this node, by role (voter, learner; while joint also outgoing_voter)",
            ),
            &["role"],
        )
        .expect("valid metric");
        let log_start_index = IntGauge::new(
            "log_start_index",
            "Index of the last entry compacted into a snapshot: the log starts after it (a snapshot taken or installed moves it)",
        )
        .expect("valid metric");
        let membership_index = IntGauge::new(
            "membership_index",
            "Log index of the configuration in force on this node (0: the bootstrap one)",
        )
        .expect("valid metric");
        let watchers = IntGauge::new(
            "watchers",
            "Watchers following live changes on this node (HTTP streams, native polls under way)",
        )
        .expect("valid metric");
        let metrics = ServiceMetrics {
            watchers,
            certificate_not_after: None,
            registry,
            writes,
            write_seconds,
            log_write_seconds,
            log_entries_written,
            log_writes,
            entry_cache_misses,
            term,
            role,
            commit_index,
            applied_index,
            last_log_index,
            elections,
            lag,
            inflight_bytes,
            budget_bytes,
            members,
            membership_index,
            log_start_index,
        };
        for collector in [
            Box::new(metrics.writes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.write_seconds.clone()),
            Box::new(metrics.log_write_seconds.clone()),
            Box::new(metrics.log_entries_written.clone()),
            Box::new(metrics.log_writes.clone()),
            Box::new(metrics.entry_cache_misses.clone()),
            Box::new(metrics.term.clone()),
            Box::new(metrics.role.clone()),
            Box::new(metrics.commit_index.clone()),
            Box::new(metrics.applied_index.clone()),
            Box::new(metrics.last_log_index.clone()),
            Box::new(metrics.elections.clone()),
            Box::new(metrics.lag.clone()),
            Box::new(metrics.inflight_bytes.clone()),
            Box::new(metrics.budget_bytes.clone()),
            Box::new(metrics.members.clone()),
            Box::new(metrics.membership_index.clone()),
            Box::new(metrics.log_start_index.clone()),
            Box::new(metrics.watchers.clone()),
        ] {
            // Names are distinct constants: registration cannot collide.
            let _ = metrics.registry.register(collector);
        }
        metrics
    }

    /// Record a client write's outcome and latency.
    pub fn observe_write(&self, response: &KvResponse, elapsed: Duration) {
        let outcome = match response {
            KvResponse::Written { .. } => "committed",
            KvResponse::Error(error) => match error.kind {
                crate::protocol::ErrorKind::Unknown => "unknown",
                crate::protocol::ErrorKind::Unavailable => "unavailable",
                crate::protocol::ErrorKind::Overloaded => "overloaded",
                _ => "rejected",
            },
            _ => "other",
        };
        self.writes.with_label_values(&[outcome]).inc();
        self.write_seconds.observe(elapsed.as_secs_f64());
    }

    /// Client writes answered since the node started (every outcome).
    pub fn writes_answered(&self) -> u64 {
        self.write_seconds.get_sample_count()
    }

    /// The sum of those writes' latencies, in seconds.
    pub fn write_seconds_sum(&self) -> f64 {
        self.write_seconds.get_sample_sum()
    }

    /// Record one synced write of the log store.
    pub fn observe_log_write(&self, elapsed: Duration, entries: usize) {
        self.log_write_seconds.observe(elapsed.as_secs_f64());
        self.log_entries_written.inc_by(entries as u64);
    }

    /// With TLS: `raftor_tls_certificate_expiry_timestamp_seconds`, the last second the node's
    /// certificate in force is valid (its `notAfter`, or its CA certificate's if that comes
    /// first; it follows reloads), for alerts such as
    /// `raftor_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400`.
    pub fn with_tls(mut self, tls: Option<NodeTls>) -> ServiceMetrics {
        if let Some(tls) = tls {
            let gauge = IntGauge::new(
                "tls_certificate_expiry_timestamp_seconds",
                "The last second this node's TLS certificate, and its CA's, are valid (Unix time; follows reloads)",
            )
            .expect("valid metric");
            // A distinct constant name: registration cannot collide.
            let _ = self.registry.register(Box::new(gauge.clone()));
            self.certificate_not_after = Some((gauge, tls));
        }
        self
    }

    /// How many watchers the node serves now (set before each render).
    pub fn set_watchers(&self, count: usize) {
        self.watchers.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition, with gauges taken from `status`.
    pub fn render(&self, status: Option<&NodeStatus>) -> String {
        if let Some((gauge, tls)) = &self.certificate_not_after {
            let not_after = tls
                .certificate_not_after()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            gauge.set(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX));
        }
        if let Some(status) = status {
            self.term.set(status.term.0 as i64);
            for role in [
                Role::Follower,
                Role::PreCandidate,
                Role::Candidate,
                Role::Leader,
            ] {
                self.role
                    .with_label_values(&[role.as_str()])
                    .set(i64::from(status.role == role));
            }
            self.commit_index.set(status.commit_index.0 as i64);
            self.applied_index.set(status.applied_index.0 as i64);
            self.last_log_index.set(status.last_log_id.index.0 as i64);
            self.elections.set(status.elections_started as i64);
            self.log_writes
                .with_label_values(&["node"])
                .set(status.log_writes_inline as i64);
            self.log_writes
                .with_label_values(&["log_store"])
                .set(status.log_writes_handed_off as i64);
            self.entry_cache_misses
                .set(status.entry_cache_misses as i64);
            let conf = &status.membership.conf;
            for (role, count) in [
                ("voter", conf.voters.len()),
                ("learner", conf.learners.len()),
                ("outgoing_voter", conf.voters_outgoing.len()),
            ] {
                self.members.with_label_values(&[role]).set(count as i64);
            }
            self.membership_index.set(status.membership_index.0 as i64);
            self.log_start_index.set(status.log_start.index.0 as i64);
            self.lag.reset();
            self.inflight_bytes.reset();
            self.budget_bytes.reset();
            if status.role == Role::Leader {
                for peer in conf.members().iter().filter(|p| **p != status.id) {
                    let matched = status.matched.get(peer).map_or(0, |m| m.0);
                    let lag = status.last_log_id.index.0.saturating_sub(matched);
                    let label = peer.to_string();
                    self.lag
                        .with_label_values(&[label.as_str()])
                        .set(lag as i64);
                    if let Some(flow) = status.flow.get(peer) {
                        let gauge = |bytes: usize| i64::try_from(bytes).unwrap_or(i64::MAX);
                        self.inflight_bytes
                            .with_label_values(&[label.as_str()])
                            .set(gauge(flow.inflight_bytes));
                        self.budget_bytes
                            .with_label_values(&[label.as_str()])
                            .set(gauge(flow.budget_bytes));
                    }
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// This process's resident set size in bytes, from `VmRSS` in `/proc/self/status` (Linux);
/// `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
