//! The knobs of the rules, in ticks: the actor that drives the rules decides how long a tick is.

use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Configuration of one node's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id; one of `voters` unless `voters` is empty.
    pub id: NodeId,
    /// The bootstrap configuration: every voter of a new cluster, this node included (§5.1). Used
    /// only until the log (or a snapshot) holds a configuration, which then wins (§6). Empty for a
    /// node that joins an existing cluster: it learns the configuration from the leader, and
    /// neither campaigns nor votes for anyone until it does.
    pub voters: BTreeSet<NodeId>,
    /// How to reach each bootstrap voter, opaque to the rules (for raftor: `host:port`); carried in
    /// configuration entries so that members added later learn it.
    pub addresses: BTreeMap<NodeId, String>,
    /// The leader promotes a learner added with `promote_when_caught_up` once the learner's log is
    /// within this many entries of its own.
    pub promote_lag: u64,
    /// The election timeout is drawn uniformly from `election_ticks_min..election_ticks_max` each time
    /// the timer is reset, so that split votes resolve (§5.2). Also the check-quorum period.
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    /// A leader sends a heartbeat every this many ticks; must be well below `election_ticks_min`.
    pub heartbeat_ticks: u32,
    /// Rehearse an election before starting it (thesis §9.6), so a node cut off from the cluster
    /// does not bump its term and depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down (thesis
    /// §6.2), and a node that hears from a leader, or that just started, refuses other candidates
    /// for a minimum election timeout (leader stickiness; lease reads count on it).
    pub check_quorum: bool,
    /// Flow control of the leader's replication to each peer.
    pub replication: ReplicationConfig,
}

/// How much a leader sends one peer at a time (§5.3's pipelining, bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The most entries one AppendEntries carries (at least 1, at most
    /// [`crate::message::MAX_ENTRIES_PER_MESSAGE`]). The driver may carry fewer, at its own
    /// bound on a message's bytes.
    pub max_entries_per_message: u64,
    /// The most AppendEntries in flight to one peer once its match point is known (at least 1).
    pub max_inflight: usize,
    /// The most payload bytes in flight to one peer; one message may always leave (at least 1).
    pub max_inflight_bytes: usize,
    /// Nagle's algorithm (RFC 896) for AppendEntries: while the newest message in flight to a
    /// peer carries fewer payload bytes than this, the next leaves only once it is full
    /// (`max_entries_per_message` entries); small entries proposed meanwhile wait and leave
    /// together when the answer comes. A follower syncs each message it is sent, so a burst of
    /// small messages costs a sync, a wake-up and an answer apiece: under 64 clients this cut the
    /// messages to a third and the followers' CPU per write by 15–20% (BENCHMARKS.md, issue 22).
    /// A bulk transfer (a message in flight at least this large or cut short at the driver's
    /// byte bound, or full messages) still pipelines. 0: every message pipelines.
    pub coalesce_below_bytes: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            max_entries_per_message: 1024,
            max_inflight: 64,
            max_inflight_bytes: 32 * 1024 * 1024,
            coalesce_below_bytes: 64 * 1024,
        }
    }
}

impl RaftConfig {
    /// A configuration with raftor's defaults (with 10 ms ticks: 150–300 ms elections, 50 ms heartbeats).
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> RaftConfig {
        RaftConfig {
            id,
            voters: voters.into_iter().collect(),
            addresses: BTreeMap::new(),
            promote_lag: 64,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            replication: ReplicationConfig::default(),
        }
    }

    /// Checks the invariants stated on the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return Err(ConfigError::Timing(format!(
                "heartbeat ({} ticks) must be at least 1 and below the election timeout ({} ticks)",
                self.heartbeat_ticks, self.election_ticks_min
            )));
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError::Timing(format!(
                "election timeout range {}..{} ticks is empty",
                self.election_ticks_min, self.election_ticks_max
            )));
        }
        let replication = &self.replication;
        if replication.max_entries_per_message == 0
            || replication.max_entries_per_message > crate::message::MAX_ENTRIES_PER_MESSAGE
            || replication.max_inflight == 0
            || replication.max_inflight_bytes == 0
        {
            return Err(ConfigError::Replication(format!("{replication:?}")));
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node {0} is not among the voters")]
    NotAVoter(NodeId),
    #[error("bad timing: {0}")]
    Timing(String),
    #[error("bad replication limits (each must be at least 1, and at most 65536 entries per message): {0}")]
    Replication(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message may not be ordered to carry more entries than a peer's decoder accepts.
    #[test]
    fn entries_per_message_are_bounded_by_what_a_peer_decodes() {
        let mut config = RaftConfig::new(NodeId(1), [NodeId(1)]);
        config.replication.max_entries_per_message = crate::message::MAX_ENTRIES_PER_MESSAGE;
        assert_eq!(config.validate(), Ok(()));
        config.replication.max_entries_per_message += 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Replication(_))
        ));
        config.replication.max_entries_per_message = 0;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Replication(_))
        ));
    }
}
