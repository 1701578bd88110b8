//! Leases: grant, keep alive, revoke, read.

use super::{Client, ClientError};
use crate::protocol::{KvRequest, KvResponse};
use crate::store::{KvOutcome, LeaseView};
use std::time::Duration;

/// A lease granted to this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id (the index of the entry that granted it).
    pub id: u64,
    pub ttl: Duration,
}

fn unexpected(response: KvResponse) -> ClientError {
    ClientError::Unknown(format!("unexpected answer: {response:?}"))
}

impl Client {
    /// Grant a lease of `ttl` (from 1 s to 7 days). It ends `ttl` after the last keep-alive the
    /// leader acknowledged (or, after a leader change, after the new leader's election), and its
    /// keys with it.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease, ClientError> {
        let request = KvRequest::LeaseGrant {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            session: Some(self.next_session()),
        };
        match self.write(request).await?.outcome {
            KvOutcome::LeaseGranted { id, ttl_ms } => Ok(Lease {
                id,
                ttl: Duration::from_millis(ttl_ms),
            }),
            other => Err(ClientError::Unknown(format!(
                "unexpected outcome: {other:?}"
            ))),
        }
    }

    /// Restart lease `id`'s TTL; the time it has left now. [`ClientError::NotFound`] once it has
    /// ended (its keys are gone).
    pub async fn keep_alive(&self, id: u64) -> Result<Duration, ClientError> {
        match self.call(KvRequest::LeaseKeepAlive { id }, false).await? {
            KvResponse::Lease(lease) => Ok(Duration::from_millis(lease.remaining_ms.unwrap_or(0))),
            other => Err(unexpected(other)),
        }
    }

    /// End lease `id` now and delete its keys: how many went. [`ClientError::NotFound`] if it
    /// had already ended.
    pub async fn revoke_lease(&self, id: u64) -> Result<u64, ClientError> {
        let request = KvRequest::LeaseRevoke {
            id,
            session: Some(self.next_session()),
        };
        match self.write(request).await?.outcome {
            KvOutcome::LeaseRevoked {
                existed: true,
                deleted,
            } => Ok(deleted),
            KvOutcome::LeaseRevoked { existed: false, .. } => {
                Err(ClientError::NotFound(format!("lease {id} does not exist")))
            }
            other => Err(ClientError::Unknown(format!(
                "unexpected outcome: {other:?}"
            ))),
        }
    }

    /// Lease `id`: its TTL, time left and keys.
    pub async fn lease(&self, id: u64) -> Result<LeaseView, ClientError> {
        match self.call(KvRequest::LeaseInfo { id }, false).await? {
            KvResponse::Lease(lease) => Ok(lease),
            other => Err(unexpected(other)),
        }
    }

    /// Every lease.
    pub async fn leases(&self) -> Result<Vec<LeaseView>, ClientError> {
        match self.call(KvRequest::Leases, false).await? {
            KvResponse::Leases(leases) => Ok(leases),
            other => Err(unexpected(other)),
        }
    }
}
