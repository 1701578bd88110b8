//! Log compaction and InstallSnapshot (§7), one rule per test.

use super::{entry, id};
use crate::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, InstallSnapshot, InstallSnapshotResponse,
    LogIndex, Message, NodeId, Raft, Role, SnapshotMeta, SnapshotOutcome, Term,
};
use bytes::Bytes;

/// Node 2 of 3 with `log`, in `term`, having committed up to `commit`.
fn follower(log: &[crate::Entry], term: u64, commit: u64) -> Raft {
    super::replication::node_with_log(2, 3, term, log, commit)
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_included: id(index, term),
        size: 3,
        checksum: 7,
        membership: Box::new(crate::Membership::bootstrap(
            &super::ids(3).into_iter().collect(),
            &Default::default(),
        )),
    }
}

fn chunk(term: u64, index: u64, snapshot_term: u64) -> Message {
    Message::InstallSnapshot(InstallSnapshot {
        term: Term(term),
        request_id: 9,
        meta: meta(index, snapshot_term),
        offset: 0,
        data: Bytes::from_static(b"abc"),
        done: true,
    })
}

fn responses(ready: &crate::Ready) -> Vec<Message> {
    ready.messages.iter().map(|m| m.message.clone()).collect()
}

#[test]
fn compaction_needs_what_is_committed_and_durable() {
    let log: Vec<_> = (1..=5).map(|i| entry(i, 1, "x")).collect();
    let mut raft = follower(&log, 1, 0);
    assert_eq!(raft.compact_log(LogIndex(3)), None, "nothing committed yet");
    raft.step(
        NodeId(1),
        Message::AppendEntries(AppendEntries {
            term: Term(1),
            prev_log_id: id(5, 1),
            entries: vec![],
            leader_commit: LogIndex(4),
            sync_may_wait: false,
            request_id: 1,
        }),
    );
    let _ = raft.take_ready();
    assert_eq!(raft.compact_log(LogIndex(5)), None, "5 is not committed");
    assert_eq!(raft.compact_log(LogIndex(3)), Some(id(3, 1)));
    assert_eq!(raft.log_start(), id(3, 1));
    assert_eq!(raft.take_ready().write.compact_to, Some(id(3, 1)));
    assert_eq!(raft.compact_log(LogIndex(2)), None, "already compacted");
    assert_eq!(raft.log_terms().term_at(LogIndex(2)), None);
    assert_eq!(raft.log_terms().term_at(LogIndex(4)), Some(Term(1)));
}

#[test]
fn a_chunk_goes_to_the_driver_and_a_whole_snapshot_replaces_a_conflicting_log() {
    // Uncommitted entries of term 1 that the new leader's snapshot (up to 6 in term 2) replaces.
    let log: Vec<_> = (1..=4).map(|i| entry(i, 1, "old")).collect();
    let mut raft = follower(&log, 1, 2);
    raft.step(NodeId(1), chunk(2, 6, 2));
    let ready = raft.take_ready();
    assert_eq!(raft.current_term(), Term(2), "the chunk's term is adopted");
    assert_eq!(raft.leader_id(), Some(NodeId(1)));
    assert_eq!(ready.snapshot_chunks.len(), 1, "handed to the driver");
    assert!(
        ready.messages.is_empty(),
        "no answer before it is installed"
    );

    raft.on_snapshot_received(NodeId(1), Term(2), 9, meta(6, 2));
    let ready = raft.take_ready();
    assert_eq!(ready.restore, Some(meta(6, 2)));
    assert_eq!(
        ready.write.truncate_from,
        Some(LogIndex(1)),
        "the old log goes"
    );
    assert_eq!(ready.write.compact_to, Some(id(6, 2)));
    assert_eq!(raft.commit_index(), LogIndex(6));
    assert_eq!(raft.applicable_index(), LogIndex(6));
    assert_eq!(raft.last_log_id(), id(6, 2));
    assert_eq!(
        responses(&ready),
        vec![Message::InstallSnapshotResponse(InstallSnapshotResponse {
            term: Term(2),
            request_id: 9,
            outcome: SnapshotOutcome::Installed {
                last_included: id(6, 2)
            },
        })]
    );
    // Replication goes on after the snapshot.
    raft.step(
        NodeId(1),
        Message::AppendEntries(AppendEntries {
            term: Term(2),
            prev_log_id: id(6, 2),
            entries: vec![entry(7, 2, "new")],
            leader_commit: LogIndex(7),
            sync_may_wait: false,
            request_id: 10,
        }),
    );
    let ready = raft.take_ready();
    assert_eq!(ready.write.entries, vec![entry(7, 2, "new")]);
    assert_eq!(raft.commit_index(), LogIndex(7));
}

#[test]
fn a_snapshot_the_log_holds_keeps_the_entries_after_it() {
    let log: Vec<_> = (1..=6).map(|i| entry(i, 1, "x")).collect();
    let mut raft = follower(&log, 1, 2);
    raft.step(NodeId(1), chunk(1, 4, 1));
    let _ = raft.take_ready();
    raft.on_snapshot_received(NodeId(1), Term(1), 9, meta(4, 1));
    let ready = raft.take_ready();
    assert_eq!(ready.write.truncate_from, None, "5 and 6 stay");
    assert_eq!(ready.write.compact_to, Some(id(4, 1)));
    assert_eq!(raft.last_log_id(), id(6, 1));
    assert_eq!(raft.commit_index(), LogIndex(4));
}

#[test]
fn a_snapshot_already_covered_by_the_commit_index_changes_nothing_but_is_acknowledged() {
    let log: Vec<_> = (1..=6).map(|i| entry(i, 1, "x")).collect();
    let mut raft = follower(&log, 1, 5);
    raft.step(NodeId(1), chunk(1, 4, 1));
    let _ = raft.take_ready();
    raft.on_snapshot_received(NodeId(1), Term(1), 9, meta(4, 1));
    let ready = raft.take_ready();
    assert_eq!(ready.restore, None);
    assert!(ready.write.is_empty());
    assert_eq!(raft.commit_index(), LogIndex(5), "never backwards");
    assert_eq!(responses(&ready).len(), 1);
}

#[test]
fn stale_transfers_are_refused_or_ignored() {
    let mut raft = follower(&[entry(1, 3, "x")], 3, 1);
    raft.step(NodeId(1), chunk(2, 10, 2));
    let ready = raft.take_ready();
    assert!(ready.snapshot_chunks.is_empty(), "an old leader's chunk");
    assert_eq!(
        responses(&ready),
        vec![Message::InstallSnapshotResponse(InstallSnapshotResponse {
            term: Term(3),
            request_id: 9,
            outcome: SnapshotOutcome::StaleTerm,
        })]
    );
    // A transfer completed after the term moved on installs nothing.
    raft.on_snapshot_received(NodeId(1), Term(2), 9, meta(10, 2));
    let ready = raft.take_ready();
    assert!(ready.is_empty(), "{ready:?}");
    assert_eq!(raft.role(), Role::Follower);
}

#[test]
fn an_append_reaching_into_the_snapshot_is_checked_from_the_snapshot_on() {
    let mut raft = follower(&[], 1, 0);
    raft.step(NodeId(1), chunk(1, 5, 1));
    let _ = raft.take_ready();
    raft.on_snapshot_received(NodeId(1), Term(1), 9, meta(5, 1));
    let _ = raft.take_ready();
    // The leader's next message still starts at 3 (sent before it knew of the install).
    raft.step(
        NodeId(1),
        Message::AppendEntries(AppendEntries {
            term: Term(1),
            prev_log_id: id(2, 1),
            entries: (3..=7).map(|i| entry(i, 1, "x")).collect(),
            leader_commit: LogIndex(7),
            sync_may_wait: false,
            request_id: 11,
        }),
    );
    let ready = raft.take_ready();
    assert_eq!(
        ready.write.entries,
        vec![entry(6, 1, "x"), entry(7, 1, "x")],
        "only what follows the snapshot"
    );
    assert_eq!(
        responses(&ready),
        vec![Message::AppendEntriesResponse(AppendEntriesResponse {
            term: Term(1),
            request_id: 11,
            outcome: AppendOutcome::Success { matched: id(7, 1) },
        })]
    );
}
