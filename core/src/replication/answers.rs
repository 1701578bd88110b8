//! What comes back to a leader: its peers' answers (AppendEntries and InstallSnapshot responses of
//! its term, §5.3, §7) and its driver's outcomes. An answer that vouches for the peer confirms
//! the leadership rounds its message answers for (thesis §6.4); a success moves the peer's match
//! point toward a commit (§5.3); an answer showing a log shorter than the peer acknowledged
//! means it lost its data, and what it acknowledged no longer counts.

use super::send::SendOutcome;
use crate::message::{
    AppendEntriesResponse, AppendOutcome, InstallSnapshotResponse, SnapshotOutcome,
};
use crate::raft::{Raft, Role};
use crate::types::{LogId, NodeId};

/// What a snapshot chunk's answer calls for, decided while the peer's state is borrowed.
enum ChunkAnswer {
    /// Not about the request in flight: only contact.
    Contact,
    /// Send the next chunk.
    Next,
    /// The peer installed the snapshot and holds the log up to here.
    Installed(LogId),
}

impl Raft {
    /// `from`'s answer to an AppendEntries of this term (the caller handled other terms).
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        mut response: AppendEntriesResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let term = self.current_term;
        let now = self.ticks;
        // What a correct peer says is about the leader's own log: a success names an entry the
        // leader holds (Log Matching), a hint points at most just past its end. Anything else is
        // not believed (a late success about entries compacted since tells nothing either).
        let end = self.log.last_index().next();
        let believed = match &mut response.outcome {
            AppendOutcome::Success { matched } => self.log.matches(*matched),
            AppendOutcome::Reject { hint, .. } | AppendOutcome::Rejoining { hint, .. } => {
                hint.first_index = hint.first_index.min(end);
                true
            }
            AppendOutcome::StaleTerm => true,
        };
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(peer) = leader.peers.get_mut(&from) else {
            return;
        };
        if response.request_id < peer.answers_from {
            // Answered by the peer's old store, before it asked to rejoin: vouches for nothing.
            return;
        }
        let confirmed = if response.vouches() {
            peer.rounds.answered(response.request_id)
        } else {
            None
        };
        let effect = if believed {
            peer.progress.on_response(term, &response, now)
        } else {
            super::progress::ResponseEffect::Contact { matched: None }
        };
        if peer.progress.take_data_loss() {
            // Probing again from its log's end: a snapshot on its way is started afresh if needed.
            peer.drop_under_way();
            leader.matched.remove(&from);
            self.ready.peers_lost_data.push(from);
            self.forget_commit_held(from);
        }
        if let super::progress::ResponseEffect::Contact { matched } = effect {
            self.on_contact(from, matched);
        }
        if let (true, AppendOutcome::Success { matched }) = (believed, &response.outcome) {
            self.note_commit_held(from, response.request_id, *matched);
        }
        if let Some(round) = confirmed {
            self.on_leadership_confirmed(from, round);
        }
    }

    /// `peer` asked to rejoin (`crate::rejoin`): its store is new, so what it acknowledged
    /// before no longer counts toward commits, and no answer to a message sent before now will.
    /// Probe it afresh from this log's end. Every entry this leader committed with the old
    /// store's help is at or before its commit index now, which it tells the peer.
    pub(crate) fn forget_acknowledgements_of(&mut self, peer_id: NodeId) {
        let end = self.log.last_index().next();
        let next_request_id = self.next_request_id;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(peer) = leader.peers.get_mut(&peer_id) else {
            return;
        };
        peer.answers_from = next_request_id;
        let counted = peer.progress.matched() > LogId::ZERO
            || leader
                .matched
                .get(&peer_id)
                .is_some_and(|index| *index > crate::types::LogIndex::ZERO);
        // Nothing counted yet (a rejoining node asks again every round while a member is
        // silent): keep what is under way, a snapshot above all, rather than restart it each time.
        if counted {
            peer.progress.on_follower_data_loss(end);
            peer.drop_under_way();
            leader.matched.remove(&peer_id);
        }
        self.forget_commit_held(peer_id);
    }

    /// `from`'s answer to an InstallSnapshot chunk of this term (the caller handled other terms).
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        response: InstallSnapshotResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(peer) = leader.peers.get_mut(&from) else {
            return;
        };
        let Some(sending) = peer.snapshot.as_mut() else {
            return;
        };
        let answer = match response.outcome {
            _ if response.request_id != sending.request_id => ChunkAnswer::Contact,
            SnapshotOutcome::NextOffset(offset) => {
                let size = sending.meta.as_ref().map_or(0, |meta| meta.size);
                sending.offset = if offset <= size { offset } else { 0 };
                ChunkAnswer::Next
            }
            SnapshotOutcome::Installed { last_included }
                if sending
                    .meta
                    .as_ref()
                    .is_some_and(|meta| meta.last_included == last_included) =>
            {
                peer.snapshot = None;
                peer.progress.on_snapshot_installed(last_included);
                ChunkAnswer::Installed(peer.progress.matched())
            }
            // Installed something else than was sent: not from a correct peer.
            SnapshotOutcome::Installed { .. } | SnapshotOutcome::StaleTerm => ChunkAnswer::Contact,
        };
        // A chunk's answer is contact for check-quorum, which must see a peer that is receiving a
        // long snapshot; not a confirmation for reads (a rejoining node answers chunks too).
        match answer {
            ChunkAnswer::Contact => self.on_contact(from, None),
            ChunkAnswer::Next => {
                self.on_contact(from, None);
                self.send_snapshot_chunk(from);
            }
            ChunkAnswer::Installed(matched) => self.on_contact(from, Some(matched)),
        }
    }

    /// What the driver did with an order. An outcome for anything but the peer's current order
    /// (of an earlier term, or one given up on) changes nothing.
    pub fn on_send_outcome(&mut self, outcome: SendOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let log_start = self.log.start();
        let now = self.ticks;
        let compacted = |index| super::sending::term_in_log(&self.log, index).is_none();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        match outcome {
            SendOutcome::EntriesSent {
                to,
                request_id,
                last_index,
                bytes,
            } => {
                let Some(peer) = leader.peers.get_mut(&to) else {
                    return;
                };
                let Some(order) = peer.order.filter(|o| o.request_id == request_id) else {
                    return;
                };
                peer.order = None;
                // Flow control counts the message only if it still sends from where the order
                // began (an answer meanwhile may have sent it back to probing elsewhere).
                let still_current = peer.progress.state() != super::ProgressState::Snapshot
                    && peer.progress.next_index().prev() == order.prev_index;
                if still_current && last_index > order.prev_index {
                    peer.progress.on_sent_message(
                        super::SendRange {
                            prev_index: order.prev_index,
                            last_index: last_index.min(order.last_index),
                        },
                        bytes,
                        last_index < order.last_index,
                        now,
                    );
                }
            }
            SendOutcome::EntriesUnavailable { to, request_id } => {
                let Some(peer) = leader.peers.get_mut(&to) else {
                    return;
                };
                let Some(order) = peer.order.filter(|o| o.request_id == request_id) else {
                    return;
                };
                peer.order = None;
                // Compacted since it was ordered: the next pump sends a snapshot. Otherwise the
                // store failed or lags: try again at the next heartbeat.
                peer.paused = !compacted(order.prev_index);
            }
            SendOutcome::SnapshotOpened {
                to,
                request_id,
                meta,
            } => {
                let Some(peer) = leader.peers.get_mut(&to) else {
                    return;
                };
                let Some(sending) = peer
                    .snapshot
                    .as_mut()
                    .filter(|s| s.request_id == request_id && s.meta.is_none())
                else {
                    return;
                };
                if meta.last_included.index < log_start.index {
                    // Older than the log's start: it cannot bring the peer to where entries
                    // follow. (A snapshot is taken before the log behind it is compacted.)
                    peer.snapshot = None;
                    peer.progress.on_snapshot_abandoned();
                    peer.paused = true;
                    return;
                }
                sending.meta = Some(meta);
                sending.offset = 0;
                self.send_snapshot_chunk(to);
            }
            SendOutcome::SnapshotUnavailable { to, request_id } => {
                let Some(peer) = leader.peers.get_mut(&to) else {
                    return;
                };
                if peer
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| s.request_id == request_id)
                {
                    // Probe again from what the peer holds; a snapshot is tried afresh at the
                    // next heartbeat, if still needed.
                    peer.snapshot = None;
                    peer.progress.on_snapshot_abandoned();
                    peer.paused = true;
                }
            }
        }
    }
}
