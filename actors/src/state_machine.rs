//! The application's side of Raft: what committed commands do, and how the state is saved to and
//! restored from a snapshot (§7, log compaction).

use bytes::Bytes;
use raftor_core::LogIndex;
use std::io;

/// A point-in-time copy of a state machine, taken by [`StateMachine::snapshot`], that writes
/// itself out later — on another thread, while the machine goes on applying. It must not borrow
/// the machine: capture a copy (cheap when values are shared, such as [`Bytes`]).
pub type SnapshotWriter = Box<dyn FnOnce(&mut dyn io::Write) -> io::Result<()> + Send>;

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

    /// The state as it is now, after every entry applied so far and nothing else, as a writer to
    /// be run later (streamed to a file, or to a follower in chunks). Called on the applier between
    /// two `apply` calls; it should copy, not serialise, so the applier is not held up.
    fn snapshot(&self) -> SnapshotWriter;

    /// Replace the whole state with a snapshot that [`StateMachine::snapshot`] wrote, read from
    /// `input`. On an error the machine must be left as it was or empty, never half-restored
    /// (decode into a new value, then swap).
    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()>;
}
