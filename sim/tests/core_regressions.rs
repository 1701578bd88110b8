//! Seeds the simulator once failed on, kept as regression tests: each replays its seed with the
//! configuration it failed with and must now pass.
//!
//! When `raftor sim` finds a failing seed it prints a [`Regression`] entry for this table; once
//! the bug is fixed, add it here (with what the bug was) so the seed stays green. The seeds
//! found before 2026-12-07 replay with [`SimConfig::classic`], the faults and the one
//! environment runs had then.

use raftor_sim::{run, SimConfig, SimOptions};

/// A seed that once failed, with the configuration it failed with.
struct Regression {
    seed: u64,
    config: fn() -> SimConfig,
    /// What was wrong, and where it was fixed.
    why: &'static str,
}

/// Lease reads with check-quorum off (the configuration `tests/seeds.rs` cannot express on the
/// command line: lease reads forced on, frequent reads, few proposals).
fn lease_reads_without_check_quorum() -> SimConfig {
    let mut config = SimOptions {
        nodes: 3,
        events: 2000,
        no_pre_vote: true,
        bug: None,
        disk_loss: false,
        disk_loss_with_changes: false,
    }
    .config()
    .classic();
    config.lease_reads = true;
    config.read_interval = 5;
    config.propose_interval = 1000;
    config
}

/// `Raft::lease_read_index` (core/src/read_index.rs) served lease reads when `check_quorum` was
/// off. The lease is only sound with check-quorum's leader stickiness (a voter that heard from the
/// leader within the minimum election timeout ignores RequestVote, raft.rs `step`); without it a
/// follower that just answered the leader votes at once for a candidate the leader cannot reach.
///
/// Seed 1391 (3 nodes, pre-vote and check-quorum off): n2 leads term 3, n3 is cut off from it
/// (one-way cut n2->n3); n1 answers n2's heartbeat at t=1841 and votes for n3 in term 4 at
/// t=1846; n3 commits 3@4 with n1 at t=1870; at t=1879 n2, still leader of term 3 with a lease
/// from n1's answer, serves a lease read at index 2: stale. Fixed: `lease_read_index` returns
/// `Err(LeaseError::Expired)` unless `config.check_quorum`.
const LEASE_WITHOUT_CHECK_QUORUM: &str =
    "a stale lease read with check-quorum off; fixed in Raft::lease_read_index";

fn default_3() -> SimConfig {
    SimConfig::default_for(3).classic()
}

/// Seed 21000687693 (3 nodes, pre-vote and check-quorum off; found when Nagle's algorithm
/// changed the leader's sends): n3, rejoining after its store started empty, heard n1's answer at
/// t=1177 and became `CatchingUp`; its answer to n2's next message (t=1178), vouching for
/// entries it had synced, left at once as a prompt answer, ahead of the write recording that
/// standing. n2 counted it and committed v{2,3} (the removal of n1), n1 retired, and n3 crashed
/// before its standing was durable: back `Rejoining`, it waited for n1's answer for ever, and n2
/// never got its vote. Fixed: an answer vouching for a node leaves after the write recording
/// its standing, until an entry appended after that write is durable
/// (`Raft::vouched_in_flight_after`).
const VOUCHED_AHEAD_OF_ITS_STANDING: &str =
    "a rejoining node vouched before its standing was durable, then forgot it in a crash";

/// A leader of term 1 (n1) in the joint configuration {3,5}+{1,3} committed it and appended the
/// configuration that leaves it, v{3,5} (13@1), which removes n1; it lost check-quorum before
/// committing it. From then on n1, no voter of its latest configuration, never campaigned
/// (`Raft::tick`: only `is_promotable` nodes do), yet the joint configuration in force on n3 and
/// n5 needed n1's vote, which n1 refused them because its log (14@1) was longer: no leader for the
/// rest of the run. Fixed: a node whose removal is uncommitted and that votes in the
/// configuration before it still campaigns (`Raft::removal_pending`).
const REMOVED_LEADER_NEVER_CAMPAIGNS: &str =
    "a leader that stepped down before committing its own removal never campaigned again";

fn no_pre_vote_3() -> SimConfig {
    SimOptions {
        nodes: 3,
        events: 2000,
        no_pre_vote: true,
        bug: None,
        disk_loss: false,
        disk_loss_with_changes: false,
    }
    .config()
    .classic()
}

/// Seed 199 (3 nodes, pre-vote off): voters {3,4}; n3's log (11@3) is behind, n4's and the
/// removed-but-uncommitted n1's (13@3) are not. n3 and n1 kept campaigning, each RequestVote of a
/// newer term reset n4's election timer (as did granting n1), n3 always voted for itself first in
/// each term so n1 never won, and n4, the one voter that could win, never timed out: no leader.
/// Fixed in `Raft::step`: adopting a newer term alone no longer resets the election timer (Figure
/// 2: only hearing from the leader or granting a vote does).
const NEWER_TERM_RESET_THE_TIMER: &str =
    "a hopeless candidate's newer terms kept the electable voter from timing out";

/// Seeds 8004955, 8012992, 8005136, 8008631, 8014211, 8015028 and 8018392 (3 nodes, defaults):
/// no leader after the faults. Read from seed 8012992: n1, pre-candidate in the joint
/// configuration v{1,4} out{1,3}, needed n4's vote; n4, added as a node with an empty log and no
/// configuration yet, never campaigned, and `Raft::tick` reset its election timer when it fired
/// while it kept `leader_id`, so `in_leader_lease` held for most of every period and n4 refused
/// every pre-vote, forever. Seeds 8005136 and 8014211 looked different (n4 held an older
/// configuration, v{1,2,3}, and was a voter of the newer joint one) but had the same cause: in
/// its own older configuration n4 was no voter, so it never campaigned either. Every one of the
/// seven had it. Fixed in `Raft::tick`: a node that does not campaign lets its timer run on, so
/// after an election timeout without a leader it no longer claims one (the unit test
/// `a_node_that_never_campaigns_stops_claiming_a_leader_after_an_election_timeout`).
const NON_CAMPAIGNER_KEPT_ITS_LEASE: &str =
    "a node that never campaigns refused every pre-vote: its election timer kept its lease up";

/// Seed 8114818 (5 nodes, defaults): the leader sent TimeoutNow; its target campaigned with
/// `leadership_transfer` set, voters set leader stickiness aside and elected it at once, and it
/// committed an entry; the old leader, whose lease was computed for ordinary elections, then
/// served a lease read from its old state. Fixed in the rules: after TimeoutNow a leader serves no
/// lease read for the rest of its term (`LeaderState::timeout_now_sent`; the unit test
/// `no_lease_after_timeout_now_for_the_rest_of_the_term`).
const LEASE_AFTER_TIMEOUT_NOW: &str =
    "a stale lease read on a leader that had sent TimeoutNow; fixed in Raft::lease_read_index";

/// Seeds 2200031986, 2200039443, 2200063702, 2200074092, 2200080858, 2200181747, 2200208747
/// and 2200247333 (3 nodes, pre-vote off): no leader after the faults. Read from 2200031986: the
/// configuration v{2,3}@4, which removes n1, was not known committed; n1's log (6@3) was the
/// longest, and n2, catching up after a new store (its floor log was n1's), voted for no one
/// with less. So n1 alone could win (it campaigns while its removal is pending), but n3, whose
/// log (5@3) could never win, asked only n2, so n1 never learned n3's terms: n3 timed out first
/// and used each term, n1 campaigned in that same term a little later and was refused by n3, one
/// term behind, round after round. Fixed in `Raft::voting_peers`: while its configuration is
/// not known committed, a candidate asks the voters of the one before too, so n1 learns each term
/// and campaigns in the next one (the unit test
/// `a_candidate_tells_the_voter_a_pending_change_removes_its_term`). The others show the same
/// race; in 2200074092 the removed voter (n3, its own removal pending since 3@1) won only in
/// term 39, committed its removal and stepped down 25 ms before the liveness deadline.
const REMOVED_VOTER_ONE_TERM_BEHIND: &str =
    "the one electable voter, removed by a pending change, always campaigned one term behind";

/// Seed 730012246 (5 nodes, pre-vote off), found by the rules' own invariants
/// (`Raft::check_invariants`): n5 received a snapshot ending at 22@8 from a leader of term 8 and
/// crashed; the snapshot survived (kept as the rules installed it) but the write adopting term 8
/// did not, and n5 restarted at term 6 with a log starting at 22@8. Fixed in `Raft::new`: a node
/// reaches the last term of its log (with no vote: a vote is durable before it is sent); the
/// unit test `a_restart_reaches_the_term_of_its_log`.
const TERM_BEHIND_ITS_SNAPSHOT: &str =
    "a node restarted at a term below its snapshot's: the write adopting that term was lost";

/// Seeds 4200023438 and 4200170803 (3 nodes, pre-vote off): no leader after the faults. Read
/// from 4200023438: n1, a founding voter whose store was new, took its floor log (11@3) from
/// n3, the leader of term 3, whose tail was uncommitted; it then caught up from n3 to 10@3, and n3
/// committed its own removal (v{1,2}@7) with n1's and n2's acknowledgements and was shut down.
/// Neither n1 nor n2 knew the removal committed, so n1's fresh rounds of questions waited for n3
/// forever and its floor log stayed 11@3, which no remaining voter could reach (n2 held 7@3):
/// n1 voted for nobody and n2 could not win without it. Fixed in `crate::rejoin`: the leader of
/// the floor's term, asked, stops counting the asker's old acknowledgements and reports its
/// commit index; a node whose durable log ends in that leader's entry at or past that index holds
/// everything its old self helped commit, so past the floor it votes by the usual rule (the unit
/// test `a_rejoined_voter_votes_once_it_holds_the_floor_leaders_commits_though_the_floor_log_left`).
const FLOOR_LOG_FROM_A_REMOVED_LEADER: &str =
    "a catching-up voter's floor log came from a leader since removed, and no voter could reach it";

/// Seed 4600047959 (3 nodes, pre-vote off): no leader after the faults. Voters {1,5}; n5 (log
/// 29@8) was the one that could win; n1 (15@7) still held v{1,3} and asked only n3, retired; n4,
/// its removal pending, campaigned too. n1 timed out first in every term, voted for itself, and
/// refused n5 arriving in that same term a little later; refusing reset nothing, so the race
/// repeated term after term. Fixed in `Raft::handle_request_vote`: a candidate that refuses a
/// rival of its term with a more up to date log steps aside and restarts its election timer (the
/// unit test `a_candidate_outweighed_by_a_rival_of_its_term_steps_aside_and_waits`).
const HOPELESS_CANDIDATE_ONE_TERM_AHEAD: &str =
    "a candidate that could never win voted for itself first in every term";

/// Seed 10100101590 (5 nodes, pre-vote on), found by the sweep of the first adaptive flow
/// control (issue 23): a proposal not applied everywhere after the faults. n7, added during a
/// partition that cut it off, was probed with entry 1; the probe was resent every heartbeat
/// period until the partition healed, and the leader then took the first send's answer, 4,000
/// ticks after it left, for the follower's acknowledgement latency. The patience before
/// presuming messages lost (four smoothed latencies) grew past the run: the leader waited on a
/// lost message instead of resending. Fixed in `Progress`: a resent probe measures nothing
/// (Karn's algorithm), one acknowledgement counts for at most an election timeout, and so does
/// the patience.
const LATENCY_MEASURED_ACROSS_A_PARTITION: &str =
    "a probe resent through a partition measured the partition as the follower's latency";

/// The default configuration as runs are since 2026-12-07: links cut both ways, quick
/// restarts, each seed its own environment, every leader's lease checked at every event.
fn default_3_swarm() -> SimConfig {
    let mut config = SimConfig::default_for(3);
    // Found before spare followers held their syncs: replayed as they ran then.
    config.spare_sync_hold = 0;
    config
}

/// Found by that simulator in its first sweep against the rules as they were before
/// `5e30872` (e02b976), which 43,000 seeds of the earlier one had not found; the hole a review
/// had found by reading. Seed 2600024680 (seed 2600000275 is the same story later in a run):
/// the link between n1 and n3 is cut both ways; n2 answers the leader n1 and crashes at t=517,
/// back a millisecond later knowing no leader; n3, which hears no leader, asks it for a pre-vote
/// and a vote, wins term 2 at t=557 and commits with n2 while n1, still leader of term 1, holds
/// a lease from n2's answer. Fixed: a node refuses other candidates for a minimum election
/// timeout after it starts, as after a leader's message (`Raft::refuse_candidates_until`).
const A_RESTARTED_VOTER_FORGOT_THE_LEASE: &str =
    "a voter restarted at once forgot the lease its answer lent the leader";

fn no_pre_vote_5() -> SimConfig {
    SimOptions {
        nodes: 5,
        events: 2000,
        no_pre_vote: true,
        bug: None,
        disk_loss: false,
        disk_loss_with_changes: false,
    }
    .config()
    .classic()
}

fn default_5() -> SimConfig {
    SimConfig::default_for(5).classic()
}

fn default_1() -> SimConfig {
    SimOptions {
        nodes: 1,
        events: 2000,
        no_pre_vote: false,
        bug: None,
        disk_loss: false,
        disk_loss_with_changes: false,
    }
    .config()
    .classic()
}

/// `LeaderState::term_durable` (core/src/raft.rs), `Raft::sending_parts`.
const LONE_VOTER_SENT_BEFORE_ITS_TERM_WAS_DURABLE: &str =
    "seed 31007003229 (1 node grown through learners): n4, the only voter (v{4} l{3}), wins term 3 \
     by its own vote in the step that adopts it and sends AppendEntries of term 3 at once; it \
     crashes before the write recording the term is synced, comes back in term 2 and votes for \
     n2, which wins term 3 again: two leaders of term 3, and entries of one term at one index \
     could differ. A leader now sends nothing until its term is durable \
     (`a_lone_voter_sends_nothing_of_a_new_term_until_the_term_is_durable`)";

// The seeds of issue 24 replay other runs now than the ones that failed: the fixes, and the
// fault model widened with them (clock stalls, a confirmation round with every heartbeat), change
// what each seed draws. They stay here as runs that must pass; the mechanisms themselves are held
// by the unit tests named above, which fail on the code before the fixes.
const STALE_CONFIGURATION_AT_THE_COMMITTED_INDEX: &str =
    "seed 31021526418 (3 nodes, pre-vote off): the leader n2 made the new node n6 a voter at once \
     (v{1,2} -> v{2,6}, joint, at 16) and lost its term; n6, new and so rejoining, waited for an \
     answer from every member of every configuration at or past the committed one (at 15), and \
     n5, whose log was cut off in term 3, reported its own uncommitted configuration at 15, \
     v{1,2,3,5}, naming n3, since retired. n3 never answered, n6 never voted, and no leader \
     could be elected without it: no leader for good. A configuration at the committed one's \
     index that differs from it lies in a log a committed entry superseded, and is no longer \
     counted among those that may decide (rejoin.rs `live_configurations`)";

const STALE_CONFIGURATION_PAST_THE_COMMIT: &str =
    "seeds 31023530183 and 31023724424 (3 nodes, pre-vote off): as seed 31021526418, but the stale \
     member's configuration naming a retired node lay past the newest commit (v{1,3,5} at 12, \
     its log ending in term 1, against a commit at 10 of term 2; v{1,3,5} at 21, its log ending \
     in term 3, against a commit at 19 of term 8). Answers now carry their commit's entry id, and \
     each configuration's: a configuration past the commit whose entry's term is before the \
     commit's, or one between the configuration in force at the commit and the commit, is no \
     longer waited for (rejoin.rs `live_configurations`)";

const REGRESSIONS: &[Regression] = &[
    Regression {
        seed: 8012992,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8004955,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8005136,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8008631,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8014211,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8015028,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8018392,
        config: default_3,
        why: NON_CAMPAIGNER_KEPT_ITS_LEASE,
    },
    Regression {
        seed: 8114818,
        config: default_5,
        why: LEASE_AFTER_TIMEOUT_NOW,
    },
    Regression {
        seed: 199,
        config: no_pre_vote_3,
        why: NEWER_TERM_RESET_THE_TIMER,
    },
    Regression {
        seed: 2200031986,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200039443,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200063702,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200074092,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200080858,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200181747,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200208747,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 2200247333,
        config: no_pre_vote_3,
        why: REMOVED_VOTER_ONE_TERM_BEHIND,
    },
    Regression {
        seed: 4200023438,
        config: no_pre_vote_3,
        why: FLOOR_LOG_FROM_A_REMOVED_LEADER,
    },
    Regression {
        seed: 4200170803,
        config: no_pre_vote_3,
        why: FLOOR_LOG_FROM_A_REMOVED_LEADER,
    },
    Regression {
        seed: 4600047959,
        config: no_pre_vote_3,
        why: HOPELESS_CANDIDATE_ONE_TERM_AHEAD,
    },
    Regression {
        seed: 10100101590,
        config: default_5,
        why: LATENCY_MEASURED_ACROSS_A_PARTITION,
    },
    Regression {
        seed: 730012246,
        config: no_pre_vote_5,
        why: TERM_BEHIND_ITS_SNAPSHOT,
    },
    Regression {
        seed: 107,
        config: default_3,
        why: REMOVED_LEADER_NEVER_CAMPAIGNS,
    },
    Regression {
        seed: 1391,
        config: lease_reads_without_check_quorum,
        why: LEASE_WITHOUT_CHECK_QUORUM,
    },
    Regression {
        seed: 895,
        config: lease_reads_without_check_quorum,
        why: LEASE_WITHOUT_CHECK_QUORUM,
    },
    Regression {
        seed: 1812,
        config: lease_reads_without_check_quorum,
        why: LEASE_WITHOUT_CHECK_QUORUM,
    },
    Regression {
        seed: 21000687693,
        config: no_pre_vote_3,
        why: VOUCHED_AHEAD_OF_ITS_STANDING,
    },
    Regression {
        seed: 31007003229,
        config: default_1,
        why: LONE_VOTER_SENT_BEFORE_ITS_TERM_WAS_DURABLE,
    },
    Regression {
        seed: 31007001869,
        config: default_1,
        why: LONE_VOTER_SENT_BEFORE_ITS_TERM_WAS_DURABLE,
    },
    Regression {
        seed: 31021526418,
        config: no_pre_vote_3,
        why: STALE_CONFIGURATION_AT_THE_COMMITTED_INDEX,
    },
    Regression {
        seed: 31023530183,
        config: no_pre_vote_3,
        why: STALE_CONFIGURATION_PAST_THE_COMMIT,
    },
    Regression {
        seed: 31023724424,
        config: no_pre_vote_3,
        why: STALE_CONFIGURATION_PAST_THE_COMMIT,
    },
    Regression {
        seed: 2600024680,
        config: default_3_swarm,
        why: A_RESTARTED_VOTER_FORGOT_THE_LEASE,
    },
    Regression {
        seed: 2600000275,
        config: default_3_swarm,
        why: A_RESTARTED_VOTER_FORGOT_THE_LEASE,
    },
];

#[test]
fn every_seed_that_once_failed_passes() {
    for regression in REGRESSIONS {
        if let Err(failure) = run(regression.seed, &(regression.config)()) {
            panic!(
                "regression (seed {}: {}) is back:\n{}",
                regression.seed,
                regression.why,
                failure.explain()
            );
        }
    }
}

/// The lease-read regression keeps its teeth: its configuration asks for lease reads with
/// check-quorum off, and the run really reads (every lease read served is checked against what
/// was committed, so serving a stale one again would fail the test above).
#[test]
fn the_lease_read_regression_config_exercises_lease_reads() {
    let config = lease_reads_without_check_quorum();
    assert!(config.lease_reads && !config.check_quorum && config.read_interval > 0);
    let report = run(1391, &config).expect("passes");
    assert!(report.reads > 0, "{report:?}");
}
