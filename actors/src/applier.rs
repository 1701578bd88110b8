//! The applier actor: applies committed entries in index order to the [`StateMachine`] and answers
//! each waiting proposer with its result. Nothing uncommitted is ever applied: it reads only up to
//! the commit index the node gives it, and only after the log store made those entries durable.

use crate::entry_cache::EntryCache;
use crate::error::ProposeError;
use crate::messages::{
    Applied, AwaitApply, Commit, EntriesRead, QueryAt, QueryLocal, ReadEntries, Reply,
    RestoreSnapshot, Shutdown, SnapshotTaken, StorageFailed, TakeSnapshot,
};
use crate::snapshot::{write_snapshot, SnapshotOptions, Stagger};
use crate::state_machine::StateMachine;
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, Recipient};
use bytes::Bytes;
use raftor_core::{Entry, EntryPayload, LogId, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// How many entries are applied in one go (one read from the cache or the log store).
const APPLY_BATCH: u64 = 1024;
/// The most payload bytes one read for applying fetches (at least one entry).
const APPLY_MAX_BYTES: usize = 16 * 1024 * 1024;

pub struct Applier {
    node_id: NodeId,
    state_machine: Box<dyn StateMachine>,
    /// `lastApplied` (Figure 2): every entry up to here is applied. `applied <= commit`, except
    /// right after a restart from a snapshot (which only holds committed state).
    applied: LogIndex,
    /// The term of the entry at `applied` (a snapshot records it as its last included term).
    applied_term: Term,
    /// The configuration in force at `applied` (a snapshot records it, §7).
    membership: Membership,
    /// The highest commit index heard of.
    commit: LogIndex,
    /// Proposers waiting for their entry, by index, with the term their entry was appended in.
    waiters: BTreeMap<LogIndex, (Term, Reply<Bytes, ProposeError>)>,
    /// Reads waiting for the state machine to reach their read index (the key).
    reads: BTreeMap<LogIndex, Vec<QueryAt>>,
    /// Whether a read from the log store is under way (at most one).
    reading: bool,
    /// The newest entries, shared with the node, read before asking the log store.
    cache: EntryCache,
    log_store: Recipient<ReadEntries>,
    applied_to: Recipient<Applied>,
    snapshots: Option<Snapshotting>,
}

/// Where the applier stands with snapshots.
struct Snapshotting {
    options: SnapshotOptions,
    /// Write snapshots on a thread of their own (off for tests on the paused clock).
    background: bool,
    /// Entries and payload bytes applied since the last snapshot.
    entries_since: u64,
    bytes_since: u64,
    /// The size of the newest snapshot (taken, restored from, or received); 0 if none.
    last_size: u64,
    /// Whether the next snapshot waits longer by this node's rank among the members ([`Stagger`]):
    /// from the start and from a restored snapshot until this node takes one of its own.
    staggered: bool,
    /// Whether a snapshot is being written.
    writing: bool,
    /// Who asked for a snapshot and waits for the one being written (asked before it started).
    waiting: Vec<oneshot::Sender<Result<SnapshotMeta, String>>>,
    /// Who asked for a snapshot while one was being written, and waits for the next: the one
    /// being written holds only what was applied when it started, maybe not all that was
    /// applied when they asked (a backup taken after a write must hold the write).
    waiting_next: Vec<oneshot::Sender<Result<SnapshotMeta, String>>>,
    /// Told of every durable snapshot (the node, which compacts the log).
    taken_to: Recipient<SnapshotTaken>,
    /// Told when a snapshot cannot be restored (the node, which stops).
    failed_to: Recipient<StorageFailed>,
}

/// A snapshot was written (or failed to be), from the writer back to the applier.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct SnapshotWritten(Result<SnapshotMeta, String>);

impl Applier {
    /// An applier that has applied nothing, under the bootstrap configuration `membership`.
    pub fn new(
        node_id: NodeId,
        state_machine: Box<dyn StateMachine>,
        membership: Membership,
        cache: EntryCache,
        log_store: Recipient<ReadEntries>,
        applied_to: Recipient<Applied>,
    ) -> Self {
        Applier {
            node_id,
            state_machine,
            applied: LogIndex::ZERO,
            applied_term: Term::ZERO,
            membership,
            commit: LogIndex::ZERO,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            reading: false,
            cache,
            log_store,
            applied_to,
            snapshots: None,
        }
    }

    /// Take snapshots as `options` say; `restored` is the snapshot the state machine was restored
    /// from at start, if any (what it holds counts as applied). `background`: write snapshots on a
    /// thread of their own.
    pub fn with_snapshots(
        mut self,
        options: SnapshotOptions,
        restored: Option<SnapshotMeta>,
        background: bool,
        taken_to: Recipient<SnapshotTaken>,
        failed_to: Recipient<StorageFailed>,
    ) -> Self {
        let last_size = restored.as_ref().map_or(0, |meta| meta.size);
        if let Some(meta) = restored {
            self.applied = meta.last_included.index;
            self.applied_term = meta.last_included.term;
            self.commit = meta.last_included.index;
            self.membership = *meta.membership;
        }
        self.snapshots = Some(Snapshotting {
            options,
            background,
            entries_since: 0,
            bytes_since: 0,
            last_size,
            staggered: true,
            writing: false,
            waiting: Vec::new(),
            waiting_next: Vec::new(),
            taken_to,
            failed_to,
        });
        self
    }

    /// Start writing a snapshot of the state as it is now, if none is being written.
    fn start_snapshot(&mut self, ctx: &mut Context<Self>) {
        let Some(policy) = self.snapshots.as_mut() else {
            return;
        };
        // A node that joined knows no configuration before the first configuration entry it
        // applies: a snapshot taken then could not say which configuration it belongs to.
        if policy.writing
            || self.applied == LogIndex::ZERO
            || self.membership.conf.voters.is_empty()
        {
            return;
        }
        policy.writing = true;
        policy.entries_since = 0;
        policy.bytes_since = 0;
        let last = LogId::new(self.applied_term, self.applied);
        let writer = self.state_machine.snapshot();
        let membership = self.membership.clone();
        let store = policy.options.store.clone();
        tracing::info!(node = %self.node_id, last = %last, "taking a snapshot");
        if policy.background {
            let done = ctx.address().recipient::<SnapshotWritten>();
            let spawned = std::thread::Builder::new()
                .name("raftor-snapshot".into())
                .spawn(move || {
                    crate::snapshot::yield_to_serving();
                    let written = write_snapshot(&store, writer, last, membership);
                    done.do_send(SnapshotWritten(written))
                });
            if let Err(error) = spawned {
                ctx.notify(SnapshotWritten(Err(format!(
                    "cannot start a thread: {error}"
                ))));
            }
        } else {
            ctx.notify(SnapshotWritten(write_snapshot(
                &store, writer, last, membership,
            )));
        }
    }

    /// Start a snapshot if enough was applied since the last one.
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        let Some(policy) = self.snapshots.as_ref() else {
            return;
        };
        if policy.writing {
            return;
        }
        let stagger = if policy.staggered {
            Stagger::of(self.node_id, &self.membership.conf)
        } else {
            Stagger::NONE
        };
        if policy.options.policy.due(
            policy.entries_since,
            policy.bytes_since,
            policy.last_size,
            stagger,
        ) {
            self.start_snapshot(ctx);
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
        self.maybe_snapshot(ctx);
    }

    /// Apply `entries` (consecutive, from the next unapplied index) up to the commit index, answer
    /// their proposers and the reads now satisfied, and tell the node how far it got.
    ///
    /// The answers leave together once the batch is applied, not one by one between entries: a
    /// caller on another thread (a client's task) is woken by each answer that finds its thread
    /// asleep, and answers spread out over a batch of costly entries find it asleep again and
    /// again (in process, with the key-value state machine and 64 clients, 2.5 times the context
    /// switches and 9% fewer writes/s than answers sent together: BENCHMARKS.md, issue 22).
    fn apply_entries(&mut self, entries: Vec<Entry>) {
        let mut answers = Vec::new();
        for entry in entries {
            if entry.index != self.applied.next() || entry.index > self.commit {
                break;
            }
            let result = match &entry.payload {
                EntryPayload::Blank => Bytes::new(),
                // Configurations are the rules' business (in force since appended); the applier
                // only notes which one holds at the applied index, for snapshots.
                EntryPayload::Config(membership) => {
                    self.membership = Membership::clone(membership);
                    Bytes::new()
                }
                EntryPayload::Command(command) => self.state_machine.apply(entry.index, command),
            };
            self.applied = entry.index;
            self.applied_term = entry.term;
            if let Some(policy) = self.snapshots.as_mut() {
                policy.entries_since += 1;
                policy.bytes_since += entry.payload_len() as u64;
            }
            if let Some((term, reply)) = self.waiters.remove(&entry.index) {
                let answer = if term == entry.term {
                    Ok(result)
                } else {
                    Err(ProposeError::Dropped)
                };
                answers.push((reply, answer));
            }
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
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
        let mut read_answers = Vec::new();
        while let Some(entry) = self.reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for read in entry.remove() {
                read_answers.push((read.reply, self.state_machine.query(&read.query)));
            }
        }
        for (reply, answer) in read_answers {
            let _ = reply.send(Ok(answer));
        }
        // What was applied is no longer needed in the cache for applying.
        self.cache.applied_through(self.applied);
        tracing::trace!(node = %self.node_id, applied = %self.applied, "applied");
        self.applied_to.do_send(Applied {
            index: self.applied,
        });
    }
}

impl Actor for Applier {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        if self.applied > LogIndex::ZERO {
            // Restored from a snapshot: the node counts that as applied from the start.
            self.applied_to.do_send(Applied {
                index: self.applied,
            });
        }
    }
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

impl Handler<TakeSnapshot> for Applier {
    type Result = ();

    fn handle(&mut self, take: TakeSnapshot, ctx: &mut Context<Self>) {
        let Some(policy) = self.snapshots.as_mut() else {
            let _ = take
                .reply
                .send(Err("snapshots are not configured on this node".into()));
            return;
        };
        if self.applied == LogIndex::ZERO {
            let _ = take.reply.send(Err("nothing is applied yet".into()));
            return;
        }
        if self.membership.conf.voters.is_empty() {
            let _ = take.reply.send(Err(
                "this node joined and has not applied a configuration yet".into(),
            ));
            return;
        }
        if policy.writing {
            policy.waiting_next.push(take.reply);
            return;
        }
        policy.waiting.push(take.reply);
        self.start_snapshot(ctx);
    }
}

impl Handler<SnapshotWritten> for Applier {
    type Result = ();

    fn handle(&mut self, SnapshotWritten(result): SnapshotWritten, ctx: &mut Context<Self>) {
        let Some(policy) = self.snapshots.as_mut() else {
            return;
        };
        policy.writing = false;
        match &result {
            Ok(meta) => {
                tracing::info!(node = %self.node_id, last = %meta.last_included, bytes = meta.size, "snapshot taken");
                policy.last_size = meta.size;
                policy.staggered = false;
                policy
                    .taken_to
                    .do_send(SnapshotTaken { meta: meta.clone() });
            }
            Err(error) => tracing::error!(node = %self.node_id, %error, "snapshot failed"),
        }
        for waiting in policy.waiting.drain(..) {
            let _ = waiting.send(result.clone());
        }
        if !policy.waiting_next.is_empty() {
            // Asked for while it was written: a snapshot of the state now.
            policy.waiting = std::mem::take(&mut policy.waiting_next);
            self.start_snapshot(ctx);
            if let Some(policy) = self.snapshots.as_mut().filter(|policy| !policy.writing) {
                for waiting in policy.waiting.drain(..) {
                    let _ = waiting.send(Err("cannot take a snapshot now".into()));
                }
            }
            return;
        }
        // Entries applied while it was written may already call for the next one.
        self.maybe_snapshot(ctx);
    }
}

impl Handler<RestoreSnapshot> for Applier {
    type Result = ();

    fn handle(&mut self, restore: RestoreSnapshot, _ctx: &mut Context<Self>) {
        let Some(policy) = self.snapshots.as_mut() else {
            return;
        };
        let last = restore.meta.last_included;
        if last.index <= self.applied {
            return;
        }
        let restored = crate::snapshot::restore_from(
            &policy.options.store,
            &restore.meta,
            self.state_machine.as_mut(),
        );
        if let Err(error) = restored {
            tracing::error!(node = %self.node_id, %error, "cannot restore the state machine from a snapshot: stopping");
            policy.failed_to.do_send(StorageFailed { error });
            return;
        }
        tracing::info!(node = %self.node_id, last = %last, "state machine restored from a snapshot");
        self.applied = last.index;
        self.applied_term = last.term;
        self.membership = (*restore.meta.membership).clone();
        self.commit = self.commit.max(last.index);
        policy.entries_since = 0;
        policy.bytes_since = 0;
        policy.last_size = restore.meta.size;
        // In step with the node that took this snapshot now: the next one is staggered again.
        policy.staggered = true;
        // Proposals covered by the snapshot were decided by others: their outcome is unknown here.
        while let Some(entry) = self.waiters.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            let (_, reply) = entry.remove();
            let _ = reply.send(Err(ProposeError::Shutdown));
        }
        self.apply_entries(Vec::new());
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
            let _ = read.reply.send(Ok(self.state_machine.query(&read.query)));
        } else {
            self.reads.entry(read.index).or_default().push(read);
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
        // Dropping the waiters' and readers' senders answers them: the node stopped (for a
        // proposal, outcome unknown).
        self.waiters.clear();
        self.reads.clear();
        ctx.stop();
    }
}
