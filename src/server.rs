//! Starting one key-value node for real: RocksDB storage, the TCP endpoint (Raft and the native
//! client protocol), the actors, the key-value service and, when asked, the HTTP API.

use crate::config::NodeConfig;
use crate::http::{self, HttpState};
use crate::kv::KvStateMachine;
use crate::metrics::ServiceMetrics;
use crate::service::{KvService, ServiceConfig};
use actix::Actor;
use raftor_actors::network::tcp::{self, EndpointConfig, NetworkError, TcpEndpoint};
use raftor_actors::{NodeHandle, NodeOptions, PendingNode, StartError};
use raftor_storage::{RocksStorage, StorageError, StoreIdentity};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node with its endpoint, service and HTTP server.
pub struct RunningNode {
    pub handle: Arc<NodeHandle>,
    pub endpoint: actix::Addr<TcpEndpoint>,
    pub service: actix::Addr<KvService>,
    /// The address the Raft listener actually bound (useful with port 0).
    pub raft_addr: SocketAddr,
    /// The address the HTTP API bound, if it was asked for.
    pub http_addr: Option<SocketAddr>,
    http: Option<actix_web::dev::ServerHandle>,
}

impl RunningNode {
    /// Stop accepting requests, stop the node (what is durable stays) and close its listeners.
    pub async fn shutdown(&self) {
        if let Some(http) = &self.http {
            http.stop(true).await;
        }
        self.handle.shutdown();
        let _ = self.endpoint.send(tcp::Shutdown).await;
    }
}

/// Open (or create) the node's data directory and start it. Must run inside an actix System.
pub async fn start_node(config: &NodeConfig) -> Result<RunningNode, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let identity = StoreIdentity {
        cluster_id: config.cluster_id.clone(),
        node_id: config.id.0,
    };
    let storage = RocksStorage::open(&config.data_dir, &identity)?;
    let pending = PendingNode::new();
    let peers = config
        .peers
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, address)| (*id, address.clone()))
        .collect();
    let endpoint_config =
        EndpointConfig::new(config.id, config.cluster_id.clone(), config.listen, peers);
    let client_slot = endpoint_config.client_handler.clone();
    let (endpoint, raft_addr) = tcp::start(endpoint_config, pending.inbound()).await?;

    let metrics = Arc::new(ServiceMetrics::new(config.id.0));
    let mut options = NodeOptions::new(config.raft_config());
    options.tick = Duration::from_millis(config.tick_ms);
    let observer = metrics.clone();
    options.log_write_observer = Some(Arc::new(move |elapsed, entries| {
        observer.observe_log_write(elapsed, entries)
    }));
    let handle = Arc::new(pending.start(
        options,
        storage,
        Box::new(KvStateMachine::new()),
        endpoint.clone().recipient(),
    )?);

    let service_config = ServiceConfig {
        max_value_bytes: config.max_value_bytes,
        ..ServiceConfig::default()
    };
    let service = KvService::new(
        handle.clone(),
        config.peers.clone(),
        service_config,
        metrics.clone(),
    )
    .start();
    client_slot.set(KvService::client_handler(service.clone()));

    let (http, http_addr) = match config.http {
        Some(addr) => {
            let state = HttpState {
                service: service.clone(),
                node: handle.clone(),
                metrics,
                max_value_bytes: config.max_value_bytes,
            };
            let (server, bound) = http::serve(state, addr, config.http_workers)
                .map_err(|source| ServeError::Http { addr, source })?;
            let server_handle = server.handle();
            actix::spawn(async move {
                if let Err(error) = server.await {
                    tracing::error!(%error, "HTTP server failed");
                }
            });
            (Some(server_handle), Some(bound))
        }
        None => (None, None),
    };
    Ok(RunningNode {
        handle,
        endpoint,
        service,
        raft_addr,
        http_addr,
        http,
    })
}
