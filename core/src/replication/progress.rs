//! A leader's view of one follower's log (Figure 2 "nextIndex", "matchIndex"), and the flow control
//! of sending to it: probing for the match point one message at a time, then pipelining a bounded
//! number of messages. One per peer in the leader's replication state (`replication/peer.rs`).

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
    /// In `Replicate`: the last index and payload bytes of each message in flight, ascending by
    /// index; at most `max_inflight` of them.
    inflight: VecDeque<(LogIndex, usize)>,
    max_inflight: usize,
    /// The payload bytes of the messages in `inflight`.
    inflight_bytes: usize,
    /// No new message leaves while `inflight_bytes` is at or over this (one message always may).
    max_inflight_bytes: usize,
    /// Heartbeat periods since `matched` last advanced while messages were in flight: after two, the
    /// messages are presumed lost and the leader probes again.
    stalled_heartbeats: u32,
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
            inflight: VecDeque::new(),
            max_inflight: max_inflight.max(1),
            inflight_bytes: 0,
            max_inflight_bytes: usize::MAX,
            stalled_heartbeats: 0,
            matched_request: 0,
            data_loss: false,
        }
    }

    /// Bounds the payload bytes in flight as well as the number of messages (a byte budget for
    /// the pipeline, so large entries do not pile up unacknowledged).
    pub fn with_max_inflight_bytes(mut self, max_bytes: usize) -> Progress {
        self.max_inflight_bytes = max_bytes.max(1);
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

    /// The invariants of the leader's view of the follower, whose log ends at `last_index`:
    /// `matched` is in the leader's log and before `next_index`, which is at most one past the
    /// end; what is in flight is ascending, within `next_index`, counted in `inflight_bytes`.
    pub fn check(&self, last_index: LogIndex) -> Result<(), String> {
        let bytes: usize = self
            .inflight
            .iter()
            .fold(0usize, |sum, (_, b)| sum.saturating_add(*b));
        let ascending = self
            .inflight
            .iter()
            .zip(self.inflight.iter().skip(1))
            .all(|(a, b)| a.0 < b.0);
        let holds = self.matched.index < self.next_index
            && self.matched.index <= last_index
            && self.next_index <= last_index.next()
            && ascending
            && self
                .inflight
                .back()
                .is_none_or(|(last, _)| *last < self.next_index)
            && bytes == self.inflight_bytes
            && self.inflight.len() <= self.max_inflight
            && (self.state == ProgressState::Replicate || self.inflight.is_empty());
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
                    || self.inflight_bytes >= self.max_inflight_bytes
                    || self.next_index > last_log_index
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

    /// A message carrying entries up to `last_index` left (what [`Progress::next_send`] proposed).
    pub fn on_sent(&mut self, range: SendRange) {
        self.on_sent_bytes(range, 0);
    }

    /// As [`Progress::on_sent`], for a message carrying `bytes` of payload (counted against the
    /// byte budget until acknowledged).
    pub fn on_sent_bytes(&mut self, range: SendRange, bytes: usize) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
            ProgressState::Replicate => {
                self.inflight.push_back((range.last_index, bytes));
                self.inflight_bytes = self.inflight_bytes.saturating_add(bytes);
                self.next_index = range.last_index.next();
            }
        }
    }

    /// The follower holds the leader's log up to `matched`. Returns whether `matched` advanced.
    pub fn on_success(&mut self, matched: LogId) -> bool {
        let advanced = matched.index > self.matched.index;
        if advanced {
            self.matched = matched;
            self.stalled_heartbeats = 0;
        }
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > matched.index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
        }
        match self.state {
            // An answer that vouches for less than the probe asked about (a heartbeat's answer)
            // does not end the probe.
            ProgressState::Probe if matched.index < self.next_index.prev() => {}
            ProgressState::Probe => {
                self.state = ProgressState::Replicate;
                self.probe_sent = false;
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
        self.probe_sent = false;
        self.clear_inflight();
        self.stalled_heartbeats = 0;
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
        self.probe_sent = false;
        self.clear_inflight();
        self.stalled_heartbeats = 0;
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
                if self.on_success(matched) {
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
        self.next_index = target.max(self.matched.index.next()).max(LogIndex(1));
        self.become_probe();
    }

    /// A heartbeat period passed: resend a lost probe; give up on messages that went unanswered.
    pub fn on_heartbeat_tick(&mut self) {
        match self.state {
            ProgressState::Probe => self.probe_sent = false,
            ProgressState::Replicate if !self.inflight.is_empty() => {
                self.stalled_heartbeats += 1;
                if self.stalled_heartbeats >= 2 {
                    self.next_index = self.matched.index.next();
                    self.become_probe();
                }
            }
            ProgressState::Replicate | ProgressState::Snapshot => {}
        }
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.clear_inflight();
        self.stalled_heartbeats = 0;
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
        progress.on_sent(range(10, 10));
        progress.on_success(id(10, 1));
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
        progress.on_sent(range(0, 0));
        progress.on_success(id(0, 0));
        assert_eq!(progress.state(), ProgressState::Replicate);
        // One message may always leave, even one over the budget on its own.
        assert_eq!(progress.next_send(LogIndex(30), 10), Some(range(0, 10)));
        progress.on_sent_bytes(range(0, 10), 600);
        assert_eq!(progress.next_send(LogIndex(30), 10), Some(range(10, 20)));
        progress.on_sent_bytes(range(10, 20), 600);
        assert_eq!(progress.inflight_bytes(), 1200);
        assert_eq!(
            progress.next_send(LogIndex(30), 10),
            None,
            "1200 of 1000 bytes in flight"
        );
        progress.on_success(id(10, 1));
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
    fn probes_one_message_at_a_time_then_pipelines() {
        let mut progress = Progress::new(LogIndex(10), 2);
        assert_eq!(progress.next_send(LogIndex(10), 100), Some(range(10, 10)));
        progress.on_sent(range(10, 10));
        assert_eq!(
            progress.next_send(LogIndex(12), 100),
            None,
            "one probe in flight"
        );
        assert!(progress.on_success(id(10, 1)));
        assert_eq!(progress.state(), ProgressState::Replicate);
        assert_eq!(progress.next_send(LogIndex(12), 1), Some(range(10, 11)));
        progress.on_sent(range(10, 11));
        assert_eq!(progress.next_send(LogIndex(12), 1), Some(range(11, 12)));
        progress.on_sent(range(11, 12));
        assert_eq!(
            progress.next_send(LogIndex(14), 1),
            None,
            "window of 2 is full"
        );
        assert!(progress.on_success(id(11, 2)));
        assert_eq!(progress.inflight(), 1);
        assert_eq!(progress.next_send(LogIndex(14), 10), Some(range(12, 14)));
    }

    #[test]
    fn rejection_skips_back_a_term_and_never_below_the_match() {
        let mut progress = Progress::new(LogIndex(10), 4);
        progress.on_sent(range(10, 10));
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
        progress.on_sent(range(100, 100));
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
        progress.on_sent(range(5, 5));
        progress.on_success(id(5, 1));
        progress.on_sent(range(5, 8));
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
        let mut progress = Progress::new(LogIndex(5), 4);
        progress.on_sent(range(5, 5));
        progress.on_success(id(5, 1));
        progress.on_sent(range(5, 9));
        progress.on_heartbeat_tick();
        assert_eq!(progress.state(), ProgressState::Replicate);
        progress.on_heartbeat_tick();
        assert_eq!(progress.state(), ProgressState::Probe);
        assert_eq!(progress.next_index(), LogIndex(6));
    }

    #[test]
    fn a_heartbeat_answer_below_the_probe_does_not_end_probing() {
        let mut progress = Progress::new(LogIndex(10), 4);
        progress.on_sent(range(10, 10));
        assert!(!progress.on_success(id(0, 0)));
        assert_eq!(progress.state(), ProgressState::Probe);
        assert_eq!(progress.next_index(), LogIndex(11));
        progress.on_success(id(10, 2));
        assert_eq!(progress.state(), ProgressState::Replicate);
    }

    #[test]
    fn lost_probe_is_resent_on_heartbeat() {
        let mut progress = Progress::new(LogIndex(5), 4);
        progress.on_sent(range(5, 5));
        assert_eq!(progress.next_send(LogIndex(5), 10), None);
        progress.on_heartbeat_tick();
        assert_eq!(progress.next_send(LogIndex(5), 10), Some(range(5, 5)));
    }
}
