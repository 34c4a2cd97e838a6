//! Keys remembered for a while, and at most so many of them: what an
//! `Idempotency-Key` needs (the publish API's own, and the in-memory
//! history's for recorded channels).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

pub struct Recent<T> {
    max: usize,
    entries: HashMap<String, (Instant, T)>,
    /// Keys by expiry, oldest first (entries replaced since are skipped).
    order: VecDeque<(Instant, String)>,
}

impl<T> Recent<T> {
    pub fn new(max: usize) -> Recent<T> {
        Recent {
            max,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets the keys that expired by `now`, and the oldest beyond `max`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now && self.order.len() <= self.max {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front seen above");
            if self
                .entries
                .get(&key)
                .is_some_and(|(expiry, _)| *expiry == at)
            {
                self.entries.remove(&key);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    /// Remembers `key` until `expiry`.
    pub fn insert(&mut self, key: String, expiry: Instant, value: T) {
        self.entries.insert(key.clone(), (expiry, value));
        self.order.push_back((expiry, key));
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_expire_and_are_capped() {
        let now = Instant::now();
        let mut r = Recent::new(2);
        r.insert("a".into(), now + Duration::from_secs(1), 1);
        r.insert("b".into(), now + Duration::from_secs(5), 2);
        r.expire(now);
        assert_eq!(r.get("a"), Some(&1));
        r.expire(now + Duration::from_secs(2));
        assert_eq!((r.get("a"), r.get("b")), (None, Some(&2)));
        r.insert("c".into(), now + Duration::from_secs(9), 3);
        r.insert("d".into(), now + Duration::from_secs(9), 4);
        r.expire(now);
        assert_eq!(r.get("b"), None, "the oldest beyond the cap goes");
        assert_eq!((r.get("c"), r.get("d")), (Some(&3), Some(&4)));
    }
}
