//! What each state operation means, once, for the backends that can run
//! it as plain code inside one atomic step: memory (a plugin's map, locked)
//! and SQLite (an open transaction). A backend supplies a [`Table`], the
//! plugin's entries with their byte count; the functions here decide:
//! what is live, what an increment parses, when a write is over the quota
//! and what it costs. Redis runs the same rules as Lua scripts.
//!
//! Times are milliseconds on the backend's clock (memory: since the process
//! started; SQLite: since the Unix epoch, so deadlines survive a restart).
//! An entry is live while its deadline is later than now. Expired entries
//! still count against the quota until purged: a write that would go over
//! it purges the plugin's expired entries first.

use std::time::Duration;

use super::{StateError, cost};

/// An entry as stored, live or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    /// When it expires; `None`: never.
    pub expires: Option<u64>,
}

impl Stored {
    fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// One plugin's entries within one atomic step.
pub trait Table {
    /// The entry at `key`, expired or not.
    fn load(&mut self, key: &str) -> Result<Option<Stored>, StateError>;
    fn store(&mut self, key: &str, value: &[u8], expires: Option<u64>) -> Result<(), StateError>;
    fn remove(&mut self, key: &str) -> Result<(), StateError>;
    /// What the plugin's entries cost now, expired ones included.
    fn used(&mut self) -> Result<u64, StateError>;
    fn set_used(&mut self, bytes: u64) -> Result<(), StateError>;
    /// Removes every expired entry, and its cost from `used`.
    fn purge(&mut self, now: u64) -> Result<(), StateError>;
    /// Live keys starting with `prefix`, in byte order, at most `limit`.
    fn keys(&mut self, prefix: &str, limit: usize, now: u64) -> Result<Vec<String>, StateError>;
}

pub fn get(t: &mut impl Table, key: &str, now: u64) -> Result<Option<Vec<u8>>, StateError> {
    Ok(t.load(key)?.filter(|s| s.live(now)).map(|s| s.value))
}

/// When a key set at `now` with `ttl` expires, in the clock `now` is read
/// from.
pub fn expiry(ttl: Option<Duration>, now: u64) -> Option<u64> {
    ttl.map(|ttl| now + ttl.as_millis() as u64)
}

/// Sets `key` to `value` (`None` deletes it), expiring at `expires`.
pub fn set(
    t: &mut impl Table,
    key: &str,
    value: Option<&[u8]>,
    expires: Option<u64>,
    quota: u64,
    now: u64,
) -> Result<(), StateError> {
    let old = t.load(key)?;
    put(
        t,
        key,
        old.as_ref(),
        value.map(|v| (v, expires)),
        quota,
        now,
    )
}

/// Adds `delta` to the decimal i64 at `key`, keeping its expiry.
pub fn increment(
    t: &mut impl Table,
    key: &str,
    delta: i64,
    quota: u64,
    now: u64,
) -> Result<i64, StateError> {
    let old = t.load(key)?;
    let (current, expires) = match old.as_ref().filter(|s| s.live(now)) {
        Some(s) => (
            parse_counter(&s.value).ok_or(StateError::NotANumber)?,
            s.expires,
        ),
        None => (0, None),
    };
    let next = current.checked_add(delta).ok_or(StateError::NotANumber)?;
    let text = next.to_string();
    put(
        t,
        key,
        old.as_ref(),
        Some((text.as_bytes(), expires)),
        quota,
        now,
    )?;
    Ok(next)
}

/// Sets `key` to `new` (permanent; `None` deletes it) if its live value
/// is `expected`.
pub fn compare_and_swap(
    t: &mut impl Table,
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
    quota: u64,
    now: u64,
) -> Result<bool, StateError> {
    let old = t.load(key)?;
    let current = old.as_ref().filter(|s| s.live(now)).map(|s| &s.value[..]);
    if current != expected {
        return Ok(false);
    }
    put(t, key, old.as_ref(), new.map(|v| (v, None)), quota, now)?;
    Ok(true)
}

pub fn keys(
    t: &mut impl Table,
    prefix: &str,
    limit: usize,
    now: u64,
) -> Result<Vec<String>, StateError> {
    t.keys(prefix, limit, now)
}

/// Replaces `old` (the entry at `key` as loaded) with `new`, if the
/// plugin's entries stay within `quota` (after purging expired ones, if
/// that is what it takes). Shrinking is always allowed.
fn put(
    t: &mut impl Table,
    key: &str,
    old: Option<&Stored>,
    new: Option<(&[u8], Option<u64>)>,
    quota: u64,
    now: u64,
) -> Result<(), StateError> {
    let mut old_cost = old.map_or(0, |s| cost(key, s.value.len()));
    let new_cost = new.map_or(0, |(v, _)| cost(key, v.len()));
    let mut used = t.used()?;
    if new_cost > old_cost && used - old_cost + new_cost > quota {
        t.purge(now)?;
        // The purge may have taken `key` itself.
        old_cost = t.load(key)?.map_or(0, |s| cost(key, s.value.len()));
        used = t.used()?;
        if used - old_cost + new_cost > quota {
            return Err(StateError::LimitReached);
        }
    }
    match new {
        Some((value, expires)) => t.store(key, value, expires)?,
        None if old_cost > 0 => t.remove(key)?,
        None => {}
    }
    t.set_used(used - old_cost + new_cost)
}

/// A counter as Redis keeps one: the canonical decimal text of an i64 (no
/// sign but `-`, no leading zeros or spaces), so every backend agrees on
/// what is a number.
pub fn parse_counter(value: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == value).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_canonical_decimal_i64s() {
        for ok in [
            "0",
            "-1",
            "42",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_counter(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "",
            "+1",
            "01",
            "-0",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "x",
            "9223372036854775808",
        ] {
            assert_eq!(parse_counter(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_counter(&[0xff]), None);
    }
}
