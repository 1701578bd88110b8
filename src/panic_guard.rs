//! A panic in the application's state machine stops the node: its applier is gone, so the node
//! could still lead but would never apply or answer again.

use crate::state_machine::{self as typed, StateMachine};
use bytes::Bytes;
use raftor_actors::NodeHandle;
use raftor_core::LogIndex;
use std::sync::{Arc, OnceLock, Weak};

/// The node a panicking machine stops; set once the node has started (a panic before, while a
/// snapshot is restored at start, fails the start itself).
pub(crate) type StopOnPanic = Arc<OnceLock<Weak<NodeHandle>>>;

/// The application's machine as the applier drives it (as [`typed::Encoded`] does), stopping
/// the node if it panics.
pub(crate) struct Guarded<M> {
    pub(crate) machine: M,
    pub(crate) node: StopOnPanic,
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(not a string)"
    }
}

/// Runs `f`; if it panics, stops the node and lets the panic go on (it stops the applier).
fn guard<T>(node: &StopOnPanic, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(panic) => {
            if let Some(node) = node.get().and_then(Weak::upgrade) {
                node.fail(format!(
                    "the state machine panicked: {}",
                    panic_message(panic.as_ref())
                ));
            }
            std::panic::resume_unwind(panic)
        }
    }
}

impl<M: StateMachine> raftor_actors::StateMachine for Guarded<M> {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let machine = &mut self.machine;
        guard(&self.node, || typed::apply_encoded(machine, index, command))
    }

    fn query(&self, query: &[u8]) -> Bytes {
        guard(&self.node, || typed::query_encoded(&self.machine, query))
    }

    fn snapshot(&self) -> raftor_actors::state_machine::SnapshotWriter {
        guard(&self.node, || typed::snapshot_encoded(&self.machine))
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        let machine = &mut self.machine;
        guard(&self.node, || typed::restore_encoded(machine, input))
    }
}
