//! Crash-loop protection that heals: a plugin version that traps or
//! overruns its deadline too often within a window refuses new connections
//! for a while (its open connections carry on). Each quarantine that
//! follows soon after the last one lasts twice as long, up to a maximum; a
//! quiet spell as long as that maximum starts the length over. So a client
//! that can crash a plugin keeps it down only for as long as it keeps
//! crashing it, and a plugin that crashed once in a while never stays down.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub struct Quarantine {
    /// Crashes within `window` that trip a quarantine; 0 never trips.
    limit: usize,
    window: Duration,
    /// The first quarantine's length, and the longest.
    base: Duration,
    max: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    crashes: VecDeque<Instant>,
    /// The current (or last) quarantine's end and length.
    until: Option<Instant>,
    length: Duration,
}

impl Quarantine {
    pub fn new(limit: usize, window: Duration, base: Duration, max: Duration) -> Quarantine {
        Quarantine {
            limit,
            window,
            base,
            max,
            state: Mutex::default(),
        }
    }

    /// Records one crash; returns the quarantine's length when this crash
    /// starts one.
    pub fn record(&self) -> Option<Duration> {
        self.record_at(Instant::now())
    }

    fn record_at(&self, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let mut state = self.state.lock().unwrap();
        if state.until.is_some_and(|until| now < until) {
            return None;
        }
        state.crashes.push_back(now);
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            state.crashes.pop_front();
        }
        if state.crashes.len() < self.limit {
            return None;
        }
        state.crashes.clear();
        let soon_after_last = state
            .until
            .is_some_and(|until| now.duration_since(until) < self.max);
        state.length = if soon_after_last {
            (state.length * 2).min(self.max)
        } else {
            self.base
        };
        state.until = Some(now + state.length);
        Some(state.length)
    }

    /// Whether new connections are refused now.
    pub fn is_active(&self) -> bool {
        self.until_instant()
            .is_some_and(|until| Instant::now() < until)
    }

    fn until_instant(&self) -> Option<Instant> {
        self.state.lock().unwrap().until
    }

    /// When the quarantine in force ends, as wall-clock time.
    pub fn until(&self) -> Option<SystemTime> {
        let until = self.until_instant()?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(SystemTime::now() + left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarantine() -> Quarantine {
        let s = Duration::from_secs;
        Quarantine::new(3, s(60), s(10), s(300))
    }

    #[test]
    fn trips_only_within_the_window() {
        let q = quarantine();
        let t = Instant::now();
        assert_eq!(q.record_at(t), None);
        assert_eq!(q.record_at(t), None);
        let later = t + Duration::from_secs(61);
        assert_eq!(
            q.record_at(later),
            None,
            "old crashes fell out of the window"
        );
        assert_eq!(q.record_at(later), None);
        assert_eq!(q.record_at(later), Some(Duration::from_secs(10)));
        assert_eq!(
            Quarantine::new(0, later - t, later - t, later - t).record(),
            None
        );
    }

    #[test]
    fn backs_off_then_heals() {
        let q = quarantine();
        let mut t = Instant::now();
        let trip = |t: Instant| {
            q.record_at(t);
            q.record_at(t);
            q.record_at(t)
        };
        let lengths: Vec<u64> = (0..7)
            .map(|_| {
                let length = trip(t).unwrap();
                // Crashing again as soon as it ends.
                t += length;
                length.as_secs()
            })
            .collect();
        assert_eq!(lengths, [10, 20, 40, 80, 160, 300, 300]);
        // Crashes during a quarantine do not count.
        assert_eq!(trip(t - Duration::from_secs(1)), None);
        // Quiet for as long as the longest quarantine: back to the start.
        t += Duration::from_secs(300);
        assert_eq!(trip(t), Some(Duration::from_secs(10)));
    }
}
