//! A node started outside an actix System runs one of its own, on a thread of its own, which
//! [`RaftNode::shutdown`](crate::RaftNode::shutdown) stops.

use crate::error::StartError;
use crate::raft_node::{lock, RaftNode};
use crate::state_machine::StateMachine;
use crate::RaftNodeBuilder;
use tokio::sync::oneshot;

/// The actix System of a node started outside one, on its own thread.
pub(crate) struct OwnSystem {
    pub(crate) system: actix::System,
    /// Resolves once the thread has left its System.
    pub(crate) exited: oneshot::Receiver<()>,
}

/// Start the node on a new thread running its own actix System.
pub(crate) async fn start_on_own_thread<M: StateMachine + Send>(
    builder: RaftNodeBuilder,
    machine: M,
) -> Result<RaftNode<M>, StartError> {
    let (started_tx, started_rx) = oneshot::channel();
    let (exited_tx, exited_rx) = oneshot::channel();
    let name = format!("raftor-node-{}", builder.id.map_or(0, |id| id.0));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let system = actix::System::new();
            let started = system.block_on(builder.start_here(machine));
            let ok = started.is_ok();
            let _ = started_tx.send(started.map(|node| (node, actix::System::current())));
            if ok {
                let _ = system.run();
            }
            let _ = exited_tx.send(());
        })
        .map_err(StartError::Thread)?;
    let (node, system) = started_rx
        .await
        .map_err(|_| StartError::Thread(std::io::Error::other("the node's thread ended")))??;
    *lock(&node.inner.own_system) = Some(OwnSystem {
        system,
        exited: exited_rx,
    });
    Ok(node)
}
