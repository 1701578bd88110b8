//! The live cluster page: `GET /ui` (one HTML file built into the binary: no asset from the
//! internet) and the JSON it polls, `GET /v1/cluster`: every member's own status as this node can
//! reach it over the native protocol (the leader's included, with each peer's match index and
//! last contact), asked in parallel with a short timeout, so an unreachable member shows as such
//! instead of holding the page up.

use crate::client::{Client, ClientOptions, ClientTls};
use crate::http::HttpState;
use crate::protocol::{KvRequest, KvResponse, StatusReport};
use actix_web::{web, HttpResponse};
use raftor_core::NodeId;
use serde::Serialize;
use std::time::Duration;

/// The page, as built into the binary.
const PAGE: &str = include_str!("ui/index.html");

/// How long the page's JSON waits for each member's status.
pub const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// One member as `/v1/cluster` reports it.
#[derive(Serialize)]
struct MemberView {
    id: u64,
    raft_addr: String,
    /// Its role in the configuration in force on the answering node.
    role: String,
    /// Its own status, if it answered in time.
    status: Option<StatusReport>,
    /// Why not, if it did not.
    error: Option<String>,
}

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// `GET /v1/cluster`: this node's status and every member's own.
pub async fn cluster(state: web::Data<HttpState>) -> HttpResponse {
    let own = match crate::http::call(&state, KvRequest::Status).await {
        KvResponse::Status(report) => *report,
        _ => {
            return HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "error": "the node is shutting down" }))
        }
    };
    let asks = own.members.iter().map(|member| {
        let own = own.clone();
        let member = member.clone();
        let tls = state
            .tls
            .as_ref()
            .map(|tls| tls.member_client(NodeId(member.id)));
        async move {
            let (status, error) = if member.id == own.id {
                (Some(own), None)
            } else {
                match member_status(&member.raft_addr, tls).await {
                    Ok(status) => (Some(status), None),
                    Err(error) => (None, Some(error)),
                }
            };
            MemberView {
                id: member.id,
                raft_addr: member.raft_addr,
                role: member.role,
                status,
                error,
            }
        }
    });
    let members = futures::future::join_all(asks).await;
    HttpResponse::Ok().json(serde_json::json!({
        "node": own.id,
        "members": members,
    }))
}

/// A member's own status over the native protocol, within [`MEMBER_STATUS_TIMEOUT`].
/// With TLS, it presents this node's certificate (a member may ask any member).
async fn member_status(raft_addr: &str, tls: Option<ClientTls>) -> Result<StatusReport, String> {
    let options = ClientOptions {
        tls,
        token: None,
        request_timeout: MEMBER_STATUS_TIMEOUT,
        operation_timeout: MEMBER_STATUS_TIMEOUT,
        connect_timeout: MEMBER_STATUS_TIMEOUT,
    };
    let client = Client::new(vec![raft_addr.to_owned()], options).map_err(|e| e.to_string())?;
    match tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.status()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {MEMBER_STATUS_TIMEOUT:?}")),
    }
}
