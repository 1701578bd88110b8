//! Leases: `POST /v1/leases` (grant, `{"ttl": seconds}`), `GET /v1/leases` (list),
//! `GET /v1/leases/{id}` (one, with its keys and time left), `POST /v1/leases/{id}/keepalive`,
//! `DELETE /v1/leases/{id}` (revoke: its keys are deleted). Keys are attached with
//! `PUT /v1/kv/{key}?lease={id}` or a transaction's put.

use super::written_refusal;
use super::{
    bad_request, call, call_answered, error_response, json_body, session, unexpected, HttpState,
};
use crate::protocol::{KvRequest, KvResponse};
use crate::store::{KvOutcome, LeaseView};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// Seconds.
    ttl: Option<u64>,
    ttl_ms: Option<u64>,
}

fn lease_json(lease: &LeaseView, with_keys: bool) -> Value {
    let mut value = json!({
        "id": lease.id,
        "ttl_ms": lease.ttl_ms,
        "remaining_ms": lease.remaining_ms,
        "keys_total": lease.keys_total,
    });
    if with_keys {
        value["keys"] = json!(lease.keys);
    }
    value
}

pub async fn grant(
    state: web::Data<HttpState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let session = match session(&request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    let body: GrantBody = match json_body(&state, &request, payload, "{\"ttl\": seconds}").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let ttl_ms = match (body.ttl, body.ttl_ms) {
        (Some(seconds), None) => seconds.saturating_mul(1000),
        (None, Some(ms)) => ms,
        _ => return bad_request("give the TTL as ttl (seconds) or ttl_ms, one of them"),
    };
    match call(&state, KvRequest::LeaseGrant { ttl_ms, session }).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::LeaseGranted { id, ttl_ms },
        } => HttpResponse::Ok().json(json!({ "index": index, "id": id, "ttl_ms": ttl_ms })),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}

pub async fn list(state: web::Data<HttpState>, request: HttpRequest) -> HttpResponse {
    match call_answered(&state, &request, KvRequest::Leases).await {
        KvResponse::Leases(leases) => {
            let leases: Vec<Value> = leases.iter().map(|l| lease_json(l, false)).collect();
            HttpResponse::Ok().json(json!({ "leases": leases }))
        }
        other => unexpected(other),
    }
}

pub async fn show(
    state: web::Data<HttpState>,
    request: HttpRequest,
    id: web::Path<u64>,
) -> HttpResponse {
    match call_answered(&state, &request, KvRequest::LeaseInfo { id: *id }).await {
        KvResponse::Lease(lease) => HttpResponse::Ok().json(lease_json(&lease, true)),
        other => unexpected(other),
    }
}

pub async fn keep_alive(state: web::Data<HttpState>, id: web::Path<u64>) -> HttpResponse {
    match call(&state, KvRequest::LeaseKeepAlive { id: *id }).await {
        KvResponse::Lease(lease) => HttpResponse::Ok().json(lease_json(&lease, false)),
        other => unexpected(other),
    }
}

pub async fn revoke(
    state: web::Data<HttpState>,
    request: HttpRequest,
    id: web::Path<u64>,
) -> HttpResponse {
    let session = match session(&request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    match call(&state, KvRequest::LeaseRevoke { id: *id, session }).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::LeaseRevoked { existed: true, deleted },
        } => HttpResponse::Ok().json(json!({ "index": index, "revoked": true, "deleted": deleted })),
        KvResponse::Written {
            outcome: KvOutcome::LeaseRevoked { existed: false, .. },
            ..
        } => HttpResponse::NotFound().json(json!({
            "error": format!("lease {} does not exist (it expired, was revoked, or was never granted)", *id),
            "leader": null
        })),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}
