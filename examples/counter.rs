//! A replicated counter: the smallest complete raftor program.
//!
//! Three nodes in one process, on loopback TCP, each with its RocksDB in a temporary directory.
//! It adds 1..=10 through whichever node leads, reads the total back linearizably and from every
//! node's own copy, prints it, shuts down and exits.
//!
//! ```sh
//! cargo run --example counter
//! ```
//!
//! It runs on a plain tokio runtime (no actix System): each node then runs its actors on a thread
//! of its own.

use raftor::{Consistency, Error, LogIndex, NodeId, RaftNode, RaftNodeBuilder, StateMachine};
use std::time::Duration;

/// The replicated state: a running total.
#[derive(Default)]
struct Counter {
    total: i64,
}

impl StateMachine for Counter {
    type Command = i64; // add this much
    type Response = i64; // the total after adding
    type Query = (); // what is the total?
    type QueryResponse = i64;
    type Snapshot = i64;

    fn apply(&mut self, _index: LogIndex, add: i64) -> i64 {
        self.total = self.total.wrapping_add(add);
        self.total
    }

    fn query(&self, _: &()) -> i64 {
        self.total
    }

    fn snapshot(&self) -> i64 {
        self.total
    }

    fn restore(&mut self, total: i64) {
        self.total = total;
    }
}

/// Propose `add` on the node that leads, following "not the leader" hints and waiting out
/// elections.
async fn add(nodes: &[RaftNode<Counter>], add: i64) -> Result<i64, Error> {
    let mut target = 0;
    for _ in 0..100 {
        match nodes[target].propose(add).await {
            Err(Error::NotLeader { leader }) => {
                match leader.and_then(|id| nodes.iter().position(|n| n.id() == id)) {
                    Some(leader) => target = leader,
                    // No leader yet: an election is under way.
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            // Nothing was applied: safe to retry. (A timeout would not be: the outcome is unknown.)
            Err(Error::Dropped) => {}
            other => return other,
        }
    }
    Err(Error::NotLeader { leader: None })
}

/// Runs the whole program; returns the total every node agreed on.
async fn run() -> Result<i64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Three free loopback ports.
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = listeners
        .iter()
        .zip(1..)
        .map(|(listener, id)| Ok((NodeId(id), listener.local_addr()?.to_string())))
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    drop(listeners);

    let mut nodes = Vec::new();
    for (id, _) in &peers {
        let node = RaftNodeBuilder::new()
            .id(*id)
            .peers(peers.clone())
            .data_dir(dir.path().join(format!("node-{id}")))
            .start(Counter::default())
            .await?;
        nodes.push(node);
    }

    let mut total = 0;
    for i in 1..=10 {
        total = add(&nodes, i).await?;
    }
    let leader = nodes[0]
        .leadership()
        .borrow()
        .leader
        .and_then(|id| nodes.iter().find(|n| n.id() == id))
        .unwrap_or(&nodes[0]);
    let read = leader.read((), Consistency::Linearizable).await?;
    println!("node {} leads; the total is {read}", leader.id());

    // Every node applies the same entries: wait until each has applied them all.
    for node in &nodes {
        let mut local = node.read((), Consistency::Local).await?;
        for _ in 0..200 {
            if local == total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            local = node.read((), Consistency::Local).await?;
        }
        println!("node {} holds {local}", node.id());
        if local != total {
            return Err(format!("node {} holds {local}, not {total}", node.id()).into());
        }
    }
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(total)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_reaches_55_on_every_node() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let total = runtime.block_on(super::run()).expect("the example runs");
        assert_eq!(total, 55);
    }
}
