//! A snapshot arriving from a leader, chunk by chunk, as the node actor assembles it.

use crate::trace::TraceEvent;
use raftor_core::{
    Envelope, InstallSnapshot, InstallSnapshotResponse, Message, NodeId, SnapshotOutcome, Term,
};

use super::{Effects, Receiving, SimNode, SimSnapshot};

impl SimNode {
    /// Take in a chunk of a snapshot from the leader `from`; answer where to go on at once, or,
    /// once the whole snapshot is there and checks out, store it and hand it to the rules.
    /// Returns whether the rules were handed one.
    pub(super) fn receive_chunk(
        &mut self,
        from: NodeId,
        chunk: InstallSnapshot,
        term: Term,
        fx: &mut Effects,
    ) -> bool {
        let same = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.from == from && r.meta == chunk.meta);
        let next = 'next: {
            if !same {
                if chunk.offset != 0 {
                    break 'next 0;
                }
                self.receiving = Some(Receiving {
                    from,
                    meta: chunk.meta.clone(),
                    data: Vec::new(),
                });
            }
            let current = self.receiving.as_mut().expect("just set");
            if chunk.offset != current.data.len() as u64 {
                break 'next current.data.len() as u64;
            }
            current.data.extend_from_slice(&chunk.data);
            if !chunk.done {
                break 'next current.data.len() as u64;
            }
            let done = self.receiving.take().expect("receiving");
            match SimSnapshot::parse(done.meta, done.data) {
                Ok(snapshot) => {
                    fx.trace.push(TraceEvent::SnapshotReceived {
                        node: self.id,
                        from,
                        last: snapshot.last(),
                    });
                    fx.snapshots_installed += 1;
                    self.disk.store(snapshot.clone());
                    let raft = self.raft.as_mut().expect("running");
                    raft.on_snapshot_received(from, chunk.term, chunk.request_id, snapshot.meta);
                    return true;
                }
                Err(detail) => {
                    fx.contract.push((self.id, detail));
                    0
                }
            }
        };
        // No durable promise rides on this answer: it goes out at once.
        fx.send.push(Envelope {
            from: self.id,
            to: from,
            message: Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                request_id: chunk.request_id,
                outcome: SnapshotOutcome::NextOffset(next),
            }),
        });
        false
    }
}
