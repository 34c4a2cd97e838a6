//! A plugin's key-value state (the application scope), bounded in bytes so
//! a plugin cannot grow the host without limit. Each entry counts what it
//! really costs: its key and value plus [`ENTRY_OVERHEAD`], so a million
//! tiny entries are not free.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    LimitReached,
}

/// What one entry costs beyond its key and value bytes: the map slot and
/// the two allocations' headers, rounded up.
pub const ENTRY_OVERHEAD: usize = 64;

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

pub struct StateStore {
    limit: usize,
    inner: Mutex<(HashMap<String, Vec<u8>>, usize)>,
}

impl StateStore {
    pub fn new(limit: usize) -> StateStore {
        StateStore {
            limit,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().unwrap().0.get(key).cloned()
    }

    /// Sets or (with `None`) deletes a key.
    pub fn set(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StateError> {
        let mut guard = self.inner.lock().unwrap();
        let (map, used) = &mut *guard;
        let old = map.get(key).map_or(0, |v| cost(key, v));
        let new = value.as_ref().map_or(0, |v| cost(key, v));
        if *used - old + new > self.limit {
            return Err(StateError::LimitReached);
        }
        *used = *used - old + new;
        match value {
            Some(v) => map.insert(key.to_owned(), v),
            None => map.remove(key),
        };
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes() {
        let s = StateStore::new(2 * ENTRY_OVERHEAD + 10);
        s.set("k", Some(vec![0; 9])).unwrap();
        assert_eq!(s.set("j", Some(vec![0])), Err(StateError::LimitReached));
        s.set("k", Some(vec![0; 2])).unwrap();
        s.set("j", Some(vec![0])).unwrap();
        assert_eq!(s.bytes(), 2 * ENTRY_OVERHEAD + 5);
        s.set("k", None).unwrap();
        assert_eq!(s.get("k"), None);
        assert_eq!(s.bytes(), ENTRY_OVERHEAD + 2);
    }

    #[test]
    fn tiny_entries_count_their_overhead() {
        let s = StateStore::new(1 << 20);
        let mut stored = 0;
        while s.set(&stored.to_string(), Some(Vec::new())).is_ok() {
            stored += 1;
        }
        assert!(stored <= (1 << 20) / ENTRY_OVERHEAD, "{stored} entries");
    }
}
