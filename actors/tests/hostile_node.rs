//! Hostile messages into running nodes: a real 3-node cluster (node, replicators, log store,
//! applier) on the in-memory network and tokio's paused clock, with forged envelopes injected into
//! the network — terms of 0 and u64::MAX, indexes far beyond the log, entries that contradict the
//! committed prefix or do not follow their `prev_log_id`, commit indexes from nowhere, unknown
//! senders and a node's own id as sender.
//!
//! Raft trusts a leader of the current term (it is not Byzantine fault tolerant), so forged
//! leaders may append, and even commit, nonsense after the committed prefix. What must hold
//! regardless: no node panics or stops; the commit index never goes back; what was committed
//! before the attack is never truncated or rewritten, in memory or on disk; every log on disk
//! stays well formed (consecutive indexes, terms never going back); the durable term never goes
//! back. And nonsense that is merely stale or foreign (older terms, unknown senders) changes
//! nothing at all: the same leader keeps leading the same term and commits new proposals.

use actix::{Actor, Addr};
use bytes::Bytes;
use raftor_actors::transport::Outbound;
use raftor_actors::{
    MemoryNetwork, NetworkControl, NodeHandle, NodeOptions, PendingNode, StateMachine,
};
use raftor_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Entry, EntryPayload,
    Envelope, LogId, LogIndex, Message, NodeId, RaftConfig, RequestVote, RequestVoteResponse, Role,
    Term,
};
use raftor_storage::{LogStorage, MemStorage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

/// A state machine that applies nothing of interest.
struct Nothing;

impl StateMachine for Nothing {
    fn apply(&mut self, index: LogIndex, _command: &[u8]) -> Bytes {
        Bytes::from(index.0.to_string())
    }
    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn snapshot(&self) -> raftor_actors::state_machine::SnapshotWriter {
        Box::new(|_out: &mut dyn std::io::Write| Ok(()))
    }
    fn restore(&mut self, _input: &mut dyn std::io::Read) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_paused<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, test());
}

struct Cluster {
    network: Addr<MemoryNetwork>,
    handles: BTreeMap<NodeId, NodeHandle>,
    storage: BTreeMap<NodeId, MemStorage>,
}

impl Cluster {
    fn start(seed: u64) -> Cluster {
        let network = MemoryNetwork::new(seed).start();
        network.do_send(NetworkControl::SetDelay(
            Duration::from_millis(1),
            Duration::from_millis(3),
        ));
        let mut handles = BTreeMap::new();
        let mut storage = BTreeMap::new();
        for id in (1..=3).map(NodeId) {
            let pending = PendingNode::new();
            network.do_send(NetworkControl::Register(id, pending.inbound()));
            let mut options = NodeOptions::new(RaftConfig::new(id, (1..=3).map(NodeId)));
            options.seed = seed * 10 + id.0;
            options.dedicated_log_thread = false;
            options.background_snapshots = false;
            let store = MemStorage::new();
            let handle = pending
                .start(
                    options,
                    store.clone(),
                    Box::new(Nothing),
                    network.clone().recipient(),
                )
                .expect("starts");
            handles.insert(id, handle);
            storage.insert(id, store);
        }
        Cluster {
            network,
            handles,
            storage,
        }
    }

    async fn leader(&self) -> (NodeId, Term) {
        for _ in 0..1000 {
            let mut best = None;
            for handle in self.handles.values() {
                if let Some(s) = handle.status().await {
                    if s.role == Role::Leader && best.is_none_or(|(_, t)| s.term > t) {
                        best = Some((s.id, s.term));
                    }
                }
            }
            if let Some(leader) = best {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader");
    }

    async fn commit_on_leader(&self, n: u64) {
        let mut done = 0;
        while done < n {
            let (leader, _) = self.leader().await;
            let proposal = self.handles[&leader].propose(Bytes::from(format!("p{done}")));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), proposal).await {
                done += 1;
            }
        }
    }

    async fn commits(&self) -> BTreeMap<NodeId, LogIndex> {
        let mut out = BTreeMap::new();
        for (id, handle) in &self.handles {
            let status = handle.status().await.expect("the node still runs");
            out.insert(*id, status.commit_index);
        }
        out
    }

    fn durable_log(&self, id: NodeId) -> Vec<Entry> {
        let store = &self.storage[&id];
        let last = store.last_index().expect("last index");
        store
            .entries(LogIndex(1), last, usize::MAX)
            .expect("entries")
    }
}

/// How wild the forged terms are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terms {
    /// Below the target's term only: stale.
    Stale,
    /// Around the target's term (one below to two above): forged leaders and candidates.
    Near,
    /// Anything, u64::MAX included.
    Absurd,
}

/// A forged message for a node whose term is `term` and whose log ends at `last`.
fn forged(rng: &mut SmallRng, term: Term, last: LogId, terms: Terms) -> Message {
    let pick_term = |rng: &mut SmallRng| -> Term {
        match terms {
            Terms::Stale => Term(rng.gen_range(0..=term.0.saturating_sub(1))),
            Terms::Near => Term(term.0.saturating_sub(1) + rng.gen_range(0..4)),
            Terms::Absurd => match rng.gen_range(0..6) {
                0 => Term(u64::MAX),
                1 => Term(u64::MAX - 1),
                2 => Term(0),
                _ => Term(term.0.saturating_add(rng.gen_range(0..3))),
            },
        }
    };
    let pick_index = |rng: &mut SmallRng| -> LogIndex {
        match rng.gen_range(0..6) {
            0 => LogIndex(u64::MAX),
            1 => LogIndex(rng.gen()),
            2 => LogIndex(0),
            _ => LogIndex(rng.gen_range(0..=last.index.0.saturating_add(5))),
        }
    };
    let t = pick_term(rng);
    match rng.gen_range(0..6) {
        0 => Message::RequestVote(RequestVote {
            term: t,
            last_log_id: LogId::new(pick_term(rng), pick_index(rng)),
            pre_vote: rng.gen(),
            leadership_transfer: rng.gen(),
        }),
        1 => Message::RequestVoteResponse(RequestVoteResponse {
            term: t,
            vote_granted: rng.gen(),
            pre_vote: rng.gen(),
        }),
        2 => Message::AppendEntriesResponse(AppendEntriesResponse {
            term: t,
            request_id: rng.gen_range(0..1000),
            outcome: match rng.gen_range(0..3) {
                0 => AppendOutcome::Success {
                    matched: LogId::new(pick_term(rng), pick_index(rng)),
                },
                1 => AppendOutcome::Reject {
                    rejected_prev_index: pick_index(rng),
                    hint: ConflictHint {
                        conflict_term: Some(pick_term(rng)),
                        first_index: pick_index(rng),
                    },
                },
                _ => AppendOutcome::StaleTerm,
            },
        }),
        _ => {
            // prev: the target's real last entry (the append is taken), an entry inside its log
            // with another term (a contradiction, of the committed prefix too), or anything.
            let prev = match rng.gen_range(0..5) {
                0 | 1 => last,
                2 => LogId::new(
                    Term(rng.gen_range(0..=term.0.saturating_add(1))),
                    LogIndex(rng.gen_range(0..=last.index.0)),
                ),
                _ => LogId::new(pick_term(rng), pick_index(rng)),
            };
            let contiguous = rng.gen_bool(0.8);
            let count = rng.gen_range(0..4);
            let entries = (0..count)
                .map(|i| Entry {
                    term: if contiguous {
                        Term(prev.term.0.max(t.0))
                    } else {
                        pick_term(rng)
                    },
                    index: if contiguous {
                        LogIndex(prev.index.0.saturating_add(1 + i))
                    } else {
                        pick_index(rng)
                    },
                    payload: EntryPayload::Command(Bytes::from_static(b"forged")),
                })
                .collect();
            let leader_commit = if rng.gen_bool(0.5) {
                // Commit what was just forged.
                LogIndex(prev.index.0.saturating_add(count))
            } else {
                pick_index(rng)
            };
            Message::AppendEntries(AppendEntries {
                term: t,
                prev_log_id: prev,
                entries,
                leader_commit,
                sync_may_wait: false,
                request_id: rng.gen(),
            })
        }
    }
}

/// A well-formed log: consecutive indexes from 1, terms never going back.
fn assert_well_formed(id: NodeId, log: &[Entry]) {
    for (i, entry) in log.iter().enumerate() {
        assert_eq!(entry.index.0, i as u64 + 1, "n{id}: log out of order");
        if i > 0 {
            assert!(
                log[i - 1].term <= entry.term,
                "n{id}: term goes back at {i}"
            );
        }
    }
}

/// Sends `count` forged envelopes, one every millisecond, polling every node's commit index.
async fn attack(cluster: &Cluster, seed: u64, count: u64, terms: Terms) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut commits = cluster.commits().await;
    for n in 0..count {
        let to = NodeId(rng.gen_range(1..=3));
        let (term, last) = {
            let status = cluster.handles[&to].status().await.expect("runs");
            (status.term, status.last_log_id)
        };
        let from = if terms == Terms::Stale {
            // Stale terms from anyone, or anything from someone who is not a member.
            [NodeId(1), NodeId(2), NodeId(3), NodeId(0), NodeId(99)][rng.gen_range(0..5)]
        } else {
            NodeId(rng.gen_range(1..=3))
        };
        let message = forged(&mut rng, term, last, terms);
        cluster
            .network
            .do_send(Outbound(Envelope { from, to, message }));
        tokio::time::sleep(Duration::from_millis(1)).await;
        if n % 5 == 0 {
            let now = cluster.commits().await;
            for (id, commit) in &now {
                assert!(
                    *commit >= commits[id],
                    "n{id}: commit index went back from {} to {commit}",
                    commits[id]
                );
            }
            commits = now;
        }
    }
}

#[test]
fn forged_messages_never_undo_what_was_committed() {
    for seed in [1, 2, 3] {
        run_paused(|| async move {
            let cluster = Cluster::start(seed);
            cluster.commit_on_leader(10).await;
            // Let every follower learn the commit index.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = cluster.commits().await;
            let prefixes: BTreeMap<NodeId, Vec<Entry>> = before
                .iter()
                .map(|(id, commit)| {
                    let log = cluster.durable_log(*id);
                    (*id, log[..commit.0 as usize].to_vec())
                })
                .collect();
            let terms: BTreeMap<NodeId, Term> = {
                let mut out = BTreeMap::new();
                for (id, handle) in &cluster.handles {
                    out.insert(*id, handle.status().await.expect("runs").term);
                }
                out
            };
            assert!(before.values().all(|c| c.0 >= 10), "{before:?}");

            attack(&cluster, seed, 1500, Terms::Near).await;
            attack(&cluster, seed + 100, 500, Terms::Absurd).await;
            tokio::time::sleep(Duration::from_millis(500)).await;

            let after = cluster.commits().await;
            for (id, handle) in &cluster.handles {
                assert!(handle.is_running(), "n{id} stopped");
                let log = cluster.durable_log(*id);
                assert_well_formed(*id, &log);
                let prefix = &prefixes[id];
                assert!(log.len() >= prefix.len(), "n{id}: committed entries lost");
                assert_eq!(
                    &log[..prefix.len()],
                    &prefix[..],
                    "n{id}: committed prefix rewritten"
                );
                assert!(after[id] >= before[id], "n{id}: commit went back");
                let status = handle.status().await.expect("runs");
                assert!(status.term >= terms[id], "n{id}: term went back");
                println!(
                    "seed {seed} n{id}: term {} -> {}, commit {} -> {}, log {} -> {}, role {:?}",
                    terms[id],
                    status.term,
                    before[id],
                    after[id],
                    prefix.len(),
                    log.len(),
                    status.role
                );
            }
            for handle in cluster.handles.values() {
                handle.shutdown();
            }
        });
    }
}

#[test]
fn stale_or_foreign_nonsense_changes_nothing() {
    for seed in [4, 5] {
        run_paused(|| async move {
            let cluster = Cluster::start(seed);
            cluster.commit_on_leader(5).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (leader, term) = cluster.leader().await;
            let logs: BTreeMap<NodeId, Vec<Entry>> = cluster
                .handles
                .keys()
                .map(|id| (*id, cluster.durable_log(*id)))
                .collect();

            attack(&cluster, seed, 1000, Terms::Stale).await;

            // The same leader of the same term, no election anywhere, and it still commits.
            assert_eq!(cluster.leader().await, (leader, term));
            for (id, handle) in &cluster.handles {
                let status = handle.status().await.expect("runs");
                assert_eq!(status.term, term, "n{id} changed term");
                let log = cluster.durable_log(*id);
                assert!(log.starts_with(&logs[id]), "n{id}: log changed");
            }
            let proposal = cluster.handles[&leader].propose(Bytes::from_static(b"after"));
            let result = tokio::time::timeout(Duration::from_secs(2), proposal).await;
            assert!(matches!(result, Ok(Ok(_))), "{result:?}");
            for handle in cluster.handles.values() {
                handle.shutdown();
            }
        });
    }
}
