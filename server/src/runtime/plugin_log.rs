//! A plugin's `log` host call. Plugins log what clients send them, so a
//! line is bounded in length, the lines in rate, and control characters
//! are escaped: a client must not be able to forge log lines or flood the
//! server's log through a plugin.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::rate::RateLimit;

/// One plugin's allowance of log lines, shared by its instances.
pub struct LogGate {
    bucket: Mutex<(Option<RateLimit>, u64)>,
}

/// Whether a line may be written, and how many were dropped before it.
pub enum Gate {
    Write { dropped_before: u64 },
    Drop,
}

impl LogGate {
    /// `per_second` lines a second, bursts up to one second's worth; 0
    /// for no limit.
    pub fn new(per_second: u32) -> LogGate {
        LogGate {
            bucket: Mutex::new((RateLimit::new(per_second), 0)),
        }
    }

    pub fn admit(&self) -> Gate {
        let mut guard = self.bucket.lock().unwrap();
        let (bucket, dropped) = &mut *guard;
        if bucket.as_mut().is_some_and(|b| !b.allow(Instant::now())) {
            *dropped += 1;
            return Gate::Drop;
        }
        Gate::Write {
            dropped_before: std::mem::take(dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_over_the_rate_are_dropped_and_counted() {
        let gate = LogGate::new(2);
        assert!(matches!(gate.admit(), Gate::Write { dropped_before: 0 }));
        assert!(matches!(gate.admit(), Gate::Write { dropped_before: 0 }));
        assert!(matches!(gate.admit(), Gate::Drop));
        assert!(matches!(gate.admit(), Gate::Drop));
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(matches!(gate.admit(), Gate::Write { dropped_before: 2 }));
        assert!(matches!(LogGate::new(0).admit(), Gate::Write { .. }));
    }
}
