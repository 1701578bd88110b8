//! What a leader sends its peers: entries as flow control allows (§5.3), a heartbeat each period
//! (§5.2) carrying the commit index as far as the peer can use it, a message to every peer for a
//! read's confirmation round (thesis §6.4), and a snapshot to a peer that needs compacted entries
//! (§7). Run once per `Ready` (`Raft::take_ready`), so the events that come together share one
//! message per peer.

use super::peer::{PeerReplication, SnapshotSending};
use super::peer::{CHUNK_PATIENCE_HEARTBEATS, ORDER_PATIENCE_HEARTBEATS};
use super::progress::{Progress, ProgressState};
use super::send::{ChunkOrder, EntriesOrder, PeerSend};
use crate::config::{RaftConfig, ReplicationConfig};
use crate::log_terms::LogTerms;
use crate::message::{AppendEntries, Envelope, Message};
use crate::raft::{LeaderState, Raft, Role};
use crate::types::{LogIndex, NodeId, Term};

/// Where a leader's sends go, numbered: the context every send needs.
pub(super) struct Outbox<'a> {
    pub(super) me: NodeId,
    pub(super) term: Term,
    pub(super) commit: LogIndex,
    /// The leader's clock, in ticks.
    pub(super) now: u64,
    /// The number of the next message; only grows.
    pub(super) next_request_id: &'a mut u64,
    pub(super) sends: &'a mut Vec<PeerSend>,
}

impl Outbox<'_> {
    fn take_request_id(&mut self) -> u64 {
        let id = *self.next_request_id;
        *self.next_request_id += 1;
        id
    }

    /// An empty AppendEntries that vouches only for what `to` is known to hold, so it always
    /// matches, carrying the commit index as far as `to` can use it.
    pub(super) fn heartbeat(&mut self, to: NodeId, progress: &Progress) {
        let matched = progress.matched();
        let request_id = self.take_request_id();
        self.sends.push(PeerSend::Message(Envelope {
            from: self.me,
            to,
            message: Message::AppendEntries(AppendEntries {
                term: self.term,
                prev_log_id: matched,
                entries: Vec::new(),
                leader_commit: self.commit.min(matched.index),
                sync_may_wait: false,
                request_id,
            }),
        }));
    }

    /// Ask the driver to open the newest snapshot for `to`, which needs compacted entries.
    fn open_snapshot(&mut self, to: NodeId, peer: &mut PeerReplication) {
        peer.progress.become_snapshot();
        let request_id = self.take_request_id();
        peer.snapshot = Some(SnapshotSending {
            request_id,
            meta: None,
            offset: 0,
            quiet_heartbeats: 0,
        });
        self.sends.push(PeerSend::OpenSnapshot { to, request_id });
    }

    /// Send the chunk of the snapshot at its current offset (or open it again, if it never was).
    pub(super) fn snapshot_chunk(&mut self, to: NodeId, peer: &mut PeerReplication) {
        let Some(sending) = peer.snapshot.as_mut() else {
            return;
        };
        let request_id = self.take_request_id();
        sending.request_id = request_id;
        sending.quiet_heartbeats = 0;
        match &sending.meta {
            Some(meta) => self.sends.push(PeerSend::SnapshotChunk(ChunkOrder {
                to,
                request_id,
                term: self.term,
                meta: meta.clone(),
                offset: sending.offset,
            })),
            None => self.sends.push(PeerSend::OpenSnapshot { to, request_id }),
        }
    }

    /// Send `to` whatever flow control allows: probes with no entries at once, entries as an
    /// order for the driver (one at a time), a snapshot when the entries are compacted.
    fn pump(
        &mut self,
        to: NodeId,
        peer: &mut PeerReplication,
        log: &LogTerms,
        limits: &ReplicationConfig,
    ) {
        while peer.may_order() {
            let Some(range) = peer
                .progress
                .next_send(log.last_index(), limits.max_entries_per_message)
            else {
                return;
            };
            let Some(prev_term) = term_in_log(log, range.prev_index) else {
                // Compacted away: only a snapshot can bring the peer up to the log's start.
                self.open_snapshot(to, peer);
                return;
            };
            let request_id = self.take_request_id();
            let prev_log_id = crate::types::LogId::new(prev_term, range.prev_index);
            if range.last_index == range.prev_index {
                // Nothing to carry (a probe at the end of the log): complete as it is.
                peer.progress.on_sent(range, self.now);
                self.sends.push(PeerSend::Message(Envelope {
                    from: self.me,
                    to,
                    message: Message::AppendEntries(AppendEntries {
                        term: self.term,
                        prev_log_id,
                        entries: Vec::new(),
                        leader_commit: self.commit,
                        sync_may_wait: false,
                        request_id,
                    }),
                }));
                continue;
            }
            peer.order = Some(super::peer::PendingOrder {
                request_id,
                prev_index: range.prev_index,
                last_index: range.last_index,
                heartbeats: 0,
            });
            self.sends.push(PeerSend::Entries(EntriesOrder {
                to,
                request_id,
                term: self.term,
                prev_log_id,
                last_index: range.last_index,
                leader_commit: self.commit,
                // Only while streaming: a probe's answer is what lets the pipeline start.
                sync_may_wait: peer.spare && peer.progress.state() == ProgressState::Replicate,
            }));
        }
    }
}

/// The term of the entry at `index`, if the leader can still send from there: `None` before its
/// log's start (compacted away, index 0 included once anything is).
pub(super) fn term_in_log(log: &LogTerms, index: LogIndex) -> Option<Term> {
    if index < log.start().index {
        return None;
    }
    log.term_at(index)
}

impl Raft {
    /// What the leader sends its peers for the events since the last call, also taken by
    /// [`Raft::take_ready`] into `Ready::sends`. A driver that carries out orders on the spot
    /// (from a cache) and reports them calls this again for what follows (the next message of
    /// a pipeline); it is cheap when there is nothing to send.
    pub fn take_sends(&mut self) -> Vec<PeerSend> {
        self.drive_replication();
        std::mem::take(&mut self.ready.sends)
    }

    /// Bring the peers in line with the replication targets, note a new confirmation round,
    /// send the heartbeats that are due, and whatever flow control allows.
    pub(crate) fn drive_replication(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        self.reconcile_peers();
        let me = self.id();
        let conf = &self.membership.current().conf;
        let voters = (!conf.is_joint()).then_some(&conf.voters);
        if let Some(leader) = self.leader.as_mut() {
            leader.mark_spare_followers(me, voters, self.ticks, self.config.heartbeat_ticks);
        }
        let Some((mut out, leader, log, config)) = self.sending_parts() else {
            return;
        };
        let round = leader.round_due.take();
        if let Some(round) = round {
            // Every message numbered from here on answers for the round.
            let first = *out.next_request_id;
            for peer in leader.peers.values_mut() {
                peer.rounds.note(round, first);
            }
        }
        if std::mem::take(&mut leader.heartbeat_due) {
            for (to, peer) in leader.peers.iter_mut() {
                Self::heartbeat_period(&mut out, *to, peer);
            }
        } else if round.is_some() {
            // A round for reads between heartbeats: every peer hears from us now.
            for (to, peer) in leader.peers.iter() {
                out.heartbeat(*to, &peer.progress);
            }
        }
        for (to, peer) in leader.peers.iter_mut() {
            out.pump(*to, peer, log, &config.replication);
        }
    }

    /// A heartbeat period passed for `peer`: give up on a lost order, retry after a failed one,
    /// resend a snapshot request that went unanswered, resend a lost probe (next pump) or give up
    /// on unanswered messages (`Progress::on_heartbeat_tick`), and send the heartbeat itself
    /// (to a peer receiving a snapshot, the chunks stand in for it).
    fn heartbeat_period(out: &mut Outbox<'_>, to: NodeId, peer: &mut PeerReplication) {
        if let Some(order) = peer.order.as_mut() {
            order.heartbeats += 1;
            if order.heartbeats >= ORDER_PATIENCE_HEARTBEATS {
                peer.order = None;
            }
        }
        peer.paused = false;
        if let Some(sending) = peer.snapshot.as_mut() {
            sending.quiet_heartbeats += 1;
            if sending.quiet_heartbeats >= CHUNK_PATIENCE_HEARTBEATS {
                out.snapshot_chunk(to, peer);
            }
            return;
        }
        peer.progress.on_heartbeat_tick(out.now);
        // While probing too: a probe carries entries, so a follower whose disk is busy answers
        // it only once they are synced; the heartbeat it answers at once.
        out.heartbeat(to, &peer.progress);
    }

    /// One peer per replication target, probing from the end of the log (§5.3), when the targets
    /// may have changed. A peer no longer a target hears a last heartbeat: it carries the commit
    /// of the configuration that left it out, so a removed node stops campaigning.
    fn reconcile_peers(&mut self) {
        if !self.leader.as_ref().is_some_and(|l| l.peers_stale) {
            return;
        }
        let targets = self.replication_targets();
        let last_index = self.log.last_index();
        let Some((mut out, leader, _, config)) = self.sending_parts() else {
            return;
        };
        leader.peers_stale = false;
        let gone: Vec<NodeId> = leader
            .peers
            .keys()
            .copied()
            .filter(|peer| !targets.contains(peer))
            .collect();
        for to in gone {
            if let Some(peer) = leader.peers.remove(&to) {
                out.heartbeat(to, &peer.progress);
            }
        }
        let limits = &config.replication;
        for to in targets {
            leader.peers.entry(to).or_insert_with(|| {
                PeerReplication::new(
                    Progress::new(last_index, limits.max_inflight)
                        .with_max_inflight_bytes(limits.max_inflight_bytes)
                        .with_coalescing(limits.coalesce_below_bytes)
                        .with_timing(config.heartbeat_ticks, config.election_ticks_min),
                )
            });
        }
    }

    /// Tell every peer how far the log is committed, as far as each holds it (a heartbeat): once
    /// a configuration is committed, so that it settles a heartbeat sooner (`crate::settle`),
    /// and once more by a removed leader as it hands over. Otherwise nobody left knows the change
    /// is committed until the next leader commits an entry, and a rejoining node (rejoin.rs)
    /// would still reckon with the configuration before it, whose removed member will never
    /// answer.
    pub(crate) fn tell_followers_the_commit(&mut self) {
        let Some((mut out, leader, ..)) = self.sending_parts() else {
            return;
        };
        for (to, peer) in leader.peers.iter() {
            out.heartbeat(*to, &peer.progress);
        }
    }

    /// Send `to` the chunk of its snapshot at the current offset.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        if let Some((mut out, leader, ..)) = self.sending_parts() {
            if let Some(peer) = leader.peers.get_mut(&to) {
                out.snapshot_chunk(to, peer);
            }
        }
    }

    /// What the leader's sends need, borrowed apart: the outbox, the leader's state, the log's
    /// terms and the configuration. `None` unless leader, and until its term is durable
    /// (`LeaderState::term_durable`): nothing of the term leaves before that.
    pub(super) fn sending_parts(
        &mut self,
    ) -> Option<(Outbox<'_>, &mut LeaderState, &LogTerms, &RaftConfig)> {
        let me = self.id();
        let Raft {
            leader:
                Some(
                    leader @ LeaderState {
                        term_durable: true, ..
                    },
                ),
            log,
            ready,
            next_request_id,
            current_term,
            commit_index,
            config,
            ticks,
            ..
        } = self
        else {
            return None;
        };
        let out = Outbox {
            me,
            term: *current_term,
            commit: *commit_index,
            now: *ticks,
            next_request_id,
            sends: &mut ready.sends,
        };
        Some((out, leader, log, config))
    }

    /// Each peer's replication progress, while leader (for status).
    pub fn replication_progress(&self) -> Option<impl Iterator<Item = (NodeId, &Progress)>> {
        let leader = self.leader.as_ref()?;
        Some(leader.peers.iter().map(|(id, peer)| (*id, &peer.progress)))
    }

    /// The replication targets may have changed: a configuration was appended, committed or cut.
    pub(crate) fn replication_targets_changed(&mut self) {
        if let Some(leader) = self.leader.as_mut() {
            leader.peers_stale = true;
        }
    }
}
