//! What a leader keeps about sending to one peer: its [`Progress`] (Figure 2 `nextIndex`,
//! `matchIndex`, and flow control), the confirmation rounds waiting for its answer, the order the
//! driver is carrying out, and the snapshot on its way to it.

use super::progress::Progress;
use super::rounds::PendingRounds;
use crate::message::SnapshotMeta;

/// Heartbeat periods an order may stay unreported before the rules stop waiting for it (its
/// report was lost with an actor, say); a late report of it is then ignored.
pub(crate) const ORDER_PATIENCE_HEARTBEATS: u32 = 3;

/// Heartbeat periods without an answer to the snapshot chunk (or open) in flight before it is
/// sent again.
pub(crate) const CHUNK_PATIENCE_HEARTBEATS: u32 = 3;

/// A leader's replication state toward one peer, for one term.
#[derive(Clone, Debug)]
pub(crate) struct PeerReplication {
    pub(crate) progress: Progress,
    /// Leadership-confirmation rounds waiting for this peer's answer (thesis §6.4).
    pub(crate) rounds: PendingRounds,
    /// An entries order handed to the driver and not yet reported. Nothing else is ordered
    /// meanwhile, since the driver may send fewer entries than ordered and the next message
    /// starts where that one ended.
    pub(crate) order: Option<PendingOrder>,
    /// The driver could not fetch what was ordered: order nothing more until the next
    /// heartbeat period (no busy retry against a failing store).
    pub(crate) paused: bool,
    /// The snapshot being sent (`Progress` is in `Snapshot` state meanwhile).
    pub(crate) snapshot: Option<SnapshotSending>,
    /// Answers to messages numbered below this are ignored: the peer asked to rejoin after they
    /// left, so its store is new and what it said about them is not backed by a durable log
    /// (`Raft::forget_acknowledgements_of`). At most the leader's `next_request_id`.
    pub(crate) answers_from: u64,
    /// A spare follower: a voter outside the fastest majority, whose entries the leader's commits
    /// do not wait for now, told so in its AppendEntries (`spare.rs`). Recomputed at every drive
    /// of the peers; false for a learner.
    pub(crate) spare: bool,
}

/// An entries order the driver is carrying out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingOrder {
    pub(crate) request_id: u64,
    /// The entry before the first ordered: the order still stands only while `Progress` would
    /// send from here (an answer meanwhile may have moved it).
    pub(crate) prev_index: crate::types::LogIndex,
    /// The last entry ordered: what the driver reports sent is at most this.
    pub(crate) last_index: crate::types::LogIndex,
    /// Heartbeat periods since it was issued.
    pub(crate) heartbeats: u32,
}

/// A snapshot on its way to a peer, one request in flight at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSending {
    /// The request in flight: the open (until `meta` is known), then each chunk's. Only its
    /// outcome or answer counts.
    pub(crate) request_id: u64,
    /// The snapshot, once the driver has opened it.
    pub(crate) meta: Option<SnapshotMeta>,
    /// Where the chunk in flight starts; `<= meta.size`.
    pub(crate) offset: u64,
    /// Heartbeat periods without an answer to the request in flight.
    pub(crate) quiet_heartbeats: u32,
}

impl PeerReplication {
    pub(crate) fn new(progress: Progress) -> PeerReplication {
        PeerReplication {
            progress,
            rounds: PendingRounds::default(),
            order: None,
            paused: false,
            snapshot: None,
            answers_from: 0,
            spare: false,
        }
    }

    /// The invariants of this state, for `Raft::check_invariants`: `last_index` is the leader's
    /// log's end, `next_request_id` the number of its next message.
    pub(crate) fn check(
        &self,
        last_index: crate::types::LogIndex,
        next_request_id: u64,
    ) -> Result<(), String> {
        self.progress.check(last_index)?;
        let sending = self.progress.state() == super::ProgressState::Snapshot;
        if sending != self.snapshot.is_some() {
            return Err(format!(
                "progress in {:?} state, snapshot being sent: {:?}",
                self.progress.state(),
                self.snapshot
            ));
        }
        if self.answers_from > next_request_id {
            return Err(format!(
                "answers counted from message {} but the next is {next_request_id}",
                self.answers_from
            ));
        }
        if let Some(order) = &self.order {
            if order.request_id >= next_request_id
                || order.prev_index >= order.last_index
                || order.last_index > last_index
            {
                return Err(format!("order {order:?} (log ends at {last_index})"));
            }
        }
        if let Some(sending) = &self.snapshot {
            if sending.request_id >= next_request_id
                || sending
                    .meta
                    .as_ref()
                    .is_some_and(|meta| sending.offset > meta.size)
            {
                return Err(format!("snapshot sending {sending:?}"));
            }
        }
        Ok(())
    }

    /// The peer's store is new (it lost its data, or asked to rejoin): drop what was under way
    /// for it, the order and the snapshot. (`Progress` probes it afresh; the caller forgets its
    /// match.)
    pub(crate) fn drop_under_way(&mut self) {
        self.snapshot = None;
        self.order = None;
    }

    /// Whether an entries order may be issued now (flow control aside).
    pub(crate) fn may_order(&self) -> bool {
        self.order.is_none() && !self.paused && self.snapshot.is_none()
    }
}
