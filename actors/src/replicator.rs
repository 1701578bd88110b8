//! One replicator per peer while this node leads: owns the peer's `nextIndex`/`matchIndex` and flow
//! control ([`Progress`]), reads entries from the log store and sends AppendEntries (§5.3), and
//! reports what the peer holds, tagged with its term, to the node.

use crate::entry_cache::EntryCache;
use crate::messages::{
    ConfirmLeadership, EntriesRead, FollowerDataLoss, Heartbeat, HigherTermSeen, LeaderProgress,
    LeadershipConfirmed, PeerResponse, PeerSnapshotResponse, ReadEntries, ReplicationReport,
    Shutdown,
};
use crate::node::NodeActor;
use crate::snapshot::SnapshotOptions;
use crate::transport::Outbound;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Recipient};
use bytes::Bytes;
use raftor_core::{
    AppendEntries, Entry, Envelope, InstallSnapshot, LogId, LogIndex, Message, NodeId,
    PendingRounds, Progress, ProgressState, ResponseEffect, SendRange, SnapshotMeta,
    SnapshotOutcome, Term,
};
use raftor_storage::SnapshotStore;

/// A snapshot on its way to the peer.
struct Sending {
    meta: SnapshotMeta,
    /// Open for the whole transfer, so a newer snapshot replacing it on disk does not cut it short.
    file: std::fs::File,
    /// Where the chunk in flight starts.
    offset: u64,
    /// The `request_id` of the chunk in flight: only its answer counts.
    request_id: u64,
    /// Heartbeat periods without an answer to the chunk in flight.
    quiet_heartbeats: u32,
}

/// Limits of one AppendEntries and of the pipeline toward one peer.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationLimits {
    pub max_entries_per_message: u64,
    pub max_bytes_per_message: usize,
    /// The most AppendEntries messages in flight to one peer.
    pub max_inflight: usize,
    /// The most payload bytes in flight to one peer (one message may always leave).
    pub max_inflight_bytes: usize,
}

impl Default for ReplicationLimits {
    fn default() -> Self {
        ReplicationLimits {
            max_entries_per_message: 1024,
            max_bytes_per_message: 4 * 1024 * 1024,
            max_inflight: 64,
            max_inflight_bytes: 32 * 1024 * 1024,
        }
    }
}

pub struct Replicator {
    leader_id: NodeId,
    peer: NodeId,
    /// The term this replicator serves; it is stopped when the term ends, and every report carries it.
    term: Term,
    progress: Progress,
    /// The leader's last log index as last told.
    last_index: LogIndex,
    /// The leader's commit index as last told.
    commit_index: LogIndex,
    /// The range being read from the log store, at most one at a time.
    reading: Option<SendRange>,
    /// The `request_id` of the next AppendEntries; grows by one per message.
    next_request_id: u64,
    /// Leadership confirmation rounds waiting for the peer's answer.
    confirming: PendingRounds,
    limits: ReplicationLimits,
    /// The leader's newest entries, shared with the node: sent from here without a log read.
    cache: EntryCache,
    /// Where the leader's snapshots are, to send one to a peer that needs compacted entries.
    snapshots: Option<SnapshotOptions>,
    /// The snapshot being sent, one chunk in flight at a time.
    sending: Option<Sending>,
    node: Addr<NodeActor>,
    log_store: Recipient<ReadEntries>,
    transport: Recipient<Outbound>,
}

impl Replicator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        leader_id: NodeId,
        peer: NodeId,
        term: Term,
        last_index: LogIndex,
        limits: ReplicationLimits,
        cache: EntryCache,
        snapshots: Option<SnapshotOptions>,
        node: Addr<NodeActor>,
        log_store: Recipient<ReadEntries>,
        transport: Recipient<Outbound>,
    ) -> Self {
        Replicator {
            leader_id,
            peer,
            term,
            progress: Progress::new(last_index, limits.max_inflight)
                .with_max_inflight_bytes(limits.max_inflight_bytes),
            last_index,
            commit_index: LogIndex::ZERO,
            reading: None,
            next_request_id: 1,
            confirming: PendingRounds::default(),
            limits,
            cache,
            snapshots,
            sending: None,
            node,
            log_store,
            transport,
        }
    }

    /// Send whatever flow control allows: straight from the entry cache while it holds the range
    /// (so replication does not wait for the leader's own sync), otherwise read it from the log
    /// store first (one read at a time).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.reading.is_none() {
            let Some(range) = self
                .progress
                .next_send(self.last_index, self.limits.max_entries_per_message)
            else {
                return;
            };
            let from = range.prev_index.next();
            if range.last_index < from {
                // Nothing to carry (a probe at the end of the log): only the previous term is needed.
                if let Some(prev_term) = self.cache.term(range.prev_index) {
                    self.send_entries(prev_term, range.prev_index, Vec::new());
                    continue;
                }
            } else if let Some(cached) =
                self.cache
                    .read(from, range.last_index, self.limits.max_bytes_per_message)
            {
                self.send_entries(cached.prev_term, range.prev_index, cached.entries);
                continue;
            }
            self.reading = Some(range);
            self.log_store.do_send(ReadEntries {
                prev_index: Some(range.prev_index),
                from,
                to: range.last_index,
                max_bytes: self.limits.max_bytes_per_message,
                reply: ctx.address().recipient(),
            });
        }
    }

    /// Send `entries` following `prev_index` (of `prev_term`) and account for them in flow control.
    fn send_entries(&mut self, prev_term: Term, prev_index: LogIndex, entries: Vec<Entry>) {
        let last_index = entries.last().map(|e| e.index).unwrap_or(prev_index);
        let bytes = entries.iter().map(Entry::payload_len).sum();
        self.progress.on_sent_bytes(
            SendRange {
                prev_index,
                last_index,
            },
            bytes,
        );
        self.send(AppendEntries {
            term: self.term,
            prev_log_id: LogId::new(prev_term, prev_index),
            entries,
            leader_commit: self.commit_index,
            request_id: 0,
        });
    }

    /// Number `message` and hand it to the transport.
    fn send(&mut self, mut message: AppendEntries) {
        message.request_id = self.take_request_id();
        self.transport.do_send(Outbound(Envelope {
            from: self.leader_id,
            to: self.peer,
            message: Message::AppendEntries(message),
        }));
    }

    fn take_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// The peer needs entries this leader compacted: send it the newest snapshot instead (§7).
    fn start_snapshot(&mut self) {
        if self.sending.is_some() {
            return;
        }
        let Some(options) = &self.snapshots else {
            tracing::error!(node = %self.leader_id, peer = %self.peer, "the peer needs compacted entries, but this node keeps no snapshots");
            return;
        };
        let opened = options.store.latest().and_then(|latest| match latest {
            Some(meta) => options
                .store
                .open_data(&meta)
                .map(|file| Some((meta, file))),
            None => Ok(None),
        });
        match opened {
            Ok(Some((meta, file))) => {
                tracing::info!(node = %self.leader_id, term = %self.term, peer = %self.peer, last = %meta.last_included, bytes = meta.size, "sending a snapshot");
                self.progress.become_snapshot();
                self.sending = Some(Sending {
                    meta,
                    file,
                    offset: 0,
                    request_id: 0,
                    quiet_heartbeats: 0,
                });
                self.send_chunk();
            }
            // Retried on the next heartbeat.
            Ok(None) => {
                tracing::warn!(node = %self.leader_id, peer = %self.peer, "the peer needs compacted entries, but no snapshot is there yet")
            }
            Err(error) => {
                tracing::error!(node = %self.leader_id, peer = %self.peer, %error, "cannot open the snapshot to send")
            }
        }
    }

    /// Send the chunk of the snapshot at the current offset.
    fn send_chunk(&mut self) {
        let request_id = self.take_request_id();
        let chunk_bytes = self
            .snapshots
            .as_ref()
            .map_or(1 << 20, |options| options.policy.chunk_bytes.max(1));
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        let data = match SnapshotStore::read_chunk(&mut sending.file, sending.offset, chunk_bytes) {
            Ok(data) => data,
            Err(error) => {
                tracing::error!(node = %self.leader_id, peer = %self.peer, %error, "cannot read the snapshot to send");
                self.sending = None;
                return;
            }
        };
        sending.request_id = request_id;
        sending.quiet_heartbeats = 0;
        let done = sending.offset + data.len() as u64 >= sending.meta.size;
        let chunk = InstallSnapshot {
            term: self.term,
            request_id,
            meta: sending.meta.clone(),
            offset: sending.offset,
            data: Bytes::from(data),
            done,
        };
        self.transport.do_send(Outbound(Envelope {
            from: self.leader_id,
            to: self.peer,
            message: Message::InstallSnapshot(chunk),
        }));
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(node = %self.leader_id, term = %self.term, peer = %self.peer, "replicator started");
        self.pump(ctx);
    }
}

impl Handler<EntriesRead> for Replicator {
    type Result = ();

    fn handle(&mut self, read: EntriesRead, ctx: &mut Context<Self>) {
        let Some(range) = self.reading.take() else {
            return;
        };
        if read.compacted {
            self.start_snapshot();
            return;
        }
        let entries = match read.entries {
            Ok(entries) => entries,
            // Logged by the log store; the next heartbeat tries again.
            Err(_) => return,
        };
        let (Some(prev_term), Some(prev_index)) = (read.prev_term, read.prev_index) else {
            return;
        };
        // Progress may have moved (a rejection, a success) while the read was under way.
        if self
            .progress
            .next_send(self.last_index, self.limits.max_entries_per_message)
            .map(|r| r.prev_index)
            != Some(range.prev_index)
        {
            self.pump(ctx);
            return;
        }
        self.send_entries(prev_term, prev_index, entries);
        self.pump(ctx);
    }
}

impl Replicator {
    /// From now on, every message answers for confirmation round `round`.
    fn note_round(&mut self, round: u64) {
        self.confirming.note(round, self.next_request_id);
    }

    /// The peer answered message `request_id` in this term: the newest round that message
    /// answers for is confirmed (and every older one with it).
    fn confirm_rounds(&mut self, request_id: u64) {
        if let Some(round) = self.confirming.answered(request_id) {
            self.node.do_send(LeadershipConfirmed {
                peer: self.peer,
                term: self.term,
                round,
            });
        }
    }
}

impl Handler<PeerResponse> for Replicator {
    type Result = ();

    fn handle(&mut self, PeerResponse(response): PeerResponse, ctx: &mut Context<Self>) {
        if response.term == self.term && response.vouches() {
            self.confirm_rounds(response.request_id);
        }
        let matched_before = self.progress.matched();
        let effect = self.progress.on_response(self.term, &response);
        if self.progress.take_data_loss() {
            tracing::warn!(node = %self.leader_id, term = %self.term, peer = %self.peer, matched = %matched_before, "the peer's log is shorter than it acknowledged: it lost its data; catching it up from scratch (it votes again only once it has rejoined)");
            self.node.do_send(FollowerDataLoss {
                peer: self.peer,
                term: self.term,
            });
        }
        match effect {
            ResponseEffect::Unvouched => self.pump(ctx),
            ResponseEffect::Contact { matched } => {
                self.node.do_send(ReplicationReport {
                    peer: self.peer,
                    term: self.term,
                    matched,
                    next_index: self.progress.next_index(),
                });
                self.pump(ctx);
            }
            ResponseEffect::HigherTerm(term) => self.node.do_send(HigherTermSeen {
                peer: self.peer,
                term,
            }),
            ResponseEffect::Stale => {}
        }
    }
}

impl Handler<LeaderProgress> for Replicator {
    type Result = ();

    fn handle(&mut self, update: LeaderProgress, ctx: &mut Context<Self>) {
        self.last_index = self.last_index.max(update.last_index);
        self.commit_index = self.commit_index.max(update.commit_index);
        self.pump(ctx);
    }
}

impl Handler<Heartbeat> for Replicator {
    type Result = ();

    fn handle(&mut self, heartbeat: Heartbeat, ctx: &mut Context<Self>) {
        self.commit_index = self.commit_index.max(heartbeat.commit_index);
        if let Some(round) = heartbeat.round {
            self.note_round(round);
        }
        if let Some(sending) = self.sending.as_mut() {
            // A chunk or its answer was lost: send it again after a few quiet heartbeats.
            sending.quiet_heartbeats += 1;
            if sending.quiet_heartbeats >= 3 {
                self.send_chunk();
            }
            return;
        }
        self.progress.on_heartbeat_tick();
        if self.progress.state() == ProgressState::Replicate {
            self.send_heartbeat();
        }
        self.pump(ctx);
    }
}

impl Replicator {
    /// An empty AppendEntries that vouches only for what the peer is known to hold, so it always
    /// matches and carries the commit index as far as the peer can use it.
    fn send_heartbeat(&mut self) {
        let matched = self.progress.matched();
        self.send(AppendEntries {
            term: self.term,
            prev_log_id: matched,
            entries: Vec::new(),
            leader_commit: self.commit_index.min(matched.index),
            request_id: 0,
        });
    }
}

impl Handler<ConfirmLeadership> for Replicator {
    type Result = ();

    fn handle(&mut self, confirm: ConfirmLeadership, _ctx: &mut Context<Self>) {
        // Any answer to this message or a later one proves the peer still followed us after the
        // read arrived.
        self.note_round(confirm.round);
        self.send_heartbeat();
    }
}

impl Handler<PeerSnapshotResponse> for Replicator {
    type Result = ();

    fn handle(
        &mut self,
        PeerSnapshotResponse(response): PeerSnapshotResponse,
        ctx: &mut Context<Self>,
    ) {
        if response.term > self.term {
            self.node.do_send(HigherTermSeen {
                peer: self.peer,
                term: response.term,
            });
            return;
        }
        if response.term == self.term {
            // A chunk's answer is contact for check-quorum, which must see a peer that is
            // receiving a long snapshot (not a confirmation for reads: a rejoining node answers
            // chunks too).
            if self.sending.is_some() {
                self.node.do_send(ReplicationReport {
                    peer: self.peer,
                    term: self.term,
                    matched: None,
                    next_index: self.progress.next_index(),
                });
            }
        }
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        if response.term < self.term || response.request_id != sending.request_id {
            // An answer to an older chunk (it was resent meanwhile) or from an older term.
            return;
        }
        match response.outcome {
            SnapshotOutcome::NextOffset(offset) => {
                sending.offset = if offset <= sending.meta.size {
                    offset
                } else {
                    0
                };
                self.send_chunk();
            }
            SnapshotOutcome::Installed { last_included } => {
                tracing::info!(node = %self.leader_id, term = %self.term, peer = %self.peer, last = %last_included, "snapshot installed on the peer");
                self.sending = None;
                self.progress.on_snapshot_installed(last_included);
                self.node.do_send(ReplicationReport {
                    peer: self.peer,
                    term: self.term,
                    matched: Some(self.progress.matched()),
                    next_index: self.progress.next_index(),
                });
                self.pump(ctx);
            }
            SnapshotOutcome::StaleTerm => {}
        }
    }
}

impl Handler<Shutdown> for Replicator {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
