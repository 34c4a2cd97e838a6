//! History in this process: per plugin, one log per recorded channel,
//! bounded by `[history] size` and `ttl` per channel and by
//! `limits.history_bytes` over all of a plugin's channels.
//!
//! A publish records and delivers under the plugin's lock, so subscribers
//! get a channel's messages in the order of their positions. Every kept
//! message is also in the plugin's arrival queue (`arrivals`): the oldest
//! message overall is at its front, which is what expiry and the byte
//! budget drop first, without searching the channels.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::rules::{Kept, plan};
use super::{Backend, Entry, HistoryError, Page, Position, Publish, Published, Recording};
use crate::protocol::Message;
use crate::recent::Recent;
use crate::registry::Target;

/// What a kept message costs beyond its bytes, and a channel's log beyond
/// its name: so that many tiny messages or channels are not free.
const ENTRY_OVERHEAD: usize = 64;
const CHANNEL_OVERHEAD: usize = 128;

pub struct Memory {
    /// `limits.history_bytes`: what each plugin's history may hold.
    budget: usize,
    plugins: DashMap<String, Arc<Mutex<Logs>>>,
}

/// One plugin's channel logs.
struct Logs {
    channels: HashMap<Arc<str>, Log>,
    /// Every kept message, oldest first, as (channel, offset); entries
    /// already dropped by size are skipped when they reach the front.
    arrivals: VecDeque<(Arc<str>, u64)>,
    /// Idempotency keys of publishes, and their positions.
    keys: Recent<Position>,
    bytes: usize,
    /// Messages kept over all channels (what `arrivals` is compacted to).
    kept: usize,
}

struct Log {
    epoch: String,
    latest: u64,
    entries: VecDeque<Stored>,
}

struct Stored {
    offset: u64,
    at: Instant,
    msg: Message,
}

fn entry_cost(msg: &Message) -> usize {
    msg.len() + ENTRY_OVERHEAD
}

/// The most idempotency keys a plugin keeps: the oldest go first.
const MAX_KEYS: usize = 100_000;

impl Memory {
    pub fn new(budget: usize) -> Memory {
        Memory {
            budget,
            plugins: DashMap::new(),
        }
    }

    fn logs(&self, plugin: &str) -> Arc<Mutex<Logs>> {
        if let Some(logs) = self.plugins.get(plugin) {
            return logs.clone();
        }
        let logs = || {
            Arc::new(Mutex::new(Logs {
                channels: HashMap::new(),
                arrivals: VecDeque::new(),
                keys: Recent::new(MAX_KEYS),
                bytes: 0,
                kept: 0,
            }))
        };
        self.plugins
            .entry(plugin.to_owned())
            .or_insert_with(logs)
            .clone()
    }
}

impl Logs {
    /// The channel's log (made, on a new epoch, if it has none), and its
    /// name as the arrival queue shares it.
    fn log(&mut self, channel: &str) -> (Arc<str>, &mut Log) {
        let name = match self.channels.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => {
                self.bytes += channel.len() + CHANNEL_OVERHEAD;
                let log = Log {
                    epoch: Position::new_epoch(),
                    latest: 0,
                    entries: VecDeque::new(),
                };
                let name: Arc<str> = Arc::from(channel);
                self.channels.insert(name.clone(), log);
                name
            }
        };
        let log = self.channels.get_mut(channel).expect("made above");
        (name, log)
    }

    /// Drops what expired, then the oldest messages (and, with none left,
    /// the least recently made empty logs) until `budget` holds.
    fn trim(&mut self, now: Instant, ttl: Duration, budget: usize) {
        while let Some((channel, offset)) = self.arrivals.front().cloned() {
            let log = self.channels.get_mut(&channel);
            let Some((log, front)) =
                log.and_then(|l| l.entries.front().map(|f| (f.offset, f.at)).map(|f| (l, f)))
            else {
                self.arrivals.pop_front();
                continue;
            };
            let (front_offset, at) = front;
            if front_offset != offset {
                // Dropped by size (or an epoch ago) already.
                self.arrivals.pop_front();
                continue;
            }
            if now.duration_since(at) < ttl && self.bytes <= budget {
                break;
            }
            let gone = log.entries.pop_front().expect("front seen above");
            self.bytes -= entry_cost(&gone.msg);
            self.kept -= 1;
            self.arrivals.pop_front();
        }
        if self.bytes > budget {
            let empty: Vec<Arc<str>> = self
                .channels
                .iter()
                .filter(|(_, log)| log.entries.is_empty())
                .map(|(name, _)| name.clone())
                .collect();
            for name in empty {
                if self.bytes <= budget {
                    break;
                }
                self.channels.remove(&name);
                self.bytes -= name.len() + CHANNEL_OVERHEAD;
            }
        }
        // Records of messages dropped by size pile up behind a live front:
        // compact them away once they outnumber the kept ones.
        if self.arrivals.len() > 2 * self.kept + 1024 {
            let channels = &self.channels;
            self.arrivals.retain(|(channel, offset)| {
                channels
                    .get(channel)
                    .and_then(|l| l.entries.front())
                    .is_some_and(|f| f.offset <= *offset)
            });
        }
    }
}

#[async_trait]
impl Backend for Memory {
    async fn publish(&self, p: Publish<'_>) -> Result<Published, HistoryError> {
        let logs = self.logs(&p.scope.name);
        let mut logs = logs.lock().unwrap();
        let now = Instant::now();
        logs.keys.expire(now);
        if let Some((key, _)) = p.idempotency
            && let Some(position) = logs.keys.get(key)
        {
            return Ok(Published {
                position: position.clone(),
                delivered: 0,
                duplicate: true,
            });
        }
        let (name, log) = logs.log(p.channel);
        log.latest += 1;
        let position = Position::new(log.epoch.clone(), log.latest);
        let msg = p.body.render(&position);
        let cost = entry_cost(&msg);
        log.entries.push_back(Stored {
            offset: position.offset,
            at: now,
            msg: msg.clone(),
        });
        let (mut dropped, mut dropped_bytes) = (0, 0);
        while log.entries.len() > p.recording.size {
            let gone = log.entries.pop_front().expect("over size, so not empty");
            dropped += 1;
            dropped_bytes += entry_cost(&gone.msg);
        }
        logs.bytes = logs.bytes + cost - dropped_bytes;
        logs.kept = logs.kept + 1 - dropped;
        logs.arrivals.push_back((name, position.offset));
        logs.trim(now, p.recording.ttl, self.budget);
        if let Some((key, window)) = p.idempotency {
            logs.keys
                .insert(key.to_owned(), now + window, position.clone());
        }
        // Delivered under the lock: the next publish to the channel cannot
        // overtake this one in any subscriber's queue.
        let delivered = p.scope.deliver(Target::Channel(p.channel), &msg, p.except);
        Ok(Published {
            position,
            delivered,
            duplicate: false,
        })
    }

    async fn read(
        &self,
        plugin: &str,
        recording: &Recording,
        channel: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        let logs = self.logs(plugin);
        let mut logs = logs.lock().unwrap();
        let now = Instant::now();
        logs.trim(now, recording.ttl, self.budget);
        let (_, log) = logs.log(channel);
        let first = log.entries.front().map_or(log.latest + 1, |e| e.offset);
        let kept = Kept {
            epoch: &log.epoch,
            latest: log.latest,
            first,
        };
        let (from, recovered) = plan(since, kept);
        let entries = log
            .entries
            .iter()
            .skip_while(|e| e.offset < from)
            .take(limit)
            .map(|e| Entry {
                position: Position::new(log.epoch.clone(), e.offset),
                msg: e.msg.clone(),
            })
            .collect();
        Ok(Page {
            entries,
            latest: Position::new(log.epoch.clone(), log.latest),
            recovered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Body, Publish};
    use crate::registry::{Registry, Scope};

    fn recording(size: usize, ttl: Duration) -> Recording {
        Recording {
            patterns: vec!["*".into()],
            size,
            ttl,
        }
    }

    async fn publish(
        m: &Memory,
        scope: &Scope,
        r: &Recording,
        channel: &str,
        text: &str,
    ) -> Published {
        let body = Body::Positioned {
            before: format!("{text}@"),
            after: String::new(),
        };
        let p = Publish {
            scope,
            recording: r,
            channel,
            body,
            except: None,
            idempotency: None,
        };
        m.publish(p).await.unwrap()
    }

    fn texts(page: &Page) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match &e.msg {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Binary(_) => panic!("text expected"),
            })
            .collect()
    }

    #[tokio::test]
    async fn size_trims_the_oldest_and_a_client_behind_it_is_not_recovered() {
        let (reg, m) = (Registry::new(), Memory::new(1 << 20));
        let (scope, r) = (reg.scope("p"), recording(3, Duration::from_secs(60)));
        let mut positions = Vec::new();
        for i in 1..=5 {
            positions.push(
                publish(&m, &scope, &r, "c", &format!("m{i}"))
                    .await
                    .position,
            );
        }
        assert_eq!(positions[4].offset, 5);
        let epoch = &positions[0].epoch;
        assert_eq!(positions[2].to_string(), format!("{epoch}:3"));
        let page = m.read("p", &r, "c", Some(&positions[1]), 10).await.unwrap();
        assert!(page.recovered);
        assert_eq!(
            texts(&page),
            [
                format!("m3@{epoch}:3"),
                format!("m4@{epoch}:4"),
                format!("m5@{epoch}:5")
            ]
        );
        let page = m.read("p", &r, "c", Some(&positions[0]), 10).await.unwrap();
        assert!(!page.recovered, "m2 was trimmed");
        assert_eq!(page.entries[0].position.offset, 3);
        let page = m
            .read("p", &r, "c", Some(&Position::new("other", 4)), 1)
            .await
            .unwrap();
        assert!(!page.recovered);
        assert_eq!((page.entries.len(), page.latest.offset), (1, 5));
    }

    #[tokio::test]
    async fn old_messages_expire_and_the_budget_drops_the_oldest_of_any_channel() {
        let (reg, m) = (Registry::new(), Memory::new(10 * 1024));
        let (scope, r) = (reg.scope("p"), recording(100, Duration::from_millis(50)));
        let first = publish(&m, &scope, &r, "a", "x").await.position;
        tokio::time::sleep(Duration::from_millis(80)).await;
        let page = m.read("p", &r, "a", Some(&first), 10).await.unwrap();
        assert!(page.recovered, "nothing after `first` was lost");
        let page = m
            .read(
                "p",
                &r,
                "a",
                Some(&Position::new(first.epoch.clone(), 0)),
                10,
            )
            .await
            .unwrap();
        assert!(!page.recovered, "`first` expired");
        assert!(page.entries.is_empty());

        let r = recording(100, Duration::from_secs(60));
        let big = "b".repeat(1000);
        for _ in 0..20 {
            publish(&m, &scope, &r, "a", &big).await;
            publish(&m, &scope, &r, "b", &big).await;
        }
        let logs = m.logs("p");
        let logs = logs.lock().unwrap();
        assert!(logs.bytes <= 10 * 1024, "{} bytes held", logs.bytes);
        let kept = |c: &str| logs.channels[c].entries.len();
        assert!(
            kept("a") >= 3 && kept("b") >= 3,
            "both channels keep their newest"
        );
        assert_eq!(logs.channels["b"].entries.back().unwrap().offset, 20);
    }

    #[tokio::test]
    async fn an_idempotency_key_publishes_once() {
        let (reg, m) = (Registry::new(), Memory::new(1 << 20));
        let (scope, r) = (reg.scope("p"), recording(10, Duration::from_secs(60)));
        let once = |key| Publish {
            scope: &scope,
            recording: &r,
            channel: "c",
            body: Body::Plain(Message::text("hi")),
            except: None,
            idempotency: Some((key, Duration::from_secs(60))),
        };
        let first = m.publish(once("k")).await.unwrap();
        let again = m.publish(once("k")).await.unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(first.position, again.position);
        assert_eq!(m.publish(once("other")).await.unwrap().position.offset, 2);
    }
}
