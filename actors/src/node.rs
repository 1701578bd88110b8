//! The node actor: drives the Raft rules with ticks and messages, and carries out each `Ready` by
//! handing its parts to the actor that owns them (log store, replicators, applier, transport).

use crate::applier::Applier;
use crate::error::ProposeError;
use crate::messages::{
    Applied, AwaitApply, Commit, Flushed, Heartbeat, HigherTermSeen, LeaderProgress, PeerResponse,
    Propose, ReadEntries, ReplicationReport, Shutdown, StorageFailed, Write,
};
use crate::replicator::{ReplicationLimits, Replicator};
use crate::transport::{Inbound, Outbound};
use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message as ActixMessage,
    MessageResult, Recipient, ResponseFuture,
};
use raftor_core::{LeadershipChange, LogId, LogIndex, Message, NodeId, Raft, Role, Term};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a node reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_log_id: LogId,
    pub voters: Vec<NodeId>,
    /// On the leader: each voter's match index.
    pub matched: BTreeMap<NodeId, LogIndex>,
}

/// Ask a node for its [`NodeStatus`].
#[derive(ActixMessage, Debug)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// The actors a node talks to, other than its replicators (which it starts itself).
pub(crate) struct NodeLinks {
    pub(crate) log_write: Recipient<Write>,
    pub(crate) log_read: Recipient<ReadEntries>,
    pub(crate) log_shutdown: Recipient<Shutdown>,
    pub(crate) applier: Addr<Applier>,
    pub(crate) transport: Recipient<Outbound>,
}

pub struct NodeActor {
    raft: Raft,
    tick: Duration,
    limits: ReplicationLimits,
    links: NodeLinks,
    /// One replicator per peer while leader, all of the current term; empty otherwise.
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    applied_index: LogIndex,
}

impl NodeActor {
    pub(crate) fn new(
        raft: Raft,
        tick: Duration,
        limits: ReplicationLimits,
        links: NodeLinks,
    ) -> Self {
        NodeActor {
            raft,
            tick,
            limits,
            links,
            replicators: BTreeMap::new(),
            applied_index: LogIndex::ZERO,
        }
    }

    fn id(&self) -> NodeId {
        self.raft.id()
    }

    /// Carry out what the rules asked for, in order: persistence first (the log store sends the
    /// messages once it is durable), then leadership changes, replication and application.
    fn process_ready(&mut self, ctx: &mut Context<Self>) {
        let ready = self.raft.take_ready();
        if ready.is_empty() {
            return;
        }
        let term = self.raft.current_term();
        if let Some(hard_state) = &ready.write.hard_state {
            tracing::debug!(node = %self.id(), term = %term, voted_for = ?hard_state.voted_for, "persisting hard state");
        }
        if !ready.write.is_empty() || !ready.messages.is_empty() {
            self.links.log_write.do_send(Write {
                write: ready.write,
                then_send: ready.messages,
            });
        }
        match ready.leadership {
            Some(LeadershipChange::Became { term, last_index }) => {
                tracing::info!(node = %self.id(), term = %term, "became leader");
                self.start_replicators(ctx, term, last_index);
            }
            Some(LeadershipChange::Lost) => {
                tracing::info!(node = %self.id(), term = %term, "stepped down");
                self.stop_replicators();
            }
            None => {}
        }
        let commit_index = self.raft.commit_index();
        if ready.heartbeat {
            for replicator in self.replicators.values() {
                replicator.do_send(Heartbeat { commit_index });
            }
        }
        if ready.appended.is_some() || ready.commit_index.is_some() {
            let last_index = self.raft.last_log_id().index;
            for replicator in self.replicators.values() {
                replicator.do_send(LeaderProgress {
                    last_index,
                    commit_index,
                });
            }
        }
        if let Some(index) = ready.commit_index {
            self.links.applier.do_send(Commit { index });
        }
    }

    fn start_replicators(&mut self, ctx: &mut Context<Self>, term: Term, last_index: LogIndex) {
        self.stop_replicators();
        let me = self.id();
        for peer in self
            .raft
            .config()
            .voters
            .iter()
            .copied()
            .filter(|p| *p != me)
        {
            let replicator = Replicator::new(
                me,
                peer,
                term,
                last_index,
                self.limits,
                ctx.address(),
                self.links.log_read.clone(),
                self.links.transport.clone(),
            )
            .start();
            self.replicators.insert(peer, replicator);
        }
    }

    fn stop_replicators(&mut self) {
        for (_, replicator) in std::mem::take(&mut self.replicators) {
            replicator.do_send(Shutdown);
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id(),
            role: self.raft.role(),
            term: self.raft.current_term(),
            leader: self.raft.leader_id(),
            commit_index: self.raft.commit_index(),
            applied_index: self.applied_index,
            last_log_id: self.raft.last_log_id(),
            voters: self.raft.config().voters.iter().copied().collect(),
            matched: self.raft.matched().cloned().unwrap_or_default(),
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            node = %self.id(),
            term = %self.raft.current_term(),
            last_log = %self.raft.last_log_id(),
            commit = %self.raft.commit_index(),
            "node started"
        );
        ctx.run_interval(self.tick, |node, ctx| {
            node.raft.tick();
            node.process_ready(ctx);
        });
        // The recovered commit index, if any, goes to the applier.
        self.process_ready(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.stop_replicators();
        self.links.applier.do_send(Shutdown);
        self.links.log_shutdown.do_send(Shutdown);
        tracing::info!(node = %self.id(), term = %self.raft.current_term(), "node stopped");
    }
}

impl Handler<Inbound> for NodeActor {
    type Result = ();

    fn handle(&mut self, Inbound(envelope): Inbound, ctx: &mut Context<Self>) {
        if envelope.to != self.id() {
            return;
        }
        if let Message::AppendEntriesResponse(response) = &envelope.message {
            if let Some(replicator) = self.replicators.get(&envelope.from) {
                replicator.do_send(PeerResponse(response.clone()));
            }
        }
        let before = self.raft.current_term();
        self.raft.step(envelope.from, envelope.message);
        if self.raft.current_term() > before {
            tracing::info!(node = %self.id(), term = %self.raft.current_term(), from = %envelope.from, "adopted a newer term");
        }
        self.process_ready(ctx);
    }
}

impl Handler<Flushed> for NodeActor {
    type Result = ();

    fn handle(&mut self, flushed: Flushed, ctx: &mut Context<Self>) {
        self.raft.on_log_flushed(flushed.last);
        self.process_ready(ctx);
    }
}

impl Handler<ReplicationReport> for NodeActor {
    type Result = ();

    fn handle(&mut self, report: ReplicationReport, ctx: &mut Context<Self>) {
        self.raft
            .on_replication_report(report.peer, report.term, report.matched);
        self.process_ready(ctx);
    }
}

impl Handler<HigherTermSeen> for NodeActor {
    type Result = ();

    fn handle(&mut self, seen: HigherTermSeen, ctx: &mut Context<Self>) {
        // The peer's answer said it all: hand the rules a message carrying that term.
        self.raft.step(
            seen.peer,
            Message::AppendEntriesResponse(raftor_core::AppendEntriesResponse {
                term: seen.term,
                request_id: 0,
                outcome: raftor_core::AppendOutcome::StaleTerm,
            }),
        );
        self.process_ready(ctx);
    }
}

impl Handler<Applied> for NodeActor {
    type Result = ();

    fn handle(&mut self, applied: Applied, _ctx: &mut Context<Self>) {
        self.applied_index = self.applied_index.max(applied.index);
    }
}

impl Handler<StorageFailed> for NodeActor {
    type Result = ();

    fn handle(&mut self, failed: StorageFailed, ctx: &mut Context<Self>) {
        tracing::error!(node = %self.id(), term = %self.raft.current_term(), error = %failed.error, "storage failed: stopping this node");
        ctx.stop();
    }
}

impl Handler<Propose> for NodeActor {
    type Result = ResponseFuture<Result<bytes::Bytes, ProposeError>>;

    fn handle(&mut self, propose: Propose, ctx: &mut Context<Self>) -> Self::Result {
        let ids = match self.raft.propose(vec![propose.command]) {
            Ok(ids) => ids,
            Err(not_leader) => {
                let error = ProposeError::NotLeader {
                    leader: not_leader.leader,
                };
                return Box::pin(async move { Err(error) });
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Some(id) = ids.first() {
            // Registered before the entry can possibly commit: the applier's mailbox keeps the order.
            self.links.applier.do_send(AwaitApply {
                index: id.index,
                term: id.term,
                reply,
            });
        }
        self.process_ready(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(ProposeError::Shutdown)) })
    }
}

impl Handler<GetStatus> for NodeActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<Shutdown> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
