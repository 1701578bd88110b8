//! [`RaftNode`]: the typed handle to a running node ([`RaftNodeBuilder`](crate::RaftNodeBuilder)
//! configures and starts one). Membership changes and leadership transfer are in `membership.rs`.
//!
//! ```no_run
//! # use raftor::{LogIndex, StateMachine};
//! # #[derive(Default)] struct Counter(u64);
//! # impl StateMachine for Counter {
//! #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
//! #     type Snapshot = u64;
//! #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
//! #     fn query(&self, _: &()) -> u64 { self.0 }
//! #     fn snapshot(&self) -> u64 { self.0 }
//! #     fn restore(&mut self, total: u64) { self.0 = total }
//! # }
//! use raftor::{Consistency, NodeId, RaftNodeBuilder};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = RaftNodeBuilder::new()
//!     .id(NodeId(1))
//!     .peers([
//!         (NodeId(1), "10.0.0.1:7001"),
//!         (NodeId(2), "10.0.0.2:7001"),
//!         (NodeId(3), "10.0.0.3:7001"),
//!     ])
//!     .listen("0.0.0.0:7001".parse().unwrap())
//!     .data_dir("/var/lib/counter")
//!     .start(Counter::default())
//!     .await?;
//! match node.propose(5).await {
//!     Ok(total) => println!("total is now {total}"),
//!     Err(raftor::Error::NotLeader { leader }) => println!("ask node {leader:?}"),
//!     Err(error) => println!("failed: {error}"),
//! }
//! let total = node.read((), Consistency::Linearizable).await?;
//! node.shutdown().await;
//! # let _ = total; Ok(()) }
//! ```

use crate::error::Error;
use crate::link::{ClientHandler, Link};
use crate::own_thread::OwnSystem;
use crate::state_machine::{unframe, StateMachine, Unframed};
use crate::Consistency;
use bytes::Bytes;
use raftor_actors::network::tcp;
use raftor_actors::{Leadership, NodeHandle, NodeStatus, ProposeError, ReadError, StopCause};
use raftor_core::{Membership, NodeId, SnapshotMeta};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) struct Inner<M> {
    pub(crate) id: NodeId,
    pub(crate) node: Arc<NodeHandle>,
    pub(crate) link: Link,
    /// The peers the node was started with (for a node that joined, the members it was given).
    pub(crate) bootstrap: BTreeMap<NodeId, String>,
    /// The longest election timeout: a leadership transfer is given two of them.
    pub(crate) election_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// Where the node keeps its snapshots, if it keeps any.
    pub(crate) snapshots: Option<Arc<raftor_storage::SnapshotStore>>,
    pub(crate) closing: AtomicBool,
    pub(crate) own_system: Mutex<Option<OwnSystem>>,
    pub(crate) machine: PhantomData<fn() -> M>,
}

impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        // The last handle is gone without a shutdown: stop what can be stopped without waiting.
        if !self.closing.swap(true, Ordering::SeqCst) {
            if let Link::Tcp { endpoint, .. } = &self.link {
                endpoint.do_send(tcp::CloseEndpoint);
            }
            self.node.shutdown();
            if let Some(own) = lock(&self.own_system).take() {
                own.system.stop();
            }
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running Raft node with the application's state machine `M`: propose commands, read, watch
/// who leads, shut down. Cheap to clone (clones share the node); usable from any thread. The node
/// stops when [`RaftNode::shutdown`] is called, or when the last clone is dropped.
pub struct RaftNode<M: StateMachine> {
    pub(crate) inner: Arc<Inner<M>>,
}

impl<M: StateMachine> std::fmt::Debug for RaftNode<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.inner.id)
            .field("leadership", &*self.inner.node.leadership().borrow())
            .finish()
    }
}

impl<M: StateMachine> Clone for RaftNode<M> {
    fn clone(&self) -> Self {
        RaftNode {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    bincode::serialize(value)
        .map(Bytes::from)
        .map_err(|error| Error::Codec(error.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(answer: &[u8]) -> Result<T, Error> {
    unframe(answer).map_err(|error| match error {
        Unframed::Rejected(reason) => Error::BadCommand(reason),
        Unframed::Undecodable(reason) => Error::Codec(reason),
    })
}

impl<M: StateMachine> RaftNode<M> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the Raft listener bound (`None` on an in-memory network).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner.link {
            Link::Tcp { local_addr, .. } => Some(*local_addr),
            Link::Memory { .. } => None,
        }
    }

    pub(crate) fn check_running(&self) -> Result<(), Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            Err(Error::Shutdown { in_flight: false })
        } else {
            Ok(())
        }
    }

    /// Propose `command` on this node, which must be the leader. Resolves once the command is
    /// committed (durable on a majority) and applied here, with what [`StateMachine::apply`]
    /// answered. See [`Error`] for what each failure means for the command.
    ///
    /// The command is encoded when this is called, so the future holds its bytes, not the
    /// command (a server allocates a future per request; a small one is cheap to allocate).
    pub fn propose(
        &self,
        command: M::Command,
    ) -> impl Future<Output = Result<M::Response, Error>> + '_ {
        let command = self.check_running().and_then(|()| encode(&command));
        async move {
            let command = command?;
            let timeout = self.inner.request_timeout;
            match tokio::time::timeout(timeout, self.inner.node.propose(command)).await {
                Err(_) => Err(Error::Timeout(timeout)),
                Ok(Err(ProposeError::NotLeader { leader })) => Err(Error::NotLeader { leader }),
                Ok(Err(ProposeError::Transferring { to })) => Err(Error::Transferring { to }),
                Ok(Err(ProposeError::Dropped)) => Err(Error::Dropped),
                Ok(Err(ProposeError::Shutdown)) => Err(Error::Shutdown { in_flight: true }),
                Ok(Ok(result)) => decode(&result),
            }
        }
    }

    /// Answer `query` from the state machine:
    ///
    /// - [`Consistency::Linearizable`]: on the leader, after confirming its leadership with a
    ///   majority (ReadIndex) and applying every entry committed when the read arrived — the read
    ///   sees every write acknowledged before it began.
    /// - [`Consistency::Lease`]: on the leader, from its check-quorum lease (no round trip while
    ///   it is fresh; assumes clock drift well under the election timeout), else as linearizable.
    /// - [`Consistency::Local`]: this node's applied state now, on any node: possibly stale,
    ///   never uncommitted.
    ///
    /// Not on the leader, the first two fail with [`Error::NotLeader`].
    ///
    /// Like [`RaftNode::propose`], the query is encoded when this is called.
    pub fn read(
        &self,
        query: M::Query,
        consistency: Consistency,
    ) -> impl Future<Output = Result<M::QueryResponse, Error>> + '_ {
        let query = self.check_running().and_then(|()| encode(&query));
        self.read_encoded(query, consistency)
    }

    async fn read_encoded(
        &self,
        query: Result<Bytes, Error>,
        consistency: Consistency,
    ) -> Result<M::QueryResponse, Error> {
        let query = query?;
        let node = &self.inner.node;
        let timeout = self.inner.request_timeout;
        let answer = match consistency {
            Consistency::Local => node
                .query_local(query)
                .await
                .ok_or(Error::Shutdown { in_flight: false })?,
            Consistency::Linearizable | Consistency::Lease => {
                let read = async {
                    if consistency == Consistency::Lease {
                        node.read_lease(query).await
                    } else {
                        node.read_linearizable(query).await
                    }
                };
                match tokio::time::timeout(timeout, read).await {
                    Err(_) => return Err(Error::Timeout(timeout)),
                    Ok(Err(ReadError::NotLeader { leader })) => {
                        return Err(Error::NotLeader { leader })
                    }
                    Ok(Err(ReadError::Shutdown)) => {
                        return Err(Error::Shutdown { in_flight: false })
                    }
                    Ok(Ok(answer)) => answer,
                }
            }
        };
        decode(&answer)
    }

    /// The node's role, term and leader, pushed by the node as they change. `changed()` on the
    /// receiver fails once the node has stopped.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.node.leadership().clone()
    }

    /// Take a snapshot of the state machine now, whatever the policy; resolves once it is durable
    /// (the log is then compacted behind it, less the trailing margin). It holds everything this
    /// node had applied when asked: asked while another snapshot is being written, it is the next
    /// one, started as soon as that one is done.
    pub async fn snapshot(&self) -> Result<SnapshotMeta, Error> {
        self.inner.node.snapshot().await.map_err(Error::Snapshot)
    }

    /// A consistent copy of the state machine, for a backup: a snapshot taken now (at an applied,
    /// so committed, index; its metadata gives the index, term, size and CRC-32 of the data), and
    /// its data opened for reading — the open file stays readable even if newer snapshots replace
    /// it, so it can be streamed for as long as it takes, in constant memory.
    pub async fn backup(&self) -> Result<(SnapshotMeta, std::fs::File), Error> {
        let Some(store) = &self.inner.snapshots else {
            return Err(Error::Snapshot("this node keeps no snapshots".into()));
        };
        let meta = self.snapshot().await?;
        let data = store
            .open_data(&meta)
            .map_err(|error| Error::Snapshot(error.to_string()))?;
        Ok((meta, data))
    }

    /// The node's status and counters: role, term, leader, commit and applied index, the log, the
    /// membership in force here (and the index of its configuration entry), and on the leader
    /// each member's progress and any leadership transfer under way.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        self.inner
            .node
            .status()
            .await
            .ok_or(Error::Shutdown { in_flight: false })
    }

    /// The membership in force on this node: voters, learners, the outgoing voters while the
    /// cluster is in a joint configuration, each member's Raft address, and the learners to be
    /// promoted once caught up. A configuration takes effect on a node as soon as it appends it,
    /// so a follower may briefly see one the leader has not committed yet (or not see the newest).
    pub async fn membership(&self) -> Result<Membership, Error> {
        Ok(self.status().await?.membership)
    }

    /// The Raft address of `id` in the newest configuration this node has seen, or among the
    /// peers it was started with. `None` for a node it knows nothing of.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.inner
            .node
            .membership()
            .borrow()
            .addresses
            .get(&id)
            .cloned()
            .or_else(|| self.inner.bootstrap.get(&id).cloned())
    }

    /// Serve a request/response protocol of your own on the Raft port: a connection that opens
    /// with the native client protocol's hello (as [`ClientConnection`] does) is handed to
    /// `handler`, one request body at a time. Returns `false` if a handler is already installed,
    /// or the node has no TCP endpoint. Until a handler is installed, clients are turned away.
    ///
    /// [`ClientConnection`]: raftor_actors::network::client::ClientConnection
    pub fn set_client_handler(&self, handler: ClientHandler) -> bool {
        match &self.inner.link {
            Link::Tcp { clients, .. } => clients.set(handler),
            Link::Memory { .. } => false,
        }
    }

    /// [`set_client_handler`](Self::set_client_handler), with a handler chosen per session by who
    /// opened it ([`ClientIdentity`]: the member whose certificate it presented, the token it
    /// sent), so the handler can decide what the session may do.
    ///
    /// [`ClientIdentity`]: raftor_actors::network::client::ClientIdentity
    pub fn set_client_sessions(
        &self,
        sessions: raftor_actors::network::client::ClientSessions,
    ) -> bool {
        match &self.inner.link {
            Link::Tcp { clients, .. } => clients.set_sessions(sessions),
            Link::Memory { .. } => false,
        }
    }

    /// Resolves once the node has stopped, with why: [`StopCause::Shutdown`] after
    /// [`Self::shutdown`], or [`StopCause::Failed`] when it stopped itself because going on could
    /// break a promise (a log or snapshot write failed, the state machine panicked). A service
    /// waits on this next to its shutdown signal and exits on a failure, so that its supervisor
    /// restarts it: a restart recovers from what is durable. Call [`Self::shutdown`] afterwards
    /// to close the ports and wait for every actor.
    pub async fn stopped(&self) -> StopCause {
        self.inner.node.stop_cause().await
    }

    /// Stop cleanly: stop taking peer messages and client connections (the port is free when this
    /// returns), stop the node (pending proposals fail with [`Error::Shutdown`]; the log store
    /// flushes what it had queued), and wait until every actor has stopped and the log storage is
    /// closed, so the data directory can be opened again. A node started outside an actix System
    /// also stops its thread. Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.link.close(self.inner.id).await;
        self.inner.node.shutdown();
        self.inner.node.stopped().await;
        let own = lock(&self.inner.own_system).take();
        if let Some(own) = own {
            own.system.stop();
            let _ = own.exited.await;
        }
    }
}
