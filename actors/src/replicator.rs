//! One replicator per peer while this node leads: owns the peer's `nextIndex`/`matchIndex` and flow
//! control ([`Progress`]), reads entries from the log store and sends AppendEntries (§5.3), and
//! reports what the peer holds, tagged with its term, to the node.

use crate::entry_cache::EntryCache;
use crate::messages::{
    ConfirmLeadership, EntriesRead, Heartbeat, HigherTermSeen, LeaderProgress, LeadershipConfirmed,
    PeerResponse, ReadEntries, ReplicationReport, Shutdown,
};
use crate::node::NodeActor;
use crate::transport::Outbound;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Recipient};
use raftor_core::{
    AppendEntries, Entry, Envelope, LogId, LogIndex, Message, NodeId, Progress, ProgressState,
    ResponseEffect, SendRange, Term,
};

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
    /// A leadership confirmation round waiting for an answer to a message numbered at least this.
    confirming: Option<(u64, u64)>,
    limits: ReplicationLimits,
    /// The leader's newest entries, shared with the node: sent from here without a log read.
    cache: EntryCache,
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
            confirming: None,
            limits,
            cache,
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
        message.request_id = self.next_request_id;
        self.next_request_id += 1;
        self.transport.do_send(Outbound(Envelope {
            from: self.leader_id,
            to: self.peer,
            message: Message::AppendEntries(message),
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

impl Handler<PeerResponse> for Replicator {
    type Result = ();

    fn handle(&mut self, PeerResponse(response): PeerResponse, ctx: &mut Context<Self>) {
        if let Some((round, first_request)) = self.confirming {
            if response.term == self.term && response.request_id >= first_request {
                self.confirming = None;
                self.node.do_send(LeadershipConfirmed {
                    peer: self.peer,
                    term: self.term,
                    round,
                });
            }
        }
        match self.progress.on_response(self.term, &response) {
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
        // read arrived. A newer round supersedes an older one (the rules count the highest).
        self.confirming = Some((confirm.round, self.next_request_id));
        self.send_heartbeat();
    }
}

impl Handler<Shutdown> for Replicator {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
