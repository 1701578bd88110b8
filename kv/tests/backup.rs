//! Backups over HTTP from a live cluster: taken under write load from a follower, the file holds
//! every write acknowledged at or before its index, with the value written, and checks out.

mod common;

use common::{http, Cluster};
use raftor::StateMachine;
use raftor_kv::backup::{load_state, verify};
use raftor_kv::store::{KvAnswer, KvQuery};
use raftor_kv::{Client, ClientOptions};
use std::cell::RefCell;
use std::rc::Rc;

#[actix_rt::test]
async fn a_backup_under_write_load_holds_every_write_acknowledged_before_its_index() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    // Writers run on while the backup is taken; each records what was acknowledged, at which index.
    let acknowledged: Rc<RefCell<Vec<(String, String, u64)>>> = Rc::default();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = client.clone();
        let acknowledged = acknowledged.clone();
        writers.push(actix_rt::spawn(async move {
            for i in 0..150 {
                let (key, value) = (format!("w{writer}-{i}"), format!("v{i}"));
                let written = client.put(&key, value.clone()).await.expect("put");
                acknowledged.borrow_mut().push((key, value, written.index));
            }
        }));
    }
    while acknowledged.borrow().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let follower = cluster.follower().await;
    let reply = http(&cluster.http(follower), "GET", "/v1/admin/backup", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for writer in writers {
        writer.await.expect("writer");
    }
    let header = verify(&mut &reply.body[..]).expect("the backup checks out");
    assert_eq!(header.node, follower.0);
    let (_, machine) = load_state(&mut &reply.body[..]).expect("the state loads");
    let acknowledged = acknowledged.borrow().clone();
    let before: Vec<_> = acknowledged
        .iter()
        .filter(|(_, _, index)| *index <= header.index)
        .collect();
    assert!(
        before.len() >= 200,
        "{} writes before index {}",
        before.len(),
        header.index
    );
    for (key, value, index) in before {
        let answer = machine.query(&KvQuery::Get { key: key.clone() });
        assert!(
            matches!(&answer, KvAnswer::Value(Some(v)) if v[..] == *value.as_bytes()),
            "{key} (written at {index}) is missing from the backup at {}: {answer:?}",
            header.index
        );
    }
    // Damaged in transit: refused.
    let mut damaged = reply.body.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    assert!(verify(&mut &damaged[..]).is_err());
    cluster.shutdown().await;
}
