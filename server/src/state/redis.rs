//! State in the cluster's Redis, so every node sees the same entries and
//! each operation is atomic across all of them.
//!
//! Each plugin's keys share one hash tag, `{PREFIX:s:PLUGIN}`, so on a
//! Redis Cluster they live in one slot and a Lua script may touch them
//! together:
//!
//! - `{PREFIX:s:PLUGIN}:v:KEY`: the value, with a native deadline (PXAT)
//!   when it expires;
//! - `…:bytes`: what the plugin's entries cost, checked against the quota;
//! - `…:cost`: a hash of each entry's cost, so an entry that expired is
//!   still subtracted right;
//! - `…:keys`: a sorted set of every key, all scored 0, listed by prefix
//!   with ZRANGEBYLEX (byte order);
//! - `…:ttl`: a sorted set of the expiring keys by deadline.
//!
//! Writes, increments and listings are Lua scripts (`get` is a plain
//! GET). Each script first drops the bookkeeping of entries whose
//! deadline passed (a few at a time, or all of them before refusing a
//! write over the quota), deleting their values too, so what the scripts
//! count always agrees with what Redis holds. Deadlines are Redis's own
//! clock (TIME), the one its expiry uses.
//!
//! Connections are the cluster's (`cluster/link.rs`: one Redis or a Redis
//! Cluster, plain or TLS): one multiplexed connection, opened on first use
//! and again after it fails (`cluster/on_demand.rs`). Any failure is `unavailable`; `state.timeout` bounds
//! every call (and the connection's own timeouts bound each command).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::FromRedisValue;

use super::{Backend, ENTRY_OVERHEAD, StateError};
use crate::cluster::{Cluster, Lua, OnDemand};

/// Expired entries a script cleans up in passing.
const PURGE_BATCH: u32 = 64;

/// Shared by every script. KEYS: [1] the value (for a listing, any key of
/// the plugin), [2] bytes, [3] cost, [4] keys, [5] ttl; ARGV[1] is the
/// prefix of the plugin's value keys.
const COMMON: &str = r"
local value_prefix = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%.0f', n) end
local function drop(key)
  local c = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  redis.call('DEL', value_prefix .. key)
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[4], key)
  redis.call('ZREM', KEYS[5], key)
  if c > 0 then redis.call('DECRBY', KEYS[2], int(c)) end
end
local function purge(now, max)
  local expired
  if max then
    expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. int(now), 'LIMIT', 0, max)
  else
    expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. int(now))
  end
  for _, key in ipairs(expired) do drop(key) end
end
local function expired(now, key)
  local at = redis.call('ZSCORE', KEYS[5], key)
  return at and tonumber(at) < now
end
local function used() return tonumber(redis.call('GET', KEYS[2]) or '0') end
";

/// Set, delete, set with a deadline, or compare-and-swap. ARGV: [2] key,
/// [3] quota, [4] overhead, [5] batch, [6] `set` or `cas`, [7] `1` if
/// there is a new value, [8] the new value, [9] TTL in ms (0: permanent),
/// [10] `1` if a value is expected, [11] the expected value. Returns 1
/// (done), 0 (not the expected value), -1 (over the quota).
const WRITE: &str = r"
local now = now_ms()
local key = ARGV[2]
if expired(now, key) then drop(key) end
purge(now, tonumber(ARGV[5]))
if ARGV[6] == 'cas' then
  local current = redis.call('GET', KEYS[1])
  if ARGV[10] == '1' then
    if current ~= ARGV[11] then return 0 end
  elseif current then
    return 0
  end
end
local quota, overhead = tonumber(ARGV[3]), tonumber(ARGV[4])
local old = tonumber(redis.call('HGET', KEYS[3], key) or '0')
local new = 0
if ARGV[7] == '1' then new = #key + #ARGV[8] + overhead end
if new > old and used() - old + new > quota then
  purge(now, nil)
  if used() - old + new > quota then return -1 end
end
if ARGV[7] == '1' then
  local ttl = tonumber(ARGV[9])
  if ttl > 0 then
    local at = int(now + ttl)
    redis.call('SET', KEYS[1], ARGV[8], 'PXAT', at)
    redis.call('ZADD', KEYS[5], at, key)
  else
    redis.call('SET', KEYS[1], ARGV[8])
    redis.call('ZREM', KEYS[5], key)
  end
  redis.call('HSET', KEYS[3], key, int(new))
  redis.call('ZADD', KEYS[4], 0, key)
else
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[4], key)
  redis.call('ZREM', KEYS[5], key)
end
if new ~= old then redis.call('INCRBY', KEYS[2], int(new - old)) end
return 1
";

/// INCRBY (which keeps the deadline and refuses what is not an integer or
/// would overflow), then the new text's cost, undone if over the quota.
/// ARGV: [2] key, [3] quota, [4] overhead, [5] batch, [6] delta. Returns
/// `{'ok', value}`, `{'nan'}` or `{'limit'}`: the value as text, since a
/// Lua number would round it.
const INCREMENT: &str = r"
local now = now_ms()
local key = ARGV[2]
if expired(now, key) then drop(key) end
purge(now, tonumber(ARGV[5]))
local before = redis.call('GET', KEYS[1])
local done = redis.pcall('INCRBY', KEYS[1], ARGV[6])
if type(done) == 'table' and done.err then return {'nan'} end
local after = redis.call('GET', KEYS[1])
local quota, overhead = tonumber(ARGV[3]), tonumber(ARGV[4])
local old = tonumber(redis.call('HGET', KEYS[3], key) or '0')
local new = #key + #after + overhead
if new > old and used() - old + new > quota then
  purge(now, nil)
  if used() - old + new > quota then
    if before then
      redis.call('SET', KEYS[1], before, 'KEEPTTL')
    else
      redis.call('DEL', KEYS[1])
    end
    return {'limit'}
  end
end
redis.call('HSET', KEYS[3], key, int(new))
redis.call('ZADD', KEYS[4], 0, key)
if new ~= old then redis.call('INCRBY', KEYS[2], int(new - old)) end
return {'ok', after}
";

/// Live keys from ARGV[2] to ARGV[3] (ZRANGEBYLEX bounds), at most
/// ARGV[4]; ARGV[5] is the batch.
const KEYS: &str = r"
local now = now_ms()
purge(now, tonumber(ARGV[5]))
local limit = tonumber(ARGV[4])
local out, offset = {}, 0
while #out < limit do
  local batch = redis.call('ZRANGEBYLEX', KEYS[4], ARGV[2], ARGV[3], 'LIMIT', offset, limit - #out)
  if #batch == 0 then break end
  offset = offset + #batch
  for _, key in ipairs(batch) do
    if not expired(now, key) then out[#out + 1] = key end
  end
end
return out
";

pub struct Redis {
    redis: OnDemand,
    quota: u64,
    scripts: Scripts,
}

/// The scripts, each with [`COMMON`] in front.
struct Scripts {
    write: Lua,
    increment: Lua,
    keys: Lua,
}

/// The Redis keys of one plugin (and one of its keys).
struct Keys {
    value: Vec<u8>,
    bytes: String,
    cost: String,
    index: String,
    ttl: String,
    value_prefix: String,
}

impl Keys {
    fn new(prefix: &str, plugin: &str, key: &str) -> Keys {
        let tag = format!("{{{prefix}:s:{plugin}}}");
        let value_prefix = format!("{tag}:v:");
        Keys {
            value: [value_prefix.as_bytes(), key.as_bytes()].concat(),
            bytes: format!("{tag}:bytes"),
            cost: format!("{tag}:cost"),
            index: format!("{tag}:keys"),
            ttl: format!("{tag}:ttl"),
            value_prefix,
        }
    }

    /// A call of `script` with these keys and ARGV[1], for the caller to
    /// add the other arguments.
    fn eval(&self, script: &Lua) -> redis::Cmd {
        let mut cmd = script.call();
        cmd.arg(5)
            .arg(&self.value)
            .arg(&self.bytes)
            .arg(&self.cost)
            .arg(&self.index)
            .arg(&self.ttl)
            .arg(&self.value_prefix);
        cmd
    }
}

impl Redis {
    pub fn new(cluster: Arc<Cluster>, quota: u64) -> Redis {
        let full = |script: &str| Lua::new(format!("{COMMON}{script}"));
        Redis {
            redis: OnDemand::new(cluster),
            quota,
            scripts: Scripts {
                write: full(WRITE),
                increment: full(INCREMENT),
                keys: full(KEYS),
            },
        }
    }

    fn keys_of(&self, plugin: &str, key: &str) -> Keys {
        Keys::new(self.redis.cluster().prefix(), plugin, key)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StateError> {
        self.redis.query(cmd).await.map_err(StateError::Unavailable)
    }

    async fn eval<T: FromRedisValue>(&self, lua: &Lua, cmd: &redis::Cmd) -> Result<T, StateError> {
        self.redis
            .eval(lua, cmd)
            .await
            .map_err(StateError::Unavailable)
    }

    async fn write(
        &self,
        plugin: &str,
        key: &str,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
        expected: Option<Option<&[u8]>>,
    ) -> Result<bool, StateError> {
        let keys = self.keys_of(plugin, key);
        let mut cmd = keys.eval(&self.scripts.write);
        let flag = |present: bool| if present { "1" } else { "0" };
        cmd.arg(key)
            .arg(self.quota)
            .arg(ENTRY_OVERHEAD)
            .arg(PURGE_BATCH)
            .arg(if expected.is_some() { "cas" } else { "set" })
            .arg(flag(new.is_some()))
            .arg(new.unwrap_or_default())
            .arg(ttl.map_or(0, |t| t.as_millis() as u64))
            .arg(flag(matches!(expected, Some(Some(_)))))
            .arg(expected.flatten().unwrap_or_default());
        match self.eval::<i64>(&self.scripts.write, &cmd).await? {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StateError::LimitReached),
        }
    }
}

#[async_trait]
impl Backend for Redis {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let keys = self.keys_of(plugin, key);
        self.query(redis::cmd("GET").arg(&keys.value)).await
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.write(plugin, key, value.as_deref(), ttl, None)
            .await
            .map(drop)
    }

    async fn increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        let keys = self.keys_of(plugin, key);
        let mut cmd = keys.eval(&self.scripts.increment);
        cmd.arg(key)
            .arg(self.quota)
            .arg(ENTRY_OVERHEAD)
            .arg(PURGE_BATCH)
            .arg(delta);
        let answer: Vec<Vec<u8>> = self.eval(&self.scripts.increment, &cmd).await?;
        match answer.as_slice() {
            [ok, value] if ok == b"ok" => std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StateError::Unavailable("Redis answered a bad counter".into())),
            [nan] if nan == b"nan" => Err(StateError::NotANumber),
            [limit] if limit == b"limit" => Err(StateError::LimitReached),
            _ => Err(StateError::Unavailable(
                "Redis answered the increment script unexpectedly".into(),
            )),
        }
    }

    async fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        let expected = Some(expected.as_deref());
        self.write(plugin, key, new.as_deref(), None, expected)
            .await
    }

    async fn keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let keys = self.keys_of(plugin, prefix);
        let mut cmd = keys.eval(&self.scripts.keys);
        // From the prefix itself to the prefix followed by 0xff, a byte
        // no UTF-8 key contains: exactly the keys that start with it.
        let min = [b"[", prefix.as_bytes()].concat();
        let max = [b"[", prefix.as_bytes(), b"\xff"].concat();
        cmd.arg(min).arg(max).arg(limit).arg(PURGE_BATCH);
        self.eval(&self.scripts.keys, &cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_keys_share_one_hash_tag() {
        let k = Keys::new("wsgate", "chat", "user:{42}");
        assert_eq!(k.value, b"{wsgate:s:chat}:v:user:{42}");
        for key in [&k.bytes, &k.cost, &k.index, &k.ttl, &k.value_prefix] {
            assert!(key.starts_with("{wsgate:s:chat}:"), "{key}");
        }
    }
}
