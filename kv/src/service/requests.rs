//! The requests beyond single keys: their validation, a compare-and-swap as a transaction, and
//! watch polls.

use super::{Local, Runner};
use crate::protocol::{
    ErrorKind, KvRequest, KvResponse, ServiceError, WatchAnswer, WatchRequest, MAX_TXN_GETS,
    MAX_TXN_OPS, MAX_WATCH_WAIT_MS,
};
use crate::store::{cas_outcome, check_ttl, KvCommand, KvOp, KvOutcome, Session, Txn, TxnOp};
use crate::watch::{Subscription, WatchBatch, WatchError};
use bytes::Bytes;
use std::time::Duration;

fn bad_request(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorKind::BadRequest, message)
}

impl Runner {
    /// Validation of the requests [`Runner::validate`] leaves to this.
    pub(super) fn validate_extended(&self, request: &KvRequest) -> Result<(), ServiceError> {
        let max_key = self.config.max_key_bytes;
        match request {
            KvRequest::Range { query, .. } => query.check(max_key).map_err(bad_request),
            KvRequest::DeleteRange { keys, .. } => keys.check(max_key).map_err(bad_request),
            KvRequest::Txn { txn, .. } => self.validate_txn(txn),
            KvRequest::Watch(watch) => {
                watch.keys.check(max_key).map_err(bad_request)?;
                if watch.wait_ms > MAX_WATCH_WAIT_MS {
                    return Err(bad_request(format!(
                        "a watch poll waits at most {MAX_WATCH_WAIT_MS} ms"
                    )));
                }
                if watch.start == Some(0) {
                    return Err(bad_request("log indexes start at 1"));
                }
                Ok(())
            }
            KvRequest::LeaseGrant { ttl_ms, .. } => check_ttl(*ttl_ms).map_err(bad_request),
            KvRequest::LeaseRevoke { id, .. }
            | KvRequest::LeaseKeepAlive { id }
            | KvRequest::LeaseInfo { id } => {
                if *id == 0 {
                    Err(bad_request("lease ids are positive integers"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn validate_txn(&self, txn: &Txn) -> Result<(), ServiceError> {
        if txn.compare.len() > MAX_TXN_OPS
            || txn.success.len() > MAX_TXN_OPS
            || txn.failure.len() > MAX_TXN_OPS
        {
            return Err(bad_request(format!(
                "a transaction has at most {MAX_TXN_OPS} compares and {MAX_TXN_OPS} operations in each branch"
            )));
        }
        let gets = |ops: &[TxnOp]| {
            ops.iter()
                .filter(|op| matches!(op, TxnOp::Get { .. }))
                .count()
        };
        if gets(&txn.success) > MAX_TXN_GETS || gets(&txn.failure) > MAX_TXN_GETS {
            return Err(bad_request(format!(
                "a transaction reads at most {MAX_TXN_GETS} keys in each branch (its answer is kept for retries); read more with a range read"
            )));
        }
        for keys in txn.key_sets() {
            keys.check(self.config.max_key_bytes).map_err(bad_request)?;
        }
        let max = self.config.max_value_bytes;
        if let Some(value) = txn.values().find(|value| value.len() > max) {
            return Err(ServiceError::new(
                ErrorKind::TooLarge,
                format!("a value is {} bytes; the limit is {max}", value.len()),
            ));
        }
        // All of it travels in one log entry.
        let limit = max + 64 * 1024;
        if txn.payload_bytes() > limit {
            return Err(ServiceError::new(
                ErrorKind::TooLarge,
                format!(
                    "the transaction carries {} bytes; the limit is {limit}",
                    txn.payload_bytes()
                ),
            ));
        }
        if let Some(lease) = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put { lease: Some(0), .. } => Some(0),
                _ => None,
            })
        {
            return Err(bad_request(format!("lease ids are positive; got {lease}")));
        }
        Ok(())
    }

    /// A compare-and-swap, proposed as its transaction ([`Txn::cas`]) and answered as a
    /// compare-and-swap.
    pub(super) async fn cas(
        &self,
        key: &str,
        expected: &Option<Bytes>,
        value: &Bytes,
        session: Option<Session>,
    ) -> Local {
        let command = KvCommand {
            session,
            op: KvOp::Txn(Txn::cas(key, expected.clone(), value.clone())),
        };
        match self.write(command).await {
            Local::Done(KvResponse::Written {
                index,
                outcome: KvOutcome::Txn(outcome),
            }) => Local::Done(KvResponse::Written {
                index,
                outcome: cas_outcome(outcome),
            }),
            other => other,
        }
    }

    /// One watch poll: the changes from `watch.start`, as soon as there are some, else an empty
    /// batch after `watch.wait_ms`.
    pub(super) async fn watch_poll(&self, watch: &WatchRequest) -> KvResponse {
        let opened = Subscription::open(
            self.node.clone(),
            &self.hub,
            watch.keys.clone(),
            watch.start,
        )
        .await;
        let batch = match opened {
            Ok((_, Some(first))) => Ok(first),
            Ok((mut subscription, None)) => {
                subscription
                    .next(Duration::from_millis(watch.wait_ms))
                    .await
            }
            Err(error) => Err(error),
        };
        match batch {
            Ok(batch) if watch.start.is_none() && !fits_a_poll(&batch) => {
                // A poll from "now" cannot be run again (it would start later): rather than an
                // answer past the room it reserved, it says nothing changed before the first
                // event, and the client's next poll, which starts there, replays them (and may
                // be run again until its answer has room).
                let through = batch
                    .events
                    .first()
                    .map_or(batch.through, |event| event.index().saturating_sub(1));
                KvResponse::Watch(WatchAnswer::Batch(WatchBatch {
                    events: Vec::new(),
                    through,
                }))
            }
            Ok(batch) => KvResponse::Watch(WatchAnswer::Batch(batch)),
            Err(WatchError::Ended(end)) => KvResponse::Watch(WatchAnswer::Ended(end)),
            Err(WatchError::Unavailable(message)) => {
                KvResponse::Error(ServiceError::new(ErrorKind::Unavailable, message))
            }
        }
    }
}

/// Whether `batch` fits the room a watch poll reserves ([`super::answer_bound::WATCH_POLL`]).
fn fits_a_poll(batch: &WatchBatch) -> bool {
    let bytes: usize = batch
        .events
        .iter()
        .map(|event| event.kv.cost() + super::answer_bound::PER_ITEM)
        .sum();
    bytes <= super::answer_bound::WATCH_POLL
}
