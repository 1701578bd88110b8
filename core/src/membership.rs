//! Cluster membership (§6 of the paper; Ongaro's thesis §4): who votes, who only receives the log,
//! and joint consensus while the voters change.
//!
//! A configuration travels through the log as an entry ([`crate::EntryPayload::Config`]) and takes
//! effect on a node as soon as that node appends it, committed or not (thesis §4.1); truncating the
//! entry away reverts to the configuration before it. A change of more than one voter goes through a
//! joint configuration, in which every decision (an election, a commit) needs a majority of the
//! outgoing voters and a majority of the incoming ones (§6).

use crate::quorum::{quorum_matched_index, vote_result, VoteResult};
use crate::types::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Who is in the cluster, and in which role (the seed's ConfState, as in etcd raft).
///
/// Invariants (checked by [`ConfState::validate`]): `learners` share no node with `voters` or
/// `voters_outgoing`; `learners_next` is a subset of `voters_outgoing` and shares no node with
/// `voters`; `learners_next` is empty and `auto_leave` false outside a joint configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// The voters of the (incoming) configuration: elections and commits need a majority of them.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count toward a commit.
    pub learners: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration while joint (`C_old` of §6); empty otherwise. While
    /// it is non-empty, decisions need a majority of it as well.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration that become learners once the cluster leaves the joint
    /// configuration (they still vote in `voters_outgoing` until then).
    pub learners_next: BTreeSet<NodeId>,
    /// Whether the leader leaves the joint configuration by itself as soon as it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// A simple (not joint) configuration of `voters` only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState {
            voters: voters.into_iter().collect(),
            ..ConfState::default()
        }
    }

    /// Whether this is a joint configuration (`C_old,new`).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in either half: such a node may campaign, and its vote counts.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    /// Every voter of either half.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.voters_outgoing).copied().collect()
    }

    /// Every member: all that receive the log from the leader.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut members = self.all_voters();
        members.extend(self.learners.iter().copied());
        members.extend(self.learners_next.iter().copied());
        members
    }

    /// The highest index a majority of each half has matched (§5.3, §6). `matched` holds each
    /// node's match index; a voter missing from it has matched nothing.
    pub fn committed_index(&self, matched: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
        let incoming = quorum_matched_index(&self.voters, matched);
        if self.is_joint() {
            incoming.min(quorum_matched_index(&self.voters_outgoing, matched))
        } else {
            incoming
        }
    }

    /// Where an election stands: won only when won in both halves, lost when lost in either.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let incoming = vote_result(&self.voters, votes);
        if !self.is_joint() {
            return incoming;
        }
        match (incoming, vote_result(&self.voters_outgoing, votes)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the voters for which `yes` holds make a majority of each half.
    pub fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let majority_of = |voters: &BTreeSet<NodeId>| {
            voters.is_empty()
                || voters.iter().filter(|v| yes(**v)).count() >= crate::majority(voters.len())
        };
        !self.voters.is_empty()
            && majority_of(&self.voters)
            && (!self.is_joint() || majority_of(&self.voters_outgoing))
    }

    /// The configuration after the joint one: the incoming voters, and the learners with those of
    /// `learners_next` added.
    pub fn leave_joint(&self) -> ConfState {
        let mut learners = self.learners.clone();
        learners.extend(self.learners_next.iter().copied());
        ConfState {
            voters: self.voters.clone(),
            learners,
            ..ConfState::default()
        }
    }

    /// Checks the invariants stated on the type.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if let Some(id) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Err(MembershipError::Inconsistent(format!(
                "node {id} is both a voter and a learner"
            )));
        }
        if let Some(id) = self
            .learners_next
            .iter()
            .find(|id| self.voters.contains(id) || !self.voters_outgoing.contains(id))
        {
            return Err(MembershipError::Inconsistent(format!(
                "node {id} in learners_next must be an outgoing voter only"
            )));
        }
        if !self.is_joint() && (self.auto_leave || !self.learners_next.is_empty()) {
            return Err(MembershipError::Inconsistent(
                "auto_leave and learners_next belong to joint configurations only".into(),
            ));
        }
        Ok(())
    }
}

/// A configuration as the log carries it: the [`ConfState`] and what the members need to know of
/// each other, which the rules carry but do not interpret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub conf: ConfState,
    /// How to reach each member (for raftor: its Raft address, `host:port`), so that a node added
    /// later learns how to reach the others. Holds only members.
    pub addresses: BTreeMap<NodeId, String>,
    /// Learners the leader promotes to voters by itself once they are caught up (within
    /// [`crate::RaftConfig::promote_lag`] entries of its log).
    pub promote_when_caught_up: BTreeSet<NodeId>,
}

/// One change to the membership; a list of them is applied at once ([`Membership::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Make `id` a voter: promote a learner, or add a new node (which then needs an address).
    AddVoter { id: NodeId, address: Option<String> },
    /// Add `id` as a learner (a new node needs an address), or demote a voter to a learner.
    /// With `promote_when_caught_up`, the leader promotes it once it has caught up.
    AddLearner {
        id: NodeId,
        address: Option<String>,
        promote_when_caught_up: bool,
    },
    /// Remove `id`, voter or learner, from the cluster.
    Remove { id: NodeId },
}

impl ConfChange {
    /// Add the new node `id`, reached at `address`, as a learner (promoted by the leader once
    /// caught up when `promote_when_caught_up`).
    pub fn add_learner(
        id: NodeId,
        address: impl Into<String>,
        promote_when_caught_up: bool,
    ) -> ConfChange {
        ConfChange::AddLearner {
            id,
            address: Some(address.into()),
            promote_when_caught_up,
        }
    }

    /// Make the learner `id` a voter.
    pub fn promote(id: NodeId) -> ConfChange {
        ConfChange::AddVoter { id, address: None }
    }

    /// Remove `id`, voter or learner.
    pub fn remove(id: NodeId) -> ConfChange {
        ConfChange::Remove { id }
    }

    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            ConfChange::AddVoter { id, .. }
            | ConfChange::AddLearner { id, .. }
            | ConfChange::Remove { id } => *id,
        }
    }
}

/// Why a membership change cannot be made. Nothing was appended.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("the change leaves no voter")]
    NoVoters,
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("node {0} is already a learner")]
    AlreadyLearner(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is new: its address is needed")]
    NeedsAddress(NodeId),
    #[error("node {0} appears twice in one change")]
    Repeated(NodeId),
    #[error("no changes given")]
    Empty,
    #[error("the cluster is in a joint configuration: it must leave it first")]
    Joint,
    #[error("inconsistent configuration: {0}")]
    Inconsistent(String),
}

impl Membership {
    /// The bootstrap membership: `voters`, with the addresses given.
    pub fn bootstrap(
        voters: &BTreeSet<NodeId>,
        addresses: &BTreeMap<NodeId, String>,
    ) -> Membership {
        let conf = ConfState::with_voters(voters.iter().copied());
        let addresses = addresses
            .iter()
            .filter(|(id, _)| conf.contains(**id))
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        Membership {
            conf,
            addresses,
            promote_when_caught_up: BTreeSet::new(),
        }
    }

    /// The membership after `changes`. A change of at most one voter is made directly; any larger
    /// change, or a voter added to a configuration of fewer than three, enters a joint
    /// configuration of the old and new voters that the leader leaves by
    /// itself once it is committed (thesis §4.3, §6 of the paper).
    pub fn apply(&self, changes: &[ConfChange]) -> Result<Membership, MembershipError> {
        if self.conf.is_joint() {
            return Err(MembershipError::Joint);
        }
        if changes.is_empty() {
            return Err(MembershipError::Empty);
        }
        let mut voters = self.conf.voters.clone();
        let mut learners = self.conf.learners.clone();
        let mut addresses = self.addresses.clone();
        let mut promote = self.promote_when_caught_up.clone();
        let mut touched = BTreeSet::new();
        for change in changes {
            let id = change.node();
            if !touched.insert(id) {
                return Err(MembershipError::Repeated(id));
            }
            let member = voters.contains(&id) || learners.contains(&id);
            match change {
                ConfChange::AddVoter { address, .. } => {
                    if voters.contains(&id) {
                        return Err(MembershipError::AlreadyVoter(id));
                    }
                    if !member && address.is_none() {
                        return Err(MembershipError::NeedsAddress(id));
                    }
                    learners.remove(&id);
                    voters.insert(id);
                    promote.remove(&id);
                    if let Some(address) = address {
                        addresses.insert(id, address.clone());
                    }
                }
                ConfChange::AddLearner {
                    address,
                    promote_when_caught_up,
                    ..
                } => {
                    if learners.contains(&id) {
                        return Err(MembershipError::AlreadyLearner(id));
                    }
                    if !member && address.is_none() {
                        return Err(MembershipError::NeedsAddress(id));
                    }
                    voters.remove(&id);
                    learners.insert(id);
                    if *promote_when_caught_up {
                        promote.insert(id);
                    }
                    if let Some(address) = address {
                        addresses.insert(id, address.clone());
                    }
                }
                ConfChange::Remove { .. } => {
                    if !member {
                        return Err(MembershipError::NotAMember(id));
                    }
                    voters.remove(&id);
                    learners.remove(&id);
                    promote.remove(&id);
                }
            }
        }
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        let voters_changed = voters.symmetric_difference(&self.conf.voters).count();
        // A voter added to a configuration of fewer than three goes through a joint one, though
        // only one voter changes: directly, the leader and the new voter alone would be a
        // quorum of the new configuration (2 of 3, 2 of 2) before the new voter holds the entry
        // naming it one, and if that leader then lost its data, no voter's answer to its rejoin
        // would show what the two of them committed (`rejoin.rs`). With three voters or more,
        // every quorum of the new configuration holds an old voter besides the leader.
        let adds_voter = voters.difference(&self.conf.voters).next().is_some();
        let conf = if voters_changed <= 1 && !(adds_voter && self.conf.voters.len() < 3) {
            ConfState {
                voters,
                learners,
                ..ConfState::default()
            }
        } else {
            let old = &self.conf.voters;
            ConfState {
                learners_next: learners.intersection(old).copied().collect(),
                learners: learners.difference(old).copied().collect(),
                voters,
                voters_outgoing: old.clone(),
                auto_leave: true,
            }
        };
        conf.validate()?;
        addresses.retain(|id, _| conf.contains(*id));
        promote.retain(|id| conf.learners.contains(id));
        Ok(Membership {
            conf,
            addresses,
            promote_when_caught_up: promote,
        })
    }

    /// The membership once the cluster leaves its joint configuration.
    pub fn leave_joint(&self) -> Membership {
        let conf = self.conf.leave_joint();
        let mut addresses = self.addresses.clone();
        addresses.retain(|id, _| conf.contains(*id));
        let mut promote = self.promote_when_caught_up.clone();
        promote.retain(|id| conf.learners.contains(id));
        Membership {
            conf,
            addresses,
            promote_when_caught_up: promote,
        }
    }
}

/// The configurations in a node's log: the one in force at the log's start (from the snapshot, or
/// the bootstrap one) followed by every configuration entry after it, in index order. The last is
/// the node's current configuration (it takes effect when appended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MembershipLog {
    /// `(index, membership)`, indexes strictly increasing; never empty. The first entry's index is
    /// at or before the log's start.
    history: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    pub(crate) fn new(base_index: LogIndex, base: Membership) -> MembershipLog {
        MembershipLog {
            history: vec![(base_index, base)],
        }
    }

    pub(crate) fn current(&self) -> &Membership {
        &self.last().1
    }

    /// The configuration in force before the current one, if the log still holds it.
    pub(crate) fn previous(&self) -> Option<&Membership> {
        self.history.iter().rev().nth(1).map(|(_, m)| m)
    }

    /// The configurations from the one in force at `index` on, with their indexes: at `index`
    /// and after (the base one when `index` is before it).
    pub(crate) fn from(&self, index: LogIndex) -> &[(LogIndex, Membership)] {
        let in_force = self
            .history
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        &self.history[in_force..]
    }

    /// Whether a configuration entry lies after `after`, at or before `upto`.
    pub(crate) fn any_between(&self, after: LogIndex, upto: LogIndex) -> bool {
        self.history
            .iter()
            .any(|(index, _)| after < *index && *index <= upto)
    }

    /// The index of the entry that holds the current configuration (or the base's index).
    pub(crate) fn current_index(&self) -> LogIndex {
        self.last().0
    }

    fn last(&self) -> &(LogIndex, Membership) {
        self.history.last().expect("never empty")
    }

    /// A configuration entry at `index` was appended.
    pub(crate) fn push(&mut self, index: LogIndex, membership: Membership) {
        if index > self.current_index() {
            self.history.push((index, membership));
        }
    }

    /// The log was truncated from `index` on: configurations from there are gone. Returns whether
    /// the current configuration changed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) -> bool {
        let before = self.history.len();
        while self.history.len() > 1 && self.last().0 >= index {
            self.history.pop();
        }
        self.history.len() != before
    }

    /// The log was compacted up to `upto`: keep only the configuration in force there and those after.
    pub(crate) fn compact(&mut self, upto: LogIndex) {
        let in_force = self
            .history
            .iter()
            .rposition(|(index, _)| *index <= upto)
            .unwrap_or(0);
        self.history.drain(..in_force);
    }

    /// A snapshot up to `last` with `membership` was installed; configurations after `last` stay
    /// only if the log kept its suffix.
    pub(crate) fn install_snapshot(
        &mut self,
        last: LogIndex,
        membership: Membership,
        keeps_suffix: bool,
    ) {
        let mut history = vec![(last, membership)];
        if keeps_suffix {
            history.extend(self.history.drain(..).filter(|(index, _)| *index > last));
        }
        self.history = history;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn three() -> Membership {
        let addresses = (1..=3).map(|i| (NodeId(i), format!("n{i}:7000"))).collect();
        Membership::bootstrap(&set(&[1, 2, 3]), &addresses)
    }

    fn add_learner(id: u64) -> ConfChange {
        ConfChange::add_learner(NodeId(id), format!("n{id}:7000"), false)
    }

    fn promote(id: u64) -> ConfChange {
        ConfChange::promote(NodeId(id))
    }

    fn remove(id: u64) -> ConfChange {
        ConfChange::remove(NodeId(id))
    }

    #[test]
    fn a_single_voter_change_is_direct() {
        let with_learner = three().apply(&[add_learner(4)]).unwrap();
        assert_eq!(with_learner.conf.voters, set(&[1, 2, 3]));
        assert_eq!(with_learner.conf.learners, set(&[4]));
        assert!(!with_learner.conf.is_joint());
        assert_eq!(with_learner.addresses[&NodeId(4)], "n4:7000");

        let promoted = with_learner.apply(&[promote(4)]).unwrap();
        assert_eq!(promoted.conf.voters, set(&[1, 2, 3, 4]));
        assert!(promoted.conf.learners.is_empty());
        assert!(!promoted.conf.is_joint());

        let removed = promoted.apply(&[remove(1)]).unwrap();
        assert_eq!(removed.conf.voters, set(&[2, 3, 4]));
        assert!(!removed.addresses.contains_key(&NodeId(1)));
    }

    #[test]
    fn a_voter_added_to_fewer_than_three_goes_through_a_joint_configuration() {
        let two = three().apply(&[remove(3)]).unwrap();
        assert!(!two.conf.is_joint());
        let added = two
            .apply(&[ConfChange::AddVoter {
                id: NodeId(4),
                address: Some("n4:7000".into()),
            }])
            .unwrap();
        assert!(added.conf.is_joint());
        assert_eq!(added.conf.voters, set(&[1, 2, 4]));
        assert_eq!(added.conf.voters_outgoing, set(&[1, 2]));
        assert_eq!(added.addresses[&NodeId(4)], "n4:7000");
        let promoted = two
            .apply(&[add_learner(4)])
            .unwrap()
            .apply(&[promote(4)])
            .unwrap();
        assert!(promoted.conf.is_joint());
        assert_eq!(promoted.conf.voters, set(&[1, 2, 4]));
        // From three on, one voter added is direct: every quorum of four holds two of the three.
        let direct = three()
            .apply(&[ConfChange::AddVoter {
                id: NodeId(4),
                address: Some("n4:7000".into()),
            }])
            .unwrap();
        assert!(!direct.conf.is_joint());
    }

    #[test]
    fn replacing_a_voter_goes_through_a_joint_configuration() {
        let with_learner = three().apply(&[add_learner(4)]).unwrap();
        let joint = with_learner.apply(&[promote(4), remove(1)]).unwrap();
        assert_eq!(joint.conf.voters, set(&[2, 3, 4]));
        assert_eq!(joint.conf.voters_outgoing, set(&[1, 2, 3]));
        assert!(joint.conf.auto_leave);
        // The outgoing voter is still reachable while it votes in the outgoing half.
        assert!(joint.addresses.contains_key(&NodeId(1)));
        assert_eq!(
            joint.apply(&[remove(2)]),
            Err(MembershipError::Joint),
            "one change at a time"
        );

        let left = joint.leave_joint();
        assert_eq!(left.conf, ConfState::with_voters(set(&[2, 3, 4])));
        assert!(!left.addresses.contains_key(&NodeId(1)));
    }

    #[test]
    fn demoting_voters_among_other_changes_keeps_them_voting_until_the_joint_step_ends() {
        let five = Membership::bootstrap(&set(&[1, 2, 3, 4, 5]), &BTreeMap::new());
        let joint = five
            .apply(&[
                ConfChange::AddLearner {
                    id: NodeId(4),
                    address: None,
                    promote_when_caught_up: false,
                },
                remove(5),
            ])
            .unwrap();
        assert_eq!(joint.conf.voters, set(&[1, 2, 3]));
        assert_eq!(joint.conf.voters_outgoing, set(&[1, 2, 3, 4, 5]));
        assert_eq!(joint.conf.learners_next, set(&[4]));
        assert!(joint.conf.learners.is_empty());
        joint.conf.validate().unwrap();
        let left = joint.leave_joint();
        assert_eq!(left.conf.learners, set(&[4]));
        assert_eq!(left.conf.voters, set(&[1, 2, 3]));
    }

    #[test]
    fn bad_changes_are_refused() {
        let m = three();
        assert_eq!(m.apply(&[]), Err(MembershipError::Empty));
        assert_eq!(
            m.apply(&[promote(9)]),
            Err(MembershipError::NeedsAddress(NodeId(9)))
        );
        assert_eq!(
            m.apply(&[promote(1)]),
            Err(MembershipError::AlreadyVoter(NodeId(1)))
        );
        assert_eq!(
            m.apply(&[remove(9)]),
            Err(MembershipError::NotAMember(NodeId(9)))
        );
        assert_eq!(
            m.apply(&[remove(1), remove(2), remove(3)]),
            Err(MembershipError::NoVoters)
        );
        assert_eq!(
            m.apply(&[add_learner(4), remove(4)]),
            Err(MembershipError::Repeated(NodeId(4)))
        );
    }

    #[test]
    fn joint_decisions_need_both_halves() {
        let conf = ConfState {
            voters: set(&[3, 4, 5]),
            voters_outgoing: set(&[1, 2, 3]),
            ..ConfState::default()
        };
        let matched: BTreeMap<NodeId, LogIndex> = [(1, 9), (2, 9), (3, 5), (4, 7), (5, 2)]
            .into_iter()
            .map(|(n, i)| (NodeId(n), LogIndex(i)))
            .collect();
        // Old half {1,2,3}: 9; new half {3,4,5}: 5.
        assert_eq!(conf.committed_index(&matched), LogIndex(5));
        let votes = |v: &[u64]| v.iter().map(|n| (NodeId(*n), true)).collect();
        assert_eq!(conf.vote_result(&votes(&[1, 2])), VoteResult::Pending);
        assert_eq!(conf.vote_result(&votes(&[1, 2, 4, 5])), VoteResult::Won);
        assert_eq!(conf.vote_result(&votes(&[3, 4])), VoteResult::Pending);
        assert_eq!(conf.vote_result(&votes(&[2, 3, 4])), VoteResult::Won);
        assert!(conf.has_quorum(|id| [2, 3, 4].contains(&id.0)));
        assert!(!conf.has_quorum(|id| [1, 2, 4].contains(&id.0)));
    }

    #[test]
    fn the_membership_log_reverts_with_truncation_and_forgets_with_compaction() {
        let base = three();
        let next = base.apply(&[add_learner(4)]).unwrap();
        let after = next.apply(&[promote(4)]).unwrap();
        let mut log = MembershipLog::new(LogIndex::ZERO, base.clone());
        log.push(LogIndex(5), next.clone());
        log.push(LogIndex(9), after.clone());
        assert_eq!(log.current(), &after);
        assert!(log.truncate_from(LogIndex(9)));
        assert_eq!(log.current(), &next);
        assert!(!log.truncate_from(LogIndex(6)));
        log.push(LogIndex(9), after.clone());
        log.compact(LogIndex(7));
        assert_eq!(log.history.len(), 2);
        assert_eq!(log.history[0], (LogIndex(5), next.clone()));
        // Truncation never removes the configuration in force at the log's start.
        log.truncate_from(LogIndex(1));
        assert_eq!(log.current(), &next);
        log.install_snapshot(LogIndex(20), base.clone(), false);
        assert_eq!(log.current(), &base);
        assert_eq!(log.current_index(), LogIndex(20));
    }
}
