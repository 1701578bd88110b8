//! Seeding a new node's data directory from a snapshot: how a cluster is restored from a backup
//! (`raftor restore`), as etcd's `snapshot restore` does.
//!
//! Every founding member of the new cluster gets the same snapshot, with the new founders as its
//! configuration and the new cluster's id in its store. Started on it, a node restores its state
//! machine from the snapshot, starts its log right after it (its term is the snapshot's), and the
//! founders elect a leader of the next term: the new cluster goes on from the backup's index.

use crate::error::StartError;
use raftor_core::{LogId, Membership, NodeId, SnapshotMeta};
use raftor_storage::{RocksStorage, SnapshotStore, StoreIdentity};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// Creates node `id`'s data directory `data_dir` (which must not exist, or be empty) for a new
/// cluster `cluster_id` whose founding members are `founders` (this node included, with their
/// Raft addresses), holding as its only snapshot the state in `data` (the state machine's
/// snapshot bytes, as a backup holds them) taken at `last_included`. Returns the snapshot's
/// metadata (its size and CRC-32 let the caller check the copy); the directory is a node's only
/// once the caller has checked it and called [`finish_seeding`].
pub fn seed_data_dir(
    data_dir: &Path,
    cluster_id: &str,
    id: NodeId,
    founders: &BTreeMap<NodeId, String>,
    last_included: LogId,
    data: &mut dyn Read,
) -> Result<SnapshotMeta, StartError> {
    if !founders.contains_key(&id) {
        return Err(StartError::Config(format!(
            "node {id} is not among the founding members"
        )));
    }
    if !raftor_storage::data_dir::holds_no_store(data_dir)? {
        return Err(StartError::Config(format!(
            "{} is not empty: a restore seeds a new node's data directory",
            data_dir.display()
        )));
    }
    raftor_storage::durable::create_dir_durable(data_dir)
        .map_err(StartError::data_dir(data_dir))?;
    // Until the snapshot is in, the directory says it is not a node's yet: a restore cut short
    // (killed, power lost, disk full) must not leave a store a node would start on, empty.
    let marker = data_dir.join(RESTORE_MARKER);
    raftor_storage::durable::replace_file(&marker, b"", false)
        .map_err(StartError::data_dir(data_dir))?;
    let identity = StoreIdentity {
        cluster_id: cluster_id.to_owned(),
        node_id: id.0,
    };
    // Records the store's identity; the log stays empty (the node starts it after the snapshot).
    drop(RocksStorage::open(data_dir, &identity)?);
    let store = SnapshotStore::open(&data_dir.join("snapshots"))?;
    let mut file = store.create("restore")?;
    std::io::copy(data, &mut file).map_err(StartError::data_dir(&data_dir.join("snapshots")))?;
    let voters: BTreeSet<NodeId> = founders.keys().copied().collect();
    let membership = Membership::bootstrap(&voters, founders);
    Ok(file.finish(&store, last_included, membership)?)
}

/// Marks `data_dir`, seeded by [`seed_data_dir`], as whole once the caller has checked the copy
/// against the backup (its size and CRC-32): until then a node refuses to start on it.
pub fn finish_seeding(data_dir: &Path) -> Result<(), StartError> {
    std::fs::remove_file(data_dir.join(RESTORE_MARKER))
        .and_then(|()| raftor_storage::durable::sync_dir(data_dir))
        .map_err(StartError::data_dir(data_dir))
}

/// The file [`seed_data_dir`] leaves in a data directory until [`finish_seeding`].
pub use raftor_storage::data_dir::RESTORE_MARKER;

/// Refuses a data directory that a restore began to seed and did not finish ([`RESTORE_MARKER`]):
/// started on it, a node would found a cluster on an empty store and no snapshot.
pub fn check_restore_finished(data_dir: &Path) -> Result<(), StartError> {
    if data_dir.join(RESTORE_MARKER).exists() {
        return Err(StartError::Config(format!(
            "{} was being seeded by `raftor restore`, which did not finish (killed, out of disk \
             space or power): delete the directory and run the restore again",
            data_dir.display()
        )));
    }
    Ok(())
}
