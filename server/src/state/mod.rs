//! Plugin key-value state, the application scope: one [`Backend`] trait
//! and three backends, chosen by `[state]`:
//!
//! - `memory.rs`: in this process, gone on restart; one node only.
//! - `sqlite.rs`: a SQLite file, durable across restarts; one node (or
//!   several processes on one host sharing the file).
//! - `redis.rs`: the cluster's Redis, so every node sees the same state.
//!
//! Every backend keeps each plugin's entries apart and holds it to
//! `limits.state_bytes` (keys, values and [`ENTRY_OVERHEAD`] per entry),
//! and every operation is atomic across the plugin's instances (and, on
//! Redis, across nodes). What is the same for all of them lives here:
//! checking keys and TTLs, bounding each call by `state.timeout`, and
//! logging a backend that stops answering once rather than per call.
//! Memory and SQLite also share the semantics of each operation
//! (`table.rs`); Redis runs the same rules as Lua scripts.

mod memory;
mod redis;
mod sqlite;
mod table;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;

use crate::cluster::Cluster;
use crate::config::{Config, Limits, StateBackend};
use crate::health::Health;

pub use memory::Memory;

/// Why a state operation did not happen; the WIT's `state-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The plugin's entries would go past `limits.state_bytes`.
    #[error("over limits.state_bytes")]
    LimitReached,
    /// An empty key, a key over `limits.max_name_len`, a TTL of zero.
    #[error("invalid argument")]
    InvalidArgument,
    /// An increment of a value that is not a decimal i64, or one that
    /// would overflow.
    #[error("not a number")]
    NotANumber,
    /// The backend failed or did not answer within `state.timeout`; the
    /// call may or may not have taken effect. The reason is for the log,
    /// never for the plugin.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
}

/// What one entry costs beyond its key and value bytes: the map slot or
/// row and its allocations, rounded up, so a million tiny entries are not
/// free. Every backend counts the same.
pub const ENTRY_OVERHEAD: u64 = 64;

/// The longest TTL: longer ones count as this (a hundred years), so a
/// deadline always fits every backend's clock.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What `key` holding `value_len` bytes counts against the plugin's quota.
pub fn cost(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64 + ENTRY_OVERHEAD
}

/// One way of storing every plugin's entries. Keys arrive checked (not
/// empty, within `limits.max_name_len`); each backend holds every plugin to
/// the quota it was made with, and makes each call atomic for the plugin.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The live value of `key`: an expired one is absent.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key` to `value` (`None` deletes it), expiring after `ttl` or,
    /// with `None`, never: a set makes an expiring key permanent again.
    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), StateError>;
    /// Adds `delta` to the decimal i64 at `key` (absent counts as 0, as
    /// Redis's INCRBY has it); keeps the key's expiry.
    async fn increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Sets `key` to `new` (`None` deletes it, a value is permanent) only
    /// if its live value is `expected` (`None`: absent).
    async fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError>;
    /// Live keys starting with `prefix`, in byte order, at most `limit`.
    async fn keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError>;
}

/// The server's state: one backend for every plugin, the limits every
/// call is checked against, and whether the backend is failing now.
pub struct Store {
    backend: Box<dyn Backend>,
    kind: StateBackend,
    /// `limits.state_bytes`: what the backend holds each plugin to.
    quota: u64,
    max_key_len: usize,
    keys_listed: usize,
    /// Bounds every call by `state.timeout`, and logs the backend failing.
    health: Health,
}

impl Store {
    /// In-memory state, for a server without `[state]` (and for tools and
    /// tests that run plugins without one).
    pub fn memory(limits: &Limits) -> Arc<Store> {
        let timeout = crate::config::State::default().timeout;
        Store::with(
            Box::new(Memory::new(quota(limits))),
            StateBackend::Memory,
            limits,
            timeout,
        )
    }

    /// The backend `[state]` asks for (see [`Config::state_backend`]):
    /// opening a SQLite file that cannot be opened is a startup error, and
    /// Redis is the cluster's, reached through `cluster` (a Redis that is
    /// away is not: its calls fail with `unavailable` until it is back).
    pub fn open(config: &Config, cluster: Option<&Arc<Cluster>>) -> Result<Arc<Store>> {
        let limits = &config.limits;
        let kind = config.state_backend();
        let backend: Box<dyn Backend> = match kind {
            StateBackend::Memory | StateBackend::Auto => Box::new(Memory::new(quota(limits))),
            StateBackend::Sqlite => {
                let path = config
                    .state
                    .path
                    .as_deref()
                    .context("state.path is not set")?;
                let db = sqlite::Sqlite::open(path, quota(limits), config.state.timeout)
                    .with_context(|| format!("state.path: cannot use {}", path.display()))?;
                Box::new(db)
            }
            StateBackend::Redis => {
                let cluster = cluster.context("the redis state backend needs cluster.url")?;
                Box::new(redis::Redis::new(cluster.clone(), quota(limits)))
            }
        };
        tracing::info!("plugin state: {}", describe(config));
        Ok(Store::with(backend, kind, limits, config.state.timeout))
    }

    fn with(
        backend: Box<dyn Backend>,
        kind: StateBackend,
        limits: &Limits,
        timeout: Duration,
    ) -> Arc<Store> {
        Arc::new(Store {
            backend,
            kind,
            quota: quota(limits),
            max_key_len: limits.max_name_len,
            keys_listed: limits.state_keys_listed,
            health: Health::new(format!("plugin state ({kind:?})"), timeout),
        })
    }

    /// The backend in use (never `auto`).
    pub fn kind(&self) -> StateBackend {
        self.kind
    }

    /// Plugin `name`'s view of the store.
    pub fn plugin(self: &Arc<Self>, name: Arc<str>) -> PluginState {
        PluginState {
            plugin: name,
            store: self.clone(),
        }
    }

    /// Runs one backend call within `state.timeout`, and logs the backend
    /// failing (once, with the reason) and answering again.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        self.health
            .bounded(call, unavailable, StateError::Unavailable)
            .await
    }
}

fn quota(limits: &Limits) -> u64 {
    limits.state_bytes as u64
}

/// The backend in effect, for the log and admin info.
pub fn describe(config: &Config) -> String {
    match config.state_backend() {
        StateBackend::Sqlite => match &config.state.path {
            Some(path) => format!("sqlite at {}", path.display()),
            None => "sqlite".into(),
        },
        StateBackend::Redis => "redis (the cluster's)".into(),
        StateBackend::Memory | StateBackend::Auto => "memory".into(),
    }
}

/// One plugin's state: every call checked, bounded in time and scoped to
/// the plugin.
pub struct PluginState {
    plugin: Arc<str>,
    store: Arc<Store>,
}

impl PluginState {
    fn check_key(&self, key: &str) -> Result<(), StateError> {
        if key.is_empty() || key.len() > self.store.max_key_len {
            return Err(StateError::InvalidArgument);
        }
        Ok(())
    }

    /// A value that could never fit is refused here, before it travels to
    /// the backend.
    fn check_fits(&self, key: &str, value: Option<&Vec<u8>>) -> Result<(), StateError> {
        match value {
            Some(v) if cost(key, v.len()) > self.store.quota => Err(StateError::LimitReached),
            _ => Ok(()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.check_key(key)?;
        let call = self.store.backend.get(&self.plugin, key);
        self.store.bounded(call).await
    }

    /// Sets `key` (`None` deletes it); the key is permanent afterwards.
    pub async fn set(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StateError> {
        self.check_key(key)?;
        self.check_fits(key, value.as_ref())?;
        let call = self.store.backend.set(&self.plugin, key, value, None);
        self.store.bounded(call).await
    }

    /// Sets `key`, which expires after `ttl_ms` (at most [`MAX_TTL`]).
    pub async fn set_expiring(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), StateError> {
        self.check_key(key)?;
        if ttl_ms == 0 {
            return Err(StateError::InvalidArgument);
        }
        self.check_fits(key, Some(&value))?;
        let ttl = Duration::from_millis(ttl_ms).min(MAX_TTL);
        let call = self
            .store
            .backend
            .set(&self.plugin, key, Some(value), Some(ttl));
        self.store.bounded(call).await
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, StateError> {
        self.check_key(key)?;
        let call = self.store.backend.increment(&self.plugin, key, delta);
        self.store.bounded(call).await
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        self.check_key(key)?;
        self.check_fits(key, new.as_ref())?;
        let call = self
            .store
            .backend
            .compare_and_swap(&self.plugin, key, expected, new);
        self.store.bounded(call).await
    }

    /// Keys starting with `prefix`, at most `limit` and never more than
    /// `limits.state_keys_listed`. A prefix longer than any key can be
    /// matches nothing.
    pub async fn keys(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        let limit = (limit as usize).min(self.store.keys_listed);
        if limit == 0 || prefix.len() > self.store.max_key_len {
            return Ok(Vec::new());
        }
        let call = self.store.backend.keys(&self.plugin, prefix, limit);
        self.store.bounded(call).await
    }
}

/// Why a call failed, when it failed because the backend did.
fn unavailable(e: &StateError) -> Option<&str> {
    match e {
        StateError::Unavailable(why) => Some(why),
        _ => None,
    }
}
