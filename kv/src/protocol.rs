//! The key-value service's requests and answers, shared by the HTTP API, the native TCP protocol
//! (bincode in `ClientRequest`/`ClientResponse` frames) and forwarding between nodes.

use crate::auth::Role;
use crate::store::{KeySet, KvOutcome, LeaseView, RangePage, RangeQuery, Session, Txn};
use crate::watch::{WatchBatch, WatchEnd};
use bytes::Bytes;
use raftor_core::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use raftor::Consistency;

/// A request to the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    Put {
        key: String,
        value: Bytes,
        session: Option<Session>,
    },
    Delete {
        key: String,
        session: Option<Session>,
    },
    Cas {
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
        session: Option<Session>,
    },
    Get {
        key: String,
        consistency: Consistency,
    },
    Status,
    /// Take a snapshot on the node that receives this (never forwarded).
    Snapshot,
    /// The membership as the node that receives this sees it (never forwarded).
    Members,
    /// Change the membership (on the leader).
    ChangeMember(MemberChange),
    /// Hand leadership to node `to` (on the leader); answered once `to` leads.
    TransferLeader {
        to: u64,
    },
    /// A page of the keys of a set, with their revisions.
    Range {
        query: RangeQuery,
        consistency: Consistency,
    },
    /// A transaction (answered [`KvResponse::Written`] with [`KvOutcome::Txn`]).
    Txn {
        txn: Txn,
        session: Option<Session>,
    },
    /// Delete every key of a set (answered with [`KvOutcome::Txn`]: one `Deleted { count }`).
    DeleteRange {
        keys: KeySet,
        session: Option<Session>,
    },
    /// One long poll of a watch, on the node that receives it (never forwarded).
    Watch(WatchRequest),
    /// Grant a lease ([`KvOutcome::LeaseGranted`]).
    LeaseGrant {
        ttl_ms: u64,
        session: Option<Session>,
    },
    /// End a lease and delete its keys ([`KvOutcome::LeaseRevoked`]).
    LeaseRevoke {
        id: u64,
        session: Option<Session>,
    },
    /// Restart a lease's TTL (on the leader).
    LeaseKeepAlive {
        id: u64,
    },
    /// One lease, with the time it has left (on the leader).
    LeaseInfo {
        id: u64,
    },
    /// Every lease (on the leader).
    Leases,
}

/// One long poll of a watch: the changes of `keys` from index `start` (inclusive; `None`: from
/// the next change), answered as soon as there are some, or after `wait_ms` with none (which
/// tells the index the watcher is current to). The next poll starts at the answer's `through`
/// plus one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub keys: KeySet,
    pub start: Option<u64>,
    pub wait_ms: u64,
}

/// The longest a watch poll may wait.
pub const MAX_WATCH_WAIT_MS: u64 = 60_000;
/// The most compares, and the most operations in each branch, of one transaction.
pub const MAX_TXN_OPS: usize = 128;
/// The most `get`s in each branch of a transaction: its answer (values included) is kept in the
/// client's session for retries, and goes in snapshots.
pub const MAX_TXN_GETS: usize = 8;

/// The answer to a watch poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchAnswer {
    Batch(WatchBatch),
    /// The watch cannot go on from where it asked ([`WatchEnd`] says why and what to do).
    Ended(WatchEnd),
}

impl KvRequest {
    /// The role a client needs for this request.
    pub fn required_role(&self) -> Role {
        match self {
            KvRequest::Get { .. }
            | KvRequest::Status
            | KvRequest::Members
            | KvRequest::Range { .. }
            | KvRequest::Watch(_)
            | KvRequest::LeaseInfo { .. }
            | KvRequest::Leases => Role::Read,
            KvRequest::Put { .. }
            | KvRequest::Delete { .. }
            | KvRequest::Cas { .. }
            | KvRequest::Txn { .. }
            | KvRequest::DeleteRange { .. }
            | KvRequest::LeaseGrant { .. }
            | KvRequest::LeaseRevoke { .. }
            | KvRequest::LeaseKeepAlive { .. } => Role::ReadWrite,
            KvRequest::Snapshot | KvRequest::ChangeMember(_) | KvRequest::TransferLeader { .. } => {
                Role::Admin
            }
        }
    }
}

/// One membership change, as `POST /v1/members`, `raftor members` and [`crate::Client`] ask for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add node `id` as a learner at `raft_address`; with `promote`, the leader makes it a voter
    /// once it has caught up. Asking again for a node that is already so added (or, with
    /// `promote`, already promoted) at the same address succeeds and changes nothing.
    Add {
        id: u64,
        raft_address: String,
        promote: bool,
    },
    /// Make the learner `id` a voter.
    Promote { id: u64 },
    /// Remove node `id`, voter or learner.
    Remove { id: u64 },
}

impl MemberChange {
    /// The node the change is about.
    pub fn node(&self) -> u64 {
        match self {
            MemberChange::Add { id, .. }
            | MemberChange::Promote { id }
            | MemberChange::Remove { id } => *id,
        }
    }
}

impl KvRequest {
    /// Writes, membership changes, leadership transfers and linearizable or lease reads must run
    /// on the leader.
    pub fn needs_leader(&self) -> bool {
        match self {
            KvRequest::Get { consistency, .. } | KvRequest::Range { consistency, .. } => {
                *consistency != Consistency::Local
            }
            KvRequest::Status | KvRequest::Snapshot | KvRequest::Members | KvRequest::Watch(_) => {
                false
            }
            _ => true,
        }
    }

    /// Whether the request may change something (so a lost answer leaves its outcome unknown).
    pub fn changes_state(&self) -> bool {
        self.needs_leader()
            && !matches!(
                self,
                KvRequest::Get { .. }
                    | KvRequest::Range { .. }
                    | KvRequest::LeaseKeepAlive { .. }
                    | KvRequest::LeaseInfo { .. }
                    | KvRequest::Leases
            )
    }

    /// Whether this is a key-value write (counted in the write metrics).
    pub fn is_kv_write(&self) -> bool {
        matches!(
            self,
            KvRequest::Put { .. }
                | KvRequest::Delete { .. }
                | KvRequest::Cas { .. }
                | KvRequest::Txn { .. }
                | KvRequest::DeleteRange { .. }
        )
    }

    /// The exactly-once session a write carries, if any.
    pub fn session(&self) -> Option<Session> {
        match self {
            KvRequest::Put { session, .. }
            | KvRequest::Delete { session, .. }
            | KvRequest::Cas { session, .. }
            | KvRequest::Txn { session, .. }
            | KvRequest::DeleteRange { session, .. }
            | KvRequest::LeaseGrant { session, .. }
            | KvRequest::LeaseRevoke { session, .. } => *session,
            _ => None,
        }
    }

    /// Give a write another session (a request without one is left as it is).
    pub fn set_session(&mut self, new: Session) {
        match self {
            KvRequest::Put { session, .. }
            | KvRequest::Delete { session, .. }
            | KvRequest::Cas { session, .. }
            | KvRequest::Txn { session, .. }
            | KvRequest::DeleteRange { session, .. }
            | KvRequest::LeaseGrant { session, .. }
            | KvRequest::LeaseRevoke { session, .. } => *session = Some(new),
            _ => {}
        }
    }
}

/// A request as it travels on the native protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Set when a node forwards a client's request to the leader; a forwarded request is never
    /// forwarded again.
    pub forwarded_by: Option<NodeId>,
    pub request: KvRequest,
}

/// An answer of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The write committed and was applied at `index`. Some outcomes mean the state machine
    /// refused it and changed nothing: [`KvOutcome::StaleSequence`] (superseded by a later write
    /// of the same client) and [`KvOutcome::SessionExpired`] (the client's session was forgotten;
    /// start a new one).
    Written {
        index: u64,
        outcome: KvOutcome,
    },
    /// The value read (`None`: the key is absent).
    Value {
        value: Option<Bytes>,
    },
    Status(Box<StatusReport>),
    Snapshot(SnapshotReport),
    Error(ServiceError),
    /// The membership (after the change, for a change).
    Members(Box<MembersReport>),
    /// Leadership moved to `leader`, in `term`.
    Transferred {
        leader: u64,
        term: u64,
    },
    /// A page of a range read.
    Range(RangePage),
    /// A watch poll's answer.
    Watch(WatchAnswer),
    /// One lease (after a keep-alive, its new time left).
    Lease(LeaseView),
    /// Every lease (without their keys).
    Leases(Vec<LeaseView>),
}

/// The membership as one node sees it (`GET /v1/members`, `raftor members list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReport {
    /// The node that answered.
    pub node: u64,
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<LeaderInfo>,
    /// The log index of the configuration entry in force (0: the bootstrap configuration).
    pub membership_index: u64,
    /// The voters (of the incoming configuration, while joint).
    pub voters: Vec<u64>,
    /// Members that receive the log but do not vote.
    pub learners: Vec<u64>,
    /// While joint: the outgoing voters (decisions need a majority of them too); else empty.
    pub voters_outgoing: Vec<u64>,
    /// While joint: outgoing voters that become learners when the cluster leaves it.
    pub learners_next: Vec<u64>,
    /// Learners the leader promotes once they have caught up.
    pub promote_when_caught_up: Vec<u64>,
    /// Whether the configuration is joint.
    pub joint: bool,
    /// Every member's Raft address.
    pub addresses: BTreeMap<u64, String>,
    /// On the leader: the node it is handing leadership to, if any.
    pub transfer_target: Option<u64>,
}

/// A snapshot a node took on request (`POST /v1/admin/snapshot`, `raftor snapshot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The node that took it.
    pub node: u64,
    /// The last log entry it includes.
    pub index: u64,
    pub term: u64,
    /// Its size on disk.
    pub bytes: u64,
}

/// Why a request failed, with what the client needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// The leader, when known.
    pub leader: Option<LeaderInfo>,
}

/// The classes of failure, each with an honest HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// 400: the request is malformed; nothing happened.
    BadRequest,
    /// 413: the value is over the configured limit; nothing happened.
    TooLarge,
    /// 503: no leader, or shutting down; the write did not happen and may be retried.
    Unavailable,
    /// 504: the outcome is unknown; the write may or may not have committed.
    Unknown,
    /// 409: another membership change is in progress; nothing happened, retry once it is done.
    Conflict,
    /// 404: the request names a node that is not a member; nothing happened.
    NotFound,
    /// 503 with `Retry-After`: the leader has more writes in flight than it commits promptly
    /// (`--max-pending-write-bytes`), or an HTTP answer found no room within its wait (the node
    /// holds as many answers as it may for clients that do not read them); nothing happened.
    /// Retry after a short wait.
    Overloaded,
    /// 401: no credential, or one that is not valid (unknown, malformed or expired token).
    Unauthenticated,
    /// 403: the credential's role does not allow this.
    Forbidden,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unavailable => 503,
            ErrorKind::Unknown => 504,
            ErrorKind::Conflict => 409,
            ErrorKind::NotFound => 404,
            ErrorKind::Overloaded => 503,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
        }
    }
}

impl ServiceError {
    /// The answer to a request refused by [`crate::auth`].
    pub fn refused(refusal: &crate::auth::Refusal) -> ServiceError {
        let kind = match refusal {
            crate::auth::Refusal::Unauthenticated(_) => ErrorKind::Unauthenticated,
            crate::auth::Refusal::Forbidden { .. } => ErrorKind::Forbidden,
        };
        ServiceError::new(kind, refusal.to_string())
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            message: message.into(),
            leader: None,
        }
    }

    pub fn with_leader(mut self, leader: Option<LeaderInfo>) -> ServiceError {
        self.leader = leader;
        self
    }
}

/// Where the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub id: u64,
    /// Its Raft (and native client protocol) address.
    pub raft_addr: String,
}

/// What `GET /v1/status` and `raftor status` show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<LeaderInfo>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// The members of the configuration in force on this node, with their roles.
    pub members: Vec<Member>,
    /// The log index of that configuration's entry (0: the bootstrap configuration).
    #[serde(default)]
    pub membership_index: u64,
    /// Whether that configuration is joint (voters are being changed).
    #[serde(default)]
    pub joint: bool,
    /// On the leader: the node it is handing leadership to, if any.
    #[serde(default)]
    pub transfer_target: Option<u64>,
    /// On the leader: each peer's (voters' and learners') replication progress.
    pub peers: BTreeMap<u64, PeerProgress>,
    /// Log entries this node appended since it started (as leader or follower).
    #[serde(default)]
    pub log_entries_appended: u64,
    /// Payload bytes of those entries.
    #[serde(default)]
    pub log_bytes_appended: u64,
    /// Synced log writes made on the node's own thread (small batches while lightly loaded).
    #[serde(default)]
    pub log_writes_inline: u64,
    /// Log writes handed to the log store's thread (those queued during a sync share the next).
    #[serde(default)]
    pub log_writes_handed_off: u64,
    /// Reads of log entries (to send or to apply) the entry cache could not serve: each went to
    /// the log store.
    #[serde(default)]
    pub entry_cache_misses: u64,
    /// The node process's resident memory, where the platform tells it (Linux `/proc`).
    #[serde(default)]
    pub resident_memory_bytes: Option<u64>,
    /// Whether this node's store holds every promise it made: `member`; or, for a store that
    /// started empty (a new node, or one that lost its data), `rejoining` (asking the voters for
    /// their terms; votes for nobody) then `catching-up ...` (see README, "A node that lost its
    /// data").
    #[serde(default)]
    pub standing: String,
    /// The last compacted entry's index: the log holds the entries after it.
    #[serde(default)]
    pub log_start_index: u64,
    /// The newest snapshot on disk, if any: its index and size in bytes.
    #[serde(default)]
    pub snapshot: Option<SnapshotOnDisk>,
    /// Client writes this node answered since it started, and the sum of their latencies in
    /// microseconds (received to answered): the mean over an interval is the difference of sums
    /// over the difference of counts.
    #[serde(default)]
    pub writes_answered: u64,
    #[serde(default)]
    pub write_micros_sum: u64,
    /// Watchers following live changes on this node (HTTP streams, and native polls under way).
    #[serde(default)]
    pub watchers: u64,
}

/// A snapshot on a node's disk, as its status reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOnDisk {
    pub index: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    /// `voter`, `learner`, or while joint `outgoing voter` (votes in the outgoing half only) and
    /// `outgoing voter, then learner`.
    #[serde(default)]
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    pub match_index: u64,
    pub next_index: Option<u64>,
    /// Milliseconds since the peer last answered the leader; `None` if not yet this term.
    pub since_contact_ms: Option<u64>,
    /// Payload bytes sent to the peer and not yet acknowledged.
    #[serde(default)]
    pub inflight_bytes: u64,
    /// The byte budget of what may be in flight to the peer; it adapts to how fast the peer
    /// acknowledges (README, "Architecture", Replication).
    #[serde(default)]
    pub budget_bytes: u64,
    /// How long the peer takes to acknowledge, smoothed; `None` if not measured yet this term.
    #[serde(default)]
    pub ack_latency_ms: Option<u64>,
}

/// Encodes a value for the native protocol (bincode; plain data cannot fail to encode).
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(bincode::serialize(value).unwrap_or_default())
}

/// Decodes a native protocol message, bounded so hostile bytes cannot allocate without limit.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64 + 1024)
        .deserialize(bytes)
        .map_err(|error| format!("malformed message: {error}"))
}
