//! The key-value service: one actor per node that runs every client request — from HTTP, from the
//! native protocol, or forwarded by another node — against the node's public, typed handle
//! ([`RaftNode`]), and forwards to the leader what only the leader can do.

use crate::error::Error;
use crate::kv::{KvAnswer, KvCommand, KvOp, KvQuery, KvStateMachine};
use crate::metrics::ServiceMetrics;
use crate::protocol::{
    decode, encode, Consistency, ErrorKind, KvRequest, KvResponse, LeaderInfo, Member,
    MemberChange, MembersReport, PeerProgress, RequestEnvelope, ServiceError, SnapshotReport,
    StatusReport,
};
use crate::raft_node::{ClientHandler, RaftNode};
use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use bytes::Bytes;
use raftor_actors::network::client::{ClientConnection, ClientConnectionError};
use raftor_core::{ConfChange, ConfState, NodeId, Role, Standing};
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
    /// The bootstrap members' Raft addresses (the native protocol runs on them too); the
    /// configuration in the log, as the node reports it, comes first.
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
    /// The leader cannot do this right now (it is handing leadership over, or was just
    /// elected), and nothing was done: try again shortly, or answer with this error once the
    /// wait for a leader is over.
    Wait(ServiceError),
}

impl Runner {
    async fn run(&self, envelope: RequestEnvelope) -> KvResponse {
        if let Err(error) = self.validate(&envelope.request) {
            return KvResponse::Error(error);
        }
        let request = envelope.request;
        let is_write = request.changes_state();
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
                Local::Wait(error) => {
                    if Instant::now() >= deadline {
                        break KvResponse::Error(error);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        if request.is_kv_write() {
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
            KvRequest::Status | KvRequest::Snapshot | KvRequest::Members => return Ok(()),
            KvRequest::TransferLeader { to } => {
                return if *to == 0 {
                    Err(ServiceError::new(
                        ErrorKind::BadRequest,
                        "node ids are positive integers",
                    ))
                } else {
                    Ok(())
                };
            }
            KvRequest::ChangeMember(change) => return validate_change(change),
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
            KvRequest::Members => match self.node.status().await {
                Ok(status) => {
                    Local::Done(KvResponse::Members(Box::new(self.members_report(&status))))
                }
                Err(_) => Local::Done(unavailable("the node is shutting down")),
            },
            KvRequest::ChangeMember(change) => self.change_member(change).await,
            KvRequest::TransferLeader { to } => self.transfer_leader(NodeId(*to)).await,
        }
    }

    /// The change as the rules take it, or the answer when there is nothing to change (the
    /// change was already made: a retried request succeeds) or it cannot be made.
    fn plan_change(
        &self,
        change: &MemberChange,
        status: &raftor_actors::NodeStatus,
    ) -> Result<Option<ConfChange>, ServiceError> {
        let membership = &status.membership;
        let conf = &membership.conf;
        let id = NodeId(change.node());
        let bad = |message: String| ServiceError::new(ErrorKind::BadRequest, message);
        let not_member = || {
            ServiceError::new(
                ErrorKind::NotFound,
                format!("node {id} is not a member of the cluster"),
            )
        };
        match change {
            MemberChange::Add {
                raft_address,
                promote,
                ..
            } => {
                if !conf.contains(id) {
                    return Ok(Some(ConfChange::AddLearner {
                        id,
                        address: Some(raft_address.clone()),
                        promote_when_caught_up: *promote,
                    }));
                }
                let known = membership.addresses.get(&id).map_or("", String::as_str);
                if known != raft_address {
                    return Err(bad(format!(
                        "node {id} is already a member, at {known}; remove it first, or add the new node with an id never used before"
                    )));
                }
                if conf.is_voter(id) {
                    return if *promote {
                        Ok(None) // added, caught up and promoted already
                    } else {
                        Err(bad(format!("node {id} is already a voter")))
                    };
                }
                if *promote && !membership.promote_when_caught_up.contains(&id) {
                    return Err(bad(format!(
                        "node {id} is already a learner; promote it with POST /v1/members/{id}/promote"
                    )));
                }
                Ok(None)
            }
            MemberChange::Promote { .. } => {
                if conf.voters.contains(&id) {
                    Ok(None)
                } else if conf.contains(id) {
                    Ok(Some(ConfChange::AddVoter { id, address: None }))
                } else {
                    Err(not_member())
                }
            }
            MemberChange::Remove { .. } => {
                if conf.contains(id) {
                    Ok(Some(ConfChange::Remove { id }))
                } else {
                    Err(not_member())
                }
            }
        }
    }

    async fn change_member(&self, change: &MemberChange) -> Local {
        let status = match self.node.status().await {
            Ok(status) => status,
            Err(_) => return Local::Done(unavailable("the node is shutting down")),
        };
        if status.role != Role::Leader {
            return Local::NotLeader(status.leader);
        }
        let change = match self.plan_change(change, &status) {
            Ok(Some(change)) => change,
            Ok(None) => {
                return Local::Done(KvResponse::Members(Box::new(self.members_report(&status))))
            }
            Err(error) => return Local::Done(KvResponse::Error(error)),
        };
        let error = match self.node.change_membership(vec![change]).await {
            Ok(_) => {
                return match self.node.status().await {
                    Ok(status) => {
                        Local::Done(KvResponse::Members(Box::new(self.members_report(&status))))
                    }
                    Err(_) => Local::Done(unavailable("the node is shutting down")),
                }
            }
            Err(error) => error,
        };
        let message = error.to_string();
        let answer = |kind: ErrorKind| {
            Local::Done(KvResponse::Error(ServiceError::new(kind, message.clone())))
        };
        match error {
            Error::NotLeader { leader } => Local::NotLeader(leader),
            Error::Transferring { .. } | Error::NotReady => {
                Local::Wait(ServiceError::new(ErrorKind::Unavailable, message))
            }
            Error::MembershipChangeInProgress { .. } => answer(ErrorKind::Conflict),
            Error::InvalidMembership(_) => answer(ErrorKind::BadRequest),
            Error::Dropped | Error::Shutdown { in_flight: false } => answer(ErrorKind::Unavailable),
            _ => answer(ErrorKind::Unknown),
        }
    }

    async fn transfer_leader(&self, to: NodeId) -> Local {
        match self.node.transfer_leadership(to).await {
            Ok(()) => {
                let term = self.node.leadership().borrow().term;
                Local::Done(KvResponse::Transferred {
                    leader: to.0,
                    term: term.0,
                })
            }
            Err(Error::NotLeader { leader }) => Local::NotLeader(leader),
            Err(error @ Error::NotAVoter(_)) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::BadRequest,
                error.to_string(),
            ))),
            Err(Error::TransferAbandoned { to, leader }) => {
                Local::Done(KvResponse::Error(
                    ServiceError::new(
                        ErrorKind::Unavailable,
                        format!("node {to} did not take over leadership in time; the transfer was abandoned"),
                    )
                    .with_leader(leader.and_then(|id| self.leader_info(id))),
                ))
            }
            Err(error) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                error.to_string(),
            ))),
        }
    }

    fn members_report(&self, status: &raftor_actors::NodeStatus) -> MembersReport {
        let conf = &status.membership.conf;
        let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|id| id.0).collect();
        MembersReport {
            node: status.id.0,
            term: status.term.0,
            leader: status.leader.and_then(|id| self.leader_info(id)),
            membership_index: status.membership_index.0,
            voters: ids(&conf.voters),
            learners: ids(&conf.learners),
            voters_outgoing: ids(&conf.voters_outgoing),
            learners_next: ids(&conf.learners_next),
            promote_when_caught_up: ids(&status.membership.promote_when_caught_up),
            joint: conf.is_joint(),
            addresses: status
                .membership
                .addresses
                .iter()
                .map(|(id, address)| (id.0, address.clone()))
                .collect(),
            transfer_target: status.transfer_target.map(|id| id.0),
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
        let Some(addr) = self.address_of(leader) else {
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

    /// The Raft address of `id`: from the newest configuration the node has seen, else from the
    /// bootstrap members.
    fn address_of(&self, id: NodeId) -> Option<String> {
        self.node
            .address_of(id)
            .or_else(|| self.members.get(&id).cloned())
    }

    fn leader_info(&self, id: NodeId) -> Option<LeaderInfo> {
        self.address_of(id).map(|raft_addr| LeaderInfo {
            id: id.0,
            raft_addr,
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
                .membership
                .conf
                .members()
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
            members: status
                .membership
                .conf
                .members()
                .into_iter()
                .map(|id| Member {
                    id: id.0,
                    raft_addr: self.address_of(id).unwrap_or_default(),
                    role: member_role(&status.membership.conf, id).to_owned(),
                })
                .collect(),
            membership_index: status.membership_index.0,
            joint: status.membership.conf.is_joint(),
            transfer_target: status.transfer_target.map(|id| id.0),
            peers,
            log_entries_appended: status.log_entries_appended,
            log_bytes_appended: status.log_bytes_appended,
            log_writes_inline: status.log_writes_inline,
            log_writes_handed_off: status.log_writes_handed_off,
            resident_memory_bytes: crate::metrics::resident_memory_bytes(),
            standing: match status.standing {
                Standing::CatchingUp { floor, floor_log } => format!(
                    "catching-up: votes only after term {floor} for logs at least as up to date as {floor_log}, until it holds an entry of a later term"
                ),
                other => other.as_str().to_owned(),
            },
        }
    }
}

/// What `id` is in `conf`, in words.
pub fn member_role(conf: &ConfState, id: NodeId) -> &'static str {
    if conf.voters.contains(&id) {
        "voter"
    } else if conf.learners_next.contains(&id) {
        "outgoing voter, then learner"
    } else if conf.voters_outgoing.contains(&id) {
        "outgoing voter"
    } else if conf.learners.contains(&id) {
        "learner"
    } else {
        "not a member"
    }
}

/// A membership change's ids and address are well formed.
fn validate_change(change: &MemberChange) -> Result<(), ServiceError> {
    let bad = |message: String| Err(ServiceError::new(ErrorKind::BadRequest, message));
    if change.node() == 0 {
        return bad("node ids are positive integers".into());
    }
    if let MemberChange::Add { raft_address, .. } = change {
        let valid = raft_address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return bad(format!(
                "bad raft_address {raft_address:?}: expected host:port, e.g. 10.0.0.4:7001"
            ));
        }
    }
    Ok(())
}
