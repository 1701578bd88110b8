//! Membership changes and leadership transfer, as the service runs them: a retried change that
//! was already made succeeds, and the answers say what the configuration is now.

use super::{unavailable, Local, Runner};
use crate::protocol::{ErrorKind, KvResponse, MemberChange, MembersReport, ServiceError};
use raftor::Error;
use raftor_core::{ConfChange, ConfState, NodeId, Role};

impl Runner {
    /// The change as the rules take it, or the answer when there is nothing to change (the
    /// change was already made: a retried request succeeds) or it cannot be made.
    pub(super) fn plan_change(
        &self,
        change: &MemberChange,
        status: &raftor_actors::NodeStatus,
    ) -> Result<Option<ConfChange>, ServiceError> {
        let membership = &status.membership;
        let conf = &membership.conf;
        let id = NodeId(change.node());
        let bad = |message: String| ServiceError::new(ErrorKind::BadRequest, message);
        let not_member = || {
            ServiceError::new(
                ErrorKind::NotFound,
                format!("node {id} is not a member of the cluster"),
            )
        };
        match change {
            MemberChange::Add {
                raft_address,
                promote,
                ..
            } => {
                if !conf.contains(id) {
                    return Ok(Some(ConfChange::AddLearner {
                        id,
                        address: Some(raft_address.clone()),
                        promote_when_caught_up: *promote,
                    }));
                }
                let known = membership.addresses.get(&id).map_or("", String::as_str);
                if known != raft_address {
                    return Err(bad(format!(
                        "node {id} is already a member, at {known}; remove it first, or add the new node with an id never used before"
                    )));
                }
                if conf.is_voter(id) {
                    return if *promote {
                        Ok(None) // added, caught up and promoted already
                    } else {
                        Err(bad(format!("node {id} is already a voter")))
                    };
                }
                if *promote && !membership.promote_when_caught_up.contains(&id) {
                    return Err(bad(format!(
                        "node {id} is already a learner; promote it with POST /v1/members/{id}/promote"
                    )));
                }
                Ok(None)
            }
            MemberChange::Promote { .. } => {
                if conf.voters.contains(&id) {
                    Ok(None)
                } else if conf.contains(id) {
                    Ok(Some(ConfChange::AddVoter { id, address: None }))
                } else {
                    Err(not_member())
                }
            }
            MemberChange::Remove { .. } => {
                if conf.contains(id) {
                    Ok(Some(ConfChange::Remove { id }))
                } else {
                    Err(not_member())
                }
            }
        }
    }

    pub(super) async fn change_member(&self, change: &MemberChange) -> Local {
        let status = match self.node.status().await {
            Ok(status) => status,
            Err(_) => return Local::Done(unavailable("the node is shutting down")),
        };
        if status.role != Role::Leader {
            return Local::NotLeader(status.leader);
        }
        let change = match self.plan_change(change, &status) {
            Ok(Some(change)) => change,
            // Made already (a retry): answered once it settled, as the change itself is.
            Ok(None) => {
                return self
                    .answer_once_settled(self.node.wait_membership_settled().await)
                    .await
            }
            Err(error) => return Local::Done(KvResponse::Error(error)),
        };
        self.answer_once_settled(self.node.change_membership(vec![change]).await)
            .await
    }

    /// The answer to a change, once made and settled (or why not).
    async fn answer_once_settled(&self, outcome: Result<raftor_core::Membership, Error>) -> Local {
        let error = match outcome {
            Ok(_) => {
                return match self.node.status().await {
                    Ok(status) => {
                        Local::Done(KvResponse::Members(Box::new(self.members_report(&status))))
                    }
                    Err(_) => Local::Done(unavailable("the node is shutting down")),
                }
            }
            Err(error) => error,
        };
        let message = error.to_string();
        let answer = |kind: ErrorKind| {
            Local::Done(KvResponse::Error(ServiceError::new(kind, message.clone())))
        };
        match error {
            Error::NotLeader { leader } => Local::NotLeader(leader),
            // Committed, but not known settled: the next leader settles it within a heartbeat
            // of its election. Not retried (a removal made would be refused as unknown).
            Error::MembershipNotSettled { leader } => Local::Done(KvResponse::Error(
                ServiceError::new(ErrorKind::Unavailable, message.clone())
                    .with_leader(leader.and_then(|id| self.leader_info(id))),
            )),
            Error::Transferring { .. } | Error::NotReady => {
                Local::Wait(ServiceError::new(ErrorKind::Unavailable, message))
            }
            Error::MembershipChangeInProgress { .. } => answer(ErrorKind::Conflict),
            Error::InvalidMembership(_) => answer(ErrorKind::BadRequest),
            Error::Dropped | Error::Shutdown { in_flight: false } => answer(ErrorKind::Unavailable),
            _ => answer(ErrorKind::Unknown),
        }
    }

    pub(super) async fn transfer_leader(&self, to: NodeId) -> Local {
        match self.node.transfer_leadership(to).await {
            Ok(()) => {
                let term = self.node.leadership().borrow().term;
                Local::Done(KvResponse::Transferred {
                    leader: to.0,
                    term: term.0,
                })
            }
            Err(Error::NotLeader { leader }) => Local::NotLeader(leader),
            Err(error @ Error::NotAVoter(_)) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::BadRequest,
                error.to_string(),
            ))),
            Err(Error::TransferAbandoned { to, leader }) => {
                Local::Done(KvResponse::Error(
                    ServiceError::new(
                        ErrorKind::Unavailable,
                        format!("node {to} did not take over leadership in time; the transfer was abandoned"),
                    )
                    .with_leader(leader.and_then(|id| self.leader_info(id))),
                ))
            }
            Err(error) => Local::Done(KvResponse::Error(ServiceError::new(
                ErrorKind::Unavailable,
                error.to_string(),
            ))),
        }
    }

    pub(super) fn members_report(&self, status: &raftor_actors::NodeStatus) -> MembersReport {
        let conf = &status.membership.conf;
        let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|id| id.0).collect();
        MembersReport {
            node: status.id.0,
            term: status.term.0,
            leader: status.leader.and_then(|id| self.leader_info(id)),
            membership_index: status.membership_index.0,
            voters: ids(&conf.voters),
            learners: ids(&conf.learners),
            voters_outgoing: ids(&conf.voters_outgoing),
            learners_next: ids(&conf.learners_next),
            promote_when_caught_up: ids(&status.membership.promote_when_caught_up),
            joint: conf.is_joint(),
            addresses: status
                .membership
                .addresses
                .iter()
                .map(|(id, address)| (id.0, address.clone()))
                .collect(),
            transfer_target: status.transfer_target.map(|id| id.0),
        }
    }
}

/// What `id` is in `conf`, in words.
pub fn member_role(conf: &ConfState, id: NodeId) -> &'static str {
    if conf.voters.contains(&id) {
        "voter"
    } else if conf.learners_next.contains(&id) {
        "outgoing voter, then learner"
    } else if conf.voters_outgoing.contains(&id) {
        "outgoing voter"
    } else if conf.learners.contains(&id) {
        "learner"
    } else {
        "not a member"
    }
}

/// A membership change's ids and address are well formed.
pub(super) fn validate_change(change: &MemberChange) -> Result<(), ServiceError> {
    let bad = |message: String| Err(ServiceError::new(ErrorKind::BadRequest, message));
    if change.node() == 0 {
        return bad("node ids are positive integers".into());
    }
    if let MemberChange::Add { raft_address, .. } = change {
        let valid = raft_address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return bad(format!(
                "bad raft_address {raft_address:?}: expected host:port, e.g. 10.0.0.4:7001"
            ));
        }
    }
    Ok(())
}
