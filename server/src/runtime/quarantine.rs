//! Crash-loop protection: a plugin version that traps or overruns its
//! deadline too often within a window stops taking new connections until it
//! is redeployed (a new version starts with a clean record).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct CrashWindow {
    /// Crashes within `window` that trip the quarantine; 0 never trips.
    limit: usize,
    window: Duration,
    crashes: Mutex<VecDeque<Instant>>,
    tripped: AtomicBool,
}

impl CrashWindow {
    pub fn new(limit: usize, window: Duration) -> CrashWindow {
        CrashWindow {
            limit,
            window,
            crashes: Mutex::new(VecDeque::new()),
            tripped: AtomicBool::new(false),
        }
    }

    /// Records one crash; true when this one trips the quarantine.
    pub fn record(&self) -> bool {
        if self.limit == 0 || self.is_tripped() {
            return false;
        }
        let now = Instant::now();
        let mut crashes = self.crashes.lock().unwrap();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            crashes.pop_front();
        }
        if crashes.len() >= self.limit {
            self.tripped.store(true, Ordering::Release);
            return true;
        }
        false
    }

    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_within_the_window() {
        let w = CrashWindow::new(3, Duration::from_millis(50));
        assert!(!w.record());
        assert!(!w.record());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!w.record(), "old crashes fell out of the window");
        assert!(!w.record());
        assert!(w.record());
        assert!(w.is_tripped());
        assert!(!CrashWindow::new(0, Duration::from_secs(1)).record());
    }
}
