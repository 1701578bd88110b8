//! What a node reports about itself ([`GetStatus`]).

use super::NodeActor;
use actix::{Context, Handler, Message as ActixMessage, MessageResult};
use raftor_core::{LogId, LogIndex, Membership, NodeId, Role, Standing, Term};
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
    /// The voters of the configuration in force (the incoming ones, when joint).
    pub voters: Vec<NodeId>,
    /// The configuration in force here (the last in the log: committed or not, §6).
    pub membership: Membership,
    /// The index of the entry holding `membership` (at or before the log's start when it came
    /// from a snapshot or the bootstrap configuration).
    pub membership_index: LogIndex,
    /// The newest configuration this node, while leader, saw settled: a majority of its voters
    /// hold its commit (`raftor_core::Raft::settled_membership_index`).
    pub settled_membership_index: LogIndex,
    /// On the leader: the node leadership is being handed to.
    pub transfer_target: Option<NodeId>,
    /// On the leader: each member's match index.
    pub matched: BTreeMap<NodeId, LogIndex>,
    /// Real elections this node started since it started.
    pub elections_started: u64,
    /// On the leader: each peer's next index (Figure 2 `nextIndex`).
    pub next_index: BTreeMap<NodeId, LogIndex>,
    /// On the leader: time since each peer last answered (`None`: not yet this term).
    pub since_contact: BTreeMap<NodeId, Option<Duration>>,
    /// On the leader: the flow control toward each peer.
    pub flow: BTreeMap<NodeId, PeerFlow>,
    /// Entries this node handed to its log store since it started (its own or a leader's).
    pub log_entries_appended: u64,
    /// Payload bytes of those entries.
    pub log_bytes_appended: u64,
    /// Synced log writes this node made on its own thread since it started (small batches while
    /// lightly loaded; see `NodeActor::persist`).
    pub log_writes_inline: u64,
    /// Writes it handed to the log store's thread (larger batches, and a loaded leader's).
    pub log_writes_handed_off: u64,
    /// Reads of entries (the leader's sends, the applier's) the entry cache could not serve,
    /// which went to the log store instead, since the node started.
    pub entry_cache_misses: u64,
    /// The last compacted entry (the log holds what follows it); `LogId::ZERO` if none was.
    pub log_start: LogId,
    /// The newest snapshot in this node's store (taken here or installed from a leader), if any.
    pub snapshot: Option<SnapshotSummary>,
    /// Whether this node's store holds every promise it made (`raftor_core::Standing`): a node
    /// whose store started empty (new, or one that lost its data) rejoins before it votes.
    pub standing: Standing,
}

/// A snapshot in a node's store, as its status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The last entry the snapshot covers.
    pub last_included: LogId,
    /// The size of its data, in bytes.
    pub bytes: u64,
}

impl SnapshotSummary {
    pub(crate) fn of(meta: &raftor_core::SnapshotMeta) -> SnapshotSummary {
        SnapshotSummary {
            last_included: meta.last_included,
            bytes: meta.size,
        }
    }
}

/// The leader's flow control toward one peer (`raftor_core::Progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerFlow {
    /// Payload bytes sent and not yet acknowledged.
    pub inflight_bytes: usize,
    /// The byte budget: no more is sent while this much is in flight. It adapts to how fast
    /// the peer acknowledges.
    pub budget_bytes: usize,
    /// How long the peer takes to acknowledge what it is sent, smoothed (`None`: not measured
    /// yet this term).
    pub ack_latency: Option<Duration>,
}

/// Ask a node for its [`NodeStatus`].
#[derive(ActixMessage, Debug)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

impl NodeActor {
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
            settled_membership_index: self.raft.settled_membership_index(),
            transfer_target: self.raft.transfer_target(),
            matched: self.raft.matched().cloned().unwrap_or_default(),
            elections_started: self.raft.elections_started(),
            next_index: self
                .raft
                .replication_progress()
                .map(|peers| {
                    peers
                        .map(|(peer, progress)| (peer, progress.next_index()))
                        .collect()
                })
                .unwrap_or_default(),
            flow: self
                .raft
                .replication_progress()
                .map(|peers| {
                    peers
                        .map(|(peer, progress)| {
                            let ack_latency = progress.smoothed_latency_ticks().map(|ticks| {
                                self.tick
                                    .saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX))
                            });
                            let flow = PeerFlow {
                                inflight_bytes: progress.inflight_bytes(),
                                budget_bytes: progress.budget(),
                                ack_latency,
                            };
                            (peer, flow)
                        })
                        .collect()
                })
                .unwrap_or_default(),
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
            entry_cache_misses: self.links.cache.misses(),
            log_start: self.raft.log_start(),
            snapshot: self.newest_snapshot,
            standing: self.raft.standing(),
        }
    }
}

impl Handler<GetStatus> for NodeActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}
