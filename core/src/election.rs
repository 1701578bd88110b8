//! Leader election (§5.2), the up-to-date rule (§5.4.1), and the pre-vote rehearsal (thesis §9.6).

use crate::message::{Message, RequestVote, RequestVoteResponse};
use crate::quorum::VoteResult;
use crate::raft::{Raft, Role};
use crate::types::{NodeId, Term};

impl Raft {
    /// The election timer fired: rehearse with a pre-vote when configured, else campaign for real.
    pub(crate) fn campaign(&mut self) {
        let pre_vote = self.config.pre_vote;
        self.start_election(pre_vote, false);
    }

    /// The leader asked this node to take over at once (thesis §3.10): campaign now, for real,
    /// asking voters to set leader stickiness aside.
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Follower
            && self.leader_id.is_none_or(|leader| leader == from)
            && self.is_promotable()
        {
            self.start_election(false, true);
        }
    }

    fn start_election(&mut self, pre_vote: bool, leadership_transfer: bool) {
        self.reset_election_timer();
        if self.current_term == Term(u64::MAX) {
            // The term space is exhausted (only a hostile peer gets a node here): an election
            // would reuse this term and vote in it a second time. Stay (or fall back to) follower.
            self.role = Role::Follower;
            self.votes.clear();
            return;
        }
        self.leader_id = None;
        self.votes.clear();
        let term = if pre_vote {
            self.role = Role::PreCandidate;
            self.current_term.next()
        } else {
            // "Increment currentTerm, vote for self" (§5.2); both are persisted before the requests
            // leave, because the requests travel after this Ready's write.
            self.role = Role::Candidate;
            self.elections_started += 1;
            self.current_term = self.current_term.next();
            self.voted_for = Some(self.id());
            self.check_caught_up();
            self.current_term
        };
        self.votes.insert(self.id(), true);
        let request = RequestVote {
            term,
            last_log_id: self.log.last_log_id(),
            pre_vote,
            leadership_transfer,
        };
        for peer in self.voting_peers() {
            self.send(peer, Message::RequestVote(request.clone()));
        }
        self.tally_votes();
    }

    pub(crate) fn handle_request_vote(&mut self, from: NodeId, request: RequestVote) {
        // The caller already adopted a newer term for a real vote, and returned for an older one.
        // The candidate is judged without consulting this node's configuration (thesis §4.1): a
        // voter added by entries this node has not received yet may be the only one able to win.
        // A removed node cannot disrupt anyway: its log lacks the entry that removed it, so its
        // (pre-)votes fail the up-to-date check on the nodes that hold that entry, and leader
        // stickiness ignores it meanwhile.
        let up_to_date = request.last_log_id >= self.log.last_log_id();
        let grant = if !self.standing_allows_vote(request.term, request.last_log_id) {
            // This store started empty: its old self may have voted in this term, or for a
            // candidate whose log its own log then outweighed (rejoin.rs).
            false
        } else if request.pre_vote {
            // Would we vote for this candidate in its next term? Not while a leader may be alive.
            request.term > self.current_term && up_to_date && !self.in_leader_lease()
        } else {
            let free = self.voted_for.is_none() || self.voted_for == Some(from);
            // A request of a newer term was judged for stickiness already (`step`); one of this
            // term meets it too: this node may have learned the term without a leader, or just
            // started in it (`in_leader_lease`).
            let sticky = self.voted_for != Some(from)
                && !request.leadership_transfer
                && self.in_leader_lease();
            free && up_to_date && !sticky
        };
        if !grant {
            self.reject_vote(from, request.pre_vote);
            let outweighed = request.last_log_id > self.log.last_log_id();
            if !request.pre_vote && self.role == Role::Candidate && outweighed {
                // A rival of this term holds a more up to date log, so the voters that hold it
                // will never elect this node: step aside and wait a whole election timeout, so
                // that the rival, not this node, starts the next term. Else this node, its term
                // always one timeout ahead, could vote for itself first in every term and refuse
                // the one candidate that can win, for ever (seed 4600047959: a candidate whose
                // configuration's other voter was gone). Its vote in this term stands.
                let term = self.current_term;
                self.become_follower(term, None);
            }
            return;
        }
        if !request.pre_vote {
            self.voted_for = Some(from);
            // Granting a vote resets the timer (§5.2), so this node does not compete with the
            // candidate it just voted for.
            self.reset_election_timer();
        }
        self.send(
            from,
            Message::RequestVoteResponse(RequestVoteResponse {
                term: request.term,
                vote_granted: true,
                pre_vote: request.pre_vote,
            }),
        );
    }

    pub(crate) fn reject_vote(&mut self, to: NodeId, pre_vote: bool) {
        self.send(
            to,
            Message::RequestVoteResponse(RequestVoteResponse {
                term: self.current_term,
                vote_granted: false,
                pre_vote,
            }),
        );
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, response: RequestVoteResponse) {
        let counts = match self.role {
            Role::PreCandidate => response.pre_vote,
            Role::Candidate => !response.pre_vote && response.term == self.current_term,
            Role::Follower | Role::Leader => false,
        };
        if counts {
            self.votes.insert(from, response.vote_granted);
            self.tally_votes();
        }
    }

    fn tally_votes(&mut self) {
        match self.membership().conf.vote_result(&self.votes) {
            VoteResult::Won if self.role == Role::PreCandidate => self.start_election(false, false),
            VoteResult::Won if self.role == Role::Candidate => self.become_leader(),
            VoteResult::Lost => {
                let term = self.current_term;
                self.become_follower(term, None);
            }
            _ => {}
        }
    }
}
