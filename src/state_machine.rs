//! The application's state machine, with its own serde types for commands, results, queries and
//! snapshots.
//!
//! Implement [`StateMachine`] and hand it to [`RaftNodeBuilder::new`](crate::RaftNodeBuilder::new); the
//! node encodes commands and queries with bincode, replicates the commands through the Raft log and
//! applies each committed one, in log order, on every node. [`Encoded`] is the adapter underneath:
//! it turns a typed machine into the byte-level machine the actors drive.
//!
//! ```
//! use raftor::{LogIndex, StateMachine};
//!
//! /// A replicated counter.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64; // add this much
//!     type Response = u64; // the new total
//!     type Query = (); // "what is the total?"
//!     type QueryResponse = u64;
//!     type Snapshot = u64;
//!
//!     fn apply(&mut self, _index: LogIndex, add: u64) -> u64 {
//!         self.0 = self.0.wrapping_add(add);
//!         self.0
//!     }
//!     fn query(&self, _: &()) -> u64 {
//!         self.0
//!     }
//!     fn snapshot(&self) -> u64 {
//!         self.0
//!     }
//!     fn restore(&mut self, total: u64) {
//!         self.0 = total;
//!     }
//! }
//!
//! let mut counter = Counter::default();
//! assert_eq!(counter.apply(LogIndex(1), 5), 5);
//! assert_eq!(counter.query(&()), 5);
//! ```

use crate::snapshot_reader::GrowingReader;
use bytes::Bytes;
use raftor_actors::state_machine::SnapshotWriter;
use raftor_core::LogIndex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

/// A deterministic state machine fed with committed commands in log order.
///
/// Every node applies the same commands in the same order, so every node ends in the same state —
/// provided [`StateMachine::apply`] is deterministic: it must depend only on the machine's state,
/// the index and the command. No clock, no randomness, no IO whose outcome may differ between
/// nodes, no iteration over a `HashMap` whose order matters. It should also be quick: it runs on
/// the node's applier actor, and the entries after it (and every read) wait for it. Do slow work
/// outside, and propose its outcome as a command.
///
/// The associated types travel as bincode: commands in the log (on disk, to every follower),
/// results back to the proposer, queries and their answers within the node, snapshots to disk and
/// to followers. Changing a type's encoding changes what old logs and snapshots decode to: add
/// variants at the end of enums, never remove or reorder them.
pub trait StateMachine: 'static {
    /// A change to the state, proposed with [`RaftNode::propose`](crate::RaftNode::propose).
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command answers its proposer.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// A read, asked with [`RaftNode::read`](crate::RaftNode::read).
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// The answer to a query.
    type QueryResponse: Serialize + DeserializeOwned + Send + 'static;
    /// A point-in-time copy of the whole state (see [`StateMachine::snapshot`]). It is decoded
    /// with bincode, strings and byte buffers growing as their bytes are read; a collection type
    /// whose `Deserialize` reserves room for a length before reading its elements (`imbl`'s do;
    /// std's and serde's reserve at most about 1 MiB) can make a damaged snapshot abort the
    /// process: decode such a collection with a bounded reservation (`deserialize_with`).
    type Snapshot: Serialize + DeserializeOwned + Send + 'static;

    /// Apply `command`, committed at `index`, and say what it did. Runs once per committed entry
    /// on every node; only the proposer's node hands the result back (to the proposer).
    fn apply(&mut self, index: LogIndex, command: Self::Command) -> Self::Response;

    /// Answer a read-only query from the current state.
    fn query(&self, query: &Self::Query) -> Self::QueryResponse;

    /// A copy of the state as it is now, after every entry applied so far and nothing else. Called
    /// on the applier between two `apply` calls: make it a cheap copy (share immutable values,
    /// such as [`Bytes`], or use persistent data structures); it is serialised afterwards, off the
    /// applier, while applying goes on.
    fn snapshot(&self) -> Self::Snapshot;

    /// Replace the whole state with `snapshot` (taken by [`StateMachine::snapshot`], possibly on
    /// another node). Entries after the snapshot's point are applied next.
    fn restore(&mut self, snapshot: Self::Snapshot);
}

/// A typed [`StateMachine`] as the byte-level [`raftor_actors::StateMachine`] the actors drive:
/// commands and queries are decoded with bincode, results and answers encoded with bincode, each
/// framed as a `Result<_, String>` so that a command that cannot be decoded (proposed as raw bytes,
/// or written by another version of the application) is answered with an error — the same on every
/// node — instead of panicking the node. [`RaftNode`](crate::RaftNode) does this wrapping itself;
/// use `Encoded` only to run a typed machine under the actors directly.
pub struct Encoded<M>(pub M);

impl<M: StateMachine> raftor_actors::StateMachine for Encoded<M> {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        apply_encoded(&mut self.0, index, command)
    }

    fn query(&self, query: &[u8]) -> Bytes {
        query_encoded(&self.0, query)
    }

    fn snapshot(&self) -> SnapshotWriter {
        snapshot_encoded(&self.0)
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        restore_encoded(&mut self.0, input)
    }
}

/// `Ok(value)` or `Err(reason)`, bincode-encoded: what the byte-level machine answers.
fn frame<T: Serialize>(result: Result<&T, String>) -> Bytes {
    // Serialising into a Vec fails only for types serde cannot express in bincode (maps with
    // unknown length are fine): report that as an error rather than panic.
    match bincode::serialize(&result) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => Bytes::from(
            bincode::serialize(&Err::<(), String>(format!(
                "cannot encode the answer: {error}"
            )))
            .unwrap_or_default(),
        ),
    }
}

/// Decodes an answer of the byte-level machine ([`Encoded`]): `Ok(value)`,
/// `Err(Rejected(reason))` when the machine refused the command or query,
/// `Err(Undecodable(reason))` when the bytes are not a framed `T`. For a service that carries the
/// answers' bytes itself (the key-value service's native protocol does).
pub fn unframe<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Unframed> {
    match bincode::deserialize::<Result<T, String>>(bytes) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(Unframed::Rejected(reason)),
        Err(error) => Err(Unframed::Undecodable(error.to_string())),
    }
}

/// Why a framed answer holds no value.
#[derive(Debug)]
pub enum Unframed {
    /// The state machine's side refused (the command or query did not decode there).
    Rejected(String),
    /// The answer itself did not decode (a different version of the types).
    Undecodable(String),
}

pub(crate) fn apply_encoded<M: StateMachine>(
    machine: &mut M,
    index: LogIndex,
    command: &[u8],
) -> Bytes {
    match bincode::deserialize::<M::Command>(command) {
        Ok(command) => frame(Ok(&machine.apply(index, command))),
        Err(error) => {
            tracing::warn!(index = %index, %error, "a committed command could not be decoded; skipped");
            frame::<M::Response>(Err(format!(
                "the command at index {index} could not be decoded: {error}"
            )))
        }
    }
}

pub(crate) fn query_encoded<M: StateMachine>(machine: &M, query: &[u8]) -> Bytes {
    match bincode::deserialize::<M::Query>(query) {
        Ok(query) => frame(Ok(&machine.query(&query))),
        Err(error) => {
            frame::<M::QueryResponse>(Err(format!("the query could not be decoded: {error}")))
        }
    }
}

pub(crate) fn snapshot_encoded<M: StateMachine>(machine: &M) -> SnapshotWriter {
    let snapshot = machine.snapshot();
    Box::new(move |out: &mut dyn io::Write| {
        bincode::serialize_into(out, &snapshot).map_err(io::Error::other)
    })
}

pub(crate) fn restore_encoded<M: StateMachine>(
    machine: &mut M,
    input: &mut dyn io::Read,
) -> io::Result<()> {
    // Decoded completely before the machine is touched: a damaged snapshot leaves it as it was.
    // Its buffers grow with the bytes read, not from the lengths written in it
    // (`snapshot_reader`): a damaged length is an error, not an abort.
    let snapshot: M::Snapshot = bincode::deserialize_from_custom(GrowingReader::new(input))
        .map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad snapshot: {error}"))
        })?;
    machine.restore(snapshot);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftor_actors::StateMachine as ByteStateMachine;
    use serde::Deserialize;

    #[derive(Default)]
    struct Register(Vec<String>);

    #[derive(Serialize, Deserialize)]
    enum Op {
        Push(String),
        Clear,
    }

    impl StateMachine for Register {
        type Command = Op;
        type Response = usize;
        type Query = usize;
        type QueryResponse = Option<String>;
        type Snapshot = Vec<String>;

        fn apply(&mut self, _index: LogIndex, op: Op) -> usize {
            match op {
                Op::Push(value) => self.0.push(value),
                Op::Clear => self.0.clear(),
            }
            self.0.len()
        }
        fn query(&self, at: &usize) -> Option<String> {
            self.0.get(*at).cloned()
        }
        fn snapshot(&self) -> Vec<String> {
            self.0.clone()
        }
        fn restore(&mut self, snapshot: Vec<String>) {
            self.0 = snapshot;
        }
    }

    fn command(op: &Op) -> Vec<u8> {
        bincode::serialize(op).expect("encodes")
    }

    #[test]
    fn commands_and_queries_round_trip_through_bytes() {
        let mut machine = Encoded(Register::default());
        let result = machine.apply(LogIndex(1), &command(&Op::Push("a".into())));
        assert_eq!(unframe::<usize>(&result).expect("applied"), 1);
        machine.apply(LogIndex(2), &command(&Op::Push("b".into())));
        let answer = machine.query(&bincode::serialize(&1usize).expect("encodes"));
        assert_eq!(
            unframe::<Option<String>>(&answer).expect("answered"),
            Some("b".to_string())
        );
    }

    #[test]
    fn an_undecodable_command_is_refused_and_changes_nothing() {
        let mut machine = Encoded(Register::default());
        machine.apply(LogIndex(1), &command(&Op::Push("a".into())));
        // Variant 7 of `Op` does not exist.
        let result = machine.apply(LogIndex(2), &[7, 0, 0, 0]);
        match unframe::<usize>(&result) {
            Err(Unframed::Rejected(reason)) => assert!(reason.contains("index 2"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(machine.0 .0, vec!["a".to_string()]);
        let answer = machine.query(b"");
        assert!(matches!(
            unframe::<Option<String>>(&answer),
            Err(Unframed::Rejected(_))
        ));
        // Bytes that are no framed answer at all.
        assert!(matches!(
            unframe::<usize>(b"\x05"),
            Err(Unframed::Undecodable(_))
        ));
    }

    #[test]
    fn a_snapshot_is_a_copy_taken_now_and_restores_whole() {
        let mut machine = Encoded(Register::default());
        machine.apply(LogIndex(1), &command(&Op::Push("a".into())));
        let writer = machine.snapshot();
        machine.apply(LogIndex(2), &command(&Op::Push("b".into())));
        let mut bytes = Vec::new();
        writer(&mut bytes).expect("written");

        let mut restored = Encoded(Register::default());
        restored.restore(&mut bytes.as_slice()).expect("restored");
        assert_eq!(restored.0 .0, vec!["a".to_string()]);

        let mut damaged = Encoded(Register(vec!["keep".into()]));
        assert!(damaged.restore(&mut &bytes[..bytes.len() - 1]).is_err());
        assert_eq!(damaged.0 .0, vec!["keep".to_string()]);
        let _ = machine.apply(LogIndex(3), &command(&Op::Clear));
        assert!(machine.0 .0.is_empty());
    }
}
