//! Timers a plugin asks for with `set-timer`: tokio tasks that call the
//! plugin's `on-timer` hook, so push loops need no thread of their own and
//! are never killed by a request timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::listener::Listener;

/// One plugin's timers. They belong to the plugin, not to one version of
/// it: a reload re-points them at the new version ([`Timers::bind`]), so a
/// push loop keeps running and its ids stay valid across versions.
#[derive(Default)]
pub struct Timers {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, AbortHandle>>,
    /// The version timers fire into: the newest one in service.
    target: Mutex<Weak<Listener>>,
}

impl Timers {
    /// Points fired timers at `listener`, the version now in service.
    pub fn bind(&self, listener: Weak<Listener>) {
        *self.target.lock().unwrap() = listener;
    }

    fn current(&self) -> Option<Arc<Listener>> {
        self.target.lock().unwrap().upgrade()
    }

    /// Called when a version goes away: if it was the one in service (the
    /// plugin was stopped or removed, not replaced), its timers stop.
    pub fn release(&self, listener: &Listener) {
        let current = std::ptr::eq(self.target.lock().unwrap().as_ptr(), listener);
        if current {
            self.cancel_all();
        }
    }

    /// Starts a timer, or returns `None` when `max` are already pending.
    pub fn schedule(self: &Arc<Self>, delay_ms: u32, repeat: bool, max: usize) -> Option<u64> {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() >= max {
            return None;
        }
        self.current()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let timers = Arc::downgrade(self);
        let period = Duration::from_millis(delay_ms.into());
        let task = tokio::spawn(async move {
            let mut due = Instant::now() + period;
            loop {
                tokio::time::sleep_until(due).await;
                let Some(listener) = timers.upgrade().and_then(|t| t.current()) else {
                    return;
                };
                if !repeat {
                    listener.env.timers.forget(id);
                }
                // Errors are logged and counted by the hook call itself; a
                // repeating timer keeps going after one failed tick.
                let _ = listener.on_timer(id).await;
                if !repeat {
                    return;
                }
                // Ticks missed while the hook ran are skipped, not bunched up.
                due = (due + period).max(Instant::now());
            }
        });
        pending.insert(id, task.abort_handle());
        Some(id)
    }

    pub fn cancel(&self, id: u64) -> bool {
        match self.pending.lock().unwrap().remove(&id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().unwrap().remove(&id);
    }

    pub fn cancel_all(&self) {
        for (_, task) in self.pending.lock().unwrap().drain() {
            task.abort();
        }
    }

    pub fn count(&self) -> usize {
        self.pending.lock().unwrap().len()
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.cancel_all();
    }
}
