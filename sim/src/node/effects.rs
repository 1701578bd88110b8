//! What a node asks of the simulator after an event, and the settings of a run the nodes need.

use crate::config::Bug;
use crate::trace::TraceEvent;
use raftor_core::{EntriesOrder, Entry, Envelope, LogId, Membership, NodeId, ReadState, Term};

/// Per-run settings the nodes need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Knobs {
    pub(crate) bug: Option<Bug>,
    /// The rules' flow control (`RaftConfig::replication`): entries per message, messages in
    /// flight per peer.
    pub(crate) max_entries: u64,
    pub(crate) max_inflight: usize,
    /// The rules' Nagle threshold (`ReplicationConfig::coalesce_below_bytes`): 0 (every message
    /// pipelines), a few bytes (the driver's cuts decide), or no bound (only full messages do).
    pub(crate) coalesce_below_bytes: usize,
    /// Bytes per InstallSnapshot chunk.
    pub(crate) chunk_bytes: usize,
    /// The driver's bound on an AppendEntries' payload bytes (one entry always goes): orders
    /// are cut short by it, as the node actor's are.
    pub(crate) message_bytes: usize,
    /// The entry cache holds the newest this many entries: an order starting further back is
    /// read from the log later (a `Fetch` event), as the peer's sender reads the log store.
    pub(crate) cache_entries: u64,
}

/// What a node asks of the simulator after handling an event.
#[derive(Default)]
pub(crate) struct Effects {
    /// Messages to hand to the network now.
    pub(crate) send: Vec<Envelope>,
    pub(crate) trace: Vec<TraceEvent>,
    /// Entries applied, each with the node's term at that moment.
    pub(crate) applied: Vec<(NodeId, Term, Entry)>,
    /// State machines restored from a snapshot: (node, last included, state digest, membership).
    pub(crate) restored: Vec<(NodeId, LogId, u64, Membership)>,
    /// Terms in which the node took office.
    pub(crate) became_leader: Vec<(NodeId, Term)>,
    /// Terms in which the node, leading, sent something: it acted in office, whether or not its
    /// term was durable yet.
    pub(crate) led: Vec<(NodeId, Term)>,
    /// Breaches of the Ready contract by the rules.
    pub(crate) contract: Vec<(NodeId, String)>,
    /// Elections started (the node voted for itself in a new term).
    pub(crate) elections: u64,
    /// Unsynced writes lost in crashes.
    pub(crate) lost_writes: u64,
    /// Flush notices for the node (`on_log_flushed`), to deliver in order.
    pub(crate) flushed: Vec<(NodeId, LogId)>,
    /// Answers to `read_index` requests.
    pub(crate) reads: Vec<(NodeId, ReadState)>,
    /// Snapshots installed from a leader.
    pub(crate) snapshots_installed: u64,
    /// Entries orders that missed the entry cache: read from the log later, as the peer's
    /// sender does from the log store.
    pub(crate) fetches: Vec<(NodeId, EntriesOrder)>,
}

impl Effects {
    /// Appends `other` after what is already here.
    pub(crate) fn merge(&mut self, other: Effects) {
        let Effects {
            send,
            trace,
            applied,
            restored,
            became_leader,
            led,
            contract,
            elections,
            lost_writes,
            flushed,
            reads,
            snapshots_installed,
            fetches,
        } = other;
        self.send.extend(send);
        self.trace.extend(trace);
        self.applied.extend(applied);
        self.restored.extend(restored);
        self.became_leader.extend(became_leader);
        self.led.extend(led);
        self.contract.extend(contract);
        self.elections += elections;
        self.lost_writes += lost_writes;
        self.flushed.extend(flushed);
        self.reads.extend(reads);
        self.snapshots_installed += snapshots_installed;
        self.fetches.extend(fetches);
    }
}
