//! The state of one Raft node and the event loop of its rules (Figure 2). Vote handling lives in
//! `election.rs`, log replication on the follower in `append.rs`, the leader's duties in `leader.rs`.

use crate::config::{ConfigError, RaftConfig};
use crate::log_terms::LogTerms;
use crate::membership::{Membership, MembershipLog};
use crate::message::{
    AppendEntriesResponse, AppendOutcome, Envelope, InstallSnapshotResponse, Message,
    SnapshotOutcome,
};
use crate::read_index::PendingRead;
use crate::ready::{LeadershipChange, Ready};
use crate::rejoin::{RejoinState, Standing};
use crate::replication::PeerReplication;
use crate::storage_types::RecoveredState;
use crate::types::{HardState, LogId, LogIndex, NodeId, Term};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The role a node plays in its current term (§5.1, plus the pre-vote rehearsal of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Volatile state on leaders (Figure 2), reinitialised after each election.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaderState {
    /// `matchIndex` per voter, this node included (its own durable last index): the highest index
    /// known to be replicated and durable there. Only grows within a term.
    pub(crate) matched: BTreeMap<NodeId, LogIndex>,
    /// Peers heard from since the last check-quorum period began.
    pub(crate) recent_active: BTreeSet<NodeId>,
    /// The tick at which each peer last answered (for status and metrics).
    pub(crate) last_contact: BTreeMap<NodeId, u64>,
    /// The latest leadership-confirmation round issued (one with every heartbeat, and one for
    /// reads that arrive between heartbeats); grows by one per round.
    pub(crate) read_round: u64,
    /// The tick at which each recent round was issued, oldest first, rounds increasing: the
    /// messages that answer for a round left after that tick. Rounds older than
    /// `ROUND_HISTORY_TICKS` are forgotten (too old to extend a lease).
    pub(crate) round_issued_at: VecDeque<(u64, u64)>,
    /// Per voter: the tick at which the newest round it answered was issued. The lease is
    /// measured from there, not from the answer's arrival: a follower that answers a message
    /// refuses other candidates for a minimum election timeout from when it *received* it, which
    /// is after it was sent, however late the answer comes back (thesis §6.4.1).
    pub(crate) lease_contact: BTreeMap<NodeId, u64>,
    /// The highest round each peer has answered.
    pub(crate) acked_round: BTreeMap<NodeId, u64>,
    /// Reads waiting for their round to be confirmed, in round order.
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Reads waiting for the first commit of this leader's term.
    pub(crate) reads_awaiting_commit: Vec<u64>,
    /// A leadership transfer in progress (thesis §3.10): proposals are refused meanwhile.
    pub(crate) transfer: Option<Transfer>,
    /// TimeoutNow was sent in this term. Its target campaigns with `leadership_transfer` set, and
    /// voters grant that vote inside their leader-stickiness window, so from now on another
    /// leader may be elected at any moment (the message may also arrive late, after the transfer
    /// was abandoned): this leader serves no lease read for the rest of its term. Never unset
    /// within a term (the leader state is dropped with the term).
    pub(crate) timeout_now_sent: bool,
    /// Replication toward each replication target (`Raft::replication_targets`), this node
    /// excepted; brought in line with them while `peers_stale`.
    pub(crate) peers: BTreeMap<NodeId, PeerReplication>,
    /// The replication targets may have changed since `peers` was last brought in line.
    pub(crate) peers_stale: bool,
    /// A heartbeat period elapsed since the peers were last driven (§5.2).
    pub(crate) heartbeat_due: bool,
    /// A confirmation round issued since the peers were last driven: the messages numbered
    /// from the next drive on answer for it.
    pub(crate) round_due: Option<u64>,
    /// This node's `currentTerm` is known durable on its own disk, so messages of the term may
    /// leave. Until then the leader sends nothing (`Raft::sending_parts`): a leader whose term
    /// could be lost to a power failure could win the same term again after restarting and
    /// append different entries at the same indexes, and a peer that kept the first ones would
    /// break Log Matching (§5.3). Set at once by a win that counted another voter's vote (its
    /// RequestVote left only after the write that recorded the term, `Ready::messages`); a
    /// lone voter's win counts only itself, so it waits for an entry of its term to be durable
    /// (`Raft::on_log_flushed`: writes become durable in order, the term's before the entry).
    /// Never unset within a term.
    pub(crate) term_durable: bool,
    /// Who holds the commit of the configuration in force, until a majority of its voters do
    /// (`crate::settle`); `None` while it is joint or not committed, and once settled.
    pub(crate) settling: Option<crate::settle::SettleWatch>,
}

/// A leadership transfer the leader is carrying out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The voter that is to lead.
    pub(crate) to: NodeId,
    /// `ticks` when the transfer began; it is abandoned an election timeout later.
    pub(crate) started_at: u64,
}

/// The rules of one Raft node. Not thread-safe and not async: call it from one place, feed it events,
/// and carry out each [`Ready`] in order.
#[derive(Debug)]
pub struct Raft {
    pub(crate) config: RaftConfig,
    /// `currentTerm`: latest term seen; never decreases (Figure 2).
    pub(crate) current_term: Term,
    /// `votedFor` in `current_term`; once set, stays set until the term changes (§5.2).
    pub(crate) voted_for: Option<NodeId>,
    /// `commitIndex`: the highest index known committed; never decreases, never past the log's end.
    pub(crate) commit_index: LogIndex,
    /// The hard state last handed out for persistence, to hand out changes only.
    pub(crate) persisted: HardState,
    /// Whether this node's store holds every promise it made under its id (`rejoin.rs`); only a
    /// [`Standing::Member`] votes or campaigns. Moves only toward `Member`.
    pub(crate) standing: Standing,
    /// The standing last handed out for persistence.
    pub(crate) persisted_standing: Standing,
    /// The standing, or a commit index past a configuration entry, last handed out is on its way
    /// to disk, behind the log's entries up to this index: until an entry after it is reported
    /// durable, no answer that vouches for this node leaves promptly (`Ready::prompt_messages`).
    /// Such an answer would overtake the write, and a crash meanwhile would bring the node back
    /// `Rejoining` after a leader counted it, or with a commit index before a configuration a
    /// leader counted it to hold (`crate::settle`): either may let a removed voter retire whose
    /// answer a rejoining node then waits for. `None`: both are durable. (A node whose log then
    /// advances only by snapshots keeps answering behind its writes until it appends an entry:
    /// later, never lost.)
    pub(crate) vouched_in_flight_after: Option<LogIndex>,
    /// The entries appended since the last `Ready` all came from AppendEntries that said the
    /// leader's commits need not wait for them (`AppendEntries::sync_may_wait`): `Some(true)`;
    /// any that did not: `Some(false)`; none appended: `None`. Read and reset by
    /// [`Raft::take_ready`].
    pub(crate) appended_may_wait: Option<bool>,
    /// What a rejoining node has heard.
    pub(crate) rejoin: RejoinState,
    /// The id of every entry in the log (durable or on its way to disk).
    pub(crate) log: LogTerms,
    /// The configurations in the log; the last is in force (it took effect when appended, §6).
    pub(crate) membership: MembershipLog,
    /// Every entry of the current log up to here is known to be on this node's disk (the log store
    /// said so with `on_log_flushed`). `durable_index <= log.last_index()`; lowered by truncation.
    pub(crate) durable_index: LogIndex,
    pub(crate) role: Role,
    /// The leader of `current_term` as far as this node knows.
    pub(crate) leader_id: Option<NodeId>,
    /// Ticks since the timer was last reset (by hearing from the leader, granting a vote, or
    /// starting an election); for a leader, ticks since the check-quorum period began.
    pub(crate) election_elapsed: u32,
    /// This period's election timeout, drawn from the configured range.
    pub(crate) randomized_election_timeout: u32,
    pub(crate) heartbeat_elapsed: u32,
    /// Ticks since this node started: the clock for lease reads, contact times and
    /// `refuse_candidates_until`.
    pub(crate) ticks: u64,
    /// With check-quorum, this node refuses other candidates (pre-votes, and votes other than
    /// a repeat of the vote it gave or one with `leadership_transfer`) while `ticks` is below
    /// this: a minimum election timeout past the last message it took from a leader of its term,
    /// and past its own start (a crash forgets what it answered before). A leader's lease counts
    /// on it (thesis §6.4), so a newer term learned without a leader does not clear it; it only
    /// grows (and a stall moves it on, `skip_ticks`).
    pub(crate) refuse_candidates_until: u64,
    /// Real (not pre-vote) elections this node started since it started; for metrics.
    pub(crate) elections_started: u64,
    /// Answers received in the current (pre-)election; this node's own vote included.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) leader: Option<LeaderState>,
    /// The number of the next message a leader sends a peer (`request_id`): only grows, across
    /// terms too, so a late report about an earlier term's message never matches a new one.
    pub(crate) next_request_id: u64,
    /// The newest configuration entry this node, while leader, saw settled (`crate::settle`):
    /// only grows; volatile.
    pub(crate) settled_membership_index: LogIndex,
    pub(crate) rng: SmallRng,
    pub(crate) ready: Ready,
}

impl Raft {
    /// Rules for a node restarting from `recovered` (empty for a new node). `seed` drives the
    /// randomised election timeouts: the same seed and events give the same run.
    pub fn new(
        config: RaftConfig,
        recovered: RecoveredState,
        seed: u64,
    ) -> Result<Raft, ConfigError> {
        config.validate()?;
        let log = LogTerms::starting_at(recovered.log_start, &recovered.term_boundaries);
        let hard = recovered.hard_state;
        // The snapshot's configuration, else the bootstrap one; then what the log holds after it.
        let (base_index, base) = recovered.snapshot_membership.clone().unwrap_or_else(|| {
            (
                LogIndex::ZERO,
                Membership::bootstrap(&config.voters, &config.addresses),
            )
        });
        let mut membership = MembershipLog::new(base_index, base);
        for (index, entry) in &recovered.memberships {
            if *index <= log.last_index() {
                membership.push(*index, entry.clone());
            }
        }
        // The log (or the snapshot it starts at) may hold a term the hard state does not: the
        // node adopted it when the entries came, but a crash lost that write while the snapshot
        // (kept by the driver as the rules installed it) survived. A node never holds an entry
        // of a term it has not reached (§5.1), so it reaches it now; it cast no vote in that
        // term, since a vote is durable before it is sent (Figure 2).
        let (current_term, voted_for) = if log.last_log_id().term > hard.current_term {
            (log.last_log_id().term, None)
        } else {
            (hard.current_term, hard.voted_for)
        };
        let mut raft = Raft {
            current_term,
            voted_for,
            // A persisted commit index beyond the recovered log cannot be trusted: clamp it. The
            // compacted prefix is committed (only committed entries are compacted).
            commit_index: hard
                .commit_index
                .max(recovered.log_start.index)
                .min(log.last_index()),
            persisted: hard,
            standing: recovered.standing,
            persisted_standing: recovered.standing,
            vouched_in_flight_after: None,
            appended_may_wait: None,
            rejoin: RejoinState::default(),
            durable_index: log.last_index(),
            log,
            membership,
            role: Role::Follower,
            leader_id: None,
            election_elapsed: 0,
            randomized_election_timeout: config.election_ticks_min,
            heartbeat_elapsed: 0,
            ticks: 0,
            refuse_candidates_until: u64::from(config.election_ticks_min),
            elections_started: 0,
            votes: BTreeMap::new(),
            leader: None,
            next_request_id: 1,
            settled_membership_index: LogIndex::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            ready: Ready::default(),
            config,
        };
        raft.reset_election_timer();
        raft.ready.membership = Some(raft.membership().clone());
        raft.on_configuration_learned();
        if raft.commit_index > LogIndex::ZERO {
            raft.ready.commit_index = Some(raft.commit_index);
        }
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn config(&self) -> &RaftConfig {
        &self.config
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn current_term(&self) -> Term {
        self.current_term
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    /// The highest index that may be applied here: committed (§5.3) and on this node's own disk.
    /// A committed entry is safe on a majority already; waiting for the local copy as well keeps
    /// "applied" a promise about this node's own log (its state after a restart includes it).
    pub fn applicable_index(&self) -> LogIndex {
        self.commit_index.min(self.durable_index)
    }
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }
    /// Ticks since this node started (its logical clock).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }
    /// Real elections this node started (pre-votes not counted).
    pub fn elections_started(&self) -> u64 {
        self.elections_started
    }
    pub fn log_terms(&self) -> &LogTerms {
        &self.log
    }
    /// The hard state as the rules hold it now (it may not be durable yet).
    pub fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
            commit_index: self.commit_index,
        }
    }
    /// The configuration in force here: the last one in the log (committed or not, §6).
    pub fn membership(&self) -> &Membership {
        self.membership.current()
    }
    /// The index of the entry that holds [`Self::membership`] (at or before the log's start when
    /// it came from a snapshot or the bootstrap configuration).
    pub fn membership_index(&self) -> LogIndex {
        self.membership.current_index()
    }
    /// Whether this node may campaign and vote counts from it: a voter of either half, whose
    /// store holds every promise it made, or enough of it (`rejoin.rs`).
    pub fn is_promotable(&self) -> bool {
        self.may_campaign() && self.membership().conf.is_voter(self.id())
    }
    /// Whether this node's store holds every promise it made, or how far it is from it.
    pub fn standing(&self) -> Standing {
        self.standing
    }
    /// This node's removal (or demotion) is in its log but not committed, and it votes in the
    /// configuration before: its vote may still be needed and its log may be the only complete
    /// one, so it still campaigns (thesis §4.2.2: elected, it leads without counting itself and
    /// steps down once the change commits). Otherwise a leader that appended its own removal and
    /// then stepped down (check-quorum, a crash) can leave the cluster with no electable voter.
    pub(crate) fn removal_pending(&self) -> bool {
        self.may_campaign()
            && self
                .superseded_not_committed()
                .is_some_and(|m| m.conf.is_voter(self.id()))
    }
    /// The configuration before the one in force, while the one in force is not known to be
    /// committed (until then the previous one may still decide, §6): whom a leader still
    /// replicates to, a candidate still asks, and in which a removed node still campaigns.
    fn superseded_not_committed(&self) -> Option<&Membership> {
        if self.membership_index() > self.commit_index {
            self.membership.previous()
        } else {
            None
        }
    }
    /// Whom a leader replicates to: every member of the configuration in force, and, until that
    /// configuration is committed, the members of the one before it, so that a removed node
    /// receives the entry that removes it (and stops campaigning). This node excepted.
    pub fn replication_targets(&self) -> BTreeSet<NodeId> {
        let mut targets = self.membership().conf.members();
        if let Some(previous) = self.superseded_not_committed() {
            targets.extend(previous.conf.members());
        }
        targets.remove(&self.id());
        targets
    }
    /// How to reach `id`, as the configuration in force (or the one before it) says.
    pub fn address_of(&self, id: NodeId) -> Option<&String> {
        self.membership().addresses.get(&id).or_else(|| {
            self.membership
                .previous()
                .and_then(|previous| previous.addresses.get(&id))
        })
    }
    /// The leadership transfer in progress on this leader, if any: its target.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.leader.as_ref()?.transfer.map(|t| t.to)
    }
    /// The leader's `matchIndex` for each member; `None` unless leader.
    pub fn matched(&self) -> Option<&BTreeMap<NodeId, LogIndex>> {
        self.leader.as_ref().map(|l| &l.matched)
    }

    /// Hands out what the events so far require, and starts collecting afresh.
    ///
    /// Term and vote changes always travel in `write`; a commit index change alone does not (it is
    /// only a hint for restarts) and rides along with the next write that carries entries,
    /// unless it passes a configuration entry: then it is written at once, and this node's
    /// answers leave once it is durable. A leader counts such an answer as the configuration's
    /// commit held there (`crate::settle`), and a rejoining node trusts the commit index a
    /// member reports to tell which configurations may still decide; forgotten in a crash, it
    /// would make a removed member's answer needed again.
    pub fn take_ready(&mut self) -> Ready {
        self.drive_replication();
        let hard = self.hard_state();
        let term_or_vote_changed = hard.current_term != self.persisted.current_term
            || hard.voted_for != self.persisted.voted_for;
        let commit_changed = hard.commit_index != self.persisted.commit_index;
        let commits_config = commit_changed
            && self
                .membership
                .any_between(self.persisted.commit_index, hard.commit_index);
        let carries_log =
            !self.ready.write.entries.is_empty() || self.ready.write.truncate_from.is_some();
        if term_or_vote_changed || (commit_changed && (carries_log || commits_config)) {
            self.ready.write.hard_state = Some(hard);
            self.persisted = hard;
        }
        let standing_changed = self.standing != self.persisted_standing;
        if standing_changed {
            self.ready.write.standing = Some(self.standing);
            self.persisted_standing = self.standing;
        }
        if standing_changed || commits_config {
            self.vouched_in_flight_after = Some(self.log.last_index());
        }
        if term_or_vote_changed || standing_changed || commits_config {
            // The first answers in a new term (Figure 2), vouching for a new standing, or
            // acknowledging a configuration's commit, leave with the write that records it.
            let prompt = std::mem::take(&mut self.ready.prompt_messages);
            self.ready.messages.extend(prompt);
        }
        // Only a write of entries alone (and a commit index, a hint) may wait: a new term,
        // vote, standing or configuration commit is promised by the answers behind it, which a
        // leader or candidate may be counting on.
        let write = &self.ready.write;
        self.ready.write_may_wait = self.appended_may_wait.take() == Some(true)
            && !term_or_vote_changed
            && !standing_changed
            && !commits_config
            && write.truncate_from.is_none()
            && write.compact_to.is_none()
            && !write.entries.is_empty();
        debug_assert_eq!(self.check_invariants(), Ok(()));
        std::mem::take(&mut self.ready)
    }

    /// The driver's clock ran `missed` ticks past the ones it delivered: the node's thread was
    /// stalled (starved of CPU, blocked in a write), then call [`Raft::tick`] once. Real time
    /// passed, so the lease clock moves on with it: answers to rounds issued before the stall
    /// are that much older, and a lease rests on none of them longer than real time allows
    /// (thesis §6.4.1). But the timers that judge whether the others are alive do not run on:
    /// the heartbeats and answers that would have reset them may be waiting in this node's queue,
    /// unread. So a stall alone never makes a follower campaign or a leader step down; a stalled
    /// follower refuses other candidates for longer, which only makes a leader's lease safer:
    /// a refusal still running (`refuse_candidates_until`) moves on by `missed` too, since a
    /// leader's message taken during the stall set it from the stalled clock.
    pub fn skip_ticks(&mut self, missed: u64) {
        if self.refuse_candidates_until > self.ticks {
            self.refuse_candidates_until = self.refuse_candidates_until.saturating_add(missed);
        }
        self.ticks = self.ticks.saturating_add(missed);
    }

    /// One tick of the logical clock: elections time out, leaders send heartbeats (§5.2).
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.standing != Standing::Member {
            self.rejoin.elapsed += 1;
            if self.rejoin.elapsed >= self.config.election_ticks_min {
                self.rejoin.elapsed = 0;
                self.rejoin_round();
            }
        }
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                if let Some(leader) = self.leader.as_mut() {
                    leader.heartbeat_due = true;
                }
            }
            let heartbeat_due = self.leader.as_ref().is_some_and(|l| l.heartbeat_due);
            if heartbeat_due {
                // Every heartbeat doubles as a leadership-confirmation round: its answers keep
                // the lease measured from when it was sent.
                self.start_confirm_round();
            }
            if self.election_elapsed >= self.config.election_ticks_min {
                self.election_elapsed = 0;
                self.check_quorum();
            }
            if self.role == Role::Leader {
                self.settle_deadline();
            }
            if self.role == Role::Leader {
                self.abandon_late_transfer();
                if heartbeat_due {
                    self.promote_caught_up_learners();
                }
            }
        } else if self.election_elapsed >= self.randomized_election_timeout {
            if self.is_promotable() || self.removal_pending() {
                self.campaign();
            } else if self.role != Role::Follower {
                // Demoted while campaigning (a configuration arrived): stop.
                let term = self.current_term;
                self.become_follower(term, None);
                self.election_elapsed = self.randomized_election_timeout;
            }
            // A learner, a removed node or one still joining never campaigns, and its timer is
            // not reset: it keeps counting, so once an election timeout passes without word from
            // a leader it no longer claims one is alive (`in_leader_lease`) and grants the
            // (pre-)votes a candidate may need from it (as etcd raft's `tickElection`). Resetting
            // it here kept the lease up for most of every period, forever: a voter of a joint
            // configuration's incoming half that had not yet received it refused every pre-vote.
        }
    }

    /// A message from a peer. Unknown senders and nonsense are dropped; nothing here panics.
    pub fn step(&mut self, from: NodeId, message: Message) {
        // Anyone may send: a leader this node does not know yet (it is joining, or lags behind a
        // configuration change) must be followed. Votes are guarded in `handle_request_vote`.
        if from == self.id() {
            return;
        }
        // A term no real cluster reaches is hostile or corrupt: adopted, it would leave no room
        // for another election (`TERM_CEILING`). Ignore the whole message.
        let term = message.term();
        let adoptable = self.current_term.admits(term);
        // A rejoining node's question and its answer carry terms nobody adopts (but the floor,
        // which an answer raises, is adopted later).
        match message {
            Message::RejoinQuery(_) => return self.handle_rejoin_query(from),
            Message::RejoinAnswer(answer) if adoptable => {
                return self.handle_rejoin_answer(from, answer)
            }
            _ if !adoptable => return,
            _ => {}
        }
        self.ask_sender_while_rejoining(from);
        if term > self.current_term {
            match &message {
                // A pre-vote changes nothing on the receiver, and a granted pre-vote answer is for a
                // term the candidate has not entered yet (thesis §9.6).
                Message::RequestVote(request) if request.pre_vote => {}
                Message::RequestVoteResponse(response)
                    if response.pre_vote && response.vote_granted => {}
                Message::RequestVote(request)
                    if self.in_leader_lease() && !request.leadership_transfer =>
                {
                    // Leader stickiness (thesis §4.2.3): we heard from a live leader within the
                    // minimum election timeout (or started less than one ago), so this candidate
                    // is disruptive. Ignore it.
                    return;
                }
                Message::AppendEntries(_) | Message::InstallSnapshot(_) => {
                    self.become_follower(term, Some(from))
                }
                // A newer term alone does not reset the election timer (Figure 2: only hearing
                // from the leader or granting a vote does). Otherwise a candidate that can never
                // win (its log is behind) keeps the up-to-date voters from ever timing out.
                _ => {
                    let elapsed = self.election_elapsed;
                    self.become_follower(term, None);
                    self.election_elapsed = elapsed;
                }
            }
        } else if term < self.current_term {
            self.answer_stale(from, &message);
            return;
        }
        match message {
            Message::RequestVote(request) => self.handle_request_vote(from, request),
            Message::RequestVoteResponse(response) => self.handle_vote_response(from, response),
            Message::AppendEntries(request) => self.handle_append_entries(from, request),
            Message::InstallSnapshot(chunk) => self.handle_install_snapshot(from, chunk),
            Message::TimeoutNow(_) => self.handle_timeout_now(from),
            Message::AppendEntriesResponse(response) => self.handle_append_response(from, response),
            Message::InstallSnapshotResponse(response) => {
                self.handle_snapshot_response(from, response)
            }
            Message::RejoinQuery(_) | Message::RejoinAnswer(_) => {}
        }
    }

    /// A message from an older term: tell its sender the current term, so a deposed leader or a
    /// stale candidate steps down (§5.1); stale answers are dropped.
    fn answer_stale(&mut self, from: NodeId, message: &Message) {
        match message {
            Message::AppendEntries(request) => self.send(
                from,
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term: self.current_term,
                    request_id: request.request_id,
                    outcome: AppendOutcome::StaleTerm,
                }),
            ),
            Message::InstallSnapshot(chunk) => self.send(
                from,
                Message::InstallSnapshotResponse(InstallSnapshotResponse {
                    term: self.current_term,
                    request_id: chunk.request_id,
                    outcome: SnapshotOutcome::StaleTerm,
                }),
            ),
            Message::RequestVote(request) => self.reject_vote(from, request.pre_vote),
            Message::RequestVoteResponse(_)
            | Message::AppendEntriesResponse(_)
            | Message::InstallSnapshotResponse(_)
            | Message::TimeoutNow(_)
            | Message::RejoinQuery(_)
            | Message::RejoinAnswer(_) => {}
        }
    }

    /// Whether this node refuses other candidates: a leader was heard from within the minimum
    /// election timeout (or this is the leader), or this node started less than one ago, by the
    /// election timer or by `refuse_candidates_until`.
    ///
    /// A voter's answer lends the leader a lease (thesis §6.4): the voter refuses other
    /// candidates for a minimum election timeout after hearing it. Two ways of forgetting that
    /// are closed by `refuse_candidates_until`: a crash (a voter restarted at once voted for a
    /// candidate cut off from the leader it had just answered, which committed a write the
    /// leader's lease read missed: `tests::reads::a_restarted_voter_keeps_the_lease_it_granted_before_the_crash`),
    /// and a newer term learned from a message that names no leader (a vote request of that
    /// term was then no longer newer, skipped stickiness and was granted:
    /// `tests::reads::a_newer_term_without_a_leader_keeps_the_lease_a_voter_granted`).
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && ((self.leader_id.is_some()
                && self.election_elapsed < self.config.election_ticks_min)
                || self.ticks < self.refuse_candidates_until)
    }

    /// This node took a message from `leader`, the leader of its term (§5.2): it follows it,
    /// restarts its election timer, and refuses other candidates for a minimum election timeout.
    pub(crate) fn heard_from_leader(&mut self, leader: NodeId) {
        self.leader_id = Some(leader);
        self.reset_election_timer();
        let until = self
            .ticks
            .saturating_add(u64::from(self.config.election_ticks_min));
        self.refuse_candidates_until = self.refuse_candidates_until.max(until);
    }

    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        self.ready.messages.push(Envelope {
            from: self.id(),
            to,
            message,
        });
    }

    /// Send `message` at once, not behind the writes in flight: only for a message that promises
    /// nothing beyond what is already durable here (`Ready::prompt_messages`).
    pub(crate) fn send_promptly(&mut self, to: NodeId, message: Message) {
        self.ready.prompt_messages.push(Envelope {
            from: self.id(),
            to,
            message,
        });
    }

    /// Whom to ask for votes: the voters of either half, and, while the configuration in force
    /// is not known to be committed, the voters of the one before it, this node excepted. Only
    /// the votes of the configuration in force count (`tally_votes`); the others learn the
    /// candidate's term. A voter the pending change removes may hold the only complete log
    /// (`removal_pending`); knowing the term the others campaign in, it campaigns in the next
    /// one when its timer fires. Otherwise a candidate that can never win (its log is behind)
    /// keeps using every term first, one ahead of it, and it loses every race by one term.
    pub(crate) fn voting_peers(&self) -> BTreeSet<NodeId> {
        let me = self.id();
        let mut peers = self.membership().conf.all_voters();
        if let Some(previous) = self.superseded_not_committed() {
            peers.extend(previous.conf.all_voters());
        }
        peers.remove(&me);
        peers
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .gen_range(self.config.election_ticks_min..self.config.election_ticks_max);
    }

    /// Adopt `term` (if newer) and follow `leader` (§5.1: "if RPC request or response contains term T >
    /// currentTerm: set currentTerm = T, convert to follower").
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            // Past the floor, a catching-up node may already hold all it must (rejoin.rs).
            self.check_caught_up();
        }
        if self.role == Role::Leader {
            self.fail_pending_reads();
            self.ready.leadership = Some(LeadershipChange::Lost);
        }
        self.role = Role::Follower;
        self.leader = None;
        self.votes.clear();
        match leader {
            Some(leader) => self.heard_from_leader(leader),
            None => {
                self.leader_id = None;
                self.reset_election_timer();
            }
        }
    }

    /// Configuration entries among `entries`, just appended, take effect now (§6).
    pub(crate) fn note_configurations(&mut self, entries: &[crate::types::Entry]) {
        let mut changed = false;
        for entry in entries {
            if let Some(membership) = entry.membership() {
                self.membership.push(entry.index, membership.clone());
                self.replication_targets_changed();
                self.ready.membership = Some(membership.clone());
                changed = true;
            }
        }
        if changed {
            self.on_configuration_learned();
        }
    }

    /// A rejoining node learned a configuration: it may name whom to ask, or already suffice.
    pub(crate) fn on_configuration_learned(&mut self) {
        if self.standing != Standing::Rejoining {
            return;
        }
        if self.rejoin_answers_suffice() {
            self.finish_rejoin_queries();
        } else {
            self.send_rejoin_queries();
        }
    }

    /// Record a newly known commit index; it never moves backwards.
    pub(crate) fn advance_commit(&mut self, index: LogIndex) {
        let index = index.min(self.log.last_index());
        if index > self.commit_index {
            let first_of_term = self.role == Role::Leader && !self.committed_in_current_term();
            let membership_index = self.membership_index();
            if self.commit_index < membership_index && membership_index <= index {
                // The previous configuration's members may no longer be targets.
                self.replication_targets_changed();
            }
            self.commit_index = index;
            self.ready.commit_index = Some(index);
            if first_of_term && self.committed_in_current_term() {
                self.release_reads_awaiting_commit();
            }
            if self.role == Role::Leader {
                self.on_membership_committed();
            }
        }
    }
}
