//! The applier actor: applies committed entries in index order to the [`StateMachine`] and answers
//! each waiting proposer with its result. Nothing uncommitted is ever applied: it reads only up to
//! the commit index the node gives it, and only after the log store made those entries durable.

use crate::entry_cache::EntryCache;
use crate::error::ProposeError;
use crate::messages::{
    Applied, AwaitApply, Commit, EntriesRead, QueryAt, QueryLocal, ReadEntries, Shutdown,
};
use crate::state_machine::StateMachine;
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, Recipient};
use bytes::Bytes;
use raftor_core::{Entry, EntryPayload, LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// How many entries are applied in one go (one read from the cache or the log store).
const APPLY_BATCH: u64 = 1024;
/// The most payload bytes one read for applying fetches (at least one entry).
const APPLY_MAX_BYTES: usize = 16 * 1024 * 1024;

pub struct Applier {
    node_id: NodeId,
    state_machine: Box<dyn StateMachine>,
    /// `lastApplied` (Figure 2): every entry up to here is applied. `applied <= commit`.
    applied: LogIndex,
    /// The highest commit index heard of.
    commit: LogIndex,
    /// Proposers waiting for their entry, by index, with the term their entry was appended in.
    waiters: BTreeMap<LogIndex, (Term, oneshot::Sender<Result<Bytes, ProposeError>>)>,
    /// Reads waiting for the state machine to reach their read index.
    reads: BTreeMap<LogIndex, Vec<(Bytes, oneshot::Sender<Bytes>)>>,
    /// Whether a read from the log store is under way (at most one).
    reading: bool,
    /// The newest entries, shared with the node, read before asking the log store.
    cache: EntryCache,
    log_store: Recipient<ReadEntries>,
    applied_to: Recipient<Applied>,
}

impl Applier {
    pub fn new(
        node_id: NodeId,
        state_machine: Box<dyn StateMachine>,
        cache: EntryCache,
        log_store: Recipient<ReadEntries>,
        applied_to: Recipient<Applied>,
    ) -> Self {
        Applier {
            node_id,
            state_machine,
            applied: LogIndex::ZERO,
            commit: LogIndex::ZERO,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            reading: false,
            cache,
            log_store,
            applied_to,
        }
    }

    /// Apply what is committed: from the entry cache while it holds the entries, otherwise read
    /// them from the log store (one read at a time).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.reading && self.applied < self.commit {
            let from = self.applied.next();
            let to = self
                .commit
                .min(LogIndex(from.0.saturating_add(APPLY_BATCH - 1)));
            if let Some(cached) = self.cache.read(from, to, APPLY_MAX_BYTES) {
                self.apply_entries(cached.entries);
                continue;
            }
            self.reading = true;
            self.log_store.do_send(ReadEntries {
                prev_index: None,
                from,
                to,
                max_bytes: APPLY_MAX_BYTES,
                reply: ctx.address().recipient(),
            });
        }
    }

    /// Apply `entries` (consecutive, from the next unapplied index) up to the commit index, answer
    /// their proposers and the reads now satisfied, and tell the node how far it got.
    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index != self.applied.next() || entry.index > self.commit {
                break;
            }
            let result = match &entry.payload {
                EntryPayload::Blank => Bytes::new(),
                EntryPayload::Command(command) => self.state_machine.apply(entry.index, command),
            };
            self.applied = entry.index;
            if let Some((term, reply)) = self.waiters.remove(&entry.index) {
                let answer = if term == entry.term {
                    Ok(result)
                } else {
                    Err(ProposeError::Dropped)
                };
                let _ = reply.send(answer);
            }
        }
        // Waiters at or below the applied index whose entry was not found are answered too.
        while let Some((index, _)) = self.waiters.first_key_value() {
            if *index > self.applied {
                break;
            }
            if let Some((_, (_, reply))) = self.waiters.pop_first() {
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
        while let Some(entry) = self.reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for (query, reply) in entry.remove() {
                let _ = reply.send(self.state_machine.query(&query));
            }
        }
        tracing::trace!(node = %self.node_id, applied = %self.applied, "applied");
        self.applied_to.do_send(Applied {
            index: self.applied,
        });
    }
}

impl Actor for Applier {
    type Context = Context<Self>;
}

impl Handler<Commit> for Applier {
    type Result = ();

    fn handle(&mut self, commit: Commit, ctx: &mut Context<Self>) {
        self.commit = self.commit.max(commit.index);
        self.pump(ctx);
    }
}

impl Handler<EntriesRead> for Applier {
    type Result = ();

    fn handle(&mut self, read: EntriesRead, ctx: &mut Context<Self>) {
        self.reading = false;
        match read.entries {
            Ok(entries) => self.apply_entries(entries),
            // Logged by the log store; retried on the next commit.
            Err(_) => return,
        }
        self.pump(ctx);
    }
}

impl Handler<AwaitApply> for Applier {
    type Result = ();

    fn handle(&mut self, AwaitApply(waiters): AwaitApply, _ctx: &mut Context<Self>) {
        for wait in waiters {
            if wait.index <= self.applied {
                // Already applied: it was an entry from before this proposal; cannot be ours.
                let _ = wait.reply.send(Err(ProposeError::Dropped));
                continue;
            }
            self.waiters.insert(wait.index, (wait.term, wait.reply));
        }
    }
}

impl Handler<QueryAt> for Applier {
    type Result = ();

    fn handle(&mut self, read: QueryAt, _ctx: &mut Context<Self>) {
        if read.index <= self.applied {
            let _ = read.reply.send(self.state_machine.query(&read.query));
        } else {
            self.reads
                .entry(read.index)
                .or_default()
                .push((read.query, read.reply));
        }
    }
}

impl Handler<QueryLocal> for Applier {
    type Result = MessageResult<QueryLocal>;

    fn handle(&mut self, query: QueryLocal, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state_machine.query(&query.query))
    }
}

impl Handler<Shutdown> for Applier {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Dropping the waiters' senders answers them: the node stopped, outcome unknown.
        self.waiters.clear();
        self.reads.clear();
        ctx.stop();
    }
}
