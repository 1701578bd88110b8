//! The key-value service: one actor per node that runs every client request — from HTTP, from the
//! native protocol, or forwarded by another node — against the node's public, typed handle
//! ([`RaftNode`]), and forwards to the leader what only the leader can do.
//!
//! Here: the actor, validation, and what every node runs itself (writes, reads). Membership
//! changes and leadership transfer are in [`membership`], forwarding in `forward.rs`, the status
//! and snapshot reports in `report.rs`.

use crate::auth::{authorize, Access, Role};
use crate::lessor::Lessor;
use crate::metrics::ServiceMetrics;
use crate::protocol::{
    decode, encode, Consistency, ErrorKind, KvRequest, KvResponse, RequestEnvelope, ServiceError,
};
use crate::store::{KvAnswer, KvCommand, KvOp, KvQuery, KvStateMachine};
use crate::watch::WatchHub;
use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, WeakAddr};
use bytes::Bytes;
use futures::future::{ready, Either, FutureExt};
use raftor::Error;
use raftor::{ClientHandler, RaftNode};
use raftor_actors::network::client::{
    ClientConnection, ClientIdentity, ClientSessions, PreparedAnswer,
};
use raftor_core::NodeId;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod answer_bound;
mod follower_read;
mod forward;
mod leases;
pub mod membership;
pub(crate) use answer_bound::PER_ITEM;
pub use answer_bound::{AnswerLimits, SMALL_ANSWER};
mod report;
mod requests;

pub use membership::member_role;

/// The longest key accepted by default, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Limits and timeouts of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The largest value accepted (default 1 MiB); larger is refused with 413.
    pub max_value_bytes: usize,
    /// The longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// How long a request may wait for its outcome before the answer is "unknown" (504). Give the
    /// node the same [`request_timeout`](raftor::RaftNodeBuilder::request_timeout).
    pub request_timeout: Duration,
    /// How long a request waits for a leader to be elected before "unavailable" (503).
    pub leader_wait: Duration,
    /// Back-pressure: the payload bytes (keys and values) of the writes this node has proposed
    /// and not answered yet. A write that would pass it is refused at once with
    /// [`ErrorKind::Overloaded`] (nothing happened; HTTP 503 with `Retry-After`) rather than
    /// queue behind writes the cluster cannot commit within the request timeout. One write is
    /// always admitted, however large.
    pub max_pending_write_bytes: usize,
    /// The node's TLS identity, when the cluster runs TLS: requests forwarded to the leader go
    /// over TLS, presenting this node's certificate (the leader then trusts the session as a
    /// member's).
    pub tls: Option<raftor_actors::network::tls::NodeTls>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_value_bytes: 1024 * 1024,
            max_key_bytes: MAX_KEY_BYTES,
            request_timeout: Duration::from_secs(5),
            leader_wait: Duration::from_secs(3),
            max_pending_write_bytes: crate::config::DEFAULT_MAX_PENDING_WRITE_BYTES,
            tls: None,
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

thread_local! {
    /// The services running on this thread, each with its runner: a request made on the
    /// service's own thread runs in the caller's task ([`KvService::call`]).
    static SERVICES_HERE: RefCell<Vec<(WeakAddr<KvService>, Weak<Runner>)>> =
        const { RefCell::new(Vec::new()) };
}

impl KvService {
    pub fn new(
        node: RaftNode<KvStateMachine>,
        members: BTreeMap<NodeId, String>,
        config: ServiceConfig,
        metrics: Arc<ServiceMetrics>,
        hub: Arc<WatchHub>,
    ) -> KvService {
        KvService {
            runner: Rc::new(Runner {
                id: node.id(),
                node,
                members,
                config,
                metrics,
                forward: Default::default(),
                pending_write_bytes: Default::default(),
                hub,
                lessor: Lessor::new(),
            }),
        }
    }

    /// Run `envelope` on the service at `addr`. On the service's own thread (HTTP and native
    /// sessions are served there by default) the request runs in the caller's task; elsewhere
    /// (HTTP worker threads) it goes through the service's mailbox. The direct way saves each
    /// request a mailbox hop, a spawned task and a reply channel, and keeps the thread's run
    /// queue, which the Raft messages share, shorter (BENCHMARKS.md, issue 22).
    pub async fn call(addr: &Addr<KvService>, envelope: RequestEnvelope) -> KvResponse {
        match Self::runner_here(addr) {
            // Boxed: the request's future is allocated once, as the spawned task was.
            Some(runner) => Box::pin(Runner::run(runner, envelope)).await,
            None => addr
                .send(ServiceCall(envelope))
                .await
                .unwrap_or_else(|_| unavailable("the node is shutting down")),
        }
    }

    /// Whether a request to the service at `addr` made on this thread runs in the caller's task
    /// ([`KvService::call`]): the service runs here and has not stopped.
    pub fn runs_on_this_thread(addr: &Addr<KvService>) -> bool {
        Self::runner_here(addr).is_some()
    }

    /// The runner of the service at `addr`, if that service runs on this thread and has not
    /// stopped.
    fn runner_here(addr: &Addr<KvService>) -> Option<Rc<Runner>> {
        SERVICES_HERE.with(|services| {
            let services = services.borrow();
            if services.is_empty() {
                return None;
            }
            let wanted = addr.downgrade();
            services
                .iter()
                .find(|(service, _)| *service == wanted)
                .and_then(|(_, runner)| runner.upgrade())
        })
    }

    /// The native-protocol handler that hands each request to the service at `addr`, for a
    /// session opened by `identity`: each request is answered 401 or 403
    /// ([`ErrorKind::Unauthenticated`], [`ErrorKind::Forbidden`]) unless `access` allows it.
    /// The session's credential is checked again at every request (a digest and a lookup), so a
    /// token revoked or expired stops working on connections already open too. Each request
    /// states the largest answer it may get under `limits` ([`AnswerLimits::bound`]), reserved
    /// in the session's budget before it runs.
    pub fn client_handler(
        addr: Addr<KvService>,
        access: Access,
        identity: ClientIdentity,
        limits: AnswerLimits,
    ) -> ClientHandler {
        ClientHandler::bounded(move |body: Bytes| {
            let addr = addr.clone();
            let held = access.role_of_session(&identity);
            let decoded = decode::<RequestEnvelope>(&body);
            let bound = match &decoded {
                Ok(envelope) => limits.bound(&envelope.request),
                Err(_) => answer_bound::SMALL_ANSWER,
            };
            // Reads, and writes made exactly-once by their session (run again, one answers as
            // the first did: a retried write's answer is the only one that can outgrow its
            // bound, carrying what the session recorded for that sequence number). Not a watch
            // poll from "now": run again, it would start later and miss what the first saw.
            let may_run_again = decoded
                .as_ref()
                .is_ok_and(|envelope| match &envelope.request {
                    KvRequest::Watch(watch) => watch.start.is_some(),
                    request => request.required_role() == Role::Read || request.session().is_some(),
                });
            let answer = Box::pin(async move {
                let response = match decoded {
                    Ok(envelope) => match authorize(&held, envelope.request.required_role()) {
                        Err(refusal) => KvResponse::Error(ServiceError::refused(&refusal)),
                        Ok(()) => KvService::call(&addr, envelope).await,
                    },
                    Err(message) => {
                        KvResponse::Error(ServiceError::new(ErrorKind::BadRequest, message))
                    }
                };
                encode(&response)
            });
            PreparedAnswer {
                bound,
                answer,
                may_run_again,
            }
        })
    }

    /// Native sessions as `access` allows them ([`Access::role_of_session`]), their answers
    /// bounded by `limits`.
    pub fn client_sessions(
        addr: Addr<KvService>,
        access: Access,
        limits: AnswerLimits,
    ) -> ClientSessions {
        Arc::new(move |identity: &ClientIdentity| {
            Self::client_handler(addr.clone(), access.clone(), identity.clone(), limits)
        })
    }
}

impl Actor for KvService {
    type Context = Context<Self>;

    /// Starts the lessor: while this node leads, it keeps the leases' deadlines and expires them.
    /// Registers the service with its thread, for [`KvService::call`].
    fn started(&mut self, ctx: &mut Context<Self>) {
        let lessor = crate::lessor::run(self.runner.node.clone(), self.runner.lessor.clone());
        ctx.spawn(actix::fut::wrap_future(lessor));
        let service = ctx.address().downgrade();
        let runner = Rc::downgrade(&self.runner);
        SERVICES_HERE.with(|services| services.borrow_mut().push((service, runner)));
    }

    /// From now on requests go through the mailbox, which answers that the node is shutting down.
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let mine = Rc::as_ptr(&self.runner);
        SERVICES_HERE.with(|services| {
            services
                .borrow_mut()
                .retain(|(_, runner)| runner.strong_count() > 0 && runner.as_ptr() != mine)
        });
    }
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
    /// The payload bytes of the writes proposed here and not answered yet (back-pressure).
    pending_write_bytes: Cell<usize>,
    /// This node's watchers (watch polls run here).
    hub: Arc<WatchHub>,
    /// The leases' deadlines while this node leads.
    lessor: Rc<RefCell<Lessor>>,
}

/// Holds a write's bytes in [`Runner::pending_write_bytes`] until its answer (or until the
/// request is dropped).
struct PendingWrite<'a> {
    pending: &'a Cell<usize>,
    bytes: usize,
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.pending
            .set(self.pending.get().saturating_sub(self.bytes));
    }
}

impl Handler<ServiceCall> for KvService {
    type Result = ResponseFuture<KvResponse>;

    fn handle(
        &mut self,
        ServiceCall(envelope): ServiceCall,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        Box::pin(Runner::run(self.runner.clone(), envelope))
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
    /// Runs one request: here, or at the leader, or waits for one. Its future is allocated per
    /// request, so every rare path in it is boxed and the request is held once: kept under
    /// 1 KiB, it comes from the allocator's per-thread cache (glibc serves larger ones from the
    /// shared heap, after merging every freed small chunk: allocating the 2,328-byte future this
    /// was took 1.1% of a leader's CPU under 64 writing clients, BENCHMARKS.md, issue 22).
    /// `future_size` checks the bound.
    async fn run(self: Rc<Self>, envelope: RequestEnvelope) -> KvResponse {
        if let Err(error) = self.validate(&envelope.request) {
            return KvResponse::Error(error);
        }
        let request = &envelope.request;
        let is_write = request.changes_state();
        let started = Instant::now();
        let deadline = started + self.config.leader_wait;
        let response = loop {
            match self.run_locally(request).await {
                Local::Done(response) => break response,
                Local::NotLeader(Some(leader))
                    if envelope.forwarded_by.is_none() && leader != self.id =>
                {
                    if let Some((query, consistency)) = follower_read::served_here(request) {
                        break Box::pin(self.read_through(leader, request, query, consistency))
                            .await;
                    }
                    break Box::pin(self.forward_to(leader, request.clone(), is_write)).await;
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
            KvRequest::ChangeMember(change) => return membership::validate_change(change),
            other => return self.validate_extended(other),
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

    /// The writes and reads of single keys run inline; every other request in a future of its
    /// own ([`Runner::run_other`]), so that the future of each request stays under 1 KiB (see
    /// `future_size`).
    async fn run_locally(&self, request: &KvRequest) -> Local {
        match request {
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
            KvRequest::Get { key, consistency } => self.read(key, *consistency).await,
            other => Box::pin(self.run_other(other)).await,
        }
    }

    async fn run_other(&self, request: &KvRequest) -> Local {
        match request {
            // Not reached (`run_locally` runs these inline); run the same way if they were.
            KvRequest::Put { .. } | KvRequest::Delete { .. } | KvRequest::Get { .. } => {
                self.run_locally(request).await
            }
            KvRequest::Status => Local::Done(self.status().await),
            KvRequest::Snapshot => Local::Done(self.snapshot().await),
            KvRequest::Cas {
                key,
                expected,
                value,
                session,
            } => self.cas(key, expected, value, *session).await,
            KvRequest::Members => match self.node.status().await {
                Ok(status) => {
                    Local::Done(KvResponse::Members(Box::new(self.members_report(&status))))
                }
                Err(_) => Local::Done(unavailable("the node is shutting down")),
            },
            KvRequest::ChangeMember(change) => self.change_member(change).await,
            KvRequest::TransferLeader { to } => self.transfer_leader(NodeId(*to)).await,
            KvRequest::Range { query, consistency } => {
                self.query(
                    KvQuery::Range(query.clone()),
                    *consistency,
                    |answer| match answer {
                        KvAnswer::Range(page) => Some(KvResponse::Range(page)),
                        _ => None,
                    },
                )
                .await
            }
            KvRequest::Txn { txn, session } => {
                self.write(KvCommand {
                    session: *session,
                    op: KvOp::Txn(txn.clone()),
                })
                .await
            }
            KvRequest::DeleteRange { keys, session } => {
                let txn = crate::store::Txn {
                    success: vec![crate::store::TxnOp::Delete(keys.clone())],
                    ..Default::default()
                };
                self.write(KvCommand {
                    session: *session,
                    op: KvOp::Txn(txn),
                })
                .await
            }
            KvRequest::Watch(watch) => Local::Done(self.watch_poll(watch).await),
            KvRequest::LeaseGrant { ttl_ms, session } => self.grant_lease(*ttl_ms, *session).await,
            KvRequest::LeaseRevoke { id, session } => {
                self.write(KvCommand {
                    session: *session,
                    op: KvOp::LeaseRevoke {
                        id: *id,
                        expired: false,
                    },
                })
                .await
            }
            KvRequest::LeaseKeepAlive { id } => self.keep_alive(*id).await,
            KvRequest::LeaseInfo { id } => self.lease_info(*id).await,
            KvRequest::Leases => self.leases().await,
        }
    }

    /// Count a write of `bytes` as in flight, or refuse it when the writes already in flight
    /// leave no room (one write is always admitted).
    fn admit_write(&self, bytes: usize) -> Result<PendingWrite<'_>, ServiceError> {
        let pending = self.pending_write_bytes.get();
        if pending > 0 && pending.saturating_add(bytes) > self.config.max_pending_write_bytes {
            return Err(ServiceError::new(
                ErrorKind::Overloaded,
                format!(
                    "overloaded: {pending} bytes of writes are waiting to commit on this node (limit {}); nothing was done, retry shortly",
                    self.config.max_pending_write_bytes
                ),
            ));
        }
        self.pending_write_bytes.set(pending.saturating_add(bytes));
        Ok(PendingWrite {
            pending: &self.pending_write_bytes,
            bytes,
        })
    }

    /// Propose `command` (encoded now: the future holds its bytes, not the command). Written
    /// with combinators rather than `async`, which would hold the proposal's future twice.
    fn write(&self, command: KvCommand) -> impl Future<Output = Local> + '_ {
        match self.admit_write(command.op.payload_bytes()) {
            Err(error) => Either::Left(ready(Local::Done(KvResponse::Error(error)))),
            Ok(pending) => Either::Right(self.node.propose(command).map(move |answer| {
                drop(pending);
                Runner::written(answer)
            })),
        }
    }

    /// What the answer to a proposal tells the client.
    fn written(answer: Result<crate::store::KvApplied, Error>) -> Local {
        match answer {
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

    fn read(&self, key: &str, consistency: Consistency) -> impl Future<Output = Local> + '_ {
        let query = KvQuery::Get {
            key: key.to_owned(),
        };
        self.query(query, consistency, |answer| match answer {
            KvAnswer::Value(value) => Some(KvResponse::Value { value }),
            _ => None,
        })
    }

    /// Answer `query` at `consistency`, the answer turned into a response by `respond` (`None`:
    /// not the answer expected). Combinators, as [`Runner::write`].
    fn query<'a>(
        &'a self,
        query: KvQuery,
        consistency: Consistency,
        respond: impl FnOnce(KvAnswer) -> Option<KvResponse> + 'a,
    ) -> impl Future<Output = Local> + 'a {
        self.answer(query, consistency).map(|answer| match answer {
            Ok(answer) => Local::Done(respond(answer).unwrap_or_else(unexpected_answer)),
            Err(local) => local,
        })
    }

    /// The state machine's answer to `query` at `consistency`, or what to answer instead.
    fn answer(
        &self,
        query: KvQuery,
        consistency: Consistency,
    ) -> impl Future<Output = Result<KvAnswer, Local>> + '_ {
        self.node
            .read(query, consistency)
            .map(|answer| answer.map_err(Runner::unanswered))
    }

    /// What a failed read tells the client.
    fn unanswered(error: Error) -> Local {
        match error {
            Error::NotLeader { leader } => Local::NotLeader(leader),
            Error::Timeout(_) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                "could not confirm leadership with a majority in time",
            ))),
            Error::Shutdown { .. } => Local::Done(unavailable("the node is shutting down")),
            error => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                format!("the read failed: {error}"),
            ))),
        }
    }
}

fn unexpected_answer() -> KvResponse {
    KvResponse::Error(ServiceError::new(
        ErrorKind::Unknown,
        "unexpected answer from the state machine",
    ))
}

#[cfg(test)]
mod future_size {
    use super::*;

    /// The size of the future `make` returns, without making one.
    fn size_of_future<F, Fut>(_make: F) -> usize
    where
        F: FnOnce(Rc<Runner>, RequestEnvelope) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// glibc serves allocations of up to 1,032 bytes from a per-thread cache; a larger one takes
    /// the shared heap and first merges every freed small chunk. A request's future was 2,328
    /// bytes before the rare paths were boxed and the command encoded up front.
    #[test]
    fn a_requests_future_fits_the_allocators_thread_cache() {
        let size = size_of_future(Runner::run);
        assert!(size <= 1024, "Runner::run's future is {size} bytes");
    }
}
