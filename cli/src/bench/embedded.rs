//! The embedded cluster `raftor bench` drives when it is given no endpoints: real nodes (TCP on
//! loopback, RocksDB with synced writes in a temporary directory, or the log in memory with
//! `--storage memory`), each on a thread with an actix System of its own, so they share no event
//! loop, as separate processes would not.

use super::system_thread::SystemThread;
use super::{Protocol, Storage};
use raftor_kv::auth::Role;
use raftor_kv::certs;
use raftor_kv::client::ClientTls;
use raftor_kv::local_cluster::{local_credentials, local_node_config, secure};
use raftor_kv::server::{start_node_with_log, RunningNode};
use raftor_kv::ClientOptions;
use std::net::{SocketAddr, TcpListener};

/// One node's thread, and where it listens.
struct NodeThread {
    raft_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    thread: SystemThread,
}

pub(super) struct EmbeddedCluster {
    nodes: Vec<NodeThread>,
    /// Where the credentials are, when security is on.
    certs: Option<std::path::PathBuf>,
    /// Removed when the cluster is dropped (after the nodes stopped).
    _dir: tempfile::TempDir,
}

/// The temporary directory of an embedded cluster's data: in `/dev/shm` (memory) where there is
/// one and the logs are kept in memory, so that snapshots stay off the disk too; else in the
/// system's temporary directory.
pub(super) fn bench_dir(storage: Storage) -> Result<tempfile::TempDir, String> {
    let shm = std::path::Path::new("/dev/shm");
    let parent = match storage {
        Storage::Memory if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    tempfile::Builder::new()
        .prefix("raftor-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory in {}: {e}",
                parent.display()
            )
        })
}

/// `count` consecutive loopback ports that are free right now (briefly bound to check).
fn free_port_base(count: u16) -> Result<u16, String> {
    for _ in 0..50 {
        let probe = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let base = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        // Node i listens on base + i: check base + 1 ..= base + count.
        let Some(last) = base.checked_add(count) else {
            continue;
        };
        let all_free = (base + 1..=last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    Err("could not find free loopback ports for the embedded cluster".into())
}

impl EmbeddedCluster {
    /// Start `count` nodes and return once each listens (a leader is elected shortly after).
    pub(super) fn start(
        count: u64,
        protocol: Protocol,
        tls: bool,
        storage: Storage,
    ) -> Result<EmbeddedCluster, String> {
        // The free ports were only free when probed: another program may take one before a node
        // binds it. Try again on other ports a few times before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            match EmbeddedCluster::start_once(count, protocol, tls, storage) {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn start_once(
        count: u64,
        protocol: Protocol,
        tls: bool,
        storage: Storage,
    ) -> Result<EmbeddedCluster, String> {
        let dir = bench_dir(storage)?;
        let log = storage.node_log();
        let width = u16::try_from(count).map_err(|_| "too many nodes".to_string())?;
        let base = free_port_base(width)?;
        let http_base = match protocol {
            Protocol::Http => Some(free_port_base(width)?),
            Protocol::Native => None,
        };
        let certs = tls.then(|| dir.path().join("certs"));
        if let Some(certs) = &certs {
            local_credentials(certs, count).map_err(|e| e.to_string())?;
        }
        let mut nodes = Vec::new();
        for id in 1..=count {
            let mut config = local_node_config(id, count, base, http_base, dir.path());
            if let Some(certs) = &certs {
                secure(&mut config, certs);
            }
            let started = SystemThread::spawn(
                format!("raftor-node-{id}"),
                &format!("node {id}"),
                move || async move {
                    let node = start_node_with_log(&config, log)
                        .await
                        .map_err(|error| format!("node {id}: {error}"))?;
                    Ok(((node.raft_addr, node.http_addr), node))
                },
                |node: RunningNode| Box::pin(async move { node.shutdown().await }),
            );
            match started {
                Ok((thread, (raft_addr, http_addr))) => nodes.push(NodeThread {
                    raft_addr,
                    http_addr,
                    thread,
                }),
                Err(error) => {
                    let cluster = EmbeddedCluster {
                        nodes,
                        certs,
                        _dir: dir,
                    };
                    cluster.stop();
                    return Err(error);
                }
            }
        }
        Ok(EmbeddedCluster {
            nodes,
            certs,
            _dir: dir,
        })
    }

    /// The TLS set-up and token (admin) of the load's clients: none unless security is on.
    pub(super) fn credentials(&self) -> Result<ClientOptions, String> {
        let Some(certs) = &self.certs else {
            return Ok(ClientOptions::default());
        };
        let tls =
            ClientTls::from_ca_file(&certs::ca_cert_path(certs)).map_err(|e| e.to_string())?;
        let token = std::fs::read_to_string(certs::token_path(certs, Role::Admin))
            .map_err(|e| format!("cannot read the bench's token: {e}"))?;
        Ok(ClientOptions {
            tls: Some(tls),
            token: Some(token.trim().to_owned()),
            ..ClientOptions::default()
        })
    }

    /// The addresses the load is sent to: Raft addresses (native) or HTTP addresses.
    pub(super) fn endpoints(&self, protocol: Protocol) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| match (protocol, node.http_addr) {
                (Protocol::Http, Some(http)) => http.to_string(),
                _ => node.raft_addr.to_string(),
            })
            .collect()
    }

    /// Stop every node and wait for its thread.
    pub(super) fn stop(mut self) {
        // All at once: each node's shutdown then runs beside the others'.
        for node in &mut self.nodes {
            node.thread.request_stop();
        }
        for node in &mut self.nodes {
            node.thread.stop();
        }
    }
}
