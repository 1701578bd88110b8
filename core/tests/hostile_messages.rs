//! Hostile input for the rules: well-formed but nonsensical messages (terms of 0 and u64::MAX,
//! indexes far beyond the log, entries that contradict the committed prefix or do not follow
//! their `prev_log_id`, unknown senders, the node itself as sender) and nonsensical internal
//! events (flush notices and replication reports for entries that do not exist), in random
//! order, against a follower and a leader that already hold a committed prefix.
//!
//! After every event the node's outputs must keep the contract: no panic; every write extends
//! the log it describes (consecutive entries, terms never going back) and never truncates at or
//! below the commit index; the committed prefix never changes; the commit index never goes down
//! and never passes the end of the log; the durable term never goes down and the vote of a term,
//! once given, never changes.

use bytes::Bytes;
use proptest::prelude::*;
use raftor_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Entry, EntryPayload,
    HardState, LogId, LogIndex, LogTerms, Membership, Message, NodeId, Raft, RaftConfig,
    RecoveredState, RequestVote, RequestVoteResponse, Role, SendOutcome, SnapshotMeta, Term,
    TERM_CEILING, TERM_STEP,
};

/// Something that happens to the node.
#[derive(Clone, Debug)]
enum Event {
    Step(NodeId, Message),
    Tick(u32),
    Propose(u8),
    ReadIndex(u64),
    Flushed(LogId),
    /// A flush notice for the node's real last entry (what the log store would send).
    FlushLast,
    /// What the driver says it did with an order: made up, so mostly about no order at all.
    Outcome(SendOutcome),
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        4 => (0u64..6).prop_map(Term),
        1 => Just(Term(u64::MAX)),
        1 => Just(Term(u64::MAX - 1)),
        1 => any::<u64>().prop_map(Term),
    ]
}

fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![
        4 => (0u64..12).prop_map(LogIndex),
        1 => Just(LogIndex(u64::MAX)),
        1 => Just(LogIndex(u64::MAX - 1)),
        1 => any::<u64>().prop_map(LogIndex),
    ]
}

fn log_id() -> impl Strategy<Value = LogId> {
    (term(), index()).prop_map(|(t, i)| LogId::new(t, i))
}

fn sender() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        6 => (1u64..=3).prop_map(NodeId),
        1 => Just(NodeId(0)),
        1 => Just(NodeId(99)),
        1 => Just(NodeId(u64::MAX)),
    ]
}

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Blank),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| EntryPayload::Command(Bytes::from(b))),
    ]
}

/// Entries after `prev`: consecutive with non-decreasing terms (well formed, possibly
/// contradicting the log), or anything at all.
fn entries(prev: LogId) -> impl Strategy<Value = Vec<Entry>> {
    let well_formed = (
        0u64..4,
        proptest::collection::vec((0u64..3, payload()), 0..5),
    )
        .prop_map(move |(base, items)| {
            let mut term = prev.term.0.saturating_add(base);
            items
                .into_iter()
                .enumerate()
                .map(|(i, (bump, payload))| {
                    term = term.saturating_add(bump);
                    Entry {
                        term: Term(term),
                        index: LogIndex(prev.index.0.saturating_add(1 + i as u64)),
                        payload,
                    }
                })
                .collect()
        });
    let anything = proptest::collection::vec(
        (term(), index(), payload()).prop_map(|(term, index, payload)| Entry {
            term,
            index,
            payload,
        }),
        0..4,
    );
    prop_oneof![3 => well_formed, 1 => anything]
}

fn append_entries() -> impl Strategy<Value = Message> {
    (term(), log_id(), index(), any::<u64>(), any::<bool>()).prop_flat_map(
        |(term, prev, commit, request_id, sync_may_wait)| {
            entries(prev).prop_map(move |entries| {
                Message::AppendEntries(AppendEntries {
                    term,
                    prev_log_id: prev,
                    entries,
                    leader_commit: commit,
                    sync_may_wait,
                    request_id,
                })
            })
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        3 => append_entries(),
        1 => (term(), log_id(), any::<bool>()).prop_map(|(term, last_log_id, pre_vote)| {
            Message::RequestVote(RequestVote {
                term,
                last_log_id,
                pre_vote,
                leadership_transfer: false,
            })
        }),
        1 => (term(), any::<bool>(), any::<bool>()).prop_map(|(term, vote_granted, pre_vote)| {
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                vote_granted,
                pre_vote,
            })
        }),
        1 => (term(), any::<u64>(), log_id(), index(), prop::option::of(term()), 0u8..3)
            .prop_map(|(term, request_id, matched, first_index, conflict_term, kind)| {
                let outcome = match kind {
                    0 => AppendOutcome::Success { matched },
                    1 => AppendOutcome::Reject {
                        rejected_prev_index: matched.index,
                        hint: ConflictHint {
                            conflict_term,
                            first_index,
                        },
                    },
                    _ => AppendOutcome::StaleTerm,
                };
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    request_id,
                    outcome,
                })
            }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (sender(), message()).prop_map(|(from, m)| Event::Step(from, m)),
        2 => (1u32..40).prop_map(Event::Tick),
        1 => (1u8..4).prop_map(Event::Propose),
        1 => any::<u64>().prop_map(Event::ReadIndex),
        1 => log_id().prop_map(Event::Flushed),
        2 => Just(Event::FlushLast),
        1 => (sender(), 0u64..64, index(), 0usize..(1 << 20)).prop_map(|(to, request_id, last_index, bytes)| {
            Event::Outcome(SendOutcome::EntriesSent { to, request_id, last_index, bytes })
        }),
        1 => (sender(), 0u64..64).prop_map(|(to, request_id)| {
            Event::Outcome(SendOutcome::EntriesUnavailable { to, request_id })
        }),
        1 => (sender(), 0u64..64, log_id(), any::<u64>()).prop_map(|(to, request_id, last_included, size)| {
            Event::Outcome(SendOutcome::SnapshotOpened {
                to,
                request_id,
                meta: SnapshotMeta {
                    last_included,
                    size,
                    checksum: 0,
                    membership: Box::new(Membership::bootstrap(
                        &[NodeId(1), NodeId(2), NodeId(3)].into_iter().collect(),
                        &Default::default(),
                    )),
                },
            })
        }),
        1 => (sender(), 0u64..64).prop_map(|(to, request_id)| {
            Event::Outcome(SendOutcome::SnapshotUnavailable { to, request_id })
        }),
    ]
}

/// The node, and what its outputs say its log and hard state are.
struct Harness {
    raft: Raft,
    /// The log as the node's writes describe it (durable or on its way).
    log: Vec<Entry>,
    /// The last hard state handed out for persistence.
    hard: HardState,
    /// The committed prefix as of the previous event.
    committed: Vec<Entry>,
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("e{index}"))),
    }
}

impl Harness {
    /// Node 1 of 3 restarting with entries 1..=5 (terms 1, 1, 2, 2, 2), 1..=3 committed.
    fn follower(pre_vote: bool) -> Harness {
        Harness::follower_at(pre_vote, Term(2))
    }

    /// The same follower, its store at `term` (no vote in it unless `term` is 2).
    fn follower_at(pre_vote: bool, term: Term) -> Harness {
        let log: Vec<Entry> = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
            .into_iter()
            .map(|(i, t)| entry(i, t))
            .collect();
        let mut terms = LogTerms::default();
        terms.append(&log);
        let hard = HardState {
            current_term: term,
            voted_for: (term == Term(2)).then_some(NodeId(2)),
            commit_index: LogIndex(3),
        };
        let mut config = RaftConfig::new(NodeId(1), [1, 2, 3].map(NodeId));
        config.pre_vote = pre_vote;
        let recovered = RecoveredState {
            hard_state: hard,
            term_boundaries: terms.boundaries(),
            log_start: raftor_core::LogId::ZERO,
            standing: raftor_core::Standing::Member,
            ..Default::default()
        };
        let raft = Raft::new(config, recovered, 7).expect("valid");
        assert_eq!(raft.commit_index(), LogIndex(3));
        let committed = log[..3].to_vec();
        let mut harness = Harness {
            raft,
            log,
            hard,
            committed,
        };
        harness.check("start");
        harness
    }

    /// The same node after winning an election and committing an entry of its own term.
    fn leader(pre_vote: bool) -> Harness {
        let mut h = Harness::follower(pre_vote);
        for _ in 0..100 {
            if h.raft.role() == Role::Leader {
                break;
            }
            h.raft.tick();
            h.check("tick");
            let term = h.raft.current_term();
            let pre = h.raft.role() == Role::PreCandidate;
            for peer in [2, 3] {
                let vote = Message::RequestVoteResponse(RequestVoteResponse {
                    term: if pre { term.next() } else { term },
                    vote_granted: true,
                    pre_vote: pre,
                });
                if matches!(h.raft.role(), Role::PreCandidate | Role::Candidate) {
                    h.raft.step(NodeId(peer), vote);
                    h.check("vote");
                }
            }
        }
        assert_eq!(h.raft.role(), Role::Leader);
        let last = h.raft.last_log_id();
        h.raft.on_log_flushed(last);
        let term = h.raft.current_term();
        h.raft.step(
            NodeId(2),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                request_id: 1,
                outcome: AppendOutcome::Success { matched: last },
            }),
        );
        h.check("commit");
        assert_eq!(
            h.raft.commit_index(),
            last.index,
            "the leader committed its blank"
        );
        h
    }

    fn apply(&mut self, event: &Event) {
        match event.clone() {
            Event::Step(from, message) => self.raft.step(from, message),
            Event::Tick(n) => {
                for _ in 0..n {
                    self.raft.tick();
                }
            }
            Event::Propose(n) => {
                let _ = self
                    .raft
                    .propose((0..n).map(|i| Bytes::from(vec![i])).collect());
            }
            Event::ReadIndex(id) => {
                let _ = self.raft.read_index(id);
            }
            Event::Flushed(id) => self.raft.on_log_flushed(id),
            Event::FlushLast => {
                let last = self.raft.last_log_id();
                self.raft.on_log_flushed(last);
            }
            Event::Outcome(outcome) => self.raft.on_send_outcome(outcome),
        }
        self.check(&format!("{event:?}"));
    }

    /// Takes the Ready and checks it against everything known so far.
    fn check(&mut self, what: &str) {
        let commit_before = LogIndex(self.committed.len() as u64);
        let ready = self.raft.take_ready();
        let write = &ready.write;
        if let Some(from) = write.truncate_from {
            assert!(
                from > commit_before,
                "{what}: truncates from {from}, at or below the commit index {commit_before}"
            );
            assert!(
                from.0 >= 1 && from.0 <= self.log.len() as u64 + 1,
                "{what}: truncates from {from}, outside a log of {}",
                self.log.len()
            );
            self.log.truncate(from.0 as usize - 1);
        }
        for e in &write.entries {
            assert_eq!(
                e.index.0,
                self.log.len() as u64 + 1,
                "{what}: entry {} does not follow the log",
                e.log_id()
            );
            if let Some(last) = self.log.last() {
                assert!(
                    last.term <= e.term,
                    "{what}: entry {} goes back in term",
                    e.log_id()
                );
            }
            self.log.push(e.clone());
        }
        if let Some(hard) = write.hard_state {
            assert!(
                hard.current_term >= self.hard.current_term,
                "{what}: term goes back from {} to {}",
                self.hard.current_term,
                hard.current_term
            );
            if hard.current_term == self.hard.current_term && self.hard.voted_for.is_some() {
                assert_eq!(
                    hard.voted_for, self.hard.voted_for,
                    "{what}: a second vote in term {}",
                    hard.current_term
                );
            }
            self.hard = hard;
        }
        for envelope in &ready.messages {
            if let Message::RequestVoteResponse(r) = &envelope.message {
                if r.vote_granted && !r.pre_vote {
                    assert_eq!(
                        self.hard.voted_for,
                        Some(envelope.to),
                        "{what}: a vote granted to n{} that is not the recorded vote",
                        envelope.to
                    );
                }
            }
        }
        let last = self.log.last().map(Entry::log_id).unwrap_or_default();
        assert_eq!(
            self.raft.last_log_id(),
            last,
            "{what}: the rules' log differs"
        );
        let commit = self.raft.commit_index();
        assert!(
            commit >= commit_before,
            "{what}: commit went down to {commit}"
        );
        assert!(
            commit.0 <= self.log.len() as u64,
            "{what}: commit {commit} beyond the log"
        );
        if let Some(c) = ready.commit_index {
            assert!(
                c >= commit_before && c <= commit,
                "{what}: Ready commit {c}"
            );
        }
        assert_eq!(
            self.log[..self.committed.len()],
            self.committed[..],
            "{what}: the committed prefix changed"
        );
        self.committed = self.log[..commit.0 as usize].to_vec();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_follower_survives_hostile_events(
        pre_vote in any::<bool>(),
        events in proptest::collection::vec(event(), 1..60),
    ) {
        let mut h = Harness::follower(pre_vote);
        for event in &events {
            h.apply(event);
        }
    }

    #[test]
    fn a_leader_survives_hostile_events(
        pre_vote in any::<bool>(),
        events in proptest::collection::vec(event(), 1..60),
    ) {
        let mut h = Harness::leader(pre_vote);
        for event in &events {
            h.apply(event);
        }
    }
}

/// Entries that contradict the committed prefix, from a leader of a newer term: refused, nothing
/// truncated, commit unchanged.
#[test]
fn entries_contradicting_the_committed_prefix_are_refused() {
    let mut h = Harness::follower(true);
    let conflicting = Message::AppendEntries(AppendEntries {
        term: Term(5),
        prev_log_id: LogId::new(Term(1), LogIndex(1)),
        entries: vec![entry(2, 5), entry(3, 5)],
        leader_commit: LogIndex(3),
        sync_may_wait: false,
        request_id: 1,
    });
    h.apply(&Event::Step(NodeId(2), conflicting));
    assert_eq!(h.log.len(), 5, "nothing truncated");
    assert_eq!(h.raft.commit_index(), LogIndex(3));
    assert_eq!(h.raft.last_log_id(), LogId::new(Term(2), LogIndex(5)));
}

/// prev_log_id beyond the log and a commit index far beyond it: rejected with a hint, no commit.
#[test]
fn a_prev_log_id_beyond_the_log_is_rejected() {
    let mut h = Harness::follower(true);
    h.raft.step(
        NodeId(2),
        Message::AppendEntries(AppendEntries {
            term: Term(2),
            prev_log_id: LogId::new(Term(2), LogIndex(u64::MAX - 1)),
            entries: vec![entry(u64::MAX, 2)],
            leader_commit: LogIndex(u64::MAX),
            sync_may_wait: false,
            request_id: 9,
        }),
    );
    let ready = h.raft.take_ready();
    assert!(ready.write.entries.is_empty() && ready.write.truncate_from.is_none());
    assert_eq!(h.raft.commit_index(), LogIndex(3));
    let rejected = ready.messages.iter().any(|m| {
        matches!(
            &m.message,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                outcome: AppendOutcome::Reject { .. },
                request_id: 9,
                ..
            })
        )
    });
    assert!(rejected, "{:?}", ready.messages);
}

/// One message with a term no real cluster reaches (u64::MAX, from a hostile or broken peer)
/// must not move a node there: every node would follow it to the last term, where no election
/// can ever start again. It is ignored whole; a term up to the ceiling is followed, and past the
/// ceiling a message moves a term by at most `TERM_STEP`, so elections go on after it.
#[test]
fn a_term_no_real_cluster_reaches_is_ignored() {
    let vote = |term: u64| {
        Message::RequestVote(RequestVote {
            term: Term(term),
            last_log_id: LogId::new(Term(term), LogIndex(u64::MAX)),
            pre_vote: false,
            leadership_transfer: false,
        })
    };
    let heartbeat = |term: u64| {
        Message::AppendEntries(AppendEntries {
            term: Term(term),
            prev_log_id: LogId::new(Term(2), LogIndex(5)),
            entries: vec![],
            leader_commit: LogIndex(3),
            sync_may_wait: false,
            request_id: 1,
        })
    };
    for pre_vote in [false, true] {
        let mut h = Harness::follower(pre_vote);
        for message in [vote(u64::MAX), heartbeat(u64::MAX - 1)] {
            h.apply(&Event::Step(NodeId(2), message));
            assert_eq!(h.hard.current_term, Term(2), "pre-vote {pre_vote}");
            assert_eq!(h.hard.voted_for, Some(NodeId(2)));
            assert!(h.raft.take_ready().messages.is_empty(), "not even answered");
        }
        // Up to the ceiling, and a step past it, is followed...
        let ceiling = TERM_CEILING.0;
        h.apply(&Event::Step(NodeId(3), heartbeat(ceiling + TERM_STEP)));
        assert_eq!(h.hard.current_term, Term(ceiling + TERM_STEP));
        // ...but no further than a step past the node's own term.
        h.apply(&Event::Step(
            NodeId(3),
            heartbeat(ceiling + 2 * TERM_STEP + 1),
        ));
        assert_eq!(h.hard.current_term, Term(ceiling + TERM_STEP));
        // Elections go on: the node campaigns for the next term.
        for _ in 0..40 {
            if matches!(h.raft.role(), Role::Candidate | Role::PreCandidate) {
                break;
            }
            h.apply(&Event::Tick(1));
        }
        let expected = if pre_vote {
            (Role::PreCandidate, Term(ceiling + TERM_STEP))
        } else {
            (Role::Candidate, Term(ceiling + TERM_STEP + 1))
        };
        assert_eq!((h.raft.role(), h.raft.current_term()), expected);
    }
}

/// A node at the last possible term (its store says so: reached by no message any more, but a
/// store written before the ceiling may hold it) never votes in it twice when its election timer
/// fires: the term cannot grow, so a new election would be a second vote in the same term.
#[test]
fn the_last_term_is_never_voted_in_twice() {
    // Recovered at u64::MAX - 1: it campaigns into the last term, and loses.
    let mut h = Harness::follower_at(false, Term(u64::MAX - 1));
    for _ in 0..40 {
        if h.raft.role() == Role::Candidate {
            break;
        }
        h.apply(&Event::Tick(1));
    }
    assert_eq!(h.raft.role(), Role::Candidate);
    assert_eq!(h.hard.current_term, Term(u64::MAX));
    assert_eq!(h.hard.voted_for, Some(NodeId(1)));
    for _ in 0..10 {
        h.apply(&Event::Tick(40));
    }
    assert_eq!(h.raft.role(), Role::Follower);
    assert_eq!(h.raft.voted_for(), Some(NodeId(1)));
}

/// A follower whose log starts at a snapshot, at (term 5, index 100).
fn follower_after_snapshot() -> Raft {
    let recovered = RecoveredState {
        hard_state: HardState {
            current_term: Term(5),
            voted_for: None,
            commit_index: LogIndex(100),
        },
        log_start: LogId::new(Term(5), LogIndex(100)),
        standing: raftor_core::Standing::Member,
        ..Default::default()
    };
    let config = RaftConfig::new(NodeId(1), [1, 2, 3].map(NodeId));
    let mut raft = Raft::new(config, recovered, 7).expect("valid");
    raft.take_ready();
    raft
}

/// An AppendEntries reaching below the snapshot, whose entries past it are of an older term than
/// the snapshot's last: the part the snapshot covers is cut off, and what is left would put term
/// 1 after term 5. Refused; the log keeps its terms in order.
#[test]
fn entries_past_a_snapshot_of_an_older_term_than_it_are_refused() {
    let mut raft = follower_after_snapshot();
    raft.step(
        NodeId(2),
        Message::AppendEntries(AppendEntries {
            term: Term(5),
            prev_log_id: LogId::new(Term(1), LogIndex(98)),
            entries: vec![entry(99, 1), entry(100, 1), entry(101, 1)],
            leader_commit: LogIndex(101),
            sync_may_wait: false,
            request_id: 1,
        }),
    );
    let ready = raft.take_ready();
    assert!(ready.write.entries.is_empty(), "{:?}", ready.write.entries);
    assert_eq!(raft.last_log_id(), LogId::new(Term(5), LogIndex(100)));
    assert_eq!(raft.commit_index(), LogIndex(100));
    assert_eq!(raft.check_invariants(), Ok(()));
}

/// A snapshot sent in term 5 whose last entry is of term 9 (no leader of term 5 holds one), or
/// whose configuration has no voter: its chunks are not taken, and a driver that reports it
/// received whole installs nothing.
#[test]
fn a_snapshot_no_leader_could_send_is_not_installed() {
    let mut voters = Membership::default();
    voters.conf.voters = [1, 2, 3].map(NodeId).into();
    let future = SnapshotMeta {
        last_included: LogId::new(Term(9), LogIndex(200)),
        size: 1,
        checksum: 0,
        membership: Box::new(voters),
    };
    let no_voters = SnapshotMeta {
        last_included: LogId::new(Term(5), LogIndex(200)),
        membership: Box::default(),
        ..future.clone()
    };
    for meta in [future, no_voters] {
        let mut raft = follower_after_snapshot();
        // Node 2 leads term 5 as far as this follower knows.
        raft.step(
            NodeId(2),
            Message::AppendEntries(AppendEntries {
                term: Term(5),
                prev_log_id: LogId::new(Term(5), LogIndex(100)),
                entries: Vec::new(),
                leader_commit: LogIndex(100),
                sync_may_wait: false,
                request_id: 0,
            }),
        );
        assert_eq!(raft.leader_id(), Some(NodeId(2)));
        raft.take_ready();
        raft.step(
            NodeId(2),
            Message::InstallSnapshot(raftor_core::InstallSnapshot {
                term: Term(5),
                request_id: 1,
                meta: meta.clone(),
                offset: 0,
                data: Bytes::from_static(b"x"),
                done: true,
            }),
        );
        assert!(raft.take_ready().snapshot_chunks.is_empty(), "{meta:?}");
        raft.on_snapshot_received(NodeId(2), Term(5), 1, meta.clone());
        let ready = raft.take_ready();
        assert_eq!(ready.restore, None, "{meta:?}");
        assert_eq!(raft.last_log_id(), LogId::new(Term(5), LogIndex(100)));
        assert_eq!(raft.commit_index(), LogIndex(100));
        assert_eq!(raft.check_invariants(), Ok(()));
    }
}
