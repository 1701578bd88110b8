//! A distributed lock built from a lease and a transaction (the recipe of etcd's `concurrency`
//! package), with a fencing token.
//!
//! [`Lock::acquire`] grants a lease and keeps it alive (every third of its TTL) for as long as the
//! lock is wanted or held; it creates the lock's key, attached to the lease, with a transaction
//! that succeeds only if the key does not exist; otherwise it watches the key until it is deleted
//! (released, or its holder's lease expired) and tries again. So the lock passes on when its
//! holder releases it or dies (within one TTL of its last keep-alive, plus an election when the
//! leader is the one that died).
//!
//! A lease can run out while its holder is paused (a long GC, a stopped VM) and the holder cannot
//! know at once. Writes made under the lock should therefore be fenced: [`LockGuard::fenced`]
//! makes a transaction that applies only if the lock key is still the one this holder created
//! ([`LockGuard::fence`], its creation index, grows with every new holder), so a holder whose
//! lock passed on cannot write.

use crate::client::{Client, ClientError, Lease};
use crate::protocol::Consistency;
use crate::store::{Compare, CompareOp, CompareTarget, KeySet, Txn, TxnOp, TxnOpResult};
use crate::watch::WatchBatch;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A named lock on a cluster.
#[derive(Clone)]
pub struct Lock {
    client: Client,
    key: String,
    ttl: Duration,
    owner: Bytes,
}

impl Lock {
    /// The lock held in `key`, by leases of `ttl`; `owner` is written in the key (who holds it,
    /// for people looking).
    pub fn new(
        client: Client,
        key: impl Into<String>,
        ttl: Duration,
        owner: impl Into<Bytes>,
    ) -> Lock {
        Lock {
            client,
            key: key.into(),
            ttl,
            owner: owner.into(),
        }
    }

    /// Wait until the lock is free and take it.
    pub async fn acquire(&self) -> Result<LockGuard, ClientError> {
        let lease = self.client.grant_lease(self.ttl).await?;
        let keeper = KeepAlive::start(self.client.clone(), lease);
        loop {
            let attempt = Txn {
                compare: vec![Compare {
                    key: self.key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(0),
                }],
                success: vec![TxnOp::Put {
                    key: self.key.clone(),
                    value: self.owner.clone(),
                    lease: Some(lease.id),
                }],
                failure: vec![TxnOp::Get {
                    key: self.key.clone(),
                }],
            };
            let result = self.client.txn(attempt).await?;
            if result.outcome.succeeded {
                return Ok(LockGuard {
                    client: self.client.clone(),
                    key: self.key.clone(),
                    lease,
                    fence: result.index,
                    keeper,
                });
            }
            if keeper.lost() {
                return Err(ClientError::NotFound(
                    "the lease expired while waiting for the lock".into(),
                ));
            }
            let holder_written = match result.outcome.results.first() {
                Some(TxnOpResult::Got(Some(holder))) => holder.mod_index,
                // Deleted between the compare and now: try again at once.
                _ => continue,
            };
            self.wait_for_release(holder_written).await?;
        }
    }

    /// Wait until the key, last written at `written`, is deleted.
    async fn wait_for_release(&self, written: u64) -> Result<(), ClientError> {
        let mut watch = self
            .client
            .watch(KeySet::Key(self.key.clone()), Some(written + 1));
        loop {
            let batch: WatchBatch = match watch.next().await {
                Ok(batch) => batch,
                // The history moved on: look at the key again.
                Err(ClientError::Compacted { .. }) => return Ok(()),
                Err(error) => return Err(error),
            };
            if batch
                .events
                .iter()
                .any(|e| e.kind == crate::store::EventKind::Delete)
            {
                return Ok(());
            }
            // Nothing changed for a while: check that the key still exists (cheap).
            if batch.events.is_empty()
                && self
                    .client
                    .get(&self.key, Consistency::Lease)
                    .await?
                    .is_none()
            {
                return Ok(());
            }
        }
    }
}

/// Keeps a lease alive in the background until dropped.
struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl KeepAlive {
    fn start(client: Client, lease: Lease) -> KeepAlive {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease.ttl / 3).await;
                match client.keep_alive(lease.id).await {
                    Ok(_) => {}
                    Err(ClientError::NotFound(_)) => {
                        flag.store(true, Ordering::Release);
                        return;
                    }
                    // Unavailable for now (an election): the next round tries again.
                    Err(error) => tracing::debug!(lease = lease.id, %error, "keep-alive failed"),
                }
            }
        });
        KeepAlive { task, lost }
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A held lock. Dropping it stops the keep-alives (the lock frees itself within its TTL);
/// [`LockGuard::release`] frees it at once.
pub struct LockGuard {
    client: Client,
    key: String,
    lease: Lease,
    fence: u64,
    keeper: KeepAlive,
}

impl LockGuard {
    /// The fencing token: the index at which this holder created the lock key. Every later
    /// holder's is larger.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The lease the lock key is attached to.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// Whether the lease was found expired (the lock may have passed on).
    pub fn is_lost(&self) -> bool {
        self.keeper.lost()
    }

    /// A transaction running `ops` only while this holder still holds the lock (its key is the
    /// one this holder created), else reading the lock key.
    pub fn fenced(&self, ops: Vec<TxnOp>) -> Txn {
        Txn {
            compare: vec![Compare {
                key: self.key.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::CreateIndex(self.fence),
            }],
            success: ops,
            failure: vec![TxnOp::Get {
                key: self.key.clone(),
            }],
        }
    }

    /// Release the lock now (revoking the lease deletes its key).
    pub async fn release(self) -> Result<(), ClientError> {
        match self.client.revoke_lease(self.lease.id).await {
            Ok(_) | Err(ClientError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
