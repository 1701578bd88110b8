//! Carrying out the leader's sends (`Ready::sends`), as the node actor and its peers' senders
//! do: entries from the log (a cache miss is read later), snapshots from the disk.

use crate::trace::TraceEvent;
use raftor_core::{EntriesOrder, PeerSend, SendOutcome};

use super::{Effects, Knobs, SimNode};

impl SimNode {
    /// Send the entries `order` asks for from the log as it is now (the rules' log: durable or
    /// not), cut short at the byte bound; the outcome for the rules. A log that no longer holds
    /// the entry before them as ordered (compacted, or cut and rewritten since) sends nothing.
    fn send_entries(&self, order: &EntriesOrder, knobs: &Knobs, fx: &mut Effects) -> SendOutcome {
        let prev = order.prev_log_id;
        let holds_prev =
            prev.index >= self.log.start.index && self.log.term_at(prev.index) == Some(prev.term);
        let mut entries = if holds_prev {
            self.log.slice(prev.index, order.last_index)
        } else {
            Vec::new()
        };
        let mut bytes = 0usize;
        let keep = entries
            .iter()
            .take_while(|entry| {
                bytes += entry.payload_len();
                bytes <= knobs.message_bytes
            })
            .count()
            .max(1);
        entries.truncate(keep);
        if entries.is_empty() {
            return order.unavailable();
        }
        let outcome = order.sent(&entries);
        fx.send.push(order.message(self.id, entries));
        outcome
    }

    /// The read of an order that missed the cache completes: send what it found (even if this
    /// node no longer leads: the peer's sender does not know) and tell the rules.
    pub(crate) fn fetch(&mut self, order: EntriesOrder, knobs: &Knobs, fx: &mut Effects) {
        if self.raft.is_none() {
            return;
        }
        let outcome = self.send_entries(&order, knobs, fx);
        fx.trace.push(TraceEvent::Fetched {
            node: self.id,
            to: order.to,
            last: order.last_index,
            sent: match outcome {
                SendOutcome::EntriesSent { last_index, .. } => Some(last_index),
                _ => None,
            },
        });
        self.raft
            .as_mut()
            .expect("running")
            .on_send_outcome(outcome);
        self.process(knobs, fx);
    }

    /// Carry out the leader's sends, as the node actor does: entries from the log (synced or
    /// not), cut short at the byte bound; snapshots from the disk. Each outcome goes back to
    /// the rules, and what they send next is carried out too (the next message of a pipeline).
    pub(super) fn carry_out(&mut self, mut sends: Vec<PeerSend>, knobs: &Knobs, fx: &mut Effects) {
        if !sends.is_empty() {
            let term = self.raft.as_ref().expect("running").current_term();
            fx.led.push((self.id, term));
        }
        while !sends.is_empty() {
            for send in sends {
                let outcome = match send {
                    PeerSend::Message(envelope) => {
                        fx.send.push(envelope);
                        continue;
                    }
                    PeerSend::Entries(order) => {
                        let behind = self.log.last_index().0
                            - order.first_index().0.min(self.log.last_index().0);
                        if behind >= knobs.cache_entries {
                            fx.fetches.push((self.id, order));
                            continue;
                        }
                        self.send_entries(&order, knobs, fx)
                    }
                    PeerSend::OpenSnapshot { to, request_id } => {
                        match self.disk.newest().cloned() {
                            Some(snapshot) => {
                                fx.trace.push(TraceEvent::SnapshotSending {
                                    node: self.id,
                                    to,
                                    last: snapshot.last(),
                                });
                                let meta = snapshot.meta.clone();
                                self.open_snapshots.insert(to, snapshot);
                                SendOutcome::SnapshotOpened {
                                    to,
                                    request_id,
                                    meta,
                                }
                            }
                            None => SendOutcome::SnapshotUnavailable { to, request_id },
                        }
                    }
                    PeerSend::SnapshotChunk(order) => match self.open_snapshots.get(&order.to) {
                        Some(snapshot) if snapshot.meta == order.meta => {
                            let size = snapshot.data.len();
                            let from = (order.offset as usize).min(size);
                            let to = (from + knobs.chunk_bytes.max(1)).min(size);
                            let data = snapshot.data.slice(from..to);
                            fx.send.push(order.message(self.id, data));
                            continue;
                        }
                        _ => order.unavailable(),
                    },
                };
                let raft = self.raft.as_mut().expect("running");
                raft.on_send_outcome(outcome);
            }
            let raft = self.raft.as_mut().expect("running");
            sends = raft.take_sends();
        }
    }
}
