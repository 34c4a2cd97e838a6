//! History in the cluster's Redis: one stream per recorded channel, so
//! every node sees the same positions, and it outlives any node (and, with
//! Redis persistence, a Redis restart).
//!
//! A channel's keys carry the hash tag of its bus partition,
//! `{PREFIX:p:N}`, so on a Redis Cluster they live in the slot of the
//! partition's sharded pub/sub channel, and one script may record the
//! message and publish it to the bus:
//!
//! - `{PREFIX:p:N}:hm:LEN:PLUGIN:CHANNEL`, a hash: the epoch (`e`) and
//!   the latest offset (`o`), kept for a day after the last message (or
//!   the TTL, if longer);
//! - `{PREFIX:p:N}:h:LEN:PLUGIN:CHANNEL`, the stream: entry id
//!   `OFFSET-1`, fields `t` (Redis's clock, ms), `d` (the message) and
//!   `b` (1 for binary); capped at `[history] size` (MAXLEN) and expiring
//!   `ttl` after the last message;
//! - `{PREFIX:p:N}:hi:LEN:PLUGIN:KEY`: an idempotency key's position.
//!
//! Because recording and publishing are one script, the order of the
//! bus equals the order of the offsets, and every node (the publisher's
//! too) delivers from the bus. If the meta hash is gone (expired, or a
//! Redis that lost its data), the next publish or read starts a new epoch.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::{Backend, Body, Entry, HistoryError, Page, Position, Publish, Published, Recording};
use crate::cluster::{Cluster, Lua, OnDemand};
use crate::protocol::{Message, Utf8Bytes};
use crate::registry::GroupKind;

/// How long a channel's epoch and offset are remembered after its last
/// message, at least: a client away this long is told it cannot resume
/// even if nothing was published meanwhile.
const META_TTL: Duration = Duration::from_secs(24 * 3600);

const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%.0f', n) end
local function epoch_of(candidate, meta_ttl)
  local epoch = redis.call('HGET', KEYS[2], 'e')
  if not epoch then
    epoch = candidate
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
    redis.call('PEXPIRE', KEYS[2], meta_ttl)
  end
  return epoch
end
";

/// KEYS: stream, meta, idempotency key. ARGV: [1] size, [2] ttl ms,
/// [3] meta ttl ms, [4] a new epoch if one is needed, [5] '1' when
/// positioned, [6] the message (or the text before the position), [7] the
/// text after it, [8] '1' for binary, [9] the bus channel, [10] the
/// frame's head, [11] PUBLISH or SPUBLISH, [12] '1' with an idempotency
/// key, [13] its window in ms. Returns {position, duplicate}.
const PUBLISH: &str = r"
if ARGV[12] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {seen, 1} end
end
local epoch = epoch_of(ARGV[4], ARGV[3])
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
local pos = epoch .. ':' .. int(offset)
local body = ARGV[6]
if ARGV[5] == '1' then body = ARGV[6] .. pos .. ARGV[7] end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], int(offset) .. '-1', 't', now_ms(), 'd', body, 'b', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[12] == '1' then redis.call('SET', KEYS[3], pos, 'PX', ARGV[13]) end
redis.call(ARGV[11], ARGV[9], ARGV[10] .. pos .. '\n' .. body)
return {pos, 0}
";

/// KEYS: stream, meta. ARGV: [1] since's epoch ('' for none), [2] its
/// offset, [3] limit, [4] ttl ms, [5] a new epoch if one is needed,
/// [6] meta ttl ms. Returns {epoch, latest, recovered, {{offset, body,
/// binary}...}}, by the rule of `rules::plan`.
const READ: &str = r"
local epoch = epoch_of(ARGV[5], ARGV[6])
local latest = tonumber(redis.call('HGET', KEYS[2], 'o'))
local oldest = now_ms() - tonumber(ARGV[4])
local first = latest + 1
local cursor = '-'
local found = false
while not found do
  local batch = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 64)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if tonumber(e[2][2]) >= oldest then
      first = tonumber(string.match(e[1], '^(%d+)'))
      found = true
      break
    end
    cursor = '(' .. e[1]
  end
end
local since = tonumber(ARGV[2])
local from, recovered
if ARGV[1] == '' then
  from = first; recovered = first <= 1
elseif ARGV[1] ~= epoch or since > latest then
  from = first; recovered = false
elseif since + 1 >= first then
  from = since + 1; recovered = true
else
  from = first; recovered = false
end
local entries = {}
if from <= latest then
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], int(from) .. '-0', '+', 'COUNT', ARGV[3])) do
    entries[#entries + 1] = {string.match(e[1], '^(%d+)'), e[2][4], e[2][6]}
  end
end
return {epoch, int(latest), recovered and 1 or 0, entries}
";

pub struct Redis {
    redis: OnDemand,
    publish: Lua,
    read: Lua,
}

/// A channel's keys (and, for a publish, its idempotency key's).
struct Keys {
    /// The channel's bus channel, whose name is the keys' hash tag.
    bus: String,
    stream: String,
    meta: String,
    tag: String,
    name: String,
}

impl Keys {
    fn new(cluster: &Cluster, plugin: &str, channel: &str) -> Keys {
        let bus = cluster.bus_channel_of(plugin, channel);
        let tag = format!("{{{bus}}}");
        let name = format!("{}:{plugin}:{channel}", plugin.len());
        Keys {
            bus,
            stream: format!("{tag}:h:{name}"),
            meta: format!("{tag}:hm:{name}"),
            tag,
            name,
        }
    }

    fn idempotency(&self, plugin: &str, key: Option<&str>) -> String {
        match key {
            Some(key) => format!("{}:hi:{}:{plugin}:{key}", self.tag, plugin.len()),
            // A key in the same slot that is never read.
            None => format!("{}:hi-unused:{}", self.tag, self.name),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// Offsets past 2^53 lose precision as Lua numbers; no channel gets there,
/// so a position beyond it is simply from the future.
const LUA_EXACT: u64 = 1 << 53;

fn bad_answer(what: &str) -> HistoryError {
    HistoryError::Unavailable(format!("Redis answered a history {what} oddly"))
}

impl Redis {
    pub fn new(cluster: Arc<Cluster>) -> Redis {
        Redis {
            redis: OnDemand::new(cluster),
            publish: Lua::new(format!("{COMMON}{PUBLISH}")),
            read: Lua::new(format!("{COMMON}{READ}")),
        }
    }

    fn cluster(&self) -> &Cluster {
        self.redis.cluster()
    }
}

#[async_trait]
impl Backend for Redis {
    async fn publish(&self, p: Publish<'_>) -> Result<Published, HistoryError> {
        let cluster = self.cluster();
        let plugin = &*p.scope.name;
        let keys = Keys::new(cluster, plugin, p.channel);
        let frame = cluster.recorded_frame(plugin, p.channel, p.except, &p.body);
        let positioned = matches!(p.body, Body::Positioned { .. });
        let (binary, before, after) = p.body.parts();
        let flag = |on: bool| if on { "1" } else { "0" };
        let meta_ttl = META_TTL.max(p.recording.ttl);
        let mut cmd = self.publish.call();
        cmd.arg(3)
            .arg(&keys.stream)
            .arg(&keys.meta)
            .arg(keys.idempotency(plugin, p.idempotency.map(|(k, _)| k)))
            .arg(p.recording.size)
            .arg(ms(p.recording.ttl))
            .arg(ms(meta_ttl))
            .arg(Position::new_epoch())
            .arg(flag(positioned))
            .arg(before)
            .arg(after)
            .arg(flag(binary))
            .arg(&keys.bus)
            .arg(frame.head.as_ref())
            .arg(frame.command)
            .arg(flag(p.idempotency.is_some()))
            .arg(p.idempotency.map_or(1, |(_, window)| ms(window)));
        let (position, duplicate): (String, i64) = self
            .redis
            .eval(&self.publish, &cmd)
            .await
            .map_err(HistoryError::Unavailable)?;
        let position: Position = position.parse().map_err(|_| bad_answer("publish"))?;
        let delivered = if duplicate == 1 {
            0
        } else {
            p.scope.reach(GroupKind::Channel, p.channel, p.except)
        };
        Ok(Published {
            position,
            delivered,
            duplicate: duplicate == 1,
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
        let keys = Keys::new(self.cluster(), plugin, channel);
        let meta_ttl = META_TTL.max(recording.ttl);
        let mut cmd = self.read.call();
        cmd.arg(2)
            .arg(&keys.stream)
            .arg(&keys.meta)
            .arg(since.map_or("", |s| s.epoch.as_str()))
            .arg(since.map_or(0, |s| s.offset.min(LUA_EXACT)))
            .arg(limit)
            .arg(ms(recording.ttl))
            .arg(Position::new_epoch())
            .arg(ms(meta_ttl));
        let answer: Value = self
            .redis
            .eval(&self.read, &cmd)
            .await
            .map_err(HistoryError::Unavailable)?;
        page(answer).ok_or_else(|| bad_answer("read"))
    }
}

/// The read script's answer as a page.
fn page(answer: Value) -> Option<Page> {
    let Value::Array(parts) = answer else {
        return None;
    };
    let [epoch, latest, recovered, entries] = <[Value; 4]>::try_from(parts).ok()?;
    let epoch: String = redis::from_redis_value(epoch).ok()?;
    let latest: String = redis::from_redis_value(latest).ok()?;
    let recovered: i64 = redis::from_redis_value(recovered).ok()?;
    let Value::Array(entries) = entries else {
        return None;
    };
    let entries = entries
        .into_iter()
        .map(|entry| {
            let (offset, body, binary): (String, Vec<u8>, String) =
                redis::from_redis_value(entry).ok()?;
            let msg = if binary == "1" {
                Message::Binary(body.into())
            } else {
                Message::Text(Utf8Bytes::try_from(bytes::Bytes::from(body)).ok()?)
            };
            Some(Entry {
                position: Position::new(epoch.clone(), offset.parse().ok()?),
                msg,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Page {
        entries,
        latest: Position::new(epoch, latest.parse().ok()?),
        recovered: recovered == 1,
    })
}
