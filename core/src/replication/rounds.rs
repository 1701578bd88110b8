//! The leadership-confirmation rounds a leader waits on for one peer (thesis §6.4): the rules
//! issue a round with every heartbeat and for reads between heartbeats; the first answer from the
//! peer to a message numbered from the round's start on confirms it. Kept per peer in the
//! leader's replication state (`replication/peer.rs`).

use std::collections::VecDeque;

/// How many rounds wait for an answer at most: the oldest go first (a newer round's answer
/// confirms it anyway).
const MAX_ROUNDS_WAITING: usize = 64;

/// Rounds waiting for one peer's answer, oldest first, each with the number (`request_id`) of the
/// first message that answers for it. Rounds and their first numbers only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingRounds {
    waiting: VecDeque<(u64, u64)>,
}

impl PendingRounds {
    /// Round `round` began: the message numbered `first_request` and every later one answer for it.
    pub fn note(&mut self, round: u64, first_request: u64) {
        debug_assert!(self
            .waiting
            .back()
            .is_none_or(|(r, first)| *r <= round && *first <= first_request));
        self.waiting.push_back((round, first_request));
        if self.waiting.len() > MAX_ROUNDS_WAITING {
            self.waiting.pop_front();
        }
    }

    /// The peer answered message `request_id` in the leader's term: the newest round that message
    /// answers for, now confirmed (with every older one), if any was waiting.
    pub fn answered(&mut self, request_id: u64) -> Option<u64> {
        let mut confirmed = None;
        while let Some((round, first)) = self.waiting.front().copied() {
            if first > request_id {
                break;
            }
            confirmed = Some(round);
            self.waiting.pop_front();
        }
        confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_confirms_the_newest_round_its_message_answers_for() {
        let mut rounds = PendingRounds::default();
        rounds.note(1, 10);
        rounds.note(2, 12);
        rounds.note(3, 15);
        assert_eq!(rounds.answered(9), None, "sent before round 1 began");
        assert_eq!(rounds.answered(13), Some(2), "rounds 1 and 2");
        assert_eq!(
            rounds.answered(14),
            None,
            "nothing left that 14 answers for"
        );
        assert_eq!(rounds.answered(20), Some(3));
        for round in 0..(MAX_ROUNDS_WAITING as u64 + 5) {
            rounds.note(round + 10, round + 100);
        }
        // Rounds 10 to 14 (first messages 100 to 104) went first.
        assert_eq!(rounds.answered(104), None, "the oldest went first");
        assert_eq!(rounds.answered(105), Some(15));
    }
}
