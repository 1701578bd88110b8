//! How large the native protocol's answer to a request may be, known before the request runs: a
//! session reserves that much of its budget and its node's first
//! ([`raftor_actors::network::answer_budget`]), so clients that pipeline large reads and never
//! take the answers cannot make the node build them past its budgets.

use crate::protocol::{KvRequest, MAX_TXN_GETS, MAX_TXN_OPS};
use crate::store::{LEASE_VIEW_MAX_KEYS, MAX_RANGE_BYTES};

/// Room for an answer that carries no value: an outcome, an error with the leader's address (the
/// answer to a request that does not decode), a status report, a small membership.
pub const SMALL_ANSWER: usize = 16 * 1024;

/// What each key or result in a page or a transaction's answer adds besides its key and value
/// (revisions, lengths, enum tags).
pub(crate) const PER_ITEM: usize = 64;

/// Reserved for a watch poll, whose answer is not known until events arrive (up to
/// [`crate::watch::WATCH_BATCH_BYTES`] and one event): its rest is charged when the batch is built,
/// so a session can keep many watches open without each holding a batch's room for a minute.
pub(crate) const WATCH_POLL: usize = 64 * 1024;

/// The limits the answers' sizes follow from.
#[derive(Clone, Copy, Debug)]
pub struct AnswerLimits {
    pub max_value_bytes: usize,
    pub max_key_bytes: usize,
}

impl AnswerLimits {
    /// The largest answer `request` may get: an upper bound for every request but a watch poll,
    /// the list of every lease and a retried write (whose answer is what its session recorded),
    /// which are charged the rest once built, or run again once there is room
    /// ([`raftor::PreparedAnswer::may_run_again`]).
    pub fn bound(&self, request: &KvRequest) -> usize {
        let one_value = self.max_value_bytes + self.max_key_bytes + PER_ITEM;
        SMALL_ANSWER
            + match request {
                KvRequest::Get { .. } | KvRequest::Cas { .. } => one_value,
                KvRequest::Range { query, .. } if query.count_only => 0,
                KvRequest::Range { query, .. } => {
                    // A page stops once it holds `max_bytes`: it may pass it by one key and value
                    // (by one key, keys only).
                    let page =
                        usize::try_from(query.max_bytes.min(MAX_RANGE_BYTES)).unwrap_or(usize::MAX);
                    let items = usize::try_from(query.limit).unwrap_or(usize::MAX);
                    let one = if query.keys_only {
                        self.max_key_bytes + PER_ITEM
                    } else {
                        one_value
                    };
                    page.saturating_add(one)
                        .saturating_add(items.saturating_mul(PER_ITEM))
                }
                KvRequest::Txn { .. } => MAX_TXN_GETS * one_value + MAX_TXN_OPS * PER_ITEM,
                KvRequest::Watch(_) => WATCH_POLL,
                KvRequest::LeaseInfo { .. } => {
                    LEASE_VIEW_MAX_KEYS * (self.max_key_bytes + PER_ITEM)
                }
                _ => 0,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Consistency;
    use crate::store::{KeySet, RangeQuery};

    const LIMITS: AnswerLimits = AnswerLimits {
        max_value_bytes: 1 << 20,
        max_key_bytes: 4096,
    };

    #[test]
    fn a_read_reserves_room_for_the_largest_value_and_a_write_for_an_outcome() {
        let get = KvRequest::Get {
            key: "k".into(),
            consistency: Consistency::Linearizable,
        };
        assert!(LIMITS.bound(&get) > LIMITS.max_value_bytes);
        let delete = KvRequest::Delete {
            key: "k".into(),
            session: None,
        };
        assert_eq!(LIMITS.bound(&delete), SMALL_ANSWER);
    }

    #[test]
    fn reading_a_lease_reserves_room_for_every_key_it_may_list() {
        let bound = LIMITS.bound(&KvRequest::LeaseInfo { id: 7 });
        assert!(
            bound >= LEASE_VIEW_MAX_KEYS * LIMITS.max_key_bytes,
            "{bound}"
        );
    }

    #[test]
    fn a_page_reserves_its_byte_limit_and_one_value_more() {
        let mut query = RangeQuery::new(KeySet::Prefix("a".into()));
        query.max_bytes = 8 << 20;
        query.limit = 100;
        let range = |query: RangeQuery| KvRequest::Range {
            query,
            consistency: Consistency::Linearizable,
        };
        let bound = LIMITS.bound(&range(query.clone()));
        assert!(bound >= (8 << 20) + LIMITS.max_value_bytes + 100 * PER_ITEM);
        query.count_only = true;
        assert_eq!(LIMITS.bound(&range(query.clone())), SMALL_ANSWER);
        query.count_only = false;
        query.keys_only = true;
        let keys_only = LIMITS.bound(&range(query));
        assert!(
            keys_only < (8 << 20) + LIMITS.max_value_bytes,
            "a page of keys only reserves no value: {keys_only}"
        );
    }
}
