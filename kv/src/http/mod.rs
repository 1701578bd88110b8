//! The HTTP API (actix-web), served by every node: `/v1/kv/{key}` (PUT, GET, DELETE), CAS,
//! `/v1/kv?prefix=` (range reads and deletes), `/v1/txn`, `/v1/watch` (Server-Sent Events),
//! `/v1/leases`, `/v1/members` (GET, POST; `/{id}/promote`, DELETE `/{id}`), `/v1/leader/transfer`,
//! `/v1/admin/snapshot`, `/v1/admin/backup` (streamed; [`crate::backup`]),
//! `/v1/status`, `/health`, `/livez`, `/readyz`, `/metrics`. Every request goes to the node's [`KvService`].

mod answer_room;
mod body;
mod early;
pub mod json;
mod keys;
mod leases;
mod paced;
mod range;
pub(crate) mod read_barrier;
mod watch;

use answer_room::call_answered;
use body::read_body;
pub use range::continue_token;

use crate::auth::{authorize, Access, Refusal, Role};
use crate::metrics::ServiceMetrics;
use crate::protocol::{
    Consistency, ErrorKind, KvRequest, KvResponse, MemberChange, RequestEnvelope, ServiceError,
};
use crate::service::KvService;
use crate::store::{KvOutcome, Session};
use actix::Addr;
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use raftor_actors::network::client::default_client_connection_limit;
use raftor_actors::network::keepalive::configure_accepted;
use raftor_actors::network::tls::NodeTls;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    pub service: Addr<KvService>,
    pub node: raftor::RaftNode<crate::store::KvStateMachine>,
    pub metrics: Arc<ServiceMetrics>,
    /// The largest value and key, and so the largest answer each request may get.
    pub limits: crate::service::AnswerLimits,
    /// Who may do what ([`crate::auth`]); checked before any route runs.
    pub access: Access,
    /// The node's TLS identity, when the cluster runs TLS: HTTPS is served with its certificate,
    /// and `/v1/cluster` asks the other members over TLS with it.
    pub tls: Option<NodeTls>,
    /// The cluster's id (named in backups).
    pub cluster_id: String,
    /// This node's watchers (`/v1/watch` streams run here).
    pub hub: Arc<crate::watch::WatchHub>,
    /// The room all request bodies being read share ([`body`]).
    pub arriving: Arc<raftor_actors::network::answer_budget::SharedRoom>,
    /// The room all answers that may carry values share, from before they are built until they
    /// are written ([`answer_room`]).
    pub answers: Arc<raftor_actors::network::answer_budget::SharedRoom>,
}

/// The API as an actix-web application.
fn app(
    state: HttpState,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .wrap(from_fn(authenticate))
        .wrap(from_fn(paced::answer_at_pace))
        .configure(routes)
        .default_service(web::to(not_found))
}

/// The role a request needs, by its route: none for the probes, `/metrics` and the page itself
/// (whose data, `/v1/cluster`, needs read); read for other reads; admin for anything that
/// changes the membership, the leadership or a node (`/v1/members`, `/v1/leader`, `/v1/admin`);
/// read-write for the other writes.
fn required_role(method: &Method, path: &str) -> Option<Role> {
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/health" | "/livez" | "/readyz" | "/metrics" | "/ui" => None,
        _ if path.starts_with("/v1/admin/") => Some(Role::Admin),
        _ if read => Some(Role::Read),
        _ if path.starts_with("/v1/members") || path.starts_with("/v1/leader/") => {
            Some(Role::Admin)
        }
        _ => Some(Role::ReadWrite),
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if the request has one.
fn bearer_token(request: &ServiceRequest) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Refuses a request its credential does not allow (401 without a valid token, 403 with a role
/// too weak), before any route runs.
async fn authenticate(
    request: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let needed = required_role(request.method(), request.path());
    let access = request
        .app_data::<web::Data<HttpState>>()
        .map(|state| state.access.clone())
        .unwrap_or_default();
    if let (Some(needed), true) = (needed, access.is_enforced()) {
        let held = access.role_of_token(bearer_token(&request));
        if let Err(refusal) = authorize(&held, needed) {
            let mut response = error_response(&ServiceError::refused(&refusal));
            if matches!(refusal, Refusal::Unauthenticated(_)) {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"raftor\""),
                );
            }
            let mut request = request;
            let unread = actix_web::HttpMessage::take_payload(&mut request);
            let response = early::answer_before_body(response, unread, request.request()).await;
            return Ok(request.into_response(response));
        }
    }
    next.call(request).await
}

/// A running HTTP API, to stop on shutdown.
pub enum HttpServerHandle {
    /// On worker threads of its own (`--http-workers N`, N ≥ 1).
    Workers(actix_web::dev::ServerHandle),
    /// On the node's own thread (`--http-workers 0`).
    NodeThread(CancellationToken),
}

impl HttpServerHandle {
    /// Stop accepting connections (and, for worker threads, finish the requests under way).
    pub async fn stop(&self) {
        match self {
            HttpServerHandle::Workers(handle) => handle.stop(true).await,
            HttpServerHandle::NodeThread(cancel) => cancel.cancel(),
        }
    }
}

/// Bind `addr` and serve the API until the returned handle is stopped: on `workers` threads of
/// its own, or with `workers == 0` on the calling thread (the node's: each request then reaches
/// the node without crossing threads, which is quicker when the node has a core to itself).
/// Must run inside an actix System.
pub fn serve(
    state: HttpState,
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(HttpServerHandle, SocketAddr)> {
    if workers == 0 {
        return serve_on_this_thread(state, addr);
    }
    let tls = state.tls.as_ref().map(NodeTls::https_config);
    // actix-web counts connections per worker.
    let per_worker = default_client_connection_limit().div_ceil(workers);
    let server = HttpServer::new(move || app(state.clone()))
        .workers(workers)
        .max_connections(per_worker)
        .client_disconnect_timeout(LINGER_FOR_UNREAD_BODY)
        .on_connect(|connection, _| configure_worker_connection(connection))
        .disable_signals();
    let server = match tls {
        None => server.bind(addr)?,
        Some(tls) => server.bind_rustls_0_23(addr, Arc::unwrap_or_clone(tls))?,
    };
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let running = server.run();
    let handle = running.handle();
    actix::spawn(async move {
        if let Err(error) = running.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok((HttpServerHandle::Workers(handle), bound))
}

/// A connection accepted by actix-web's workers, plain or TLS: set up as every accepted
/// connection is (`configure_accepted`: keepalive probes, a bound on unacknowledged data).
fn configure_worker_connection(connection: &dyn std::any::Any) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<tokio::net::TcpStream>;
    if let Some(stream) = connection.downcast_ref::<tokio::net::TcpStream>() {
        configure_accepted(stream);
    } else if let Some(stream) = connection.downcast_ref::<Tls>() {
        configure_accepted(stream.get_ref().0);
    }
}

/// How long a connection answered before its request body was read (a write refused by its
/// token, a value over the limit) goes on reading and discarding that body before it closes:
/// closing with the client's bytes unread makes the kernel reset the connection, and the reset
/// can throw away the answer before the client reads it, so the client saw "connection reset"
/// instead of 403 or 413. Set on both modes: actix-web's `HttpServer` (worker threads) lingers
/// this long by default, actix-http's builder (the node's thread) not at all unless told.
const LINGER_FOR_UNREAD_BODY: std::time::Duration = std::time::Duration::from_secs(1);

fn serve_on_this_thread(
    state: HttpState,
    addr: SocketAddr,
) -> std::io::Result<(HttpServerHandle, SocketAddr)> {
    use actix_service::{fn_service, map_config, ServiceFactoryExt};
    use paced::Paced;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let cancel = CancellationToken::new();
    let stopped = cancel.clone();
    let tls = state.tls.as_ref().map(NodeTls::https_config);
    // One service per transport: its stream type differs (TCP, or TLS over TCP). Each HTTP/1
    // connection's stream is paced ([`paced`]); the service finds the pace in its connection's
    // data.
    macro_rules! service {
        () => {
            actix_http::HttpService::build()
                .client_disconnect_timeout(LINGER_FOR_UNREAD_BODY)
                .on_connect_ext(|io: &Paced<_>, data: &mut actix_http::Extensions| {
                    if let Some(pace) = io.pace() {
                        data.insert(pace.clone());
                    }
                })
                .finish(map_config(app(state.clone()), |_| {
                    actix_web::dev::AppConfig::default()
                }))
        };
    }
    match tls {
        None => {
            let paced = fn_service(|io: tokio::net::TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok((Paced::new(io), actix_http::Protocol::Http1, peer))
            });
            actix::spawn(accept_loop(paced.and_then(service!()), listener, stopped))
        }
        Some(tls) => {
            let tls = paced::https_paced(Arc::unwrap_or_clone(tls));
            actix::spawn(accept_loop(tls.and_then(service!()), listener, stopped))
        }
    };
    Ok((HttpServerHandle::NodeThread(cancel), bound))
}

/// Accepts connections on `listener` and serves each with a service of `factory` (plain HTTP or
/// HTTPS), until `stopped`; at most [`default_client_connection_limit`] at once (as actix-web's
/// workers, it accepts no more until one closes, so clients cannot take every file descriptor
/// the node needs).
async fn accept_loop<F>(factory: F, listener: tokio::net::TcpListener, stopped: CancellationToken)
where
    F: actix_service::ServiceFactory<tokio::net::TcpStream, Config = ()>,
    F::Service: 'static,
    F::InitError: std::fmt::Debug,
{
    use actix_service::Service;
    let service = match factory.new_service(()).await {
        Ok(service) => std::rc::Rc::new(service),
        Err(error) => {
            tracing::error!(?error, "cannot build the HTTP service");
            return;
        }
    };
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(
        default_client_connection_limit(),
    ));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped.cancelled() => return,
            accepted = async {
                let slot = open.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => accepted,
        };
        match accepted {
            (Ok(slot), Ok((stream, _peer))) => {
                configure_accepted(&stream);
                let service = service.clone();
                actix::spawn(async move {
                    // A connection's errors (a client hanging up, a malformed request, a failed
                    // TLS handshake) end that connection only; actix-http has answered what it
                    // could.
                    let _ = service.call(stream).await;
                    drop(slot);
                });
            }
            (Err(_closed), _) => return,
            (_, Err(error)) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The API's routes. A query string or path that cannot be extracted is a JSON 400 like every
/// other bad request (actix-web's own answer would be plain text).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::QueryConfig::default().error_handler(|error, _request| {
                let response = bad_query_string(&error);
                actix_web::error::InternalError::from_response(error, response).into()
            }),
        )
        .app_data(web::PathConfig::default().error_handler(|error, _request| {
            let response = bad_request(format!("bad path: {error}"));
            actix_web::error::InternalError::from_response(error, response).into()
        }))
        // `/v1/kv` itself is the range API; every path below it names a key ([`keys`]), routed
        // by prefix, without a regular expression.
        .service(
            web::scope("/v1/kv")
                .service(
                    resource("")
                        .route(web::get().to(range::range))
                        .route(web::delete().to(range::delete_range)),
                )
                .default_service(web::to(keys::route)),
        )
        .service(resource("/v1/txn").route(web::post().to(range::txn)))
        .service(resource("/v1/watch").route(web::get().to(watch::watch)))
        .service(
            resource("/v1/leases")
                .route(web::post().to(leases::grant))
                .route(web::get().to(leases::list)),
        )
        .service(
            resource("/v1/leases/{id}")
                .route(web::get().to(leases::show))
                .route(web::delete().to(leases::revoke)),
        )
        .service(resource("/v1/leases/{id}/keepalive").route(web::post().to(leases::keep_alive)))
        .service(resource("/v1/admin/backup").route(web::get().to(crate::backup::serve)))
        .service(resource("/v1/admin/snapshot").route(web::post().to(snapshot)))
        .service(
            resource("/v1/members")
                .route(web::get().to(members))
                .route(web::post().to(add_member)),
        )
        .service(resource("/v1/members/{id}").route(web::delete().to(remove_member)))
        .service(resource("/v1/members/{id}/promote").route(web::post().to(promote_member)))
        .service(resource("/v1/leader/transfer").route(web::post().to(transfer_leader)))
        .service(resource("/v1/status").route(web::get().to(status)))
        .service(resource("/health").route(web::get().to(health)))
        .service(resource("/ui").route(web::get().to(crate::ui::page)))
        .service(resource("/v1/cluster").route(web::get().to(crate::ui::cluster)))
        .service(resource("/livez").route(web::get().to(livez)))
        .service(resource("/readyz").route(web::get().to(readyz)))
        .service(resource("/metrics").route(web::get().to(metrics)));
}

/// A resource answering 405 to the methods it has no route for.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

fn error_response(error: &ServiceError) -> HttpResponse {
    let status =
        StatusCode::from_u16(error.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if error.kind == ErrorKind::Overloaded {
        // The writes in flight drain in a few seconds at most at the default bound; the client
        // comes back sooner and is refused again only while they do.
        response.insert_header(("Retry-After", "1"));
    }
    response.json(json!({ "error": error.message, "leader": error.leader, "overloaded": error.kind == ErrorKind::Overloaded }))
}

/// The 400 of a query string that does not fit its route, extracted or parsed by hand.
fn bad_query_string(error: &actix_web::error::QueryPayloadError) -> HttpResponse {
    bad_request(format!("bad query string: {error}"))
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(&ServiceError::new(ErrorKind::BadRequest, message))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "no such route", "leader": null }))
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .json(json!({ "error": "method not allowed on this route", "leader": null }))
}

/// The exactly-once session from `X-Raftor-Client` and `X-Raftor-Seq`: both or neither.
fn session(request: &HttpRequest) -> Result<Option<Session>, ServiceError> {
    let bad_request = |message: String| ServiceError::new(ErrorKind::BadRequest, message);
    let header = |name: &str| -> Result<Option<u64>, ServiceError> {
        match request.headers().get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| bad_request(format!("{name} must be an unsigned integer"))),
        }
    };
    match (header("X-Raftor-Client")?, header("X-Raftor-Seq")?) {
        (Some(client_id), Some(sequence)) if sequence > 0 => Ok(Some(Session {
            client_id,
            sequence,
        })),
        (None, None) => Ok(None),
        _ => Err(bad_request(
            "X-Raftor-Client and X-Raftor-Seq go together, and the sequence starts at 1".into(),
        )),
    }
}

/// Run `request` through the node's service (on any node; the service forwards to the leader).
pub(crate) async fn call(state: &HttpState, request: KvRequest) -> KvResponse {
    KvService::call(
        &state.service,
        RequestEnvelope {
            forwarded_by: None,
            request,
        },
    )
    .await
}

fn unexpected(response: KvResponse) -> HttpResponse {
    match response {
        KvResponse::Error(error) => error_response(&error),
        other => error_response(&ServiceError::new(
            ErrorKind::Unknown,
            format!("unexpected answer: {other:?}"),
        )),
    }
}

/// The answer to a write the state machine refused (nothing changed).
fn written_refusal(outcome: &KvOutcome) -> HttpResponse {
    match outcome {
        KvOutcome::StaleSequence => stale_sequence(),
        KvOutcome::SessionExpired => session_expired(),
        KvOutcome::LeaseNotFound { id } => HttpResponse::NotFound().json(json!({
            "error": format!("lease {id} does not exist (it expired, was revoked, or was never granted); nothing was written"),
            "leader": null
        })),
        other => error_response(&ServiceError::new(
            ErrorKind::Unknown,
            format!("unexpected outcome: {other:?}"),
        )),
    }
}

/// `consistency=` as given, linearizable when absent.
fn parse_consistency(text: Option<&str>) -> Result<Consistency, String> {
    text.map_or(Ok(Consistency::Linearizable), str::parse::<Consistency>)
}

fn stale_sequence() -> HttpResponse {
    HttpResponse::Conflict().json(json!({
        "error": "X-Raftor-Seq is older than this client's latest write; nothing was applied",
        "leader": null
    }))
}

/// 410 Gone: the cluster forgot this client's session (it expired), so the write was refused
/// rather than risk applying it twice. Nothing was applied by this request; whether an earlier
/// attempt of it was is unknown. Retrying with the same `X-Raftor-Client` is refused again: start
/// a new session (a new client id, `X-Raftor-Seq: 1`). Not 409, which means "nothing applied,
/// the session is fine" (a stale sequence, a CAS mismatch): here the session itself is gone for
/// good, which is what 410 says of a resource.
fn session_expired() -> HttpResponse {
    HttpResponse::Gone().json(json!({
        "error": "session expired: the cluster no longer knows this X-Raftor-Client, so the write was refused (nothing was applied by this request; whether an earlier attempt was is unknown); start a new session with a new X-Raftor-Client and X-Raftor-Seq 1",
        "leader": null
    }))
}

/// `POST /v1/admin/snapshot`: this node takes a snapshot now and compacts its log behind it.
async fn snapshot(state: web::Data<HttpState>) -> HttpResponse {
    match call(&state, KvRequest::Snapshot).await {
        KvResponse::Snapshot(report) => HttpResponse::Ok().json(report),
        other => unexpected(other),
    }
}

/// The largest JSON body of a membership or leadership request.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// `GET /v1/members`: the membership as this node sees it.
async fn members(state: web::Data<HttpState>) -> HttpResponse {
    match call(&state, KvRequest::Members).await {
        KvResponse::Members(report) => HttpResponse::Ok().json(report),
        other => unexpected(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    id: u64,
    raft_address: String,
    #[serde(default)]
    promote: bool,
}

/// Reads a JSON body of type `T`, or answers 400 saying what was expected.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &HttpState,
    request: &HttpRequest,
    payload: web::Payload,
    expected: &str,
) -> Result<T, HttpResponse> {
    let body = read_body(&state.arriving, request, payload, ADMIN_BODY_LIMIT).await?;
    serde_json::from_slice(&body)
        .map_err(|error| bad_request(format!("expected JSON {expected}: {error}")))
}

async fn change_member(state: &HttpState, change: MemberChange) -> HttpResponse {
    match call(state, KvRequest::ChangeMember(change)).await {
        KvResponse::Members(report) => HttpResponse::Ok().json(report),
        other => unexpected(other),
    }
}

/// `POST /v1/members` `{"id": N, "raft_address": "host:port", "promote": bool}`: add a learner.
async fn add_member(
    state: web::Data<HttpState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body: AddMemberBody = match json_body(
        &state,
        &request,
        payload,
        r#"{"id": N, "raft_address": "host:port", "promote": true | false}"#,
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let change = MemberChange::Add {
        id: body.id,
        raft_address: body.raft_address,
        promote: body.promote,
    };
    change_member(&state, change).await
}

/// `POST /v1/members/{id}/promote`: make a learner a voter.
async fn promote_member(state: web::Data<HttpState>, id: web::Path<u64>) -> HttpResponse {
    change_member(
        &state,
        MemberChange::Promote {
            id: id.into_inner(),
        },
    )
    .await
}

/// `DELETE /v1/members/{id}`: remove a member.
async fn remove_member(state: web::Data<HttpState>, id: web::Path<u64>) -> HttpResponse {
    change_member(
        &state,
        MemberChange::Remove {
            id: id.into_inner(),
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: u64,
}

/// `POST /v1/leader/transfer` `{"to": N}`: answered once node N leads.
async fn transfer_leader(
    state: web::Data<HttpState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body: TransferBody = match json_body(&state, &request, payload, r#"{"to": N}"#).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match call(&state, KvRequest::TransferLeader { to: body.to }).await {
        KvResponse::Transferred { leader, term } => {
            HttpResponse::Ok().json(json!({ "leader": leader, "term": term }))
        }
        other => unexpected(other),
    }
}

async fn status(state: web::Data<HttpState>) -> HttpResponse {
    match call(&state, KvRequest::Status).await {
        KvResponse::Status(report) => HttpResponse::Ok().json(report),
        other => unexpected(other),
    }
}

/// How far the applied index may trail the commit index for the node to count as healthy.
pub const HEALTHY_APPLY_LAG: u64 = 1000;

/// Entries the node has committed and not yet applied.
fn apply_lag(status: &raftor_actors::NodeStatus) -> u64 {
    status.commit_index.0.saturating_sub(status.applied_index.0)
}

async fn health(state: web::Data<HttpState>) -> HttpResponse {
    match state.node.status().await.ok() {
        Some(status) if status.leader.is_some() && apply_lag(&status) <= HEALTHY_APPLY_LAG => {
            HttpResponse::Ok().json(json!({ "healthy": true, "leader": status.leader.map(|l| l.0), "term": status.term.0 }))
        }
        Some(status) => HttpResponse::ServiceUnavailable().json(json!({
            "healthy": false,
            "leader": status.leader.map(|l| l.0),
            "commit_index": status.commit_index.0,
            "applied_index": status.applied_index.0,
        })),
        None => HttpResponse::ServiceUnavailable().json(json!({ "healthy": false, "error": "shutting down" })),
    }
}

/// Kubernetes' liveness probe: the process runs and its node's actors answer (restart it if
/// not). Says nothing of the cluster: a node cut off from every peer is live.
async fn livez(state: web::Data<HttpState>) -> HttpResponse {
    match state.node.status().await {
        Ok(status) => HttpResponse::Ok().json(json!({
            "live": true,
            "id": status.id.0,
            "role": status.role.as_str(),
            "term": status.term.0,
        })),
        Err(error) => HttpResponse::ServiceUnavailable()
            .json(json!({ "live": false, "error": error.to_string() })),
    }
}

/// How long `/readyz` waits for its linearizable read.
pub const READYZ_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Kubernetes' readiness probe: send this node traffic only if it knows a leader, has applied
/// to within [`HEALTHY_APPLY_LAG`] of its commit index, and a linearizable read through it (to
/// the leader, forwarded from a follower) succeeds within [`READYZ_READ_TIMEOUT`]. Each check is
/// named in the answer; the first to fail is `failed`.
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let not_ready = |failed: &str, detail: serde_json::Value| {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "failed": failed, "detail": detail }))
    };
    let status = match state.node.status().await {
        Ok(status) => status,
        Err(error) => return not_ready("live", json!(error.to_string())),
    };
    let Some(leader) = status.leader else {
        return not_ready("leader", json!("no leader known"));
    };
    let lag = apply_lag(&status);
    if lag > HEALTHY_APPLY_LAG {
        return not_ready(
            "applied",
            json!({ "commit_index": status.commit_index.0, "applied_index": status.applied_index.0 }),
        );
    }
    let read = call(
        &state,
        KvRequest::Get {
            key: "readyz".into(),
            consistency: Consistency::Linearizable,
        },
    );
    match tokio::time::timeout(READYZ_READ_TIMEOUT, read).await {
        Ok(KvResponse::Value { .. }) => HttpResponse::Ok().json(json!({
            "ready": true,
            "leader": leader.0,
            "term": status.term.0,
            "apply_lag": lag,
        })),
        Ok(KvResponse::Error(error)) => not_ready("linearizable_read", json!(error.message)),
        Ok(other) => not_ready("linearizable_read", json!(format!("{other:?}"))),
        Err(_) => not_ready(
            "linearizable_read",
            json!(format!("no answer within {READYZ_READ_TIMEOUT:?}")),
        ),
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let status = state.node.status().await.ok();
    state.metrics.set_watchers(state.hub.active());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(status.as_ref()))
}
