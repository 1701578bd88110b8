//! A distributed lock on a raftor cluster: workers take turns holding a lock (a lease and a
//! transaction, `raftor_kv::lock`) to increment a shared counter, each write fenced by the lock
//! so that a holder whose lease ran out cannot write. The counter ends at exactly
//! workers × rounds.
//!
//! Against a running cluster (`raftor cluster` in another terminal):
//!
//! ```sh
//! cargo run --example lock -- --endpoints 127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103 \
//!     --workers 3 --rounds 20
//! ```
//!
//! Kill the leader while it runs (Ctrl-C one `raftor serve`, or `docker-compose kill` one
//! node): the workers pause for the election and go on; the count is still exact.
//!
//! Or a self-check: a 3-node cluster in this process, its leader killed halfway, then exit:
//!
//! ```sh
//! cargo run --example lock -- --demo
//! ```

use bytes::Bytes;
use raftor_kv::local_cluster::{current_leader, quick_timing, start_local_cluster_with};
use raftor_kv::lock::Lock;
use raftor_kv::protocol::Consistency;
use raftor_kv::store::TxnOp;
use raftor_kv::{Client, ClientOptions};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

/// `rounds` times: take the lock, read the counter, write it plus one under the lock's fence,
/// release.
async fn worker(
    client: Client,
    name: String,
    rounds: u32,
    ttl: Duration,
    done: Rc<Cell<u32>>,
) -> Result<(), String> {
    let lock = Lock::new(client.clone(), "locks/counter", ttl, name.clone());
    for round in 0..rounds {
        let guard = lock.acquire().await.map_err(|e| e.to_string())?;
        let current = client
            .get("counter", Consistency::Linearizable)
            .await
            .map_err(|e| e.to_string())?
            .map_or(Ok(0), |v| String::from_utf8_lossy(&v).parse::<u64>())
            .map_err(|e| format!("the counter is not a number: {e}"))?;
        let write = guard.fenced(vec![TxnOp::Put {
            key: "counter".into(),
            value: Bytes::from((current + 1).to_string()),
            lease: None,
        }]);
        let written = client.txn(write).await.map_err(|e| e.to_string())?;
        if !written.outcome.succeeded {
            return Err(format!("{name}: the lock passed on before the write"));
        }
        println!(
            "{name}: round {round}: counter {} -> {} (fence {})",
            current,
            current + 1,
            guard.fence()
        );
        guard.release().await.map_err(|e| e.to_string())?;
        done.set(done.get() + 1);
    }
    Ok(())
}

/// Run the workers against `endpoints`; while they run, `meanwhile` (given how many increments
/// are done) may disturb the cluster. Returns the counter's increase.
async fn run(
    endpoints: Vec<String>,
    workers: u32,
    rounds: u32,
    ttl: Duration,
    meanwhile: impl std::future::Future<Output = ()>,
    done: Rc<Cell<u32>>,
) -> Result<u64, Error> {
    let client = Client::new(endpoints.clone(), ClientOptions::default())?;
    let before = read_counter(&client).await?;
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let client = Client::new(endpoints.clone(), ClientOptions::default())
                .expect("endpoints were accepted above");
            tokio::task::spawn_local(worker(
                client,
                format!("worker-{i}"),
                rounds,
                ttl,
                done.clone(),
            ))
        })
        .collect();
    meanwhile.await;
    for task in tasks {
        task.await??;
    }
    Ok(read_counter(&client).await? - before)
}

async fn read_counter(client: &Client) -> Result<u64, Error> {
    Ok(client
        .get("counter", Consistency::Linearizable)
        .await?
        .map_or(Ok(0), |v| String::from_utf8_lossy(&v).parse::<u64>())?)
}

/// Three nodes in this process; the leader is killed once a third of the increments are done.
async fn demo() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let base = free_port_base();
    let mut nodes = start_local_cluster_with(3, base, None, dir.path(), quick_timing).await?;
    while current_leader(&nodes).await.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endpoints: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let done = Rc::new(Cell::new(0));
    let (workers, rounds) = (3, 10);
    let killed = {
        let done = done.clone();
        let nodes = &mut nodes;
        async move {
            while done.get() < workers * rounds / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some((leader, _)) = current_leader(nodes).await {
                println!("killing the leader, node {leader}");
                if let Some(position) = nodes.iter().position(|n| n.handle.id() == leader) {
                    nodes.remove(position).shutdown().await;
                }
            }
        }
    };
    let increase = run(
        endpoints,
        workers,
        rounds,
        Duration::from_secs(2),
        killed,
        done,
    )
    .await?;
    for node in &nodes {
        node.shutdown().await;
    }
    if increase != u64::from(workers * rounds) {
        return Err(format!("the counter rose by {increase}, not {}", workers * rounds).into());
    }
    println!("demo passed: {increase} increments, each exactly once");
    Ok(())
}

/// A base port with the three ports above it free now.
fn free_port_base() -> u16 {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let base = probe
            .local_addr()
            .expect("an address")
            .port()
            .saturating_sub(4);
        drop(probe);
        if base > 1024
            && (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let system = actix_rt::System::new();
    if args.iter().any(|arg| arg == "--demo") {
        return system.block_on(demo());
    }
    let endpoints: Vec<String> = flag(&args, "--endpoints")
        .unwrap_or_else(|| "127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let number = |name: &str, default: u32| -> Result<u32, Error> {
        flag(&args, name).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("{name} {v}: {e}").into())
        })
    };
    let (workers, rounds, ttl) = (
        number("--workers", 3)?,
        number("--rounds", 20)?,
        number("--ttl", 5)?,
    );
    let done = Rc::new(Cell::new(0));
    let increase = system.block_on(run(
        endpoints,
        workers,
        rounds,
        Duration::from_secs(u64::from(ttl)),
        async {},
        done,
    ))?;
    println!("the counter rose by {increase} ({workers} workers × {rounds} rounds)");
    if increase != u64::from(workers * rounds) {
        return Err("some increments were lost or doubled".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_passes() {
        actix_rt::System::new()
            .block_on(super::demo())
            .expect("the demo passes");
    }
}
