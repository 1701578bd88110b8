//! Changing the members and handing leadership over, on the leader (thesis §4, §3.10).

use crate::error::Error;
use crate::raft_node::RaftNode;
use crate::state_machine::StateMachine;
use raftor_actors::{MembershipChangeError, TransferLeaderError};
#[cfg(doc)]
use raftor_core::RaftConfig;
use raftor_core::{ConfChange, Membership, NodeId};

impl<M: StateMachine> RaftNode<M> {
    /// Change the membership (on the leader): any list of [`ConfChange`]s at once. A change of at
    /// most one voter is made directly; a larger one goes through a joint configuration (every
    /// decision needs a majority of the old voters and of the new), which the leader leaves by
    /// itself. Resolves once the change is committed and applied here (for a joint change, once
    /// the cluster has left the joint configuration), with the membership then in force.
    ///
    /// One change at a time: while one is unfinished, another fails with
    /// [`Error::MembershipChangeInProgress`]. A leader just elected makes none until it has
    /// committed an entry of its term ([`Error::NotReady`]); one handing over leadership makes
    /// none ([`Error::Transferring`]); a change that makes no sense (a node that is not a member,
    /// one already in that role, a new node without an address, no voter left) is
    /// [`Error::InvalidMembership`]. In all these cases nothing was done. [`Error::Timeout`]
    /// means the change was appended and may still complete.
    ///
    /// Removing the leader itself is allowed: it leads until the change commits, then steps down,
    /// and the remaining voters elect a new leader.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// use raftor::{ConfChange, NodeId};
    ///
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// // Replace voter 3 by voter 4 (already a learner that has caught up), in one joint change.
    /// let membership = leader
    ///     .change_membership(vec![
    ///         ConfChange::AddVoter { id: NodeId(4), address: None },
    ///         ConfChange::Remove { id: NodeId(3) },
    ///     ])
    ///     .await?;
    /// assert!(membership.conf.voters.contains(&NodeId(4)));
    /// # Ok(()) }
    /// ```
    pub async fn change_membership(&self, changes: Vec<ConfChange>) -> Result<Membership, Error> {
        self.check_running()?;
        let timeout = self.inner.request_timeout;
        let outcome = self.inner.node.change_membership(changes, timeout).await;
        Self::membership_outcome(outcome, timeout)
    }

    /// On the leader: resolves once the configuration in force is committed, not joint, and
    /// settled: a majority of its voters hold its commit, so a node it removed may be stopped
    /// (a node that lost its data learns the change from any of them). What
    /// [`change_membership`](Self::change_membership) waits for; ask it of a new leader after
    /// [`Error::MembershipNotSettled`]. [`Error::NotLeader`] elsewhere.
    pub async fn wait_membership_settled(&self) -> Result<Membership, Error> {
        self.check_running()?;
        let timeout = self.inner.request_timeout;
        let outcome = self.inner.node.wait_settled(timeout).await;
        Self::membership_outcome(outcome, timeout)
    }

    fn membership_outcome(
        outcome: Result<Membership, MembershipChangeError>,
        timeout: std::time::Duration,
    ) -> Result<Membership, Error> {
        match outcome {
            Ok(membership) => Ok(membership),
            Err(error) => Err(match error {
                MembershipChangeError::NotLeader { leader } => Error::NotLeader { leader },
                MembershipChangeError::Unsettled { leader } => {
                    Error::MembershipNotSettled { leader }
                }
                MembershipChangeError::Transferring { to } => Error::Transferring { to },
                MembershipChangeError::InProgress { index } => {
                    Error::MembershipChangeInProgress { index }
                }
                MembershipChangeError::NotReady => Error::NotReady,
                MembershipChangeError::Invalid(reason) => Error::InvalidMembership(reason),
                MembershipChangeError::Dropped => Error::Dropped,
                MembershipChangeError::Timeout => Error::Timeout(timeout),
                MembershipChangeError::Shutdown => Error::Shutdown { in_flight: true },
            }),
        }
    }

    /// Add `id` as a learner at Raft address `raft_address` (`host:port`): it receives the log
    /// (a snapshot first if the leader has compacted what it needs) but does not vote, so the
    /// cluster's quorum is unchanged while it catches up. Promote it with [`promote`](Self::promote),
    /// or use [`add_learner_promoting`](Self::add_learner_promoting). Start the new node with
    /// [`RaftNodeBuilder::join`]. On the leader; see [`change_membership`](Self::change_membership)
    /// for the errors.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # use raftor::NodeId;
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// leader.add_learner(NodeId(4), "10.0.0.4:7001").await?;
    /// // ... once its status shows it caught up:
    /// let membership = leader.promote(NodeId(4)).await?;
    /// assert!(membership.conf.voters.contains(&NodeId(4)));
    /// # Ok(()) }
    /// ```
    pub async fn add_learner(
        &self,
        id: NodeId,
        raft_address: impl Into<String>,
    ) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::add_learner(id, raft_address, false)])
            .await
    }

    /// Add `id` as a learner at `raft_address`, to be promoted to voter by the leader once its log
    /// is within [`RaftConfig::promote_lag`] entries of the leader's. Resolves once the learner is
    /// added (not promoted): watch [`membership`](Self::membership) for the promotion.
    pub async fn add_learner_promoting(
        &self,
        id: NodeId,
        raft_address: impl Into<String>,
    ) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::add_learner(id, raft_address, true)])
            .await
    }

    /// Make the learner `id` a voter. Promote a learner once it has caught up (its match index on
    /// the leader's [`status`](Self::status) near the leader's log): until then a voter that
    /// cannot acknowledge entries weakens the quorum.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::promote(id)]).await
    }

    /// Remove `id`, voter or learner, from the cluster. Removing the leader itself is allowed
    /// (it steps down once the change commits). Stop the removed node afterwards.
    pub async fn remove(&self, id: NodeId) -> Result<Membership, Error> {
        self.change_membership(vec![ConfChange::remove(id)]).await
    }

    /// Hand leadership to the voter `to` (thesis §3.10), on the leader: it stops taking
    /// proposals, brings `to` up to date, and tells it to campaign at once. Resolves once this
    /// node sees `to` lead; fails with [`Error::TransferAbandoned`] if `to` has not taken over
    /// within two election timeouts (the leader then goes on leading), [`Error::NotAVoter`] for a
    /// node that is not a voter, [`Error::NotLeader`] off the leader. A transfer to this node
    /// itself succeeds at once.
    ///
    /// ```no_run
    /// # use raftor::{LogIndex, StateMachine};
    /// # #[derive(Default)] struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     type Command = u64; type Response = u64; type Query = (); type QueryResponse = u64;
    /// #     type Snapshot = u64;
    /// #     fn apply(&mut self, _: LogIndex, add: u64) -> u64 { self.0 += add; self.0 }
    /// #     fn query(&self, _: &()) -> u64 { self.0 }
    /// #     fn snapshot(&self) -> u64 { self.0 }
    /// #     fn restore(&mut self, total: u64) { self.0 = total }
    /// # }
    /// # use raftor::NodeId;
    /// # async fn run(leader: raftor::RaftNode<Counter>) -> Result<(), raftor::Error> {
    /// // Before taking the leader's machine down for maintenance:
    /// leader.transfer_leadership(NodeId(2)).await?;
    /// assert_eq!(leader.leadership().borrow().leader, Some(NodeId(2)));
    /// # Ok(()) }
    /// ```
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Error> {
        self.check_running()?;
        match self.inner.node.transfer_leadership(to).await {
            Ok(()) => {}
            Err(TransferLeaderError::NotLeader { leader }) => {
                return Err(Error::NotLeader { leader })
            }
            Err(TransferLeaderError::NotAVoter(id)) => return Err(Error::NotAVoter(id)),
            Err(TransferLeaderError::Shutdown) => return Err(Error::Shutdown { in_flight: false }),
        }
        if to == self.inner.id {
            return Ok(());
        }
        let me = self.inner.id;
        let mut leadership = self.leadership();
        let wait = self.inner.election_timeout * 2;
        // Done when another node leads: `to`, or someone else if the transfer went astray.
        let moved = tokio::time::timeout(
            wait,
            leadership.wait_for(|seen| seen.leader.is_some_and(|leader| leader != me)),
        )
        .await
        .map(|seen| seen.map(|seen| *seen));
        match moved {
            Ok(Ok(seen)) if seen.leader == Some(to) => Ok(()),
            Ok(Ok(seen)) => Err(Error::TransferAbandoned {
                to,
                leader: seen.leader,
            }),
            Ok(Err(_)) => Err(Error::Shutdown { in_flight: false }),
            Err(_) => Err(Error::TransferAbandoned {
                to,
                leader: leadership.borrow().leader,
            }),
        }
    }
}
