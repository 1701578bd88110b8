//! What happened, as readable lines (`t=1234 n2 recv AppendEntries{..} from n1`), and a 64-bit
//! FNV-1a digest of every event of the run, so two runs of one seed can be compared bit for bit.
//!
//! Events are kept structured and formatted only when a failure (or a full trace) needs them.

use raftor_core::{
    AppendOutcome, ConfState, Entry, EntryPayload, HardState, LogId, LogIndex, Membership, Message,
    NodeId, Refusal, SnapshotOutcome, Term,
};
use std::collections::VecDeque;
use std::fmt;

/// FNV-1a, 64 bits: tiny, deterministic on every platform and in every Rust version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    pub(crate) fn finish(self) -> u64 {
        self.0
    }
    pub(crate) fn entry(&mut self, entry: &Entry) {
        self.u64(entry.index.0);
        self.u64(entry.term.0);
        match &entry.payload {
            EntryPayload::Blank => self.u64(0),
            EntryPayload::Command(bytes) => {
                self.u64(1 + bytes.len() as u64);
                self.bytes(bytes);
            }
            EntryPayload::Config(membership) => {
                self.u64(u64::MAX);
                self.membership(membership);
            }
        }
    }
    fn ids<'a>(&mut self, ids: impl IntoIterator<Item = &'a NodeId>) {
        for id in ids {
            self.u64(id.0 + 1);
        }
        self.u64(0);
    }
    fn membership(&mut self, m: &Membership) {
        let c = &m.conf;
        self.ids(&c.voters);
        self.ids(&c.learners);
        self.ids(&c.voters_outgoing);
        self.ids(&c.learners_next);
        self.u64(u64::from(c.auto_leave));
        self.ids(&m.promote_when_caught_up);
        for (id, address) in &m.addresses {
            self.u64(id.0);
            self.bytes(address.as_bytes());
        }
    }
    fn text(&mut self, text: &str) {
        self.u64(text.len() as u64);
        self.bytes(text.as_bytes());
    }
    fn log_id(&mut self, id: LogId) {
        self.u64(id.index.0);
        self.u64(id.term.0);
    }
    fn message(&mut self, message: &Message) {
        match message {
            Message::RequestVote(m) => {
                self.u64(1);
                self.u64(m.term.0);
                self.log_id(m.last_log_id);
                self.u64(u64::from(m.pre_vote));
                self.u64(u64::from(m.leadership_transfer));
            }
            Message::RequestVoteResponse(m) => {
                self.u64(2);
                self.u64(m.term.0);
                self.u64(u64::from(m.vote_granted));
                self.u64(u64::from(m.pre_vote));
            }
            Message::AppendEntries(m) => {
                self.u64(3);
                self.u64(m.term.0);
                self.log_id(m.prev_log_id);
                self.u64(m.leader_commit.0);
                self.u64(m.request_id);
                self.u64(m.entries.len() as u64);
                for entry in &m.entries {
                    self.entry(entry);
                }
            }
            Message::AppendEntriesResponse(m) => {
                self.u64(4);
                self.u64(m.term.0);
                self.u64(m.request_id);
                match m.outcome {
                    AppendOutcome::Success { matched } => {
                        self.u64(1);
                        self.log_id(matched);
                    }
                    AppendOutcome::Reject {
                        rejected_prev_index,
                        hint,
                    } => {
                        self.u64(2);
                        self.u64(rejected_prev_index.0);
                        self.u64(hint.conflict_term.map_or(u64::MAX, |t| t.0));
                        self.u64(hint.first_index.0);
                    }
                    AppendOutcome::StaleTerm => self.u64(3),
                    AppendOutcome::Rejoining {
                        rejected_prev_index,
                        hint,
                    } => {
                        self.u64(4);
                        self.u64(rejected_prev_index.0);
                        self.u64(hint.conflict_term.map_or(u64::MAX, |t| t.0));
                        self.u64(hint.first_index.0);
                    }
                }
            }
            Message::InstallSnapshot(m) => {
                self.u64(5);
                self.u64(m.term.0);
                self.u64(m.request_id);
                self.log_id(m.meta.last_included);
                self.u64(m.meta.size);
                self.u64(u64::from(m.meta.checksum));
                self.membership(&m.meta.membership);
                self.u64(m.offset);
                self.u64(m.data.len() as u64);
                self.u64(u64::from(m.done));
            }
            Message::InstallSnapshotResponse(m) => {
                self.u64(6);
                self.u64(m.term.0);
                self.u64(m.request_id);
                match m.outcome {
                    SnapshotOutcome::NextOffset(offset) => {
                        self.u64(1);
                        self.u64(offset);
                    }
                    SnapshotOutcome::Installed { last_included } => {
                        self.u64(2);
                        self.log_id(last_included);
                    }
                    SnapshotOutcome::StaleTerm => self.u64(3),
                }
            }
            Message::TimeoutNow(m) => {
                self.u64(7);
                self.u64(m.term.0);
            }
            Message::RejoinQuery(m) => {
                self.u64(8);
                self.u64(m.term.0);
            }
            Message::RejoinAnswer(m) => {
                self.u64(9);
                self.u64(m.term.0);
                self.log_id(m.last_log_id);
                for (id, conf) in &m.configs {
                    self.log_id(*id);
                    for id in conf.all_voters() {
                        self.u64(id.0);
                    }
                }
            }
        }
    }
}

/// Why the network did not deliver a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Lost at random.
    Lost,
    /// The link is cut (partition or one-way cut).
    Cut,
    /// The receiver is down.
    Down,
}

/// One thing that happened in the simulation.
#[derive(Clone, Debug)]
pub(crate) enum TraceEvent {
    Tick {
        node: NodeId,
    },
    Recv {
        node: NodeId,
        from: NodeId,
        message: Message,
    },
    Dropped {
        from: NodeId,
        to: NodeId,
        message: Message,
        reason: DropReason,
    },
    Duplicated {
        from: NodeId,
        to: NodeId,
    },
    /// A Ready's write went into the node's unsynced queue (or, with no write, its messages left).
    Write {
        node: NodeId,
        hard_state: Option<HardState>,
        truncate_from: Option<LogIndex>,
        compact_to: Option<LogId>,
        entries: Option<(LogId, LogId)>,
        messages: usize,
        held: bool,
    },
    Sync {
        node: NodeId,
        writes: usize,
        last: Option<LogId>,
        released: usize,
        pending: usize,
    },
    FlushNotice {
        node: NodeId,
        last: LogId,
    },
    BecameLeader {
        node: NodeId,
        term: Term,
        last_index: LogIndex,
    },
    LostLeadership {
        node: NodeId,
        term: Term,
    },
    Applied {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
        commit: LogIndex,
    },
    Proposed {
        node: NodeId,
        command: u64,
        result: Result<LogId, Refusal>,
    },
    /// A membership change or leadership transfer asked of a node, and its answer.
    ChangeAsked {
        node: NodeId,
        what: String,
        result: String,
    },
    /// The configuration in force on a node changed (Ready.membership).
    Config {
        node: NodeId,
        conf: String,
    },
    SnapshotTaken {
        node: NodeId,
        last: LogId,
        compacted: Option<LogId>,
    },
    SnapshotSending {
        node: NodeId,
        to: NodeId,
        last: LogId,
    },
    SnapshotReceived {
        node: NodeId,
        from: NodeId,
        last: LogId,
    },
    /// A leader's read of entries for `to` (ordered up to `last`, a cache miss) completed:
    /// it sent them up to `sent`, or nothing.
    Fetched {
        node: NodeId,
        to: NodeId,
        last: LogIndex,
        sent: Option<LogIndex>,
    },
    /// The leader's rules found that `peer`'s log is shorter than it acknowledged.
    PeerLostData {
        node: NodeId,
        peer: NodeId,
    },
    Restored {
        node: NodeId,
        last: LogId,
    },
    /// A new node, empty and with no voters, was started to join as a learner.
    Joined {
        node: NodeId,
    },
    /// A node removed by a committed configuration was shut down for good.
    Retired {
        node: NodeId,
    },
    ReadAsked {
        node: NodeId,
        id: u64,
        taken: bool,
        must_see: LogIndex,
        lease: Option<LogIndex>,
    },
    ReadAnswered {
        node: NodeId,
        id: u64,
        index: Option<LogIndex>,
    },
    Crash {
        node: NodeId,
        lost_writes: usize,
        lost_messages: usize,
    },
    Restart {
        node: NodeId,
        hard_state: HardState,
        last: LogId,
        snapshot: Option<LogId>,
    },
    Partition {
        side_a: Vec<NodeId>,
        side_b: Vec<NodeId>,
    },
    Cut {
        from: NodeId,
        to: NodeId,
    },
    /// The link between `a` and `b` is cut both ways; each still reaches the others.
    LinkCut {
        a: NodeId,
        b: NodeId,
    },
    /// `node`'s disk was replaced by an empty one.
    DiskLost {
        node: NodeId,
    },
    /// `node`'s clock stands still until `until`.
    ClockStall {
        node: NodeId,
        until: u64,
    },
    Healed {
        links: usize,
    },
    FaultsEnd,
    LivenessLeader {
        node: NodeId,
        term: Term,
    },
    LivenessDone,
}

impl TraceEvent {
    fn hash_into(&self, h: &mut Fnv) {
        match self {
            TraceEvent::Tick { node } => {
                h.u64(1);
                h.u64(node.0);
            }
            TraceEvent::Recv {
                node,
                from,
                message,
            } => {
                h.u64(2);
                h.u64(node.0);
                h.u64(from.0);
                h.message(message);
            }
            TraceEvent::Dropped {
                from,
                to,
                message,
                reason,
            } => {
                h.u64(3);
                h.u64(from.0);
                h.u64(to.0);
                h.message(message);
                h.u64(*reason as u64);
            }
            TraceEvent::Duplicated { from, to } => {
                h.u64(4);
                h.u64(from.0);
                h.u64(to.0);
            }
            TraceEvent::Write {
                node,
                hard_state,
                truncate_from,
                compact_to,
                entries,
                messages,
                held,
            } => {
                h.u64(5);
                h.u64(node.0);
                if let Some(hs) = hard_state {
                    h.u64(hs.current_term.0);
                    h.u64(hs.voted_for.map_or(0, |v| v.0 + 1));
                    h.u64(hs.commit_index.0);
                }
                h.u64(truncate_from.map_or(u64::MAX, |t| t.0));
                h.log_id(compact_to.unwrap_or_default());
                if let Some((first, last)) = entries {
                    h.log_id(*first);
                    h.log_id(*last);
                }
                h.u64(*messages as u64);
                h.u64(u64::from(*held));
            }
            TraceEvent::Sync {
                node,
                writes,
                last,
                released,
                pending,
            } => {
                h.u64(6);
                h.u64(node.0);
                h.u64(*writes as u64);
                h.log_id(last.unwrap_or_default());
                h.u64(*released as u64);
                h.u64(*pending as u64);
            }
            TraceEvent::BecameLeader {
                node,
                term,
                last_index,
            } => {
                h.u64(7);
                h.u64(node.0);
                h.u64(term.0);
                h.u64(last_index.0);
            }
            TraceEvent::LostLeadership { node, term } => {
                h.u64(8);
                h.u64(node.0);
                h.u64(term.0);
            }
            TraceEvent::Applied {
                node,
                from,
                to,
                commit,
            } => {
                h.u64(9);
                h.u64(node.0);
                h.u64(from.0);
                h.u64(to.0);
                h.u64(commit.0);
            }
            TraceEvent::Proposed {
                node,
                command,
                result,
            } => {
                h.u64(10);
                h.u64(node.0);
                h.u64(*command);
                match result {
                    Ok(id) => h.log_id(*id),
                    Err(Refusal::NotLeader(not_leader)) => {
                        h.u64(not_leader.leader.map_or(0, |l| l.0 + 1))
                    }
                    Err(Refusal::Transferring { to }) => {
                        h.u64(u64::MAX);
                        h.u64(to.0);
                    }
                }
            }
            TraceEvent::ChangeAsked { node, what, result } => {
                h.u64(22);
                h.u64(node.0);
                h.text(what);
                h.text(result);
            }
            TraceEvent::Config { node, conf } => {
                h.u64(23);
                h.u64(node.0);
                h.text(conf);
            }
            TraceEvent::SnapshotTaken {
                node,
                last,
                compacted,
            } => {
                h.u64(24);
                h.u64(node.0);
                h.log_id(*last);
                h.log_id(compacted.unwrap_or_default());
            }
            TraceEvent::SnapshotSending { node, to, last } => {
                h.u64(25);
                h.u64(node.0);
                h.u64(to.0);
                h.log_id(*last);
            }
            TraceEvent::SnapshotReceived { node, from, last } => {
                h.u64(26);
                h.u64(node.0);
                h.u64(from.0);
                h.log_id(*last);
            }
            TraceEvent::Fetched {
                node,
                to,
                last,
                sent,
            } => {
                h.u64(31);
                h.u64(node.0);
                h.u64(to.0);
                h.u64(last.0);
                h.u64(sent.map_or(0, |s| s.0 + 1));
            }
            TraceEvent::PeerLostData { node, peer } => {
                h.u64(30);
                h.u64(node.0);
                h.u64(peer.0);
            }
            TraceEvent::Restored { node, last } => {
                h.u64(27);
                h.u64(node.0);
                h.log_id(*last);
            }
            TraceEvent::Joined { node } => {
                h.u64(28);
                h.u64(node.0);
            }
            TraceEvent::Retired { node } => {
                h.u64(29);
                h.u64(node.0);
            }
            TraceEvent::Crash {
                node,
                lost_writes,
                lost_messages,
            } => {
                h.u64(11);
                h.u64(node.0);
                h.u64(*lost_writes as u64);
                h.u64(*lost_messages as u64);
            }
            TraceEvent::Restart {
                node,
                hard_state,
                last,
                snapshot,
            } => {
                h.u64(12);
                h.u64(node.0);
                h.u64(hard_state.current_term.0);
                h.u64(hard_state.commit_index.0);
                h.log_id(*last);
                h.log_id(snapshot.unwrap_or_default());
            }
            TraceEvent::Partition { side_a, side_b } => {
                h.u64(13);
                for id in side_a {
                    h.u64(id.0);
                }
                h.u64(0);
                for id in side_b {
                    h.u64(id.0);
                }
            }
            TraceEvent::Cut { from, to } => {
                h.u64(14);
                h.u64(from.0);
                h.u64(to.0);
            }
            TraceEvent::LinkCut { a, b } => {
                h.u64(42);
                h.u64(a.0);
                h.u64(b.0);
            }
            TraceEvent::DiskLost { node } => {
                h.u64(41);
                h.u64(node.0);
            }
            TraceEvent::ClockStall { node, until } => {
                h.u64(40);
                h.u64(node.0);
                h.u64(*until);
            }
            TraceEvent::Healed { links } => {
                h.u64(15);
                h.u64(*links as u64);
            }
            TraceEvent::FaultsEnd => h.u64(16),
            TraceEvent::LivenessLeader { node, term } => {
                h.u64(17);
                h.u64(node.0);
                h.u64(term.0);
            }
            TraceEvent::LivenessDone => h.u64(18),
            TraceEvent::ReadAsked {
                node,
                id,
                taken,
                must_see,
                lease,
            } => {
                h.u64(20);
                h.u64(node.0);
                h.u64(*id);
                h.u64(u64::from(*taken));
                h.u64(must_see.0);
                h.u64(lease.map_or(u64::MAX, |i| i.0));
            }
            TraceEvent::ReadAnswered { node, id, index } => {
                h.u64(21);
                h.u64(node.0);
                h.u64(*id);
                h.u64(index.map_or(u64::MAX, |i| i.0));
            }
            TraceEvent::FlushNotice { node, last } => {
                h.u64(19);
                h.u64(node.0);
                h.log_id(*last);
            }
        }
    }
}

/// A message in one short line: `AppendEntries{term 3 prev 4@2 n=2 commit 4 id 7}`.
pub(crate) struct ShortMessage<'a>(pub &'a Message);

impl fmt::Display for ShortMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Message::RequestVote(m) => write!(
                f,
                "{}{{term {} last {}{}}}",
                if m.pre_vote { "PreVote" } else { "RequestVote" },
                m.term,
                m.last_log_id,
                if m.leadership_transfer {
                    " transfer"
                } else {
                    ""
                }
            ),
            Message::TimeoutNow(m) => write!(f, "TimeoutNow{{term {}}}", m.term),
            Message::RejoinQuery(m) => write!(f, "RejoinQuery{{term {}}}", m.term),
            Message::RejoinAnswer(m) => {
                write!(f, "RejoinAnswer{{term {} last {}", m.term, m.last_log_id)?;
                for (id, conf) in &m.configs {
                    write!(f, " {} at {}", ShowConf(conf), id)?;
                }
                write!(f, "}}")
            }
            Message::RequestVoteResponse(m) => write!(
                f,
                "{}{{term {} {}}}",
                if m.pre_vote {
                    "PreVoteResponse"
                } else {
                    "RequestVoteResponse"
                },
                m.term,
                if m.vote_granted { "granted" } else { "refused" }
            ),
            Message::AppendEntries(m) => {
                write!(
                    f,
                    "AppendEntries{{term {} prev {} n={}",
                    m.term,
                    m.prev_log_id,
                    m.entries.len()
                )?;
                if let (Some(first), Some(last)) = (m.entries.first(), m.entries.last()) {
                    if first.term == last.term {
                        write!(f, " [{}..{}]@{}", first.index, last.index, last.term)?;
                    } else {
                        write!(f, " [{}..{}]", first.log_id(), last.log_id())?;
                    }
                }
                write!(f, " commit {} id {}}}", m.leader_commit, m.request_id)
            }
            Message::AppendEntriesResponse(m) => {
                write!(f, "AppendEntriesResponse{{term {} ", m.term)?;
                match m.outcome {
                    AppendOutcome::Success { matched } => write!(f, "ok {matched}")?,
                    AppendOutcome::Reject {
                        rejected_prev_index,
                        hint,
                    } => {
                        write!(f, "reject prev {rejected_prev_index} hint ")?;
                        match hint.conflict_term {
                            Some(term) => write!(f, "term {term} from {}", hint.first_index)?,
                            None => write!(f, "short, next {}", hint.first_index)?,
                        }
                    }
                    AppendOutcome::StaleTerm => write!(f, "stale")?,
                    AppendOutcome::Rejoining {
                        rejected_prev_index,
                        hint,
                    } => write!(
                        f,
                        "rejoining prev {rejected_prev_index} next {}",
                        hint.first_index
                    )?,
                }
                write!(f, " id {}}}", m.request_id)
            }
            Message::InstallSnapshot(m) => write!(
                f,
                "InstallSnapshot{{term {} last {} {} at {} n={}{} id {}}}",
                m.term,
                m.meta.last_included,
                ShowConf(&m.meta.membership.conf),
                m.offset,
                m.data.len(),
                if m.done { " done" } else { "" },
                m.request_id
            ),
            Message::InstallSnapshotResponse(m) => {
                write!(f, "InstallSnapshotResponse{{term {} ", m.term)?;
                match m.outcome {
                    SnapshotOutcome::NextOffset(offset) => write!(f, "next {offset}")?,
                    SnapshotOutcome::Installed { last_included } => {
                        write!(f, "installed {last_included}")?
                    }
                    SnapshotOutcome::StaleTerm => write!(f, "stale")?,
                }
                write!(f, " id {}}}", m.request_id)
            }
        }
    }
}

/// A configuration in one short line: `v{1,2,3} l{4}`, `v{2,3,4} out{1,2,3} auto`.
pub(crate) struct ShowConf<'a>(pub(crate) &'a ConfState);

impl fmt::Display for ShowConf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |ids: &std::collections::BTreeSet<NodeId>| {
            ids.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let c = self.0;
        write!(f, "v{{{}}}", set(&c.voters))?;
        if !c.learners.is_empty() {
            write!(f, " l{{{}}}", set(&c.learners))?;
        }
        if c.is_joint() {
            write!(f, " out{{{}}}", set(&c.voters_outgoing))?;
        }
        if !c.learners_next.is_empty() {
            write!(f, " ln{{{}}}", set(&c.learners_next))?;
        }
        if c.auto_leave {
            write!(f, " auto")?;
        }
        Ok(())
    }
}

fn nodes(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| format!("n{id}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceEvent::Tick { node } => write!(f, "n{node} tick"),
            TraceEvent::Recv {
                node,
                from,
                message,
            } => write!(f, "n{node} recv {} from n{from}", ShortMessage(message)),
            TraceEvent::Dropped {
                from,
                to,
                message,
                reason,
            } => {
                let why = match reason {
                    DropReason::Lost => "lost",
                    DropReason::Cut => "link cut",
                    DropReason::Down => "receiver down",
                };
                write!(
                    f,
                    "net drop ({why}) {} n{from}->n{to}",
                    ShortMessage(message)
                )
            }
            TraceEvent::Duplicated { from, to } => write!(f, "net duplicate n{from}->n{to}"),
            TraceEvent::Write {
                node,
                hard_state,
                truncate_from,
                compact_to,
                entries,
                messages,
                held,
            } => {
                write!(f, "n{node} ready:")?;
                if let Some(hs) = hard_state {
                    write!(f, " hs{{term {} vote ", hs.current_term)?;
                    match hs.voted_for {
                        Some(v) => write!(f, "n{v}")?,
                        None => write!(f, "-")?,
                    }
                    write!(f, " commit {}}}", hs.commit_index)?;
                }
                if let Some(t) = truncate_from {
                    write!(f, " truncate from {t}")?;
                }
                if let Some(c) = compact_to {
                    write!(f, " compact to {c}")?;
                }
                if let Some((first, last)) = entries {
                    write!(f, " append {first}..{last}")?;
                }
                if *messages > 0 {
                    let when = if *held { "after sync" } else { "now" };
                    write!(f, " {messages} msg(s) {when}")?;
                }
                Ok(())
            }
            TraceEvent::Sync {
                node,
                writes,
                last,
                released,
                pending,
            } => {
                write!(f, "n{node} sync {writes} write(s)")?;
                if let Some(last) = last {
                    write!(f, " flushed {last}")?;
                }
                write!(f, ", released {released} msg(s), {pending} still unsynced")
            }
            TraceEvent::FlushNotice { node, last } => {
                write!(f, "n{node} hears its log is durable up to {last}")
            }
            TraceEvent::BecameLeader {
                node,
                term,
                last_index,
            } => write!(
                f,
                "n{node} BECAME LEADER of term {term} (last index {last_index})"
            ),
            TraceEvent::LostLeadership { node, term } => {
                write!(f, "n{node} lost leadership (term {term})")
            }
            TraceEvent::Applied {
                node,
                from,
                to,
                commit,
            } => write!(f, "n{node} applied {from}..={to} (commit {commit})"),
            TraceEvent::Proposed {
                node,
                command,
                result,
            } => match result {
                Ok(id) => write!(f, "n{node} propose c{command} -> {id}"),
                Err(Refusal::NotLeader(not_leader)) => match not_leader.leader {
                    Some(leader) => {
                        write!(f, "n{node} propose c{command} refused (leader n{leader})")
                    }
                    None => write!(f, "n{node} propose c{command} refused (no leader)"),
                },
                Err(Refusal::Transferring { to }) => write!(
                    f,
                    "n{node} propose c{command} refused (transferring to n{to})"
                ),
            },
            TraceEvent::ChangeAsked { node, what, result } => {
                write!(f, "n{node} CHANGE {what}: {result}")
            }
            TraceEvent::Config { node, conf } => write!(f, "n{node} configuration now {conf}"),
            TraceEvent::SnapshotTaken {
                node,
                last,
                compacted,
            } => {
                write!(f, "n{node} SNAPSHOT at {last}")?;
                match compacted {
                    Some(start) => write!(f, ", log compacted to {start}"),
                    None => write!(f, ", log not compacted"),
                }
            }
            TraceEvent::SnapshotSending { node, to, last } => {
                write!(f, "n{node} sends snapshot {last} to n{to}")
            }
            TraceEvent::SnapshotReceived { node, from, last } => {
                write!(f, "n{node} received snapshot {last} whole from n{from}")
            }
            TraceEvent::Fetched {
                node,
                to,
                last,
                sent,
            } => match sent {
                Some(sent) => write!(
                    f,
                    "n{node} read entries up to {sent} (of {last}) from its log, sends them to n{to}"
                ),
                None => write!(
                    f,
                    "n{node} finds its log no longer holds what it ordered for n{to} (up to {last})"
                ),
            },
            TraceEvent::PeerLostData { node, peer } => write!(
                f,
                "n{node} finds n{peer}'s log shorter than it acknowledged: n{peer} LOST ITS DATA"
            ),
            TraceEvent::Restored { node, last } => {
                write!(f, "n{node} state machine restored from snapshot {last}")
            }
            TraceEvent::Joined { node } => write!(f, "n{node} JOINS (new, empty, no voters)"),
            TraceEvent::Retired { node } => {
                write!(f, "n{node} RETIRED (removal committed, shut down)")
            }
            TraceEvent::ReadAsked {
                node,
                id,
                taken,
                must_see,
                lease,
            } => {
                let verdict = if *taken { "taken" } else { "refused" };
                write!(f, "n{node} read r{id} (must see {must_see}) {verdict}")?;
                match lease {
                    Some(index) => write!(f, "; lease read at {index}"),
                    None => Ok(()),
                }
            }
            TraceEvent::ReadAnswered { node, id, index } => match index {
                Some(index) => write!(f, "n{node} read r{id} may run at index {index}"),
                None => write!(f, "n{node} read r{id} failed: not leader"),
            },
            TraceEvent::Crash {
                node,
                lost_writes,
                lost_messages,
            } => write!(
                f,
                "n{node} CRASH (lost {lost_writes} unsynced write(s), {lost_messages} held msg(s))"
            ),
            TraceEvent::Restart {
                node,
                hard_state,
                last,
                snapshot,
            } => {
                write!(f, "n{node} RESTART term {} vote ", hard_state.current_term)?;
                match hard_state.voted_for {
                    Some(v) => write!(f, "n{v}")?,
                    None => write!(f, "-")?,
                }
                write!(f, " commit {} last {last}", hard_state.commit_index)?;
                match snapshot {
                    Some(s) => write!(f, " snapshot {s}"),
                    None => Ok(()),
                }
            }
            TraceEvent::Partition { side_a, side_b } => write!(
                f,
                "net PARTITION {{{}}} | {{{}}}",
                nodes(side_a),
                nodes(side_b)
            ),
            TraceEvent::Cut { from, to } => write!(f, "net CUT n{from}->n{to}"),
            TraceEvent::LinkCut { a, b } => write!(f, "net CUT n{a}<->n{b}"),
            TraceEvent::ClockStall { node, until } => {
                write!(f, "n{node} CLOCK STALL until t={until}")
            }
            TraceEvent::DiskLost { node } => write!(f, "n{node} DISK LOST: restarts empty"),
            TraceEvent::Healed { links } => write!(f, "net heal {links} link(s)"),
            TraceEvent::FaultsEnd => write!(
                f,
                "--- faults end: links healed, crashed nodes restarted, no more drops ---"
            ),
            TraceEvent::LivenessLeader { node, term } => {
                write!(f, "liveness: stable leader n{node} in term {term}")
            }
            TraceEvent::LivenessDone => write!(f, "liveness: proposal applied on every node"),
        }
    }
}

/// An event and when it happened.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) time: u64,
    pub(crate) event: TraceEvent,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={} {}", self.time, self.event)
    }
}

/// The last events (a ring), optionally every line, and the digest of all of them.
pub(crate) struct Trace {
    ring: VecDeque<Record>,
    capacity: usize,
    full: Option<Vec<String>>,
    digest: Fnv,
}

impl Trace {
    pub(crate) fn new(capacity: usize, full: bool) -> Trace {
        Trace {
            ring: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            full: full.then(Vec::new),
            digest: Fnv::new(),
        }
    }

    pub(crate) fn push(&mut self, time: u64, event: TraceEvent) {
        self.digest.u64(time);
        event.hash_into(&mut self.digest);
        let record = Record { time, event };
        if let Some(full) = self.full.as_mut() {
            full.push(record.to_string());
        }
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(record);
    }

    /// Forget the line of the last event (a tick that led to nothing) but keep it in the digest.
    pub(crate) fn retract_last_line(&mut self) {
        if let Some(full) = self.full.as_mut() {
            full.pop();
        }
        self.ring.pop_back();
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest.finish()
    }

    pub(crate) fn last_lines(&self) -> Vec<String> {
        self.ring.iter().map(Record::to_string).collect()
    }

    pub(crate) fn take_full(&mut self) -> Vec<String> {
        self.full.take().unwrap_or_default()
    }
}
