//! Which of a plugin's channels are recorded, and how much of each is
//! kept: the sidecar's `[history]`.

use std::time::Duration;

use serde::Deserialize;

/// `[history]` in a sidecar. Nothing is recorded unless a pattern in
/// `channels` matches: history costs memory (or Redis) per channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recording {
    /// Channel name patterns: `*` matches any run of characters, anything
    /// else itself, e.g. `["*"]` or `["room-*", "news"]`.
    #[serde(rename = "channels")]
    pub patterns: Vec<String>,
    /// Messages kept per channel (default 100, at most [`MAX_SIZE`]).
    pub size: usize,
    /// How long a message is kept (default `5m`). A client away longer
    /// than this is told it cannot resume.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

/// The largest `[history] size`: a page is at most this long.
pub const MAX_SIZE: usize = 10_000;

impl Default for Recording {
    fn default() -> Recording {
        Recording {
            patterns: Vec::new(),
            size: 100,
            ttl: Duration::from_secs(300),
        }
    }
}

impl Recording {
    /// Checks what a sidecar asked for.
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(format!("[history] size must be 1 to {MAX_SIZE}"));
        }
        if self.ttl < Duration::from_millis(1) {
            return Err("[history] ttl must be at least 1ms".into());
        }
        if self.patterns.iter().any(|p| p.is_empty()) {
            return Err("[history] channels: a pattern is empty".into());
        }
        Ok(())
    }

    pub fn records(&self, channel: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, channel))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (the usual greedy match with backtracking to the last `*`).
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, n, yes) in [
            ("*", "", true),
            ("*", "lobby", true),
            ("lobby", "lobby", true),
            ("lobby", "lobby2", false),
            ("room-*", "room-1", true),
            ("room-*", "room", false),
            ("*-log", "a-b-log", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYc-", false),
        ] {
            assert_eq!(matches(p, n), yes, "{p} {n}");
        }
        let r = Recording {
            patterns: vec!["news".into()],
            ..Recording::default()
        };
        assert!(r.records("news") && !r.records("lobby"));
        assert!(!Recording::default().records("lobby"));
    }

    #[test]
    fn bad_settings_are_named() {
        let r = |size, ttl| Recording {
            size,
            ttl,
            ..Recording::default()
        };
        assert!(r(0, Duration::from_secs(1)).validate().is_err());
        assert!(r(MAX_SIZE + 1, Duration::from_secs(1)).validate().is_err());
        assert!(r(5, Duration::ZERO).validate().is_err());
        assert!(r(5, Duration::from_secs(1)).validate().is_ok());
    }
}
