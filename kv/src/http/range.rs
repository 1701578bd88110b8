//! `GET /v1/kv?prefix=P` (or `key=K`, or `start=S&end=E`): a page of keys with their revisions;
//! `DELETE /v1/kv?prefix=P` (or a range): delete them all; `POST /v1/txn`: a transaction.

use super::json::{self, Selector, TxnJson};
use super::{
    bad_request, call, call_answered, error_response, parse_consistency, read_body, session,
    unexpected, written_refusal, HttpState,
};
use crate::protocol::KvRequest;
use crate::protocol::KvResponse;
use crate::store::{
    KeySet, KvOutcome, RangeQuery, TxnOpResult, DEFAULT_RANGE_BYTES, DEFAULT_RANGE_LIMIT,
};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    key: Option<String>,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u32>,
    max_bytes: Option<u64>,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    count_only: bool,
    /// The previous page's `continue` token.
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    consistency: Option<String>,
}

/// The continuation token of a page that ends at `key`: the key, hex-encoded.
pub fn continue_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, String> {
    let bad = || "the continue token is not one this API gave".to_owned();
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

pub async fn range(
    state: web::Data<HttpState>,
    request: HttpRequest,
    params: web::Query<RangeParams>,
) -> HttpResponse {
    let params = params.into_inner();
    let consistency = match parse_consistency(params.consistency.as_deref()) {
        Ok(consistency) => consistency,
        Err(message) => return bad_request(message),
    };
    let keys = match (Selector {
        key: params.key,
        prefix: params.prefix,
        start: params.start,
        end: params.end,
    })
    .key_set()
    {
        Ok(keys) => keys,
        Err(message) => return bad_request(message),
    };
    let after = match params.continue_token.as_deref().map(decode_token) {
        None => None,
        Some(Ok(after)) => Some(after),
        Some(Err(message)) => return bad_request(message),
    };
    let query = RangeQuery {
        keys,
        after,
        limit: params.limit.unwrap_or(DEFAULT_RANGE_LIMIT),
        max_bytes: params.max_bytes.unwrap_or(DEFAULT_RANGE_BYTES),
        keys_only: params.keys_only,
        count_only: params.count_only,
    };
    match call_answered(&state, &request, KvRequest::Range { query, consistency }).await {
        KvResponse::Range(page) => {
            let kvs: Vec<_> = page.kvs.iter().map(json::key_value).collect();
            let next = page.next_after().map(continue_token);
            HttpResponse::Ok()
                .insert_header(("X-Raftor-Index", page.index.to_string()))
                .json(json!({
                    "index": page.index,
                    "count": page.count,
                    "more": page.more,
                    "continue": next,
                    "kvs": kvs,
                }))
        }
        other => unexpected(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// Needed to delete every key (an empty prefix, or a range from the start with no end).
    #[serde(default)]
    all: bool,
}

pub async fn delete_range(
    state: web::Data<HttpState>,
    request: HttpRequest,
    params: web::Query<DeleteParams>,
) -> HttpResponse {
    let params = params.into_inner();
    let session = match session(&request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    let keys = match (Selector {
        key: None,
        prefix: params.prefix,
        start: params.start,
        end: params.end,
    })
    .key_set()
    {
        Ok(keys) => keys,
        Err(message) => return bad_request(message),
    };
    let everything = match &keys {
        KeySet::Prefix(prefix) => prefix.is_empty(),
        KeySet::Range { start, end } => start.is_empty() && end.is_none(),
        KeySet::Key(_) => false,
    };
    if everything && !params.all {
        return bad_request("this would delete every key: add all=true if that is what you want");
    }
    match call(&state, KvRequest::DeleteRange { keys, session }).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::Txn(outcome),
        } => {
            let deleted = match outcome.results.first() {
                Some(TxnOpResult::Deleted { count }) => *count,
                _ => 0,
            };
            HttpResponse::Ok().json(json!({ "index": index, "deleted": deleted }))
        }
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}

pub async fn txn(
    state: web::Data<HttpState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let session = match session(&request) {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    // JSON doubles the size of a value at worst; the values themselves are checked by the service.
    let limit = state
        .limits
        .max_value_bytes
        .saturating_mul(2)
        .saturating_add(256 * 1024);
    let body = match read_body(&state.arriving, &request, payload, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let txn = match serde_json::from_slice::<TxnJson>(&body)
        .map_err(|e| format!("expected a transaction as JSON (compare, success, failure): {e}"))
        .and_then(TxnJson::into_txn)
    {
        Ok(txn) => txn,
        Err(message) => return bad_request(message),
    };
    match call_answered(&state, &request, KvRequest::Txn { txn, session }).await {
        KvResponse::Written {
            index,
            outcome: KvOutcome::Txn(outcome),
        } => HttpResponse::Ok().json(json::txn_outcome(index, &outcome)),
        KvResponse::Written { outcome, .. } => written_refusal(&outcome),
        other => unexpected(other),
    }
}
