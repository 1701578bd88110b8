//! An in-memory transport for tests and simulation: delivers envelopes between registered nodes on
//! the same thread, and can drop, delay and partition them, driven by a seeded RNG so runs replay.

use crate::transport::{Inbound, Outbound};
use actix::{Actor, AsyncContext, Context, Handler, Message as ActixMessage, Recipient};
use raftor_core::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A network of nodes in one process.
pub struct MemoryNetwork {
    nodes: BTreeMap<NodeId, Recipient<Inbound>>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability of dropping any one message.
    drop_rate: f64,
    /// Probability of delivering a message a second time (with its own delay).
    duplicate_rate: f64,
    /// Each message is delayed by a duration drawn from this range (inclusive).
    delay: (Duration, Duration),
    rng: SmallRng,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl MemoryNetwork {
    pub fn new(seed: u64) -> MemoryNetwork {
        MemoryNetwork {
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay: (Duration::ZERO, Duration::ZERO),
            rng: SmallRng::seed_from_u64(seed),
            delivered: 0,
            dropped: 0,
            duplicated: 0,
        }
    }
}

impl Actor for MemoryNetwork {
    type Context = Context<Self>;
}

/// Commands that shape the network.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub enum NetworkControl {
    /// Deliver to `inbound` what is sent to `id` (replacing an earlier registration: a restart).
    Register(NodeId, Recipient<Inbound>),
    /// Stop delivering to `id` (a crash).
    Unregister(NodeId),
    /// Cut `id` off from every other node, both ways.
    Isolate(NodeId),
    /// Drop everything from the first node to the second (a one-way cut).
    CutOneWay(NodeId, NodeId),
    /// Split the nodes into groups that cannot talk to each other.
    Partition(Vec<Vec<NodeId>>),
    /// Restore every link.
    Heal,
    SetDropRate(f64),
    /// Deliver this fraction of the messages twice, each copy with its own delay.
    SetDuplicateRate(f64),
    SetDelay(Duration, Duration),
}

impl Handler<NetworkControl> for MemoryNetwork {
    type Result = ();

    fn handle(&mut self, control: NetworkControl, _ctx: &mut Context<Self>) {
        match control {
            NetworkControl::Register(id, inbound) => {
                self.nodes.insert(id, inbound);
            }
            NetworkControl::Unregister(id) => {
                self.nodes.remove(&id);
            }
            NetworkControl::Isolate(id) => {
                for other in self.nodes.keys() {
                    if *other != id {
                        self.cut.insert((id, *other));
                        self.cut.insert((*other, id));
                    }
                }
            }
            NetworkControl::CutOneWay(from, to) => {
                self.cut.insert((from, to));
            }
            NetworkControl::Partition(groups) => {
                for (i, a) in groups.iter().enumerate() {
                    for (j, b) in groups.iter().enumerate() {
                        if i != j {
                            for from in a {
                                for to in b {
                                    self.cut.insert((*from, *to));
                                }
                            }
                        }
                    }
                }
            }
            NetworkControl::Heal => self.cut.clear(),
            NetworkControl::SetDropRate(rate) => self.drop_rate = rate,
            NetworkControl::SetDuplicateRate(rate) => self.duplicate_rate = rate,
            NetworkControl::SetDelay(min, max) => self.delay = (min, max.max(min)),
        }
    }
}

impl Handler<Outbound> for MemoryNetwork {
    type Result = ();

    fn handle(&mut self, Outbound(envelope): Outbound, ctx: &mut Context<Self>) {
        let link = (envelope.from, envelope.to);
        let Some(inbound) = self.nodes.get(&envelope.to).cloned() else {
            self.dropped += 1;
            return;
        };
        if self.cut.contains(&link) || (self.drop_rate > 0.0 && self.rng.gen_bool(self.drop_rate)) {
            self.dropped += 1;
            return;
        }
        self.delivered += 1;
        if self.duplicate_rate > 0.0 && self.rng.gen_bool(self.duplicate_rate) {
            self.duplicated += 1;
            self.deliver(link, inbound.clone(), envelope.clone(), ctx);
        }
        self.deliver(link, inbound, envelope, ctx);
    }
}

impl MemoryNetwork {
    /// Hands `envelope` to `inbound` after a delay drawn from the configured range.
    fn deliver(
        &mut self,
        link: (NodeId, NodeId),
        inbound: Recipient<Inbound>,
        envelope: raftor_core::Envelope,
        ctx: &mut Context<Self>,
    ) {
        let (min, max) = self.delay;
        let delay = if max > min {
            self.rng.gen_range(min..=max)
        } else {
            min
        };
        if delay.is_zero() {
            inbound.do_send(Inbound(envelope));
        } else {
            ctx.run_later(delay, move |network, _| {
                // Still cut? A partition that began while the message was in flight drops it.
                if !network.cut.contains(&link) {
                    inbound.do_send(Inbound(envelope));
                }
            });
        }
    }
}
