//! The lock recipe ([`raftor_kv::lock`]) on a real 3-node cluster: workers increment a counter
//! under the lock with fenced writes while the leader is killed; every increment counts once; a
//! holder that dies without releasing loses the lock within its TTL.

mod common;

use bytes::Bytes;
use common::Cluster;
use raftor_kv::lock::Lock;
use raftor_kv::protocol::Consistency;
use raftor_kv::store::TxnOp;
use raftor_kv::{Client, ClientOptions};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// One worker: `rounds` times, take the lock, read the counter, write it plus one (fenced),
/// release. Returns the fences it held, in order.
async fn worker(client: Client, name: String, rounds: u32, fences: Rc<RefCell<Vec<u64>>>) {
    let lock = Lock::new(
        client.clone(),
        "locks/counter",
        Duration::from_secs(2),
        name,
    );
    for _ in 0..rounds {
        let guard = lock.acquire().await.expect("acquired");
        fences.borrow_mut().push(guard.fence());
        let current = client
            .get("counter", Consistency::Linearizable)
            .await
            .expect("read")
            .map_or(0, |v| {
                String::from_utf8_lossy(&v)
                    .parse::<u64>()
                    .expect("a number")
            });
        let write = guard.fenced(vec![TxnOp::Put {
            key: "counter".into(),
            value: Bytes::from((current + 1).to_string()),
            lease: None,
        }]);
        let result = client.txn(write).await.expect("written");
        assert!(result.outcome.succeeded, "the lock was still held");
        guard.release().await.expect("released");
    }
}

#[actix_rt::test]
async fn a_lock_serialises_increments_across_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let fences = Rc::new(RefCell::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let client =
                Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
            actix_rt::spawn(worker(client, format!("worker-{i}"), 10, fences.clone()))
        })
        .collect();
    // Kill the leader once a third of the increments are done.
    while fences.borrow().len() < 13 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.stop_leader().await;
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .expect("the workers finish")
            .expect("a worker");
    }
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let counter = client
        .get("counter", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(counter.as_deref(), Some(&b"40"[..]), "every increment once");
    let fences = fences.borrow().clone();
    assert_eq!(fences.len(), 40);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "each holder's fence is above the last: {fences:?}"
    );
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn a_holder_that_dies_loses_the_lock_within_its_ttl() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    let lock = Lock::new(client.clone(), "locks/job", Duration::from_secs(1), "first");
    let first = lock.acquire().await.expect("acquired");
    let stale_fence = first.fence();
    // The holder "dies": its keep-alives stop, nothing is released.
    drop(first);
    let started = tokio::time::Instant::now();
    let second = Lock::new(
        client.clone(),
        "locks/job",
        Duration::from_secs(1),
        "second",
    )
    .acquire()
    .await
    .expect("acquired after the first holder's lease expired");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    assert!(second.fence() > stale_fence);
    second.release().await.expect("released");
    cluster.shutdown().await;
}
