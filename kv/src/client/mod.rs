//! `raftor_kv::Client`: the Rust client of the key-value service, over the native protocol.
//!
//! Give it some endpoints (any members' Raft addresses); it finds the leader, follows it when it
//! moves, and retries failed writes within its timeout under its exactly-once session, so a write
//! retried across a leader failover is applied once.
//!
//! When the cluster answers that the session expired ([`KvOutcome::SessionExpired`]: it forgot
//! this client), the client starts a new session (a new random client id, sequence numbers again
//! from 1). If no earlier attempt of the refused write can have been applied, it sends the write
//! again under the new session; otherwise it returns [`ClientError::SessionExpired`] and does not
//! resend it, since whether the write was applied is unknown.

mod leases;
mod ranges;
mod watch;

pub use leases::Lease;
pub use ranges::TxnResult;
pub use watch::Watch;

use crate::protocol::{
    decode, encode, Consistency, ErrorKind, KvRequest, KvResponse, MemberChange, MembersReport,
    RequestEnvelope, ServiceError, SnapshotReport, StatusReport,
};
use crate::store::{KvOutcome, Session};
use bytes::Bytes;
use raftor_actors::network::client::{
    ClientConnectOptions, ClientConnection, ClientConnectionError,
};
use raftor_actors::network::codec::Credential;
use raftor_actors::network::codec::DEFAULT_MAX_FRAME_BYTES;
pub use raftor_actors::network::tls::ClientTls;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Mutex;

/// Timeouts and credentials of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TLS, for a cluster that serves it ([`ClientTls::from_ca_file`] with the cluster's CA).
    pub tls: Option<ClientTls>,
    /// The bearer token to present, for a cluster that asks for one (`raftor certs` and `raftor
    /// token create` make them); its role decides what the client may do.
    pub token: Option<String>,
    /// How long one attempt may wait for its answer.
    pub request_timeout: Duration,
    /// How long an operation keeps retrying (other endpoints, a new leader) before giving up.
    pub operation_timeout: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls: None,
            token: None,
            request_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The request is invalid (bad key, value over the limit): retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// No endpoint could be reached, or no leader was available, until the timeout: the write did
    /// not happen.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The outcome of a write is unknown after the timeout: it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The write's sequence number was superseded by a later write of this client.
    #[error("superseded by a later write of this client")]
    Superseded,
    /// The cluster did not know this client's exactly-once session (it expired and was
    /// forgotten) when a retry of the write arrived, after an earlier attempt that may have been
    /// applied: the retry was refused, and whether the write was applied is unknown (as for
    /// [`ClientError::Unknown`]). It was not sent again, since under a new session it could be
    /// applied twice. The client has started a new session, which its later writes use.
    #[error("the session expired; the write's outcome is unknown and it was not retried")]
    SessionExpired,
    /// Another membership change is in progress: nothing was done; retry once it is finished.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request names a node that is not a member: nothing was done.
    #[error("not found: {0}")]
    NotFound(String),
    /// The leader refused the write for back-pressure until the timeout (it had more writes in
    /// flight than it commits promptly): the write did not happen.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The cluster wants a valid token (none was given, or it is unknown or expired): nothing
    /// was done.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role does not allow this: nothing was done.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A watch asked for changes the cluster no longer keeps (everything at or below
    /// `compacted_through`): read the keys again (the node was at `index`) and watch from after
    /// that read.
    #[error("compacted: the changes up to index {compacted_through} are no longer kept (the node is at {index}); read again and watch from after the read's index")]
    Compacted { compacted_through: u64, index: u64 },
}

/// A write's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The log index the write was applied at.
    pub index: u64,
    pub outcome: KvOutcome,
}

/// A key-value client. Cheap to clone; clones share connections and the exactly-once session.
///
/// The session numbers the writes in the order they start, and the cluster applies a session's
/// writes only in that order: a write that is retried (after a lost answer, an election, or
/// back-pressure) while a later write of the same session was applied comes back
/// [`ClientError::Superseded`]. Writers that run concurrently and each need every write applied
/// should each have a `Client` of their own (as `raftor bench` gives each of its clients).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The exactly-once session: the client id and the last sequence number handed out.
struct SessionState {
    client_id: u64,
    last_sequence: u64,
}

/// How many times one write may start a new session and be sent again before it gives up (more
/// than once only when clones of the client race on a brand-new session).
const MAX_SESSION_RENEWALS: u32 = 3;

struct Inner {
    endpoints: Vec<String>,
    options: ClientOptions,
    /// How each connection is opened (from `options`).
    connect: ClientConnectOptions,
    session: std::sync::Mutex<SessionState>,
    /// The endpoint in use (or that failed last) and its connection, if open.
    current: Mutex<Current>,
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (host:port of members' Raft addresses).
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Rejected("no endpoints given".into()));
        }
        let connect = ClientConnectOptions {
            tls: options.tls.clone(),
            token: options.token.clone().map(Credential),
            ..ClientConnectOptions::new(DEFAULT_MAX_FRAME_BYTES)
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                options,
                connect,
                session: std::sync::Mutex::new(SessionState {
                    client_id: fresh_client_id(0),
                    last_sequence: 0,
                }),
                current: Mutex::new(Current::default()),
            }),
        })
    }

    /// This client's exactly-once session id. It changes when the cluster reports the session
    /// expired and the client starts a new one.
    pub fn client_id(&self) -> u64 {
        self.session().client_id
    }

    fn session(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // The state is two integers, consistent whenever the lock is released.
        self.inner
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn next_session(&self) -> Session {
        let mut state = self.session();
        state.last_sequence += 1;
        Session {
            client_id: state.client_id,
            sequence: state.last_sequence,
        }
    }

    /// The cluster forgot session `expired`: start a new one (a new client id, sequence numbers
    /// again from 1), unless a clone already did.
    fn renew_session(&self, expired: u64) {
        let mut state = self.session();
        if state.client_id == expired {
            state.client_id = fresh_client_id(expired);
            state.last_sequence = 0;
        }
    }

    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<WriteResult, ClientError> {
        let request = KvRequest::Put {
            key: key.to_owned(),
            value: value.into(),
            session: Some(self.next_session()),
        };
        self.write(request).await
    }

    pub async fn delete(&self, key: &str) -> Result<WriteResult, ClientError> {
        let request = KvRequest::Delete {
            key: key.to_owned(),
            session: Some(self.next_session()),
        };
        self.write(request).await
    }

    /// Set `key` to `value` if it holds `expected` (`None`: if it is absent).
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<WriteResult, ClientError> {
        let request = KvRequest::Cas {
            key: key.to_owned(),
            expected,
            value: value.into(),
            session: Some(self.next_session()),
        };
        self.write(request).await
    }

    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Bytes>, ClientError> {
        let request = KvRequest::Get {
            key: key.to_owned(),
            consistency,
        };
        match self.call(request, false).await? {
            KvResponse::Value { value } => Ok(value),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// The status of the node this client is talking to.
    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        match self.call(KvRequest::Status, false).await? {
            KvResponse::Status(report) => Ok(*report),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// Have the node this client is talking to take a snapshot now (and compact its log).
    pub async fn snapshot(&self) -> Result<SnapshotReport, ClientError> {
        match self.call(KvRequest::Snapshot, false).await? {
            KvResponse::Snapshot(report) => Ok(report),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// The membership as the node this client is talking to sees it.
    pub async fn members(&self) -> Result<MembersReport, ClientError> {
        match self.call(KvRequest::Members, false).await? {
            KvResponse::Members(report) => Ok(*report),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// Add node `id` as a learner at `raft_address` (its Raft address, `host:port`); with
    /// `promote`, the leader makes it a voter once it has caught up. Answered with the membership
    /// once the change is committed. Asking again for a node already so added succeeds.
    pub async fn add_member(
        &self,
        id: u64,
        raft_address: &str,
        promote: bool,
    ) -> Result<MembersReport, ClientError> {
        self.change_member(MemberChange::Add {
            id,
            raft_address: raft_address.to_owned(),
            promote,
        })
        .await
    }

    /// Make the learner `id` a voter.
    pub async fn promote_member(&self, id: u64) -> Result<MembersReport, ClientError> {
        self.change_member(MemberChange::Promote { id }).await
    }

    /// Remove node `id`, voter or learner, from the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<MembersReport, ClientError> {
        self.change_member(MemberChange::Remove { id }).await
    }

    /// Any one membership change; answered with the membership after it.
    pub async fn change_member(&self, change: MemberChange) -> Result<MembersReport, ClientError> {
        match self.call(KvRequest::ChangeMember(change), true).await? {
            KvResponse::Members(report) => Ok(*report),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// Hand leadership to node `to`; answered with the new leader's term once `to` leads.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64, ClientError> {
        match self.call(KvRequest::TransferLeader { to }, true).await? {
            KvResponse::Transferred { term, .. } => Ok(term),
            other => Err(ClientError::Unknown(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    pub(crate) async fn write(&self, mut request: KvRequest) -> Result<WriteResult, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.options.operation_timeout;
        let mut renewals = 0;
        loop {
            let (response, maybe_applied) = self.call_until(&request, true, deadline).await?;
            match response {
                KvResponse::Written {
                    outcome: KvOutcome::StaleSequence,
                    ..
                } => return Err(ClientError::Superseded),
                KvResponse::Written {
                    outcome: KvOutcome::SessionExpired,
                    ..
                } => {
                    // The cluster forgot this session: this attempt changed nothing, and every
                    // later write needs a new session.
                    let Some(expired) = request.session() else {
                        return Err(ClientError::SessionExpired);
                    };
                    self.renew_session(expired.client_id);
                    // An earlier attempt may have been applied (before the session was
                    // forgotten): sending the write again under the new session could apply it
                    // twice. The caller learns the session is gone and the outcome unknown.
                    if maybe_applied || renewals == MAX_SESSION_RENEWALS {
                        return Err(ClientError::SessionExpired);
                    }
                    // No attempt can have been applied (the cluster answered each one, or none
                    // was sent): this is the write's first arrival, refused because the cluster
                    // never saw this session's first write (it failed, or the session expired
                    // between writes). Sending it under the new session applies it once.
                    renewals += 1;
                    request.set_session(self.next_session());
                }
                KvResponse::Written { index, outcome } => {
                    return Ok(WriteResult { index, outcome })
                }
                other => {
                    return Err(ClientError::Unknown(format!(
                        "unexpected answer: {other:?}"
                    )))
                }
            }
        }
    }

    /// Send `request`, retrying on other endpoints and after leader changes until the operation
    /// timeout. A write keeps its session, so a retry is never applied twice.
    pub(crate) async fn call(
        &self,
        request: KvRequest,
        is_write: bool,
    ) -> Result<KvResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.options.operation_timeout;
        let (response, _) = self.call_until(&request, is_write, deadline).await?;
        Ok(response)
    }

    /// [`Client::call`] until `deadline`; with the answer, whether an earlier attempt may have
    /// reached a leader without an answer (a write's may then have been applied).
    async fn call_until(
        &self,
        request: &KvRequest,
        is_write: bool,
        deadline: tokio::time::Instant,
    ) -> Result<(KvResponse, bool), ClientError> {
        let mut last_error: ClientError =
            ClientError::Unavailable("no attempt made before the operation timeout".into());
        // Whether any attempt may have reached a leader (a write's outcome is then unknown).
        let mut maybe_applied = false;
        let mut attempt = 0u32;
        while tokio::time::Instant::now() < deadline {
            attempt += 1;
            match self.attempt(request).await {
                Ok(KvResponse::Error(error)) => {
                    if error.kind == ErrorKind::Unknown {
                        maybe_applied = true;
                    }
                    last_error = classify(&error);
                    if matches!(
                        error.kind,
                        ErrorKind::BadRequest
                            | ErrorKind::TooLarge
                            | ErrorKind::Conflict
                            | ErrorKind::NotFound
                            | ErrorKind::Unauthenticated
                            | ErrorKind::Forbidden
                    ) {
                        return Err(last_error);
                    }
                    if let Some(leader) = &error.leader {
                        self.switch_to(&leader.raft_addr).await;
                    } else {
                        self.drop_connection().await;
                    }
                }
                Ok(response) => return Ok((response, maybe_applied)),
                Err(AttemptError::NotSent(message)) => {
                    last_error = ClientError::Unavailable(message);
                    self.drop_connection().await;
                }
                Err(AttemptError::Lost(message)) => {
                    maybe_applied = true;
                    last_error = ClientError::Unknown(message);
                    self.drop_connection().await;
                }
            }
            let step = if matches!(last_error, ClientError::Overloaded(_)) {
                // The leader asked for room: wait longer before the next attempt.
                100
            } else {
                20
            };
            // Jittered (half to one and a half of the step times the attempt), so that clients
            // refused together do not all come back at the same instant.
            let backoff_ms = step * u64::from(attempt.min(10));
            let backoff = Duration::from_millis(rand::Rng::gen_range(
                &mut rand::thread_rng(),
                backoff_ms / 2..=backoff_ms * 3 / 2,
            ));
            tokio::time::sleep(backoff).await;
        }
        Err(match last_error {
            ClientError::Unavailable(message) | ClientError::Overloaded(message)
                if is_write && maybe_applied =>
            {
                ClientError::Unknown(message)
            }
            other => other,
        })
    }

    async fn attempt(&self, request: &KvRequest) -> Result<KvResponse, AttemptError> {
        let connection = self.connection().await?;
        let envelope = RequestEnvelope {
            forwarded_by: None,
            request: request.clone(),
        };
        let answer = tokio::time::timeout(
            self.inner.options.request_timeout,
            connection.request(encode(&envelope)),
        )
        .await;
        match answer {
            Ok(Ok(body)) => decode::<KvResponse>(&body).map_err(AttemptError::Lost),
            // Refused before any request was read: nothing ran.
            Ok(Err(error @ ClientConnectionError::Refused(_))) => {
                Err(AttemptError::NotSent(error.to_string()))
            }
            Ok(Err(error)) => Err(AttemptError::Lost(error.to_string())),
            Err(_) => Err(AttemptError::Lost(
                "timed out waiting for the answer".into(),
            )),
        }
    }

    /// The current connection, or a new one to the first endpoint that answers.
    async fn connection(&self) -> Result<Arc<ClientConnection>, AttemptError> {
        let mut current = self.inner.current.lock().await;
        if let Some(connection) = current.connection.as_ref() {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let mut errors = Vec::new();
        // Start after the endpoint that failed last, so a dead node is not tried first each time.
        let start = current
            .addr
            .as_ref()
            .and_then(|addr| self.inner.endpoints.iter().position(|e| e == addr))
            .map_or(0, |i| i + 1);
        let count = self.inner.endpoints.len();
        for offset in 0..count {
            let addr = &self.inner.endpoints[(start + offset) % count];
            match self.connect(addr).await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    *current = Current {
                        addr: Some(addr.clone()),
                        connection: Some(connection.clone()),
                    };
                    return Ok(connection);
                }
                Err(error) => errors.push(format!("{addr}: {error}")),
            }
        }
        Err(AttemptError::NotSent(format!(
            "no endpoint reachable ({})",
            errors.join("; ")
        )))
    }

    async fn connect(&self, addr: &str) -> Result<ClientConnection, String> {
        match tokio::time::timeout(
            self.inner.options.connect_timeout,
            ClientConnection::connect_with(addr, &self.inner.connect),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connect timed out".into()),
        }
    }

    /// Talk to `addr` (the leader) from now on, if it can be reached.
    async fn switch_to(&self, addr: &str) {
        if let Ok(connection) = self.connect(addr).await {
            *self.inner.current.lock().await = Current {
                addr: Some(addr.to_owned()),
                connection: Some(Arc::new(connection)),
            };
        }
    }

    /// Forget the connection; the next attempt starts with the endpoint after this one.
    async fn drop_connection(&self) {
        self.inner.current.lock().await.connection = None;
    }
}

#[derive(Default)]
struct Current {
    addr: Option<String>,
    connection: Option<Arc<ClientConnection>>,
}

/// Why one attempt failed.
enum AttemptError {
    /// Nothing was sent.
    NotSent(String),
    /// Sent, but no answer: a write may have been applied.
    Lost(String),
}

/// A random client id other than `not` (odd, so never 0).
fn fresh_client_id(not: u64) -> u64 {
    loop {
        let id = rand::random::<u64>() | 1;
        if id != not {
            return id;
        }
    }
}

fn classify(error: &ServiceError) -> ClientError {
    match error.kind {
        ErrorKind::BadRequest | ErrorKind::TooLarge => ClientError::Rejected(error.message.clone()),
        ErrorKind::Unavailable => ClientError::Unavailable(error.message.clone()),
        ErrorKind::Unknown => ClientError::Unknown(error.message.clone()),
        ErrorKind::Conflict => ClientError::Conflict(error.message.clone()),
        ErrorKind::NotFound => ClientError::NotFound(error.message.clone()),
        ErrorKind::Overloaded => ClientError::Overloaded(error.message.clone()),
        ErrorKind::Unauthenticated => ClientError::Unauthenticated(error.message.clone()),
        ErrorKind::Forbidden => ClientError::Forbidden(error.message.clone()),
    }
}
