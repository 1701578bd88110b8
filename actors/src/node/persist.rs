//! Where and when a write is made: on the node's own thread for a follower's batch or a
//! leader's at low load, on the log store's thread otherwise; a spare follower's held a little
//! first (`NodeActor::persist`).

use super::NodeActor;
use crate::messages::Write;
use crate::transport::Outbound;
use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use raftor_core::{Envelope, LogWrite, Role};

/// A leader writes on its own thread only after this many sequential writes in a row
/// ([`NodeActor::sequential_writes`]). One write found alone says little: with 16 clients the
/// pipeline drains now and then, and writing there then stalled it (11% fewer writes/s measured).
const SEQUENTIAL_WRITES_TO_WRITE_HERE: u32 = 8;

/// A write held back before it is made ([`NodeActor::persist`]), with the messages to send once
/// it is durable; later writes merge into it, so none overtakes it.
pub(super) struct HeldWrite {
    write: LogWrite,
    messages: Vec<Envelope>,
    /// Held by a spare follower until its hold ends (`NodeOptions::spare_sync_hold`), rather
    /// than by a leader for one turn of the event loop: a write that may not wait ends it early.
    spare: bool,
}

/// The most payload bytes written on the node's own thread: a larger write (a few large values)
/// goes to the log store, so the node goes on answering heartbeats (`Ready::prompt_messages`)
/// while it syncs.
const INLINE_WRITE_MAX_BYTES: usize = 256 * 1024;

impl NodeActor {
    /// Make `write` durable, then send `messages` (Figure 2: persist before responding).
    ///
    /// A batch of up to `inline_write_max_entries` entries and [`INLINE_WRITE_MAX_BYTES`] is
    /// written here, on the node's own thread, when nothing handed to the log store is still
    /// waiting (so nothing is overtaken): the two thread hand-offs (there and back) cost more
    /// than the write itself. What arrives meanwhile waits in the mailbox and joins the next batch.
    /// - A follower or candidate writes at once: the answers that acknowledge entries wait for the
    ///   write anyway, and a batch this size takes well under a heartbeat period. A spare
    ///   follower's write that `may_wait` (`Ready::write_may_wait`) is held for
    ///   `spare_sync_hold` first, and what arrives meanwhile merges into it: one sync for
    ///   several writes, and one fewer sync on a disk the nodes may share.
    /// - A leader does so only after a run of writes that each found nothing else in flight (a
    ///   client waiting for each write before sending the next): with concurrent clients its
    ///   thread has their requests and the acknowledgements to serve while the log syncs. It
    ///   writes once the event loop has run what is ready, so its AppendEntries leave first and
    ///   its own sync runs beside replication (§10.2.1); later writes join it until then.
    ///
    /// A large batch goes to the log store's thread, so a node under load keeps reading from the
    /// network and from clients while it syncs.
    pub(super) fn persist(
        &mut self,
        ctx: &mut Context<Self>,
        write: LogWrite,
        messages: Vec<Envelope>,
        may_wait: bool,
    ) {
        if let Some(held) = &mut self.held_write {
            let urgent = !may_wait && !write.is_empty();
            held.write.merge(write);
            held.messages.extend(messages);
            if held.spare && urgent {
                // A write that may not wait (a new term or vote, entries a commit needs) takes
                // the held one with it now. Answers alone wait for it, as they would anyway.
                if let Some(held) = self.held_write.take() {
                    self.store(ctx, held.write, held.messages);
                }
            }
            return;
        }
        let leader = self.raft.role() == Role::Leader;
        if leader && !write.entries.is_empty() {
            let in_flight =
                (self.raft.last_log_id().index.0).saturating_sub(self.raft.commit_index().0);
            if in_flight <= write.entries.len() as u64 {
                self.sequential_writes = self.sequential_writes.saturating_add(1);
            } else {
                self.sequential_writes = 0;
            }
        }
        let here = self.may_write_here(&write)
            && (!leader || self.sequential_writes >= SEQUENTIAL_WRITES_TO_WRITE_HERE);
        if leader && here {
            self.held_write = Some(HeldWrite {
                write,
                messages,
                spare: false,
            });
            ctx.spawn(
                async {
                    // One turn of the event loop: the endpoint and its writers
                    // run what this Ready gave them (the wake-up is deferred until they have).
                    tokio::task::yield_now().await;
                }
                .into_actor(self)
                .map(|(), node, ctx| {
                    if let Some(held) = node.held_write.take() {
                        node.write_here(ctx, held.write, held.messages);
                    }
                }),
            );
        } else if !leader && here && may_wait && !self.links.spare_sync_hold.is_zero() {
            // A spare follower: later writes join this one until the hold ends (or one that
            // may not wait arrives), and all are synced at once.
            self.held_write = Some(HeldWrite {
                write,
                messages,
                spare: true,
            });
            self.holds_begun += 1;
            let hold = self.holds_begun;
            ctx.run_later(self.links.spare_sync_hold, move |node, ctx| {
                let ours = node.holds_begun == hold;
                if let Some(held) = node.held_write.take_if(|held| ours && held.spare) {
                    node.store(ctx, held.write, held.messages);
                }
            });
        } else if here {
            self.write_here(ctx, write, messages);
        } else {
            self.hand_off(write, messages);
        }
    }

    /// Whether `write` is small enough to be written on this thread, and may be now (nothing
    /// handed to the log store is still waiting, so nothing is overtaken).
    fn may_write_here(&self, write: &LogWrite) -> bool {
        self.links.inline_write_max_entries > 0
            && write.entries.len() <= self.links.inline_write_max_entries
            && write
                .entries
                .iter()
                .map(|entry| entry.payload_len())
                .sum::<usize>()
                <= INLINE_WRITE_MAX_BYTES
            && self.links.log_writer.may_write_here()
    }

    /// A spare follower's held write, with what joined it: here if it is still small enough,
    /// on the log store's thread otherwise.
    fn store(&mut self, ctx: &mut Context<Self>, write: LogWrite, messages: Vec<Envelope>) {
        if self.may_write_here(&write) {
            self.write_here(ctx, write, messages);
        } else {
            self.hand_off(write, messages);
        }
    }

    /// Hand `write` to the log store's thread, which sends `messages` once it is durable.
    fn hand_off(&mut self, write: LogWrite, messages: Vec<Envelope>) {
        if !write.is_empty() {
            self.log_writes_handed_off += 1;
        }
        self.links.log_writer.handed_off();
        self.links.log_write.do_send(Write {
            write,
            then_send: messages,
        });
    }

    /// Write and sync on this thread, then count the log durable and send `messages`; a failed
    /// write stops the node (what follows might depend on what was lost).
    fn write_here(&mut self, ctx: &mut Context<Self>, write: LogWrite, messages: Vec<Envelope>) {
        if !write.is_empty() {
            self.log_writes_inline += 1;
            if let Err(error) = self.links.log_writer.write(&write) {
                self.stop_failing(ctx, format!("storage failed: {error}"));
                return;
            }
            if let Some(last) = write.last_log_id() {
                self.raft.on_log_flushed(last);
                self.schedule_ready(ctx);
            }
        }
        for envelope in messages {
            self.links.transport.do_send(Outbound(envelope));
        }
    }
}
