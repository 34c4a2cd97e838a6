//! Timers a plugin asks for with `set-timer`: tokio tasks that call the
//! plugin's `on-timer` hook, so push loops need no thread of their own and
//! are never killed by a request timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Whatever a fired timer calls: the plugin version in service. A trait,
/// so timers know nothing of listeners (which own the environment that
/// owns the timers).
pub trait TimerTarget: Send + Sync {
    /// Runs `on-timer(id)`; failures are the target's to log.
    fn fire(self: Arc<Self>, id: u64) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// One plugin's timers. They belong to the plugin, not to one version of
/// it: a reload re-points them at the new version ([`Timers::bind`]), so a
/// push loop keeps running and its ids stay valid across versions.
pub struct Timers {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, AbortHandle>>,
    /// The version timers fire into: the newest one in service.
    target: Mutex<Weak<dyn TimerTarget>>,
}

/// Never upgrades: the target of timers bound to nothing yet.
struct Unbound;

impl TimerTarget for Unbound {
    fn fire(self: Arc<Self>, _: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            next: AtomicU64::new(0),
            pending: Mutex::default(),
            target: Mutex::new(Weak::<Unbound>::new()),
        }
    }
}

impl Timers {
    /// Points fired timers at `target`, the version now in service.
    pub fn bind(&self, target: Weak<dyn TimerTarget>) {
        *self.target.lock().unwrap() = target;
    }

    fn current(&self) -> Option<Arc<dyn TimerTarget>> {
        self.target.lock().unwrap().upgrade()
    }

    /// Called when a version goes away: if it was the one in service (the
    /// plugin was stopped or removed, not replaced), its timers stop.
    pub fn release<T: TimerTarget>(&self, version: &T) {
        let bound = self.target.lock().unwrap().as_ptr() as *const ();
        if std::ptr::eq(bound, (version as *const T).cast()) {
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
                let Some(timers) = timers.upgrade() else {
                    return;
                };
                let Some(target) = timers.current() else {
                    return;
                };
                if !repeat {
                    timers.forget(id);
                }
                drop(timers);
                // A repeating timer keeps going after one failed tick.
                target.fire(id).await;
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
