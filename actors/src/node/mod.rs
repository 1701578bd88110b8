//! The node actor: drives the Raft rules with ticks and messages, and carries out each `Ready` by
//! handing its parts to the actor that owns them (log store, applier, transport, a sender per
//! peer). The leader's sends leave from here when the entry cache holds what they carry.
//!
//! - `ready.rs`: carrying out a `Ready`, in order.
//! - `persist.rs`: where a write is made (here, or on the log store's thread).
//! - `sends.rs`: the leader's sends, from the cache or through a peer's sender.
//! - `snapshot_in.rs`: a snapshot arriving from the leader.
//! - `reads.rs`: ReadIndex and lease reads.
//! - `status.rs`: what the node reports about itself.

mod persist;
mod published;
mod reads;
mod ready;
mod sends;
mod snapshot_in;
mod status;

pub(crate) use published::Watchers;
pub use published::{Leadership, StopCause};
pub use status::{GetStatus, NodeStatus, PeerFlow, SnapshotSummary};

use crate::applier::Applier;
use crate::entry_cache::EntryCache;
use crate::error::{MembershipChangeError, ProposeError, ReadError, TransferLeaderError};
use crate::log_store::LogWriter;
use crate::messages::{
    Answer, Applied, Fail, Flushed, Propose, ReadEntries, Reply, SendReport, Shutdown,
    SnapshotTaken, StorageFailed, Waiter, Write,
};
use crate::network::tcp::UpdatePeers;
use crate::peer_sender::{PeerSender, ReplicationLimits};
use crate::snapshot::{Receiving, SnapshotOptions};
use crate::transport::{Inbound, Outbound};
use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message as ActixMessage, Recipient,
};
use bytes::Bytes;
use published::Published;
use raftor_core::{ConfChange, LogIndex, NodeId, Raft, Standing};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Change the membership (see [`crate::NodeHandle::change_membership`]): refused at once, or
/// answered with an [`Answer`] the applier resolves once it has applied the configuration entry.
#[derive(ActixMessage, Debug)]
#[rtype(result = "Result<Answer<Bytes, ProposeError>, MembershipChangeError>")]
pub struct ChangeMembership {
    pub changes: Vec<ConfChange>,
}

/// Start handing leadership to `to` (see [`crate::NodeHandle::transfer_leadership`]).
#[derive(ActixMessage, Debug)]
#[rtype(result = "Result<(), TransferLeaderError>")]
pub struct TransferLeader {
    pub to: NodeId,
}

/// The actors a node talks to, other than its peers' senders (which it starts itself).
pub(crate) struct NodeLinks {
    pub(crate) log_write: Recipient<Write>,
    /// Writes on this thread, when allowed ([`NodeActor::persist`]).
    pub(crate) log_writer: Arc<dyn LogWriter>,
    /// The largest batch written on this thread (see [`crate::NodeOptions`]).
    pub(crate) inline_write_max_entries: usize,
    /// How long a spare follower holds a write (see [`crate::NodeOptions`]).
    pub(crate) spare_sync_hold: Duration,
    pub(crate) log_read: Recipient<ReadEntries>,
    pub(crate) log_shutdown: Recipient<Shutdown>,
    pub(crate) applier: Addr<Applier>,
    pub(crate) transport: Recipient<Outbound>,
    /// Told the members' addresses when the configuration changes (the TCP endpoint).
    pub(crate) peer_addresses: Option<Recipient<UpdatePeers>>,
    /// The newest entries, shared with the applier: the leader's sends come from here.
    pub(crate) cache: EntryCache,
    /// Snapshots, when this node takes and installs them.
    pub(crate) snapshots: Option<SnapshotOptions>,
}

pub struct NodeActor {
    raft: Raft,
    tick: Duration,
    /// The node's clock: ticks are counted from here, so the rules learn of every elapsed
    /// `tick` however late the timer fires (after a stall, the missed ones as `skip_ticks`).
    clock_start: Instant,
    /// Ticks handed to the rules since `clock_start`.
    ticks_delivered: u64,
    limits: ReplicationLimits,
    links: NodeLinks,
    /// While leader, a sender for each peer whose sends needed IO this term (a log store read,
    /// a snapshot); empty otherwise.
    senders: BTreeMap<NodeId, Addr<PeerSender>>,
    applied_index: LogIndex,
    /// Reads waiting for their read index, by the id given to the rules.
    pending_reads: BTreeMap<u64, (Bytes, Reply<Bytes, ReadError>)>,
    next_read_id: u64,
    /// Proposers of entries proposed since the last `Ready`, handed to the applier with it.
    waiters: Vec<Waiter>,
    /// The highest index the applier was told it may apply (committed and locally durable).
    applicable_sent: LogIndex,
    /// Entries (and their payload bytes) handed to the log store since start, for status.
    log_entries_appended: u64,
    log_bytes_appended: u64,
    /// Writes made on this thread and handed to the log store, for status.
    log_writes_inline: u64,
    log_writes_handed_off: u64,
    /// A snapshot arriving from the leader (follower only), chunk by chunk.
    receiving: Option<Receiving>,
    /// A snapshot received whole and handed to the rules: it becomes the store's newest when
    /// they install it (`Ready::restore`), and is dropped with its file otherwise.
    staged: Option<raftor_storage::StagedSnapshot>,
    /// Whether a [`ProcessReady`] is already on its way to this actor: the events that arrive
    /// together (a burst of proposals, a pipeline of AppendEntries) share one `Ready`, and so one
    /// log write and one message per peer.
    ready_scheduled: bool,
    /// A leader's write waiting for its turn of the event loop, or a spare follower's for its
    /// hold to end ([`NodeActor::persist`]); later writes merge into it, so none overtakes it.
    held_write: Option<persist::HeldWrite>,
    /// Spare followers' holds begun so far: a hold's timer ends only its own hold.
    holds_begun: u64,
    /// How many of the leader's latest writes in a row found nothing else in flight (every
    /// earlier entry committed): a client waiting for each write before the next.
    sequential_writes: u32,
    /// Leadership and configuration for the node's watchers, updated with every `Ready`.
    published: Published,
    /// The newest snapshot in the store: restored at start, then each one taken or installed.
    newest_snapshot: Option<SnapshotSummary>,
}

/// Carry out the rules' `Ready` (sent by the node to itself once its mailbox is empty).
#[derive(ActixMessage, Debug)]
#[rtype(result = "()")]
struct ProcessReady;

impl NodeActor {
    pub(crate) fn new(
        raft: Raft,
        tick: Duration,
        limits: ReplicationLimits,
        links: NodeLinks,
        newest_snapshot: Option<SnapshotSummary>,
    ) -> (Self, Watchers) {
        let (published, watchers) = Published::new(&raft);
        let node = NodeActor {
            raft,
            tick,
            clock_start: Instant::now(),
            ticks_delivered: 0,
            limits,
            links,
            senders: BTreeMap::new(),
            applied_index: LogIndex::ZERO,
            pending_reads: BTreeMap::new(),
            next_read_id: 1,
            waiters: Vec::new(),
            applicable_sent: LogIndex::ZERO,
            log_entries_appended: 0,
            log_bytes_appended: 0,
            log_writes_inline: 0,
            log_writes_handed_off: 0,
            receiving: None,
            staged: None,
            ready_scheduled: false,
            held_write: None,
            holds_begun: 0,
            sequential_writes: 0,
            published,
            newest_snapshot,
        };
        (node, watchers)
    }

    /// Process the `Ready` once every message already in the mailbox has been handled (actix
    /// drains the mailbox before it runs what `notify` queued), so that they share it.
    fn schedule_ready(&mut self, ctx: &mut Context<Self>) {
        if !self.ready_scheduled {
            self.ready_scheduled = true;
            ctx.notify(ProcessReady);
        }
    }

    fn id(&self) -> NodeId {
        self.raft.id()
    }

    /// Stop this node because going on could break a promise: `reason` says what failed (a
    /// write whose outcome is unknown; what follows might depend on what was lost). The node's
    /// watchers learn why ([`StopCause::Failed`]).
    fn stop_failing(&mut self, ctx: &mut Context<Self>, reason: String) {
        tracing::error!(node = %self.id(), term = %self.raft.current_term(), %reason, "stopping this node");
        self.published.stopped_because(StopCause::Failed { reason });
        ctx.stop();
    }

    /// Ticks the clock has run past those handed to the rules: 0 while the timer keeps up, more
    /// after the thread stalled (the rules then count them against a lease).
    fn ticks_owed(&self) -> u64 {
        let elapsed = self.clock_start.elapsed().as_nanos();
        let due = elapsed / self.tick.as_nanos().max(1);
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.ticks_delivered)
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
            standing = self.raft.standing().as_str(),
            "node started"
        );
        if self.raft.standing() != Standing::Member {
            tracing::warn!(
                node = %self.id(),
                standing = self.raft.standing().as_str(),
                "this node's store is new (a new cluster or member, or a node that lost its data): it votes only once it has rejoined (asked every other member for its term, then caught up past them; a node that joined is a member once the leader answers that no configuration names it a voter; see README, \"A node that lost its data\")"
            );
        }
        self.clock_start = Instant::now();
        ctx.run_interval(self.tick, |node, ctx| {
            let owed = node.ticks_owed();
            if owed == 0 {
                return;
            }
            // After a stall, one tick: the rest only move the lease clock on (`skip_ticks`),
            // so the messages queued meanwhile are read before any timer judges the others.
            node.raft.skip_ticks(owed - 1);
            node.raft.tick();
            node.ticks_delivered += owed;
            node.process_ready(ctx);
        });
        // The recovered commit index, if any, goes to the applier.
        self.process_ready(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Unless it stopped itself (`stop_failing` recorded why), it was told to.
        self.published.stopped_because(StopCause::Shutdown);
        self.senders.clear();
        // Dropping the readers' senders answers them with ReadError::Shutdown.
        self.pending_reads.clear();
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
        let before = self.raft.current_term();
        self.raft.step(envelope.from, envelope.message);
        if self.raft.current_term() > before {
            tracing::info!(node = %self.id(), term = %self.raft.current_term(), from = %envelope.from, "adopted a newer term");
        }
        self.schedule_ready(ctx);
    }
}

impl Handler<Flushed> for NodeActor {
    type Result = ();

    fn handle(&mut self, flushed: Flushed, ctx: &mut Context<Self>) {
        self.raft.on_log_flushed(flushed.last);
        self.schedule_ready(ctx);
    }
}

impl Handler<SendReport> for NodeActor {
    type Result = ();

    fn handle(&mut self, SendReport(outcome): SendReport, ctx: &mut Context<Self>) {
        self.raft.on_send_outcome(outcome);
        self.schedule_ready(ctx);
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
        self.stop_failing(ctx, format!("storage failed: {}", failed.error));
    }
}

impl Handler<Fail> for NodeActor {
    type Result = ();

    fn handle(&mut self, Fail { reason }: Fail, ctx: &mut Context<Self>) {
        self.stop_failing(ctx, reason);
    }
}

impl Handler<Propose> for NodeActor {
    type Result = Result<Answer<Bytes, ProposeError>, ProposeError>;

    fn handle(&mut self, propose: Propose, ctx: &mut Context<Self>) -> Self::Result {
        let ids = self.raft.propose(vec![propose.command])?;
        let (reply, applied) = oneshot::channel();
        if let Some(id) = ids.first() {
            self.waiters.push(Waiter {
                index: id.index,
                term: id.term,
                reply,
            });
        }
        self.schedule_ready(ctx);
        Ok(applied)
    }
}

impl Handler<ChangeMembership> for NodeActor {
    type Result = Result<Answer<Bytes, ProposeError>, MembershipChangeError>;

    fn handle(&mut self, change: ChangeMembership, ctx: &mut Context<Self>) -> Self::Result {
        let id = self.raft.propose_membership(&change.changes)?;
        tracing::info!(node = %self.id(), term = %self.raft.current_term(), index = %id.index, changes = ?change.changes, "membership change proposed");
        let (reply, applied) = oneshot::channel();
        self.waiters.push(Waiter {
            index: id.index,
            term: id.term,
            reply,
        });
        self.schedule_ready(ctx);
        Ok(applied)
    }
}

impl Handler<TransferLeader> for NodeActor {
    type Result = Result<(), TransferLeaderError>;

    fn handle(&mut self, transfer: TransferLeader, ctx: &mut Context<Self>) -> Self::Result {
        self.raft.transfer_leadership(transfer.to)?;
        tracing::info!(node = %self.id(), term = %self.raft.current_term(), to = %transfer.to, "leadership transfer started");
        self.schedule_ready(ctx);
        Ok(())
    }
}

impl Handler<SnapshotTaken> for NodeActor {
    type Result = ();

    /// A snapshot is durable: forget the log behind it, but for the trailing margin.
    fn handle(&mut self, taken: SnapshotTaken, ctx: &mut Context<Self>) {
        // One taken here may finish after a newer one was installed from the leader.
        if self
            .newest_snapshot
            .is_none_or(|newest| newest.last_included.index < taken.meta.last_included.index)
        {
            self.newest_snapshot = Some(SnapshotSummary::of(&taken.meta));
        }
        let trailing = self
            .links
            .snapshots
            .as_ref()
            .map_or(0, |options| options.policy.trailing_entries);
        let upto = LogIndex(taken.meta.last_included.index.0.saturating_sub(trailing));
        if let Some(start) = self.raft.compact_log(upto) {
            tracing::info!(node = %self.id(), term = %self.raft.current_term(), log_start = %start, "log compacted");
            self.schedule_ready(ctx);
        }
    }
}

impl Handler<ProcessReady> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: ProcessReady, ctx: &mut Context<Self>) {
        self.ready_scheduled = false;
        self.process_ready(ctx);
    }
}

impl Handler<Shutdown> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
