//! Shared helpers for the tests that run real nodes: free ports, a local cluster, a tiny HTTP client.

#![allow(dead_code)]

use raftor::NodeId;
use raftor_kv::local_cluster::{current_leader, quick_timing, start_local_cluster_with};
use raftor_kv::server::RunningNode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Start a node from `config`, retrying while a previous incarnation's RocksDB lock (same data
/// directory) is being released.
pub async fn start_node_retrying(config: &raftor_kv::config::NodeConfig) -> RunningNode {
    for _ in 0..50 {
        match raftor_kv::server::start_node(config).await {
            Ok(node) => return node,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("node {} did not start", config.id);
}

/// A base port such that base+1..=base+n are free now, below the kernel's ephemeral range: a
/// port from that range, free at the probe, can be taken before a node binds it (or while a
/// cluster restarts on its ports) by any outgoing connection, another test's included. Within
/// one test binary no two calls give overlapping ranges.
pub fn free_base_port(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
    let ephemeral: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|range| {
            range
                .split_whitespace()
                .filter_map(|port| port.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (ephemeral_low, ephemeral_high) = match ephemeral[..] {
        [low, high] => (low, high),
        _ => (32768, 60999), // Linux's default
    };
    let (low, high) = if ephemeral_low > 12_000 {
        (10_000, ephemeral_low)
    } else if ephemeral_high < 63_000 {
        (ephemeral_high + 1, 65_535)
    } else {
        (10_000, 65_535) // the whole range is ephemeral: nowhere is safe
    };
    let span = u64::from(high - low - n - 1);
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u32(std::process::id());
    let mut seed = random.finish();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let base = low + (seed % span) as u16;
        let overlaps = given
            .iter()
            .any(|&(other, m)| base < other + m + 1 && other < base + n + 1);
        if !overlaps
            && (1..=n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            given.push((base, n));
            return base;
        }
    }
    panic!("no free ports");
}

/// Starts a local cluster of `n` nodes with data under `dir`, each configuration adjusted by
/// `adjust`, on ports free when probed; returns the nodes and the Raft and HTTP base ports. A port
/// free at the probe can be taken before a node binds it (by another test's outgoing connection,
/// from the same ephemeral range): then the nodes' data is cleared and other ports are tried.
pub async fn start_on_free_ports(
    n: u64,
    dir: &std::path::Path,
    adjust: impl Fn(&mut raftor_kv::config::NodeConfig),
) -> (Vec<RunningNode>, u16, u16) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let base = free_base_port(n as u16);
        let http_base = free_base_port(n as u16);
        match start_local_cluster_with(n, base, Some(http_base), dir, &adjust).await {
            Ok(nodes) => return (nodes, base, http_base),
            Err(error) if attempt < 5 => {
                eprintln!("cluster did not start ({error}); other ports");
                for id in 1..=n {
                    let _ = std::fs::remove_dir_all(dir.join(format!("node-{id}")));
                }
            }
            Err(error) => panic!("cluster starts: {error}"),
        }
    }
}

pub struct Cluster {
    /// The founding members: nodes 1 to `size`.
    pub size: u64,
    pub nodes: Vec<RunningNode>,
    pub base: u16,
    pub http_base: u16,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (nodes, base, http_base) = start_on_free_ports(n, dir.path(), quick_timing).await;
        let cluster = Cluster {
            size: n,
            nodes,
            base,
            http_base,
            dir,
        };
        cluster.leader().await;
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.nodes.len() as u16)
            .map(|i| format!("127.0.0.1:{}", self.base + i))
            .collect()
    }

    pub fn http(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.http_base + id.0 as u16)
    }

    pub async fn leader(&self) -> NodeId {
        for _ in 0..200 {
            if let Some((leader, _)) = current_leader(&self.nodes).await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within 10 s");
    }

    pub async fn follower(&self) -> NodeId {
        let leader = self.leader().await;
        self.nodes
            .iter()
            .map(|n| n.handle.id())
            .find(|id| *id != leader)
            .expect("a follower")
    }

    /// Shut node `id` down and drop it (its RocksDB lock goes with it).
    pub async fn stop(&mut self, id: NodeId) {
        let position = self
            .nodes
            .iter()
            .position(|n| n.handle.id() == id)
            .expect("running");
        self.nodes.remove(position).shutdown().await;
    }

    /// Stop the leader; returns which node it was.
    pub async fn stop_leader(&mut self) -> NodeId {
        let leader = self.leader().await;
        self.stop(leader).await;
        leader
    }

    /// Start the stopped node `id` again on its data directory.
    pub async fn start_again(&mut self, id: NodeId) {
        let mut config = raftor_kv::local_cluster::local_node_config(
            id.0,
            self.size,
            self.base,
            Some(self.http_base),
            self.dir.path(),
        );
        quick_timing(&mut config);
        self.nodes.push(start_node_retrying(&config).await);
    }

    pub async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

/// The answer to an HTTP request: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The status line and headers, lowercased.
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`, on a blocking socket in a blocking task.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let addr = addr.to_owned();
    let method = method.to_owned();
    let path = path.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let timeout = Duration::from_secs(20);
        match try_http(&addr, &method, &path, &headers, &body, timeout) {
            Ok(reply) => reply,
            Err(error) => panic!("{method} {path} at {addr}: {error}"),
        }
    })
    .await
    .expect("http task")
}

/// One HTTP/1.1 request with `Connection: close`, on a blocking socket (this thread waits): the
/// answer, or an error if the node cannot be reached or gives no status line within `timeout`.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    // The server may answer (413) and close before the whole body is sent: ignore write errors.
    let _ = stream.write_all(request.as_bytes());
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    try_parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no status line in {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// A raw HTTP/1.1 answer as a [`Reply`] (panics without a status line).
pub fn parse(raw: &[u8]) -> Reply {
    try_parse(raw).unwrap_or_else(|| panic!("no status line in {:?}", String::from_utf8_lossy(raw)))
}

/// A raw HTTP/1.1 answer as a [`Reply`]; `None` without a status line.
fn try_parse(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some(Reply { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Asks for `/v1/status` over `stream` (HTTP/1.1, plain or TLS) and checks that an HTTP answer
/// begins to arrive: the node accepted and is serving the connection.
pub async fn status_answered<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(&answer, b"HTTP/1.1 ");
}
