//! Starting a node: recover its storage, wire its actors together, and hand back a [`NodeHandle`].
//!
//! The node's address exists before it starts ([`PendingNode::inbound`]), so a transport can be
//! built that delivers to it, and then given to [`PendingNode::start`].

use crate::applier::Applier;
use crate::entry_cache::EntryCache;
use crate::error::{
    MembershipChangeError, ProposeError, ReadError, StartError, TransferLeaderError,
};
use crate::log_store::{LogStoreActor, SharedLog};
use crate::messages::{
    Answer, Fail, LeaseRead, LinearizableRead, Propose, QueryLocal, Shutdown, TakeSnapshot,
};
use crate::network::tcp::UpdatePeers;
use crate::node::{
    ChangeMembership, GetStatus, Leadership, NodeActor, NodeLinks, NodeStatus, TransferLeader,
    Watchers,
};
use crate::node::{SnapshotSummary, StopCause};
use crate::peer_sender::ReplicationLimits;
use crate::snapshot::SnapshotOptions;
use crate::state_machine::StateMachine;
use crate::transport::{Inbound, Outbound};
use actix::{Actor, Addr, Arbiter, AsyncContext, Context, MailboxError, Recipient};
use bytes::Bytes;
use raftor_core::{ConfChange, Membership, NodeId, Raft, RaftConfig, SnapshotMeta};
use raftor_storage::LogStorage;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Everything that shapes one node besides its storage, state machine and transport.
#[derive(Clone)]
pub struct NodeOptions {
    pub raft: RaftConfig,
    /// The length of one tick of the rules' clock (default 10 ms: 150–300 ms elections).
    pub tick: Duration,
    /// Seeds the randomised election timeouts; the same seed replays the same run.
    pub seed: u64,
    pub limits: ReplicationLimits,
    /// Run the log store on an arbiter (thread) of its own, so a disk sync blocks no other actor.
    /// Off for tests on tokio's paused clock, which must keep every actor on one thread.
    pub dedicated_log_thread: bool,
    /// Write each snapshot on a thread of its own, so that encoding a large state holds up no
    /// actor. Off for tests on tokio's paused clock, like `dedicated_log_thread`.
    pub background_snapshots: bool,
    /// A node writes a batch of at most this many entries (and 256 KiB of payload) on its own
    /// thread when nothing handed to the log store is still waiting, instead of handing it to the
    /// log store's thread: that saves two thread hand-offs per write (default 1024, a full
    /// AppendEntries; 0: every write goes to the log store). A follower does so whenever it can
    /// (its answer waits for the write anyway); a leader only while one client at a time is
    /// writing, after its AppendEntries have left (see `NodeActor::persist`). Larger batches go
    /// to the log store. The default was 8 until Nagle's algorithm made a follower's batches
    /// larger (about 32 entries under 64 clients): handing those off cost each AppendEntries
    /// about 300 µs of wake-ups before its answer (BENCHMARKS.md, issue 22).
    pub inline_write_max_entries: usize,
    /// How long a spare follower (one the leader's commits do not wait for now,
    /// `AppendEntries::sync_may_wait`) holds a small write before syncing it, so that the writes
    /// arriving meanwhile share the sync (default 1 ms; zero: never held). Nodes sharing a disk
    /// make fewer syncs: with three on one disk, a write's commit no longer waits behind the
    /// third node's sync (BENCHMARKS.md, issue 22). Answers still wait for the sync.
    pub spare_sync_hold: Duration,
    /// For tests on tokio's paused clock: a slow disk, every synced write of the log store
    /// reported this much after the previous one (`None`, the default: as fast as the disk).
    pub simulated_sync_latency: Option<Duration>,
    /// Told the duration and size of every synced log write.
    pub log_write_observer: Option<crate::log_store::LogWriteObserver>,
    /// How many bytes of the newest entries stay in memory for replication and applying
    /// (default 16 MiB: seconds of writes of small values at full speed).
    pub entry_cache_bytes: usize,
    /// Older entries stay while this node still needs them — not yet applied, or not yet sent to
    /// a follower the leader streams to — up to this many bytes in all (default 128 MiB: the key-
    /// value service's bound on writes in flight); the others are read back from the log store.
    pub entry_cache_needed_bytes: usize,
    /// Snapshots and log compaction (§7); `None`: the log is kept whole and none is sent.
    pub snapshots: Option<SnapshotOptions>,
    /// Told the members and their addresses whenever the configuration changes (the TCP endpoint,
    /// so it sends to the current members); `None` for a transport that routes by id alone.
    pub peer_addresses: Option<Recipient<UpdatePeers>>,
}

impl NodeOptions {
    pub fn new(raft: RaftConfig) -> NodeOptions {
        let seed = raft.id.0;
        NodeOptions {
            raft,
            tick: Duration::from_millis(10),
            seed,
            limits: ReplicationLimits::default(),
            dedicated_log_thread: true,
            background_snapshots: true,
            inline_write_max_entries: 1024,
            spare_sync_hold: Duration::from_millis(1),
            simulated_sync_latency: None,
            log_write_observer: None,
            entry_cache_bytes: 16 * 1024 * 1024,
            entry_cache_needed_bytes: 128 * 1024 * 1024,
            snapshots: None,
            peer_addresses: None,
        }
    }
}

/// A node whose address exists but which has not started yet.
pub struct PendingNode {
    context: Context<NodeActor>,
}

impl Default for PendingNode {
    fn default() -> Self {
        PendingNode::new()
    }
}

impl PendingNode {
    pub fn new() -> PendingNode {
        PendingNode {
            context: Context::new(),
        }
    }

    /// Where a transport delivers this node's incoming messages.
    pub fn inbound(&self) -> Recipient<Inbound> {
        self.context.address().recipient()
    }

    /// Recover `storage`, start the log store, applier and node actors, and return the handle.
    /// Must run inside an actix System (or an actix-rt runtime).
    pub fn start<S: LogStorage + Unpin>(
        self,
        options: NodeOptions,
        mut storage: S,
        state_machine: Box<dyn StateMachine>,
        transport: Recipient<Outbound>,
    ) -> Result<NodeHandle, StartError> {
        let id = options.raft.id;
        let mut recovered = storage.recover()?;
        let mut state_machine = state_machine;
        // The state machine starts from the newest snapshot, and the log replays what follows.
        let restored = match &options.snapshots {
            Some(snapshots) => restore_latest(snapshots, state_machine.as_mut())?,
            None => None,
        };
        if let Some(meta) = &restored {
            let last = meta.last_included;
            if last.index < recovered.log_start.index {
                return Err(StartError::Snapshot(format!(
                    "the newest snapshot ends at {last}, but the log was compacted up to {}",
                    recovered.log_start
                )));
            }
            if let Some(write) = recovered.catch_up_with_snapshot(last) {
                tracing::info!(node = %id, snapshot = %last, log_start = %recovered.log_start, "the newest snapshot ends past the log's start: compacting the log up to it");
                storage.write(&write)?;
                recovered = storage.recover()?;
            }
            recovered.snapshot_membership = Some((last.index, (*meta.membership).clone()));
        } else if recovered.log_start.index > raftor_core::LogIndex::ZERO {
            return Err(StartError::Snapshot(format!(
                "the log was compacted up to {}, but no snapshot covers it",
                recovered.log_start
            )));
        }
        // The rules' flow control is set with the rest of the replication limits.
        let mut config = options.raft.clone();
        config.replication = options.limits.rules();
        let raft = Raft::new(config, recovered, options.seed)?;
        // What the applier has applied at start (nothing, or the snapshot) was decided under the
        // bootstrap configuration, or the snapshot's.
        let bootstrap = Membership::bootstrap(&options.raft.voters, &options.raft.addresses);
        let node_addr = self.context.address();

        let log = std::sync::Arc::new(SharedLog::new(
            id,
            storage,
            options.log_write_observer.clone(),
        ));
        let store = LogStoreActor::new(
            log.clone(),
            transport.clone(),
            node_addr.clone().recipient(),
            node_addr.clone().recipient(),
        )
        .with_sync_latency(options.simulated_sync_latency);
        let (log_addr, log_arbiter) = if options.dedicated_log_thread {
            let arbiter = Arbiter::new();
            let addr = LogStoreActor::start_in_arbiter(&arbiter.handle(), move |_| store);
            (addr, Some(arbiter))
        } else {
            (store.start(), None)
        };
        let cache = EntryCache::new(options.entry_cache_bytes, options.entry_cache_needed_bytes);
        let mut applier = Applier::new(
            id,
            state_machine,
            bootstrap,
            cache.clone(),
            log_addr.clone().recipient(),
            node_addr.clone().recipient(),
        );
        let newest_snapshot = restored.as_ref().map(SnapshotSummary::of);
        if let Some(snapshots) = &options.snapshots {
            applier = applier.with_snapshots(
                snapshots.clone(),
                restored,
                options.background_snapshots,
                node_addr.clone().recipient(),
                node_addr.clone().recipient(),
            );
        }
        let applier = applier.start();
        let log_stopped = log_addr.clone().recipient();
        let links = NodeLinks {
            log_write: log_addr.clone().recipient(),
            log_writer: log,
            inline_write_max_entries: options.inline_write_max_entries,
            spare_sync_hold: options.spare_sync_hold,
            log_read: log_addr.clone().recipient(),
            log_shutdown: log_addr.recipient(),
            applier: applier.clone(),
            transport,
            peer_addresses: options.peer_addresses.clone(),
            cache,
            snapshots: options.snapshots.clone(),
        };
        let (node, watchers) =
            NodeActor::new(raft, options.tick, options.limits, links, newest_snapshot);
        let node_addr = self.context.run(node);
        Ok(NodeHandle {
            id,
            node: node_addr,
            watchers,
            applier,
            log_store: log_stopped,
            log_arbiter,
        })
    }
}

/// A running node: propose, read, ask its status, stop it.
pub struct NodeHandle {
    id: NodeId,
    node: Addr<NodeActor>,
    /// Leadership and configuration as the node pushes them.
    watchers: Watchers,
    applier: Addr<Applier>,
    /// Only to see whether the log store is still running (see [`NodeHandle::stopped`]).
    log_store: Recipient<Shutdown>,
    log_arbiter: Option<Arbiter>,
}

impl NodeHandle {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Propose a command; resolves once it is committed and applied, with the state machine's result.
    pub async fn propose(&self, command: Bytes) -> Result<Bytes, ProposeError> {
        let taken = self.node.send(Propose { command }).await;
        answered(taken, ProposeError::Shutdown).await
    }

    /// Who leads as this node sees it, updated as it changes (clone the receiver to wait for
    /// changes; `changed()` fails once the node has stopped).
    pub fn leadership(&self) -> &watch::Receiver<Leadership> {
        &self.watchers.leadership
    }

    /// The configuration in force on this node, updated as it changes (clone the receiver to
    /// wait for changes; `changed()` fails once the node has stopped).
    pub fn membership(&self) -> &watch::Receiver<Membership> {
        &self.watchers.membership
    }

    /// Resolves once the node has stopped, with why: told to, or stopped itself on a failure
    /// (see [`Self::stopped`] to wait for its applier and log store as well).
    pub async fn stop_cause(&self) -> StopCause {
        let mut cause = self.watchers.stop_cause.clone();
        let seen = match cause.wait_for(Option::is_some).await {
            Ok(seen) => seen.clone(),
            // The node was dropped without stopping (its actor system ended).
            Err(_) => None,
        };
        seen.unwrap_or(StopCause::Shutdown)
    }

    /// Stop the node because something it depends on failed (its state machine): its watchers
    /// see [`StopCause::Failed`] with `reason`.
    pub fn fail(&self, reason: String) {
        self.node.do_send(Fail { reason });
    }

    /// The node's status, or `None` if it has stopped.
    pub async fn status(&self) -> Option<NodeStatus> {
        self.node.send(GetStatus).await.ok()
    }

    /// A linearizable read (ReadIndex): on the leader, after confirming leadership with a majority
    /// and applying up to the commit index it had when the read arrived.
    pub async fn read_linearizable(&self, query: Bytes) -> Result<Bytes, ReadError> {
        let taken = self.node.send(LinearizableRead { query }).await;
        answered(taken, ReadError::Shutdown).await
    }

    /// A read on the leader from its lease; falls back to ReadIndex when the lease is not fresh.
    pub async fn read_lease(&self, query: Bytes) -> Result<Bytes, ReadError> {
        let taken = self.node.send(LeaseRead { query }).await;
        answered(taken, ReadError::Shutdown).await
    }

    /// Take a snapshot of the state machine now; resolves once it is durable (the log is then
    /// compacted behind it, less the trailing margin). It holds everything applied when asked
    /// (asked while another is being written, it is the next one).
    pub async fn snapshot(&self) -> Result<SnapshotMeta, String> {
        let (reply, answer) = oneshot::channel();
        self.applier
            .send(TakeSnapshot { reply })
            .await
            .map_err(|_| "the node has stopped".to_string())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the node stopped before the snapshot was durable".into()))
    }

    /// Change the membership (on the leader): resolves once the change is committed and applied
    /// here and, for a change that went through a joint configuration, once the cluster has left
    /// it (the leader does so by itself), and once it settled ([`Self::wait_settled`]), so a
    /// removed node may be shut down once this returns; with the configuration then in force.
    /// Waits at most `timeout` for all that ([`MembershipChangeError::Timeout`]: the change may
    /// still finish).
    pub async fn change_membership(
        &self,
        changes: Vec<ConfChange>,
        timeout: Duration,
    ) -> Result<Membership, MembershipChangeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let applied = self
            .node
            .send(ChangeMembership { changes })
            .await
            .map_err(|_| MembershipChangeError::Shutdown)??;
        let outcome = tokio::time::timeout_at(deadline, applied)
            .await
            .map_err(|_| MembershipChangeError::Timeout)?;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(ProposeError::Dropped)) => return Err(MembershipChangeError::Dropped),
            Ok(Err(_)) | Err(_) => return Err(MembershipChangeError::Shutdown),
        }
        self.settled_by(deadline, true).await
    }

    /// On the leader: resolves once the configuration in force is committed, applied here, not
    /// joint (the leader leaves a joint one by itself), and settled: a majority of its voters
    /// hold its commit (`raftor_core::Raft::settled_membership_index`; a removed leader hands
    /// over then). A rejoining node that lost its data learns from any of them that the
    /// configuration before is superseded, so a node the change removed may be shut down now.
    /// [`MembershipChangeError::NotLeader`] on another node;
    /// [`MembershipChangeError::Timeout`] if not so within `timeout`.
    pub async fn wait_settled(
        &self,
        timeout: Duration,
    ) -> Result<Membership, MembershipChangeError> {
        self.settled_by(tokio::time::Instant::now() + timeout, false)
            .await
    }

    /// [`Self::wait_settled`] until `deadline`; `committed_here`: this node, as leader, saw the
    /// change commit, so losing the lead now leaves it committed but unsettled.
    async fn settled_by(
        &self,
        deadline: tokio::time::Instant,
        committed_here: bool,
    ) -> Result<Membership, MembershipChangeError> {
        loop {
            let status = self.status().await.ok_or(MembershipChangeError::Shutdown)?;
            if !status.membership.conf.is_joint()
                && status.membership_index <= status.applied_index
                && status.settled_membership_index >= status.membership_index
            {
                return Ok(status.membership);
            }
            if status.role != raftor_core::Role::Leader {
                let leader = status.leader;
                return Err(if committed_here {
                    MembershipChangeError::Unsettled { leader }
                } else {
                    MembershipChangeError::NotLeader { leader }
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MembershipChangeError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Start handing leadership to the voter `to` (on the leader). Resolves once the transfer has
    /// started: watch [`Self::status`] to see `to` lead; the leader abandons the transfer (and
    /// takes proposals again) if `to` has not taken over within an election timeout.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferLeaderError> {
        self.node
            .send(TransferLeader { to })
            .await
            .unwrap_or(Err(TransferLeaderError::Shutdown))
    }

    /// Query this node's state machine as it is now (possibly stale), or `None` if stopped.
    pub async fn query_local(&self, query: Bytes) -> Option<Bytes> {
        self.applier.send(QueryLocal { query }).await.ok()
    }

    pub fn is_running(&self) -> bool {
        self.node.connected()
    }

    /// Stop the node and its actors. What was durable stays durable.
    pub fn shutdown(&self) {
        self.node.do_send(Shutdown);
    }

    /// Wait until the node, its applier and its log store have stopped (after [`Self::shutdown`],
    /// or a storage failure). An actor's mailbox closes only once the actor is dropped, so by then
    /// the log store has flushed its queue and closed its storage (a RocksDB directory can be
    /// opened again), and the log store's thread is told to end.
    pub async fn stopped(&self) {
        while self.node.connected() || self.applier.connected() || self.log_store.connected() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(arbiter) = &self.log_arbiter {
            arbiter.stop();
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Some(arbiter) = self.log_arbiter.take() {
            // The log store stops with the node; its thread ends once its mailbox is drained.
            arbiter.stop();
        }
    }
}

/// What the node answered a request it was `sent`: refused at once, or the result its applier
/// sends later through the [`Answer`]; `shutdown` if the node stopped before either.
async fn answered<T, E>(
    sent: Result<Result<Answer<T, E>, E>, MailboxError>,
    shutdown: E,
) -> Result<T, E> {
    match sent {
        Ok(Ok(answer)) => answer.await.unwrap_or(Err(shutdown)),
        Ok(Err(refused)) => Err(refused),
        Err(MailboxError::Closed | MailboxError::Timeout) => Err(shutdown),
    }
}

/// Restore `state_machine` from the newest snapshot in `snapshots`, if there is one; returns its
/// metadata.
fn restore_latest(
    snapshots: &SnapshotOptions,
    state_machine: &mut dyn StateMachine,
) -> Result<Option<SnapshotMeta>, StartError> {
    let Some(meta) = snapshots.store.latest()? else {
        return Ok(None);
    };
    crate::snapshot::restore_from(&snapshots.store, &meta, state_machine)
        .map_err(StartError::Snapshot)?;
    tracing::info!(last = %meta.last_included, bytes = meta.size, "state machine restored from the newest snapshot");
    Ok(Some(meta))
}
