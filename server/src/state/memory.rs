//! State in this process: each plugin's entries in an ordered map behind
//! its own lock, so every operation is atomic for the plugin and plugins
//! never wait on each other. Gone when the process ends; one node only.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::table::{self, Stored, Table};
use super::{Backend, StateError, cost};

pub struct Memory {
    quota: u64,
    plugins: DashMap<Arc<str>, Arc<Mutex<Entries>>>,
    /// Deadlines are milliseconds since this instant: a monotonic clock,
    /// which a clock change cannot move.
    epoch: Instant,
}

/// One plugin's entries.
#[derive(Default)]
pub struct Entries {
    map: BTreeMap<String, Stored>,
    /// Deadline and key of every expiring entry, soonest first, so a purge
    /// touches only what expired.
    deadlines: BTreeSet<(u64, String)>,
    used: u64,
}

impl Memory {
    pub fn new(quota: u64) -> Memory {
        Memory {
            quota,
            plugins: DashMap::new(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs `op` on `plugin`'s entries under their lock, after dropping
    /// those that expired (the soonest deadlines first: nothing to do
    /// costs one look).
    fn with<R>(&self, plugin: &str, op: impl FnOnce(&mut Entries, u64) -> R) -> R {
        let entries = match self.plugins.get(plugin) {
            Some(e) => e.clone(),
            None => self.plugins.entry(Arc::from(plugin)).or_default().clone(),
        };
        let now = self.now();
        let mut entries = entries.lock().unwrap();
        let _ = entries.purge(now);
        op(&mut entries, now)
    }
}

#[async_trait]
impl Backend for Memory {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.with(plugin, |t, now| table::get(t, key, now))
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.with(plugin, |t, now| {
            let expires = table::expiry(ttl, now);
            table::set(t, key, value.as_deref(), expires, self.quota, now)
        })
    }

    async fn increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        self.with(plugin, |t, now| {
            table::increment(t, key, delta, self.quota, now)
        })
    }

    async fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        self.with(plugin, |t, now| {
            let (expected, new) = (expected.as_deref(), new.as_deref());
            table::compare_and_swap(t, key, expected, new, self.quota, now)
        })
    }

    async fn keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.with(plugin, |t, now| table::keys(t, prefix, limit, now))
    }
}

impl Entries {
    fn forget_deadline(&mut self, key: &str, old: Option<&Stored>) {
        if let Some(at) = old.and_then(|s| s.expires) {
            self.deadlines.remove(&(at, key.to_owned()));
        }
    }
}

impl Table for Entries {
    fn load(&mut self, key: &str) -> Result<Option<Stored>, StateError> {
        Ok(self.map.get(key).cloned())
    }

    fn store(&mut self, key: &str, value: &[u8], expires: Option<u64>) -> Result<(), StateError> {
        let stored = Stored {
            value: value.to_vec(),
            expires,
        };
        let old = self.map.insert(key.to_owned(), stored);
        self.forget_deadline(key, old.as_ref());
        if let Some(at) = expires {
            self.deadlines.insert((at, key.to_owned()));
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StateError> {
        let old = self.map.remove(key);
        self.forget_deadline(key, old.as_ref());
        Ok(())
    }

    fn used(&mut self) -> Result<u64, StateError> {
        Ok(self.used)
    }

    fn set_used(&mut self, bytes: u64) -> Result<(), StateError> {
        self.used = bytes;
        Ok(())
    }

    fn purge(&mut self, now: u64) -> Result<(), StateError> {
        while let Some((at, _)) = self.deadlines.first()
            && *at <= now
        {
            let (_, key) = self.deadlines.pop_first().expect("just seen");
            if let Some(old) = self.map.remove(&key) {
                self.used -= cost(&key, old.value.len());
            }
        }
        Ok(())
    }

    fn keys(&mut self, prefix: &str, limit: usize, now: u64) -> Result<Vec<String>, StateError> {
        Ok(self
            .map
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, s)| s.expires.is_none_or(|at| at > now))
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ENTRY_OVERHEAD;
    use super::*;

    fn quota_for(entries: u64, bytes: u64) -> u64 {
        entries * ENTRY_OVERHEAD + bytes
    }

    #[test]
    fn bounded_by_bytes_with_the_entry_overhead() {
        let mut t = Entries::default();
        let q = quota_for(2, 10);
        table::set(&mut t, "k", Some(&[0; 9]), None, q, 0).unwrap();
        assert_eq!(
            table::set(&mut t, "j", Some(&[0]), None, q, 0),
            Err(StateError::LimitReached)
        );
        table::set(&mut t, "k", Some(&[0; 2]), None, q, 0).unwrap();
        table::set(&mut t, "j", Some(&[0]), None, q, 0).unwrap();
        assert_eq!(t.used, 2 * ENTRY_OVERHEAD + 5);
        table::set(&mut t, "k", None, None, q, 0).unwrap();
        assert_eq!(table::get(&mut t, "k", 0).unwrap(), None);
        assert_eq!(t.used, ENTRY_OVERHEAD + 2);
    }

    #[test]
    fn tiny_entries_count_their_overhead() {
        let mut t = Entries::default();
        let q = 1 << 20;
        let mut stored = 0;
        while table::set(&mut t, &stored.to_string(), Some(b""), None, q, 0).is_ok() {
            stored += 1;
        }
        assert!(stored <= q / ENTRY_OVERHEAD, "{stored} entries");
        assert!(t.used <= q);
    }

    #[test]
    fn increments_count_from_zero_and_refuse_what_is_not_a_number() {
        let mut t = Entries::default();
        let q = 1 << 20;
        assert_eq!(table::increment(&mut t, "n", 5, q, 0), Ok(5));
        assert_eq!(table::increment(&mut t, "n", -7, q, 0), Ok(-2));
        assert_eq!(table::get(&mut t, "n", 0).unwrap(), Some(b"-2".to_vec()));
        table::set(&mut t, "s", Some(b"abc"), None, q, 0).unwrap();
        assert_eq!(
            table::increment(&mut t, "s", 1, q, 0),
            Err(StateError::NotANumber)
        );
        table::set(
            &mut t,
            "big",
            Some(i64::MAX.to_string().as_bytes()),
            None,
            q,
            0,
        )
        .unwrap();
        assert_eq!(
            table::increment(&mut t, "big", 1, q, 0),
            Err(StateError::NotANumber)
        );
        assert_eq!(
            table::get(&mut t, "big", 0).unwrap(),
            Some(i64::MAX.to_string().into_bytes()),
            "a refused increment changes nothing"
        );
        // The text grows with the number, and counts.
        let before = t.used;
        assert_eq!(
            table::increment(&mut t, "n", 1_000_002, q, 0),
            Ok(1_000_000)
        );
        assert_eq!(t.used, before + 5, "\"-2\" became \"1000000\"");
    }

    #[test]
    fn an_increment_past_the_quota_is_refused() {
        let mut t = Entries::default();
        let q = cost("n", 1);
        assert_eq!(table::increment(&mut t, "n", 9, q, 0), Ok(9));
        assert_eq!(
            table::increment(&mut t, "n", 1, q, 0),
            Err(StateError::LimitReached)
        );
        assert_eq!(table::get(&mut t, "n", 0).unwrap(), Some(b"9".to_vec()));
    }

    #[test]
    fn compare_and_swap_sets_only_over_the_expected_value() {
        let mut t = Entries::default();
        let q = 1 << 20;
        let cas = |t: &mut Entries, e: Option<&[u8]>, n: Option<&[u8]>, now| {
            table::compare_and_swap(t, "k", e, n, q, now).unwrap()
        };
        assert!(!cas(&mut t, Some(b"a"), Some(b"b"), 0), "absent is not a");
        assert!(cas(&mut t, None, Some(b"a"), 0), "absent, as expected");
        assert!(!cas(&mut t, None, Some(b"x"), 0), "present now");
        assert!(cas(&mut t, Some(b"a"), Some(b"b"), 0));
        assert_eq!(table::get(&mut t, "k", 0).unwrap(), Some(b"b".to_vec()));
        assert!(cas(&mut t, Some(b"b"), None, 0), "deletes");
        assert_eq!(table::get(&mut t, "k", 0).unwrap(), None);
        assert_eq!(t.used, 0);
        // An expired value is absent, and a swap makes the key permanent.
        table::set(&mut t, "k", Some(b"old"), Some(10), q, 0).unwrap();
        assert!(!cas(&mut t, Some(b"old"), Some(b"new"), 10));
        assert!(cas(&mut t, None, Some(b"new"), 10));
        assert_eq!(
            table::get(&mut t, "k", 1_000_000).unwrap(),
            Some(b"new".to_vec())
        );
        assert!(t.deadlines.is_empty());
    }

    #[test]
    fn expiring_entries_vanish_and_free_their_bytes() {
        let mut t = Entries::default();
        let q = quota_for(2, 4);
        table::set(&mut t, "a", Some(b"1"), Some(100), q, 0).unwrap();
        table::set(&mut t, "b", Some(b"2"), None, q, 0).unwrap();
        assert_eq!(table::get(&mut t, "a", 99).unwrap(), Some(b"1".to_vec()));
        assert_eq!(table::get(&mut t, "a", 100).unwrap(), None);
        assert_eq!(table::keys(&mut t, "", 10, 100).unwrap(), ["b"]);
        // Full until the expired entry is purged, which a write over the
        // quota does by itself.
        assert_eq!(t.used, q);
        table::set(&mut t, "c", Some(b"3"), None, q, 100).unwrap();
        assert_eq!(table::keys(&mut t, "", 10, 100).unwrap(), ["b", "c"]);
        assert_eq!(t.used, q);
        assert!(t.deadlines.is_empty());
        // A set makes an expiring key permanent; an increment keeps the expiry.
        table::set(&mut t, "b", Some(b"5"), Some(200), q, 100).unwrap();
        assert_eq!(table::increment(&mut t, "b", 1, q, 150), Ok(6));
        assert_eq!(table::get(&mut t, "b", 200).unwrap(), None);
        table::set(&mut t, "c", Some(b"7"), Some(300), q, 100).unwrap();
        table::set(&mut t, "c", Some(b"8"), None, q, 100).unwrap();
        assert_eq!(table::get(&mut t, "c", 1_000).unwrap(), Some(b"8".to_vec()));
        // An increment of an expired counter starts from 0, permanent.
        assert_eq!(table::increment(&mut t, "b", 1, q, 1_000), Ok(1));
        assert_eq!(table::get(&mut t, "b", 9_999).unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn keys_by_prefix_in_byte_order() {
        let mut t = Entries::default();
        let q = 1 << 20;
        for k in [
            "user:b", "user:a", "user", "users", "u", "room:1", "user:é", "user:z",
        ] {
            table::set(&mut t, k, Some(b"x"), None, q, 0).unwrap();
        }
        assert_eq!(
            table::keys(&mut t, "user:", 10, 0).unwrap(),
            ["user:a", "user:b", "user:z", "user:é"]
        );
        assert_eq!(
            table::keys(&mut t, "user:", 2, 0).unwrap(),
            ["user:a", "user:b"]
        );
        assert_eq!(
            table::keys(&mut t, "", 3, 0).unwrap(),
            ["room:1", "u", "user"]
        );
        assert!(table::keys(&mut t, "nobody", 3, 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn plugins_are_kept_apart_each_with_its_own_quota() {
        let m = Memory::new(cost("k", 1));
        m.set("a", "k", Some(b"1".to_vec()), None).await.unwrap();
        m.set("b", "k", Some(b"2".to_vec()), None).await.unwrap();
        assert_eq!(m.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.get("b", "k").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(m.keys("c", "", 10).await.unwrap(), Vec::<String>::new());
        assert_eq!(
            m.set("a", "j", Some(b"1".to_vec()), None).await,
            Err(StateError::LimitReached)
        );
    }
}
