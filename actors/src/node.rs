//! The node actor: drives the Raft rules with ticks and messages, and carries out each `Ready` by
//! handing its parts to the actor that owns them (log store, replicators, applier, transport).

use crate::applier::Applier;
use crate::entry_cache::EntryCache;
use crate::error::{MembershipChangeError, ProposeError, ReadError, TransferLeaderError};
use crate::log_store::LogWriter;
use crate::messages::{
    Applied, AwaitApply, Commit, ConfirmLeadership, Flushed, FollowerDataLoss, Heartbeat,
    HigherTermSeen, LeaderProgress, LeadershipConfirmed, LeaseRead, LinearizableRead, PeerResponse,
    PeerSnapshotResponse, Propose, QueryAt, ReadEntries, ReplicationReport, RestoreSnapshot,
    Shutdown, SnapshotTaken, StorageFailed, Waiter, Write,
};
use crate::network::tcp::UpdatePeers;
use crate::replicator::{ReplicationLimits, Replicator};
use crate::snapshot::{ChunkOutcome, Receiving, SnapshotOptions};
use crate::transport::{Inbound, Outbound};
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler,
    Message as ActixMessage, MessageResult, Recipient, ResponseFuture, WrapFuture,
};
use bytes::Bytes;
use raftor_core::{
    ConfChange, Envelope, InstallSnapshot, InstallSnapshotResponse, LeadershipChange, LeaseError,
    LogId, LogIndex, LogWrite, Membership, Message, NodeId, Raft, Role, SnapshotMeta,
    SnapshotOutcome, Standing, Term,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

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
    /// The voters of the configuration in force (the incoming ones, when joint).
    pub voters: Vec<NodeId>,
    /// The configuration in force here (the last in the log: committed or not, §6).
    pub membership: Membership,
    /// The index of the entry holding `membership` (at or before the log's start when it came
    /// from a snapshot or the bootstrap configuration).
    pub membership_index: LogIndex,
    /// On the leader: the node leadership is being handed to.
    pub transfer_target: Option<NodeId>,
    /// On the leader: each member's match index.
    pub matched: BTreeMap<NodeId, LogIndex>,
    /// Real elections this node started since it started.
    pub elections_started: u64,
    /// On the leader: each peer's next index, as its replicator last reported it.
    pub next_index: BTreeMap<NodeId, LogIndex>,
    /// On the leader: time since each peer last answered (`None`: not yet this term).
    pub since_contact: BTreeMap<NodeId, Option<Duration>>,
    /// Entries this node handed to its log store since it started (its own or a leader's).
    pub log_entries_appended: u64,
    /// Payload bytes of those entries.
    pub log_bytes_appended: u64,
    /// Synced log writes this node made on its own thread since it started (small batches while
    /// lightly loaded; see `NodeActor::persist`).
    pub log_writes_inline: u64,
    /// Writes it handed to the log store's thread (larger batches, and a loaded leader's).
    pub log_writes_handed_off: u64,
    /// The last compacted entry (the log holds what follows it); `LogId::ZERO` if none was.
    pub log_start: LogId,
    /// Whether this node's store holds every promise it made (`raftor_core::Standing`): a node
    /// whose store started empty (new, or one that lost its data) rejoins before it votes.
    pub standing: Standing,
}

/// Ask a node for its [`NodeStatus`].
#[derive(ActixMessage, Debug)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// Change the membership (see [`crate::NodeHandle::change_membership`]): answered with the id of
/// the configuration entry and a receiver that resolves once the applier has applied it.
#[derive(ActixMessage, Debug)]
#[rtype(result = "Result<oneshot::Receiver<Result<Bytes, ProposeError>>, MembershipChangeError>")]
pub struct ChangeMembership {
    pub changes: Vec<ConfChange>,
}

/// Start handing leadership to `to` (see [`crate::NodeHandle::transfer_leadership`]).
#[derive(ActixMessage, Debug)]
#[rtype(result = "Result<(), TransferLeaderError>")]
pub struct TransferLeader {
    pub to: NodeId,
}

/// The actors a node talks to, other than its replicators (which it starts itself).
pub(crate) struct NodeLinks {
    pub(crate) log_write: Recipient<Write>,
    /// Writes on this thread, when allowed ([`NodeActor::persist`]).
    pub(crate) log_writer: Arc<dyn LogWriter>,
    /// The largest batch written on this thread (see [`crate::NodeOptions`]).
    pub(crate) inline_write_max_entries: usize,
    pub(crate) log_read: Recipient<ReadEntries>,
    pub(crate) log_shutdown: Recipient<Shutdown>,
    pub(crate) applier: Addr<Applier>,
    pub(crate) transport: Recipient<Outbound>,
    /// Told the members' addresses when the configuration changes (the TCP endpoint).
    pub(crate) peer_addresses: Option<Recipient<UpdatePeers>>,
    /// The newest entries, shared with the replicators and the applier.
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
    /// One replicator per peer while leader, all of the current term; empty otherwise.
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    /// Each peer's next index as its replicator reported it (leader only).
    next_index: BTreeMap<NodeId, LogIndex>,
    applied_index: LogIndex,
    /// Reads waiting for their read index, by the id given to the rules.
    pending_reads: BTreeMap<u64, (Bytes, oneshot::Sender<Result<Bytes, ReadError>>)>,
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
    /// A leader's write waiting for its turn of the event loop ([`NodeActor::persist`]), with the
    /// messages to send once it is durable; later writes merge into it, so none overtakes it.
    deferred_write: Option<(LogWrite, Vec<Envelope>)>,
    /// How many of the leader's latest writes in a row found nothing else in flight (every
    /// earlier entry committed): a client waiting for each write before the next.
    sequential_writes: u32,
}

/// A leader writes on its own thread only after this many sequential writes in a row
/// ([`NodeActor::sequential_writes`]). One write found alone says little: with 16 clients the
/// pipeline drains now and then, and writing there then stalled it (11% fewer writes/s measured).
const SEQUENTIAL_WRITES_TO_WRITE_HERE: u32 = 8;

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
    ) -> Self {
        NodeActor {
            raft,
            tick,
            clock_start: Instant::now(),
            ticks_delivered: 0,
            limits,
            links,
            replicators: BTreeMap::new(),
            next_index: BTreeMap::new(),
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
            deferred_write: None,
            sequential_writes: 0,
        }
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

    /// Ticks the clock has run past those handed to the rules: 0 while the timer keeps up, more
    /// after the thread stalled (the rules then count them against a lease).
    fn ticks_owed(&self) -> u64 {
        let elapsed = self.clock_start.elapsed().as_nanos();
        let due = elapsed / self.tick.as_nanos().max(1);
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.ticks_delivered)
    }

    /// Carry out what the rules asked for, in order: persistence first (the log store sends the
    /// messages once it is durable), then leadership changes, replication and application.
    fn process_ready(&mut self, ctx: &mut Context<Self>) {
        let ready = self.raft.take_ready();
        if !self.waiters.is_empty() {
            // Ahead of any Commit that could cover their entries: the applier's mailbox keeps order.
            self.links
                .applier
                .do_send(AwaitApply(std::mem::take(&mut self.waiters)));
        }
        if ready.is_empty() {
            self.send_applicable();
            return;
        }
        if let Some(meta) = &ready.restore {
            // The rules installed a received snapshot: it becomes the store's newest before the
            // log is compacted or cut behind it.
            if let Err(error) = self.promote_staged(meta) {
                tracing::error!(node = %self.id(), term = %self.raft.current_term(), %error, "cannot keep the received snapshot: stopping this node");
                ctx.stop();
                return;
            }
        }
        self.staged = None;
        let term = self.raft.current_term();
        if let Some(standing) = ready.write.standing {
            match standing {
                Standing::Member => {
                    tracing::info!(node = %self.id(), term = %term, "rejoined: this node's store holds what it promised; it votes again")
                }
                Standing::CatchingUp { floor, floor_log } => {
                    tracing::info!(node = %self.id(), term = %term, %floor, %floor_log, "rejoining: the voters answered; votes only in terms after the floor, for logs at least as up to date as the floor log, until it holds an entry of a later term")
                }
                Standing::Rejoining => {}
            }
        }
        if let Some(hard_state) = &ready.write.hard_state {
            tracing::debug!(node = %self.id(), term = %term, voted_for = ?hard_state.voted_for, "persisting hard state");
        }
        // The cache shows the log as the rules see it from now on; replicators may send from it
        // while the log store syncs (the leader counts its own copy only once flushed).
        self.links.cache.apply(&ready.write);
        self.log_entries_appended += ready.write.entries.len() as u64;
        self.log_bytes_appended += ready
            .write
            .entries
            .iter()
            .map(|entry| entry.payload_len() as u64)
            .sum::<u64>();
        if !ready.write.is_empty() || !ready.messages.is_empty() {
            self.persist(ctx, ready.write, ready.messages);
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
        if let Some(membership) = ready.membership {
            self.on_membership(ctx, membership);
        } else if ready.commit_index.is_some()
            && self
                .replicators
                .keys()
                .any(|peer| !self.raft.membership().conf.contains(*peer))
        {
            // A committed configuration may end replication to the previous one's members (only
            // they can be lingering: checked without building the target set on every commit).
            self.reconcile_replicators(ctx);
        }
        if let Some(meta) = ready.restore {
            // Ahead of the Commit that covers it: the applier restores, then applies what follows.
            self.links.applier.do_send(RestoreSnapshot { meta });
        }
        if !ready.snapshot_chunks.is_empty() {
            for (from, chunk) in ready.snapshot_chunks {
                self.receive_chunk(from, chunk);
            }
            // A completed snapshot changed the rules' state: carry that out too.
            self.schedule_ready(ctx);
        }
        let commit_index = self.raft.commit_index();
        if ready.heartbeat {
            for replicator in self.replicators.values() {
                replicator.do_send(Heartbeat {
                    commit_index,
                    round: ready.confirm_round,
                });
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
        if let (Some(round), false) = (ready.confirm_round, ready.heartbeat) {
            // A round between heartbeats (reads): every replicator sends one now.
            for replicator in self.replicators.values() {
                replicator.do_send(ConfirmLeadership { round });
            }
        }
        self.send_applicable();
        for read in ready.reads {
            let Some((query, reply)) = self.pending_reads.remove(&read.id) else {
                continue;
            };
            match read.result {
                Ok(index) => self.query_at(index, query, reply),
                Err(not_leader) => {
                    let _ = reply.send(Err(ReadError::NotLeader {
                        leader: not_leader.leader.or(self.raft.leader_id()),
                    }));
                }
            }
        }
    }

    /// Make `write` durable, then send `messages` (Figure 2: persist before responding).
    ///
    /// A small batch is written here, on the node's own thread, when nothing handed to the log
    /// store is still waiting (so nothing is overtaken): the two thread hand-offs (there and back)
    /// cost more than the write itself. What arrives meanwhile waits in the mailbox and joins the
    /// next batch.
    /// - A follower or candidate writes at once: its answers wait for the write anyway.
    /// - A leader does so only after a run of writes that each found nothing else in flight (a
    ///   client waiting for each write before sending the next): with concurrent clients its
    ///   thread has their requests and the acknowledgements to serve while the log syncs. It
    ///   writes once the event loop has run what is ready, so its AppendEntries leave first and
    ///   its own sync runs beside replication (§10.2.1); later writes join it until then.
    ///
    /// A large batch goes to the log store's thread, so a node under load keeps reading from the
    /// network and from clients while it syncs.
    fn persist(&mut self, ctx: &mut Context<Self>, write: LogWrite, messages: Vec<Envelope>) {
        if let Some((waiting, then_send)) = &mut self.deferred_write {
            waiting.merge(write);
            then_send.extend(messages);
            return;
        }
        let leader = self.raft.role() == Role::Leader;
        if leader && !write.entries.is_empty() {
            let in_flight =
                (self.raft.last_log_id().index.0).saturating_sub(self.raft.commit_index().0);
            if in_flight <= write.entries.len() as u64 {
                self.sequential_writes = self.sequential_writes.saturating_add(1);
            } else {
                self.sequential_writes = 0;
            }
        }
        let here = self.links.inline_write_max_entries > 0
            && write.entries.len() <= self.links.inline_write_max_entries
            && (!leader || self.sequential_writes >= SEQUENTIAL_WRITES_TO_WRITE_HERE)
            && self.links.log_writer.may_write_here();
        if !here {
            if !write.is_empty() {
                self.log_writes_handed_off += 1;
            }
            self.links.log_writer.handed_off();
            self.links.log_write.do_send(Write {
                write,
                then_send: messages,
            });
        } else if leader {
            self.deferred_write = Some((write, messages));
            ctx.spawn(
                async {
                    // One turn of the event loop: the replicators, the endpoint and its writers
                    // run what this Ready gave them (the wake-up is deferred until they have).
                    tokio::task::yield_now().await;
                }
                .into_actor(self)
                .map(|(), node, ctx| {
                    if let Some((write, messages)) = node.deferred_write.take() {
                        node.write_here(ctx, write, messages);
                    }
                }),
            );
        } else {
            self.write_here(ctx, write, messages);
        }
    }

    /// Write and sync on this thread, then count the log durable and send `messages`; a failed
    /// write stops the node (what follows might depend on what was lost).
    fn write_here(&mut self, ctx: &mut Context<Self>, write: LogWrite, messages: Vec<Envelope>) {
        if !write.is_empty() {
            self.log_writes_inline += 1;
            if let Err(error) = self.links.log_writer.write(&write) {
                tracing::error!(node = %self.id(), term = %self.raft.current_term(), %error, "storage failed: stopping this node");
                ctx.stop();
                return;
            }
            if let Some(last) = write.last_log_id() {
                self.raft.on_log_flushed(last);
                self.schedule_ready(ctx);
            }
        }
        for envelope in messages {
            self.links.transport.do_send(Outbound(envelope));
        }
    }

    /// Take in a snapshot chunk from the leader `from`; answer where to go on, or, once the whole
    /// snapshot is checked and durable, hand it to the rules to install.
    fn receive_chunk(&mut self, from: NodeId, chunk: InstallSnapshot) {
        let Some(options) = &self.links.snapshots else {
            tracing::warn!(node = %self.id(), %from, "a snapshot arrived, but this node keeps no snapshots");
            return;
        };
        let store = options.store.clone();
        let next = match Receiving::accept(&mut self.receiving, &store, from, &chunk) {
            Ok(ChunkOutcome::Next(offset)) => offset,
            Ok(ChunkOutcome::Complete(staged)) => {
                let meta = staged.meta.clone();
                tracing::info!(node = %self.id(), term = %self.raft.current_term(), last = %meta.last_included, bytes = meta.size, "snapshot received");
                self.staged = Some(staged);
                self.raft
                    .on_snapshot_received(from, chunk.term, chunk.request_id, meta);
                return;
            }
            Err(error) => {
                tracing::warn!(node = %self.id(), %from, %error, "snapshot transfer failed; asking for it again");
                self.receiving = None;
                0
            }
        };
        // No durable promise rides on this answer: it goes out at once.
        self.links.transport.do_send(Outbound(Envelope {
            from: self.id(),
            to: from,
            message: Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term: self.raft.current_term(),
                request_id: chunk.request_id,
                outcome: SnapshotOutcome::NextOffset(next),
            }),
        }));
    }

    /// Make the staged snapshot `meta` the store's newest.
    fn promote_staged(&mut self, meta: &SnapshotMeta) -> Result<(), String> {
        let (Some(options), Some(staged)) = (&self.links.snapshots, self.staged.take()) else {
            return Err(format!("snapshot {} is not staged", meta.last_included));
        };
        if &staged.meta != meta {
            return Err(format!(
                "the staged snapshot is {}, the rules installed {}",
                staged.meta.last_included, meta.last_included
            ));
        }
        options
            .store
            .promote(staged)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Tell the applier how far it may apply, if that moved: committed and durable here.
    fn send_applicable(&mut self) {
        let applicable = self.raft.applicable_index();
        if applicable > self.applicable_sent {
            self.applicable_sent = applicable;
            self.links.applier.do_send(Commit { index: applicable });
        }
    }

    /// Answer `reply` with `query` once the applier reaches `index`.
    fn query_at(
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
    fn read_index(
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

    /// The configuration in force changed (§6: it takes effect when appended): tell the transport
    /// whom to reach, and, on the leader, replicate to the members.
    fn on_membership(&mut self, ctx: &mut Context<Self>, membership: Membership) {
        tracing::info!(node = %self.id(), term = %self.raft.current_term(), voters = ?membership.conf.voters, learners = ?membership.conf.learners, outgoing = ?membership.conf.voters_outgoing, "configuration in force");
        if let Some(peers) = &self.links.peer_addresses {
            let mut addresses = membership.addresses;
            let mut members = membership.conf.members();
            // Until the change commits, a leader still reaches the previous members too.
            for target in self.raft.replication_targets() {
                if let Some(address) = self.raft.address_of(target) {
                    addresses.entry(target).or_insert_with(|| address.clone());
                }
                members.insert(target);
            }
            peers.do_send(UpdatePeers { members, addresses });
        }
        self.reconcile_replicators(ctx);
    }

    /// On the leader, one replicator for each of the rules' replication targets, and no other.
    fn reconcile_replicators(&mut self, ctx: &mut Context<Self>) {
        if self.raft.role() != Role::Leader {
            return;
        }
        let targets = self.raft.replication_targets();
        if targets.len() == self.replicators.len()
            && targets.iter().all(|t| self.replicators.contains_key(t))
        {
            return;
        }
        let gone: Vec<NodeId> = self
            .replicators
            .keys()
            .copied()
            .filter(|peer| !targets.contains(peer))
            .collect();
        let commit_index = self.raft.commit_index();
        for peer in gone {
            if let Some(replicator) = self.replicators.remove(&peer) {
                // One last heartbeat tells a removed node that its removal is committed, so it
                // stops campaigning (its removal no longer pending).
                replicator.do_send(Heartbeat {
                    commit_index,
                    round: None,
                });
                replicator.do_send(Shutdown);
            }
            self.next_index.remove(&peer);
        }
        let (term, last_index) = (self.raft.current_term(), self.raft.last_log_id().index);
        for peer in targets {
            if !self.replicators.contains_key(&peer) {
                self.start_replicator(ctx, peer, term, last_index);
            }
        }
    }

    fn start_replicators(&mut self, ctx: &mut Context<Self>, term: Term, last_index: LogIndex) {
        self.stop_replicators();
        for peer in self.raft.replication_targets() {
            self.start_replicator(ctx, peer, term, last_index);
        }
    }

    /// Replicate to `peer` in `term`, probing from the entry after `last_index` (§5.3).
    fn start_replicator(
        &mut self,
        ctx: &mut Context<Self>,
        peer: NodeId,
        term: Term,
        last_index: LogIndex,
    ) {
        let replicator = Replicator::new(
            self.id(),
            peer,
            term,
            last_index,
            self.limits,
            self.links.cache.clone(),
            self.links.snapshots.clone(),
            ctx.address(),
            self.links.log_read.clone(),
            self.links.transport.clone(),
        )
        .start();
        self.replicators.insert(peer, replicator);
    }

    fn stop_replicators(&mut self) {
        self.next_index.clear();
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
            voters: self.raft.membership().conf.voters.iter().copied().collect(),
            membership: self.raft.membership().clone(),
            membership_index: self.raft.membership_index(),
            transfer_target: self.raft.transfer_target(),
            matched: self.raft.matched().cloned().unwrap_or_default(),
            elections_started: self.raft.elections_started(),
            next_index: self.next_index.clone(),
            since_contact: self
                .raft
                .ticks_since_contact()
                .unwrap_or_default()
                .into_iter()
                .map(|(peer, ticks)| {
                    let ticks = ticks.map(|t| u32::try_from(t).unwrap_or(u32::MAX));
                    (peer, ticks.map(|t| self.tick.saturating_mul(t)))
                })
                .collect(),
            log_entries_appended: self.log_entries_appended,
            log_bytes_appended: self.log_bytes_appended,
            log_writes_inline: self.log_writes_inline,
            log_writes_handed_off: self.log_writes_handed_off,
            log_start: self.raft.log_start(),
            standing: self.raft.standing(),
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
            standing = self.raft.standing().as_str(),
            "node started"
        );
        if self.raft.standing() != Standing::Member {
            tracing::warn!(
                node = %self.id(),
                standing = self.raft.standing().as_str(),
                "this node's store is new (a new cluster or member, or a node that lost its data): it votes only once it has rejoined (asked a majority of the other voters for their terms, then caught up past them; see README, \"A node that lost its data\")"
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
        self.stop_replicators();
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
        match &envelope.message {
            Message::AppendEntriesResponse(response) => {
                if let Some(replicator) = self.replicators.get(&envelope.from) {
                    replicator.do_send(PeerResponse(response.clone()));
                }
            }
            Message::InstallSnapshotResponse(response) => {
                if let Some(replicator) = self.replicators.get(&envelope.from) {
                    replicator.do_send(PeerSnapshotResponse(response.clone()));
                }
            }
            _ => {}
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

impl Handler<ReplicationReport> for NodeActor {
    type Result = ();

    fn handle(&mut self, report: ReplicationReport, ctx: &mut Context<Self>) {
        if report.term == self.raft.current_term() && self.replicators.contains_key(&report.peer) {
            self.next_index.insert(report.peer, report.next_index);
        }
        self.raft
            .on_replication_report(report.peer, report.term, report.matched);
        self.schedule_ready(ctx);
    }
}

impl Handler<FollowerDataLoss> for NodeActor {
    type Result = ();

    fn handle(&mut self, lost: FollowerDataLoss, ctx: &mut Context<Self>) {
        self.raft.on_follower_data_loss(lost.peer, lost.term);
        self.schedule_ready(ctx);
    }
}

impl Handler<LeadershipConfirmed> for NodeActor {
    type Result = ();

    fn handle(&mut self, confirmed: LeadershipConfirmed, ctx: &mut Context<Self>) {
        self.raft
            .on_leadership_confirmed(confirmed.peer, confirmed.term, confirmed.round);
        self.schedule_ready(ctx);
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
            Err(refusal) => {
                let error = ProposeError::from(refusal);
                return Box::pin(async move { Err(error) });
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Some(id) = ids.first() {
            self.waiters.push(Waiter {
                index: id.index,
                term: id.term,
                reply,
            });
        }
        self.schedule_ready(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(ProposeError::Shutdown)) })
    }
}

impl Handler<ChangeMembership> for NodeActor {
    type Result = Result<oneshot::Receiver<Result<Bytes, ProposeError>>, MembershipChangeError>;

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
