//! Starting one key-value node for real: RocksDB storage, the TCP endpoint (Raft and the native
//! client protocol), the actors, the key-value service and, when asked, the HTTP API.

use crate::config::NodeConfig;
use crate::http::{self, HttpState};
use crate::kv::KvStateMachine;
use crate::metrics::ServiceMetrics;
use crate::raft_node::{Raft, RaftNode};
use crate::service::{KvService, ServiceConfig};
use actix::Actor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Raft(#[from] crate::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
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

/// Open (or create) the node's data directory and start it. Must run inside an actix System.
pub async fn start_node(config: &NodeConfig) -> Result<RunningNode, ServeError> {
    let metrics = Arc::new(ServiceMetrics::new(config.id.0));
    let observer = metrics.clone();
    let service_config = ServiceConfig {
        max_value_bytes: config.max_value_bytes,
        ..ServiceConfig::default()
    };
    let handle = Raft::builder()
        .id(config.id)
        .peers(config.peers.clone())
        .listen(config.listen)
        .data_dir(&config.data_dir)
        .cluster_id(config.cluster_id.clone())
        .tick(Duration::from_millis(config.tick_ms))
        .election_timeout(
            Duration::from_millis(config.election_min_ms),
            Duration::from_millis(config.election_max_ms),
        )
        .heartbeat(Duration::from_millis(config.heartbeat_ms))
        .pre_vote(config.pre_vote)
        .snapshots(config.snapshots)
        .request_timeout(service_config.request_timeout)
        .on_log_write(move |elapsed, entries| observer.observe_log_write(elapsed, entries))
        .start(KvStateMachine::new())
        .await?;
    let raft_addr = handle.local_addr().unwrap_or(config.listen);

    let service = KvService::new(
        handle.clone(),
        config.peers.clone(),
        service_config,
        metrics.clone(),
    )
    .start();
    handle.set_client_handler(KvService::client_handler(service.clone()));

    let (http, http_addr) = match config.http {
        Some(addr) => {
            let state = HttpState {
                service: service.clone(),
                node: handle.clone(),
                metrics,
                max_value_bytes: config.max_value_bytes,
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
    Ok(RunningNode {
        handle,
        service,
        raft_addr,
        http_addr,
        http,
    })
}
