//! The key-value service: one actor per node that runs every client request — from HTTP, from the
//! native protocol, or forwarded by another node — against the node's public, typed handle
//! ([`RaftNode`]), and forwards to the leader what only the leader can do.

use crate::error::Error;
use crate::kv::{KvAnswer, KvCommand, KvOp, KvQuery, KvStateMachine};
use crate::metrics::ServiceMetrics;
use crate::protocol::{
    decode, encode, Consistency, ErrorKind, KvRequest, KvResponse, LeaderInfo, Member,
    PeerProgress, RequestEnvelope, ServiceError, SnapshotReport, StatusReport,
};
use crate::raft_node::{ClientHandler, RaftNode};
use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use bytes::Bytes;
use raftor_actors::network::client::{ClientConnection, ClientConnectionError};
use raftor_core::{NodeId, Role};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits and timeouts of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The largest value accepted (default 1 MiB); larger is refused with 413.
    pub max_value_bytes: usize,
    /// The longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// How long a request may wait for its outcome before the answer is "unknown" (504). Give the
    /// node the same [`request_timeout`](crate::RaftNodeBuilder::request_timeout).
    pub request_timeout: Duration,
    /// How long a request waits for a leader to be elected before "unavailable" (503).
    pub leader_wait: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 4096,
            request_timeout: Duration::from_secs(5),
            leader_wait: Duration::from_secs(3),
        }
    }
}

/// Run one request; answered with the service's response.
#[derive(Message, Debug)]
#[rtype(result = "KvResponse")]
pub struct ServiceCall(pub RequestEnvelope);

pub struct KvService {
    /// Shared by every request's future (built once, not per request).
    runner: Rc<Runner>,
}

impl KvService {
    pub fn new(
        node: RaftNode<KvStateMachine>,
        members: BTreeMap<NodeId, String>,
        config: ServiceConfig,
        metrics: Arc<ServiceMetrics>,
    ) -> KvService {
        KvService {
            runner: Rc::new(Runner {
                id: node.id(),
                node,
                members,
                config,
                metrics,
                forward: Default::default(),
            }),
        }
    }

    /// The native-protocol handler that hands each request to the service at `addr`.
    pub fn client_handler(addr: Addr<KvService>) -> ClientHandler {
        Arc::new(
            move |body: Bytes| -> futures::future::LocalBoxFuture<'static, Bytes> {
                let addr = addr.clone();
                Box::pin(async move {
                    let response = match decode::<RequestEnvelope>(&body) {
                        Ok(envelope) => addr
                            .send(ServiceCall(envelope))
                            .await
                            .unwrap_or_else(|_| unavailable("the node is shutting down")),
                        Err(message) => {
                            KvResponse::Error(ServiceError::new(ErrorKind::BadRequest, message))
                        }
                    };
                    encode(&response)
                })
            },
        )
    }
}

impl Actor for KvService {
    type Context = Context<Self>;
}

fn unavailable(message: &str) -> KvResponse {
    KvResponse::Error(ServiceError::new(ErrorKind::Unavailable, message))
}

/// Everything a request needs.
struct Runner {
    id: NodeId,
    node: RaftNode<KvStateMachine>,
    /// Every member's Raft address (the native protocol runs on it too).
    members: BTreeMap<NodeId, String>,
    config: ServiceConfig,
    metrics: Arc<ServiceMetrics>,
    /// One connection to each node requests were forwarded to, reused while it lives.
    forward: std::cell::RefCell<BTreeMap<NodeId, Rc<ClientConnection>>>,
}

impl Handler<ServiceCall> for KvService {
    type Result = ResponseFuture<KvResponse>;

    fn handle(
        &mut self,
        ServiceCall(envelope): ServiceCall,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let runner = self.runner.clone();
        Box::pin(async move { runner.run(envelope).await })
    }
}

/// What running a request locally said.
enum Local {
    Done(KvResponse),
    /// Only the leader can do this, and this node is not it.
    NotLeader(Option<NodeId>),
}

impl Runner {
    async fn run(&self, envelope: RequestEnvelope) -> KvResponse {
        if let Err(error) = self.validate(&envelope.request) {
            return KvResponse::Error(error);
        }
        let request = envelope.request;
        let is_write = request.needs_leader() && !matches!(request, KvRequest::Get { .. });
        let started = Instant::now();
        let deadline = started + self.config.leader_wait;
        let response = loop {
            match self.run_locally(&request).await {
                Local::Done(response) => break response,
                Local::NotLeader(Some(leader))
                    if envelope.forwarded_by.is_none() && leader != self.id =>
                {
                    break self.forward_to(leader, request.clone(), is_write).await;
                }
                Local::NotLeader(leader) => {
                    if envelope.forwarded_by.is_some() || Instant::now() >= deadline {
                        let leader = leader.and_then(|id| self.leader_info(id));
                        break KvResponse::Error(
                            ServiceError::new(ErrorKind::Unavailable, "no leader is available")
                                .with_leader(leader),
                        );
                    }
                    // An election is under way: wait for it rather than fail at once.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        if is_write {
            self.metrics.observe_write(&response, started.elapsed());
        }
        response
    }

    fn validate(&self, request: &KvRequest) -> Result<(), ServiceError> {
        let (key, value) = match request {
            KvRequest::Put { key, value, .. } | KvRequest::Cas { key, value, .. } => {
                (key, Some(value))
            }
            KvRequest::Delete { key, .. } | KvRequest::Get { key, .. } => (key, None),
            KvRequest::Status | KvRequest::Snapshot => return Ok(()),
        };
        if key.is_empty() {
            return Err(ServiceError::new(ErrorKind::BadRequest, "the key is empty"));
        }
        if key.len() > self.config.max_key_bytes {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                format!(
                    "the key is {} bytes; the limit is {}",
                    key.len(),
                    self.config.max_key_bytes
                ),
            ));
        }
        let too_large = |what: &str, len: usize| {
            ServiceError::new(
                ErrorKind::TooLarge,
                format!(
                    "the {what} is {len} bytes; the limit is {}",
                    self.config.max_value_bytes
                ),
            )
        };
        if let Some(value) = value {
            if value.len() > self.config.max_value_bytes {
                return Err(too_large("value", value.len()));
            }
        }
        if let KvRequest::Cas {
            expected: Some(expected),
            ..
        } = request
        {
            if expected.len() > self.config.max_value_bytes {
                return Err(too_large("expected value", expected.len()));
            }
        }
        Ok(())
    }

    async fn run_locally(&self, request: &KvRequest) -> Local {
        match request {
            KvRequest::Status => Local::Done(self.status().await),
            KvRequest::Snapshot => Local::Done(self.snapshot().await),
            KvRequest::Put {
                key,
                value,
                session,
            } => {
                let op = KvOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                self.write(KvCommand {
                    session: *session,
                    op,
                })
                .await
            }
            KvRequest::Delete { key, session } => {
                let op = KvOp::Delete { key: key.clone() };
                self.write(KvCommand {
                    session: *session,
                    op,
                })
                .await
            }
            KvRequest::Cas {
                key,
                expected,
                value,
                session,
            } => {
                let op = KvOp::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    value: value.clone(),
                };
                self.write(KvCommand {
                    session: *session,
                    op,
                })
                .await
            }
            KvRequest::Get { key, consistency } => self.read(key, *consistency).await,
        }
    }

    async fn write(&self, command: KvCommand) -> Local {
        match self.node.propose(command).await {
            Ok(applied) => Local::Done(KvResponse::Written {
                index: applied.index,
                outcome: applied.outcome,
            }),
            Err(Error::NotLeader { leader }) => Local::NotLeader(leader),
            Err(Error::Dropped) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                "leadership changed before the write committed; it was not applied",
            ))),
            Err(Error::Shutdown { in_flight: false }) => {
                Local::Done(unavailable("the node is shutting down"))
            }
            Err(Error::Shutdown { .. }) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unknown,
                "the node stopped before the outcome was known",
            ))),
            Err(Error::Timeout(_)) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unknown,
                "timed out waiting for the write to commit; it may or may not have been applied",
            ))),
            Err(error) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unknown,
                format!("the state machine's answer: {error}"),
            ))),
        }
    }

    async fn read(&self, key: &str, consistency: Consistency) -> Local {
        let query = KvQuery::Get {
            key: key.to_owned(),
        };
        match self.node.read(query, consistency).await {
            Ok(KvAnswer::Value(value)) => Local::Done(KvResponse::Value { value }),
            Ok(other) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unknown,
                format!("unexpected answer from the state machine: {other:?}"),
            ))),
            Err(Error::NotLeader { leader }) => Local::NotLeader(leader),
            Err(Error::Timeout(_)) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                "could not confirm leadership with a majority in time",
            ))),
            Err(Error::Shutdown { .. }) => Local::Done(unavailable("the node is shutting down")),
            Err(error) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                format!("the read failed: {error}"),
            ))),
        }
    }

    /// Send the request to the leader over the native protocol and relay its answer.
    async fn forward_to(&self, leader: NodeId, request: KvRequest, is_write: bool) -> KvResponse {
        let Some(addr) = self.members.get(&leader).cloned() else {
            return unavailable("the leader's address is unknown");
        };
        let existing = self
            .forward
            .borrow()
            .get(&leader)
            .filter(|c| !c.is_closed())
            .cloned();
        let connection = match existing {
            Some(connection) => connection,
            None => {
                let connect = ClientConnection::connect(
                    &addr,
                    raftor_actors::network::codec::DEFAULT_MAX_FRAME_BYTES,
                );
                match tokio::time::timeout(self.config.request_timeout, connect).await {
                    Ok(Ok(connection)) => {
                        let connection = Rc::new(connection);
                        self.forward.borrow_mut().insert(leader, connection.clone());
                        connection
                    }
                    _ => {
                        return KvResponse::Error(
                            ServiceError::new(
                                ErrorKind::Unavailable,
                                format!("cannot reach the leader at {addr}"),
                            )
                            .with_leader(self.leader_info(leader)),
                        )
                    }
                }
            }
        };
        let envelope = RequestEnvelope {
            forwarded_by: Some(self.id),
            request,
        };
        let answer = tokio::time::timeout(
            self.config.request_timeout,
            connection.request(encode(&envelope)),
        )
        .await;
        match answer {
            Ok(Ok(body)) => decode::<KvResponse>(&body).unwrap_or_else(|message| {
                KvResponse::Error(ServiceError::new(
                    ErrorKind::Unknown,
                    format!("the leader's answer: {message}"),
                ))
            }),
            Ok(Err(ClientConnectionError::Connect { .. })) => {
                unavailable("cannot reach the leader")
            }
            Ok(Err(ClientConnectionError::Closed)) | Err(_) => {
                self.forward.borrow_mut().remove(&leader);
                // The leader may have run the write before the connection broke.
                let kind = if is_write {
                    ErrorKind::Unknown
                } else {
                    ErrorKind::Unavailable
                };
                KvResponse::Error(
                    ServiceError::new(kind, "lost the connection to the leader before its answer")
                        .with_leader(self.leader_info(leader)),
                )
            }
        }
    }

    fn leader_info(&self, id: NodeId) -> Option<LeaderInfo> {
        self.members.get(&id).map(|addr| LeaderInfo {
            id: id.0,
            raft_addr: addr.clone(),
        })
    }

    async fn snapshot(&self) -> KvResponse {
        match self.node.snapshot().await {
            Ok(meta) => KvResponse::Snapshot(SnapshotReport {
                node: self.id.0,
                index: meta.last_included.index.0,
                term: meta.last_included.term.0,
                bytes: meta.size,
            }),
            Err(error) => unavailable(&format!("no snapshot taken: {error}")),
        }
    }

    async fn status(&self) -> KvResponse {
        match self.node.status().await {
            Ok(status) => KvResponse::Status(Box::new(self.report(status))),
            Err(_) => unavailable("the node is shutting down"),
        }
    }

    fn report(&self, status: raftor_actors::NodeStatus) -> StatusReport {
        let peers = if status.role == Role::Leader {
            status
                .voters
                .iter()
                .filter(|id| **id != status.id)
                .map(|id| {
                    let progress = PeerProgress {
                        match_index: status.matched.get(id).map_or(0, |m| m.0),
                        next_index: status.next_index.get(id).map(|n| n.0),
                        since_contact_ms: status
                            .since_contact
                            .get(id)
                            .copied()
                            .flatten()
                            .map(|d| d.as_millis() as u64),
                    };
                    (id.0, progress)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        StatusReport {
            id: status.id.0,
            role: status.role.as_str().to_owned(),
            term: status.term.0,
            leader: status.leader.and_then(|id| self.leader_info(id)),
            commit_index: status.commit_index.0,
            applied_index: status.applied_index.0,
            last_log_index: status.last_log_id.index.0,
            last_log_term: status.last_log_id.term.0,
            members: self
                .members
                .iter()
                .map(|(id, addr)| Member {
                    id: id.0,
                    raft_addr: addr.clone(),
                })
                .collect(),
            peers,
            log_entries_appended: status.log_entries_appended,
            log_bytes_appended: status.log_bytes_appended,
            resident_memory_bytes: crate::metrics::resident_memory_bytes(),
        }
    }
}
