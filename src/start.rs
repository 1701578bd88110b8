//! Starting a node: the log store, the snapshot store, the link to the peers, the actors.

use crate::builder::StorageChoice;
use crate::error::StartError;
use crate::link::Link;
use crate::own_thread::start_on_own_thread;
use crate::panic_guard::{Guarded, StopOnPanic};
use crate::raft_node::{Inner, RaftNode};
use crate::state_machine::StateMachine;
use crate::RaftNodeBuilder;
use actix::Recipient;
use raftor_actors::network::tcp::{self, EndpointConfig, UpdatePeers};
use raftor_actors::snapshot::SnapshotOptions;
use raftor_actors::transport::{Inbound, Outbound};
use raftor_actors::{NetworkControl, NodeOptions, PendingNode};
use raftor_core::NodeId;
use raftor_storage::{LogStorage, RocksStorage, SnapshotStore, StoreIdentity};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

impl RaftNodeBuilder {
    /// Recover the log, start the node's actors and the TCP endpoint, and return the handle.
    ///
    /// Inside a running actix `System` (`#[actix::main]`, `#[actix_web::main]`, an actix-web
    /// server's thread...) the actors run on the current thread's arbiter, and the log store on a
    /// thread of its own. Anywhere else — a plain tokio runtime (`#[tokio::main]`) — the node
    /// starts a dedicated thread running its own actix `System`, which
    /// [`RaftNode::shutdown`] stops. (The test is `actix::System::try_current()`; a thread that
    /// once ran a System still has one.) The handle works from any thread and tokio runtime
    /// either way.
    pub async fn start<M: StateMachine + Send>(
        self,
        machine: M,
    ) -> Result<RaftNode<M>, StartError> {
        if actix::System::try_current().is_some() {
            self.start_here(machine).await
        } else {
            start_on_own_thread(self, machine).await
        }
    }

    /// Start the node on the current thread's actix System.
    pub(crate) async fn start_here<M: StateMachine>(
        mut self,
        machine: M,
    ) -> Result<RaftNode<M>, StartError> {
        let raft = self.raft_config()?;
        let id = raft.id;
        let snapshot_dir = match (&self.snapshot_dir, &self.storage) {
            (Some(dir), _) => Some(dir.clone()),
            (None, StorageChoice::Dir(dir)) => Some(dir.join("snapshots")),
            (None, _) => None,
        };
        let storage = self.open_storage(id)?;
        let pending = PendingNode::new();
        let (transport, peer_addresses, link) = self.connect(id, pending.inbound()).await?;

        let mut options = NodeOptions::new(raft);
        options.tick = self.tick;
        if let Some(hold) = self.spare_sync_hold {
            options.spare_sync_hold = hold;
        }
        options.peer_addresses = peer_addresses;
        if let Some(seed) = self.seed {
            options.seed = seed;
        }
        // On the paused clock every actor must stay on one thread.
        options.dedicated_log_thread = self.log_thread.unwrap_or(self.network.is_none());
        options.background_snapshots = self.snapshot_thread.unwrap_or(self.network.is_none());
        options.log_write_observer = self.log_write_observer.clone();
        let mut snapshot_store = None;
        if let Some(dir) = snapshot_dir {
            let store = match SnapshotStore::open(&dir) {
                Ok(store) => Arc::new(store),
                Err(error) => {
                    link.close(id).await;
                    return Err(error.into());
                }
            };
            snapshot_store = Some(store.clone());
            options.snapshots = Some(SnapshotOptions::new(store, self.snapshots));
        }
        let stop_on_panic = StopOnPanic::default();
        let machine = Guarded {
            machine,
            node: stop_on_panic.clone(),
        };
        let handle = match pending.start(options, storage, Box::new(machine), transport) {
            Ok(handle) => Arc::new(handle),
            Err(error) => {
                link.close(id).await;
                return Err(error.into());
            }
        };
        let _ = stop_on_panic.set(Arc::downgrade(&handle));
        Ok(RaftNode {
            inner: Arc::new(Inner {
                id,
                node: handle,
                link,
                bootstrap: if self.join { self.contacts } else { self.peers },
                election_timeout: self.election_max.max(self.tick),
                request_timeout: self.request_timeout,
                snapshots: snapshot_store,
                closing: AtomicBool::new(false),
                own_system: Mutex::new(None),
                machine: PhantomData,
            }),
        })
    }

    /// The log store chosen: the application's own, or RocksDB in the data directory.
    fn open_storage(&mut self, id: NodeId) -> Result<Box<dyn LogStorage>, StartError> {
        match std::mem::replace(&mut self.storage, StorageChoice::None) {
            StorageChoice::None => Err(StartError::Config(
                "no storage: give a data directory or a log store".into(),
            )),
            StorageChoice::Custom(storage) => Ok(storage),
            StorageChoice::Dir(dir) => {
                create_data_dir(&dir)?;
                crate::restore::check_restore_finished(&dir)?;
                let identity = StoreIdentity {
                    cluster_id: self.cluster_id.clone(),
                    node_id: id.0,
                };
                Ok(Box::new(RocksStorage::open(&dir, &identity)?))
            }
        }
    }

    /// The link to the peers: the in-memory network given, or a TCP endpoint listening for
    /// peers and clients. Returns where the node's messages go and, for TCP, where it learns
    /// the members' addresses.
    async fn connect(
        &self,
        id: NodeId,
        inbound: Recipient<Inbound>,
    ) -> Result<(Recipient<Outbound>, Option<Recipient<UpdatePeers>>, Link), StartError> {
        if let Some(network) = &self.network {
            network.do_send(NetworkControl::Register(id, inbound));
            return Ok((
                network.clone().recipient(),
                None,
                Link::Memory {
                    network: network.clone(),
                },
            ));
        }
        let listen = match self.listen {
            Some(listen) => listen,
            None => self.peers[&id].parse().map_err(|_| {
                StartError::Config(format!(
                    "no listen address, and this node's peer address {:?} is not an IP address and port",
                    self.peers[&id]
                ))
            })?,
        };
        let known = if self.join {
            &self.contacts
        } else {
            &self.peers
        };
        let others = known
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, address)| (*peer, address.clone()))
            .collect();
        let mut config = EndpointConfig::new(id, self.cluster_id.clone(), listen, others);
        config.tls = self.tls.clone();
        config.max_unwritten_answer_bytes = self.max_client_answer_bytes;
        let clients = config.client_handler.clone();
        let (endpoint, local_addr) = tcp::start(config, inbound).await?;
        Ok((
            endpoint.clone().recipient(),
            Some(endpoint.clone().recipient()),
            Link::Tcp {
                endpoint,
                local_addr,
                clients,
            },
        ))
    }
}

fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    raftor_storage::durable::create_dir_durable(dir).map_err(StartError::data_dir(dir))
}
