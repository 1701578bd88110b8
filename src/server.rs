//! Starting one key-value node for real: RocksDB storage, the TCP endpoint, the actors.

use crate::config::NodeConfig;
use crate::kv::KvStateMachine;
use raftor_actors::network::tcp::{self, EndpointConfig, NetworkError, TcpEndpoint};
use raftor_actors::{NodeHandle, NodeOptions, PendingNode, StartError};
use raftor_storage::{RocksStorage, StorageError, StoreIdentity};
use std::net::SocketAddr;
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
}

/// A running node with its endpoint.
pub struct RunningNode {
    pub handle: NodeHandle,
    pub endpoint: actix::Addr<TcpEndpoint>,
    /// The address the Raft listener actually bound (useful with port 0).
    pub raft_addr: SocketAddr,
}

impl RunningNode {
    /// Stop the node and close its listener.
    pub fn shutdown(&self) {
        self.handle.shutdown();
        self.endpoint.do_send(raftor_actors::network::tcp::Shutdown);
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
    let (endpoint, raft_addr) = tcp::start(endpoint_config, pending.inbound()).await?;
    let mut options = NodeOptions::new(config.raft_config());
    options.tick = Duration::from_millis(config.tick_ms);
    let handle = pending.start(
        options,
        storage,
        Box::new(KvStateMachine::new()),
        endpoint.clone().recipient(),
    )?;
    Ok(RunningNode {
        handle,
        endpoint,
        raft_addr,
    })
}
