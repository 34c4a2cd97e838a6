//! A connection to the cluster's Redis for calls made on a plugin's
//! behalf (state, history): opened on first use and again after it fails,
//! but no sooner than [`RECONNECT_WAIT`] after a failed attempt, so that
//! while Redis is away each call fails at once instead of each waiting
//! for a connection attempt of its own.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
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
        self.run(cmd).await.map_err(|e| format!("Redis: {e}"))
    }

    /// Runs `cmd`, made by [`Lua::call`]: by the script's hash, loading
    /// the script first if this Redis does not have it (yet, or any more).
    pub async fn eval<T: FromRedisValue>(&self, lua: &Lua, cmd: &redis::Cmd) -> Result<T, String> {
        let answer = match self.run(cmd).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let load = redis::cmd("SCRIPT").arg("LOAD").arg(&lua.text).clone();
                self.run::<String>(&load)
                    .await
                    .map_err(|e| format!("Redis: {e}"))?;
                self.run(cmd).await
            }
            answer => answer,
        };
        answer.map_err(|e| format!("Redis: {e}"))
    }

    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let mut link = self
            .link()
            .await
            .map_err(|why| RedisError::from((ErrorKind::Io, "no connection", why)))?;
        let answer = cmd.query_async(&mut link).await;
        if let Err(e) = &answer
            && (e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error())
        {
            self.slot.lock().await.link = None;
        }
        answer
    }
}

/// A Lua script that Redis keeps by its SHA-1, so that a call sends the
/// hash (EVALSHA) rather than the whole text every time.
pub struct Lua {
    text: String,
    hash: String,
}

impl Lua {
    pub fn new(text: String) -> Lua {
        let hash = redis::Script::new(&text).get_hash().to_owned();
        Lua { text, hash }
    }

    /// `EVALSHA HASH`: add the number of keys, the keys and the arguments,
    /// then run it with [`OnDemand::eval`].
    pub fn call(&self) -> redis::Cmd {
        redis::cmd("EVALSHA").arg(&self.hash).clone()
    }
}
