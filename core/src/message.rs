//! The messages Raft nodes exchange (Figure 2, with the pre-vote extension of §9.6 of Ongaro's thesis).
//!
//! Every message and every reply carries the sender's term, so a receiver can adopt a newer term
//! and drop a reply that belongs to an older one.

use crate::membership::Membership;
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

/// A message between two Raft nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    RequestVote(RequestVote),
    RequestVoteResponse(RequestVoteResponse),
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    TimeoutNow(TimeoutNow),
    /// A node whose store started empty asks for the receiver's term (`crate::rejoin`).
    RejoinQuery(RejoinQuery),
    RejoinAnswer(RejoinAnswer),
}

impl Message {
    /// The term the sender put on the message.
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote(m) => m.term,
            Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::InstallSnapshotResponse(m) => m.term,
            Message::TimeoutNow(m) => m.term,
            Message::RejoinQuery(m) => m.term,
            Message::RejoinAnswer(m) => m.term,
        }
    }
}

/// RequestVote RPC (§5.2), or its pre-vote rehearsal when `pre_vote` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// The candidate's term; for a pre-vote, the term it *would* campaign in (its term + 1).
    pub term: Term,
    /// The id of the last entry in the candidate's log, to decide whether it is up to date (§5.4.1).
    pub last_log_id: LogId,
    /// A pre-vote changes nothing on the receiver: no term adopted, no vote recorded.
    pub pre_vote: bool,
    /// The election follows a [`TimeoutNow`] from the leader: voters set leader stickiness aside
    /// (thesis §3.10), since the leader itself asked for it.
    pub leadership_transfer: bool,
}

/// The leader tells an up-to-date voter to start an election at once (leadership transfer,
/// thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: Term,
}

/// A rejoining node's question: what is your current term, and your configuration?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinQuery {
    /// The asker's current term (informational: nobody adopts it).
    pub term: Term,
}

/// The answer to a [`RejoinQuery`]. Changes nothing on the asker's side but its floor; a leader
/// that answers stops counting what the asker acknowledged before (`leader_commit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinAnswer {
    /// The answerer's current term: at least any term in which it voted or acknowledged.
    pub term: Term,
    /// The answerer's configurations from the one in force at its commit index (committed) to
    /// the one in force in its log (the last), each with the id of the answerer's entry at its
    /// index (the term is that of its last entry where the log is compacted, at or before its
    /// commit): a rejoining node may know only older ones, and must reckon with every one that
    /// may still decide.
    pub configs: Vec<(LogId, crate::membership::ConfState)>,
    /// The last entry of the answerer's durable log: a rejoining node votes only for a
    /// candidate whose log is at least as up to date as the most up to date answer.
    pub last_log_id: LogId,
    /// `Some` when the answerer is the leader of `term`: its commit index when the question
    /// arrived. The question proves the asker's store is new, so from then on the leader counts
    /// only what the asker acknowledges afresh (answers to messages sent after it): every entry
    /// it committed with the old store's help is at or before this index.
    pub leader_commit: Option<LogIndex>,
    /// The answerer's commit index, with its entry's term: every log holding that entry holds
    /// the answerer's log up to there, and only entries of that term or later after it.
    pub commit: LogId,
}

/// The answer to a [`RequestVote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// The voter's current term; for a granted pre-vote, the term of the request.
    pub term: Term,
    pub vote_granted: bool,
    /// Echoes the request, so a late pre-vote answer is never counted as a vote.
    pub pre_vote: bool,
}

/// The most entries one AppendEntries may carry; [`crate::ReplicationConfig`]'s
/// `max_entries_per_message` may not exceed it.
pub const MAX_ENTRIES_PER_MESSAGE: u64 = 65_536;

/// Decodes an AppendEntries' entries, refusing more than [`MAX_ENTRIES_PER_MESSAGE`] as soon as
/// the sequence says so or its elements run past it.
fn entries_within_bound<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Entry>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Entry>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_ENTRIES_PER_MESSAGE} entries")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Entry>, A::Error> {
            let too_many = || {
                serde::de::Error::custom(format!(
                    "more than {MAX_ENTRIES_PER_MESSAGE} entries in one AppendEntries"
                ))
            };
            let hint = seq.size_hint().unwrap_or(0);
            if hint as u64 > MAX_ENTRIES_PER_MESSAGE {
                return Err(too_many());
            }
            let mut entries = Vec::with_capacity(hint.min(1024));
            while let Some(entry) = seq.next_element()? {
                if entries.len() as u64 == MAX_ENTRIES_PER_MESSAGE {
                    return Err(too_many());
                }
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// AppendEntries RPC (§5.3): replicates entries and doubles as the heartbeat (§5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    /// The leader's term.
    pub term: Term,
    /// `prevLogIndex`/`prevLogTerm`: the entry immediately preceding `entries`.
    pub prev_log_id: LogId,
    /// Consecutive entries starting at `prev_log_id.index + 1`; empty for a heartbeat. At most
    /// [`MAX_ENTRIES_PER_MESSAGE`]: a decoder refuses more (an entry of a few bytes on the wire
    /// takes a hundred or more in memory, so a frame's byte bound alone does not bound it).
    #[serde(deserialize_with = "entries_within_bound")]
    pub entries: Vec<Entry>,
    /// `leaderCommit`: the leader's commit index.
    pub leader_commit: LogIndex,
    /// The leader's commits do not wait for this follower now: enough other voters answer
    /// sooner (a spare follower, `crate::replication::spare`). The follower may hold the write of
    /// these entries a little, to make one sync of several writes (sparing a disk the others may
    /// share); its answer still leaves only once they are durable (Figure 2). A hint: ignoring
    /// it is always safe.
    pub sync_may_wait: bool,
    /// Chosen by the sender and echoed in the answer, so the leader knows which message an answer
    /// is for (the leader numbers its messages, `Raft::next_request_id`; leadership confirmation for reads
    /// relies on it).
    pub request_id: u64,
}

impl AppendEntries {
    /// The id of the last entry this message vouches for: the last entry sent, or the previous one.
    pub fn last_log_id(&self) -> LogId {
        self.entries
            .last()
            .map(Entry::log_id)
            .unwrap_or(self.prev_log_id)
    }
}

/// The answer to an [`AppendEntries`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// The follower's current term.
    pub term: Term,
    /// The `request_id` of the AppendEntries this answers.
    pub request_id: u64,
    pub outcome: AppendOutcome,
}

/// Whether the follower's log matched, and what it holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log now holds the leader's entries up to and including `matched`; it is durable.
    Success { matched: LogId },
    /// The follower holds no entry `prev_log_id` (the request's): the leader must go back.
    Reject {
        /// The request's `prev_log_index`, so the leader can recognise a stale rejection.
        rejected_prev_index: LogIndex,
        hint: ConflictHint,
    },
    /// The request's term is older than the follower's: the sender is not the leader any more.
    StaleTerm,
    /// The follower's store started empty and it is still rejoining (`crate::rejoin`): it
    /// vouches for nothing yet, so the leader counts it neither toward a commit nor as contact,
    /// and only learns where to go on: `hint.first_index` is the next entry it wants (past what
    /// it just appended, or where its log diverges, as for a rejection).
    Rejoining {
        rejected_prev_index: LogIndex,
        hint: ConflictHint,
    },
}

impl AppendEntriesResponse {
    /// Whether the answer vouches that the follower, in the answer's term, follows the sender:
    /// only then may it confirm the leader's leadership (for reads) or count as its contact.
    pub fn vouches(&self) -> bool {
        matches!(
            self.outcome,
            AppendOutcome::Success { .. } | AppendOutcome::Reject { .. }
        )
    }
}

/// What a follower tells a leader to skip back a whole term at a time (§5.3, "the follower can
/// include the term of the conflicting entry and the first index it stores for that term").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at `prev_log_index`, or `None` when its log is shorter.
    pub conflict_term: Option<Term>,
    /// The first index the follower holds for `conflict_term`, or its last index + 1 when shorter.
    pub first_index: LogIndex,
}

/// A message with its sender and receiver, as the rules emit and the transport carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
}

/// What identifies a snapshot and lets its receiver check it (§7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// `lastIncludedIndex`/`lastIncludedTerm`: the last entry the snapshot's state includes.
    pub last_included: LogId,
    /// The snapshot's size in bytes.
    pub size: u64,
    /// CRC-32 of the snapshot's bytes; the receiver installs nothing that does not match.
    pub checksum: u32,
    /// The configuration in force at `last_included` (§7: "the latest configuration as of
    /// lastIncludedIndex"), which the receiver adopts. Boxed: it keeps every [`Message`] small.
    pub membership: Box<Membership>,
}

/// InstallSnapshot RPC (§7), one chunk of it: the leader sends a follower that needs entries it no
/// longer has the state they produced, `data` being the bytes at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// The leader's term.
    pub term: Term,
    /// Echoed in the answer, so a late answer to an old chunk is recognised.
    pub request_id: u64,
    pub meta: SnapshotMeta,
    /// Where `data` goes in the snapshot.
    pub offset: u64,
    pub data: bytes::Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// The answer to an [`InstallSnapshot`] chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The follower's current term.
    pub term: Term,
    /// The `request_id` of the chunk this answers.
    pub request_id: u64,
    pub outcome: SnapshotOutcome,
}

/// What the follower did with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotOutcome {
    /// Send the chunk at this offset next (after a stored chunk; or to restart, or resume, a
    /// transfer whose chunk came out of order).
    NextOffset(u64),
    /// The snapshot is installed and durable: the follower's log now starts after `last_included`.
    Installed { last_included: LogId },
    /// The request's term is older than the follower's.
    StaleTerm,
}
