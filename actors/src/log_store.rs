//! The log store actor: owns the [`LogStorage`], makes writes durable, and only then lets the
//! messages that depend on them leave (Figure 2: persist before responding).
//!
//! Group commit: writes that arrive while it is busy (syncing) queue in its mailbox; it merges all
//! of them into one batch and syncs once, then reports the log durable up to the batch's last
//! entry and sends every queued message in order.
//!
//! In production it runs on an arbiter of its own, so a sync blocks no other actor; in tests it runs
//! on the test's thread with an in-memory store.

use crate::messages::{EntriesRead, Flushed, ReadEntries, StorageFailed, Write};
use crate::transport::Outbound;
use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use raftor_core::{Envelope, LogWrite, NodeId};
use raftor_storage::{LogStorage, StorageError};

/// Told how long each synced write took and how many entries it appended (for metrics).
pub type LogWriteObserver = std::sync::Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

pub struct LogStoreActor<S: LogStorage + Unpin> {
    node_id: NodeId,
    storage: S,
    transport: Recipient<Outbound>,
    flushed: Recipient<Flushed>,
    failed_to: Recipient<StorageFailed>,
    /// Set after a failed write: nothing more is written or sent, because what follows might
    /// depend on what was lost.
    failed: bool,
    observer: Option<LogWriteObserver>,
    /// The writes received since the last flush, merged into one ([`LogWrite::merge`]).
    queued: LogWrite,
    /// The messages of those writes, to send once they are durable.
    queued_messages: Vec<Envelope>,
    /// Whether a [`FlushQueued`] is on its way.
    flush_scheduled: bool,
}

impl<S: LogStorage + Unpin> LogStoreActor<S> {
    pub fn new(
        node_id: NodeId,
        storage: S,
        transport: Recipient<Outbound>,
        flushed: Recipient<Flushed>,
        failed_to: Recipient<StorageFailed>,
    ) -> Self {
        LogStoreActor {
            node_id,
            storage,
            transport,
            flushed,
            failed_to,
            failed: false,
            observer: None,
            queued: LogWrite::default(),
            queued_messages: Vec::new(),
            flush_scheduled: false,
        }
    }

    pub fn with_observer(mut self, observer: Option<LogWriteObserver>) -> Self {
        self.observer = observer;
        self
    }
}

impl<S: LogStorage + Unpin> Actor for LogStoreActor<S> {
    type Context = Context<Self>;
}

impl<S: LogStorage + Unpin> LogStoreActor<S> {
    /// Store everything queued as one synced write, then tell the node how far the log is
    /// durable, then let the queued messages leave, in the order they were queued.
    fn flush(&mut self) {
        let write = std::mem::take(&mut self.queued);
        let messages = std::mem::take(&mut self.queued_messages);
        if self.failed {
            return;
        }
        if !write.is_empty() {
            let started = std::time::Instant::now();
            let written = self.storage.write(&write);
            if let Some(observer) = &self.observer {
                observer(started.elapsed(), write.entries.len());
            }
            if let Err(error) = written {
                tracing::error!(node = %self.node_id, %error, "log write failed; the node stops taking part");
                self.failed = true;
                self.failed_to.do_send(StorageFailed {
                    error: error.to_string(),
                });
                return;
            }
            if let Some(last) = write.last_log_id() {
                self.flushed.do_send(Flushed { last });
            }
        }
        for envelope in messages {
            self.transport.do_send(Outbound(envelope));
        }
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
        if self.failed {
            return;
        }
        self.queued.merge(message.write);
        self.queued_messages.extend(message.then_send);
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

    fn handle(&mut self, _: FlushQueued, _ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl<S: LogStorage + Unpin> Handler<ReadEntries> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, request: ReadEntries, _ctx: &mut Context<Self>) {
        // A read sees every write queued before it.
        self.flush();
        let mut compacted = false;
        let prev_term = match request.prev_index {
            Some(index) => match self.storage.term(index) {
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
            self.storage
                .entries(request.from, request.to, request.max_bytes)
                .map_err(|error| {
                    if matches!(error, StorageError::Compacted { .. }) {
                        compacted = true;
                    } else {
                        tracing::error!(node = %self.node_id, %error, "log read failed");
                    }
                    error.to_string()
                })
        };
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
        self.flush();
        ctx.stop();
    }
}
