//! `RaftNode::shutdown` for real (TCP, RocksDB, wall clock): once it returns the port is free, the
//! data directory opens again with everything committed, and the node's threads have ended —
//! both for a node started inside an actix System and for one started from a plain tokio runtime
//! (which gets a thread with a System of its own).
//!
//! One test in this binary, so that the process's thread count is the node's doing alone.

use raftor::{Consistency, LogIndex, NodeId, RaftNode, RaftNodeBuilder, StateMachine};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Sum(u64);

impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type QueryResponse = u64;
    type Snapshot = u64;
    fn apply(&mut self, _: LogIndex, n: u64) -> u64 {
        self.0 += n;
        self.0
    }
    fn query(&self, _: &()) -> u64 {
        self.0
    }
    fn snapshot(&self) -> u64 {
        self.0
    }
    fn restore(&mut self, sum: u64) {
        self.0 = sum;
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

/// Waits (up to 5 s) for the thread count to come back down to `baseline`.
fn settle_to(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    threads()
}

/// A one-node cluster on `addr` (port 0 the first time) over `dir`.
async fn start(addr: SocketAddr, dir: &Path) -> RaftNode<Sum> {
    let node = RaftNodeBuilder::new()
        .id(NodeId(1))
        .peers([(NodeId(1), addr.to_string())])
        .data_dir(dir)
        .cluster_id("shutdown-test")
        .start(Sum::default())
        .await
        .expect("starts");
    node.leadership()
        .wait_for(|l| l.is_leader())
        .await
        .expect("running");
    node
}

/// Start on `dir`, check the sum so far, add `n`, shut down; the port is free at once.
async fn round(addr: SocketAddr, dir: &Path, before: u64, n: u64) -> SocketAddr {
    let node = start(addr, dir).await;
    let addr = node.local_addr().expect("on TCP");
    assert_eq!(
        node.read((), Consistency::Linearizable)
            .await
            .expect("read"),
        before,
        "recovered from the data directory"
    );
    assert_eq!(node.propose(n).await.expect("applied"), before + n);
    node.shutdown().await;
    std::net::TcpListener::bind(addr).expect("the port is free once shutdown returns");
    addr
}

#[test]
fn shutdown_frees_the_port_and_the_data_dir_and_ends_the_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("addr");

    // Inside an actix System. The first round also starts RocksDB's own (process-wide) threads.
    let system = actix::System::new();
    let addr = system.block_on(round(any_port, dir.path(), 0, 1));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = threads();
    // Reopened at once: the directory's lock was released by shutdown.
    system.block_on(round(addr, dir.path(), 1, 2));
    assert_eq!(
        settle_to(baseline),
        baseline,
        "the log store's thread ended"
    );
    drop(system);

    // From a plain tokio runtime: the node runs its own System on a thread of its own. (On a thread
    // that never had a System: `actix::System::try_current()` is what tells the two cases apart.)
    let baseline = threads();
    let path = dir.path().to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(round(addr, &path, 3, 4));
    })
    .join()
    .expect("the tokio part passes");
    assert_eq!(
        settle_to(baseline),
        baseline,
        "the node's own System thread and its log store's thread ended"
    );
}
