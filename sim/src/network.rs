//! The simulated network: which links are cut, and the fate of each message (lost, duplicated,
//! delayed). Delivery times are random, so messages overtake each other; the simulator's event
//! queue, ordered by (time, sequence number), decides the order deterministically.

use crate::config::SimConfig;
use crate::trace::DropReason;
use raftor_core::NodeId;
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeMap;

/// What becomes of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Dropped(DropReason),
    /// Delivered after each of these delays (two for a duplicate).
    Delivered(Vec<u64>),
}

#[derive(Default)]
pub(crate) struct Network {
    /// Directed links that carry nothing, with how many partitions or cuts hold them down.
    cut: BTreeMap<(NodeId, NodeId), u32>,
}

impl Network {
    pub(crate) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains_key(&(from, to))
    }

    pub(crate) fn cut(&mut self, links: &[(NodeId, NodeId)]) {
        for link in links {
            *self.cut.entry(*link).or_default() += 1;
        }
    }

    /// Undo one `cut` of these links; returns how many links work again.
    pub(crate) fn heal(&mut self, links: &[(NodeId, NodeId)]) -> usize {
        let mut healed = 0;
        for link in links {
            if let Some(count) = self.cut.get_mut(link) {
                *count -= 1;
                if *count == 0 {
                    self.cut.remove(link);
                    healed += 1;
                }
            }
        }
        healed
    }

    pub(crate) fn heal_all(&mut self) -> usize {
        let healed = self.cut.len();
        self.cut.clear();
        healed
    }

    /// Decide the fate of a message sent now; `faults` says whether losses and duplicates happen.
    pub(crate) fn fate(
        &self,
        rng: &mut SmallRng,
        config: &SimConfig,
        faults: bool,
        from: NodeId,
        to: NodeId,
    ) -> Fate {
        if faults && rng.gen_bool(config.drop_rate) {
            return Fate::Dropped(DropReason::Lost);
        }
        if self.is_cut(from, to) {
            return Fate::Dropped(DropReason::Cut);
        }
        let copies = if faults && rng.gen_bool(config.duplicate_rate) {
            2
        } else {
            1
        };
        let delays = (0..copies)
            .map(|_| {
                if rng.gen_bool(config.long_delay_rate) {
                    rng.gen_range(1..=config.long_delay.max(1))
                } else {
                    rng.gen_range(1..=config.max_delay.max(1))
                }
            })
            .collect();
        Fate::Delivered(delays)
    }
}
