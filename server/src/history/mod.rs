//! Channel history: what was published to a recorded channel, kept with
//! its position so that a client coming back after a reconnect resumes
//! where it left off, or learns that it cannot and reloads.
//!
//! A plugin opts in per channel pattern in its sidecar (`[history]`,
//! [`Recording`]). Two backends keep the same rules (`rules.rs`):
//!
//! - `memory.rs`: one node, bounded by size, age and
//!   `limits.history_bytes`; a restart starts every channel on a new
//!   epoch.
//! - `redis.rs`: the cluster's Redis, one stream per channel, so every
//!   node sees the same positions. The message is recorded and published
//!   to the bus in one script, so every node (the publisher's too)
//!   delivers a channel's messages in the order of their positions.

mod memory;
mod position;
mod recording;
mod redis;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::health::Health;
use crate::protocol::Message;
use crate::registry::{ConnId, Scope};

pub use position::Position;
pub use recording::Recording;

/// Why a history call did not happen; the WIT's `history-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("the channel is not recorded")]
    NotRecorded,
    #[error("invalid argument")]
    InvalidArgument,
    /// The reason is for the log, never for the plugin or a client.
    #[error("history backend unavailable: {0}")]
    Unavailable(String),
}

/// What to record: the message, or a text with a place for its position.
#[derive(Debug, Clone)]
pub enum Body {
    Plain(Message),
    Positioned { before: String, after: String },
}

impl Body {
    /// Its size as delivered at most (a position is at most
    /// [`Position::MAX_TEXT`] bytes), for the size limit.
    pub fn max_len(&self) -> usize {
        match self {
            Body::Plain(m) => m.len(),
            Body::Positioned { before, after } => before.len() + after.len() + Position::MAX_TEXT,
        }
    }

    /// Whether it is binary, and its bytes before and after the place of
    /// the position (a plain message is all `before`): what a Redis
    /// script and a bus frame's seal take it as.
    pub fn parts(&self) -> (bool, &[u8], &[u8]) {
        match self {
            Body::Plain(msg) => {
                let (binary, bytes) = msg.payload();
                (binary, bytes, b"")
            }
            Body::Positioned { before, after } => (false, before.as_bytes(), after.as_bytes()),
        }
    }

    /// The message as delivered, once its position is known.
    pub fn render(&self, position: &Position) -> Message {
        match self {
            Body::Plain(m) => m.clone(),
            Body::Positioned { before, after } => {
                Message::text(format!("{before}{position}{after}"))
            }
        }
    }
}

/// One publish to a recorded channel.
pub struct Publish<'a> {
    pub scope: &'a Scope,
    pub recording: &'a Recording,
    pub channel: &'a str,
    pub body: Body,
    pub except: Option<ConnId>,
    /// A key under which a retry of the same publish is recognised (the
    /// publish API's `Idempotency-Key`), kept for `publish.idempotency_window`.
    pub idempotency: Option<(&'a str, Duration)>,
}

/// A recorded message's place, and how far it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub position: Position,
    /// Connections it was queued for here, plus one per other node with
    /// subscribers.
    pub delivered: u32,
    /// The idempotency key was seen before: nothing was published now,
    /// and `position` is the first publish's.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub position: Position,
    pub msg: Message,
}

/// The WIT's `history-page`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub latest: Position,
    pub recovered: bool,
}

/// One way of keeping every plugin's channel histories.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Gives the message the channel's next position, keeps it, and has
    /// it delivered to the channel's subscribers in position order.
    async fn publish(&self, publish: Publish<'_>) -> Result<Published, HistoryError>;
    /// Kept messages after `since`, per `rules::plan`.
    async fn read(
        &self,
        plugin: &str,
        recording: &Recording,
        channel: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Page, HistoryError>;
}

/// The server's channel history: the backend, and whether it is failing.
pub struct History {
    backend: Box<dyn Backend>,
    /// Bounds every call by `state.timeout`, and logs the backend failing.
    health: Health,
}

impl History {
    /// In memory for a single node; in the cluster's Redis when clustered.
    pub fn open(config: &Config, cluster: Option<&Arc<Cluster>>) -> Arc<History> {
        let backend: Box<dyn Backend> = match cluster {
            Some(cluster) => Box::new(redis::Redis::new(cluster.clone())),
            None => Box::new(memory::Memory::new(config.limits.history_bytes)),
        };
        Arc::new(History {
            backend,
            health: Health::new("channel history", config.state.timeout),
        })
    }

    /// In memory, with the default limits: for tools and tests.
    pub fn memory() -> Arc<History> {
        History::open(&Config::default(), None)
    }

    pub async fn publish(&self, publish: Publish<'_>) -> Result<Published, HistoryError> {
        let plugin = publish.scope.name.clone();
        let result = match publish.recording.records(publish.channel) {
            true => self.bounded(self.backend.publish(publish)).await,
            false => Err(HistoryError::NotRecorded),
        };
        let outcome = match &result {
            Ok(published) if published.duplicate => "duplicate",
            other => outcome(other),
        };
        count(&plugin, "publish", outcome);
        result
    }

    pub async fn read(
        &self,
        plugin: &str,
        recording: &Recording,
        channel: &str,
        since: Option<&Position>,
        limit: u32,
    ) -> Result<Page, HistoryError> {
        let result = if !recording.records(channel) {
            Err(HistoryError::NotRecorded)
        } else if limit == 0 {
            Err(HistoryError::InvalidArgument)
        } else {
            let limit = (limit as usize).min(recording.size);
            let read = self.backend.read(plugin, recording, channel, since, limit);
            self.bounded(read).await
        };
        count(plugin, "read", outcome(&result));
        result
    }

    /// Runs one call within `state.timeout`, logging the backend failing.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        self.health
            .bounded(call, unavailable, HistoryError::Unavailable)
            .await
    }
}

/// Why a call failed, when it failed because the backend did.
fn unavailable(e: &HistoryError) -> Option<&str> {
    match e {
        HistoryError::Unavailable(why) => Some(why),
        _ => None,
    }
}

/// A call's outcome as `wsgate_history_calls_total` labels it.
fn outcome<T>(result: &Result<T, HistoryError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(HistoryError::NotRecorded) => "not_recorded",
        Err(HistoryError::InvalidArgument) => "invalid",
        Err(HistoryError::Unavailable(_)) => "unavailable",
    }
}

fn count(plugin: &str, call: &str, outcome: &str) {
    let calls = &crate::metrics::metrics().history_calls;
    calls.with_label_values(&[plugin, call, outcome]).inc();
}
