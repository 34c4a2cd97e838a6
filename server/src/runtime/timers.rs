//! Timers a plugin asks for with `set-timer`: tokio tasks that call the
//! plugin's `on-timer` hook, so push loops need no thread of their own and
//! are never killed by a request timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::listener::Listener;

#[derive(Default)]
pub struct Timers {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, AbortHandle>>,
    target: OnceLock<Weak<Listener>>,
}

impl Timers {
    /// Points fired timers at their listener; set once it exists.
    pub fn bind(&self, listener: Weak<Listener>) {
        let _ = self.target.set(listener);
    }

    /// Starts a timer, or returns `None` when `max` are already pending.
    pub fn schedule(&self, delay_ms: u32, repeat: bool, max: usize) -> Option<u64> {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() >= max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let target = self.target.get()?.clone();
        let period = Duration::from_millis(delay_ms.into());
        let task = tokio::spawn(async move {
            let mut due = Instant::now() + period;
            loop {
                tokio::time::sleep_until(due).await;
                let Some(listener) = target.upgrade() else {
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
