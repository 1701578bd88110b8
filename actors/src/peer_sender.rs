//! One sender per peer while this node leads: the IO of the leader's sends that the node cannot
//! do from its entry cache. It reads entries from the log store, and snapshot chunks from the
//! snapshot store, sends them, and reports to the node what it could not do as ordered
//! ([`SendOutcome`]). Every decision (what to send, when, how much) is the rules'
//! (`raftor_core::PeerSend`); a sender keeps nothing but the snapshot file it has open.

use crate::messages::{
    EntriesRead, FetchEntries, OpenSnapshot, ReadEntries, SendChunk, SendReport,
};
use crate::snapshot::SnapshotOptions;
use crate::transport::Outbound;
use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use bytes::Bytes;
use raftor_core::{EntriesOrder, NodeId, SendOutcome, SnapshotMeta};
use raftor_storage::SnapshotStore;

/// Limits of the leader's sends to one peer: the rules' flow control
/// (`raftor_core::ReplicationConfig`) and the driver's bound on a message's bytes.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationLimits {
    pub max_entries_per_message: u64,
    /// An AppendEntries stops before this many payload bytes (it carries one entry at least).
    pub max_bytes_per_message: usize,
    /// The most AppendEntries messages in flight to one peer.
    pub max_inflight: usize,
    /// The most payload bytes in flight to one peer (one message may always leave).
    pub max_inflight_bytes: usize,
    /// While a message smaller than this is in flight to a peer, the next waits until it is
    /// full or the answer comes (Nagle's algorithm; see
    /// `raftor_core::ReplicationConfig::coalesce_below_bytes`). 0: every message pipelines.
    pub coalesce_below_bytes: usize,
}

impl Default for ReplicationLimits {
    fn default() -> Self {
        let rules = raftor_core::ReplicationConfig::default();
        ReplicationLimits {
            max_entries_per_message: rules.max_entries_per_message,
            max_bytes_per_message: 4 * 1024 * 1024,
            max_inflight: rules.max_inflight,
            max_inflight_bytes: rules.max_inflight_bytes,
            coalesce_below_bytes: rules.coalesce_below_bytes,
        }
    }
}

impl ReplicationLimits {
    /// The part the rules enforce.
    pub fn rules(&self) -> raftor_core::ReplicationConfig {
        raftor_core::ReplicationConfig {
            max_entries_per_message: self.max_entries_per_message.max(1),
            max_inflight: self.max_inflight.max(1),
            max_inflight_bytes: self.max_inflight_bytes.max(1),
            coalesce_below_bytes: self.coalesce_below_bytes,
        }
    }
}

/// The snapshot open for sending to the peer.
struct OpenFile {
    meta: SnapshotMeta,
    /// Open for the whole transfer, so a newer snapshot replacing it on disk does not cut it short.
    file: std::fs::File,
}

pub struct PeerSender {
    leader_id: NodeId,
    peer: NodeId,
    max_bytes_per_message: usize,
    snapshots: Option<SnapshotOptions>,
    open: Option<OpenFile>,
    /// The entries order whose read from the log store is under way (one at a time: the rules
    /// order nothing else for this peer until it is reported).
    reading: Option<EntriesOrder>,
    log_store: Recipient<ReadEntries>,
    transport: Recipient<Outbound>,
    node: Recipient<SendReport>,
}

impl PeerSender {
    pub(crate) fn new(
        leader_id: NodeId,
        peer: NodeId,
        max_bytes_per_message: usize,
        snapshots: Option<SnapshotOptions>,
        log_store: Recipient<ReadEntries>,
        transport: Recipient<Outbound>,
        node: Recipient<SendReport>,
    ) -> PeerSender {
        PeerSender {
            leader_id,
            peer,
            max_bytes_per_message,
            snapshots,
            open: None,
            reading: None,
            log_store,
            transport,
            node,
        }
    }

    fn report(&self, outcome: SendOutcome) {
        self.node.do_send(SendReport(outcome));
    }
}

impl Actor for PeerSender {
    type Context = Context<Self>;
}

impl Handler<FetchEntries> for PeerSender {
    type Result = ();

    fn handle(&mut self, FetchEntries(order): FetchEntries, ctx: &mut Context<Self>) {
        if let Some(earlier) = self.reading.replace(order.clone()) {
            // The rules gave up on it (and report it unavailable, to be ignored).
            self.report(earlier.unavailable());
        }
        self.log_store.do_send(ReadEntries {
            prev_index: Some(order.prev_log_id.index),
            from: order.first_index(),
            to: order.last_index,
            max_bytes: self.max_bytes_per_message,
            reply: ctx.address().recipient(),
        });
    }
}

impl Handler<EntriesRead> for PeerSender {
    type Result = ();

    fn handle(&mut self, read: EntriesRead, _ctx: &mut Context<Self>) {
        let Some(order) = self.reading.take() else {
            return;
        };
        let mut entries = match read.entries {
            // Read as the rules know the log: the same entry before them, the entries ordered
            // (a read for an order the rules gave up on may answer a later one for the same
            // range: the same entries).
            Ok(entries)
                if !read.compacted
                    && read.prev_index == Some(order.prev_log_id.index)
                    && read.prev_term == Some(order.prev_log_id.term)
                    && entries.first().map(|e| e.index) == Some(order.first_index()) =>
            {
                entries
            }
            // Compacted meanwhile, or a failed read (the log store logged it).
            _ => return self.report(order.unavailable()),
        };
        entries.retain(|entry| entry.index <= order.last_index);
        let outcome = order.sent(&entries);
        self.transport
            .do_send(Outbound(order.message(self.leader_id, entries)));
        self.report(outcome);
    }
}

impl Handler<OpenSnapshot> for PeerSender {
    type Result = ();

    fn handle(&mut self, open: OpenSnapshot, _ctx: &mut Context<Self>) {
        self.open = None;
        let Some(options) = &self.snapshots else {
            tracing::error!(node = %self.leader_id, peer = %self.peer, "the peer needs compacted entries, but this node keeps no snapshots");
            return self.report(SendOutcome::SnapshotUnavailable {
                to: self.peer,
                request_id: open.request_id,
            });
        };
        let opened = options.store.latest().and_then(|latest| match latest {
            Some(meta) => options
                .store
                .open_data(&meta)
                .map(|file| Some(OpenFile { meta, file })),
            None => Ok(None),
        });
        let outcome = match opened {
            Ok(Some(file)) => {
                tracing::info!(node = %self.leader_id, peer = %self.peer, last = %file.meta.last_included, bytes = file.meta.size, "sending a snapshot");
                let meta = file.meta.clone();
                self.open = Some(file);
                SendOutcome::SnapshotOpened {
                    to: self.peer,
                    request_id: open.request_id,
                    meta,
                }
            }
            Ok(None) => {
                tracing::warn!(node = %self.leader_id, peer = %self.peer, "the peer needs compacted entries, but no snapshot is there yet");
                SendOutcome::SnapshotUnavailable {
                    to: self.peer,
                    request_id: open.request_id,
                }
            }
            Err(error) => {
                tracing::error!(node = %self.leader_id, peer = %self.peer, %error, "cannot open the snapshot to send");
                SendOutcome::SnapshotUnavailable {
                    to: self.peer,
                    request_id: open.request_id,
                }
            }
        };
        self.report(outcome);
    }
}

impl Handler<SendChunk> for PeerSender {
    type Result = ();

    fn handle(&mut self, SendChunk(order): SendChunk, _ctx: &mut Context<Self>) {
        let chunk_bytes = self
            .snapshots
            .as_ref()
            .map_or(1 << 20, |options| options.policy.chunk_bytes.max(1));
        let Some(open) = self.open.as_mut().filter(|open| open.meta == order.meta) else {
            return self.report(order.unavailable());
        };
        match SnapshotStore::read_chunk(&mut open.file, order.offset, chunk_bytes) {
            Ok(data) => self
                .transport
                .do_send(Outbound(order.message(self.leader_id, Bytes::from(data)))),
            Err(error) => {
                tracing::error!(node = %self.leader_id, peer = %self.peer, %error, "cannot read the snapshot to send");
                self.open = None;
                self.report(order.unavailable());
            }
        }
    }
}
