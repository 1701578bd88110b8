//! Commit cost on the leader: the majority arithmetic and the handling of a follower's answer.
//!
//! A leader runs this once per follower answer, on the node actor that also takes proposals and
//! drives elections, so it must stay negligible next to a disk write (see the `log_store` bench)
//! however many answers stream in.
//!
//! Measured:
//! - `quorum_matched_index/{3,5,7}`: `quorum_matched_index(voters, matched)`, the highest index a
//!   majority holds (§5.3–5.4), for clusters of 3, 5 and 7 voters whose match indexes all differ.
//! - `append_response/new_match`: `Raft::step` with a successful AppendEntries answer on the
//!   leader of a 3-node cluster in steady state (the peer's `Progress`, its confirmation rounds,
//!   then the commit): every entry is confirmed by both followers in turn, so one answer in two
//!   advances the commit index (a majority of leader + one follower) and the other finds the
//!   quorum unchanged. Time is per answer.
//! - `append_response/repeat`: an answer confirming an entry already recorded (a heartbeat
//!   answer): only the peer's activity is noted.
//!
//! The leader is built through the rules alone: a `Raft` for a 3-node configuration without
//! pre-vote ticks until it campaigns, receives a granted vote, proposes entries and has its own log
//! flushed. Building it is never timed. Throughput is in calls per second.
//!
//! Run: `cargo bench --bench commit` (add `-- --quick` for a shorter run).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftor_core::{
    quorum_matched_index, AppendEntriesResponse, AppendOutcome, LogId, LogIndex, Message, NodeId,
    Raft, RaftConfig, RecoveredState, RequestVoteResponse, Role, Standing, Term,
};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Cluster sizes for the majority arithmetic.
const VOTER_COUNTS: [u64; 3] = [3, 5, 7];
/// Entries a benchmark leader proposes; it is rebuilt (untimed) once reports have covered them.
const LEADER_PROPOSALS: usize = 1 << 18;

fn voters(n: u64) -> BTreeSet<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Node 1 of a 3-node cluster, elected leader by the rules, with `proposals` entries after its
/// blank entry, all flushed on the leader but not yet confirmed by any follower.
fn leader(proposals: usize) -> Raft {
    let mut config = RaftConfig::new(NodeId(1), voters(3));
    config.pre_vote = false;
    let election_ticks_max = config.election_ticks_max;
    // A member's store (a new one would rejoin before campaigning).
    let recovered = RecoveredState {
        standing: Standing::Member,
        ..RecoveredState::default()
    };
    let mut raft = Raft::new(config, recovered, 7).expect("valid config");
    for _ in 0..=election_ticks_max {
        if raft.role() == Role::Candidate {
            break;
        }
        raft.tick();
    }
    assert_eq!(raft.role(), Role::Candidate, "the election timer fired");
    let _ = raft.take_ready(); // The term, the vote for itself and the RequestVotes.
    raft.step(
        NodeId(2),
        Message::RequestVoteResponse(RequestVoteResponse {
            term: raft.current_term(),
            vote_granted: true,
            pre_vote: false,
        }),
    );
    assert_eq!(raft.role(), Role::Leader, "a majority granted its vote");
    raft.propose(vec![Bytes::from_static(b"command"); proposals])
        .expect("the leader takes proposals");
    let last = raft.last_log_id();
    raft.on_log_flushed(last);
    let _ = raft.take_ready();
    raft
}

/// `peer`'s answer to the leader's message `request_id`: it holds the log up to `matched`.
fn success(term: Term, request_id: u64, matched: LogId) -> Message {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        request_id,
        outcome: AppendOutcome::Success { matched },
    })
}

fn quorum(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit/quorum_matched_index");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for n in VOTER_COUNTS {
        let voters = voters(n);
        // Distinct, unordered match indexes, so the sort has work to do.
        let matched: BTreeMap<NodeId, LogIndex> = voters
            .iter()
            .map(|id| (*id, LogIndex(1_000 + (id.0 * 7_919) % 97)))
            .collect();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| quorum_matched_index(black_box(&voters), black_box(&matched)))
        });
    }
    group.finish();
}

fn replication_report(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit/append_response");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));

    group.bench_function("new_match", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut raft = leader(LEADER_PROPOSALS);
                let term = raft.current_term();
                let last = raft.last_log_id().index.0;
                // Reports k = 0, 1, 2, ...: follower 2, then follower 3, confirm entry 1 + k / 2.
                let reports = (iters - done).min(2 * last);
                let start = Instant::now();
                for k in 0..reports {
                    let peer = NodeId(2 + k % 2);
                    let matched = LogId::new(term, LogIndex(1 + k / 2));
                    raft.step(black_box(peer), black_box(success(term, k + 1, matched)));
                }
                elapsed += start.elapsed();
                assert_eq!(
                    raft.commit_index(),
                    LogIndex(reports.div_ceil(2)),
                    "every first confirmation committed its entry"
                );
                done += reports;
            }
            elapsed
        })
    });

    group.bench_function("repeat", |b| {
        let mut raft = leader(64);
        let term = raft.current_term();
        let matched = raft.last_log_id();
        raft.step(NodeId(2), success(term, 1, matched));
        assert_eq!(raft.commit_index(), matched.index);
        b.iter(|| raft.step(black_box(NodeId(2)), black_box(success(term, 2, matched))))
    });
    group.finish();
}

criterion_group!(benches, quorum, replication_report);
criterion_main!(benches);
