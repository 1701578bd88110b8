//! The node's status and snapshot reports, as the protocol carries them.

use super::{member_role, unavailable, Runner};
use crate::protocol::{
    KvResponse, Member, PeerProgress, SnapshotOnDisk, SnapshotReport, StatusReport,
};
use raftor_core::{Role, Standing};
use std::collections::BTreeMap;

impl Runner {
    pub(super) async fn snapshot(&self) -> KvResponse {
        match self.node.snapshot().await {
            Ok(meta) => KvResponse::Snapshot(SnapshotReport {
                node: self.id.0,
                index: meta.last_included.index.0,
                term: meta.last_included.term.0,
                bytes: meta.size,
            }),
            Err(error) => unavailable(&format!("no snapshot taken: {error}")),
        }
    }

    pub(super) async fn status(&self) -> KvResponse {
        match self.node.status().await {
            Ok(status) => KvResponse::Status(Box::new(self.report(status))),
            Err(_) => unavailable("the node is shutting down"),
        }
    }

    pub(super) fn report(&self, status: raftor_actors::NodeStatus) -> StatusReport {
        let peers = if status.role == Role::Leader {
            status
                .membership
                .conf
                .members()
                .iter()
                .filter(|id| **id != status.id)
                .map(|id| {
                    let flow = status.flow.get(id);
                    let progress = PeerProgress {
                        match_index: status.matched.get(id).map_or(0, |m| m.0),
                        next_index: status.next_index.get(id).map(|n| n.0),
                        since_contact_ms: status
                            .since_contact
                            .get(id)
                            .copied()
                            .flatten()
                            .map(|d| d.as_millis() as u64),
                        inflight_bytes: flow.map_or(0, |f| f.inflight_bytes as u64),
                        budget_bytes: flow.map_or(0, |f| f.budget_bytes as u64),
                        ack_latency_ms: flow
                            .and_then(|f| f.ack_latency)
                            .map(|d| d.as_millis() as u64),
                    };
                    (id.0, progress)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        StatusReport {
            id: status.id.0,
            role: status.role.as_str().to_owned(),
            term: status.term.0,
            leader: status.leader.and_then(|id| self.leader_info(id)),
            commit_index: status.commit_index.0,
            applied_index: status.applied_index.0,
            last_log_index: status.last_log_id.index.0,
            last_log_term: status.last_log_id.term.0,
            members: status
                .membership
                .conf
                .members()
                .into_iter()
                .map(|id| Member {
                    id: id.0,
                    raft_addr: self.address_of(id).unwrap_or_default(),
                    role: member_role(&status.membership.conf, id).to_owned(),
                })
                .collect(),
            membership_index: status.membership_index.0,
            joint: status.membership.conf.is_joint(),
            transfer_target: status.transfer_target.map(|id| id.0),
            peers,
            log_entries_appended: status.log_entries_appended,
            log_bytes_appended: status.log_bytes_appended,
            log_writes_inline: status.log_writes_inline,
            entry_cache_misses: status.entry_cache_misses,
            log_writes_handed_off: status.log_writes_handed_off,
            resident_memory_bytes: crate::metrics::resident_memory_bytes(),
            standing: match status.standing {
                Standing::CatchingUp {
                    floor,
                    floor_log,
                    floor_leader_commit,
                } => {
                    let or_leader = match floor_leader_commit {
                        Some(commit) => format!(
                            " or the term-{floor} leader's log up to its commit index {commit} reported"
                        ),
                        None => String::new(),
                    };
                    format!(
                        "catching-up: votes only after term {floor} for logs at least as up to date as {floor_log}, until it holds an entry of a later term{or_leader}"
                    )
                }
                other => other.as_str().to_owned(),
            },
            log_start_index: status.log_start.index.0,
            snapshot: status.snapshot.map(|snapshot| SnapshotOnDisk {
                index: snapshot.last_included.index.0,
                bytes: snapshot.bytes,
            }),
            writes_answered: self.metrics.writes_answered(),
            write_micros_sum: (self.metrics.write_seconds_sum() * 1e6) as u64,
            watchers: self.hub.active() as u64,
        }
    }
}
