//! ReadIndex and lease reads: the rules say at which index a read may run; the applier runs it
//! once applied that far and answers the reader itself.

use super::NodeActor;
use crate::error::ReadError;
use crate::messages::{Answer, LeaseRead, LinearizableRead, QueryAt, Reply};
use actix::{Context, Handler};
use bytes::Bytes;
use raftor_core::{LeaseError, LogIndex};
use tokio::sync::oneshot;

impl NodeActor {
    /// Have the applier answer `reply` with `query` once it reaches `index`.
    pub(super) fn query_at(&self, index: LogIndex, query: Bytes, reply: Reply<Bytes, ReadError>) {
        self.links.applier.do_send(QueryAt {
            index,
            query,
            reply,
        });
    }

    /// Start a ReadIndex round for `query`.
    pub(super) fn read_index(
        &mut self,
        ctx: &mut Context<Self>,
        query: Bytes,
    ) -> Result<Answer<Bytes, ReadError>, ReadError> {
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.raft
            .read_index(id)
            .map_err(|not_leader| ReadError::NotLeader {
                leader: not_leader.leader,
            })?;
        let (reply, answer) = oneshot::channel();
        self.pending_reads.insert(id, (query, reply));
        self.schedule_ready(ctx);
        Ok(answer)
    }
}

impl Handler<LinearizableRead> for NodeActor {
    type Result = Result<Answer<Bytes, ReadError>, ReadError>;

    fn handle(&mut self, read: LinearizableRead, ctx: &mut Context<Self>) -> Self::Result {
        self.read_index(ctx, read.query)
    }
}

impl Handler<LeaseRead> for NodeActor {
    type Result = Result<Answer<Bytes, ReadError>, ReadError>;

    fn handle(&mut self, read: LeaseRead, ctx: &mut Context<Self>) -> Self::Result {
        match self.raft.lease_read_index(self.ticks_owed()) {
            Ok(index) => {
                let (reply, answer) = oneshot::channel();
                self.query_at(index, read.query, reply);
                Ok(answer)
            }
            Err(LeaseError::NotLeader(not_leader)) => Err(ReadError::NotLeader {
                leader: not_leader.leader,
            }),
            // No fresh lease: confirm leadership the slow way rather than risk a stale answer.
            Err(LeaseError::Expired) => self.read_index(ctx, read.query),
        }
    }
}
