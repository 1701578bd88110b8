//! Lease requests on the leader: grants (which start the lease's clock in the lessor),
//! keep-alives (answered only after a majority confirmed the leadership) and reads with the time
//! left. The rules are in [`crate::lessor`].

use super::{Local, Runner};
use crate::protocol::{ErrorKind, KvResponse, ServiceError};
use crate::store::{KvAnswer, KvCommand, KvOp, KvOutcome, KvQuery, LeaseView, Session};
use raftor::Consistency;
use tokio::time::Instant;

fn not_found(id: u64) -> Local {
    Local::Done(KvResponse::Error(ServiceError::new(
        ErrorKind::NotFound,
        format!("lease {id} does not exist (it expired, was revoked, or was never granted)"),
    )))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Runner {
    pub(super) async fn grant_lease(&self, ttl_ms: u64, session: Option<Session>) -> Local {
        let arrived = Instant::now();
        let command = KvCommand {
            session,
            op: KvOp::LeaseGrant { ttl_ms },
        };
        let answer = self.write(command).await;
        if let Local::Done(KvResponse::Written {
            outcome: KvOutcome::LeaseGranted { id, ttl_ms },
            ..
        }) = &answer
        {
            // Its clock starts when the grant arrived: never later than the client thinks.
            self.lessor.borrow_mut().granted(*id, *ttl_ms, arrived);
        }
        answer
    }

    /// Read lease `id` linearizably (which confirms this node's leadership after the read
    /// arrived).
    async fn read_lease(&self, id: u64) -> Result<Option<LeaseView>, Local> {
        match self
            .answer(KvQuery::Lease { id }, Consistency::Linearizable)
            .await?
        {
            KvAnswer::Lease(lease) => Ok(lease),
            _ => Err(Local::Done(super::unexpected_answer())),
        }
    }

    pub(super) async fn keep_alive(&self, id: u64) -> Local {
        let arrived = Instant::now();
        let mut lease = match self.read_lease(id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return not_found(id),
            Err(other) => return other,
        };
        let now = Instant::now();
        let remaining = self
            .lessor
            .borrow_mut()
            .keep_alive(id, lease.ttl_ms, arrived, now);
        match remaining {
            // Its expiry is already proposed: too late.
            None => not_found(id),
            Some(remaining) => {
                lease.remaining_ms = Some(millis(remaining));
                lease.keys = Vec::new();
                Local::Done(KvResponse::Lease(lease))
            }
        }
    }

    pub(super) async fn lease_info(&self, id: u64) -> Local {
        match self.read_lease(id).await {
            Ok(Some(mut lease)) => {
                lease.remaining_ms = self
                    .lessor
                    .borrow()
                    .remaining(id, Instant::now())
                    .map(millis);
                if self.lessor.borrow().is_expiring(id) {
                    return not_found(id);
                }
                Local::Done(KvResponse::Lease(lease))
            }
            Ok(None) => not_found(id),
            Err(other) => other,
        }
    }

    pub(super) async fn leases(&self) -> Local {
        match self
            .answer(KvQuery::Leases, Consistency::Linearizable)
            .await
        {
            Ok(KvAnswer::Leases(mut leases)) => {
                let now = Instant::now();
                let lessor = self.lessor.borrow();
                for lease in &mut leases {
                    lease.remaining_ms = lessor.remaining(lease.id, now).map(millis);
                }
                Local::Done(KvResponse::Leases(leases))
            }
            Ok(_) => Local::Done(super::unexpected_answer()),
            Err(other) => other,
        }
    }
}
