//! How a node reaches its peers: a TCP endpoint (which also serves the native client protocol)
//! or, for tests, an in-memory network.

use actix::Addr;
use raftor_actors::network::client::ClientHandlerSlot;
use raftor_actors::network::tcp::{self, TcpEndpoint};
use raftor_actors::{MemoryNetwork, NetworkControl};
use raftor_core::NodeId;
use std::net::SocketAddr;

// What answers the native client protocol's requests (see `RaftNode::set_client_handler`); it runs
// on the endpoint's thread.
pub use raftor_actors::network::client::{ClientHandler, PreparedAnswer};

/// How the node reaches its peers.
pub(crate) enum Link {
    Tcp {
        endpoint: Addr<TcpEndpoint>,
        local_addr: SocketAddr,
        clients: ClientHandlerSlot,
    },
    Memory {
        network: Addr<MemoryNetwork>,
    },
}

impl Link {
    /// Stop taking messages and connections (the TCP port is free once this returns).
    pub(crate) async fn close(&self, id: NodeId) {
        match self {
            Link::Tcp { endpoint, .. } => {
                let _ = endpoint.send(tcp::CloseEndpoint).await;
            }
            Link::Memory { network } => network.do_send(NetworkControl::Unregister(id)),
        }
    }
}
