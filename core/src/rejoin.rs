//! A node whose store started empty rejoins before it votes: it may be a member that lost its data
//! (a replaced disk, a deleted volume) and voted or acknowledged entries before, under the same
//! id. Raft's safety rests on those promises surviving (Figure 2: `currentTerm`, `votedFor` and the
//! log are persistent); a node that forgot them could vote twice in a term, or vote for a candidate
//! that lacks entries it helped commit. So a new store is not trusted until that is provably
//! harmless, in three steps (the argument is in `docs/design.md`, "A node that lost its data"):
//!
//! 1. [`Standing::Rejoining`]: the node asks the members for their current term, configurations
//!    and durable log end ([`RejoinQuery`]), and waits until every member of every configuration
//!    that may still decide answered (`rejoin_answers_suffice`). Any vote or acknowledgement it
//!    gave before was in a term at most the highest term they report: the *floor*. Meanwhile it
//!    votes for nobody and answers AppendEntries only with `AppendOutcome::Rejoining` (no match,
//!    no contact, no leadership confirmation: nothing a leader counts), though it appends what it
//!    receives.
//! 2. [`Standing::CatchingUp`]: it adopts the floor as its term (so, like its old self, it no
//!    longer follows a leader of an older term) and answers leaders again. It votes only in terms
//!    after the floor (its old self voted in none of them), and only for a candidate whose log is
//!    at least as up to date as the most up to date durable log of a voter among the answers: the
//!    leader that counted its old self's acknowledgement of an entry answered too, holding the
//!    entry, and a log at least as up to date as a log holding a committed entry holds it too
//!    (§5.4.3); the same goes for voting for itself.
//!    Without word from a leader for an election timeout it asks afresh, to refresh that log (an
//!    uncommitted tail may have been cut back since); the floor stays.
//! 3. [`Standing::Member`] again once its own durable log holds an entry of a term after the
//!    floor: that leader's log held every entry committed before its term, so this node's does.
//!    Or, once its term is past the floor, when its durable log ends in an entry of the floor's
//!    term at or past the commit index the leader of that term reported when it answered
//!    (`RejoinAnswer::leader_commit`): that leader stopped counting the old self's
//!    acknowledgements when the question arrived, so every entry committed with their help is
//!    an entry of an earlier term (which that leader held before its own) or one it had committed
//!    by then; a log ending in that leader's entry at or past that index holds them all. This
//!    way does not depend on the answerer staying a member: a floor log taken from a node since
//!    removed, whose uncommitted tail no remaining voter holds, would otherwise keep this node
//!    from ever voting.
//!
//! A new cluster goes through the same steps: every store is new, every answer says term 0, and
//! the floor 0 needs no catching up. A node that joins a running cluster (no bootstrap voters:
//! `raftor serve --join`, `RaftNodeBuilder::join`) starts `Rejoining` too, since its store may be
//! one a voter lost; it asks whoever contacts it (the leader that added it), then the members
//! the leader's answer names. If no answer names it a voter in any configuration, it was at most
//! a learner there: nothing it promised was counted toward a commit or an election, and the
//! leader, asked, stops counting what it acknowledged (its catch-up toward promotion starts
//! afresh). So it is a member as soon as the leader and a majority of the voters answered in a
//! term no later than the leader's (`joined_as_learner`): a round trip or two after the
//! leader's first message. Named a voter, or with no such majority (the leader may be deposed,
//! and a newer one may have made it a voter), it rejoins in full, as above.

use crate::message::{Message, RejoinAnswer, RejoinQuery};
use crate::raft::Raft;
use crate::types::{LogId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Whether this node's durable state holds every promise it made under its id (persisted with the
/// hard state, [`crate::LogWrite::standing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// The store holds all this node ever promised: it votes and answers as Raft says.
    Member,
    /// The store started empty: asking the voters for their terms. Votes for nobody, answers no
    /// leader. The state of a new store.
    #[default]
    Rejoining,
    /// Every member of every live configuration answered; `floor` is the highest term they
    /// reported and `floor_log` the most up to date of the durable logs voters reported;
    /// `floor_leader_commit` the commit index the leader of term `floor` reported, if it
    /// answered as leader. Answers leaders; votes only in terms after `floor`, for candidates
    /// whose log is at least as up to date as `floor_log` or as its own once that holds
    /// everything the old self helped commit (`holds_floor_leaders_commits`); a member once its
    /// durable log holds an entry of a term after `floor`, or holds everything the old self
    /// helped commit and its term is past `floor`.
    CatchingUp {
        floor: Term,
        floor_log: LogId,
        floor_leader_commit: Option<LogIndex>,
    },
}

/// The most configurations a [`RejoinAnswer`] may list (those from the answerer's commit index
/// on): a member's log holds a handful past its commit, since a leader proposes a change only once
/// the one before is committed; an answer listing more is ignored.
pub(crate) const MAX_CONFIGS_PER_REJOIN_ANSWER: usize = 1024;

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Member => "member",
            Standing::Rejoining => "rejoining",
            Standing::CatchingUp { .. } => "catching-up",
        }
    }
}

impl Raft {
    /// Whether this node may campaign, voting for itself in the next term: by the same rule as
    /// any vote it grants (`standing_allows_vote`), with its own log as the candidate's.
    pub(crate) fn may_campaign(&self) -> bool {
        self.standing_allows_vote(self.current_term.next(), self.log.last_log_id())
    }

    /// Whether this node's standing lets it grant a (pre-)vote for a candidate of `term` whose
    /// log ends at `last_log_id` (the usual rules apply besides).
    pub(crate) fn standing_allows_vote(&self, term: Term, last_log_id: LogId) -> bool {
        match self.standing {
            Standing::Member => true,
            Standing::Rejoining => false,
            Standing::CatchingUp {
                floor, floor_log, ..
            } => term > floor && (last_log_id >= floor_log || self.holds_floor_leaders_commits()),
        }
    }

    /// Whether this node's durable log holds every entry committed with its old self's
    /// acknowledgement, by what the leader of the floor's term reported (step 3 in the module
    /// docs): it ends in an entry of the floor's term (so it is that leader's log up to there,
    /// its entries of earlier terms included) at or past the commit index that leader reported
    /// when it stopped counting the old self. A vote then needs only the usual rule (a
    /// candidate at least as up to date as this log holds them too, §5.4.3).
    fn holds_floor_leaders_commits(&self) -> bool {
        let Standing::CatchingUp {
            floor,
            floor_leader_commit: Some(commit),
            ..
        } = self.standing
        else {
            return false;
        };
        let durable_term = self.log_id_at(self.durable_index).term;
        durable_term == floor && self.durable_index >= commit
    }

    /// A message from `from` while rejoining: ask it too, once per round of queries (a node that
    /// knows no configuration, or an outdated one, learns whom to ask from whoever contacts it).
    pub(crate) fn ask_sender_while_rejoining(&mut self, from: NodeId) {
        if self.standing == Standing::Rejoining
            && !self.rejoin.answers.contains_key(&from)
            && self.rejoin.asked.insert(from)
        {
            let term = self.current_term;
            self.send(from, Message::RejoinQuery(RejoinQuery { term }));
        }
    }

    /// Whether this node answers AppendEntries and snapshots (counted by a leader toward commits
    /// and leadership confirmations): not before it knows its floor.
    pub(crate) fn answers_leaders(&self) -> bool {
        self.standing != Standing::Rejoining
    }

    /// The configurations that may still decide, as far as this node knows: its own and every
    /// one an answer reported, from the newest one known to be committed on (an older one was
    /// superseded by a committed change, §6), less those in no log that holds the newest commit
    /// known: another configuration at the committed one's index, one between it and the commit
    /// (the committed log has none there), one past the commit whose entry is of a term before
    /// the commit entry's (a log holding the committed entry has only entries of its term or
    /// later after it). Such an entry was written by a leader of an earlier term (a later leader
    /// holds the committed entry, §5.4), lies in a log no leader of a later term holds, and
    /// decides nothing. (Counted, a stale member's outdated configuration naming a node since
    /// retired kept a rejoining voter waiting for an answer that would never come, and with it
    /// a cluster that needed its vote.)
    ///
    /// That finds every configuration past the commit in a log lacking it: a leader L appends a
    /// configuration entry only once it has committed an entry e of its own term
    /// (`propose_membership`; `on_membership_committed` runs on a commit it counted). A committed
    /// entry c of L's term or earlier before the configuration is then in L's log: at or before
    /// e, L's entry there is committed, so it is c; after e, c's term is at least L's (the
    /// committed entries make one log), so c is L's own (docs/design.md, "A node that lost its
    /// data"). So a configuration past the commit of the commit's term or later lies in a log
    /// that holds it.
    fn live_configurations(&self) -> Vec<crate::membership::ConfState> {
        let own = self.membership.from(self.commit_index);
        let own_commit = self.log_id_at(self.commit_index);
        // The newest commit known (its entry's id) and the configuration in force there.
        let (commit, committed, committed_conf) = match &self.rejoin.newest_commit {
            Some((commit, index, conf)) if commit.index > own_commit.index => {
                (*commit, *index, conf)
            }
            _ => (own_commit, own[0].0, &own[0].1.conf),
        };
        let mut live: Vec<crate::membership::ConfState> = Vec::new();
        let reported = self.rejoin.configs.iter().map(|(id, conf)| (*id, conf));
        let own = own.iter().map(|(i, m)| (self.config_entry_id(*i), &m.conf));
        for (LogId { term, index }, conf) in own.chain(reported) {
            // Index 0 holds no entry: the bootstrap configurations there (a founder's, a
            // joiner's empty one) may differ, and none supersedes another.
            let superseded = index < committed
                || (committed > LogIndex::ZERO
                    && ((index == committed && conf != committed_conf)
                        // The committed log holds no configuration between the one in force
                        // at the commit and the commit.
                        || (index > committed && index <= commit.index)))
                // An entry past the commit of a term before the commit's is in no log that
                // holds the committed entry.
                || (index > commit.index && term < commit.term);
            if !superseded && !live.contains(conf) {
                live.push(conf.clone());
            }
        }
        live
    }

    /// The id of the entry at `index` of this node's log (term 0 where it is not known).
    fn log_id_at(&self, index: LogIndex) -> LogId {
        LogId::new(self.log.term_at(index).unwrap_or(Term::ZERO), index)
    }

    /// The id of this log's entry at `index`, where a configuration in force lies. Where the log
    /// is compacted (only at or before the commit index, where `live_configurations` never
    /// judges a configuration by its term) the last entry's term stands in: a bound on it, as
    /// every term in a log is at most its last.
    fn config_entry_id(&self, index: LogIndex) -> LogId {
        let term = self
            .log
            .term_at(index)
            .unwrap_or_else(|| self.log.last_log_id().term);
        LogId::new(term, index)
    }

    /// Ask every member (voter or learner) of every configuration that may still decide that has
    /// not answered yet for its term.
    pub(crate) fn send_rejoin_queries(&mut self) {
        if self.standing != Standing::Rejoining {
            return;
        }
        self.send_rejoin_queries_to_live_voters();
    }

    fn send_rejoin_queries_to_live_voters(&mut self) {
        let me = self.id();
        let targets: BTreeSet<NodeId> = self
            .live_configurations()
            .iter()
            .flat_map(|conf| conf.members())
            .collect();
        let term = self.current_term;
        for peer in targets {
            if peer != me && !self.rejoin.answers.contains_key(&peer) {
                self.rejoin.asked.insert(peer);
                self.send(peer, Message::RejoinQuery(RejoinQuery { term }));
            }
        }
    }

    /// Any node answers a rejoining peer with its current term and configuration, whatever its
    /// own term or standing. A leader also stops counting what the asker acknowledged before:
    /// the question proves its store is new, so those acknowledgements are no longer backed by
    /// a durable log. It says so, with its commit index, which covers every entry it committed
    /// with their help.
    pub(crate) fn handle_rejoin_query(&mut self, from: NodeId) {
        let leader_commit = if self.role == crate::raft::Role::Leader {
            self.forget_acknowledgements_of(from);
            Some(self.commit_index)
        } else {
            None
        };
        let durable = self.log_id_at(self.durable_index);
        let configs = self
            .membership
            .from(self.commit_index)
            .iter()
            .map(|(index, membership)| (self.config_entry_id(*index), membership.conf.clone()))
            .collect();
        let answer = RejoinAnswer {
            term: self.current_term,
            configs,
            last_log_id: durable,
            leader_commit,
            commit: self.log_id_at(self.commit_index),
        };
        self.send(from, Message::RejoinAnswer(answer));
    }

    /// Every election timeout until it is a member: a rejoining node asks afresh (lost queries
    /// or answers, voters that were down); a catching-up node that has not heard from a leader
    /// for an election timeout asks afresh,
    /// since the most up to date log it heard of may have been cut back since (entries that were
    /// not committed), leaving no candidate it could vote for. A fresh round is as sound as the
    /// first: a committed entry stays in every log that holds it.
    pub(crate) fn rejoin_round(&mut self) {
        // Each round starts afresh: what an earlier round heard (a configuration since
        // superseded, whose removed members will never answer; a log tail since cut back) must
        // not hold this one up, and every answer is as sound as any other.
        match self.standing {
            Standing::Member => {}
            Standing::Rejoining => {
                self.rejoin = RejoinState::default();
                self.send_rejoin_queries();
            }
            Standing::CatchingUp { .. } => {
                let leader_heard = self.leader_id.is_some()
                    && self.election_elapsed < self.config.election_ticks_min;
                if !leader_heard {
                    self.rejoin = RejoinState::default();
                    self.send_rejoin_queries_to_live_voters();
                }
            }
        }
    }

    pub(crate) fn handle_rejoin_answer(&mut self, from: NodeId, answer: RejoinAnswer) {
        if self.standing == Standing::Member || from == self.id() {
            return;
        }
        if answer.configs.len() > MAX_CONFIGS_PER_REJOIN_ANSWER {
            // No member's log holds that many configurations past its commit (one change is
            // in progress at a time): not an answer to count, and merging it would cost time
            // quadratic in its length on this node's thread.
            return;
        }
        // The first configuration an answer lists is the one in force at its commit index.
        if let Some((committed, conf)) = answer.configs.first() {
            let known = self.rejoin.newest_commit.as_ref().map(|(c, _, _)| c.index);
            if known.is_none_or(|known| answer.commit.index > known) {
                self.rejoin.newest_commit = Some((answer.commit, committed.index, conf.clone()));
            }
        }
        if let Some(commit) = answer.leader_commit {
            self.rejoin.leader_commits.insert(answer.term, commit);
            // Catching up already: what the floor's leader says counts at once (it holds
            // whichever round it arrives in; the leader of a term is one node).
            if let Standing::CatchingUp {
                floor,
                floor_leader_commit: ref mut known @ None,
                ..
            } = self.standing
            {
                if answer.term == floor {
                    *known = Some(commit);
                    self.check_caught_up();
                }
            }
        }
        // Only a voter's log can hold an entry committed with this node's help (commits count
        // voters): a learner's log, possibly holding an uncommitted tail no voter will ever
        // have, must not raise the floor log past every candidate. A learner whose promotion
        // only a leader held is counted by that leader, but every quorum it is part of holds
        // another voter of the configuration before (`Membership::apply` adds a voter to a
        // configuration of fewer than three through a joint one), which answers as a voter.
        let answered_as_voter = answer.configs.iter().any(|(_, conf)| conf.is_voter(from));
        if answered_as_voter {
            self.rejoin.floor_log = self.rejoin.floor_log.max(answer.last_log_id);
        }
        for config in answer.configs {
            if !self.rejoin.configs.contains(&config) {
                self.rejoin.configs.push(config);
            }
        }
        self.rejoin.answers.insert(from, answer.term);
        if self.joined_as_learner() {
            self.rejoin = RejoinState::default();
            self.standing = Standing::Member;
            return;
        }
        if self.rejoin_answers_suffice() {
            self.finish_rejoin_queries();
        } else if self.standing == Standing::Rejoining {
            // A newer configuration may name voters not asked yet.
            self.send_rejoin_queries();
        }
    }

    /// Whether a rejoining node that joined a running cluster (started with no bootstrap voters)
    /// may be a member without rejoining in full: a leader answered this round, no configuration
    /// it knows of (its own log's from its commit on, and every one an answer this round
    /// reported) names it a voter, and a majority of the voters of each configuration that may
    /// still decide answered in a term no later than the leader's. Its old self, if it had one, was then at most a
    /// learner in every configuration that may still decide: no commit counted its
    /// acknowledgements and no candidate its vote, and the leader that answered stopped counting
    /// what it acknowledged (`handle_rejoin_query`), so its catch-up toward a promotion starts
    /// afresh. The majority keeps a leader deposed without knowing it from being believed
    /// alone: a leader of a later term, which may have made this node a voter in a configuration
    /// the deposed one never saw, was elected before the question by a majority that overlaps
    /// this one, and terms only grow, so no such majority answers; the node then rejoins in full
    /// once every member answered. A founding voter always rejoins in full.
    fn joined_as_learner(&self) -> bool {
        let me = self.id();
        let Some(leader_term) = self.rejoin.leader_commits.keys().next_back().copied() else {
            return false;
        };
        if self.standing != Standing::Rejoining || !self.config.voters.is_empty() {
            return false;
        }
        let live = self.live_configurations();
        let answered_by_then = |voter: NodeId| {
            self.rejoin
                .answers
                .get(&voter)
                .is_some_and(|term| *term <= leader_term)
        };
        !live
            .iter()
            .chain(self.rejoin.configs.iter().map(|(_, conf)| conf))
            .any(|conf| conf.is_voter(me))
            && live
                .iter()
                // A configuration with no voters (the joiner's own, before it learns one)
                // decides nothing.
                .filter(|conf| !conf.all_voters().is_empty())
                .all(|conf| conf.has_quorum(answered_by_then))
    }

    /// Every other member (voter or learner) of each configuration that may still decide
    /// (`live_configurations`) answered. Fewer would not do: a quorum-intersecting set of
    /// answers can all predate a vote or an acknowledgement still in flight to them. A candidate
    /// whose request this node's old self granted may win its term with votes the others grant
    /// only after answering (and a leader may commit an entry with acknowledgements they send
    /// after answering); that candidate (or leader) itself cannot answer without having reached
    /// that term first, and holds that entry, since its request reached the old self before the
    /// store was lost and the question was asked after. Asking every member asks it too; a
    /// member promoted later (a learner) is asked as well.
    pub(crate) fn rejoin_answers_suffice(&self) -> bool {
        let me = self.id();
        let live = self.live_configurations();
        // A node that knows no voter at all (still joining) cannot tell yet.
        live.iter().any(|conf| !conf.all_voters().is_empty())
            && live
                .iter()
                .flat_map(|conf| conf.members())
                .all(|member| member == me || self.rejoin.answers.contains_key(&member))
    }

    /// Step 1 is done: adopt the floor and catch up (or, with nothing to catch up, be a member).
    pub(crate) fn finish_rejoin_queries(&mut self) {
        // The first round's floor bounds every term the old self voted in; a later round (while
        // catching up) only refreshes the floor log. Raising the floor again would chase the
        // terms of the very candidates this node should vote for (without pre-vote every failed
        // election bumps them), and it would never vote.
        let floor = match self.standing {
            Standing::CatchingUp { floor, .. } => floor,
            Standing::Member | Standing::Rejoining => self
                .rejoin
                .answers
                .values()
                .copied()
                .max()
                .unwrap_or(Term::ZERO)
                .max(self.current_term),
        };
        // Fresh answers: the most up to date log among them (possibly behind an earlier round's,
        // whose uncommitted tail may have been cut back since).
        let floor_log = self.rejoin.floor_log;
        let floor_leader_commit = match self.standing {
            Standing::CatchingUp {
                floor_leader_commit: Some(commit),
                ..
            } => Some(commit),
            _ => self.rejoin.leader_commits.get(&floor).copied(),
        };
        if floor > self.current_term {
            let elapsed = self.election_elapsed;
            self.become_follower(floor, None);
            self.election_elapsed = elapsed;
        }
        self.rejoin = RejoinState::default();
        self.standing = Standing::CatchingUp {
            floor,
            floor_log,
            floor_leader_commit,
        };
        self.check_caught_up();
    }

    /// Step 2 is done once the durable log holds an entry of a term after the floor (a
    /// snapshot's last entry counts: it covers the log before it). An entry of the floor's own
    /// term would do only at or past the commit index the floor's leader reported when it
    /// stopped counting the old self (`holds_floor_leaders_commits`); otherwise entries of that
    /// term may have been committed, with the old self's acknowledgement, after it. And only
    /// once this node's term is past the floor: as a member it would vote in its current term,
    /// and the old self may have voted in the floor's. A floor of 0 means no election ever
    /// happened among the voters that answered, so nothing was ever committed: nothing to
    /// catch up.
    pub(crate) fn check_caught_up(&mut self) {
        let Standing::CatchingUp { floor, .. } = self.standing else {
            return;
        };
        let durable_term = self.log_id_at(self.durable_index).term;
        if floor == Term::ZERO
            || durable_term > floor
            || (self.current_term > floor && self.holds_floor_leaders_commits())
        {
            self.standing = Standing::Member;
        }
    }
}

/// What a rejoining node has heard so far (volatile: a restart asks again).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RejoinState {
    /// The term each voter that answered reported.
    pub(crate) answers: std::collections::BTreeMap<NodeId, Term>,
    /// Every configuration an answer reported, with the id of the reporter's entry at its index.
    pub(crate) configs: Vec<(LogId, crate::membership::ConfState)>,
    /// The newest commit an answer reported (its entry's id), with the configuration in force
    /// there and its entry's index.
    pub(crate) newest_commit: Option<(LogId, LogIndex, crate::membership::ConfState)>,
    /// The most up to date durable log an answer reported.
    pub(crate) floor_log: LogId,
    /// The commit index each answer from a leader reported, by its term.
    pub(crate) leader_commits: std::collections::BTreeMap<Term, LogIndex>,
    /// Whom this round of queries went to (an answer may come from any of them).
    pub(crate) asked: BTreeSet<NodeId>,
    /// Ticks since the queries were last sent.
    pub(crate) elapsed: u32,
}
