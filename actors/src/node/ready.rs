//! Carrying out the rules' `Ready`, in order: the prompt answers, the write (the messages behind
//! it leave once it is durable), then leadership and configuration, the leader's sends, a
//! snapshot to install, what the applier may apply, and the answers to reads.

use super::NodeActor;
use crate::error::ReadError;
use crate::messages::{AwaitApply, Commit, RestoreSnapshot};
use crate::network::tcp::UpdatePeers;
use crate::transport::Outbound;
use actix::Context;
use raftor_core::{LeadershipChange, Membership, Standing};

impl NodeActor {
    /// Carry out what the rules asked for, in order: persistence first (the log store sends the
    /// messages once it is durable), then leadership changes, replication and application.
    pub(super) fn process_ready(&mut self, ctx: &mut Context<Self>) {
        let ready = self.raft.take_ready();
        self.publish();
        if !self.waiters.is_empty() {
            // Ahead of any Commit that could cover their entries: the applier's mailbox keeps order.
            self.links
                .applier
                .do_send(AwaitApply(std::mem::take(&mut self.waiters)));
        }
        if ready.is_empty() {
            self.send_applicable();
            return;
        }
        if let Some(meta) = &ready.restore {
            // The rules installed a received snapshot: it becomes the store's newest before the
            // log is compacted or cut behind it.
            if let Err(error) = self.promote_staged(meta) {
                self.stop_failing(ctx, format!("cannot keep the received snapshot: {error}"));
                return;
            }
        }
        self.staged = None;
        let term = self.raft.current_term();
        if let Some(standing) = ready.write.standing {
            match standing {
                Standing::Member => {
                    tracing::info!(node = %self.id(), term = %term, "rejoined: this node's store holds what it promised; it votes again")
                }
                Standing::CatchingUp {
                    floor,
                    floor_log,
                    floor_leader_commit,
                } => {
                    tracing::info!(node = %self.id(), term = %term, %floor, %floor_log, floor_leader_commit = ?floor_leader_commit.map(|c| c.0), "rejoining: the voters answered; votes only in terms after the floor, for logs at least as up to date as the floor log (or its own, once it holds the floor leader's log to its reported commit), until it holds an entry of a later term or that log")
                }
                Standing::Rejoining => {}
            }
        }
        if let Some(hard_state) = &ready.write.hard_state {
            tracing::debug!(node = %self.id(), term = %term, voted_for = ?hard_state.voted_for, "persisting hard state");
        }
        // The cache shows the log as the rules see it from now on; the leader sends from it
        // while the log store syncs (the leader counts its own copy only once flushed).
        self.links.cache.apply(&ready.write);
        self.log_entries_appended += ready.write.entries.len() as u64;
        self.log_bytes_appended += ready
            .write
            .entries
            .iter()
            .map(|entry| entry.payload_len() as u64)
            .sum::<u64>();
        // Answers that promise nothing unsynced: at once, not behind the log store's queue.
        for envelope in ready.prompt_messages {
            self.links.transport.do_send(Outbound(envelope));
        }
        if !ready.write.is_empty() || !ready.messages.is_empty() {
            self.persist(ctx, ready.write, ready.messages, ready.write_may_wait);
        }
        match ready.leadership {
            Some(LeadershipChange::Became { term, .. }) => {
                tracing::info!(node = %self.id(), term = %term, "became leader");
                self.senders.clear();
            }
            Some(LeadershipChange::Lost) => {
                tracing::info!(node = %self.id(), term = %term, "stepped down");
                self.senders.clear();
            }
            None => {}
        }
        for peer in ready.peers_lost_data {
            tracing::warn!(node = %self.id(), term = %term, %peer, "the peer's log is shorter than it acknowledged: it lost its data; catching it up from scratch (it votes again only once it has rejoined)");
        }
        if let Some(membership) = ready.membership {
            self.on_membership(membership);
        }
        self.carry_out(ctx, ready.sends);
        self.links.cache.unsent_from(self.lowest_unsent_index());
        if let Some(meta) = ready.restore {
            // Ahead of the Commit that covers it: the applier restores, then applies what follows.
            self.links.applier.do_send(RestoreSnapshot { meta });
        }
        if !ready.snapshot_chunks.is_empty() {
            for (from, chunk) in ready.snapshot_chunks {
                self.receive_chunk(from, chunk);
            }
            // A completed snapshot changed the rules' state: carry that out too.
            self.schedule_ready(ctx);
        }
        self.send_applicable();
        for read in ready.reads {
            let Some((query, reply)) = self.pending_reads.remove(&read.id) else {
                continue;
            };
            match read.result {
                Ok(index) => self.query_at(index, query, reply),
                Err(not_leader) => {
                    let _ = reply.send(Err(ReadError::NotLeader {
                        leader: not_leader.leader.or(self.raft.leader_id()),
                    }));
                }
            }
        }
    }

    /// Tell the applier how far it may apply, if that moved: committed and durable here.
    pub(super) fn send_applicable(&mut self) {
        let applicable = self.raft.applicable_index();
        if applicable > self.applicable_sent {
            self.applicable_sent = applicable;
            self.links.applier.do_send(Commit { index: applicable });
        }
    }

    /// The configuration in force changed (§6: it takes effect when appended): tell the transport
    /// whom to reach (until the change commits, a leader still reaches the previous members too).
    fn on_membership(&mut self, membership: Membership) {
        tracing::info!(node = %self.id(), term = %self.raft.current_term(), voters = ?membership.conf.voters, learners = ?membership.conf.learners, outgoing = ?membership.conf.voters_outgoing, "configuration in force");
        let targets = self.raft.replication_targets();
        self.senders.retain(|peer, _| targets.contains(peer));
        if let Some(peers) = &self.links.peer_addresses {
            let mut addresses = membership.addresses;
            let mut members = membership.conf.members();
            for target in targets {
                if let Some(address) = self.raft.address_of(target) {
                    addresses.entry(target).or_insert_with(|| address.clone());
                }
                members.insert(target);
            }
            peers.do_send(UpdatePeers { members, addresses });
        }
    }
}
