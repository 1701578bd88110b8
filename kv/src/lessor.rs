//! The lessor: on the leader, each lease's deadline, and the expiry it proposes when one passes.
//!
//! Time never enters the replicated map: a lease ends by an entry in the log
//! ([`KvOp::LeaseRevoke`] with `expired`), proposed here by the leader, so every node deletes the
//! lease's keys at the same index. Deadlines live only in the leader's memory:
//!
//! - a grant or a keep-alive sets the lease's deadline to one TTL after the request arrived;
//! - a keep-alive is answered only after the leader confirmed its leadership with a majority
//!   (a linearizable read of the lease), so no leader elected before it arrived can have
//!   expired the lease on an older deadline;
//! - a node that becomes leader does not know the deadlines its predecessor kept, so it gives
//!   every lease a full TTL from the moment it sees itself leader. Any deadline the old leader
//!   promised was at most one TTL after a keep-alive that arrived before this election, so the
//!   new deadline is never earlier: a lease never expires before its holder was told it would.
//!   The price is that a lease whose holder died may live up to one TTL (plus the election)
//!   longer than it would have.
//!
//! Clocks are only compared on one machine (the leader's monotonic clock); like lease reads, the
//! rule assumes the leader's and the client's clocks advance at about the same rate.

use crate::store::{KvAnswer, KvCommand, KvOp, KvQuery, KvStateMachine, MAX_LEASE_TTL};
use raftor::{Consistency, RaftNode};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the lessor looks for leases past their deadline.
pub const LESSOR_TICK: Duration = Duration::from_millis(200);
/// At most this many expiries are proposed per tick (the rest wait for the next ones).
const MAX_EXPIRIES_PER_TICK: usize = 64;

/// A lease's TTL as a duration, never longer than [`MAX_LEASE_TTL`] (a lease proposed by other
/// means than the service, with an absurd TTL, must not overflow the clock arithmetic).
fn ttl_of(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms).min(MAX_LEASE_TTL)
}

/// A lease the leader keeps time for.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    deadline: Instant,
    /// An expiry was proposed and has not failed: a keep-alive can no longer save it.
    expiring: bool,
}

/// Deadlines of the leases, kept by the leader (empty elsewhere).
#[derive(Debug, Default)]
pub struct Lessor {
    /// The term the deadlines were set in; `None` while not leading.
    term: Option<u64>,
    /// The index at which the map's set of leases was as `leases` holds it (its
    /// `leases_changed_at`, [`KvQuery::LeaseTtls`]), once synced in this term.
    synced_at: Option<u64>,
    leases: BTreeMap<u64, Tracked>,
    /// `(deadline, id)` of each lease in `leases` not expiring, and nothing else: a tick finds
    /// the leases past their deadline here without looking at the others.
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Lessor {
    pub fn new() -> Rc<RefCell<Lessor>> {
        Rc::new(RefCell::new(Lessor::default()))
    }

    /// Lease `id` was granted by this leader at `now`. A lease already kept (listed since the
    /// grant was applied, with a later deadline, or being expired: a session's retried grant is
    /// answered as the first time) is left as it is.
    pub fn granted(&mut self, id: u64, ttl_ms: u64, now: Instant) {
        if self.revoked(id) || self.leases.contains_key(&id) {
            return;
        }
        let ttl = ttl_of(ttl_ms);
        self.track(
            id,
            Tracked {
                deadline: now + ttl,
                expiring: false,
            },
        );
    }

    /// Whether lease `id` is certainly gone from the map: not kept here, though granted (its id
    /// is its grant's index) at or before the index the leases were last listed at, so it was
    /// listed then and forgotten by a later listing, or revoked before. A keep-alive or a grant's
    /// answer that raced with its revoke must not bring it back.
    fn revoked(&self, id: u64) -> bool {
        !self.leases.contains_key(&id) && self.synced_at.is_some_and(|at| id <= at)
    }

    /// Keep `tracked` for lease `id`, in place of what was kept for it.
    fn track(&mut self, id: u64, tracked: Tracked) {
        self.untrack(id);
        if !tracked.expiring {
            self.by_deadline.insert((tracked.deadline, id));
        }
        self.leases.insert(id, tracked);
        self.debug_check();
    }

    /// Forget lease `id`; what was kept for it.
    fn untrack(&mut self, id: u64) -> Option<Tracked> {
        let tracked = self.leases.remove(&id)?;
        if !tracked.expiring {
            self.by_deadline.remove(&(tracked.deadline, id));
        }
        Some(tracked)
    }

    /// `by_deadline` indexes exactly the leases not expiring (checked in full in tests, where
    /// the tables are small).
    fn debug_check(&self) {
        #[cfg(test)]
        {
            let live = self.leases.values().filter(|t| !t.expiring).count();
            debug_assert_eq!(self.by_deadline.len(), live);
            debug_assert!(self.by_deadline.iter().all(|(deadline, id)| self
                .leases
                .get(id)
                .is_some_and(|t| t.deadline == *deadline && !t.expiring)));
        }
    }

    /// A keep-alive of lease `id` (whose TTL is `ttl_ms`) that arrived at `received`, confirmed
    /// since by a majority: its new time left, or `None` if the lease is already being expired.
    pub fn keep_alive(
        &mut self,
        id: u64,
        ttl_ms: u64,
        received: Instant,
        now: Instant,
    ) -> Option<Duration> {
        if self.revoked(id) {
            return None;
        }
        let ttl = ttl_of(ttl_ms);
        let mut tracked = self.leases.get(&id).copied().unwrap_or(Tracked {
            deadline: received + ttl,
            expiring: false,
        });
        if tracked.expiring {
            return None;
        }
        tracked.deadline = tracked.deadline.max(received + ttl);
        self.track(id, tracked);
        Some(tracked.deadline.saturating_duration_since(now))
    }

    /// Lease `id`'s time left, as this leader keeps it.
    pub fn remaining(&self, id: u64, now: Instant) -> Option<Duration> {
        self.leases
            .get(&id)
            .filter(|t| !t.expiring)
            .map(|t| t.deadline.saturating_duration_since(now))
    }

    /// Whether an expiry of lease `id` is under way.
    pub fn is_expiring(&self, id: u64) -> bool {
        self.leases.get(&id).is_some_and(|t| t.expiring)
    }

    /// The index the leases were last synced at ([`Lessor::sync`]), if they were in `term`: the
    /// map need not list them again unless they changed since.
    fn synced_at(&self, term: u64) -> Option<u64> {
        self.synced_at.filter(|_| self.term == Some(term))
    }

    /// Match the deadlines to the leases the map holds (their ids and TTLs, by id, as of index
    /// `changed_at`), as leader of `term` at `now`: a new term gives every lease a full TTL from
    /// now (see the module's rule); a lease not seen before gets one too; a lease the map no
    /// longer holds is forgotten.
    fn sync(&mut self, term: u64, changed_at: u64, leases: &[(u64, u64)], now: Instant) {
        if self.term != Some(term) {
            self.term = Some(term);
            self.leases.clear();
            self.by_deadline.clear();
        }
        // Both in id order: one walk finds what is new and what is gone, and only those change
        // (a grant among a million leases does not rebuild the tables).
        let mut new = Vec::new();
        let mut gone = Vec::new();
        let mut kept = self.leases.keys().copied().peekable();
        for &(id, ttl_ms) in leases {
            while let Some(old) = kept.next_if(|&old| old < id) {
                gone.push(old);
            }
            if kept.next_if_eq(&id).is_none() {
                new.push((id, ttl_ms));
            }
        }
        gone.extend(kept);
        for id in gone {
            self.untrack(id);
        }
        for (id, ttl_ms) in new {
            let tracked = Tracked {
                deadline: now + ttl_of(ttl_ms),
                expiring: false,
            };
            self.track(id, tracked);
        }
        self.synced_at = Some(changed_at);
        self.debug_check();
    }

    /// The leases past their deadline at `now` (at most [`MAX_EXPIRIES_PER_TICK`], the earliest
    /// first), marked as expiring.
    fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while due.len() < MAX_EXPIRIES_PER_TICK {
            let Some(&(deadline, id)) = self.by_deadline.first() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(tracked) = self.leases.get_mut(&id) {
                tracked.expiring = true;
            }
            due.push(id);
        }
        self.debug_check();
        due
    }

    /// The expiry of `id` was certainly not appended (this node no longer leads, or is handing
    /// leadership over): it may be proposed again. After any other failure (a timeout...) the
    /// entry may still commit, so the lease stays marked as expiring — a keep-alive must not be
    /// answered for it — until it leaves the map or the term ends.
    /// `term` is the one the expiry was proposed in: a failure from an older term says nothing
    /// of an expiry this term proposed.
    fn expiry_failed(&mut self, id: u64, term: u64) {
        if self.term != Some(term) {
            return;
        }
        if let Some(&tracked) = self.leases.get(&id) {
            self.track(
                id,
                Tracked {
                    expiring: false,
                    ..tracked
                },
            );
        }
    }

    /// Not the leader (any more): forget every deadline.
    fn step_down(&mut self) {
        self.term = None;
        self.synced_at = None;
        self.leases.clear();
        self.by_deadline.clear();
    }
}

/// Keep the deadlines while this node leads, and propose the expiry of each lease past its
/// deadline; returns once the node has stopped.
pub async fn run(node: RaftNode<KvStateMachine>, lessor: Rc<RefCell<Lessor>>) {
    let mut leadership = node.leadership();
    let mut tick = tokio::time::interval(LESSOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let current = *leadership.borrow_and_update();
        if !current.is_leader() {
            lessor.borrow_mut().step_down();
            continue;
        }
        let unless_changed_at = lessor.borrow().synced_at(current.term.0);
        let query = KvQuery::LeaseTtls { unless_changed_at };
        let (changed_at, leases) = match node.read(query, Consistency::Local).await {
            Ok(KvAnswer::LeaseTtls { changed_at, leases }) => (changed_at, leases),
            Ok(_) | Err(_) => continue,
        };
        let now = Instant::now();
        let due = {
            let mut lessor = lessor.borrow_mut();
            if let Some(leases) = leases {
                lessor.sync(current.term.0, changed_at, &leases, now);
            }
            lessor.due(now)
        };
        let term = current.term.0;
        for id in due {
            let node = node.clone();
            let lessor = lessor.clone();
            actix::spawn(async move {
                let command = KvCommand {
                    session: None,
                    op: KvOp::LeaseRevoke { id, expired: true },
                };
                match node.propose(command).await {
                    // It stays marked as expiring until the next sync (which its revoke brings
                    // about) finds it gone.
                    Ok(_) => tracing::debug!(lease = id, "lease expired"),
                    Err(
                        error @ (raftor::Error::NotLeader { .. }
                        | raftor::Error::Transferring { .. }),
                    ) => {
                        tracing::debug!(lease = id, %error, "lease expiry not appended; will retry");
                        lessor.borrow_mut().expiry_failed(id, term);
                    }
                    Err(error) => {
                        tracing::warn!(lease = id, %error, "lease expiry's outcome unknown; the lease stays expiring");
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_term_gives_every_lease_a_full_ttl_from_now() {
        let start = Instant::now();
        let mut lessor = Lessor::default();
        lessor.sync(3, 7, &[(10, 1_000)], start);
        let later = start + Duration::from_millis(900);
        assert_eq!(
            lessor.remaining(10, later),
            Some(Duration::from_millis(100))
        );
        // Leadership moves to a node (here: the same table, a new term) at `later`: the lease
        // gets a full TTL from then, never less than its holder was promised.
        lessor.sync(4, 7, &[(10, 1_000)], later);
        assert_eq!(
            lessor.remaining(10, later),
            Some(Duration::from_millis(1_000))
        );
        assert!(lessor.due(later + Duration::from_millis(999)).is_empty());
        assert_eq!(lessor.due(later + Duration::from_millis(1_000)), [10]);
        // Being expired, a keep-alive cannot save it; a failed expiry can be retried.
        assert_eq!(lessor.keep_alive(10, 1_000, later, later), None);
        lessor.expiry_failed(10, 3);
        assert!(
            lessor.is_expiring(10),
            "a failure from another term changes nothing"
        );
        lessor.expiry_failed(10, 4);
        assert_eq!(lessor.due(later + Duration::from_millis(1_000)), [10]);
    }

    /// A tick takes the leases past their deadline from an index by deadline: the earliest
    /// first, at most a tick's worth, one kept alive moved to its new deadline, one being expired
    /// not due again, one whose expiry failed due again.
    #[test]
    fn due_leases_come_earliest_first_from_the_deadline_index() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut lessor = Lessor::default();
        let leases: Vec<(u64, u64)> = (1..=100).map(|id| (id, 10_000 - id * 10)).collect();
        lessor.sync(1, 100, &leases, start);
        // Lease 100 (the shortest TTL) is kept alive past all the others.
        assert!(lessor
            .keep_alive(100, 9_000, ms(8_000), ms(8_000))
            .is_some());
        let due = lessor.due(ms(10_000));
        assert_eq!(due.len(), MAX_EXPIRIES_PER_TICK);
        assert_eq!(due[..3], [99, 98, 97]);
        assert!(lessor.is_expiring(99) && !lessor.is_expiring(100));
        lessor.expiry_failed(98, 1);
        let rest = lessor.due(ms(10_000));
        assert_eq!(rest[0], 98);
        assert!(!rest.contains(&99) && !rest.contains(&100));
        // Leases 1 to 99 were due; 64 went, one of them failed and is due again.
        assert_eq!(rest.len(), 99 - MAX_EXPIRIES_PER_TICK + 1);
        assert_eq!(lessor.due(ms(16_999)), Vec::<u64>::new());
        assert_eq!(lessor.due(ms(17_000)), [100]);
    }

    /// A keep-alive or a grant's answer that read its lease before the lease's revoke was applied,
    /// and reaches the lessor after the revoke's listing, does not bring the lease back; a lease
    /// granted after the last listing is kept.
    #[test]
    fn a_lease_revoked_since_the_last_listing_is_not_brought_back() {
        let start = Instant::now();
        let mut lessor = Lessor::default();
        lessor.sync(1, 10, &[(4, 1_000), (9, 1_000)], start);
        // Lease 4 is revoked at index 12; the listing at 12 no longer holds it.
        lessor.sync(1, 12, &[(9, 1_000)], start);
        assert_eq!(lessor.keep_alive(4, 1_000, start, start), None);
        lessor.granted(4, 1_000, start);
        assert_eq!(lessor.remaining(4, start), None);
        assert!(lessor.due(start + Duration::from_secs(60)) == [9]);
        // Lease 15, granted after that listing, is new to the lessor, not gone.
        assert!(lessor.keep_alive(15, 1_000, start, start).is_some());
        lessor.granted(16, 1_000, start);
        assert!(lessor.remaining(16, start).is_some());
        // Lease 16's expiry is proposed, and applied: until a listing drops it, it stays marked,
        // so neither a keep-alive nor a grant's late (or retried) answer revives it.
        let later = start + Duration::from_secs(2);
        assert_eq!(lessor.due(later), [15, 16]);
        assert_eq!(lessor.keep_alive(16, 1_000, later, later), None);
        lessor.granted(16, 1_000, later);
        assert!(lessor.is_expiring(16));
        assert_eq!(lessor.keep_alive(16, 1_000, later, later), None);
    }

    /// A sync in the same term keeps the deadlines of the leases still listed, forgets those
    /// gone and gives those new a full TTL from now.
    #[test]
    fn a_sync_changes_only_the_leases_granted_or_revoked() {
        let start = Instant::now();
        let later = start + Duration::from_millis(500);
        let mut lessor = Lessor::default();
        lessor.sync(1, 5, &[(1, 1_000), (3, 1_000), (5, 1_000)], start);
        lessor.sync(
            1,
            9,
            &[(2, 1_000), (3, 1_000), (6, 2_000), (7, 1_000)],
            later,
        );
        let remaining: Vec<_> = (1..=7)
            .map(|id| lessor.remaining(id, later).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            remaining,
            [
                None,
                Some(1_000),
                Some(500),
                None,
                None,
                Some(2_000),
                Some(1_000)
            ]
        );
        assert_eq!(lessor.due(start + Duration::from_millis(1_000)), [3]);
    }

    #[test]
    fn keep_alives_push_the_deadline_from_when_they_arrived() {
        let start = Instant::now();
        let mut lessor = Lessor::default();
        lessor.sync(1, 0, &[], start);
        assert_eq!(lessor.synced_at(1), Some(0));
        lessor.granted(5, 2_000, start);
        let arrived = start + Duration::from_millis(1_500);
        let answered = arrived + Duration::from_millis(50);
        assert_eq!(
            lessor.keep_alive(5, 2_000, arrived, answered),
            Some(Duration::from_millis(1_950))
        );
        assert!(lessor
            .due(arrived + Duration::from_millis(1_999))
            .is_empty());
        // A lease the map no longer holds (revoked) is forgotten at the next sync.
        lessor.sync(1, 9, &[], answered);
        assert_eq!(lessor.remaining(5, answered), None);
        assert_eq!(lessor.synced_at(1), Some(9));
        // What was synced in one term is not known in the next: it is listed again.
        assert_eq!(lessor.synced_at(2), None);
        lessor.step_down();
        assert_eq!(lessor.term, None);
        assert_eq!(lessor.synced_at(1), None);
    }
}
