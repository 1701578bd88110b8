//! A leader's view of one follower's log (Figure 2 "nextIndex", "matchIndex"), and the flow control
//! of sending to it: probing for the match point one message at a time, then pipelining a bounded
//! number of messages within a byte budget that adapts to how fast the follower acknowledges.
//! One per peer in the leader's replication state (`replication/peer.rs`).

use crate::message::{AppendEntriesResponse, AppendOutcome, ConflictHint};
use crate::types::{LogId, LogIndex, Term};
use std::collections::VecDeque;

/// How the leader is sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the last entry both logs share: one message in flight, moving `next_index` back on
    /// each rejection.
    Probe,
    /// The match point is known: entries stream out, up to `max_inflight` messages ahead.
    Replicate,
    /// The follower needs entries this leader has compacted: a snapshot is being sent instead
    /// (§7); nothing else is sent until it is installed.
    Snapshot,
}

/// Entries to send next: those after `prev_index` up to and including `last_index` (none when
/// `last_index == prev_index`, a pure probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRange {
    pub prev_index: LogIndex,
    pub last_index: LogIndex,
}

/// What an AppendEntries answer means for the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseEffect {
    /// The follower answered in the leader's term: it is alive, and `matched` (when it accepted) is
    /// the entry it now durably holds, to report for commitment.
    Contact { matched: Option<LogId> },
    /// The follower is rejoining (`crate::rejoin`): send it what it asked for, but it vouches
    /// for nothing (no contact, no match, no confirmation).
    Unvouched,
    /// The follower is in a newer term: the leader must step down (§5.1).
    HigherTerm(Term),
    /// Nothing to report.
    Stale,
}

/// The most doublings of the patience ([`Progress::on_heartbeat_tick`]); it never exceeds an
/// election timeout anyway.
const MAX_PATIENCE_BACKOFF: u32 = 8;

/// One AppendEntries in flight in `Replicate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    /// The last entry it carries.
    last_index: LogIndex,
    /// Its payload bytes, counted against the budget until acknowledged.
    bytes: usize,
    /// The tick it left.
    sent_at: u64,
    /// The driver cut it short at its bound on a message's bytes: it was full.
    cut_short: bool,
}

/// Replication progress of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// `matchIndex`: the last entry known to be durable on the follower and equal to the leader's.
    /// Never decreases within a term.
    matched: LogId,
    /// `nextIndex`: the next entry to send. Invariant: `matched.index < next_index`.
    next_index: LogIndex,
    state: ProgressState,
    /// In `Probe`: whether the one probe is outstanding.
    probe_sent: bool,
    /// In `Probe`: the tick a probe carrying entries was sent, and the last entry it carried.
    /// The success acknowledging them measures how long the follower takes to sync what it is
    /// sent, before anything is pipelined. Not once the probe was resent (Karn's algorithm: an
    /// answer to a resent message may answer either send, and after a partition the first
    /// send's would measure the partition).
    probe_since: Option<(u64, LogIndex)>,
    /// In `Probe`: the probe was resent; it measures nothing until the next probe.
    probe_resent: bool,
    /// In `Replicate`: each message in flight, ascending by index; at most `max_inflight` of them.
    inflight: VecDeque<InFlight>,
    max_inflight: usize,
    /// The payload bytes of the messages in `inflight`.
    inflight_bytes: usize,
    /// The byte budget: no new message leaves while `inflight_bytes` is at or over it (one
    /// message always may). Within `min_budget..=max_inflight_bytes`, adapted to the latency of
    /// acknowledgements ([`Progress::on_acknowledged`]).
    budget: usize,
    /// The budget's floor, an eighth of its ceiling.
    min_budget: usize,
    /// The budget's ceiling (`ReplicationConfig::max_inflight_bytes`).
    max_inflight_bytes: usize,
    /// Nagle's algorithm (`ReplicationConfig::coalesce_below_bytes`): while the newest message
    /// in flight carries fewer payload bytes than this, a message that is not full waits for
    /// the answer. 0: never.
    coalesce_below_bytes: usize,
    /// The budget was what held the pipeline back (it filled) since the budget last changed:
    /// only then does a prompt acknowledgement say the follower could drain more.
    budget_filled: bool,
    /// Acknowledgement latency, in ticks, the budget keeps the pipeline under: a fraction of the
    /// election timeout, so that a heartbeat queued behind the bytes in flight is never late.
    latency_target: u64,
    /// The budget was last halved at this tick: a message sent then or before was already in
    /// flight, and its late acknowledgement halves it no further (one cut per window, as TCP).
    budget_cut_at: Option<u64>,
    /// The acknowledgement latency, smoothed (RFC 6298's SRTT, in eighths of a tick); `None`
    /// until the first acknowledgement.
    smoothed_latency: Option<u64>,
    /// The least time, in ticks, a message stays unacknowledged before it is presumed lost
    /// ([`Progress::on_heartbeat_tick`]): two heartbeat periods.
    min_patience: u64,
    /// The most: the minimum election timeout (at least `min_patience`). Also the most one
    /// acknowledgement's latency counts for in the smoothed latency.
    max_patience: u64,
    /// Messages presumed lost since the last acknowledgement measured: each doubles the patience
    /// (TCP's backoff of its retransmission timeout), so a follower slower than the patience so
    /// far is waited for long enough to be measured. At most [`MAX_PATIENCE_BACKOFF`].
    patience_backoff: u32,
    /// The `request_id` of the answer that last advanced `matched`: a later rejection saying the
    /// follower's log ends before `matched` means it lost its data (an earlier one is a late
    /// duplicate).
    matched_request: u64,
    /// The follower lost its data (a rejection showed its log shorter than it acknowledged)
    /// since this was last asked ([`Progress::take_data_loss`]).
    data_loss: bool,
}

impl Progress {
    /// Progress of a follower when a leader takes office with `last_index` in its log: optimistic
    /// `next_index` just past it (§5.3), nothing known matched.
    pub fn new(last_index: LogIndex, max_inflight: usize) -> Progress {
        Progress {
            matched: LogId::ZERO,
            next_index: last_index.next(),
            state: ProgressState::Probe,
            probe_sent: false,
            probe_since: None,
            probe_resent: false,
            inflight: VecDeque::new(),
            max_inflight: max_inflight.max(1),
            inflight_bytes: 0,
            budget: usize::MAX,
            min_budget: usize::MAX,
            max_inflight_bytes: usize::MAX,
            coalesce_below_bytes: 0,
            budget_filled: false,
            latency_target: u64::MAX,
            budget_cut_at: None,
            smoothed_latency: None,
            min_patience: 0,
            max_patience: u64::MAX,
            patience_backoff: 0,
            matched_request: 0,
            data_loss: false,
        }
    }

    /// Bounds the payload bytes in flight as well as the number of messages (a byte budget for
    /// the pipeline, so large entries do not pile up unacknowledged). The budget starts at
    /// `max_bytes` and moves between an eighth of it and all of it.
    pub fn with_max_inflight_bytes(mut self, max_bytes: usize) -> Progress {
        self.max_inflight_bytes = max_bytes.max(1);
        self.min_budget = (self.max_inflight_bytes / 8).max(1);
        self.budget = self.max_inflight_bytes;
        self
    }

    /// Small messages wait while one smaller than `bytes` is in flight, unless full (Nagle's
    /// algorithm; see [`Progress::next_send`]). 0: every message pipelines.
    pub fn with_coalescing(mut self, bytes: usize) -> Progress {
        self.coalesce_below_bytes = bytes;
        self
    }

    /// The leader's timing, in ticks: a message unacknowledged for two `heartbeat_ticks` (or
    /// longer, when acknowledgements have been slow) is presumed lost; the byte budget keeps
    /// acknowledgements within a quarter of `election_ticks_min`, so that heartbeats and their
    /// answers, queued behind what is in flight, arrive well within an election timeout.
    pub fn with_timing(mut self, heartbeat_ticks: u32, election_ticks_min: u32) -> Progress {
        self.min_patience = 2 * u64::from(heartbeat_ticks.max(1));
        self.max_patience = u64::from(election_ticks_min).max(self.min_patience);
        self.latency_target = (u64::from(election_ticks_min) / 4).max(1);
        self
    }

    pub fn matched(&self) -> LogId {
        self.matched
    }
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }
    pub fn state(&self) -> ProgressState {
        self.state
    }
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
    /// Payload bytes of the messages in flight.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }
    /// The byte budget now: no new message leaves while this much is in flight.
    pub fn budget(&self) -> usize {
        self.budget
    }
    /// The smoothed acknowledgement latency in ticks, once anything was acknowledged.
    pub fn smoothed_latency_ticks(&self) -> Option<u64> {
        self.smoothed_latency.map(|eighths| eighths.div_ceil(8))
    }

    /// The invariants of the leader's view of the follower, whose log ends at `last_index`:
    /// `matched` is in the leader's log and before `next_index`, which is at most one past the
    /// end; what is in flight is ascending, within `next_index`, counted in `inflight_bytes`.
    pub fn check(&self, last_index: LogIndex) -> Result<(), String> {
        let bytes: usize = self
            .inflight
            .iter()
            .fold(0usize, |sum, message| sum.saturating_add(message.bytes));
        let ascending = self
            .inflight
            .iter()
            .zip(self.inflight.iter().skip(1))
            .all(|(a, b)| a.last_index < b.last_index && a.sent_at <= b.sent_at);
        let holds = self.matched.index < self.next_index
            && self.matched.index <= last_index
            && self.next_index <= last_index.next()
            && ascending
            && self
                .inflight
                .back()
                .is_none_or(|message| message.last_index < self.next_index)
            && bytes == self.inflight_bytes
            && self.min_budget <= self.budget
            && self.budget <= self.max_inflight_bytes
            && self.inflight.len() <= self.max_inflight
            && (self.state == ProgressState::Replicate || self.inflight.is_empty())
            && (self.state == ProgressState::Probe
                || (self.probe_since.is_none() && !self.probe_resent))
            && self.min_patience <= self.max_patience
            && self.patience_backoff <= MAX_PATIENCE_BACKOFF;
        if holds {
            Ok(())
        } else {
            Err(format!("{self:?} (log ends at {last_index})"))
        }
    }

    /// What to send next, given the leader's last index and the most entries one message may carry;
    /// `None` when flow control says wait.
    pub fn next_send(&self, last_log_index: LogIndex, max_entries: u64) -> Option<SendRange> {
        let prev_index = self.next_index.prev();
        let last_index =
            last_log_index.min(LogIndex(prev_index.0.saturating_add(max_entries.max(1))));
        match self.state {
            ProgressState::Probe if self.probe_sent => None,
            ProgressState::Probe => Some(SendRange {
                prev_index,
                last_index: last_index.max(prev_index),
            }),
            ProgressState::Snapshot => None,
            ProgressState::Replicate => {
                if self.inflight.len() >= self.max_inflight
                    || self.inflight_bytes >= self.budget
                    || self.next_index > last_log_index
                    || self.coalesces(prev_index, last_index, max_entries)
                {
                    None
                } else {
                    Some(SendRange {
                        prev_index,
                        last_index,
                    })
                }
            }
        }
    }

    /// Whether the message `prev_index..=last_index` waits to grow (Nagle's algorithm, RFC 896):
    /// it is not full (`max_entries`), and the newest message in flight is small and was not cut
    /// short by the driver's byte bound, so its answer comes soon and everything proposed
    /// meanwhile leaves in one message instead of many (the follower syncs each message; one
    /// that arrives while it syncs waits for that sync anyway). Full messages (catching up) and
    /// bulky ones (large entries) pipeline.
    fn coalesces(&self, prev_index: LogIndex, last_index: LogIndex, max_entries: u64) -> bool {
        last_index.0.saturating_sub(prev_index.0) < max_entries.max(1)
            && self
                .inflight
                .back()
                .is_some_and(|newest| newest.bytes < self.coalesce_below_bytes && !newest.cut_short)
    }

    /// A message carrying entries up to `last_index` left at tick `now` (what
    /// [`Progress::next_send`] proposed).
    pub fn on_sent(&mut self, range: SendRange, now: u64) {
        self.on_sent_bytes(range, 0, now);
    }

    /// As [`Progress::on_sent`], for a message carrying `bytes` of payload (counted against the
    /// byte budget until acknowledged).
    pub fn on_sent_bytes(&mut self, range: SendRange, bytes: usize, now: u64) {
        self.on_sent_message(range, bytes, false, now);
    }

    /// As [`Progress::on_sent_bytes`], for a message the driver may have `cut_short` of what was
    /// ordered, at its bound on a message's bytes (a full message: what follows it pipelines).
    pub fn on_sent_message(&mut self, range: SendRange, bytes: usize, cut_short: bool, now: u64) {
        match self.state {
            ProgressState::Probe => {
                self.probe_sent = true;
                if range.last_index > range.prev_index && !self.probe_resent {
                    self.probe_since.get_or_insert((now, range.last_index));
                }
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => {
                let sent_at = self
                    .inflight
                    .back()
                    .map_or(now, |last| last.sent_at.max(now));
                self.inflight.push_back(InFlight {
                    last_index: range.last_index,
                    bytes,
                    sent_at,
                    cut_short,
                });
                self.inflight_bytes = self.inflight_bytes.saturating_add(bytes);
                self.next_index = range.last_index.next();
                if self.inflight_bytes >= self.budget {
                    self.budget_filled = true;
                }
            }
        }
    }

    /// The follower holds the leader's log up to `matched`, said at tick `now`. Returns whether
    /// `matched` advanced.
    pub fn on_success(&mut self, matched: LogId, now: u64) -> bool {
        let advanced = matched.index > self.matched.index;
        if advanced {
            self.matched = matched;
        }
        while let Some(&message) = self.inflight.front() {
            if message.last_index > matched.index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes = self.inflight_bytes.saturating_sub(message.bytes);
            self.on_acknowledged(message.sent_at, now);
        }
        match self.state {
            // An answer that vouches for less than the probe asked about (a heartbeat's answer)
            // does not end the probe.
            ProgressState::Probe if matched.index < self.next_index.prev() => {}
            ProgressState::Probe => {
                // Only an answer acknowledging the probe's entries waited for the follower's
                // sync (a heartbeat's, answered at once, would understate it).
                if let Some((since, last)) = self.probe_since.take() {
                    if matched.index >= last {
                        self.note_latency(now.saturating_sub(since));
                    }
                }
                self.state = ProgressState::Replicate;
                self.clear_probe();
                self.clear_inflight();
                self.next_index = self.matched.index.next();
            }
            ProgressState::Replicate => {
                self.next_index = self.next_index.max(self.matched.index.next());
            }
            // A late answer to a message from before the snapshot began: it only moves `matched`
            // (and `next_index` past it).
            ProgressState::Snapshot => {
                self.next_index = self.next_index.max(self.matched.index.next());
            }
        }
        advanced
    }

    /// The follower's log ends before `first_index` although it acknowledged more earlier: it lost
    /// its data (a wiped or replaced disk). What it held no longer counts: probe again from its
    /// log's end. (The caller tells this from a late duplicate of an old rejection, which looks
    /// the same, by when the rejected message was sent.)
    pub fn on_follower_data_loss(&mut self, first_index: LogIndex) {
        self.matched = LogId::ZERO;
        self.next_index = first_index.max(LogIndex(1));
        self.become_probe();
    }

    /// Send a snapshot instead of entries: the follower needs entries from before the leader's
    /// log start.
    pub fn become_snapshot(&mut self) {
        self.state = ProgressState::Snapshot;
        self.clear_probe();
        self.clear_inflight();
    }

    /// The snapshot could not be sent (none to open, or unreadable): probe again from what the
    /// follower is known to hold.
    pub fn on_snapshot_abandoned(&mut self) {
        self.next_index = self.matched.index.next();
        self.become_probe();
    }

    /// The follower installed a snapshot ending at `last_included`: it holds the leader's log up
    /// to there, and entries stream from the next one. Returns whether `matched` advanced.
    pub fn on_snapshot_installed(&mut self, last_included: LogId) -> bool {
        let advanced = last_included.index > self.matched.index;
        if advanced {
            self.matched = last_included;
        }
        self.state = ProgressState::Replicate;
        self.clear_probe();
        self.clear_inflight();
        self.next_index = self.matched.index.next();
        advanced
    }

    /// The follower does not hold the entry at `rejected_prev_index`. Returns whether anything
    /// changed; a stale rejection (of a message that no longer matters) changes nothing.
    pub fn on_reject(&mut self, rejected_prev_index: LogIndex, hint: ConflictHint) -> bool {
        match self.state {
            ProgressState::Snapshot => return false,
            ProgressState::Replicate if rejected_prev_index <= self.matched.index => return false,
            ProgressState::Probe if rejected_prev_index != self.next_index.prev() => return false,
            _ => {}
        }
        // Skip back past the follower's whole conflicting term, or to just past its last entry when
        // its log is shorter (§5.3's optimisation); never before what is known to match.
        let target = rejected_prev_index.min(hint.first_index);
        self.next_index = target.max(self.matched.index.next()).max(LogIndex(1));
        self.become_probe();
        true
    }

    /// An answer from the follower to a message sent in `leader_term`. Updates the progress and says
    /// what the node must hear of it.
    pub fn on_response(
        &mut self,
        leader_term: Term,
        response: &AppendEntriesResponse,
        now: u64,
    ) -> ResponseEffect {
        if response.term > leader_term {
            return ResponseEffect::HigherTerm(response.term);
        }
        if response.term < leader_term {
            // An answer to a message of an older term: nothing to learn from it.
            return ResponseEffect::Stale;
        }
        match response.outcome {
            AppendOutcome::Success { matched } => {
                if self.on_success(matched, now) {
                    self.matched_request = self.matched_request.max(response.request_id);
                }
                ResponseEffect::Contact {
                    matched: Some(self.matched),
                }
            }
            AppendOutcome::Reject {
                rejected_prev_index,
                hint,
            } => {
                if !self.lost_data(response.request_id, hint) {
                    self.on_reject(rejected_prev_index, hint);
                }
                ResponseEffect::Contact { matched: None }
            }
            AppendOutcome::Rejoining {
                rejected_prev_index,
                hint,
            } => {
                if !self.lost_data(response.request_id, hint) {
                    self.on_rejoining(rejected_prev_index, hint);
                }
                ResponseEffect::Unvouched
            }
            // Same term yet "stale": not from a correct follower. Ignore it.
            AppendOutcome::StaleTerm => ResponseEffect::Stale,
        }
    }

    /// Whether an answer to message `request_id` says the follower's log ends before what it
    /// acknowledged, in answer to a message sent after that acknowledgement: it lost its data (a
    /// wiped or replaced disk). If so, probe again from its log's end.
    fn lost_data(&mut self, request_id: u64, hint: ConflictHint) -> bool {
        let lost = hint.conflict_term.is_none()
            && hint.first_index <= self.matched.index
            && request_id > self.matched_request;
        if lost {
            self.on_follower_data_loss(hint.first_index);
            self.data_loss = true;
        }
        lost
    }

    /// Whether the follower was found to have lost its data since the last call.
    pub fn take_data_loss(&mut self) -> bool {
        std::mem::take(&mut self.data_loss)
    }

    /// A rejoining follower's answer: go on from where it says, forward past what it appended or
    /// back to where its log diverges, probing; it vouched for nothing.
    ///
    /// An answer that leaves the probe where it was (a rejoining node that holds the leader's
    /// whole log, refusing each probe the same way) does not end it: the next one leaves at the
    /// next heartbeat, not at once, or the two would trade probes and refusals for as long as
    /// the node rejoins, as fast as the network carries them.
    pub fn on_rejoining(&mut self, rejected_prev_index: LogIndex, hint: ConflictHint) {
        match self.state {
            ProgressState::Snapshot => return,
            ProgressState::Replicate if rejected_prev_index < self.matched.index => return,
            ProgressState::Probe if rejected_prev_index != self.next_index.prev() => return,
            _ => {}
        }
        let target = if hint.first_index > rejected_prev_index {
            hint.first_index
        } else {
            rejected_prev_index.min(hint.first_index)
        };
        let next_index = target.max(self.matched.index.next()).max(LogIndex(1));
        if self.state == ProgressState::Probe && next_index == self.next_index {
            return;
        }
        self.next_index = next_index;
        self.become_probe();
    }

    /// A heartbeat period passed, at tick `now`: resend a lost probe; give up on messages that
    /// went unanswered for longer than acknowledgements take ([`Progress::patience`]), and probe
    /// again from the match point.
    pub fn on_heartbeat_tick(&mut self, now: u64) {
        match self.state {
            ProgressState::Probe => {
                if self.probe_sent {
                    // Resent at the next pump: what answers it measures nothing (Karn).
                    self.probe_resent = true;
                    self.probe_since = None;
                }
                self.probe_sent = false;
            }
            ProgressState::Replicate => {
                let presumed_lost = self
                    .inflight
                    .front()
                    .is_some_and(|oldest| now.saturating_sub(oldest.sent_at) >= self.patience());
                if presumed_lost {
                    self.patience_backoff = (self.patience_backoff + 1).min(MAX_PATIENCE_BACKOFF);
                    self.next_index = self.matched.index.next();
                    self.become_probe();
                }
            }
            ProgressState::Snapshot => {}
        }
    }

    /// How long, in ticks, a message may stay unacknowledged before it is presumed lost: two
    /// heartbeat periods, or four times the smoothed acknowledgement latency when that is longer
    /// (a follower whose disk is slow still holds what it was sent; resending it would only add
    /// to its load), but never more than an election timeout.
    fn patience(&self) -> u64 {
        let slow = self
            .smoothed_latency_ticks()
            .map_or(0, |ticks| ticks.saturating_mul(4));
        (self.min_patience.max(slow))
            .saturating_mul(1 << self.patience_backoff)
            .min(self.max_patience)
    }

    /// A message sent at tick `sent_at` was acknowledged at `now`: adapt the byte budget to the
    /// latency (a delay-based AIMD, as TCP's congestion control). Over `latency_target`, this
    /// time and on average (a lone late answer is not a trend), the bytes in flight take too
    /// long to drain: halve the budget, once per window. Well under it while the budget was what
    /// held the pipeline back: the follower drains faster than it is fed, so grow the budget by
    /// a quarter.
    fn on_acknowledged(&mut self, sent_at: u64, now: u64) {
        let latency = now.saturating_sub(sent_at);
        self.note_latency(latency);
        let smoothed = self.smoothed_latency_ticks().unwrap_or(latency);
        if latency > self.latency_target && smoothed > self.latency_target {
            if self.budget_cut_at.is_none_or(|cut| sent_at > cut) {
                self.budget = (self.budget / 2).max(self.min_budget);
                self.budget_cut_at = Some(now);
                self.budget_filled = false;
            }
        } else if latency.saturating_mul(2) <= self.latency_target && self.budget_filled {
            self.budget = self
                .budget
                .saturating_add((self.budget / 4).max(1))
                .min(self.max_inflight_bytes);
            self.budget_filled = false;
        }
    }

    /// One more measure of how long the follower takes to acknowledge, in ticks; one counts for
    /// at most an election timeout (a message held up by a partition says little about the
    /// follower).
    fn note_latency(&mut self, latency: u64) {
        let latency = latency.min(self.max_patience);
        self.patience_backoff = 0;
        let eighths = latency.saturating_mul(8);
        self.smoothed_latency = Some(match self.smoothed_latency {
            None => eighths,
            Some(smoothed) => smoothed - smoothed / 8 + latency,
        });
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.clear_probe();
        self.clear_inflight();
    }

    /// A probe ended or begins afresh: none outstanding, nothing being measured.
    fn clear_probe(&mut self) {
        self.probe_sent = false;
        self.probe_since = None;
        self.probe_resent = false;
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64, term: u64) -> LogId {
        LogId::new(Term(term), LogIndex(index))
    }

    fn range(prev: u64, last: u64) -> SendRange {
        SendRange {
            prev_index: LogIndex(prev),
            last_index: LogIndex(last),
        }
    }

    #[test]
    fn a_follower_that_lost_its_log_is_probed_from_its_end_again() {
        let mut progress = Progress::new(LogIndex(10), 4);
        progress.on_sent(range(10, 10), 0);
        progress.on_success(id(10, 1), 0);
        assert_eq!(progress.matched(), id(10, 1));
        // It comes back empty and says so: its log ends before index 1.
        progress.on_follower_data_loss(LogIndex(1));
        assert_eq!(progress.matched(), LogId::ZERO);
        assert_eq!(progress.state(), ProgressState::Probe);
        assert_eq!(progress.next_index(), LogIndex(1));
    }

    #[test]
    fn the_byte_budget_holds_back_the_pipeline_until_acknowledged() {
        let mut progress = Progress::new(LogIndex(0), 100).with_max_inflight_bytes(1000);
        progress.on_sent(range(0, 0), 0);
        progress.on_success(id(0, 0), 0);
        assert_eq!(progress.state(), ProgressState::Replicate);
        // One message may always leave, even one over the budget on its own.
        assert_eq!(progress.next_send(LogIndex(30), 10), Some(range(0, 10)));
        progress.on_sent_bytes(range(0, 10), 600, 0);
        assert_eq!(progress.next_send(LogIndex(30), 10), Some(range(10, 20)));
        progress.on_sent_bytes(range(10, 20), 600, 0);
        assert_eq!(progress.inflight_bytes(), 1200);
        assert_eq!(
            progress.next_send(LogIndex(30), 10),
            None,
            "1200 of 1000 bytes in flight"
        );
        progress.on_success(id(10, 1), 0);
        assert_eq!(progress.inflight_bytes(), 600);
        assert_eq!(progress.next_send(LogIndex(30), 10), Some(range(20, 30)));
        // Falling back to probing forgets what was in flight.
        progress.on_reject(
            LogIndex(20),
            ConflictHint {
                conflict_term: Some(Term(1)),
                first_index: LogIndex(15),
            },
        );
        assert_eq!(progress.inflight_bytes(), 0);
    }

    #[test]
    fn small_messages_wait_for_the_answer_while_full_and_bulky_ones_pipeline() {
        let mut progress = Progress::new(LogIndex(0), 8).with_coalescing(1000);
        progress.on_sent(range(0, 0), 0);
        progress.on_success(id(0, 0), 0);
        assert_eq!(progress.state(), ProgressState::Replicate);
        // Nothing in flight: whatever there is leaves at once.
        assert_eq!(progress.next_send(LogIndex(2), 10), Some(range(0, 2)));
        progress.on_sent_bytes(range(0, 2), 200, 0);
        // A small message in flight: what was proposed meanwhile waits while it is not full...
        assert_eq!(progress.next_send(LogIndex(5), 10), None, "3 of 10 entries");
        assert_eq!(
            progress.next_send(LogIndex(11), 10),
            None,
            "9 of 10 entries"
        );
        // ...and leaves whole once the answer comes.
        progress.on_success(id(2, 1), 0);
        assert_eq!(progress.next_send(LogIndex(11), 10), Some(range(2, 11)));
        progress.on_sent_bytes(range(2, 11), 900, 0);
        // A full message does not wait (a follower catching up is streamed to).
        assert_eq!(progress.next_send(LogIndex(25), 10), Some(range(11, 21)));
        progress.on_sent_bytes(range(11, 21), 1000, 0);
        // The newest in flight is bulky (large entries): the rest pipelines too.
        assert_eq!(progress.next_send(LogIndex(25), 10), Some(range(21, 25)));
        progress.on_sent_bytes(range(21, 25), 400, 0);
        assert_eq!(progress.next_send(LogIndex(26), 10), None, "small again");
        // A message the driver cut short at its byte bound was full: the rest follows at once.
        let mut cut = progress.clone();
        cut.on_success(id(25, 1), 0);
        assert_eq!(cut.next_send(LogIndex(30), 10), Some(range(25, 30)));
        cut.on_sent_message(range(25, 26), 100, true, 0);
        assert_eq!(cut.next_send(LogIndex(30), 10), Some(range(26, 30)));
        // Presumed lost: the patience runs out, what was in flight is forgotten, and the waiting
        // entries leave from the last acknowledged one.
        let mut lost = progress.clone().with_timing(1, 10);
        lost.on_heartbeat_tick(2);
        assert_eq!(lost.state(), ProgressState::Probe);
        assert_eq!(lost.inflight(), 0);
        assert!(lost.next_send(LogIndex(26), 10).is_some());
        // Without coalescing every message pipelines.
        let mut eager = Progress::new(LogIndex(0), 8);
        eager.on_sent(range(0, 0), 0);
        eager.on_success(id(0, 0), 0);
        eager.on_sent_bytes(range(0, 2), 200, 0);
        assert_eq!(eager.next_send(LogIndex(5), 10), Some(range(2, 5)));
    }

    #[test]
    fn probes_one_message_at_a_time_then_pipelines() {
        let mut progress = Progress::new(LogIndex(10), 2);
        assert_eq!(progress.next_send(LogIndex(10), 100), Some(range(10, 10)));
        progress.on_sent(range(10, 10), 0);
        assert_eq!(
            progress.next_send(LogIndex(12), 100),
            None,
            "one probe in flight"
        );
        assert!(progress.on_success(id(10, 1), 0));
        assert_eq!(progress.state(), ProgressState::Replicate);
        assert_eq!(progress.next_send(LogIndex(12), 1), Some(range(10, 11)));
        progress.on_sent(range(10, 11), 0);
        assert_eq!(progress.next_send(LogIndex(12), 1), Some(range(11, 12)));
        progress.on_sent(range(11, 12), 0);
        assert_eq!(
            progress.next_send(LogIndex(14), 1),
            None,
            "window of 2 is full"
        );
        assert!(progress.on_success(id(11, 2), 0));
        assert_eq!(progress.inflight(), 1);
        assert_eq!(progress.next_send(LogIndex(14), 10), Some(range(12, 14)));
    }

    #[test]
    fn rejection_skips_back_a_term_and_never_below_the_match() {
        let mut progress = Progress::new(LogIndex(10), 4);
        progress.on_sent(range(10, 10), 0);
        let hint = ConflictHint {
            conflict_term: Some(Term(3)),
            first_index: LogIndex(6),
        };
        assert!(progress.on_reject(LogIndex(10), hint));
        assert_eq!(progress.next_index(), LogIndex(6));
        assert_eq!(progress.next_send(LogIndex(10), 100), Some(range(5, 10)));
        // A rejection of a message that was never the current probe is stale.
        assert!(!progress.on_reject(LogIndex(9), hint));
        assert_eq!(progress.next_index(), LogIndex(6));
    }

    #[test]
    fn shorter_follower_log_jumps_to_its_end() {
        let mut progress = Progress::new(LogIndex(100), 4);
        progress.on_sent(range(100, 100), 0);
        let hint = ConflictHint {
            conflict_term: None,
            first_index: LogIndex(4),
        };
        progress.on_reject(LogIndex(100), hint);
        assert_eq!(progress.next_index(), LogIndex(4));
    }

    #[test]
    fn stale_rejection_in_replicate_is_ignored() {
        let mut progress = Progress::new(LogIndex(5), 4);
        progress.on_sent(range(5, 5), 0);
        progress.on_success(id(5, 1), 0);
        progress.on_sent(range(5, 8), 0);
        let hint = ConflictHint {
            conflict_term: None,
            first_index: LogIndex(3),
        };
        assert!(!progress.on_reject(LogIndex(4), hint));
        assert_eq!(progress.state(), ProgressState::Replicate);
        assert_eq!(progress.next_index(), LogIndex(9));
    }

    #[test]
    fn lost_messages_fall_back_to_probing_after_two_heartbeats() {
        let mut progress = Progress::new(LogIndex(5), 4).with_timing(5, 20);
        progress.on_sent(range(5, 5), 0);
        progress.on_success(id(5, 1), 0);
        progress.on_sent(range(5, 9), 0);
        progress.on_heartbeat_tick(5);
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_heartbeat_tick(10);
        assert_eq!(progress.state(), ProgressState::Probe);
        assert_eq!(progress.next_index(), LogIndex(6));
    }

    #[test]
    fn a_follower_that_acknowledges_slowly_is_given_longer_before_a_resend() {
        let mut progress = Progress::new(LogIndex(1), 8).with_timing(5, 100);
        // Its disk takes 20 ticks per write: every acknowledgement comes 20 ticks late, that of
        // the probe's entry first (a heartbeat's answer, at once, measures nothing).
        progress.on_sent(range(1, 2), 0);
        progress.on_success(id(0, 0), 2);
        assert_eq!(progress.smoothed_latency_ticks(), None);
        progress.on_success(id(2, 1), 20);
        assert_eq!(progress.smoothed_latency_ticks(), Some(20));
        assert_eq!(progress.state(), ProgressState::Replicate);
        for round in 1..8u64 {
            progress.on_sent(range(round + 1, round + 2), round * 20);
            progress.on_success(id(round + 2, 1), round * 20 + 20);
        }
        assert_eq!(progress.smoothed_latency_ticks(), Some(20));
        // A message 30 ticks out is waiting for that disk, not lost: two heartbeats (10 ticks)
        // would resend it, four smoothed latencies (80) do not yet.
        progress.on_sent(range(9, 10), 200);
        progress.on_heartbeat_tick(230);
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_heartbeat_tick(280);
        assert_eq!(progress.state(), ProgressState::Probe);
    }

    #[test]
    fn a_resent_probe_measures_nothing_and_a_partition_counts_for_an_election_timeout_at_most() {
        // Heartbeats every 5 ticks, elections after 40 to 80.
        let mut progress = Progress::new(LogIndex(1), 8).with_timing(5, 40);
        progress.on_sent(range(1, 2), 0);
        // A partition: the probe goes unanswered, and is resent every heartbeat period.
        for tick in 1..=100u64 {
            progress.on_heartbeat_tick(tick * 5);
            if progress.next_send(LogIndex(2), 10).is_some() {
                progress.on_sent(range(1, 2), tick * 5);
            }
        }
        // It heals: the first send's answer arrives 500 ticks after it left (Karn: not measured).
        progress.on_success(id(2, 1), 505);
        assert_eq!(progress.state(), ProgressState::Replicate);
        assert_eq!(progress.smoothed_latency_ticks(), None);
        // A message held 300 ticks counts for one election timeout (40), no more.
        progress.on_sent(range(2, 3), 510);
        progress.on_success(id(3, 1), 810);
        assert_eq!(progress.smoothed_latency_ticks(), Some(40));
        progress.check(LogIndex(3)).expect("invariants");
    }

    #[test]
    fn each_message_presumed_lost_doubles_the_patience_until_one_is_measured() {
        let mut progress = Progress::new(LogIndex(0), 8).with_timing(5, 200);
        progress.on_sent(range(0, 0), 0);
        progress.on_success(id(0, 0), 0);
        // Nothing measured yet: presumed lost after two heartbeats (10 ticks).
        progress.on_sent(range(0, 1), 0);
        progress.on_heartbeat_tick(10);
        assert_eq!(progress.state(), ProgressState::Probe);
        // The next one is given 20, then 40.
        progress.on_success(id(0, 0), 12);
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_sent(range(0, 1), 12);
        progress.on_heartbeat_tick(30);
        assert_eq!(
            progress.state(),
            ProgressState::Replicate,
            "20 ticks of patience"
        );
        progress.on_heartbeat_tick(32);
        assert_eq!(progress.state(), ProgressState::Probe);
        progress.on_success(id(0, 0), 33);
        progress.on_sent(range(0, 1), 33);
        progress.on_heartbeat_tick(70);
        assert_eq!(
            progress.state(),
            ProgressState::Replicate,
            "40 ticks of patience"
        );
        // Acknowledged after 38 ticks: measured, and the patience is four of those.
        progress.on_success(id(1, 1), 71);
        assert_eq!(progress.smoothed_latency_ticks(), Some(38));
        progress.on_sent(range(1, 2), 71);
        progress.on_heartbeat_tick(71 + 151);
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_heartbeat_tick(71 + 152);
        assert_eq!(progress.state(), ProgressState::Probe);
        // Never more than an election timeout (200), however slow.
        progress.on_success(id(1, 1), 230);
        for i in 0..40u64 {
            progress.on_sent(range(1 + i, 2 + i), 300 + i * 1000);
            progress.on_success(id(2 + i, 1), 300 + i * 1000 + 900);
        }
        assert_eq!(progress.smoothed_latency_ticks(), Some(200));
        progress.on_sent(range(41, 42), 50_000);
        progress.on_heartbeat_tick(50_199);
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_heartbeat_tick(50_200);
        assert_eq!(progress.state(), ProgressState::Probe);
    }

    #[test]
    fn one_late_acknowledgement_among_prompt_ones_leaves_the_budget_alone() {
        let mut progress = Progress::new(LogIndex(0), 64)
            .with_max_inflight_bytes(6400)
            .with_timing(5, 40);
        progress.on_sent(range(0, 0), 0);
        progress.on_success(id(0, 0), 2);
        for i in 0..8u64 {
            progress.on_sent_bytes(range(i, i + 1), 100, i * 10);
            progress.on_success(id(i + 1, 1), i * 10 + 2);
        }
        progress.on_sent_bytes(range(8, 9), 100, 100);
        progress.on_success(id(9, 1), 130);
        assert_eq!(progress.budget(), 6400);
    }

    #[test]
    fn the_byte_budget_halves_when_acknowledgements_are_late_and_grows_when_prompt() {
        // Target: a quarter of 40 ticks, 10 ticks. Budget 800..=6400 bytes.
        let mut progress = Progress::new(LogIndex(0), 64)
            .with_max_inflight_bytes(6400)
            .with_timing(5, 40);
        // The follower takes 15 ticks to acknowledge, the probe first: over the target.
        progress.on_sent(range(0, 0), 0);
        progress.on_success(id(0, 0), 15);
        assert_eq!(progress.budget(), 6400);
        // Four messages out at once, acknowledged 15 ticks later.
        for i in 0..4u64 {
            progress.on_sent_bytes(range(i, i + 1), 1000, 15);
        }
        progress.on_success(id(4, 1), 30);
        assert_eq!(progress.budget(), 3200, "halved once for the whole window");
        // Sent after the cut and late again: halved again, never under the floor.
        for round in 0..4u64 {
            progress.on_sent_bytes(range(4 + round, 5 + round), 1000, 35 + round * 20);
            progress.on_success(id(5 + round, 1), 35 + round * 20 + 15);
        }
        assert_eq!(progress.budget(), 800);
        // Prompt acknowledgements grow it only while it is what holds the pipeline back.
        progress.on_sent_bytes(range(8, 9), 100, 200);
        progress.on_success(id(9, 1), 201);
        assert_eq!(progress.budget(), 800, "the budget did not fill");
        let mut now = 300;
        let mut index = 9;
        for _ in 0..40 {
            while progress.next_send(LogIndex(1000), 1).is_some() {
                progress.on_sent_bytes(range(index, index + 1), 500, now);
                index += 1;
            }
            progress.on_success(id(index, 1), now + 2);
            now += 10;
        }
        assert_eq!(progress.budget(), 6400, "grown back to the ceiling");
        progress.check(LogIndex(1000)).expect("invariants");
    }

    #[test]
    fn a_heartbeat_answer_below_the_probe_does_not_end_probing() {
        let mut progress = Progress::new(LogIndex(10), 4);
        progress.on_sent(range(10, 10), 0);
        assert!(!progress.on_success(id(0, 0), 0));
        assert_eq!(progress.state(), ProgressState::Probe);
        assert_eq!(progress.next_index(), LogIndex(11));
        progress.on_success(id(10, 2), 0);
        assert_eq!(progress.state(), ProgressState::Replicate);
    }

    #[test]
    fn lost_probe_is_resent_on_heartbeat() {
        let mut progress = Progress::new(LogIndex(5), 4);
        progress.on_sent(range(5, 5), 0);
        assert_eq!(progress.next_send(LogIndex(5), 10), None);
        progress.on_heartbeat_tick(5);
        assert_eq!(progress.next_send(LogIndex(5), 10), Some(range(5, 5)));
    }
}
