//! The in-memory host's channel history, with the server's semantics:
//! which channels are recorded, positions (epoch and offset), the bounds
//! (size and age, on the fake clock), and what a `history` call answers.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::{HistoryEntry, HistoryPage, Message, Position, Publication};

/// The largest `[history] size` the server accepts.
pub const MAX_HISTORY_SIZE: u32 = 10_000;

/// A plugin sidecar's `[history]` table, for
/// [`FakeHost::record_history`](super::FakeHost::record_history).
///
/// ```ignore
/// host.record_history(HistoryConfig::channels(&["*"]).size(3).ttl(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    channels: Vec<String>,
    size: u32,
    ttl: Duration,
}

/// The server's defaults: nothing recorded; when something is, 100
/// messages per channel for 5 minutes.
impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            channels: Vec::new(),
            size: 100,
            ttl: Duration::from_secs(300),
        }
    }
}

impl HistoryConfig {
    /// `channels = [...]`: patterns in which `*` matches any run of
    /// characters and everything else matches itself.
    pub fn channels(patterns: &[&str]) -> Self {
        HistoryConfig {
            channels: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..HistoryConfig::default()
        }
    }

    /// `size`: messages kept per channel. Panics outside 1 to
    /// [`MAX_HISTORY_SIZE`], where the server refuses the sidecar.
    pub fn size(mut self, size: u32) -> Self {
        assert!(
            (1..=MAX_HISTORY_SIZE).contains(&size),
            "[history] size must be 1 to {MAX_HISTORY_SIZE}"
        );
        self.size = size;
        self
    }

    /// `ttl`: older messages are dropped. Panics on zero, which the server
    /// refuses.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        assert!(!ttl.is_zero(), "[history] ttl must be more than zero");
        self.ttl = ttl;
        self
    }
}

/// Whether `name` matches `pattern`, where `*` is any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and how much of `name` it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// Every recorded channel's history, and how the test configured it.
#[derive(Default)]
pub(super) struct Histories {
    config: HistoryConfig,
    channels: BTreeMap<String, Channel>,
    /// Epochs made so far: each new one is derived from this count.
    epochs: u64,
    /// Set by the test: the backend fails every history call.
    pub(super) unavailable: bool,
}

/// One channel's unbroken history: one epoch.
struct Channel {
    epoch: String,
    /// The newest offset assigned (0 before the first message).
    latest: u64,
    /// Offsets up to this one were dropped (by size or age).
    dropped_through: u64,
    /// Kept entries, oldest first, with when they were recorded.
    kept: VecDeque<(u64, HistoryEntry)>,
}

impl Channel {
    fn position(&self, offset: u64) -> Position {
        Position::new(self.epoch.clone(), offset)
    }

    /// Drops what the size and age bounds no longer allow.
    fn prune(&mut self, config: &HistoryConfig, now_ms: u64) {
        let ttl_ms = config.ttl.as_millis() as u64;
        while let Some((at, entry)) = self.kept.front() {
            let expired = at.saturating_add(ttl_ms) <= now_ms;
            if !expired && self.kept.len() <= config.size as usize {
                break;
            }
            self.dropped_through = entry.position.offset;
            self.kept.pop_front();
        }
    }
}

impl Histories {
    pub(super) fn configure(&mut self, config: HistoryConfig) {
        self.config = config;
    }

    /// Whether a `[history] channels` pattern matches `channel`.
    pub(super) fn records(&self, channel: &str) -> bool {
        self.config.channels.iter().any(|p| matches(p, channel))
    }

    /// Every channel's history is lost, as when a server restarts: the next
    /// message starts a new epoch from offset 1.
    pub(super) fn lose(&mut self) {
        self.channels.clear();
    }

    /// The channel's history, begun (with a fresh epoch) on first use.
    fn channel(&mut self, name: &str, now_ms: u64) -> &mut Channel {
        let channel = self.channels.entry(name.to_owned()).or_insert_with(|| {
            self.epochs += 1;
            Channel {
                epoch: epoch_name(self.epochs),
                latest: 0,
                dropped_through: 0,
                kept: VecDeque::new(),
            }
        });
        channel.prune(&self.config, now_ms);
        channel
    }

    /// Records `publication` as the channel's next message: its position,
    /// and the message as delivered (a positioned text with the position
    /// filled in). The caller has checked that the channel is recorded.
    pub(super) fn record(
        &mut self,
        name: &str,
        publication: &Publication,
        now_ms: u64,
    ) -> (Position, Message) {
        let config = self.config.clone();
        let channel = self.channel(name, now_ms);
        channel.latest += 1;
        let position = channel.position(channel.latest);
        let msg = match publication {
            Publication::Plain(msg) => msg.clone(),
            Publication::Positioned(text) => {
                Message::text(format!("{}{position}{}", text.before, text.after))
            }
        };
        let entry = HistoryEntry {
            position: position.clone(),
            msg: msg.clone(),
        };
        channel.kept.push_back((now_ms, entry));
        channel.prune(&config, now_ms);
        (position, msg)
    }

    /// What the server's `history` answers, for a recorded channel and a
    /// `limit` of at least 1.
    pub(super) fn page(
        &mut self,
        name: &str,
        since: Option<&Position>,
        limit: u32,
        now_ms: u64,
    ) -> HistoryPage {
        let take = limit.min(self.config.size) as usize;
        let channel = self.channel(name, now_ms);
        let latest = channel.position(channel.latest);
        // Whole: no entry after `since` was dropped, and `since` is one
        // this epoch has reached.
        let recovered = match since {
            None => channel.dropped_through == 0,
            Some(since) => {
                since.epoch == channel.epoch
                    && since.offset <= channel.latest
                    && since.offset >= channel.dropped_through
            }
        };
        let after = match since {
            Some(since) if recovered => since.offset,
            _ => 0,
        };
        let entries = channel
            .kept
            .iter()
            .map(|(_, entry)| entry)
            .filter(|entry| entry.position.offset > after)
            .take(take)
            .cloned()
            .collect();
        HistoryPage {
            entries,
            latest,
            recovered,
        }
    }
}

/// The `n`th epoch's name: 16 lowercase hex digits, as the server's, and
/// unlike each other (splitmix64 scrambles the count).
fn epoch_name(n: u64) -> String {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_star_as_any_run() {
        for (pattern, name) in [
            ("*", "lobby"),
            ("*", ""),
            ("lobby", "lobby"),
            ("room:*", "room:1"),
            ("room:*", "room:"),
            ("*:log", "a:b:log"),
            ("a*b*c", "aXbYbZc"),
            ("**", "x"),
        ] {
            assert!(matches(pattern, name), "{pattern} ~ {name}");
        }
        for (pattern, name) in [
            ("lobby", "lobby2"),
            ("lobby", "Lobby"),
            ("room:*", "room"),
            ("*:log", "a:logs"),
            ("a*b*c", "aXbYc2"),
            ("?", "x"),
        ] {
            assert!(!matches(pattern, name), "{pattern} !~ {name}");
        }
    }

    #[test]
    fn epoch_names_look_like_the_servers() {
        let (a, b) = (epoch_name(1), epoch_name(2));
        assert_ne!(a, b);
        for e in [a, b] {
            assert_eq!(e.len(), 16);
            assert!(e.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        }
    }
}
