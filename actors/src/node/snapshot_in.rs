//! A snapshot arriving from the leader, chunk by chunk: staged on disk, handed to the rules once
//! whole and checked, made the store's newest when they install it.

use super::NodeActor;
use crate::snapshot::{ChunkOutcome, Receiving};
use crate::transport::Outbound;
use raftor_core::{
    Envelope, InstallSnapshot, InstallSnapshotResponse, Message, NodeId, SnapshotMeta,
    SnapshotOutcome,
};

impl NodeActor {
    /// Take in a snapshot chunk from the leader `from`; answer where to go on, or, once the whole
    /// snapshot is checked and durable, hand it to the rules to install.
    pub(super) fn receive_chunk(&mut self, from: NodeId, chunk: InstallSnapshot) {
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
    pub(super) fn promote_staged(&mut self, meta: &SnapshotMeta) -> Result<(), String> {
        let (Some(options), Some(staged)) = (&self.links.snapshots, self.staged.take()) else {
            return Err(format!("snapshot {} is not staged", meta.last_included));
        };
        if &staged.meta != meta {
            return Err(format!(
                "the staged snapshot is {}, the rules installed {}",
                staged.meta.last_included, meta.last_included
            ));
        }
        options.store.promote(staged).map_err(|e| e.to_string())?;
        self.newest_snapshot = Some(super::status::SnapshotSummary::of(meta));
        Ok(())
    }
}
