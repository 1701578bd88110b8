//! What the rules ask the outside world to do after an event (etcd raft's `Ready`, openraft's
//! commands). The actor that drives the rules carries each part to the actor that owns it.

use crate::membership::Membership;
use crate::message::{Envelope, InstallSnapshot, SnapshotMeta};
use crate::read_index::ReadState;
use crate::replication::PeerSend;
use crate::storage_types::LogWrite;
use crate::types::{LogIndex, NodeId, Term};

/// Everything one or more events produced, taken with [`crate::Raft::take_ready`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// For the log store: make this durable, atomically.
    pub write: LogWrite,
    /// For the transport, strictly after `write` (and every earlier write) is durable: a vote is
    /// granted and an append acknowledged only once what it promises is on disk (Figure 2).
    pub messages: Vec<Envelope>,
    /// `write` only appends entries that the leader said its commits need not wait for (a spare
    /// follower's, `AppendEntries::sync_may_wait`): the driver may hold it a little and merge
    /// later writes into it, to sync once for several. `messages` still leave only once it is
    /// durable, and so do those of every later Ready until then.
    pub write_may_wait: bool,
    /// For the transport, at once, ahead of `write` and of every earlier write still in flight:
    /// a follower's answers that promise nothing its disk does not hold already (a heartbeat's
    /// answer acknowledges only entries this node has synced, `Raft::durable_index`). So a
    /// leader hears from a follower whose disk is busy with a large write, and keeps its term.
    pub prompt_messages: Vec<Envelope>,
    /// For the applier: entries up to here are committed (§5.3) and may be applied. Only set when the
    /// commit index advanced; never lower than an earlier value.
    pub commit_index: Option<LogIndex>,
    /// For the transport (leader only), at once: what to send each peer. They promise nothing
    /// about this node's disk, so they need not wait for `write` (thesis §10.2.1). Carry each
    /// out and report what the driver could not do as asked (`Raft::on_send_outcome`).
    pub sends: Vec<PeerSend>,
    /// This node became leader, or stopped being one.
    pub leadership: Option<LeadershipChange>,
    /// Peers found to have lost their data (their logs are shorter than they acknowledged):
    /// what they acknowledged no longer counts, and they are caught up from scratch.
    pub peers_lost_data: Vec<NodeId>,
    /// For the readers: answers to `Raft::read_index` requests.
    pub reads: Vec<ReadState>,
    /// For the snapshot receiver (follower): chunks of InstallSnapshot accepted by term, with
    /// their sender, to assemble; once whole and checked, `Raft::on_snapshot_received`.
    pub snapshot_chunks: Vec<(NodeId, InstallSnapshot)>,
    /// For the applier: replace the state machine's state with this snapshot, which `write`
    /// installs in the log, before applying anything after it.
    pub restore: Option<SnapshotMeta>,
    /// For the transport: the configuration in force changed to this (an
    /// entry was appended or truncated, a snapshot installed; and once at start).
    pub membership: Option<Membership>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }
}

/// A change of leadership of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadershipChange {
    /// Won the election of `term`; the log's last index at that moment is `last_index` (replication to
    /// every peer starts probing from the entry after it, §5.3 "nextIndex").
    Became { term: Term, last_index: LogIndex },
    /// No longer leader (a higher term was seen, or check-quorum failed).
    Lost,
}
