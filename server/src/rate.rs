//! A token bucket refilled at a configured rate, holding at most one
//! second's worth: a client's message rate, a plugin's log lines.

use tokio::time::Instant;

pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `None` when the limit is off (0).
    pub fn new(per_second: u32) -> Option<RateLimit> {
        (per_second > 0).then(|| RateLimit {
            per_second: per_second.into(),
            tokens: per_second.into(),
            last: Instant::now(),
        })
    }

    /// Takes one message's token; false when the client is over the rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket() {
        assert!(RateLimit::new(0).is_none());
        let mut r = RateLimit::new(2).unwrap();
        let t = r.last;
        assert!(r.allow(t));
        assert!(r.allow(t));
        assert!(!r.allow(t));
        assert!(r.allow(t + Duration::from_millis(500)));
        assert!(!r.allow(t + Duration::from_millis(500)));
    }
}
