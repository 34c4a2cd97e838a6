//! The connection registry: which connections each plugin owns, and the
//! channels, tags and key-value state of each plugin.
//!
//! Everything is partitioned by plugin name into a [`Scope`]; host calls
//! only ever see their own plugin's scope, which is what makes one plugin
//! unable to reach another's connections. Fan-out collects recipients under
//! a short lock and queues to them after releasing it.

mod connection;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::Message;
use dashmap::DashMap;

pub use connection::{ConnId, Connection, Outbound, SLOW_CONSUMER, SendError};
pub use state::{StateError, StateStore};

type Members = HashMap<ConnId, Arc<Connection>>;

/// All plugins' scopes, and the source of connection ids.
#[derive(Default)]
pub struct Registry {
    scopes: DashMap<Arc<str>, Arc<Scope>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            scopes: DashMap::new(),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The scope of plugin `name`, created on first use. It outlives plugin
    /// versions, so state and connections carry across a reload.
    pub fn scope(&self, name: &str, state_limit: usize) -> Arc<Scope> {
        if let Some(scope) = self.scopes.get(name) {
            return scope.clone();
        }
        self.scopes
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(Scope::new(Arc::from(name), state_limit)))
            .clone()
    }

    pub fn scopes(&self) -> Vec<Arc<Scope>> {
        self.scopes.iter().map(|s| s.value().clone()).collect()
    }

    pub fn connection_count(&self) -> usize {
        self.scopes.iter().map(|s| s.connection_count()).sum()
    }
}

/// One plugin's connections, channels, tags and state.
pub struct Scope {
    pub name: Arc<str>,
    connections: DashMap<ConnId, Arc<Connection>>,
    channels: DashMap<String, Members>,
    tags: DashMap<String, Members>,
    pub state: StateStore,
}

impl Scope {
    fn new(name: Arc<str>, state_limit: usize) -> Scope {
        Scope {
            name,
            connections: DashMap::new(),
            channels: DashMap::new(),
            tags: DashMap::new(),
            state: StateStore::new(state_limit),
        }
    }

    pub fn insert(&self, conn: Arc<Connection>) {
        self.connections.insert(conn.id, conn);
    }

    /// Removes a connection from the scope and every channel and tag.
    pub fn remove(&self, id: ConnId) -> Option<Arc<Connection>> {
        let (_, conn) = self.connections.remove(&id)?;
        for channel in conn.channel_names() {
            remove_member(&self.channels, &channel, id);
        }
        for tag in conn.tag_names() {
            remove_member(&self.tags, &tag, id);
        }
        Some(conn)
    }

    /// A connection of this plugin that is still open.
    pub fn get(&self, id: ConnId) -> Option<Arc<Connection>> {
        self.connections.get(&id).map(|c| c.clone())
    }

    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.connections.iter().map(|c| *c.key()).collect()
    }

    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.connections.iter().map(|c| c.value().clone()).collect()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn subscribe(&self, conn: &Arc<Connection>, channel: &str) {
        conn.channels.lock().unwrap().insert(channel.to_owned());
        self.channels
            .entry(channel.to_owned())
            .or_default()
            .insert(conn.id, conn.clone());
    }

    /// Returns whether the connection was subscribed.
    pub fn unsubscribe(&self, conn: &Connection, channel: &str) -> bool {
        conn.channels.lock().unwrap().remove(channel);
        remove_member(&self.channels, channel, conn.id)
    }

    pub fn tag(&self, conn: &Arc<Connection>, tag: &str) {
        conn.tags.lock().unwrap().insert(tag.to_owned());
        self.tags
            .entry(tag.to_owned())
            .or_default()
            .insert(conn.id, conn.clone());
    }

    pub fn untag(&self, conn: &Connection, tag: &str) -> bool {
        conn.tags.lock().unwrap().remove(tag);
        remove_member(&self.tags, tag, conn.id)
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.channels.iter().map(|c| c.key().clone()).collect()
    }

    /// Channel names with their subscriber counts.
    pub fn channel_counts(&self) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .map(|c| (c.key().clone(), c.value().len()))
            .collect()
    }

    pub fn subscribers(&self, channel: &str) -> Vec<ConnId> {
        member_ids(&self.channels, channel)
    }

    pub fn tagged(&self, tag: &str) -> Vec<ConnId> {
        member_ids(&self.tags, tag)
    }

    /// Queues `msg` to every subscriber of `channel` but `except`.
    pub fn publish(&self, channel: &str, msg: &Message, except: Option<ConnId>) -> u32 {
        fan_out(collect(&self.channels, channel), msg, except)
    }

    pub fn send_to_tag(&self, tag: &str, msg: &Message, except: Option<ConnId>) -> u32 {
        fan_out(collect(&self.tags, tag), msg, except)
    }

    /// Queues `msg` to every connection of the plugin but `except`.
    pub fn broadcast(&self, msg: &Message, except: Option<ConnId>) -> u32 {
        fan_out(self.connections(), msg, except)
    }
}

fn remove_member(groups: &DashMap<String, Members>, name: &str, id: ConnId) -> bool {
    let removed = match groups.get_mut(name) {
        Some(mut members) => members.remove(&id).is_some(),
        None => return false,
    };
    groups.remove_if(name, |_, members| members.is_empty());
    removed
}

fn member_ids(groups: &DashMap<String, Members>, name: &str) -> Vec<ConnId> {
    groups
        .get(name)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default()
}

fn collect(groups: &DashMap<String, Members>, name: &str) -> Vec<Arc<Connection>> {
    groups
        .get(name)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

/// Queues one shared message to many connections. The message's bytes are
/// reference-counted, so each recipient costs a pointer copy; a slow or
/// closing recipient is skipped, never waited for.
pub fn fan_out(targets: Vec<Arc<Connection>>, msg: &Message, except: Option<ConnId>) -> u32 {
    let mut sent = 0;
    for conn in targets {
        if Some(conn.id) != except && conn.send(msg.clone()).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(
        reg: &Registry,
        plugin: &str,
    ) -> (Arc<Connection>, tokio::sync::mpsc::Receiver<Outbound>) {
        Connection::new(
            reg.next_id(),
            Arc::from(plugin),
            Arc::from("/ws/x"),
            "/ws/x".into(),
            "127.0.0.1:1".parse().unwrap(),
            2,
        )
    }

    #[test]
    fn channels_are_per_plugin_and_cleaned_up() {
        let reg = Registry::new();
        let a = reg.scope("a", 1024);
        let b = reg.scope("b", 1024);
        let (c1, mut rx1) = conn(&reg, "a");
        let (c2, mut rx2) = conn(&reg, "b");
        a.insert(c1.clone());
        b.insert(c2.clone());
        a.subscribe(&c1, "lobby");
        b.subscribe(&c2, "lobby");
        assert_eq!(a.publish("lobby", &Message::text("hi"), None), 1);
        assert!(rx1.try_recv().is_ok());
        assert!(
            rx2.try_recv().is_err(),
            "plugin b's subscriber must not get plugin a's publish"
        );
        assert!(a.get(c2.id).is_none(), "a cannot see b's connection");
        a.remove(c1.id);
        assert!(a.channel_names().is_empty());
    }

    #[test]
    fn full_queue_closes_slow_consumer_without_blocking() {
        let reg = Registry::new();
        let s = reg.scope("a", 1024);
        let (c, _rx) = conn(&reg, "a");
        s.insert(c.clone());
        assert_eq!(s.broadcast(&Message::text("1"), None), 1);
        assert_eq!(s.broadcast(&Message::text("2"), None), 1);
        assert_eq!(s.broadcast(&Message::text("3"), None), 0);
        assert!(c.shutdown.is_cancelled());
        assert_eq!(c.close_reason().unwrap().0, SLOW_CONSUMER);
        assert_eq!(c.send(Message::text("4")), Err(SendError::Closed));
    }
}
