//! The log store actor: owns the [`LogStorage`], makes writes durable, and only then lets the
//! messages that depend on them leave (Figure 2: persist before responding).
//!
//! In production it runs on an arbiter of its own, so a sync blocks no other actor; in tests it runs
//! on the test's thread with an in-memory store.

use crate::messages::{EntriesRead, Flushed, ReadEntries, StorageFailed, Write};
use crate::transport::Outbound;
use actix::{Actor, Context, Handler, Recipient};
use raftor_core::NodeId;
use raftor_storage::LogStorage;

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

impl<S: LogStorage + Unpin> Handler<Write> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, message: Write, _ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        if !message.write.is_empty() {
            let started = std::time::Instant::now();
            let written = self.storage.write(&message.write);
            if let Some(observer) = &self.observer {
                observer(started.elapsed(), message.write.entries.len());
            }
            if let Err(error) = written {
                tracing::error!(node = %self.node_id, %error, "log write failed; the node stops taking part");
                self.failed = true;
                self.failed_to.do_send(StorageFailed {
                    error: error.to_string(),
                });
                return;
            }
            if let Some(last) = message.write.last_log_id() {
                self.flushed.do_send(Flushed { last });
            }
        }
        for envelope in message.then_send {
            self.transport.do_send(Outbound(envelope));
        }
    }
}

impl<S: LogStorage + Unpin> Handler<ReadEntries> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, request: ReadEntries, _ctx: &mut Context<Self>) {
        let prev_term = match request.prev_index {
            Some(index) => self.storage.term(index).ok().flatten(),
            None => None,
        };
        let entries = if request.from > request.to {
            Ok(Vec::new())
        } else {
            self.storage
                .entries(request.from, request.to, request.max_bytes)
                .map_err(|error| {
                    tracing::error!(node = %self.node_id, %error, "log read failed");
                    error.to_string()
                })
        };
        request.reply.do_send(EntriesRead {
            prev_index: request.prev_index,
            prev_term,
            entries,
        });
    }
}

impl<S: LogStorage + Unpin> Handler<crate::messages::Shutdown> for LogStoreActor<S> {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Shutdown, ctx: &mut Context<Self>) {
        use actix::ActorContext;
        ctx.stop();
    }
}
