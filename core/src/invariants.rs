//! The invariants of a node's own state, stated in code (as TigerBeetle states its own) rather
//! than only in the prose of the fields' doc comments. `Raft::take_ready` checks them in debug
//! builds; the simulator checks them after every event in every build. They are about what the
//! rules did with their own state, never about what a peer sent: hostile input is refused before
//! it can break one of them, so a violation is a bug in the rules.

use crate::raft::{Raft, Role};
use crate::rejoin::Standing;
use crate::types::NodeId;

/// An invariant of a node's own state that does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("n{node}: {what}")]
pub struct StateViolation {
    pub node: NodeId,
    pub what: String,
}

impl Raft {
    /// Every invariant of this node's own state, or the first one that does not hold.
    pub fn check_invariants(&self) -> Result<(), StateViolation> {
        self.broken_invariant().map_or(Ok(()), |what| {
            Err(StateViolation {
                node: self.id(),
                what,
            })
        })
    }

    fn broken_invariant(&self) -> Option<String> {
        if let Err(what) = self.log.check() {
            return Some(what);
        }
        let last = self.log.last_log_id();
        let me = self.id();
        let checks = [
            // Figure 2: commitIndex never points past the log; the compacted prefix is committed.
            (
                self.commit_index <= last.index,
                "the commit index is past the log",
            ),
            (
                self.log.start().index <= self.commit_index,
                "the compacted prefix is not committed",
            ),
            (
                self.durable_index <= last.index,
                "the durable index is past the log",
            ),
            // Leader stickiness ends: a refusal runs at most a minimum election timeout ahead.
            (
                self.refuse_candidates_until
                    <= self
                        .ticks
                        .saturating_add(u64::from(self.config.election_ticks_min)),
                "other candidates are refused for longer than a minimum election timeout",
            ),
            // Entries come from leaders of this node's term or an older one (§5.1).
            (
                last.term <= self.current_term,
                "the log holds a future term",
            ),
            (
                self.persisted.current_term <= self.current_term,
                "the term went back below the persisted one",
            ),
            (
                self.persisted.commit_index <= self.commit_index,
                "the commit index went back below the persisted one",
            ),
            // A configuration takes effect when appended and is undone when cut (§6).
            (
                self.membership_index() <= last.index,
                "the configuration in force is past the log",
            ),
            (
                self.config.election_ticks_min <= self.randomized_election_timeout
                    && self.randomized_election_timeout < self.config.election_ticks_max,
                "the election timeout is outside its range",
            ),
            (
                self.leader.is_some() == (self.role == Role::Leader),
                "leader state without leadership, or leadership without it",
            ),
            (
                self.votes.is_empty() || matches!(self.role, Role::Candidate | Role::PreCandidate),
                "votes counted outside a campaign",
            ),
            // §5.2: a candidate votes for itself in its term, so a leader has too.
            (
                !matches!(self.role, Role::Candidate | Role::Leader) || self.voted_for == Some(me),
                "a candidate or leader that did not vote for itself",
            ),
            (
                self.role != Role::Leader || self.leader_id == Some(me),
                "a leader that names another leader",
            ),
            // A node that does not know what it promised never votes nor campaigns (rejoin.rs).
            (
                self.standing != Standing::Rejoining
                    || (self.voted_for.is_none() && self.role == Role::Follower),
                "a rejoining node voted or campaigned",
            ),
            (
                match self.standing {
                    Standing::CatchingUp { floor, .. } => floor <= self.current_term,
                    Standing::Member | Standing::Rejoining => true,
                },
                "a catching-up node's term is below its floor",
            ),
        ];
        if let Some((_, what)) = checks.iter().find(|(holds, _)| !holds) {
            return Some(format!(
                "{what} (term {} vote {:?} role {:?} commit {} durable {} last {last} \
                 log start {} configuration at {} standing {:?})",
                self.current_term,
                self.voted_for,
                self.role,
                self.commit_index,
                self.durable_index,
                self.log.start(),
                self.membership_index(),
                self.standing,
            ));
        }
        let leader = self.leader.as_ref()?;
        if let Some((peer, matched)) = leader.matched.iter().find(|(_, m)| **m > last.index) {
            return Some(format!(
                "the leader's match index {matched} for n{peer} is past its log ({last})"
            ));
        }
        if leader
            .matched
            .get(&me)
            .is_some_and(|m| *m > self.durable_index)
        {
            return Some(format!(
                "the leader counts its own log as durable past {}",
                self.durable_index
            ));
        }
        if let Some((peer, round)) = leader
            .acked_round
            .iter()
            .find(|(_, round)| **round > leader.read_round)
        {
            return Some(format!(
                "n{peer} answered round {round}, after the latest issued ({})",
                leader.read_round
            ));
        }
        let issued = &leader.round_issued_at;
        let increasing = issued
            .iter()
            .zip(issued.iter().skip(1))
            .all(|(a, b)| a.0 < b.0 && a.1 <= b.1);
        if !increasing || issued.back().is_some_and(|(_, at)| *at > self.ticks) {
            return Some(format!(
                "confirmation rounds out of order or issued in the future: {issued:?} (tick {})",
                self.ticks
            ));
        }
        if let Some((peer, at)) = leader
            .lease_contact
            .iter()
            .find(|(_, at)| **at > self.ticks)
        {
            return Some(format!(
                "n{peer}'s lease contact is in the future: tick {at} (now {})",
                self.ticks
            ));
        }
        if leader.peers.contains_key(&me) {
            return Some("the leader replicates to itself".to_string());
        }
        for (peer, replication) in &leader.peers {
            if let Err(what) = replication.check(last.index, self.next_request_id) {
                return Some(format!("replication to n{peer}: {what}"));
            }
        }
        None
    }
}
