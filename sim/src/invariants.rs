//! The safety properties of Raft (Figure 3 of the paper), checked after every event of a run, plus
//! a few local sanity rules and the liveness verdict. Each failure is a distinct [`Violation`].

use crate::node::SimNode;
use crate::trace::ShowConf;
use raftor_core::{Entry, EntryPayload, LogId, LogIndex, Membership, NodeId, Role, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// The properties the checker knows, to name a violation's kind or disable a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// At most one leader per term, over the whole run (crashes included).
    ElectionSafety,
    /// Two in-memory logs holding an entry with the same index and term are identical up to it.
    LogMatching,
    /// Every committed entry is in the log of every leader of a later term.
    LeaderCompleteness,
    /// No two nodes (or incarnations) apply different entries at one index.
    StateMachineSafety,
    /// A running node's commit index never goes down.
    CommitMonotonic,
    /// Nothing is applied beyond the commit index.
    AppliedWithinCommit,
    /// The rules' outputs are well formed (writes extend the log, the sim's log equals the rules').
    ReadyContract,
    /// A read (ReadIndex or lease) reflects every entry committed before it was asked for, and
    /// no leader holds a lease behind an entry committed elsewhere.
    Linearizability,
    /// Membership changes are safe: consecutive committed configurations differ by at most one
    /// voter or go through a joint configuration (so no two of them have disjoint majorities); a
    /// leader is a voter of its configuration, or steps down once its removal is committed; a
    /// snapshot carries the configuration as of its last entry.
    MembershipSafety,
    /// Each node's own state keeps the rules' invariants (`Raft::check_invariants`).
    NodeState,
    /// After the faults stop, a leader among the current voters is elected, a proposal is applied
    /// on every member, and no configuration is left joint, in time.
    Liveness,
}

/// A broken property, with what the checker saw.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Violation {
    #[error("Election Safety: n{first} and n{second} were both leader of term {term}")]
    ElectionSafety {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    #[error(
        "Log Matching: n{a} and n{b} both hold an entry {index}@{term} but their logs differ at \
         index {differs_at} ({a_entry} on n{a}, {b_entry} on n{b})"
    )]
    LogMatching {
        a: NodeId,
        b: NodeId,
        index: LogIndex,
        term: Term,
        differs_at: LogIndex,
        a_entry: String,
        b_entry: String,
    },
    #[error(
        "Leader Completeness: n{leader}, leader of term {leader_term}, lacks the committed entry \
         {entry} (applied by n{applied_by} while in term {committed_by}); it holds {found}"
    )]
    LeaderCompleteness {
        leader: NodeId,
        leader_term: Term,
        entry: String,
        applied_by: NodeId,
        committed_by: Term,
        found: String,
    },
    #[error(
        "State Machine Safety: n{node} applied {entry} at index {index}, but n{other} applied \
         {other_entry} there"
    )]
    StateMachineSafety {
        node: NodeId,
        other: NodeId,
        index: LogIndex,
        entry: String,
        other_entry: String,
    },
    #[error(
        "State Machine Safety: n{node} restored snapshot {last} whose state differs from \
         applying the committed entries up to it ({detail})"
    )]
    RestoredState {
        node: NodeId,
        last: LogId,
        detail: String,
    },
    #[error(
        "Membership: the configuration committed at {index} ({next}) does not follow the one \
         committed before it at {previous_index} ({previous}): {why}"
    )]
    ConfigChain {
        index: LogIndex,
        next: String,
        previous_index: LogIndex,
        previous: String,
        why: String,
    },
    #[error(
        "Membership: n{node} leads term {term} though it is no voter of its configuration {conf}, \
         committed at {index} (commit {commit}), {waited} ticks on (settled: {settled})"
    )]
    LeaderNotVoter {
        node: NodeId,
        term: Term,
        conf: String,
        index: LogIndex,
        commit: LogIndex,
        waited: u64,
        settled: bool,
    },
    #[error(
        "Membership: n{node} restored snapshot {last} carrying configuration {carried}, but the \
         configuration as of {last} is {expected}"
    )]
    SnapshotMembership {
        node: NodeId,
        last: LogId,
        carried: String,
        expected: String,
    },
    #[error("commit index of n{node} went down from {from} to {to} (same incarnation)")]
    CommitDecreased {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
    },
    #[error("n{node} applied up to {applied}, beyond its commit index {commit}")]
    AppliedBeyondCommit {
        node: NodeId,
        applied: LogIndex,
        commit: LogIndex,
    },
    #[error("n{node}: the rules broke the Ready contract: {detail}")]
    ReadyContract { node: NodeId, detail: String },
    #[error(
        "Linearizable reads: n{node} answered ReadIndex read {id} at index {index}, but index \
         {committed} was already committed when the read was asked"
    )]
    StaleRead {
        node: NodeId,
        id: u64,
        index: LogIndex,
        committed: LogIndex,
    },
    #[error(
        "Linearizable reads: n{node} holds a lease to read at index {index}, but index \
         {committed} was already committed: a lease read there would miss it"
    )]
    StaleLease {
        node: NodeId,
        index: LogIndex,
        committed: LogIndex,
    },
    #[error("Node state: {0}")]
    NodeState(raftor_core::StateViolation),
    #[error("Liveness: {0}")]
    Liveness(String),
}

impl Violation {
    pub fn invariant(&self) -> Invariant {
        match self {
            Violation::ElectionSafety { .. } => Invariant::ElectionSafety,
            Violation::LogMatching { .. } => Invariant::LogMatching,
            Violation::LeaderCompleteness { .. } => Invariant::LeaderCompleteness,
            Violation::StateMachineSafety { .. } | Violation::RestoredState { .. } => {
                Invariant::StateMachineSafety
            }
            Violation::ConfigChain { .. }
            | Violation::LeaderNotVoter { .. }
            | Violation::SnapshotMembership { .. } => Invariant::MembershipSafety,
            Violation::CommitDecreased { .. } => Invariant::CommitMonotonic,
            Violation::AppliedBeyondCommit { .. } => Invariant::AppliedWithinCommit,
            Violation::ReadyContract { .. } => Invariant::ReadyContract,
            Violation::StaleRead { .. } | Violation::StaleLease { .. } => {
                Invariant::Linearizability
            }
            Violation::NodeState(_) => Invariant::NodeState,
            Violation::Liveness(_) => Invariant::Liveness,
        }
    }
}

/// An entry in one short line: `5@3 c17`, `6@4 blank`.
pub(crate) struct ShowEntry<'a>(pub(crate) &'a Entry);

impl fmt::Display for ShowEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.log_id())?;
        match &self.0.payload {
            EntryPayload::Blank => write!(f, " blank"),
            EntryPayload::Command(bytes) => write!(f, " {}", String::from_utf8_lossy(bytes)),
            EntryPayload::Config(m) => write!(f, " config {}", ShowConf(&m.conf)),
        }
    }
}

/// What the checker knows of a committed entry: its first applier, and the lowest term any applier
/// was in when applying it (the entry was committed in that term or earlier, so every leader of a
/// later term must hold it).
struct Committed {
    entry: Entry,
    node: NodeId,
    by_term: Term,
}

/// What the checker remembers across events.
pub(crate) struct Checker {
    disabled: BTreeSet<Invariant>,
    /// Every leader ever seen, by term (Election Safety).
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry any node applied, by index (State Machine Safety, Leader Completeness).
    committed: BTreeMap<LogIndex, Committed>,
    /// Committed entries new or changed since the last check against the leaders.
    dirty: BTreeSet<LogIndex>,
    /// Per node: (incarnation, term, log epoch) of the last full Leader Completeness check.
    leader_checked: BTreeMap<NodeId, (u64, Term, u64)>,
    /// Per node: (incarnation, highest commit index seen).
    commits: BTreeMap<NodeId, (u64, LogIndex)>,
    /// `chain[i - 1]`: the digest of applying the committed entries `1..=i` (what a state machine
    /// restored from a snapshot at `i` must hold).
    chain: Vec<u64>,
    /// Every committed configuration by index; the bootstrap one at index 0.
    configs: BTreeMap<LogIndex, Membership>,
    /// Per node: (incarnation, term, its clock in ticks) when first seen leading though no voter
    /// of its committed configuration.
    removed_leading: BTreeMap<NodeId, (u64, Term, u64)>,
}

/// Why `next` may not directly follow `previous` as the configuration in force, if it may not.
fn chain_error(previous: &Membership, next: &Membership) -> Option<String> {
    let (p, n) = (&previous.conf, &next.conf);
    if p.is_joint() {
        if n.is_joint() || n.voters != p.voters {
            return Some("a joint configuration must be left for its incoming voters".into());
        }
        return None;
    }
    if n.is_joint() {
        if n.voters_outgoing != p.voters {
            return Some(
                "the outgoing half of the joint configuration is not the previous voters".into(),
            );
        }
        return None;
    }
    let changed = n.voters.symmetric_difference(&p.voters).count();
    (changed > 1).then(|| {
        format!("{changed} voters changed at once, without a joint configuration (disjoint majorities possible)")
    })
}

impl Checker {
    pub(crate) fn new(disabled: BTreeSet<Invariant>, bootstrap: Membership) -> Checker {
        Checker {
            disabled,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            dirty: BTreeSet::new(),
            leader_checked: BTreeMap::new(),
            commits: BTreeMap::new(),
            chain: Vec::new(),
            configs: [(LogIndex::ZERO, bootstrap)].into_iter().collect(),
            removed_leading: BTreeMap::new(),
        }
    }

    /// The committed entry at `index`, if any node applied one there.
    pub(crate) fn committed_at(&self, index: LogIndex) -> Option<LogId> {
        self.committed.get(&index).map(|c| c.entry.log_id())
    }

    /// How many configuration entries were committed.
    pub(crate) fn committed_configs(&self) -> u64 {
        self.configs.len() as u64 - 1
    }

    /// `node` restored its state machine from a snapshot at `last` with digest `hash` and
    /// configuration `membership`: the state must be that of applying the committed prefix, and
    /// the configuration the one committed as of `last`.
    pub(crate) fn on_restore(
        &mut self,
        node: NodeId,
        last: LogId,
        hash: u64,
        membership: &Membership,
    ) -> Result<(), Violation> {
        let index = last.index.0 as usize;
        let detail = match self.chain.get(index.wrapping_sub(1)) {
            _ if index == 0 => None,
            Some(expected) if *expected == hash => None,
            Some(_) => Some("the digests differ".to_string()),
            None => Some(format!(
                "nothing is known committed beyond index {}",
                self.chain.len()
            )),
        };
        if let Some(detail) = detail {
            self.report(Violation::RestoredState { node, last, detail })?;
        }
        if self.committed_at(last.index).is_some_and(|id| id != last) {
            self.report(Violation::RestoredState {
                node,
                last,
                detail: "its last entry is not the committed one".into(),
            })?;
        }
        let expected = self
            .configs
            .range(..=last.index)
            .next_back()
            .map(|(_, m)| m)
            .expect("bootstrap");
        if expected.conf != membership.conf {
            self.report(Violation::SnapshotMembership {
                node,
                last,
                carried: ShowConf(&membership.conf).to_string(),
                expected: ShowConf(&expected.conf).to_string(),
            })?;
        }
        Ok(())
    }

    fn enabled(&self, invariant: Invariant) -> bool {
        !self.disabled.contains(&invariant)
    }

    /// Filters a violation through the disabled set.
    pub(crate) fn report(&self, violation: Violation) -> Result<(), Violation> {
        if self.enabled(violation.invariant()) {
            Err(violation)
        } else {
            Ok(())
        }
    }

    /// How many distinct entries were applied (committed) in the run.
    pub(crate) fn committed_entries(&self) -> u64 {
        self.committed.len() as u64
    }

    /// The highest index any node applied so far: what every read asked from now on must see.
    pub(crate) fn committed_index(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or_default()
    }

    /// How many terms had a leader.
    pub(crate) fn leader_terms(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// `node`, in `term`, applied `entry` (State Machine Safety).
    pub(crate) fn on_apply(
        &mut self,
        node: NodeId,
        term: Term,
        entry: &Entry,
    ) -> Result<(), Violation> {
        match self.committed.get_mut(&entry.index) {
            None => {
                self.committed.insert(
                    entry.index,
                    Committed {
                        entry: entry.clone(),
                        node,
                        by_term: term,
                    },
                );
                self.dirty.insert(entry.index);
                while let Some(next) = self.committed.get(&LogIndex(self.chain.len() as u64 + 1)) {
                    let previous = self.chain.last().copied().unwrap_or(0);
                    self.chain
                        .push(crate::log::hash_entry(previous, &next.entry));
                }
                if let EntryPayload::Config(next) = &entry.payload {
                    let (previous_index, previous) = self
                        .configs
                        .range(..entry.index)
                        .next_back()
                        .map(|(i, m)| (*i, m.clone()))
                        .expect("bootstrap");
                    self.configs.insert(entry.index, Membership::clone(next));
                    if let Some(why) = chain_error(&previous, next) {
                        self.report(Violation::ConfigChain {
                            index: entry.index,
                            next: ShowConf(&next.conf).to_string(),
                            previous_index,
                            previous: ShowConf(&previous.conf).to_string(),
                            why,
                        })?;
                    }
                }
                Ok(())
            }
            Some(known) if known.entry != *entry => {
                let violation = Violation::StateMachineSafety {
                    node,
                    other: known.node,
                    index: entry.index,
                    entry: ShowEntry(entry).to_string(),
                    other_entry: ShowEntry(&known.entry).to_string(),
                };
                self.report(violation)
            }
            Some(known) => {
                if term < known.by_term {
                    known.by_term = term;
                    self.dirty.insert(entry.index);
                }
                Ok(())
            }
        }
    }

    /// Every check that looks at the whole cluster, after an event.
    pub(crate) fn after_event(
        &mut self,
        nodes: &BTreeMap<NodeId, SimNode>,
    ) -> Result<(), Violation> {
        for node in nodes.values() {
            let Some(raft) = node.raft() else { continue };
            if let Err(violation) = raft.check_invariants() {
                self.report(Violation::NodeState(violation))?;
            }
            let id = node.id;
            // Commit index never decreases within an incarnation; nothing applied beyond it.
            let commit = raft.commit_index();
            let seen = self.commits.entry(id).or_insert((node.incarnation, commit));
            if seen.0 != node.incarnation {
                *seen = (node.incarnation, commit);
            }
            if commit < seen.1 {
                let violation = Violation::CommitDecreased {
                    node: id,
                    from: seen.1,
                    to: commit,
                };
                self.report(violation)?;
            }
            let seen = self.commits.get_mut(&id).expect("just inserted");
            seen.1 = seen.1.max(commit);
            // A state restored from a snapshot may be ahead of a commit index recovered from disk.
            let applied = node.applied_index;
            if applied > commit && applied > node.restored_at {
                self.report(Violation::AppliedBeyondCommit {
                    node: id,
                    applied,
                    commit,
                })?;
            }
            if raft.role() == Role::Leader {
                self.check_leader(node)?;
                if !raft.is_promotable() && raft.membership_index() <= commit {
                    // It hands over once the change settled, or an election timeout after.
                    let term = raft.current_term();
                    let first = self.removed_leading.entry(id).or_insert((
                        node.incarnation,
                        term,
                        raft.ticks(),
                    ));
                    if (first.0, first.1) != (node.incarnation, term) {
                        *first = (node.incarnation, term, raft.ticks());
                    }
                    let waited = raft.ticks() - first.2;
                    let settled = raft.settled_membership_index() >= raft.membership_index();
                    if settled || waited > u64::from(raft.config().election_ticks_min) {
                        self.report(Violation::LeaderNotVoter {
                            node: id,
                            term,
                            conf: ShowConf(&raft.membership().conf).to_string(),
                            index: raft.membership_index(),
                            commit,
                            waited,
                            settled,
                        })?;
                    }
                }
            }
        }
        self.check_dirty(nodes)?;
        self.dirty.clear();
        if self.enabled(Invariant::LogMatching) {
            check_log_matching(nodes)?;
        }
        Ok(())
    }

    /// `node` took office in `term` (seen in a Ready, even if it lost office in the same event)
    /// and its disk holds the term, or it sent something as leader of `term`. Election Safety
    /// counts only those leaders: a lone voter wins in the step that adopts the term, and a
    /// crash before that write is synced takes the win back, unseen; its term is then won
    /// again, by it or by a node it voted for. A leader that sent anything before its term was
    /// durable is counted, and one that wins the term again breaks Election Safety.
    pub(crate) fn on_became_leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        let first = *self.leaders.entry(term).or_insert(node);
        if first != node {
            return self.report(Violation::ElectionSafety {
                term,
                first,
                second: node,
            });
        }
        Ok(())
    }

    /// Election Safety for a leader, and the full Leader Completeness check when it is new (or its
    /// log was cut while leading, which the rules never do).
    fn check_leader(&mut self, node: &SimNode) -> Result<(), Violation> {
        let raft = node.raft().expect("running");
        let term = raft.current_term();
        let durable = node.disk.hard_state.current_term >= term;
        let first = if durable {
            *self.leaders.entry(term).or_insert(node.id)
        } else {
            self.leaders.get(&term).copied().unwrap_or(node.id)
        };
        if first != node.id {
            self.report(Violation::ElectionSafety {
                term,
                first,
                second: node.id,
            })?;
        }
        let stamp = (node.incarnation, term, node.log_epoch);
        if self.leader_checked.get(&node.id) == Some(&stamp) {
            return Ok(());
        }
        self.leader_checked.insert(node.id, stamp);
        if !self.enabled(Invariant::LeaderCompleteness) {
            return Ok(());
        }
        for known in self.committed.values() {
            check_holds(node, term, known)?;
        }
        Ok(())
    }

    /// Newly committed entries (or newly known to be committed earlier) against every leader.
    fn check_dirty(&self, nodes: &BTreeMap<NodeId, SimNode>) -> Result<(), Violation> {
        if self.dirty.is_empty() || !self.enabled(Invariant::LeaderCompleteness) {
            return Ok(());
        }
        for node in nodes.values() {
            let Some(raft) = node.raft() else { continue };
            if raft.role() != Role::Leader {
                continue;
            }
            for index in &self.dirty {
                check_holds(node, raft.current_term(), &self.committed[index])?;
            }
        }
        Ok(())
    }
}

/// A leader of `term` must hold `known` if it was committed in an earlier term.
fn check_holds(node: &SimNode, term: Term, known: &Committed) -> Result<(), Violation> {
    if known.by_term >= term {
        return Ok(());
    }
    let index = known.entry.index;
    if index <= node.log.start.index {
        // Compacted behind a snapshot: committed there (checked when the snapshot was restored
        // or taken), and the log's start must be the committed entry.
        if index < node.log.start.index || node.log.start == known.entry.log_id() {
            return Ok(());
        }
    }
    let held = node.log.get(index);
    if held == Some(&known.entry) {
        return Ok(());
    }
    Err(Violation::LeaderCompleteness {
        leader: node.id,
        leader_term: term,
        entry: ShowEntry(&known.entry).to_string(),
        applied_by: known.node,
        committed_by: known.by_term,
        found: held.map_or_else(|| "nothing there".to_string(), |e| ShowEntry(e).to_string()),
    })
}

/// Log Matching on every pair of running nodes. For a pair, it is enough to find the highest index
/// where both logs hold an entry of the same term and compare the prefixes up to it (a running
/// prefix hash, carried across compaction by the snapshots, makes that O(1); an exact comparison
/// of the entries both still hold finds the first difference when they differ).
fn check_log_matching(nodes: &BTreeMap<NodeId, SimNode>) -> Result<(), Violation> {
    let running: Vec<&SimNode> = nodes.values().filter(|n| n.raft().is_some()).collect();
    for (i, a) in running.iter().enumerate() {
        for b in &running[i + 1..] {
            let (la, lb) = (&a.log, &b.log);
            let floor = la.start.index.max(lb.start.index);
            let mut at = la.last_index().min(lb.last_index());
            while at > floor && la.term_at(at) != lb.term_at(at) {
                at = at.prev();
            }
            let (Some(ta), Some(tb)) = (la.term_at(at), lb.term_at(at)) else {
                continue;
            };
            if ta != tb || la.hash_at(at) == lb.hash_at(at) {
                continue;
            }
            let mut differs = None;
            let mut k = floor.next();
            while k <= at {
                if la.get(k) != lb.get(k) {
                    differs = Some(k);
                    break;
                }
                k = k.next();
            }
            let show = |log: &crate::log::SimLog, k: LogIndex| {
                log.get(k)
                    .map_or_else(|| "(compacted)".to_string(), |e| ShowEntry(e).to_string())
            };
            let differs_at = differs.unwrap_or(floor);
            return Err(Violation::LogMatching {
                a: a.id,
                b: b.id,
                index: at,
                term: ta,
                differs_at,
                a_entry: show(la, differs_at),
                b_entry: show(lb, differs_at),
            });
        }
    }
    Ok(())
}
