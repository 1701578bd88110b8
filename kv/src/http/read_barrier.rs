//! A read barrier for requests that read this node's state as a whole (a backup). With
//! `consistency=linearizable` (the default) or `lease`, the node first learns the leader's read
//! index, as a linearizable read of one key would (a follower asks the leader), and waits until
//! it has applied as far: what it reads then holds every write acknowledged before the request
//! arrived, whichever member is asked. `consistency=local` reads what this node has applied,
//! without asking anyone (a member cut off from a quorum, in a disaster).

use super::{bad_query_string, bad_request, call, parse_consistency, unexpected, HttpState};
use crate::protocol::{Consistency, KvRequest, KvResponse};
use crate::store::{KeySet, RangeQuery};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// How long the node waits to apply as far as the leader's read index before it gives up.
const APPLY_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How often it looks.
const APPLY_POLL: Duration = Duration::from_millis(2);

#[derive(Deserialize)]
struct BarrierParams {
    consistency: Option<String>,
}

/// Returns once this node has applied every write acknowledged before `request` arrived (or at
/// once for `consistency=local`); the error answer otherwise: a bad `consistency`, no leader to
/// confirm the read index (503), or this node too far behind to catch up in time (503).
pub(crate) async fn applied_through_read_index(
    state: &HttpState,
    request: &HttpRequest,
) -> Result<(), HttpResponse> {
    let params = web::Query::<BarrierParams>::from_query(request.query_string())
        .map_err(|error| bad_query_string(&error))?;
    let consistency = parse_consistency(params.consistency.as_deref()).map_err(bad_request)?;
    if consistency == Consistency::Local {
        return Ok(());
    }
    // A read of at most one key name, no value: only its index matters.
    let probe = KvRequest::Range {
        query: RangeQuery {
            limit: 1,
            max_bytes: 1,
            keys_only: true,
            ..RangeQuery::new(KeySet::Prefix(String::new()))
        },
        consistency,
    };
    let read_index = match call(state, probe).await {
        KvResponse::Range(page) => page.index,
        KvResponse::Error(mut error) => {
            // A member cut off from a quorum (the case a backup may matter most) says what to do.
            error.message = format!(
                "cannot learn from the leader how far to apply first: {}; consistency=local (raftor backup --consistency local) uses what this node has applied, asking no one",
                error.message
            );
            return Err(unexpected(KvResponse::Error(error)));
        }
        other => return Err(unexpected(other)),
    };
    let deadline = tokio::time::Instant::now() + APPLY_WAIT_LIMIT;
    loop {
        match state.node.status().await {
            Ok(status) if status.applied_index.0 >= read_index => return Ok(()),
            Ok(_) => {}
            Err(error) => {
                return Err(HttpResponse::ServiceUnavailable()
                    .json(json!({ "error": error.to_string(), "leader": null })))
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HttpResponse::ServiceUnavailable().json(json!({
                "error": format!(
                    "this node has not applied as far as the leader's read index ({read_index}) within {} s: it is catching up; ask another member, or give consistency=local for what it has applied",
                    APPLY_WAIT_LIMIT.as_secs()
                ),
                "leader": null,
            })));
        }
        tokio::time::sleep(APPLY_POLL).await;
    }
}
