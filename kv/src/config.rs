//! `raftor serve` configuration: flags, `RAFTOR_*` environment variables and a TOML file, resolved
//! into one checked [`NodeConfig`]. Flags and variables win over the file; the file over defaults.

use clap::Args;
use raftor_actors::network::answer_budget::DEFAULT_NODE_ANSWER_BYTES;
use raftor_core::NodeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The flags of `raftor serve` (each also read from a `RAFTOR_*` environment variable).
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// This node's id: a positive integer, one of the ids in --peers (or, with --join, an id the
    /// cluster has never used).
    #[arg(long, env = "RAFTOR_ID")]
    pub id: Option<u64>,
    /// Take the id from this host's name instead: its number after the last '-', plus one (a
    /// Kubernetes StatefulSet's pod raftor-0 is node 1, raftor-1 node 2, ...).
    #[arg(long, env = "RAFTOR_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,
    /// Address to listen on for Raft traffic from peers, e.g. 0.0.0.0:7001.
    #[arg(long, env = "RAFTOR_LISTEN")]
    pub listen: Option<String>,
    /// The founding members of a new cluster, this node included: id=host:port,... (host may be
    /// a DNS name). With --join too, a node whose id is not among them joins instead (one pod
    /// template for founders and later members, as a Kubernetes StatefulSet has).
    #[arg(long, env = "RAFTOR_PEERS")]
    pub peers: Option<String>,
    /// Join a running cluster instead: start with no members and ask the member whose HTTP API
    /// is at this host:port to add this node as a learner, promoted once caught up (retried until
    /// accepted). A node that restarts on its data directory is already a member and does not ask
    /// again. With --peers, only a node whose id is not among them joins.
    #[arg(long, env = "RAFTOR_JOIN")]
    pub join: Option<String>,
    /// With --join: the Raft address the other members reach this node at (default: --listen,
    /// which must then not be 0.0.0.0 or `[::]`).
    #[arg(long, env = "RAFTOR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address for the HTTP API, e.g. 0.0.0.0:8080 (off when not given).
    #[arg(long, env = "RAFTOR_HTTP")]
    pub http: Option<String>,
    /// Threads of their own serving HTTP (default 0: HTTP is served on the node's thread, so a
    /// request reaches the node without crossing threads; give N >= 1 on a machine with cores to
    /// spare).
    #[arg(long, env = "RAFTOR_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// The largest value accepted, in bytes (default 1048576); larger is refused with 413.
    #[arg(long, env = "RAFTOR_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Back-pressure: the payload bytes of writes this node may have proposed and not yet
    /// answered (default 134217728, 128 MiB); a write past it is answered at once with 503 and
    /// `Retry-After` ("overloaded") instead of waiting in a queue until it times out.
    #[arg(long, env = "RAFTOR_MAX_PENDING_WRITE_BYTES")]
    pub max_pending_write_bytes: Option<usize>,
    /// The most bytes this node's native client sessions together may hold in requests being
    /// answered and answers not yet written (default 1073741824, 1 GiB; each session also holds at
    /// most 64 MiB); past it sessions wait, and one whose client has taken no answer for 5 s is
    /// closed. As much again bounds the native requests still arriving, as much the HTTP
    /// request bodies being read, and as much the HTTP answers that may carry values, from
    /// before they are built until they are written (an HTTP/1 connection that has written none
    /// of its for 5 s while others wait is closed).
    #[arg(long, env = "RAFTOR_MAX_CLIENT_ANSWER_BYTES")]
    pub max_client_answer_bytes: Option<usize>,
    /// Directory for this node's RocksDB data.
    #[arg(long, env = "RAFTOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of the cluster; a node refuses peers and data directories of another cluster.
    #[arg(long, env = "RAFTOR_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Length of one tick of the Raft clock in milliseconds (default 10).
    #[arg(long, env = "RAFTOR_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Minimum election timeout in milliseconds (default 1000).
    #[arg(long, env = "RAFTOR_ELECTION_MIN_MS")]
    pub election_min_ms: Option<u64>,
    /// Maximum election timeout in milliseconds (default twice the minimum: 2000).
    #[arg(long, env = "RAFTOR_ELECTION_MAX_MS")]
    pub election_max_ms: Option<u64>,
    /// Heartbeat interval in milliseconds (default 100).
    #[arg(long, env = "RAFTOR_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Disable pre-vote (on by default).
    #[arg(long, env = "RAFTOR_NO_PRE_VOTE")]
    pub no_pre_vote: bool,
    /// The leader promotes a node that joined (`--join`, or `members add --promote`) once its
    /// log is within this many entries of the leader's (default 64).
    #[arg(long, env = "RAFTOR_PROMOTE_LAG")]
    pub promote_lag: Option<u64>,
    /// How long, in microseconds, a follower that the leader's commits do not wait for (the
    /// third of three voters, say) holds a small log write so that the writes arriving meanwhile
    /// share one sync (default 1000; 0: never held; below the heartbeat). Nodes sharing a disk
    /// then make fewer syncs.
    #[arg(long, env = "RAFTOR_SPARE_SYNC_HOLD_US")]
    pub spare_sync_hold_us: Option<u64>,
    /// Take a snapshot and compact the log every this many applied entries (default 100000;
    /// 0: not by count).
    #[arg(long, env = "RAFTOR_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// ...or every this many bytes of applied commands, and no sooner than twice the last
    /// snapshot's size (default 536870912; 0: not by size).
    #[arg(long, env = "RAFTOR_SNAPSHOT_BYTES")]
    pub snapshot_bytes: Option<u64>,
    /// Entries kept in the log behind the newest snapshot (default 10000).
    #[arg(long, env = "RAFTOR_SNAPSHOT_TRAILING")]
    pub snapshot_trailing: Option<u64>,
    /// Log lines as text (the default) or as JSON objects, one per line, for log shippers.
    #[arg(long, env = "RAFTOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The cluster's CA certificate (PEM): with --tls-cert and --tls-key, turns TLS on for peers
    /// (mutual: every member's certificate must come from this CA and name it), for native
    /// clients and for HTTP (HTTPS). `raftor certs` makes a development set.
    #[arg(long, env = "RAFTOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by --tls-ca and naming node-<id>.raftor.
    #[arg(long, env = "RAFTOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "RAFTOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Clients must present a token from this file (SHA-256 digests with roles; `raftor certs`
    /// and `raftor token create` write it). Read again when it changes, so tokens rotate without
    /// a restart. Without it every client may do anything.
    #[arg(long, env = "RAFTOR_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// With --join: the (admin) token this node presents when it asks the cluster to add it.
    #[arg(long, env = "RAFTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A TOML file with any of the settings above (snake_case keys, e.g. data_dir = "/data").
    #[arg(long, env = "RAFTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

/// How a node writes its log lines (to stderr).
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`tracing`'s default format).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

/// The same settings, as a TOML file gives them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<String>,
    http: Option<String>,
    http_workers: Option<usize>,
    max_value_bytes: Option<usize>,
    max_pending_write_bytes: Option<usize>,
    max_client_answer_bytes: Option<usize>,
    peers: Option<String>,
    join: Option<String>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    cluster_id: Option<String>,
    tick_ms: Option<u64>,
    election_min_ms: Option<u64>,
    election_max_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    pre_vote: Option<bool>,
    promote_lag: Option<u64>,
    spare_sync_hold_us: Option<u64>,
    snapshot_entries: Option<u64>,
    snapshot_bytes: Option<u64>,
    snapshot_trailing: Option<u64>,
    log_format: Option<LogFormat>,
    id_from_hostname: Option<bool>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth_tokens: Option<PathBuf>,
    token: Option<String>,
}

/// The node id a host name gives (`--id-from-hostname`): its number after the last '-', plus
/// one, as a Kubernetes StatefulSet names its pods from 0.
pub fn id_from_hostname(hostname: &str) -> Result<u64, ConfigError> {
    hostname
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<u64>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| ConfigError::HostnameId(hostname.to_owned()))
}

/// This host's name: `HOSTNAME` (set in containers), else the kernel's.
fn hostname() -> Result<String, ConfigError> {
    if let Ok(name) = std::env::var("HOSTNAME") {
        if !name.is_empty() {
            return Ok(name);
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .map_err(|e| ConfigError::Hostname(e.to_string()))
}

/// The default length of a tick of the Raft clock.
pub const DEFAULT_TICK_MS: u64 = 10;
/// The default heartbeat interval: etcd's. Ten heartbeats fit in the shortest election timeout,
/// so a follower times out only after ten in a row were lost or late.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// How long a spare follower holds a small log write, in microseconds (`serve --spare-sync-hold-us`).
pub const DEFAULT_SPARE_SYNC_HOLD_US: u64 = 1000;
/// The default minimum election timeout; each timeout is drawn from one to two minimums (etcd:
/// 1 s, drawn from 1–2 s). The paper's 150–300 ms assumes a quiet network; on a loaded
/// machine a heartbeat or its answer waits behind megabytes of appends, a follower's sync of a
/// large batch, or a busy thread, for longer than that, and a live leader lost its term to load
/// alone (docs/design.md, "Timing"; BENCHMARKS.md, issue 23). The price: a failover takes 1–2 s
/// after a leader dies, and a lease lasts up to 1 s.
pub const DEFAULT_ELECTION_MIN_MS: u64 = 1000;

/// The default back-pressure bound: 128 MiB of writes in flight. Three synced nodes on one machine
/// replicate 60–75 MB/s of large values (BENCHMARKS.md), so that drains in about two seconds, under
/// half the 5 s request timeout; and the heaviest load of `scripts/bench-leadership` (64
/// connections of 1 MiB writes) puts at most 64 MiB in flight, so a load the cluster keeps up with
/// is never refused.
pub const DEFAULT_MAX_PENDING_WRITE_BYTES: usize = 128 * 1024 * 1024;

/// The smallest `--max-client-answer-bytes` (one default-sized value and then some).
pub const MIN_CLIENT_ANSWER_BYTES: usize = 1024 * 1024;

/// A node's resolved, checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Where the HTTP API listens, if anywhere.
    pub http: Option<SocketAddr>,
    pub http_workers: usize,
    pub max_value_bytes: usize,
    /// Back-pressure: the payload bytes of writes in flight on this node before it answers
    /// "overloaded" (see `ServiceConfig::max_pending_write_bytes`).
    pub max_pending_write_bytes: usize,
    /// What the node's native client sessions may hold together (`--max-client-answer-bytes`).
    pub max_client_answer_bytes: usize,
    /// The founding members' Raft addresses, this node included; empty for a node that joins.
    pub peers: BTreeMap<NodeId, String>,
    /// For a node that joins a running cluster (then `peers` is empty).
    pub join: Option<JoinConfig>,
    pub data_dir: PathBuf,
    pub cluster_id: String,
    pub tick_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub heartbeat_ms: u64,
    pub pre_vote: bool,
    /// How close to the leader's log a learner marked for promotion must be to be promoted.
    pub promote_lag: u64,
    /// How long a spare follower holds a small log write, in microseconds (0: never).
    pub spare_sync_hold_us: u64,
    /// How the node writes its log lines.
    pub log_format: LogFormat,
    /// When to snapshot and compact the log.
    pub snapshots: raftor::SnapshotPolicy,
    /// TLS and client authentication (both off by default).
    pub security: Security,
}

/// A node's TLS and client authentication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// The CA, this node's certificate and its key: TLS for peers (mutual), native clients and
    /// HTTP. `None`: plain TCP and HTTP, with a warning at start.
    pub tls: Option<raftor_actors::network::tls::TlsFiles>,
    /// The tokens file clients' tokens are checked against. `None`: no authentication.
    pub auth_tokens: Option<PathBuf>,
    /// The token this node presents when it asks to join.
    pub token: Option<String>,
}

/// How a node joins a running cluster (`raftor serve --join`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinConfig {
    /// The base URL of a member's HTTP API (`http://10.0.0.1:8080`) to ask to add this node, and
    /// to learn the members' Raft addresses from; `None`: someone else adds it.
    pub url: Option<String>,
    /// The Raft address the members reach this node at.
    pub advertise: String,
    /// The members' Raft addresses, when known beforehand (else asked from `url` at the first
    /// start).
    pub members: BTreeMap<NodeId, String>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("missing setting: --{0} (or RAFTOR_{1}, or `{0}` in the config file)")]
    Missing(&'static str, &'static str),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {message}")]
    ParseFile { path: String, message: String },
    #[error("bad --listen address '{0}': expected host:port with an IP, e.g. 0.0.0.0:7001")]
    Listen(String),
    #[error("bad --http address '{0}': expected host:port with an IP, e.g. 0.0.0.0:8080")]
    Http(String),
    #[error("bad limit: {0}")]
    Limit(String),
    #[error("bad --peers entry '{0}': expected id=host:port, e.g. 1=10.0.0.1:7001")]
    Peer(String),
    #[error("node id {0} appears twice in --peers")]
    DuplicatePeer(u64),
    #[error("node id must be a positive integer")]
    ZeroId,
    #[error("--id-from-hostname: host name '{0}' does not end in -N (a StatefulSet ordinal)")]
    HostnameId(String),
    #[error("--id-from-hostname: cannot read this host's name: {0}")]
    Hostname(String),
    #[error("node id {id} is not in --peers (members: {members})")]
    NotAMember { id: u64, members: String },
    #[error("bad timing: {0}")]
    Timing(String),
    #[error(
        "bad --join address '{0}': expected a member's HTTP address, host:port or http://host:port"
    )]
    Join(String),
    #[error("bad --advertise address '{0}': {1}")]
    Advertise(String, String),
    #[error("TLS needs all of --tls-ca, --tls-cert and --tls-key; missing: {0}")]
    TlsIncomplete(String),
}

/// Whether `text` is `host:port` with a non-empty host and a port number.
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

impl ServeArgs {
    /// Resolve flags (and environment) over the config file over defaults, and check the result.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let security = self.security(&file)?;
        let tls_on = security.tls.is_some();
        let id = match self.id.or(file.id) {
            Some(id) => id,
            None if self.id_from_hostname || file.id_from_hostname == Some(true) => {
                id_from_hostname(&hostname()?)?
            }
            None => return Err(ConfigError::Missing("id", "ID")),
        };
        if id == 0 {
            return Err(ConfigError::ZeroId);
        }
        let listen_text = self
            .listen
            .clone()
            .or(file.listen)
            .ok_or(ConfigError::Missing("listen", "LISTEN"))?;
        let listen = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let peers_text = self.peers.clone().or(file.peers);
        let join_text = self.join.clone().or(file.join);
        // Both given: a founder (its id among the peers) starts with them, any other node joins.
        let founders = peers_text.as_deref().map(parse_peers).transpose()?;
        let founder = founders
            .as_ref()
            .is_some_and(|founders| founders.contains_key(&NodeId(id)));
        let (peers, join) = match (founders, join_text) {
            (None, None) => return Err(ConfigError::Missing("peers", "PEERS")),
            (Some(founders), None) => (founders, None),
            (Some(founders), Some(_)) if founder => (founders, None),
            (_, Some(join)) => {
                let (scheme, host_port) = match join.split_once("://") {
                    Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
                    Some(_) => return Err(ConfigError::Join(join)),
                    None => (None, join.as_str()),
                };
                let host_port = host_port.trim_end_matches('/');
                // A member of a cluster running TLS serves HTTPS.
                let scheme = scheme.unwrap_or(if tls_on { "https" } else { "http" });
                if !is_host_port(host_port) {
                    return Err(ConfigError::Join(join));
                }
                let advertise = match self.advertise.clone().or(file.advertise) {
                    Some(advertise) if is_host_port(&advertise) => advertise,
                    Some(advertise) => {
                        return Err(ConfigError::Advertise(
                            advertise,
                            "expected host:port, e.g. node4:7001".into(),
                        ))
                    }
                    None => {
                        let listen: SocketAddr = listen;
                        if listen.ip().is_unspecified() || listen.port() == 0 {
                            return Err(ConfigError::Advertise(
                                listen_text.clone(),
                                "--listen is not an address other nodes can reach; give --advertise host:port".into(),
                            ));
                        }
                        listen_text.clone()
                    }
                };
                let join = JoinConfig {
                    url: Some(format!("{scheme}://{host_port}")),
                    advertise,
                    members: BTreeMap::new(),
                };
                (BTreeMap::new(), Some(join))
            }
        };
        if join.is_none() && !peers.contains_key(&NodeId(id)) {
            return Err(ConfigError::NotAMember {
                id,
                members: peers
                    .keys()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or(ConfigError::Missing("data-dir", "DATA_DIR"))?;
        let http = match self.http.clone().or(file.http) {
            Some(text) => Some(text.parse().map_err(|_| ConfigError::Http(text.clone()))?),
            None => None,
        };
        let max_value_bytes = self
            .max_value_bytes
            .or(file.max_value_bytes)
            .unwrap_or(1024 * 1024);
        if max_value_bytes == 0 || max_value_bytes > 32 * 1024 * 1024 {
            return Err(ConfigError::Limit(format!(
                "--max-value-bytes {max_value_bytes}: must be between 1 and 33554432 (32 MiB)"
            )));
        }
        let max_pending_write_bytes = self
            .max_pending_write_bytes
            .or(file.max_pending_write_bytes)
            .unwrap_or(DEFAULT_MAX_PENDING_WRITE_BYTES);
        if max_pending_write_bytes == 0 {
            return Err(ConfigError::Limit(
                "--max-pending-write-bytes 0: must be at least 1 (one write is always admitted)"
                    .into(),
            ));
        }
        let max_client_answer_bytes = self
            .max_client_answer_bytes
            .or(file.max_client_answer_bytes)
            .unwrap_or(DEFAULT_NODE_ANSWER_BYTES);
        if max_client_answer_bytes < MIN_CLIENT_ANSWER_BYTES {
            return Err(ConfigError::Limit(format!(
                "--max-client-answer-bytes {max_client_answer_bytes}: must be at least \
                 {MIN_CLIENT_ANSWER_BYTES} (1 MiB)"
            )));
        }
        let election_min_ms = self
            .election_min_ms
            .or(file.election_min_ms)
            .unwrap_or(DEFAULT_ELECTION_MIN_MS);
        let config = NodeConfig {
            id: NodeId(id),
            listen,
            http,
            http_workers: self.http_workers.or(file.http_workers).unwrap_or(0).min(64),
            max_value_bytes,
            max_pending_write_bytes,
            max_client_answer_bytes,
            peers,
            join,
            data_dir,
            cluster_id: self
                .cluster_id
                .clone()
                .or(file.cluster_id)
                .unwrap_or_else(|| "raftor".to_string()),
            tick_ms: self.tick_ms.or(file.tick_ms).unwrap_or(DEFAULT_TICK_MS),
            election_min_ms,
            election_max_ms: self
                .election_max_ms
                .or(file.election_max_ms)
                .unwrap_or_else(|| {
                    // Drawn from one to two minimums, as etcd does, unless given.
                    election_min_ms.saturating_mul(2)
                }),
            heartbeat_ms: self
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .unwrap_or(DEFAULT_HEARTBEAT_MS),
            pre_vote: !self.no_pre_vote && file.pre_vote.unwrap_or(true),
            promote_lag: self.promote_lag.or(file.promote_lag).unwrap_or(64),
            spare_sync_hold_us: self
                .spare_sync_hold_us
                .or(file.spare_sync_hold_us)
                .unwrap_or(DEFAULT_SPARE_SYNC_HOLD_US),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            snapshots: {
                let defaults = raftor::SnapshotPolicy::default();
                raftor::SnapshotPolicy {
                    every_entries: self
                        .snapshot_entries
                        .or(file.snapshot_entries)
                        .unwrap_or(defaults.every_entries),
                    every_bytes: self
                        .snapshot_bytes
                        .or(file.snapshot_bytes)
                        .unwrap_or(defaults.every_bytes),
                    trailing_entries: self
                        .snapshot_trailing
                        .or(file.snapshot_trailing)
                        .unwrap_or(defaults.trailing_entries),
                    ..defaults
                }
            },
            security,
        };
        config.check_timing()?;
        Ok(config)
    }
}

impl ServeArgs {
    /// The TLS and authentication settings: TLS's three files all given, or none.
    fn security(&self, file: &FileConfig) -> Result<Security, ConfigError> {
        let ca = self.tls_ca.clone().or(file.tls_ca.clone());
        let cert = self.tls_cert.clone().or(file.tls_cert.clone());
        let key = self.tls_key.clone().or(file.tls_key.clone());
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                Some(raftor_actors::network::tls::TlsFiles { ca, cert, key })
            }
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("--tls-ca", ca.is_none()),
                    ("--tls-cert", cert.is_none()),
                    ("--tls-key", key.is_none()),
                ]
                .into_iter()
                .filter_map(|(flag, missing)| missing.then_some(flag))
                .collect();
                return Err(ConfigError::TlsIncomplete(missing.join(", ")));
            }
        };
        Ok(Security {
            tls,
            auth_tokens: self.auth_tokens.clone().or(file.auth_tokens.clone()),
            token: self.token.clone().or(file.token.clone()),
        })
    }
}

impl NodeConfig {
    fn check_timing(&self) -> Result<(), ConfigError> {
        if self.tick_ms == 0 {
            return Err(ConfigError::Timing("tick must be at least 1 ms".into()));
        }
        if self.heartbeat_ms < self.tick_ms
            || self.election_min_ms <= self.heartbeat_ms
            || self.election_max_ms <= self.election_min_ms
        {
            return Err(ConfigError::Timing(format!(
                "need tick ({}) <= heartbeat ({}) < election min ({}) < election max ({}), in ms",
                self.tick_ms, self.heartbeat_ms, self.election_min_ms, self.election_max_ms
            )));
        }
        if self.spare_sync_hold_us >= self.heartbeat_ms.saturating_mul(1000) {
            return Err(ConfigError::Timing(format!(
                "the spare sync hold ({} µs) must be shorter than the heartbeat ({} ms)",
                self.spare_sync_hold_us, self.heartbeat_ms
            )));
        }
        Ok(())
    }

    /// The rules' configuration, with timeouts converted to ticks.
    pub fn raft_config(&self) -> raftor_core::RaftConfig {
        let ticks = |ms: u64| u32::try_from(ms.div_ceil(self.tick_ms)).unwrap_or(u32::MAX);
        let mut raft = raftor_core::RaftConfig::new(self.id, self.peers.keys().copied());
        raft.election_ticks_min = ticks(self.election_min_ms);
        raft.election_ticks_max = ticks(self.election_max_ms).max(raft.election_ticks_min + 1);
        raft.heartbeat_ticks = ticks(self.heartbeat_ms).max(1);
        raft.pre_vote = self.pre_vote;
        raft.promote_lag = self.promote_lag;
        raft
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

/// Parses `id=host:port,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::Peer(item.to_string()))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ConfigError::Peer(item.to_string()))?;
        let address = address.trim();
        let valid_address = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if id == 0 || !valid_address {
            return Err(ConfigError::Peer(item.to_string()));
        }
        if peers.insert(NodeId(id), address.to_string()).is_some() {
            return Err(ConfigError::DuplicatePeer(id));
        }
    }
    if peers.is_empty() {
        return Err(ConfigError::Peer(text.to_string()));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(id: u64, peers: &str) -> ServeArgs {
        ServeArgs {
            id: Some(id),
            listen: Some("127.0.0.1:7001".into()),
            peers: Some(peers.into()),
            data_dir: Some("/tmp/x".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn resolves_defaults_and_ticks() {
        let config = args(1, "1=127.0.0.1:7001,2=node2:7002,3=node3:7003")
            .resolve()
            .expect("valid");
        assert_eq!(config.peers.len(), 3);
        assert_eq!(
            config.max_pending_write_bytes,
            DEFAULT_MAX_PENDING_WRITE_BYTES
        );
        assert_eq!(config.max_client_answer_bytes, DEFAULT_NODE_ANSWER_BYTES);
        assert_eq!(config.spare_sync_hold_us, DEFAULT_SPARE_SYNC_HOLD_US);
        assert_eq!(config.peers[&NodeId(2)], "node2:7002");
        let raft = config.raft_config();
        assert_eq!(
            (
                raft.election_ticks_min,
                raft.election_ticks_max,
                raft.heartbeat_ticks
            ),
            (100, 200, 10),
            "1–2 s elections and 100 ms heartbeats in 10 ms ticks"
        );
        assert!(raft.pre_vote);
        // Given only the minimum, the maximum is twice it.
        let config = ServeArgs {
            election_min_ms: Some(3000),
            ..args(1, "1=a:1")
        }
        .resolve()
        .expect("valid");
        assert_eq!(
            (config.election_min_ms, config.election_max_ms),
            (3000, 6000)
        );
    }

    #[test]
    fn clear_errors_for_bad_input() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (args(4, "1=a:1,2=b:2,3=c:3"), "not in --peers"),
            (args(1, "1=a:1,1=b:2"), "appears twice"),
            (args(1, "1=a"), "bad --peers entry"),
            (args(1, "x=a:1"), "bad --peers entry"),
            (args(0, "1=a:1"), "positive"),
            (
                ServeArgs {
                    listen: Some("nonsense".into()),
                    ..args(1, "1=a:1")
                },
                "bad --listen",
            ),
            (
                ServeArgs {
                    heartbeat_ms: Some(1000),
                    ..args(1, "1=a:1")
                },
                "bad timing",
            ),
            (
                ServeArgs {
                    spare_sync_hold_us: Some(100_000),
                    ..args(1, "1=a:1")
                },
                "spare sync hold (100000 µs) must be shorter than the heartbeat (100 ms)",
            ),
            (
                ServeArgs {
                    id: None,
                    ..args(1, "1=a:1")
                },
                "missing setting: --id",
            ),
            (
                ServeArgs {
                    max_pending_write_bytes: Some(0),
                    ..args(1, "1=a:1")
                },
                "--max-pending-write-bytes 0",
            ),
            (
                ServeArgs {
                    max_client_answer_bytes: Some(4096),
                    ..args(1, "1=a:1")
                },
                "--max-client-answer-bytes 4096: must be at least 1048576",
            ),
        ];
        for (args, expected) in cases {
            let error = args.resolve().expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn the_id_can_come_from_a_statefulset_host_name() {
        assert_eq!(id_from_hostname("raftor-0").unwrap(), 1);
        assert_eq!(id_from_hostname("my-raftor-12").unwrap(), 13);
        for bad in ["raftor", "raftor-", "raftor-x", "-", ""] {
            let error = id_from_hostname(bad).expect_err(bad).to_string();
            assert!(error.contains("does not end in -N"), "{bad}: {error}");
        }
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        use clap::Parser;
        let both = Serve::try_parse_from(["serve", "--id", "1", "--id-from-hostname"]);
        assert!(
            both.is_err(),
            "--id and --id-from-hostname exclude each other"
        );
        let resolved = Serve::try_parse_from(["serve", "--id-from-hostname"])
            .expect("parses")
            .args;
        assert!(resolved.id_from_hostname);
    }

    #[test]
    fn join_instead_of_peers() {
        let join = |join: &str, listen: &str, advertise: Option<&str>| ServeArgs {
            id: Some(4),
            listen: Some(listen.into()),
            join: Some(join.into()),
            advertise: advertise.map(str::to_owned),
            data_dir: Some("/tmp/x".into()),
            ..ServeArgs::default()
        };
        let config = join("10.0.0.1:8080", "10.0.0.4:7001", None)
            .resolve()
            .expect("valid");
        assert!(config.peers.is_empty());
        assert_eq!(
            config.join,
            Some(JoinConfig {
                url: Some("http://10.0.0.1:8080".into()),
                advertise: "10.0.0.4:7001".into(),
                members: BTreeMap::new(),
            })
        );
        let config = join("http://node1:8080/", "0.0.0.0:7001", Some("node4:7001"))
            .resolve()
            .expect("valid");
        assert_eq!(config.join.expect("join").advertise, "node4:7001");
        // With --peers too (one template for every pod): a founder starts with the peers, a
        // node whose id is not among them joins.
        let both = |id: u64| ServeArgs {
            id: Some(id),
            peers: Some("1=a:1,2=b:1,3=c:1".into()),
            ..join("node1:8080", "10.0.0.4:7001", None)
        };
        let founder = both(2).resolve().expect("a founder");
        assert_eq!((founder.peers.len(), founder.join), (3, None));
        let joiner = both(4).resolve().expect("a joiner");
        assert!(joiner.peers.is_empty());
        assert_eq!(joiner.join.expect("joins").advertise, "10.0.0.4:7001");
        for (args, expected) in [
            (join("node1:8080", "0.0.0.0:7001", None), "--advertise"),
            (join("node1", "10.0.0.4:7001", None), "bad --join"),
        ] {
            let error = args.resolve().expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn file_settings_apply_below_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftor.toml");
        std::fs::write(
            &path,
            "id = 2\nlisten = \"127.0.0.1:7002\"\npeers = \"1=a:1,2=b:2,3=c:3\"\ndata_dir = \"/data\"\nheartbeat_ms = 40\npromote_lag = 500\nspare_sync_hold_us = 2500\n",
        )
        .expect("write");
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid file");
        assert_eq!(from_file.id, NodeId(2));
        assert_eq!(from_file.heartbeat_ms, 40);
        assert_eq!(from_file.raft_config().promote_lag, 500);
        assert_eq!(from_file.spare_sync_hold_us, 2500);
        let overridden = ServeArgs {
            config: Some(path.clone()),
            id: Some(3),
            promote_lag: Some(7),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid");
        assert_eq!(overridden.id, NodeId(3));
        assert_eq!(overridden.promote_lag, 7);
        assert_eq!(
            overridden.spare_sync_hold_us, 2500,
            "the file's, not overridden"
        );

        std::fs::write(&path, "idd = 2\n").expect("write");
        let error = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .expect_err("unknown key");
        assert!(error.to_string().contains("unknown field"), "{error}");
    }
}
