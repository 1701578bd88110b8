//! Majority arithmetic (§5.2 elections, §5.3–5.4 commitment).

use crate::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// How many of `voters` make a majority.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of `voters` has matched. `matched` holds each voter's match
/// index; a voter missing from it has matched nothing.
pub fn quorum_matched_index(
    voters: &BTreeSet<NodeId>,
    matched: &BTreeMap<NodeId, LogIndex>,
) -> LogIndex {
    let mut indexes: Vec<LogIndex> = voters
        .iter()
        .map(|id| matched.get(id).copied().unwrap_or(LogIndex::ZERO))
        .collect();
    if indexes.is_empty() {
        return LogIndex::ZERO;
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(voters.len()) - 1]
}

/// Where an election stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Counts the answers of `votes` (granted or not) among `voters`; answers from non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let needed = majority(voters.len());
    let granted = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&true))
        .count();
    let rejected = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    if granted >= needed {
        VoteResult::Won
    } else if rejected >= needed || voters.len() - rejected < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: u64) -> BTreeSet<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    #[test]
    fn majorities() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "1, 2, 3, 4, 5 voters"
        );
    }

    #[test]
    fn quorum_index_is_the_majority_th_largest() {
        let matched: BTreeMap<NodeId, LogIndex> = [(1, 10), (2, 7), (3, 3), (4, 12), (5, 1)]
            .into_iter()
            .map(|(n, i)| (NodeId(n), LogIndex(i)))
            .collect();
        assert_eq!(quorum_matched_index(&ids(5), &matched), LogIndex(7));
        assert_eq!(quorum_matched_index(&ids(3), &matched), LogIndex(7));
        assert_eq!(quorum_matched_index(&ids(1), &matched), LogIndex(10));
        assert_eq!(quorum_matched_index(&ids(7), &matched), LogIndex(3));
    }

    #[test]
    fn votes() {
        let voters = ids(5);
        let votes = |v: &[(u64, bool)]| v.iter().map(|(n, g)| (NodeId(*n), *g)).collect();
        assert_eq!(
            vote_result(&voters, &votes(&[(1, true)])),
            VoteResult::Pending
        );
        assert_eq!(
            vote_result(&voters, &votes(&[(1, true), (2, true), (3, true)])),
            VoteResult::Won
        );
        assert_eq!(
            vote_result(
                &voters,
                &votes(&[(1, true), (2, false), (3, false), (4, false)])
            ),
            VoteResult::Lost
        );
        // A vote from outside the configuration counts for nothing.
        assert_eq!(
            vote_result(&ids(3), &votes(&[(1, true), (9, true)])),
            VoteResult::Pending
        );
    }

    proptest! {
        /// Against a naive definition: the largest index that at least a majority has reached.
        #[test]
        fn quorum_index_matches_the_naive_definition(matches in proptest::collection::vec(0u64..20, 1..8)) {
            let voters: BTreeSet<NodeId> = (1..=matches.len() as u64).map(NodeId).collect();
            let matched: BTreeMap<NodeId, LogIndex> =
                matches.iter().enumerate().map(|(i, m)| (NodeId(i as u64 + 1), LogIndex(*m))).collect();
            let naive = (0..20u64)
                .filter(|candidate| matches.iter().filter(|m| **m >= *candidate).count() >= majority(matches.len()))
                .max()
                .unwrap_or(0);
            prop_assert_eq!(quorum_matched_index(&voters, &matched), LogIndex(naive));
        }
    }
}
