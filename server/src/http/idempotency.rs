//! `Idempotency-Key` for publishes other than to a recorded channel (those
//! are made idempotent by the history itself, in the same step that
//! records them): the first publish with a key claims it, and a retry
//! within `admin.idempotency_window` gets the first one's answer instead
//! of a second delivery. A retry that comes while the first is still
//! being delivered is told to retry (409).
//!
//! Kept in memory, or in the cluster's Redis (`SET NX`) so that a retry
//! sent to another node is recognised too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, OnDemand};
use crate::recent::Recent;

/// The most keys kept in memory: the oldest go first.
const MAX_KEYS: usize = 100_000;
/// What a claimed key holds until its publish is answered.
const PENDING: &str = "pending";

pub enum Claim {
    /// The key is new: publish, then [`Idempotency::complete`].
    New,
    /// A publish with this key is being made now.
    InProgress,
    /// It was published: the answer it got.
    Done(Value),
}

pub enum Idempotency {
    Memory(Mutex<Recent<Option<Value>>>),
    Redis(OnDemand),
}

/// A key as stored: the plugin's name first, so plugins' keys never meet.
fn full_key(plugin: &str, key: &str) -> String {
    format!("{}:{plugin}:{key}", plugin.len())
}

impl Idempotency {
    pub fn new(cluster: Option<&Arc<Cluster>>) -> Idempotency {
        match cluster {
            Some(c) => Idempotency::Redis(OnDemand::new(c.clone())),
            None => Idempotency::Memory(Mutex::new(Recent::new(MAX_KEYS))),
        }
    }

    fn redis_key(redis: &OnDemand, key: &str) -> String {
        crate::cluster::key(redis.cluster().prefix(), &format!("idem:{key}"))
    }

    /// Claims `key` of `plugin` for `window`. The error is the reason
    /// Redis could not be asked, for the log.
    pub async fn claim(&self, plugin: &str, key: &str, window: Duration) -> Result<Claim, String> {
        let key = full_key(plugin, key);
        match self {
            Idempotency::Memory(keys) => {
                let mut keys = keys.lock().unwrap();
                let now = Instant::now();
                keys.expire(now);
                if let Some(answer) = keys.get(&key) {
                    return Ok(answer.clone().map_or(Claim::InProgress, Claim::Done));
                }
                keys.insert(key, now + window, None);
                Ok(Claim::New)
            }
            Idempotency::Redis(redis) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(Idempotency::redis_key(redis, &key))
                    .arg(PENDING)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(window.as_millis().max(1) as u64);
                let before: Option<String> = redis.query(&cmd).await?;
                Ok(match before.as_deref() {
                    None => Claim::New,
                    Some(PENDING) => Claim::InProgress,
                    Some(answer) => {
                        serde_json::from_str(answer).map_or(Claim::InProgress, Claim::Done)
                    }
                })
            }
        }
    }

    /// The answer the claimed `key` got, for its retries.
    pub async fn complete(&self, plugin: &str, key: &str, answer: &Value) {
        let key = full_key(plugin, key);
        match self {
            Idempotency::Memory(keys) => {
                if let Some(slot) = keys.lock().unwrap().get_mut(&key) {
                    *slot = Some(answer.clone());
                }
            }
            Idempotency::Redis(redis) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(Idempotency::redis_key(redis, &key))
                    .arg(answer.to_string())
                    .arg("XX")
                    .arg("KEEPTTL");
                if let Err(e) = redis.query::<()>(&cmd).await {
                    tracing::warn!("publish API: could not keep an idempotency key's answer: {e}");
                }
            }
        }
    }

    /// Gives a claim up after a publish that failed, so a retry may try again.
    pub async fn release(&self, plugin: &str, key: &str) {
        let key = full_key(plugin, key);
        match self {
            Idempotency::Memory(keys) => {
                keys.lock().unwrap().remove(&key);
            }
            Idempotency::Redis(redis) => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(Idempotency::redis_key(redis, &key));
                let _ = redis.query::<()>(&cmd).await;
            }
        }
    }
}
