//! The key-value service's requests and answers, shared by the HTTP API, the native TCP protocol
//! (bincode in `ClientRequest`/`ClientResponse` frames) and forwarding between nodes.

use crate::kv::{KvOutcome, Session};
use bytes::Bytes;
use raftor_core::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// ReadIndex on the leader: sees every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// The leader answers from its lease (no confirmation round while the lease is fresh).
    Lease,
    /// This node's applied state: possibly stale, never uncommitted.
    Local,
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(text: &str) -> Result<Consistency, String> {
        match text {
            "linearizable" => Ok(Consistency::Linearizable),
            "lease" => Ok(Consistency::Lease),
            "local" => Ok(Consistency::Local),
            other => Err(format!(
                "unknown consistency '{other}' (linearizable, lease or local)"
            )),
        }
    }
}

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
}

impl KvRequest {
    /// Writes and linearizable or lease reads must run on the leader.
    pub fn needs_leader(&self) -> bool {
        match self {
            KvRequest::Get { consistency, .. } => *consistency != Consistency::Local,
            KvRequest::Status | KvRequest::Snapshot => false,
            _ => true,
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
    /// The write committed and was applied at `index`.
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
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unavailable => 503,
            ErrorKind::Unknown => 504,
        }
    }
}

impl ServiceError {
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
    pub members: Vec<Member>,
    /// On the leader: each peer's replication progress.
    pub peers: BTreeMap<u64, PeerProgress>,
    /// Log entries this node appended since it started (as leader or follower).
    #[serde(default)]
    pub log_entries_appended: u64,
    /// Payload bytes of those entries.
    #[serde(default)]
    pub log_bytes_appended: u64,
    /// The node process's resident memory, where the platform tells it (Linux `/proc`).
    #[serde(default)]
    pub resident_memory_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    pub match_index: u64,
    pub next_index: Option<u64>,
    /// Milliseconds since the peer last answered the leader; `None` if not yet this term.
    pub since_contact_ms: Option<u64>,
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
