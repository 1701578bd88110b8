//! The safety properties of Raft (Figure 3 of the paper), checked after every event of a run, plus
//! a few local sanity rules and the liveness verdict. Each failure is a distinct [`Violation`].

use crate::node::SimNode;
use raftor_core::{Entry, EntryPayload, LogIndex, NodeId, Role, Term};
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
    /// A read (ReadIndex or lease) reflects every entry committed before it was asked for.
    Linearizability,
    /// After the faults stop, a leader is elected and a proposal is applied everywhere, in time.
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
        "Linearizable reads: n{node} answered {kind} read {id} at index {index}, but index \
         {committed} was already committed when the read was asked"
    )]
    StaleRead {
        node: NodeId,
        kind: &'static str,
        id: u64,
        index: LogIndex,
        committed: LogIndex,
    },
    #[error("Liveness: {0}")]
    Liveness(String),
}

impl Violation {
    pub fn invariant(&self) -> Invariant {
        match self {
            Violation::ElectionSafety { .. } => Invariant::ElectionSafety,
            Violation::LogMatching { .. } => Invariant::LogMatching,
            Violation::LeaderCompleteness { .. } => Invariant::LeaderCompleteness,
            Violation::StateMachineSafety { .. } => Invariant::StateMachineSafety,
            Violation::CommitDecreased { .. } => Invariant::CommitMonotonic,
            Violation::AppliedBeyondCommit { .. } => Invariant::AppliedWithinCommit,
            Violation::ReadyContract { .. } => Invariant::ReadyContract,
            Violation::StaleRead { .. } => Invariant::Linearizability,
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
}

impl Checker {
    pub(crate) fn new(disabled: BTreeSet<Invariant>) -> Checker {
        Checker {
            disabled,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            dirty: BTreeSet::new(),
            leader_checked: BTreeMap::new(),
            commits: BTreeMap::new(),
        }
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
            let applied = LogIndex(node.applied.len() as u64);
            if applied > commit {
                self.report(Violation::AppliedBeyondCommit {
                    node: id,
                    applied,
                    commit,
                })?;
            }
            if raft.role() == Role::Leader {
                self.check_leader(node)?;
            }
        }
        self.check_dirty(nodes)?;
        self.dirty.clear();
        if self.enabled(Invariant::LogMatching) {
            check_log_matching(nodes)?;
        }
        Ok(())
    }

    /// `node` took office in `term` (seen in a Ready, even if it lost office in the same event).
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
        let first = *self.leaders.entry(term).or_insert(node.id);
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
    let held = node.log.get(known.entry.index.0 as usize - 1);
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
/// prefix hash makes that O(1); an exact comparison finds the first difference when they differ).
fn check_log_matching(nodes: &BTreeMap<NodeId, SimNode>) -> Result<(), Violation> {
    let running: Vec<&SimNode> = nodes.values().filter(|n| n.raft().is_some()).collect();
    for (i, a) in running.iter().enumerate() {
        for b in &running[i + 1..] {
            let mut at = a.log.len().min(b.log.len());
            while at > 0 && a.log[at - 1].term != b.log[at - 1].term {
                at -= 1;
            }
            if at == 0 || a.hashes[at - 1] == b.hashes[at - 1] {
                continue;
            }
            let Some(differs) = (0..at).find(|k| a.log[*k] != b.log[*k]) else {
                continue; // a hash collision: the prefixes are equal after all
            };
            return Err(Violation::LogMatching {
                a: a.id,
                b: b.id,
                index: LogIndex(at as u64),
                term: a.log[at - 1].term,
                differs_at: LogIndex(differs as u64 + 1),
                a_entry: ShowEntry(&a.log[differs]).to_string(),
                b_entry: ShowEntry(&b.log[differs]).to_string(),
            });
        }
    }
    Ok(())
}
