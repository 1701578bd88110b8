//! `/v1/kv/{key}`: PUT, GET and DELETE of one key, and a compare-and-swap as a POST to the key's
//! path plus `/cas`. Keys may hold slashes (`app/a`).
//!
//! The key is everything after `/v1/kv/`, decoded as actix-web decodes a path segment: the routes
//! are one scope with a plain prefix (`/v1/kv`) and this dispatcher as its default service, so a
//! request is routed by string comparison, without the regular expression a `{key:.+}` pattern
//! compiles to (`regex_lite` matched it for every request: 1.7% of a leader's CPU under 64
//! writing clients, BENCHMARKS.md, issue 22).

use super::{
    bad_query_string, bad_request, call, call_answered, error_response, method_not_allowed,
    not_found, parse_consistency, read_body, session, unexpected, written_refusal, HttpState,
};
use crate::protocol::{KvRequest, KvResponse};
use crate::store::{KeySet, KvOutcome, RangeQuery, Txn, TxnOp};
use actix_router::Quoter;
use actix_web::error::QueryPayloadError;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

thread_local! {
    /// Decodes every percent-escape, as actix-web's `Path` extractor does to a captured segment.
    static FULL_QUOTER: Quoter = Quoter::new(b"", b"");
}

/// The default service of the `/v1/kv` scope: the key from the rest of the path, the handler by
/// the method. No key (`/v1/kv/`) is no route; a method other than the four is 405.
pub(super) async fn route(
    state: web::Data<HttpState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let Some(key) = key_of(request.match_info().unprocessed()) else {
        return not_found().await;
    };
    match *request.method() {
        Method::PUT => put(&state, &request, key, payload).await,
        Method::GET => get(&state, &request, key).await,
        Method::DELETE => delete(&state, &request, key).await,
        Method::POST => cas(&state, &request, key, payload).await,
        _ => method_not_allowed().await,
    }
}

/// The key named by what follows the scope's prefix (`/app/a` for `/v1/kv/app/a`), decoded;
/// `None` when nothing does.
fn key_of(rest: &str) -> Option<String> {
    let raw = rest.strip_prefix('/').filter(|raw| !raw.is_empty())?;
    Some(
        match FULL_QUOTER.with(|quoter| quoter.requote(raw.as_bytes())) {
            Some(decoded) => String::from_utf8_lossy(&decoded).into_owned(),
            None => raw.to_owned(),
        },
    )
}

/// The query string as `T`, or the 400 the routes' `Query` extractor answers for it.
fn query<T: serde::de::DeserializeOwned>(request: &HttpRequest) -> Result<T, QueryPayloadError> {
    web::Query::<T>::from_query(request.query_string()).map(web::Query::into_inner)
}

/// The answer to a write that was applied: `{"index": N}`.
#[derive(Serialize)]
struct Written {
    index: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutParams {
    /// Attach the key to this lease (it goes when the lease does).
    lease: Option<u64>,
}

async fn put(
    state: &HttpState,
    request: &HttpRequest,
    key: String,
    payload: web::Payload,
) -> HttpResponse {
    let params: PutParams = match query(request) {
        Ok(params) => params,
        Err(error) => return bad_query_string(&error),
    };
    let session = match session(request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    let value = match read_body(
        &state.arriving,
        request,
        payload,
        state.limits.max_value_bytes,
    )
    .await
    {
        Ok(value) => value,
        Err(response) => return response,
    };
    let request = match params.lease {
        None => KvRequest::Put {
            key,
            value,
            session,
        },
        Some(0) => return bad_request("lease ids are positive integers"),
        Some(lease) => KvRequest::Txn {
            txn: Txn {
                success: vec![TxnOp::Put {
                    key,
                    value,
                    lease: Some(lease),
                }],
                ..Txn::default()
            },
            session,
        },
    };
    match call(state, request).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::Put { .. } | KvOutcome::Txn(_),
        } => HttpResponse::Ok().json(Written { index }),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    consistency: Option<String>,
    /// Answer JSON with the key's revisions instead of the raw value.
    #[serde(default)]
    meta: bool,
}

/// The value, raw, with the key's revisions in `X-Raftor-*` headers (or all of it as JSON with
/// `meta=true`).
async fn get(state: &HttpState, request: &HttpRequest, key: String) -> HttpResponse {
    let params: ReadParams = match query(request) {
        Ok(params) => params,
        Err(error) => return bad_query_string(&error),
    };
    let consistency = match parse_consistency(params.consistency.as_deref()) {
        Ok(consistency) => consistency,
        Err(message) => return bad_request(message),
    };
    let range = RangeQuery::new(KeySet::Key(key));
    let page = match call_answered(
        state,
        request,
        KvRequest::Range {
            query: range,
            consistency,
        },
    )
    .await
    {
        KvResponse::Range(page) => page,
        other => return unexpected(other),
    };
    let Some(kv) = page.kvs.first() else {
        return HttpResponse::NotFound()
            .insert_header(("X-Raftor-Index", page.index.to_string()))
            .json(json!({ "error": "no such key", "leader": null, "index": page.index }));
    };
    if params.meta {
        let mut body = super::json::key_value(kv);
        body["index"] = json!(page.index);
        return HttpResponse::Ok().json(body);
    }
    let mut response = HttpResponse::Ok();
    response
        .content_type("application/octet-stream")
        .insert_header(("X-Raftor-Index", page.index.to_string()))
        .insert_header(("X-Raftor-Create-Index", kv.create_index.to_string()))
        .insert_header(("X-Raftor-Mod-Index", kv.mod_index.to_string()))
        .insert_header(("X-Raftor-Version", kv.version.to_string()));
    if let Some(lease) = kv.lease {
        response.insert_header(("X-Raftor-Lease", lease.to_string()));
    }
    response.body(kv.value.clone().unwrap_or_default())
}

async fn delete(state: &HttpState, request: &HttpRequest, key: String) -> HttpResponse {
    let session = match session(request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    match call(state, KvRequest::Delete { key, session }).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::Deleted { existed },
        } => HttpResponse::Ok().json(json!({ "index": index, "deleted": existed })),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expected: Option<String>,
    value: String,
}

async fn cas(
    state: &HttpState,
    request: &HttpRequest,
    key: String,
    payload: web::Payload,
) -> HttpResponse {
    let Some(key) = key.strip_suffix("/cas").map(str::to_owned) else {
        return method_not_allowed().await;
    };
    let session = match session(request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    // JSON doubles the size of a value at worst; the value itself is checked by the service.
    let body = match read_body(
        &state.arriving,
        request,
        payload,
        state
            .limits
            .max_value_bytes
            .saturating_mul(2)
            .saturating_add(1024),
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let body: CasBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return bad_request(format!(
                "expected JSON {{\"expected\": \"old\" | null, \"value\": \"new\"}}: {error}"
            ))
        }
    };
    let swap = KvRequest::Cas {
        key,
        expected: body.expected.map(Bytes::from),
        value: Bytes::from(body.value),
        session,
    };
    match call_answered(state, request, swap).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::Swapped,
        } => HttpResponse::Ok().json(Written { index }),
        KvResponse::Written {
            outcome: KvOutcome::Mismatch { current },
            ..
        } => HttpResponse::Conflict()
            .json(json!({ "current": current.map(|c| String::from_utf8_lossy(&c).into_owned()) })),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}
