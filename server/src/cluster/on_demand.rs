//! A connection to the cluster's Redis for calls made on a plugin's
//! behalf (state, history): opened on first use and again after it fails,
//! but no sooner than [`RECONNECT_WAIT`] after a failed attempt, so that
//! while Redis is away each call fails at once instead of each waiting
//! for a connection attempt of its own.

use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;
use tokio::time::Instant;

use super::{Cluster, Link};

/// After a failed connection attempt, calls fail at once for this long.
pub const RECONNECT_WAIT: Duration = Duration::from_millis(500);

pub struct OnDemand {
    cluster: Arc<Cluster>,
    slot: tokio::sync::Mutex<Slot>,
}

/// The connection, or when the next attempt may be made.
#[derive(Default)]
struct Slot {
    link: Option<Link>,
    not_before: Option<Instant>,
}

impl OnDemand {
    pub fn new(cluster: Arc<Cluster>) -> OnDemand {
        OnDemand {
            cluster,
            slot: Default::default(),
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    async fn link(&self) -> Result<Link, String> {
        let mut slot = self.slot.lock().await;
        if let Some(link) = &slot.link {
            return Ok(link.clone());
        }
        if slot.not_before.is_some_and(|at| Instant::now() < at) {
            return Err("waiting to reconnect to Redis".into());
        }
        match self.cluster.connect().await {
            Ok(link) => {
                *slot = Slot {
                    link: Some(link.clone()),
                    not_before: None,
                };
                Ok(link)
            }
            Err(e) => {
                slot.not_before = Some(Instant::now() + RECONNECT_WAIT);
                Err(format!("cannot connect to Redis: {e}"))
            }
        }
    }

    /// Runs one command; a broken connection is dropped, so the next call
    /// opens a new one. The error is the reason, for the log.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut link = self.link().await?;
        match cmd.query_async(&mut link).await {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                {
                    self.slot.lock().await.link = None;
                }
                Err(format!("Redis: {e}"))
            }
        }
    }
}
