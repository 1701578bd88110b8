//! ReadIndex and lease reads: the rules say at which index a read may run; the applier runs it
//! once applied that far.

use super::NodeActor;
use crate::error::ReadError;
use crate::messages::{LeaseRead, LinearizableRead, QueryAt};
use actix::{Context, Handler, ResponseFuture};
use bytes::Bytes;
use raftor_core::{LeaseError, LogIndex};
use tokio::sync::oneshot;

impl NodeActor {
    /// Answer `reply` with `query` once the applier reaches `index`.
    pub(super) fn query_at(
        &self,
        index: LogIndex,
        query: Bytes,
        reply: oneshot::Sender<Result<Bytes, ReadError>>,
    ) {
        let (answer, answered) = oneshot::channel();
        self.links.applier.do_send(QueryAt {
            index,
            query,
            reply: answer,
        });
        actix::spawn(async move {
            let _ = reply.send(answered.await.map_err(|_| ReadError::Shutdown));
        });
    }

    /// Start a ReadIndex round for `query`.
    pub(super) fn read_index(
        &mut self,
        ctx: &mut Context<Self>,
        query: Bytes,
    ) -> ResponseFuture<Result<Bytes, ReadError>> {
        let id = self.next_read_id;
        self.next_read_id += 1;
        if let Err(not_leader) = self.raft.read_index(id) {
            let error = ReadError::NotLeader {
                leader: not_leader.leader,
            };
            return Box::pin(async move { Err(error) });
        }
        let (reply, answer) = oneshot::channel();
        self.pending_reads.insert(id, (query, reply));
        self.schedule_ready(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(ReadError::Shutdown)) })
    }
}

impl Handler<LinearizableRead> for NodeActor {
    type Result = ResponseFuture<Result<Bytes, ReadError>>;

    fn handle(&mut self, read: LinearizableRead, ctx: &mut Context<Self>) -> Self::Result {
        self.read_index(ctx, read.query)
    }
}

impl Handler<LeaseRead> for NodeActor {
    type Result = ResponseFuture<Result<Bytes, ReadError>>;

    fn handle(&mut self, read: LeaseRead, ctx: &mut Context<Self>) -> Self::Result {
        match self.raft.lease_read_index(self.ticks_owed()) {
            Ok(index) => {
                let (reply, answer) = oneshot::channel();
                self.query_at(index, read.query, reply);
                Box::pin(async move { answer.await.unwrap_or(Err(ReadError::Shutdown)) })
            }
            Err(LeaseError::NotLeader(not_leader)) => {
                let error = ReadError::NotLeader {
                    leader: not_leader.leader,
                };
                Box::pin(async move { Err(error) })
            }
            // No fresh lease: confirm leadership the slow way rather than risk a stale answer.
            Err(LeaseError::Expired) => self.read_index(ctx, read.query),
        }
    }
}
