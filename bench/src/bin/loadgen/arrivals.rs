//! When each round's message reached each subscriber, for the `broadcast`
//! mode.
//!
//! A delivery is one store into the subscriber's own slot and one count:
//! no message to the main task per delivery (with 10k subscribers, sending
//! every arrival over a channel cost the load generator as much as reading
//! it). The main task sleeps until the count says everyone has the round,
//! then reads the slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Bits of a slot that hold the latency (ns); the round tag is above them.
const LATENCY_BITS: u32 = 40;
const LATENCY_MAX: u64 = (1 << LATENCY_BITS) - 1;

/// Rounds a run can have: the round (plus one, so that 0 is no round) must
/// fit in the 24 bits above a slot's latency.
pub const MAX_ROUNDS: usize = (1 << (64 - LATENCY_BITS)) - 1;

pub struct Arrivals {
    base: Instant,
    /// Per subscriber: the tag (round + 1) of the last round it recorded,
    /// above that delivery's latency in ns since the round started
    /// (2^40 ns is 18 minutes).
    slots: Box<[AtomicU64]>,
    /// The tag of the open round in the top 32 bits, how many subscribers
    /// have recorded it in the low 32.
    open: AtomicU64,
    /// When the open round started, ns since `base`.
    start_ns: AtomicU64,
    all: Notify,
}

fn tag(round: u64) -> u64 {
    round + 1
}

impl Arrivals {
    pub fn new(subscribers: usize) -> Self {
        assert!(subscribers < u32::MAX as usize);
        Self {
            base: Instant::now(),
            slots: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            all: Notify::new(),
        }
    }

    /// Now, in ns since this was made: the time readers stamp arrivals with.
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Opens `round` (closing the one before): from now on only its
    /// arrivals are recorded. Returns its start, the time latencies are
    /// measured from.
    pub fn open(&self, round: u64) -> Instant {
        let start = self.now_ns();
        self.start_ns.store(start, Ordering::Relaxed);
        self.open.store(tag(round) << 32, Ordering::Release);
        self.base + Duration::from_nanos(start)
    }

    /// Subscriber `i` got `round`'s message at `now_ns`. Ignored unless
    /// `round` is open, and when `i` already has it (the first arrival
    /// counts). Only subscriber `i`'s reader records for `i`.
    pub fn record(&self, i: usize, round: u64, now_ns: u64) {
        let tag = tag(round);
        let mut open = self.open.load(Ordering::Acquire);
        if open >> 32 != tag {
            return;
        }
        let latency = now_ns
            .saturating_sub(self.start_ns.load(Ordering::Relaxed))
            .min(LATENCY_MAX);
        let slot = &self.slots[i];
        if slot.load(Ordering::Relaxed) >> LATENCY_BITS == tag {
            return;
        }
        slot.store(tag << LATENCY_BITS | latency, Ordering::Relaxed);
        // Count it for this round only, should the round have just closed.
        while open >> 32 == tag {
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if (open & 0xffff_ffff) + 1 == self.slots.len() as u64 {
                        self.all.notify_one();
                    }
                    return;
                }
                Err(now) => open = now,
            }
        }
    }

    /// How many subscribers have `round`.
    fn count(&self, round: u64) -> usize {
        let open = self.open.load(Ordering::Acquire);
        if open >> 32 == tag(round) {
            (open & 0xffff_ffff) as usize
        } else {
            0
        }
    }

    /// Waits until every subscriber has `round` (true) or `deadline` passed
    /// (false).
    pub async fn wait_all(&self, round: u64, deadline: Instant) -> bool {
        loop {
            // A wake-up may be left over from a round that completed just
            // after it timed out: the count decides.
            if self.count(round) == self.slots.len() {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), self.all.notified())
                .await
                .is_err()
            {
                return self.count(round) == self.slots.len();
            }
        }
    }

    /// The latencies (ns) of the subscribers that have `round`.
    pub fn latencies(&self, round: u64) -> impl Iterator<Item = u64> + '_ {
        let tag = tag(round);
        self.slots.iter().filter_map(move |s| {
            let v = s.load(Ordering::Relaxed);
            (v >> LATENCY_BITS == tag).then_some(v & LATENCY_MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_only_the_open_round_once_per_subscriber() {
        let a = Arrivals::new(3);
        let start = a.open(0);
        let ns = (start - a.base).as_nanos() as u64;
        a.record(0, 0, ns + 10);
        a.record(0, 0, ns + 99); // a duplicate: counted once, the first time kept
        a.record(1, 1, ns + 20); // not open yet
        assert_eq!(a.count(0), 1);
        assert!(!a.wait_all(0, Instant::now()).await);
        a.record(1, 0, ns + 20);
        a.record(2, 0, ns + 30);
        assert!(a.wait_all(0, Instant::now()).await);
        let mut l: Vec<u64> = a.latencies(0).collect();
        l.sort_unstable();
        assert_eq!(l, vec![10, 20, 30]);

        let start = a.open(1);
        let ns = (start - a.base).as_nanos() as u64;
        a.record(2, 0, ns + 5); // late from round 0: ignored
        a.record(2, 1, ns + 7);
        assert_eq!(a.count(1), 1);
        assert_eq!(a.latencies(1).collect::<Vec<_>>(), vec![7]);
        assert_eq!(a.latencies(0).count(), 2);
        // The left-over wake-up of round 0 does not end round 1.
        assert!(
            !a.wait_all(1, Instant::now() + Duration::from_millis(20))
                .await
        );
    }
}
