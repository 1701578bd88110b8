//! Starting one key-value node for real: RocksDB storage, the TCP endpoint (Raft and the native
//! client protocol), the actors, the key-value service and, when asked, the HTTP API; and, for a
//! node started with `--join`, asking the cluster to add it.

use crate::auth::{Access, TokenAuth};
use crate::config::{JoinConfig, NodeConfig};
use crate::http::{self, HttpState};
use crate::metrics::ServiceMetrics;
use crate::service::{AnswerLimits, KvService, ServiceConfig};
use crate::store::KvStateMachine;
use crate::watch::{WatchHub, WatchLimits};
use actix::Actor;
use raftor::{RaftNode, RaftNodeBuilder};
use raftor_actors::network::answer_budget::SharedRoom;
use raftor_actors::network::tls::NodeTls;
use raftor_core::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] raftor::StartError),
    #[error("TLS: {0}")]
    Tls(#[from] raftor_actors::network::tls::TlsError),
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokensError),
    /// Members prove themselves to each other by their certificates (a follower forwarding a
    /// client's request to the leader, `/v1/cluster` asking the members): tokens need TLS.
    #[error("--auth-tokens needs TLS (--tls-ca, --tls-cert, --tls-key): the members prove themselves to each other with their certificates, and tokens must not travel in clear text")]
    TokensWithoutTls,
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A node that joined and became a voter, started again with an empty data directory: the
    /// votes it gave and the entries it acknowledged are gone. The rules would rejoin it (as an
    /// embedded node is), but `serve --join` refuses it, as etcd does: an empty directory where a
    /// voter's should be is as likely a wrong `--data-dir` (README, "A node that lost its data").
    #[error("node {id} is a voter of the cluster, but its data directory {data_dir} is empty: it lost the votes it gave and the entries it acknowledged, and would vote again as if it never had. Remove it (`raftor members remove {id}`) and start it with a new id, or start it on its old data directory")]
    LostVoterData { id: NodeId, data_dir: String },
}

/// A running node with its service and HTTP server.
pub struct RunningNode {
    /// The node, through the public API.
    pub handle: RaftNode<KvStateMachine>,
    pub service: actix::Addr<KvService>,
    /// The address the Raft listener actually bound (useful with port 0).
    pub raft_addr: SocketAddr,
    /// The address the HTTP API bound, if it was asked for.
    pub http_addr: Option<SocketAddr>,
    http: Option<http::HttpServerHandle>,
}

impl RunningNode {
    /// Stop accepting requests, stop the node (what is durable stays) and close its listeners.
    pub async fn shutdown(&self) {
        if let Some(http) = &self.http {
            http.stop().await;
        }
        self.handle.shutdown().await;
    }
}

/// Where a node keeps its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLog {
    /// RocksDB in the configuration's data directory, synced: what `raftor serve` does.
    DataDir,
    /// In memory, gone when the process ends: for benchmarks that leave the disk out
    /// (`raftor bench --storage memory`). Snapshots still go to `<data dir>/snapshots`.
    Memory,
}

impl NodeLog {
    /// `builder` with its log kept where this says, `dir` being the node's data directory.
    pub fn configure(self, builder: RaftNodeBuilder, dir: &std::path::Path) -> RaftNodeBuilder {
        match self {
            NodeLog::DataDir => builder.data_dir(dir),
            NodeLog::Memory => builder
                .storage(raftor::storage::MemStorage::new())
                .snapshot_dir(dir.join("snapshots")),
        }
    }
}

/// Open (or create) the node's data directory and start it. Must run inside an actix System.
pub async fn start_node(config: &NodeConfig) -> Result<RunningNode, ServeError> {
    start_node_with_log(config, NodeLog::DataDir).await
}

/// [`start_node`] with the log kept where `log` says.
pub async fn start_node_with_log(
    config: &NodeConfig,
    log: NodeLog,
) -> Result<RunningNode, ServeError> {
    // Client connections are capped at a quarter of the limit in force (see
    // `default_client_connection_limit`): raise it first, as far as this process may.
    let open_files = raftor_actors::network::client::raise_open_files_limit();
    tracing::debug!(?open_files, "open files limit");
    let tls = match &config.security.tls {
        Some(files) => Some(NodeTls::load(config.id, files)?),
        None => None,
    };
    let access = match &config.security.auth_tokens {
        Some(_) if tls.is_none() => return Err(ServeError::TokensWithoutTls),
        Some(path) => {
            let tokens = Arc::new(TokenAuth::load(path)?);
            actix::spawn(reload_tokens(tokens.clone()));
            Access::with_tokens(tokens)
        }
        None => Access::open(),
    };
    warn_if_insecure(config, &access);
    let metrics = Arc::new(ServiceMetrics::new(config.id.0).with_tls(tls.clone()));
    let observer = metrics.clone();
    let service_config = ServiceConfig {
        max_value_bytes: config.max_value_bytes,
        max_pending_write_bytes: config.max_pending_write_bytes,
        tls: tls.clone(),
        ..ServiceConfig::default()
    };
    let hub = WatchHub::new(WatchLimits::default());
    let mut builder = match &config.join {
        Some(join) => RaftNodeBuilder::new().join(contacts(config, join, tls.as_ref()).await?),
        None => RaftNodeBuilder::new().peers(config.peers.clone()),
    };
    if let Some(tls) = &tls {
        builder = builder.tls(tls.clone());
    }
    let handle = log
        .configure(builder, &config.data_dir)
        .id(config.id)
        .listen(config.listen)
        .cluster_id(config.cluster_id.clone())
        .tick(Duration::from_millis(config.tick_ms))
        .election_timeout(
            Duration::from_millis(config.election_min_ms),
            Duration::from_millis(config.election_max_ms),
        )
        .heartbeat(Duration::from_millis(config.heartbeat_ms))
        .pre_vote(config.pre_vote)
        .promote_lag(config.promote_lag)
        .spare_sync_hold(Duration::from_micros(config.spare_sync_hold_us))
        .snapshots(config.snapshots)
        .request_timeout(service_config.request_timeout)
        .max_client_answer_bytes(config.max_client_answer_bytes)
        .on_log_write(move |elapsed, entries| observer.observe_log_write(elapsed, entries))
        .start(KvStateMachine::with_hub(hub.clone()))
        .await?;
    let raft_addr = handle.local_addr().unwrap_or(config.listen);

    let answer_limits = AnswerLimits {
        max_value_bytes: service_config.max_value_bytes,
        max_key_bytes: service_config.max_key_bytes,
    };
    let service = KvService::new(
        handle.clone(),
        config.peers.clone(),
        service_config,
        metrics.clone(),
        hub.clone(),
    )
    .start();
    handle.set_client_sessions(KvService::client_sessions(
        service.clone(),
        access.clone(),
        answer_limits,
    ));

    let (http, http_addr) = match config.http {
        Some(addr) => {
            let state = HttpState {
                service: service.clone(),
                node: handle.clone(),
                metrics,
                limits: answer_limits,
                access,
                tls: tls.clone(),
                cluster_id: config.cluster_id.clone(),
                hub,
                arriving: Arc::new(SharedRoom::new(config.max_client_answer_bytes)),
                answers: Arc::new(SharedRoom::new(config.max_client_answer_bytes)),
            };
            let (server, bound) = match http::serve(state, addr, config.http_workers) {
                Ok(served) => served,
                Err(source) => {
                    handle.shutdown().await;
                    return Err(ServeError::Http { addr, source });
                }
            };
            (Some(server), Some(bound))
        }
        None => (None, None),
    };
    if let Some(join) = &config.join {
        if let Some(url) = &join.url {
            let client = http_client(tls.as_ref());
            let token = config.security.token.clone();
            actix::spawn(join_cluster(
                handle.clone(),
                url.clone(),
                join.advertise.clone(),
                client,
                token,
            ));
        }
    }
    Ok(RunningNode {
        handle,
        service,
        raft_addr,
        http_addr,
        http,
    })
}

/// The members a joining node can reach before it holds the configuration: those configured, or
/// at its first start (an empty data directory) those the member at `join.url` lists, asked until
/// it answers. A node restarting on its data has the configuration in its log and needs none.
/// A node with an empty data directory that the cluster lists as a voter lost its data: it is
/// refused ([`ServeError::LostVoterData`]) before it can vote again in a term it voted in. (A
/// node joins as a learner and is promoted only once its log has caught up, so a voter's data
/// directory is never empty unless it was lost.)
async fn contacts(
    config: &NodeConfig,
    join: &JoinConfig,
    tls: Option<&NodeTls>,
) -> Result<Vec<(NodeId, String)>, ServeError> {
    // Empty but for a volume's `lost+found` (or a first start that died before its store began).
    // A directory that cannot be listed is refused here, with the reason.
    let fresh = raftor_storage::data_dir::holds_no_store(&config.data_dir)
        .map_err(raftor::StartError::from)?;
    let (Some(url), true, true) = (&join.url, join.members.is_empty(), fresh) else {
        return Ok(join.members.clone().into_iter().collect());
    };
    let client = http_client(tls);
    let url = format!("{url}/v1/members");
    let mut pause = Duration::from_millis(100);
    loop {
        let answer = async {
            let mut request = client.get(&url);
            if let Some(token) = &config.security.token {
                request = request.bearer_auth(token);
            }
            let mut response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if matches!(status, 401 | 403) {
                return Err(format!(
                    "HTTP {status}: the cluster asks for a token with the read role or above (give --token or RAFTOR_TOKEN: joining needs admin)"
                ));
            }
            if !response.status().is_success() {
                return Err(format!("HTTP {status}"));
            }
            response
                .json::<crate::protocol::MembersReport>()
                .await
                .map_err(|e| e.to_string())
        };
        match answer.await {
            Ok(report) if !report.addresses.is_empty() => {
                let id = config.id.0;
                if report.voters.contains(&id) || report.voters_outgoing.contains(&id) {
                    return Err(ServeError::LostVoterData {
                        id: config.id,
                        data_dir: config.data_dir.display().to_string(),
                    });
                }
                return Ok(report
                    .addresses
                    .into_iter()
                    .map(|(id, address)| (NodeId(id), address))
                    .collect());
            }
            Ok(_) => {
                tracing::warn!(node = %config.id, %url, "the node asked knows no members yet; asking again")
            }
            Err(error) => {
                tracing::warn!(node = %config.id, %url, %error, "cannot learn the cluster's members yet; asking again")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// `raftor serve --join`: unless the node's own log already makes it a member (it joined before
/// and restarted), ask the member at `url` to add it (at Raft address `advertise`) as a learner
/// that the leader promotes once caught up, until the cluster accepts (or refuses for good, or
/// the node stops).
pub async fn join_cluster(
    node: RaftNode<KvStateMachine>,
    url: String,
    advertise: String,
    client: awc::Client,
    token: Option<String>,
) {
    let id = node.id();
    match node.membership().await {
        Err(_) => return,
        Ok(membership) if membership.conf.contains(id) => {
            tracing::info!(
                node = %id,
                role = crate::service::member_role(&membership.conf, id),
                "already a member of the cluster (its configuration is in this node's log): not joining again"
            );
            return;
        }
        Ok(membership) if !membership.conf.members().is_empty() => {
            tracing::error!(
                node = %id,
                "this node was removed from the cluster; it does not join again. Start a node with a new id and an empty data directory instead"
            );
            return;
        }
        Ok(_) => {}
    }
    let url = format!("{url}/v1/members");
    let body = serde_json::json!({ "id": id.0, "raft_address": advertise, "promote": true });
    let mut pause = Duration::from_millis(100);
    tracing::info!(node = %id, %url, raft_address = %advertise, "asking the cluster to add this node");
    loop {
        if node.status().await.is_err() {
            return; // stopped
        }
        let mut request = client.post(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        match request.send_json(&body).await {
            Ok(mut response) => {
                let status = response.status();
                let text = response
                    .body()
                    .limit(1024 * 1024)
                    .await
                    .map(|body| String::from_utf8_lossy(&body).into_owned())
                    .unwrap_or_default();
                if status.is_success() {
                    tracing::info!(node = %id, "joined the cluster as a learner; the leader promotes this node to voter once it has caught up");
                    return;
                }
                if status.is_client_error() && status.as_u16() != 409 {
                    if matches!(status.as_u16(), 401 | 403) {
                        tracing::error!(node = %id, "joining needs an admin token: give --token (or RAFTOR_TOKEN)");
                    }
                    tracing::error!(node = %id, status = status.as_u16(), answer = %text, "the cluster refused to add this node; not asking again");
                    return;
                }
                tracing::warn!(node = %id, status = status.as_u16(), answer = %text, "the cluster did not add this node yet; asking again");
            }
            Err(error) => {
                tracing::warn!(node = %id, %url, %error, "cannot ask the cluster to add this node yet; asking again");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// An HTTP client for asking a member's API (to join): HTTPS trusting the cluster's CA when the
/// cluster runs TLS.
fn http_client(tls: Option<&NodeTls>) -> awc::Client {
    let builder = awc::Client::builder().timeout(Duration::from_secs(15));
    match tls {
        None => builder.finish(),
        Some(tls) => builder
            .connector(awc::Connector::new().rustls_0_23(tls.https_client_config()))
            .finish(),
    }
}

/// Reads the tokens file again whenever it changes, for as long as the node runs (the task ends
/// with the node's System).
async fn reload_tokens(tokens: Arc<TokenAuth>) {
    loop {
        tokio::time::sleep(crate::auth::RELOAD_PERIOD).await;
        match tokens.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => tracing::info!(
                tokens = tokens.len(),
                "tokens file changed: tokens reloaded"
            ),
            Err(error) => {
                tracing::error!(%error, "cannot reload the tokens file; the tokens loaded before stay in force")
            }
        }
    }
}

/// Says at start what a node without TLS or tokens exposes (as etcd does).
fn warn_if_insecure(config: &NodeConfig, access: &Access) {
    if config.security.tls.is_none() {
        tracing::warn!(
            node = %config.id,
            listen = %config.listen,
            http = ?config.http,
            "TLS is off: peer and client traffic is unencrypted and unauthenticated, and anyone who can reach these ports can read and change data or take over the cluster (give --tls-ca, --tls-cert and --tls-key; `raftor certs` makes them)"
        );
    }
    if !access.is_enforced() {
        tracing::warn!(
            node = %config.id,
            "client authentication is off: every client may read, write and change the membership (give --auth-tokens; `raftor certs` makes a tokens file)"
        );
    }
}
