//! Reads with revisions, range and prefix reads, range deletes and transactions.

use super::{Client, ClientError};
use crate::protocol::{Consistency, KvRequest, KvResponse};
use crate::store::{
    KeySet, KeyValue, KvOutcome, RangePage, RangeQuery, Txn, TxnOp, TxnOpResult, TxnOutcome,
};
use bytes::Bytes;

/// What a transaction did, and the index it was applied at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    pub index: u64,
    pub outcome: TxnOutcome,
}

fn unexpected(response: KvResponse) -> ClientError {
    ClientError::Unknown(format!("unexpected answer: {response:?}"))
}

impl Client {
    /// A key with its value and revisions (`None`: absent).
    pub async fn get_entry(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, ClientError> {
        let page = self
            .range(RangeQuery::new(KeySet::Key(key.to_owned())), consistency)
            .await?;
        Ok(page.kvs.into_iter().next())
    }

    /// One page of a range read; ask for the next with `query.after` =
    /// [`RangePage::next_after`].
    pub async fn range(
        &self,
        query: RangeQuery,
        consistency: Consistency,
    ) -> Result<RangePage, ClientError> {
        match self
            .call(KvRequest::Range { query, consistency }, false)
            .await?
        {
            KvResponse::Range(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Every key of `keys`, page after page (each page read at its own index).
    pub async fn range_all(
        &self,
        keys: KeySet,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut query = RangeQuery::new(keys);
        let mut all = Vec::new();
        loop {
            let page = self.range(query.clone(), consistency).await?;
            query.after = page.next_after().map(str::to_owned);
            all.extend(page.kvs);
            if query.after.is_none() {
                return Ok(all);
            }
        }
    }

    /// Run a transaction (under the client's exactly-once session).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, ClientError> {
        let request = KvRequest::Txn {
            txn,
            session: Some(self.next_session()),
        };
        let written = self.write(request).await?;
        match written.outcome {
            KvOutcome::Txn(outcome) => Ok(TxnResult {
                index: written.index,
                outcome,
            }),
            KvOutcome::LeaseNotFound { id } => Err(ClientError::NotFound(format!(
                "lease {id} does not exist; nothing was written"
            ))),
            other => Err(ClientError::Unknown(format!(
                "unexpected outcome: {other:?}"
            ))),
        }
    }

    /// Write `key` attached to lease `lease`: it is deleted when the lease ends.
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        lease: u64,
    ) -> Result<u64, ClientError> {
        let txn = Txn {
            success: vec![TxnOp::Put {
                key: key.to_owned(),
                value: value.into(),
                lease: Some(lease),
            }],
            ..Txn::default()
        };
        Ok(self.txn(txn).await?.index)
    }

    /// Delete every key of `keys`: the index and how many went.
    pub async fn delete_range(&self, keys: KeySet) -> Result<(u64, u64), ClientError> {
        let request = KvRequest::DeleteRange {
            keys,
            session: Some(self.next_session()),
        };
        let written = self.write(request).await?;
        match written.outcome {
            KvOutcome::Txn(TxnOutcome { results, .. }) => {
                let count = match results.first() {
                    Some(TxnOpResult::Deleted { count }) => *count,
                    _ => 0,
                };
                Ok((written.index, count))
            }
            other => Err(ClientError::Unknown(format!(
                "unexpected outcome: {other:?}"
            ))),
        }
    }
}
