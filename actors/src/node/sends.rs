//! The leader's sends (`Ready::sends`): entries the cache holds leave from the node's own
//! thread and are reported to the rules at once; what needs a read goes to the peer's sender.

use super::NodeActor;
use crate::messages::{FetchEntries, OpenSnapshot, SendChunk};
use crate::peer_sender::PeerSender;
use crate::transport::Outbound;
use actix::{Actor, Addr, AsyncContext, Context};
use raftor_core::{EntriesOrder, LogIndex, NodeId, PeerSend, ProgressState};

impl NodeActor {
    /// Carry out the leader's sends (`Ready::sends`): a complete message goes to the transport;
    /// entries the cache holds leave from here, reported to the rules at once, and what the
    /// rules send next (the next message of a pipeline) is carried out too; anything that needs
    /// a read goes to the peer's sender, which reports back.
    pub(super) fn carry_out(&mut self, ctx: &mut Context<Self>, mut sends: Vec<PeerSend>) {
        while !sends.is_empty() {
            let mut reported = false;
            for send in sends {
                match send {
                    PeerSend::Message(envelope) => {
                        self.links.transport.do_send(Outbound(envelope));
                    }
                    PeerSend::Entries(order) => match self.cached_entries(&order) {
                        Some(entries) => {
                            let outcome = order.sent(&entries);
                            self.links
                                .transport
                                .do_send(Outbound(order.message(self.id(), entries)));
                            self.raft.on_send_outcome(outcome);
                            reported = true;
                        }
                        None => self.sender(ctx, order.to).do_send(FetchEntries(order)),
                    },
                    PeerSend::OpenSnapshot { to, request_id } => {
                        self.sender(ctx, to).do_send(OpenSnapshot { request_id });
                    }
                    PeerSend::SnapshotChunk(order) => {
                        self.sender(ctx, order.to).do_send(SendChunk(order));
                    }
                }
            }
            if !reported {
                return;
            }
            sends = self.raft.take_sends();
        }
    }

    /// The lowest index the leader has yet to send to a follower it streams to (the entry cache
    /// keeps entries from it), `None` when not leader or no follower is in `Replicate`.
    pub(super) fn lowest_unsent_index(&self) -> Option<LogIndex> {
        self.raft
            .replication_progress()?
            .filter(|(_, progress)| progress.state() == ProgressState::Replicate)
            .map(|(_, progress)| progress.next_index())
            .min()
    }

    /// The entries `order` asks for, if the cache holds them (a prefix of them, at the byte bound).
    fn cached_entries(&self, order: &EntriesOrder) -> Option<Vec<raftor_core::Entry>> {
        let cached = self.links.cache.read(
            order.first_index(),
            order.last_index,
            self.limits.max_bytes_per_message,
        )?;
        (cached.prev_term == order.prev_log_id.term).then_some(cached.entries)
    }

    /// The sender for `peer`, started if need be.
    fn sender(&mut self, ctx: &mut Context<Self>, peer: NodeId) -> Addr<PeerSender> {
        if let Some(sender) = self.senders.get(&peer) {
            return sender.clone();
        }
        let sender = PeerSender::new(
            self.id(),
            peer,
            self.limits.max_bytes_per_message,
            self.links.snapshots.clone(),
            self.links.log_read.clone(),
            self.links.transport.clone(),
            ctx.address().recipient(),
        )
        .start();
        self.senders.insert(peer, sender.clone());
        sender
    }
}
