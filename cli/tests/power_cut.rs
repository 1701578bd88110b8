//! Power cuts of whole `raftor serve` nodes. A killed process loses nothing it wrote (its writes
//! wait in the page cache), so the kill tests elsewhere pass whether a node syncs what it must or
//! not. Here each node runs under the LD_PRELOAD library of `storage/tests/support`, which keeps a
//! durable image of its data directory, everything below it included (`snapshots/`): what a power
//! cut would leave of it in strict POSIX terms (a file's bytes as of its last sync, a directory's
//! entries as of its last sync). After a node is killed, its data directory is rebuilt from that
//! image and the node started again on it.
//!
//! Writes go on while the power is cut (some in flight, some answered); snapshots and log
//! compaction run throughout (a snapshot every 150 entries). After each cut, every write a node
//! answered `200` must still be there, and the nodes must converge.

#[path = "../../kv/tests/common/mod.rs"]
mod common;
#[path = "../../storage/tests/support/power_cut.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{build_shim, image_taken, rebuild, DIR_ENV, IMAGE_ENV};
use tempfile::TempDir;

const NODES: u64 = 3;
const WRITERS: usize = 4;

/// The tests run one at a time: each runs three or four nodes.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cluster of `NODES` founders under the shim, started in a new directory that it owns, holding
/// the lock that runs these tests one at a time; `None` without a C compiler.
fn started() -> Option<Cluster> {
    let serial = one_at_a_time();
    let work = TempDir::new().unwrap();
    let shim = build_shim(work.path())?;
    let mut cluster = Cluster::new(work.path(), shim);
    cluster.owned = Some((work, serial));
    for id in cluster.ids() {
        cluster.start(id);
    }
    Some(cluster)
}

/// Whose power a round cuts.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Every node's, at once.
    Cluster,
    /// The leader's alone; the others go on.
    Leader,
    /// A follower's, then again soon after it started, while it catches up.
    FollowerCatchingUp,
}

/// One `raftor serve` node under the shim, on a data directory a power cut may have left.
struct Node {
    /// The directory the shim watches, and a cut rebuilds: the node's data directory is `data`
    /// in it, made by the node itself (so that its creation is under the model too).
    root: PathBuf,
    image: PathBuf,
    child: Option<Child>,
    /// Whether the node joins the founders (`--join`) rather than founding the cluster.
    joins: bool,
}

/// The cluster: its nodes (node `i` is `nodes[i - 1]`), their ports and the shim.
struct Cluster {
    work: PathBuf,
    shim: PathBuf,
    raft_base: u16,
    http_base: u16,
    nodes: Vec<Node>,
    /// How many directories and images have been made (each cut makes new ones).
    generation: u32,
    cluster_id: String,
    /// The directory, removed, and the lock, released, once the nodes have stopped (fields drop
    /// after `Drop::drop`).
    owned: Option<(TempDir, std::sync::MutexGuard<'static, ()>)>,
}

impl Cluster {
    /// `NODES` founders, not started, on free ports with room for one more node.
    fn new(work: &Path, shim: PathBuf) -> Cluster {
        // One range for both kinds of port, room for one more node.
        let room = NODES as u16 + 1;
        let base = common::free_base_port(2 * room);
        let mut cluster = Cluster {
            work: work.to_path_buf(),
            shim,
            raft_base: base,
            http_base: base + room,
            nodes: Vec::new(),
            generation: 0,
            cluster_id: "power-cut".into(),
            owned: None,
        };
        for _ in 0..NODES {
            cluster.add(false);
        }
        cluster
    }

    /// A node more (not started); its id.
    fn add(&mut self, joins: bool) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let root = self.work.join(format!("node-{id}-0"));
        std::fs::create_dir_all(&root).unwrap();
        self.nodes.push(Node {
            root,
            image: PathBuf::new(),
            child: None,
            joins,
        });
        id
    }

    fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.nodes.len() as u64
    }

    fn http(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.http_base + id as u16)
    }

    fn start(&mut self, id: u64) {
        self.generation += 1;
        let peers: Vec<String> = (1..=NODES)
            .map(|j| format!("{j}=127.0.0.1:{}", self.raft_base + j as u16))
            .collect();
        let members = if self.nodes[id as usize - 1].joins {
            ["--join".to_string(), format!("http://{}", self.http(1))]
        } else {
            ["--peers".to_string(), peers.join(",")]
        };
        let image = self.work.join(format!("image-{}-{id}", self.generation));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("node-{id}.log")))
            .expect("log file");
        let listen = format!("127.0.0.1:{}", self.raft_base + id as u16);
        let http = self.http(id);
        let node = &mut self.nodes[id as usize - 1];
        let child = Command::new(env!("CARGO_BIN_EXE_raftor"))
            .args(["serve", "--id", &id.to_string()])
            .args(&members)
            .args(["--listen", &listen, "--http", &http])
            .arg("--data-dir")
            .arg(node.root.join("data"))
            .args(["--cluster-id", &self.cluster_id])
            .env("LD_PRELOAD", &self.shim)
            .env(DIR_ENV, &node.root)
            .env(IMAGE_ENV, &image)
            .env("RAFTOR_SNAPSHOT_ENTRIES", "150")
            .env("RAFTOR_SNAPSHOT_TRAILING", "40")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftor serve");
        node.image = image;
        node.child = Some(child);
    }

    /// Cuts node `id`'s power: kills it, and rebuilds its directory, in a new place, from what
    /// the shim says would have survived.
    fn cut(&mut self, id: u64) {
        self.generation += 1;
        let into = self.work.join(format!("node-{id}-{}", self.generation));
        self.assert_running();
        let node = &mut self.nodes[id as usize - 1];
        let mut child = node.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
        if image_taken(&node.image) {
            rebuild(&node.image, &into);
            node.root = into;
        } // else killed before it ran: its directory is as it was
    }

    /// Panics, with the nodes' logs, if a node exited by itself.
    fn assert_running(&mut self) {
        for (id, node) in (1..).zip(&mut self.nodes) {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"))
            {
                panic!("node {id} exited by itself ({status})\n{}", log_tails(self));
            }
        }
    }

    fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Polls `check` until it gives an answer, for at most a minute; fails, with the nodes' logs, if
/// a node exits meanwhile or the time runs out (`what` says what was awaited, and how far it got).
fn wait_for<T>(cluster: &mut Cluster, mut check: impl FnMut(&Cluster) -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = match check(cluster) {
            Ok(answer) => return answer,
            Err(waiting) => waiting,
        };
        cluster.assert_running();
        assert!(
            Instant::now() < deadline,
            "{waiting}\n{}",
            log_tails(cluster)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request; `None` if the node cannot be reached or does not answer in time.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<common::Reply> {
    common::try_http(addr, method, path, &[], body, Duration::from_secs(5)).ok()
}

fn value_of(key: &str) -> Vec<u8> {
    format!("{key}:{}", "v".repeat(200)).into_bytes()
}

/// Writers putting new keys at any node, on threads of their own, until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Stops the writers, once each has its answer (or none) to the write it is making.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

/// Starts [`WRITERS`] writers; the keys answered `200` go to `acked`.
fn start_writers(cluster: &Cluster, round: u32, acked: &Arc<Mutex<BTreeSet<String>>>) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..WRITERS)
        .map(|writer| {
            let addrs: Vec<String> = cluster.ids().map(|id| cluster.http(id)).collect();
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut target = writer % addrs.len();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("r{round}-w{writer}-{n}");
                    let path = format!("/v1/kv/{key}");
                    match request(&addrs[target], "PUT", &path, &value_of(&key)) {
                        Some(reply) if reply.status == 200 => {
                            acked.lock().unwrap().insert(key);
                        }
                        _ => {
                            target = (target + 1) % addrs.len();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    Writers { stop, threads }
}

/// Waits until `count` keys have been acknowledged in all (bounded).
fn wait_for_acks(cluster: &mut Cluster, acked: &Mutex<BTreeSet<String>>, count: usize) {
    wait_for(cluster, |_| {
        let taken = acked.lock().unwrap().len();
        if taken >= count {
            return Ok(());
        }
        Err(format!("the cluster took {taken} writes of {count}"))
    })
}

/// Checks (bounded) that every acknowledged key reads back, linearizably, with its value.
fn check_acked(cluster: &mut Cluster, acked: &BTreeSet<String>, after: &str) {
    let mut target = 0;
    for key in acked {
        let value = wait_for(cluster, |cluster| {
            target += 1;
            let addr = cluster.http(1 + target % cluster.nodes.len() as u64);
            match request(&addr, "GET", &format!("/v1/kv/{key}"), b"") {
                Some(reply) if reply.status == 200 => Ok(reply.body),
                Some(reply) if reply.status == 404 => {
                    panic!("{key} was acknowledged and is lost after {after}")
                }
                _ => Err(format!("no node answers reads after {after}")),
            }
        });
        assert_eq!(value, value_of(key), "{key} after {after}");
    }
}

/// Waits (bounded) until every node has applied the same index and holds `count` keys or more
/// (read locally): the nodes converged.
fn check_converged(cluster: &mut Cluster, count: usize) {
    wait_for(cluster, |cluster| {
        let applied: Vec<Option<u64>> = cluster
            .ids()
            .map(|id| {
                let reply = request(&cluster.http(id), "GET", "/v1/status", b"")?;
                (reply.status == 200).then(|| reply.json()["applied_index"].as_u64())?
            })
            .collect();
        let counts: Vec<Option<u64>> = cluster
            .ids()
            .map(|id| {
                let reply = request(
                    &cluster.http(id),
                    "GET",
                    "/v1/kv?prefix=r&count_only=true&consistency=local",
                    b"",
                )?;
                (reply.status == 200).then(|| reply.json()["count"].as_u64())?
            })
            .collect();
        let same = applied.iter().all(|a| a.is_some() && *a == applied[0]);
        if same && counts.iter().all(|c| c.is_some_and(|c| c >= count as u64)) {
            return Ok(());
        }
        Err(format!(
            "the nodes did not converge: applied {applied:?}, keys {counts:?}"
        ))
    })
}

/// The last lines each node logged, for a failure's message.
fn log_tails(cluster: &Cluster) -> String {
    cluster
        .ids()
        .map(|id| {
            let log = std::fs::read_to_string(cluster.work.join(format!("node-{id}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n");
            format!("node {id}'s log ends:\n{tail}\n")
        })
        .collect()
}

fn no_panics(cluster: &Cluster) {
    for id in cluster.ids() {
        let log = std::fs::read_to_string(cluster.work.join(format!("node-{id}.log")))
            .unwrap_or_default();
        assert!(!log.contains("panicked"), "node {id} panicked:\n{log}");
    }
}

/// Every write the cluster acknowledged survives power cuts of the whole cluster at once, of its
/// leader alone and of a follower catching up, with writes in flight and snapshots taken and logs
/// compacted throughout; afterwards the nodes converge.
#[test]
fn acknowledged_writes_survive_power_cuts_of_the_cluster_the_leader_and_a_follower() {
    let Some(mut cluster) = started() else {
        return;
    };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let rounds = [
        Cut::Cluster,
        Cut::Leader,
        Cut::FollowerCatchingUp,
        Cut::Cluster,
        Cut::Leader,
    ];
    for (round, cut) in rounds.into_iter().enumerate() {
        let round = round as u32;
        let before = acked.lock().unwrap().len();
        let writers = start_writers(&cluster, round, &acked);
        wait_for_acks(&mut cluster, &acked, before + 400);
        let victims: Vec<u64> = match cut {
            Cut::Cluster => cluster.ids().collect(),
            Cut::Leader => vec![leader(&mut cluster)],
            Cut::FollowerCatchingUp => {
                // Down while the leader takes snapshots and compacts its log past it, then cut
                // again while it catches up (by a snapshot, and entries after it).
                let leader = leader(&mut cluster);
                let follower = cluster.ids().find(|&id| id != leader).unwrap();
                cluster.cut(follower);
                wait_for_acks(&mut cluster, &acked, before + 1_000);
                cluster.start(follower);
                std::thread::sleep(Duration::from_millis(100 + 150 * u64::from(round)));
                vec![follower]
            }
        };
        for &id in &victims {
            cluster.cut(id);
        }
        writers.stop();
        for &id in &victims {
            cluster.start(id);
        }
        let what = format!("round {round}: {cut:?} (nodes {victims:?})");
        let acked_now = acked.lock().unwrap().clone();
        println!("{what}: {} writes acknowledged", acked_now.len());
        check_acked(&mut cluster, &acked_now, &what);
        check_converged(&mut cluster, acked_now.len());
    }
    cluster.stop_all();
    no_panics(&cluster);
}

/// A node that joined (`raftor serve --join`) keeps what it promised through power cuts while it
/// joins and catches up, just after its promotion to voter, and as a voter taking writes: it
/// restarts each time on what it had synced, as a voter (a data directory lost would make it
/// refuse to start, `ServeError::LostVoterData`), and every acknowledged write reads back.
#[test]
fn a_joined_node_keeps_its_data_through_power_cuts_while_joining_and_as_a_voter() {
    let Some(mut cluster) = started() else {
        return;
    };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writers = start_writers(&cluster, 0, &acked);
    wait_for_acks(&mut cluster, &acked, 300);
    let joiner = cluster.add(true);
    cluster.start(joiner);
    std::thread::sleep(Duration::from_millis(700));
    cluster.cut(joiner);
    cluster.start(joiner);
    wait_for_voter(&mut cluster, joiner);
    cluster.cut(joiner);
    cluster.start(joiner);
    let before = acked.lock().unwrap().len();
    wait_for_acks(&mut cluster, &acked, before + 300);
    cluster.cut(joiner);
    writers.stop();
    cluster.start(joiner);
    let acked_now = acked.lock().unwrap().clone();
    check_acked(&mut cluster, &acked_now, "the joined node's power cuts");
    check_converged(&mut cluster, acked_now.len());
    wait_for_voter(&mut cluster, joiner);
    cluster.stop_all();
    no_panics(&cluster);
}

/// A backup taken from a follower right after the last write holds every acknowledged write;
/// restored with `raftor restore` into three new data directories, each cut off by a power cut
/// as soon as the command has returned, it starts a new cluster that holds them all.
#[test]
fn a_backup_restored_and_cut_off_by_a_power_cut_holds_every_acknowledged_write() {
    let Some(mut cluster) = started() else {
        return;
    };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writers = start_writers(&cluster, 0, &acked);
    wait_for_acks(&mut cluster, &acked, 300);
    writers.stop();
    let leader = leader(&mut cluster);
    let follower = cluster.ids().find(|&id| id != leader).unwrap();
    let backup = cluster.work.join("cluster.backup");
    let saved = Command::new(env!("CARGO_BIN_EXE_raftor"))
        .args(["backup", "--endpoint", &cluster.http(follower), "--out"])
        .arg(&backup)
        .output()
        .expect("raftor backup");
    assert!(saved.status.success(), "{saved:?}");
    cluster.stop_all();
    let acked = acked.lock().unwrap().clone();

    let restored_work = cluster.work.join("restored");
    std::fs::create_dir(&restored_work).unwrap();
    let mut restored = Cluster::new(&restored_work, cluster.shim.clone());
    restored.cluster_id = "restored".into();
    let peers: Vec<String> = restored
        .ids()
        .map(|j| format!("{j}=127.0.0.1:{}", restored.raft_base + j as u16))
        .collect();
    for id in restored.ids() {
        let node = &restored.nodes[id as usize - 1];
        let image = restored_work.join(format!("restore-image-{id}"));
        let output = Command::new(env!("CARGO_BIN_EXE_raftor"))
            .arg("restore")
            .arg(&backup)
            .arg("--data-dir")
            .arg(node.root.join("data"))
            .args(["--id", &id.to_string(), "--peers", &peers.join(",")])
            .args(["--cluster-id", "restored"])
            .env("LD_PRELOAD", &restored.shim)
            .env(DIR_ENV, &node.root)
            .env(IMAGE_ENV, &image)
            .output()
            .expect("raftor restore");
        assert!(output.status.success(), "{output:?}");
        let into = restored_work.join(format!("node-{id}-cut"));
        rebuild(&image, &into);
        restored.nodes[id as usize - 1].root = into;
    }
    for id in restored.ids() {
        restored.start(id);
    }
    check_acked(&mut restored, &acked, "a restore cut off by a power cut");
    check_converged(&mut restored, acked.len());
    restored.stop_all();
    no_panics(&restored);
}

/// Waits (bounded) until node 1 lists node `id` as a voter.
fn wait_for_voter(cluster: &mut Cluster, id: u64) {
    wait_for(cluster, |cluster| {
        let voters = request(&cluster.http(1), "GET", "/v1/members", b"")
            .filter(|reply| reply.status == 200)
            .map(|reply| reply.json()["voters"].clone());
        match voters {
            Some(voters) if voters.as_array().unwrap().contains(&id.into()) => Ok(()),
            _ => Err(format!("node {id} was not promoted (voters: {voters:?})")),
        }
    })
}

/// The leader's id, asked of any node (bounded).
fn leader(cluster: &mut Cluster) -> u64 {
    wait_for(cluster, |cluster| {
        cluster
            .ids()
            .find_map(|id| {
                request(&cluster.http(id), "GET", "/health", b"")
                    .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.body).ok())
                    .and_then(|health| health["leader"].as_u64())
            })
            .ok_or_else(|| "no leader".to_string())
    })
}
