//! When each peer's writer is next due to wake for a ping or a deadline:
//! one thread for all of them, as uWebSockets keeps one timer per loop
//! rather than one per socket. A tokio `Sleep` per connection was a
//! 112-byte allocation in every idle connection; an alarm is two words in
//! the queue's allocation, which already holds the writer's waker, and a
//! pointer in the wheel.
//!
//! The wheel files a queue under the hundredth of a second its alarm is
//! due in (a filing per millisecond would cost about as much as the sleep
//! it replaces: tens of thousands of one-entry lists). An alarm moved
//! later stays filed where it was and is refiled when that time comes (an
//! idle deadline moves with every burst of frames, and is filed once per
//! ping interval this way, not once per burst); one moved earlier is filed
//! again at once. A queue whose writer is gone takes itself off.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Duration;

use super::queue::Shared;

/// A time on the wheel's clock: milliseconds since it started, from 1 (0
/// is "no alarm" in a queue). Half the size of an `Instant`, which counts
/// in every connection's task; an alarm's owner compares it with
/// [`AlarmTime::now`], as the wheel does, so that it agrees with the wheel
/// on whether its time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlarmTime(u64);

static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

impl AlarmTime {
    /// Rounded down, and an instant up ([`from_std`](Self::from_std)):
    /// an alarm never rings before the instant it was set for.
    pub fn now() -> AlarmTime {
        let since = EPOCH.elapsed();
        AlarmTime(u64::try_from(since.as_millis()).unwrap_or(u64::MAX - 1) + 1)
    }

    pub fn from_std(at: std::time::Instant) -> AlarmTime {
        let since = at.saturating_duration_since(*EPOCH);
        let ms = u64::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX - 1);
        AlarmTime(ms + 1)
    }

    pub(super) fn raw(self) -> u64 {
        self.0
    }
}

impl std::ops::Add<Duration> for AlarmTime {
    type Output = AlarmTime;

    /// Rounded up, as an instant is.
    fn add(self, d: Duration) -> AlarmTime {
        let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        AlarmTime(self.0.saturating_add(ms))
    }
}

/// The wheel's resolution, in milliseconds: an alarm rings up to this much
/// after its time.
const SLOT_MS: u64 = 10;

/// The slot an alarm due at `at` is filed under: the first not before it.
fn slot(at: u64) -> u64 {
    // Saturating: a timeout of centuries is an alarm that never rings.
    at.div_ceil(SLOT_MS).saturating_mul(SLOT_MS)
}

struct Wheel {
    filed: Mutex<BTreeMap<u64, Vec<Arc<Shared>>>>,
    /// Told when a queue is filed ahead of everything else.
    earlier: Condvar,
}

/// Started with its thread when the first alarm is set.
static WHEEL: LazyLock<Wheel> = LazyLock::new(|| {
    std::thread::Builder::new()
        .name("wsgate-alarms".into())
        .spawn(|| WHEEL.run())
        .expect("spawning the alarm thread");
    Wheel {
        filed: Mutex::default(),
        earlier: Condvar::new(),
    }
});

/// Files `queue` to be woken at `at`, unless it is filed for then or
/// earlier already (the wheel refiles it when that time comes).
pub(super) fn file(queue: &Arc<Shared>, at: AlarmTime) {
    let at = slot(at.0);
    let mut filed = WHEEL.filed.lock().unwrap();
    let was = queue.filed_at.load(Ordering::Relaxed);
    if was != 0 && was <= at {
        return;
    }
    queue.filed_at.store(at, Ordering::Relaxed);
    let first = filed.first_key_value().is_none_or(|(k, _)| at < *k);
    filed.entry(at).or_default().push(queue.clone());
    drop(filed);
    if first {
        WHEEL.earlier.notify_one();
    }
}

/// Takes `queue` off the wheel: its writer is gone.
pub(super) fn unfile(queue: &Arc<Shared>) {
    // Only the wheel files a queue again, and only one it had filed.
    if queue.filed_at.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut filed = WHEEL.filed.lock().unwrap();
    let at = queue.filed_at.swap(0, Ordering::Relaxed);
    if let Some(queues) = filed.get_mut(&at)
        && let Some(i) = queues.iter().position(|q| Arc::ptr_eq(q, queue))
    {
        queues.swap_remove(i);
        if queues.is_empty() {
            filed.remove(&at);
        }
    }
}

impl Wheel {
    fn run(&self) {
        let mut due_now = Vec::new();
        let mut filed = self.filed.lock().unwrap();
        loop {
            let now = AlarmTime::now().0;
            while let Some(entry) = filed.first_entry()
                && *entry.key() <= now
            {
                let (key, queues) = entry.remove_entry();
                for queue in queues {
                    // Filed again, earlier, since: that filing counts.
                    if queue.filed_at.load(Ordering::Relaxed) != key {
                        continue;
                    }
                    // Never 0: a queue is filed only once its alarm is set.
                    let due = queue.alarm.load(Ordering::Acquire);
                    if due <= now {
                        queue.filed_at.store(0, Ordering::Relaxed);
                        queue.rung.store(true, Ordering::Release);
                        due_now.extend(queue.writer.take());
                    } else {
                        let at = slot(due);
                        queue.filed_at.store(at, Ordering::Relaxed);
                        filed.entry(at).or_default().push(queue);
                    }
                }
            }
            if !due_now.is_empty() {
                // Woken outside the lock, which every new alarm takes.
                drop(filed);
                due_now.drain(..).for_each(std::task::Waker::wake);
                filed = self.filed.lock().unwrap();
                continue;
            }
            // Nothing filed: the next filing notifies.
            let wait = filed
                .first_key_value()
                .map_or(Duration::from_secs(3600), |(k, _)| {
                    Duration::from_millis(k - now)
                });
            filed = self.earlier.wait_timeout(filed, wait).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};
    use std::time::Instant;

    use super::*;
    use crate::registry::{QueueLimits, queue};

    const LIMITS: QueueLimits = QueueLimits {
        items: 4,
        bytes: 1024,
    };

    /// How long after `start` the alarm rang, polled every 2 ms for up to
    /// `within`.
    fn rings(queue: &crate::registry::Queue, start: Instant, within: Duration) -> Option<Duration> {
        let mut cx = Context::from_waker(Waker::noop());
        while start.elapsed() < within {
            if queue.poll_alarm(&mut cx).is_ready() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    #[test]
    fn an_alarm_rings_at_its_time_and_once() {
        let (_tx, rx) = queue(LIMITS);
        let start = Instant::now();
        rx.set_alarm(AlarmTime::from_std(start + Duration::from_millis(60)));
        let rang = rings(&rx, start, Duration::from_secs(5)).expect("the alarm rang");
        assert!(rang >= Duration::from_millis(60), "rang after {rang:?}");
        assert!(rings(&rx, Instant::now(), Duration::from_millis(100)).is_none());
    }

    #[test]
    fn an_alarm_moved_later_rings_then_and_one_moved_earlier_rings_sooner() {
        let (_tx, later) = queue(LIMITS);
        let (_tx2, earlier) = queue(LIMITS);
        let start = Instant::now();
        later.set_alarm(AlarmTime::from_std(start + Duration::from_millis(20)));
        later.set_alarm(AlarmTime::from_std(start + Duration::from_millis(150)));
        earlier.set_alarm(AlarmTime::from_std(start + Duration::from_secs(60)));
        earlier.set_alarm(AlarmTime::from_std(start + Duration::from_millis(40)));
        let rang = rings(&earlier, start, Duration::from_secs(5)).expect("rang");
        assert!(rang >= Duration::from_millis(40), "rang after {rang:?}");
        let rang = rings(&later, start, Duration::from_secs(5)).expect("rang");
        assert!(rang >= Duration::from_millis(150), "rang after {rang:?}");
    }

    #[test]
    fn an_alarm_centuries_away_never_rings() {
        let (_tx, rx) = queue(LIMITS);
        rx.set_alarm(AlarmTime::now() + Duration::MAX);
        assert!(rings(&rx, Instant::now(), Duration::from_millis(50)).is_none());
    }

    #[test]
    fn a_gone_writer_is_taken_off_the_wheel() {
        let (tx, rx) = queue(LIMITS);
        rx.set_alarm(AlarmTime::from_std(
            Instant::now() + Duration::from_secs(3600),
        ));
        drop(rx);
        assert_eq!(tx.holders(), 1, "the wheel lets go of the queue");
    }
}
