//! Linearizable reads on a follower without carrying values from the leader (ReadIndex from a
//! follower, thesis §6.4, as etcd's followers read).
//!
//! The follower asks the leader only for a read index: it forwards the same read at the same
//! consistency, cut to one key name (keys only, at most one, so the leader reserves no room for
//! a value to answer it), which the leader serves as any
//! read, after confirming its leadership (or within its lease), and answers with the index its
//! state reflected. Every write acknowledged before the read began is at or below that index.
//! The follower then serves the read from its own state machine once that has applied as far:
//! its state then holds every such write, and nothing uncommitted. Before, a follower forwarded
//! the whole read, and the value crossed to the leader and back over the one session a follower
//! forwards on: reads of large values filled that session ahead of small ones (BENCHMARKS.md,
//! issue 22). A follower that has not applied as far within [`APPLY_WAIT_LIMIT`] (far behind:
//! catching up, or restoring a snapshot) forwards the whole read, as before.

use super::Runner;
use crate::protocol::{Consistency, KvRequest, KvResponse};
use crate::store::{KeySet, KvAnswer, KvQuery, RangePage, RangeQuery};
use raftor_core::NodeId;
use std::time::Duration;

/// How long a follower waits to apply as far as the leader's read index before it forwards the
/// whole read instead.
pub(super) const APPLY_WAIT_LIMIT: Duration = Duration::from_millis(500);

/// How often a follower looks whether it has applied as far.
const APPLY_POLL: Duration = Duration::from_millis(1);

/// The query and consistency of `request` when it is a read a follower serves itself
/// ([`Runner::read_through`]): a linearizable or lease GET or range.
pub(super) fn served_here(request: &KvRequest) -> Option<(RangeQuery, Consistency)> {
    let (query, consistency) = match request {
        KvRequest::Get { key, consistency } => {
            (RangeQuery::new(KeySet::Key(key.clone())), consistency)
        }
        KvRequest::Range { query, consistency } => (query.clone(), consistency),
        _ => return None,
    };
    matches!(consistency, Consistency::Linearizable | Consistency::Lease)
        .then_some((query, *consistency))
}

impl Runner {
    /// Serve `request` on this follower at the read index of `leader`, `query` and
    /// `consistency` being what [`served_here`] found in it; any error the leader answers is the
    /// answer.
    pub(super) async fn read_through(
        &self,
        leader: NodeId,
        request: &KvRequest,
        query: RangeQuery,
        consistency: Consistency,
    ) -> KvResponse {
        let probe = KvRequest::Range {
            // Its answer, and the room the leader reserves for it, carry no value.
            query: RangeQuery {
                limit: 1,
                max_bytes: 1,
                keys_only: true,
                ..RangeQuery::new(query.keys.clone())
            },
            consistency,
        };
        let read_index = match self.forward_to(leader, probe, false).await {
            KvResponse::Range(page) => page.index,
            other => return other,
        };
        let deadline = tokio::time::Instant::now() + APPLY_WAIT_LIMIT;
        loop {
            match self.read_here(query.clone()).await {
                Ok(page) if page.index >= read_index => return answer(page, request),
                Ok(_behind) => {}
                Err(response) => return response,
            }
            if tokio::time::Instant::now() >= deadline {
                return self.forward_to(leader, request.clone(), false).await;
            }
            tokio::time::sleep(APPLY_POLL).await;
        }
    }

    /// `query` read from this node's state machine as it is now: the page, with the index it
    /// reflects.
    async fn read_here(&self, query: RangeQuery) -> Result<RangePage, KvResponse> {
        match self.answer(KvQuery::Range(query), Consistency::Local).await {
            Ok(KvAnswer::Range(page)) => Ok(page),
            Ok(_) => Err(super::unexpected_answer()),
            Err(super::Local::Done(response)) => Err(response),
            Err(_) => Err(super::unavailable("the node is shutting down")),
        }
    }
}

/// `page` as the answer to `request`: a GET's value, or the page.
fn answer(page: RangePage, request: &KvRequest) -> KvResponse {
    match request {
        KvRequest::Get { .. } => KvResponse::Value {
            value: page.kvs.into_iter().next().and_then(|kv| kv.value),
        },
        _ => KvResponse::Range(page),
    }
}
