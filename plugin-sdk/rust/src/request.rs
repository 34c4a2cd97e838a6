//! Lookups on the handshake request, so listeners need not scan pair lists.

use crate::Request;

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Request {
    /// The first query parameter named `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        lookup(&self.query, key)
    }
    /// The route parameter `key`, e.g. `channel` for `/ws/chat/{channel}`.
    pub fn param(&self, key: &str) -> Option<&str> {
        lookup(&self.params, key)
    }
    /// A header by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn cookie(&self, name: &str) -> Option<&str> {
        lookup(&self.cookies, name)
    }
}
