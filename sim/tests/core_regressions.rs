//! Bugs the simulator found in `raftor-core`, kept as regression tests: each replays the seed that
//! showed it.

use raftor_sim::{run, SimConfig};

/// `Raft::lease_read_index` (core/src/read_index.rs) serves lease reads when `check_quorum` is
/// off. The lease is only sound with check-quorum's leader stickiness (a voter that heard from the
/// leader within the minimum election timeout ignores RequestVote, raft.rs `step`); without it a
/// follower that just answered the leader votes at once for a candidate the leader cannot reach.
///
/// Seed 1391 (3 nodes, pre-vote and check-quorum off): n2 leads term 3, n3 is cut off from it
/// (one-way cut n2->n3); n1 answers n2's heartbeat at t=1841 and votes for n3 in term 4 at
/// t=1846; n3 commits 3@4 with n1 at t=1870; at t=1879 n2, still leader of term 3 with a lease
/// from n1's answer, serves a lease read at index 2: stale. Fixed: `lease_read_index` returns
/// `Err(LeaseError::Expired)` unless `config.check_quorum`.
#[test]
fn lease_reads_need_check_quorum() {
    let mut config = SimConfig::default_for(3);
    config.pre_vote = false;
    config.check_quorum = false;
    config.lease_reads = true;
    config.read_interval = 5;
    config.propose_interval = 1000;
    for seed in [1391, 895, 1812] {
        if let Err(failure) = run(seed, &config) {
            panic!("{}", failure.explain());
        }
    }
}
