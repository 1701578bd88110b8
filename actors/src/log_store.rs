//! The log store: owns the [`LogStorage`], makes writes durable, and only then lets the messages
//! that depend on them leave (Figure 2: persist before responding).
//!
//! Writes reach the storage in one of two ways, never both at once:
//! - handed to the [`LogStoreActor`]. Group commit: writes that arrive while it is busy (syncing)
//!   queue in its mailbox; it merges all of them into one batch and syncs once, then reports the
//!   log durable up to the batch's last entry and sends every queued message in order. In
//!   production it runs on an arbiter of its own, so a sync blocks no other actor;
//! - written by the node on its own thread through [`LogWriter`], when nothing handed to the actor
//!   is still waiting and the write is small (a follower's answer waits for its write anyway; see
//!   `NodeActor::persist`). That saves two thread hand-offs per write.
//!
//! In tests on tokio's paused clock the actor runs on the test's thread with an in-memory store.

use crate::messages::{EntriesRead, Flushed, ReadEntries, StorageFailed, Write};
use crate::transport::Outbound;
use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use raftor_core::{Envelope, LogWrite, NodeId};
use raftor_storage::{LogStorage, StorageError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Told how long each synced write took and how many entries it appended (for metrics).
pub type LogWriteObserver = std::sync::Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

/// The node's side of the log store: write on the caller's thread, or learn that it may not.
pub(crate) trait LogWriter: Send + Sync {
    /// Whether a write may be made on the caller's thread now: every write handed to the log store
    /// actor is stored (so it cannot be overtaken), and none has failed.
    fn may_write_here(&self) -> bool;
    /// Note one more write handed to the log store actor.
    fn handed_off(&self);
    /// Store `write` and sync it, on the caller's thread.
    fn write(&self, write: &LogWrite) -> Result<(), StorageError>;
}

/// The storage, shared by the log store actor and the node's [`LogWriter`].
pub(crate) struct SharedLog<S> {
    node_id: NodeId,
    storage: Mutex<S>,
    observer: Option<LogWriteObserver>,
    /// Writes handed to the actor and not yet stored: a write on another thread may begin only at 0.
    pending: AtomicUsize,
    /// Set after a failed write: nothing more is written, because what follows might depend on
    /// what was lost.
    failed: AtomicBool,
}

impl<S: LogStorage> SharedLog<S> {
    pub(crate) fn new(node_id: NodeId, storage: S, observer: Option<LogWriteObserver>) -> Self {
        SharedLog {
            node_id,
            storage: Mutex::new(storage),
            observer,
            pending: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    fn storage(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock cannot leave a half-applied write behind (each write is
        // one atomic batch), so the storage stays usable.
        self.storage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Note that `count` handed-off writes are done with, stored or not.
    fn settled(&self, count: usize) {
        self.pending.fetch_sub(count, Ordering::AcqRel);
    }
}

impl<S: LogStorage> LogWriter for SharedLog<S> {
    fn may_write_here(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && !self.failed()
    }

    fn handed_off(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn write(&self, write: &LogWrite) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let written = self.storage().write(write);
        if let Some(observer) = &self.observer {
            observer(started.elapsed(), write.entries.len());
        }
        if let Err(error) = &written {
            tracing::error!(node = %self.node_id, %error, "log write failed; the node stops taking part");
            self.failed.store(true, Ordering::Release);
        }
        written
    }
}

pub struct LogStoreActor<S: LogStorage + Unpin> {
    log: Arc<SharedLog<S>>,
    transport: Recipient<Outbound>,
    flushed: Recipient<Flushed>,
    failed_to: Recipient<StorageFailed>,
    /// The writes received since the last flush, merged into one ([`LogWrite::merge`]).
    queued: LogWrite,
    /// The messages of those writes, to send once they are durable.
    queued_messages: Vec<Envelope>,
    /// How many [`Write`]s `queued` holds.
    queued_count: usize,
    /// Whether a [`FlushQueued`] is on its way.
    flush_scheduled: bool,
    /// For tests on tokio's paused clock, a slow disk: every synced write is reported (and its
    /// messages leave) this long after it was stored. `None` in production.
    sync_latency: Option<std::time::Duration>,
    /// With `sync_latency`: a simulated sync is running. What arrives meanwhile is queued and
    /// stored, as one batch, when it ends (as a store blocked in a sync would).
    syncing: bool,
}

impl<S: LogStorage + Unpin> LogStoreActor<S> {
    pub(crate) fn new(
        log: Arc<SharedLog<S>>,
        transport: Recipient<Outbound>,
        flushed: Recipient<Flushed>,
        failed_to: Recipient<StorageFailed>,
    ) -> Self {
        LogStoreActor {
            log,
            transport,
            flushed,
            failed_to,
            queued: LogWrite::default(),
            queued_messages: Vec::new(),
            queued_count: 0,
            flush_scheduled: false,
            sync_latency: None,
            syncing: false,
        }
    }

    /// A simulated slow disk, for tests on tokio's paused clock (the delay runs on tokio's
    /// clock, on the actor's own thread): each synced write is reported, and its messages leave,
    /// `latency` after it was stored; writes arriving meanwhile are stored together once it is
    /// reported (reads see only what is stored).
    pub(crate) fn with_sync_latency(mut self, latency: Option<std::time::Duration>) -> Self {
        self.sync_latency = latency;
        self
    }
}

impl<S: LogStorage + Unpin> Actor for LogStoreActor<S> {
    type Context = Context<Self>;
}

impl<S: LogStorage + Unpin> LogStoreActor<S> {
    /// Store everything queued as one synced write, then tell the node how far the log is
    /// durable, then let the queued messages leave, in the order they were queued.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            // Stored with the next batch, once the simulated sync in progress ends.
            return;
        }
        let write = std::mem::take(&mut self.queued);
        let messages = std::mem::take(&mut self.queued_messages);
        let count = std::mem::take(&mut self.queued_count);
        let outcome = if self.log.failed() {
            Err(None)
        } else if write.is_empty() {
            Ok(())
        } else {
            self.log.write(&write).map_err(Some)
        };
        match outcome {
            Ok(()) => {
                let last = write.last_log_id();
                match self.sync_latency.filter(|_| !write.is_empty()) {
                    Some(latency) => {
                        self.syncing = true;
                        ctx.run_later(latency, move |store, ctx| {
                            store.syncing = false;
                            store.report(last, messages, count);
                            if store.queued_count > 0 {
                                store.flush(ctx);
                            }
                        });
                    }
                    None => self.report(last, messages, count),
                }
            }
            Err(error) => {
                if let Some(error) = error {
                    self.failed_to.do_send(StorageFailed {
                        error: error.to_string(),
                    });
                }
                self.log.settled(count);
            }
        }
    }

    /// `count` writes are durable up to `last`: tell the node, then let their messages leave.
    fn report(&mut self, last: Option<raftor_core::LogId>, messages: Vec<Envelope>, count: usize) {
        if let Some(last) = last {
            self.flushed.do_send(Flushed { last });
        }
        for envelope in messages {
            self.transport.do_send(Outbound(envelope));
        }
        // Only now may the node write on its own thread: what it writes, and the messages that
        // follow, come after these.
        self.log.settled(count);
    }
}

/// Flush what is queued (sent by the log store to itself once its mailbox is empty).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct FlushQueued;

impl<S: LogStorage + Unpin> Handler<Write> for LogStoreActor<S> {
    type Result = ();

    /// Queue the write and its messages; every write that arrives before the queue is flushed
    /// joins the same synced batch (group commit).
    fn handle(&mut self, message: Write, ctx: &mut Context<Self>) {
        self.queued.merge(message.write);
        self.queued_messages.extend(message.then_send);
        self.queued_count += 1;
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // actix drains the mailbox before it runs what `notify` queued: every Write already
            // waiting is merged first.
            ctx.notify(FlushQueued);
        }
    }
}

impl<S: LogStorage + Unpin> Handler<FlushQueued> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, _: FlushQueued, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.flush(ctx);
    }
}

impl<S: LogStorage + Unpin> Handler<ReadEntries> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, request: ReadEntries, ctx: &mut Context<Self>) {
        // A read sees every write queued before it.
        self.flush(ctx);
        let mut compacted = false;
        let storage = self.log.storage();
        let prev_term = match request.prev_index {
            Some(index) => match storage.term(index) {
                Ok(term) => term,
                Err(StorageError::Compacted { .. }) => {
                    compacted = true;
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let entries = if request.from > request.to {
            Ok(Vec::new())
        } else {
            storage
                .entries(request.from, request.to, request.max_bytes)
                .map_err(|error| {
                    if matches!(error, StorageError::Compacted { .. }) {
                        compacted = true;
                    } else {
                        tracing::error!(node = %self.log.node_id, %error, "log read failed");
                    }
                    error.to_string()
                })
        };
        drop(storage);
        request.reply.do_send(EntriesRead {
            prev_index: request.prev_index,
            prev_term,
            entries,
            compacted,
        });
    }
}

impl<S: LogStorage + Unpin> Handler<crate::messages::Shutdown> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Shutdown, ctx: &mut Context<Self>) {
        use actix::ActorContext;
        self.flush(ctx);
        ctx.stop();
    }
}
