//! `raftor cluster`: several nodes in one process, on loopback TCP with RocksDB, for trying raftor
//! out and for benchmarks. They keep the deployment timing defaults (a benchmark saturates the
//! machine they share); tests that want quick elections on a quiet machine use [`quick_timing`].

use crate::config::{NodeConfig, DEFAULT_ELECTION_MIN_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_TICK_MS};
use crate::server::{start_node, RunningNode, ServeError};
use raftor_core::{NodeId, Role, Term};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The configuration of node `id` of a local cluster of `nodes` on ports `base_port + id`.
pub fn local_node_config(
    id: u64,
    nodes: u64,
    base_port: u16,
    http_base_port: Option<u16>,
    data_dir: &Path,
) -> NodeConfig {
    let peers: BTreeMap<NodeId, String> = (1..=nodes)
        .map(|i| (NodeId(i), format!("127.0.0.1:{}", u64::from(base_port) + i)))
        .collect();
    NodeConfig {
        id: NodeId(id),
        listen: format!("127.0.0.1:{}", u64::from(base_port) + id)
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        http: http_base_port.map(|base| {
            std::net::SocketAddr::from(([127, 0, 0, 1], (u64::from(base) + id) as u16))
        }),
        http_workers: 0,
        max_value_bytes: 1024 * 1024,
        max_pending_write_bytes: crate::config::DEFAULT_MAX_PENDING_WRITE_BYTES,
        max_client_answer_bytes: raftor_actors::network::answer_budget::DEFAULT_NODE_ANSWER_BYTES,
        peers,
        join: None,
        data_dir: data_dir.join(format!("node-{id}")),
        cluster_id: "raftor-local".to_string(),
        tick_ms: DEFAULT_TICK_MS,
        election_min_ms: DEFAULT_ELECTION_MIN_MS,
        election_max_ms: 2 * DEFAULT_ELECTION_MIN_MS,
        heartbeat_ms: DEFAULT_HEARTBEAT_MS,
        pre_vote: true,
        promote_lag: 64,
        spare_sync_hold_us: crate::config::DEFAULT_SPARE_SYNC_HOLD_US,
        log_format: crate::config::LogFormat::Text,
        snapshots: raftor::SnapshotPolicy::default(),
        security: crate::config::Security::default(),
    }
}

/// The paper's timing (elections after 150–300 ms, heartbeats every 50 ms): quick elections and
/// failovers, for tests on a quiet machine. Under saturating load it costs a live leader its
/// term (the defaults are why not).
pub fn quick_timing(config: &mut NodeConfig) {
    config.election_min_ms = 150;
    config.election_max_ms = 300;
    config.heartbeat_ms = 50;
}

/// Turns on TLS (the node's certificate from `certs`, as `raftor certs` writes them) and token
/// authentication (`certs`/tokens.toml) in `config`.
pub fn secure(config: &mut NodeConfig, certs: &Path) {
    config.security.tls = Some(crate::certs::node_tls_files(certs, config.id.0));
    config.security.auth_tokens = Some(crate::certs::tokens_path(certs));
}

/// Makes (or keeps) a local cluster's credentials in `certs`: a CA, certificates for nodes
/// 1..=`nodes`, and a token of each role.
pub fn local_credentials(certs: &Path, nodes: u64) -> Result<(), crate::certs::CertsError> {
    crate::certs::make(&crate::certs::CertsPlan {
        out: certs.to_owned(),
        nodes: (1..=nodes).map(|id| (id, Vec::new())).collect(),
        days: 365,
        tokens: true,
    })
    .map(|_| ())
}

/// Start every node of a local cluster.
pub async fn start_local_cluster(
    nodes: u64,
    base_port: u16,
    http_base_port: Option<u16>,
    data_dir: &Path,
) -> Result<Vec<RunningNode>, ServeError> {
    start_local_cluster_with(nodes, base_port, http_base_port, data_dir, |_| {}).await
}

/// Start every node of a local cluster, each configuration adjusted by `adjust` first (for
/// example [`quick_timing`]).
pub async fn start_local_cluster_with(
    nodes: u64,
    base_port: u16,
    http_base_port: Option<u16>,
    data_dir: &Path,
    adjust: impl Fn(&mut NodeConfig),
) -> Result<Vec<RunningNode>, ServeError> {
    let mut running = Vec::new();
    for id in 1..=nodes {
        let mut config = local_node_config(id, nodes, base_port, http_base_port, data_dir);
        adjust(&mut config);
        match start_node(&config).await {
            Ok(node) => running.push(node),
            Err(error) => {
                for node in &running {
                    node.shutdown().await;
                }
                return Err(error);
            }
        }
    }
    Ok(running)
}

/// The leader and its term, as the nodes report them (the leader of the highest term).
pub async fn current_leader(nodes: &[RunningNode]) -> Option<(NodeId, Term)> {
    let mut best = None;
    for node in nodes {
        if let Ok(status) = node.handle.status().await {
            if status.role == Role::Leader && best.is_none_or(|(_, term)| status.term > term) {
                best = Some((status.id, status.term));
            }
        }
    }
    best
}

/// Log every change of leader until the future is dropped.
pub async fn watch_leader(nodes: &[RunningNode]) {
    let mut last = None;
    loop {
        let leader = current_leader(nodes).await;
        if leader != last {
            match leader {
                Some((id, term)) => {
                    tracing::info!(leader = %id, term = %term, "node {id} leads term {term}")
                }
                None => tracing::info!("no leader"),
            }
            last = leader;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
