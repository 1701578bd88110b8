//! The application's side of Raft: what committed commands do.

use bytes::Bytes;
use raftor_core::LogIndex;

/// A deterministic state machine fed with committed commands in log order (§5.3 State Machine
/// Safety: every node applies the same commands in the same order, so they end in the same state).
///
/// `apply` runs on the applier actor: it must be deterministic (no clock, no randomness, no IO whose
/// outcome differs between nodes) and should be quick, because entries after it wait.
pub trait StateMachine: 'static {
    /// Apply the command committed at `index`; the result is handed to the proposer.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes;

    /// Answer a read-only query from the current state.
    fn query(&self, query: &[u8]) -> Bytes;
}
