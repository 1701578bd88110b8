//! Backups over HTTP from a live cluster and restores from them: taken under write load from a
//! follower, the file holds every write acknowledged before the backup was asked for (its index
//! is at least theirs) and every write acknowledged at or before its index, with the value
//! written, and checks out; restored into a fresh 3-node cluster under a new cluster id, every
//! such write is there and the new cluster goes on from the backup's index.

mod common;

use common::{free_base_port, http, Cluster};
use raftor::StateMachine;
use raftor_kv::backup::{load_state, verify, BackupHeader};
use raftor_kv::local_cluster::{local_node_config, quick_timing};
use raftor_kv::store::{KvAnswer, KvQuery};
use raftor_kv::{Client, ClientOptions};
use std::cell::RefCell;
use std::rc::Rc;

/// The backup the member at `address` answers `GET /v1/admin/backup{query}` with, checked (size and
/// checksum): its header, and the whole file.
async fn backup_from(address: &str, query: &str) -> (BackupHeader, Vec<u8>) {
    let reply = http(
        address,
        "GET",
        &format!("/v1/admin/backup{query}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let header = verify(&mut &reply.body[..]).expect("the backup checks out");
    (header, reply.body)
}

#[actix_rt::test]
async fn a_backup_under_write_load_restores_every_write_acknowledged_before_its_index() {
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
    let acknowledged_before = acknowledged.borrow().iter().map(|w| w.2).max().unwrap();
    let (header, backup) = backup_from(&cluster.http(follower), "").await;
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(header.node, follower.0);
    // The follower applied, before its snapshot, every write acknowledged before it was asked
    // (before, it backed up what it had applied then, which could miss the newest of them).
    assert!(
        header.index >= acknowledged_before,
        "a backup asked for after a write acknowledged at {acknowledged_before} is at {}",
        header.index
    );
    let (_, machine) = load_state(&mut &backup[..]).expect("the state loads");
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
    let mut damaged = backup.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    assert!(verify(&mut &damaged[..]).is_err());
    cluster.shutdown().await;

    // Restored into a fresh 3-node cluster under a new cluster id: every write acknowledged at or
    // before the backup's index is there, and the new cluster takes writes.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.backup");
    std::fs::write(&file, &backup).expect("write the backup");
    let base = free_base_port(3);
    let configs: Vec<_> = (1..=3)
        .map(|id| {
            let mut config = local_node_config(id, 3, base, None, dir.path());
            quick_timing(&mut config);
            config.cluster_id = "restored".into();
            config
        })
        .collect();
    for config in &configs {
        let restored = raftor_kv::backup::restore(
            &file,
            &config.data_dir,
            "restored",
            config.id,
            &config.peers,
        )
        .expect("restore");
        assert_eq!(restored.index, header.index);
    }
    // A directory already seeded is not seeded again.
    let again = raftor_kv::backup::restore(
        &file,
        &configs[0].data_dir,
        "restored",
        configs[0].id,
        &configs[0].peers,
    );
    assert!(again.expect_err("refused").contains("not empty"));
    // A path that cannot be a directory (under a file) is refused with the reason, not taken for
    // a directory that is not empty.
    let under_a_file = file.join("data");
    let refused = raftor_kv::backup::restore(
        &file,
        &under_a_file,
        "restored",
        configs[0].id,
        &configs[0].peers,
    )
    .expect_err("refused");
    assert!(
        refused.contains("Not a directory") && !refused.contains("not empty"),
        "{refused}"
    );
    let mut nodes = Vec::new();
    for config in &configs {
        nodes.push(common::start_node_retrying(config).await);
    }
    let endpoints = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let restored = Client::new(endpoints, ClientOptions::default()).expect("client");
    for (key, value, index) in acknowledged.iter().filter(|(_, _, i)| *i <= header.index) {
        let read = restored
            .get(key, raftor_kv::protocol::Consistency::Linearizable)
            .await
            .expect("read");
        assert_eq!(
            read.as_deref(),
            Some(value.as_bytes()),
            "{key} (written at {index}) after the restore"
        );
    }
    let written = restored.put("after-restore", "yes").await.expect("put");
    assert!(
        written.index > header.index,
        "the new cluster goes on from the backup's index"
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

/// A backup as raftor wrote it before key revisions (snapshot format version 1): the bincode of
/// (applied index, key → value, sessions).
fn version_1_backup(index: u64, keys: &[(&str, &str)]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Version1 {
        applied: u64,
        map: std::collections::BTreeMap<String, bytes::Bytes>,
        sessions: std::collections::BTreeMap<u64, ()>,
    }
    let data = bincode::serialize(&Version1 {
        applied: index,
        map: keys
            .iter()
            .map(|(k, v)| (k.to_string(), bytes::Bytes::from(v.to_string())))
            .collect(),
        sessions: Default::default(),
    })
    .expect("encodes");
    let header = serde_json::json!({
        "format": raftor_kv::backup::FORMAT,
        "version": raftor_kv::backup::VERSION,
        "cluster_id": "old",
        "node": 1,
        "index": index,
        "term": 2,
        "size": data.len(),
        "crc32": crc32fast::hash(&data),
        "taken_at": 0,
    });
    let mut file = format!("{header}\n").into_bytes();
    file.extend_from_slice(&data);
    file
}

#[actix_rt::test]
async fn an_old_backup_restores_with_revisions_and_an_old_snapshot_is_refused_with_the_way_to_upgrade(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("old.backup");
    std::fs::write(
        &file,
        version_1_backup(40, &[("app/a", "1"), ("app/b", "2")]),
    )
    .expect("written");
    let base = free_base_port(3);
    let configs: Vec<_> = (1..=3)
        .map(|id| {
            let mut config = local_node_config(id, 3, base, None, dir.path());
            quick_timing(&mut config);
            config.cluster_id = "upgraded".into();
            config
        })
        .collect();
    for config in &configs {
        raftor_kv::backup::restore(
            &file,
            &config.data_dir,
            "upgraded",
            config.id,
            &config.peers,
        )
        .expect("an old backup restores");
    }
    let mut nodes = Vec::new();
    for config in &configs {
        nodes.push(common::start_node_retrying(config).await);
    }
    let endpoints = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let client = Client::new(endpoints, ClientOptions::default()).expect("client");
    let entry = client
        .get_entry("app/a", raftor_kv::protocol::Consistency::Linearizable)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(entry.value.as_deref(), Some(&b"1"[..]));
    // The same revisions on every founder: the backup's index.
    assert_eq!(
        (entry.create_index, entry.mod_index, entry.version),
        (40, 40, 1)
    );
    let written = client.put("app/a", "3").await.expect("put");
    let entry = client
        .get_entry("app/a", raftor_kv::protocol::Consistency::Linearizable)
        .await
        .expect("read")
        .expect("present");
    assert_eq!((entry.mod_index, entry.version), (written.index, 2));
    for node in &nodes {
        node.shutdown().await;
    }

    // A data directory holding an old snapshot (as an upgrade in place would leave it): the node
    // refuses to start, says how to upgrade, and changes nothing.
    let old_dir = tempfile::tempdir().expect("tempdir");
    let mut config = local_node_config(1, 1, free_base_port(1), None, old_dir.path());
    quick_timing(&mut config);
    let backup = version_1_backup(7, &[("k", "v")]);
    let data = &backup[backup.iter().position(|b| *b == b'\n').expect("a header") + 1..];
    raftor::restore::seed_data_dir(
        &config.data_dir,
        &config.cluster_id,
        config.id,
        &config.peers,
        raftor_core::LogId::new(raftor_core::Term(2), raftor_core::LogIndex(7)),
        &mut &data[..],
    )
    .expect("seeded");
    raftor::restore::finish_seeding(&config.data_dir).expect("seeded whole");
    let refused = raftor_kv::server::start_node(&config)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("raftor restore"), "{refused}");

    // A restore cut short (here its data stops coming part-way) leaves a directory no node
    // starts on: before, a node started on it founded a cluster on an empty store.
    struct CutShort<'a>(&'a [u8]);
    impl std::io::Read for CutShort<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("the backup's disk went away"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let cut_dir = tempfile::tempdir().expect("tempdir");
    let mut config = local_node_config(1, 1, free_base_port(1), None, cut_dir.path());
    quick_timing(&mut config);
    let seeded = raftor::restore::seed_data_dir(
        &config.data_dir,
        &config.cluster_id,
        config.id,
        &config.peers,
        raftor_core::LogId::new(raftor_core::Term(2), raftor_core::LogIndex(7)),
        &mut CutShort(&data[..data.len() / 2]),
    );
    assert!(seeded.is_err(), "the copy failed");
    let refused = raftor_kv::server::start_node(&config)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("did not finish"), "{refused}");
}

/// A backup asked for while the node is writing a snapshot waits for a snapshot of its own, taken
/// after it was asked for: it holds a write acknowledged just before (before, it was given the
/// snapshot being written, from before the write). A follower asked right after a write first
/// applies it (before, it backed up what it had applied, without the write).
/// `consistency=local` backs up what the node asked has applied, also when it is cut off from a
/// quorum (then the default answers 503 and says so), and a consistency that does not exist is
/// refused.
#[actix_rt::test]
async fn a_backup_asked_for_while_a_snapshot_is_written_holds_the_writes_before_it() {
    let mut cluster = Cluster::start(3).await;
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).expect("client");
    // Enough state that writing a snapshot of it takes a while.
    let value = "v".repeat(64 * 1024);
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (client, value) = (client.clone(), value.clone());
        writers.push(actix_rt::spawn(async move {
            for i in 0..40 {
                client
                    .put(&format!("big-{writer}-{i}"), value.clone())
                    .await
                    .expect("put");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let leader = cluster.leader().await;
    let address = cluster.http(leader);
    for round in 0..3 {
        let snapshot = {
            let address = address.clone();
            actix_rt::spawn(
                async move { http(&address, "POST", "/v1/admin/snapshot", &[], b"").await },
            )
        };
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let written = client
            .put(&format!("last-{round}"), "x")
            .await
            .expect("put");
        let (header, _) = backup_from(&address, "").await;
        assert!(
            header.index >= written.index,
            "round {round}: a backup asked for after a write acknowledged at {} is at {}",
            written.index,
            header.index
        );
        assert_eq!(snapshot.await.expect("snapshot").status, 200);
    }
    // From a follower, right after a write: it learns the write committed only from the
    // leader's next message; the backup waits until it has applied the write.
    let follower = cluster.follower().await;
    for round in 0..3 {
        let written = client
            .put(&format!("then-{round}"), "x")
            .await
            .expect("put");
        let (header, _) = backup_from(&cluster.http(follower), "").await;
        assert!(
            header.index >= written.index,
            "a follower's backup asked for after a write acknowledged at {} is at {}",
            written.index,
            header.index
        );
    }
    backup_from(&address, "?consistency=local").await;
    let bad = http(
        &address,
        "GET",
        "/v1/admin/backup?consistency=eventual",
        &[],
        b"",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("unknown consistency"), "{}", bad.text());
    // A member cut off from a quorum says how to back up what it has, and does so when asked.
    let leader = cluster.stop_leader().await;
    let other = (1..=3)
        .map(raftor::NodeId)
        .find(|&id| id != leader && id != follower)
        .unwrap();
    cluster.stop(other).await;
    let cut_off = http(&cluster.http(follower), "GET", "/v1/admin/backup", &[], b"").await;
    assert_eq!(cut_off.status, 503, "{}", cut_off.text());
    assert!(
        cut_off.text().contains("consistency=local"),
        "{}",
        cut_off.text()
    );
    let (header, _) = backup_from(&cluster.http(follower), "?consistency=local").await;
    assert_eq!(header.node, follower.0);
    cluster.shutdown().await;
}
