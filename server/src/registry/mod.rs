//! The connection registry: which connections each plugin owns, and the
//! channels, tags and key-value state of each plugin.
//!
//! Everything is partitioned by plugin name into a [`Scope`]; host calls
//! only ever see their own plugin's scope, which is what makes one plugin
//! unable to reach another's connections. Fan-out collects recipients under
//! a short lock and queues to them after releasing it.
//!
//! In a cluster, every delivery is also handed to the [`Relay`], which
//! carries it to the other nodes; they deliver it with [`Scope::deliver`],
//! which never relays again.

mod alarm;
mod connection;
mod cork;
mod queue;
mod relay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::Message;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

pub use alarm::AlarmTime;
pub use connection::{ConnId, Connection, SendError};
pub use cork::{Corked, Corks};
pub use queue::{Gate, Outbound, PushError, Queue, QueueLimits, QueueSender, queue};
pub use relay::{GroupKind, Interest, Listening, Relay, Target};

use crate::history::History;
use crate::state::{PluginState, Store};

type Members = HashMap<ConnId, Arc<Connection>>;

/// Connection ids carry their node's number above this bit, so ids are
/// unique across a cluster and stay below 2^53 (exact in JavaScript).
pub const NODE_SHIFT: u32 = 40;
/// The largest node number that keeps ids below 2^53.
pub const MAX_NODE: u64 = (1 << (53 - NODE_SHIFT)) - 1;

/// All plugins' scopes, and the source of connection ids.
pub struct Registry {
    scopes: DashMap<Arc<str>, Arc<Scope>>,
    next_id: AtomicU64,
    relay: Option<Arc<dyn Relay>>,
    /// Where every plugin's key-value state lives.
    state: Arc<Store>,
    /// Where every plugin's channel history lives.
    history: Arc<History>,
}

impl Registry {
    /// A registry for a single node: no relay, ids from 1, state in memory
    /// with the default limits.
    pub fn new() -> Arc<Registry> {
        let state = Store::memory(&crate::config::Limits::default());
        Registry::for_node(0, None, state, History::memory())
    }

    /// A registry for node `node` of a cluster, relaying through `relay`,
    /// with plugin state in `state` and channel history in `history`.
    pub fn for_node(
        node: u64,
        relay: Option<Arc<dyn Relay>>,
        state: Arc<Store>,
        history: Arc<History>,
    ) -> Arc<Registry> {
        debug_assert!(node <= MAX_NODE);
        Arc::new(Registry {
            scopes: DashMap::new(),
            next_id: AtomicU64::new((node << NODE_SHIFT) | 1),
            relay,
            state,
            history,
        })
    }

    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The scope of plugin `name`, created on first use. It outlives plugin
    /// versions, so state and connections carry across a reload.
    pub fn scope(&self, name: &str) -> Arc<Scope> {
        if let Some(scope) = self.scopes.get(name) {
            return scope.clone();
        }
        self.scopes
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let name: Arc<str> = Arc::from(name);
                let state = self.state.plugin(name.clone());
                Arc::new(Scope::new(name, state, self.relay.clone()))
            })
            .clone()
    }

    /// Where plugin state lives.
    pub fn state(&self) -> &Store {
        &self.state
    }

    /// Where channel history lives.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The scope of plugin `name` if it has one on this node.
    pub fn existing_scope(&self, name: &str) -> Option<Arc<Scope>> {
        self.scopes.get(name).map(|s| s.clone())
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
    /// The plugin's key-value state, in the server's backend.
    pub state: PluginState,
    relay: Option<Arc<dyn Relay>>,
}

impl Scope {
    fn new(name: Arc<str>, state: PluginState, relay: Option<Arc<dyn Relay>>) -> Scope {
        Scope {
            name,
            connections: DashMap::new(),
            channels: DashMap::new(),
            tags: DashMap::new(),
            state,
            relay,
        }
    }

    fn groups(&self, kind: GroupKind) -> &DashMap<String, Members> {
        match kind {
            GroupKind::Channel => &self.channels,
            GroupKind::Tag => &self.tags,
        }
    }

    fn join(&self, kind: GroupKind, conn: &Arc<Connection>, name: &str) -> Option<Listening> {
        let interest = Interest::Group(kind, name);
        match self.groups(kind).entry(name.to_owned()) {
            Entry::Occupied(mut members) => {
                let added = members.get_mut().insert(conn.id, conn.clone()).is_none();
                let relay = self.relay.as_ref().filter(|_| added)?;
                relay.listen(&self.name, interest)
            }
            Entry::Vacant(slot) => {
                slot.insert(HashMap::from([(conn.id, conn.clone())]));
                let relay = self.relay.as_ref()?;
                // Listening first: the cluster holds the announcement until
                // this node hears the group. Both happen while the entry is
                // locked, so announcements of one group are queued in the
                // order the group changed.
                let listening = relay.listen(&self.name, interest);
                relay.presence(&self.name, kind, name, true);
                listening
            }
        }
    }

    /// Returns whether the connection was a member.
    fn leave(&self, kind: GroupKind, name: &str, id: ConnId) -> bool {
        let Entry::Occupied(mut members) = self.groups(kind).entry(name.to_owned()) else {
            return false;
        };
        let removed = members.get_mut().remove(&id).is_some();
        if let Some(relay) = &self.relay {
            if members.get().is_empty() {
                relay.presence(&self.name, kind, name, false);
            }
            if removed {
                relay.unlisten(&self.name, Interest::Group(kind, name));
            }
        }
        if members.get().is_empty() {
            members.remove();
        }
        removed
    }

    /// Adds a connection. In a cluster, the answer is what to wait on
    /// before the connection may count on hearing broadcasts made on other
    /// nodes.
    pub fn insert(&self, conn: Arc<Connection>) -> Option<Listening> {
        self.connections.insert(conn.id, conn);
        self.relay.as_ref()?.listen(&self.name, Interest::Plugin)
    }

    /// Removes a connection from the scope and every channel and tag.
    pub fn remove(&self, id: ConnId) -> Option<Arc<Connection>> {
        let (_, conn) = self.connections.remove(&id)?;
        for channel in conn.channel_names() {
            self.leave(GroupKind::Channel, &channel, id);
        }
        for tag in conn.tag_names() {
            self.leave(GroupKind::Tag, &tag, id);
        }
        if let Some(relay) = &self.relay {
            relay.unlisten(&self.name, Interest::Plugin);
        }
        Some(conn)
    }

    /// Whether `id` belongs to another node of the cluster.
    pub fn is_remote(&self, id: ConnId) -> bool {
        self.relay.as_ref().is_some_and(|r| r.is_remote(id))
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

    /// Subscribes `conn` to `channel`. In a cluster, the answer is what to
    /// wait on before it may count on hearing the channel's publishes from
    /// other nodes.
    pub fn subscribe(&self, conn: &Arc<Connection>, channel: &str) -> Option<Listening> {
        conn.joined(GroupKind::Channel, channel);
        self.join(GroupKind::Channel, conn, channel)
    }

    /// Returns whether the connection was subscribed.
    pub fn unsubscribe(&self, conn: &Connection, channel: &str) -> bool {
        conn.left(GroupKind::Channel, channel);
        self.leave(GroupKind::Channel, channel, conn.id)
    }

    /// Tags `conn`; the answer is as [`subscribe`](Self::subscribe)'s.
    pub fn tag(&self, conn: &Arc<Connection>, tag: &str) -> Option<Listening> {
        conn.joined(GroupKind::Tag, tag);
        self.join(GroupKind::Tag, conn, tag)
    }

    pub fn untag(&self, conn: &Connection, tag: &str) -> bool {
        conn.left(GroupKind::Tag, tag);
        self.leave(GroupKind::Tag, tag, conn.id)
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

    /// Channels with members anywhere in the cluster: this node's, and
    /// those other nodes announced.
    pub fn cluster_channel_names(&self) -> Vec<String> {
        let mut names = self.channel_names();
        if let Some(relay) = &self.relay {
            let local: std::collections::HashSet<String> = names.iter().cloned().collect();
            let remote = relay.remote_names(&self.name, GroupKind::Channel);
            names.extend(remote.into_iter().filter(|n| !local.contains(n)));
        }
        names
    }

    /// A group's members on every node (this node's first).
    pub async fn cluster_members(&self, kind: GroupKind, name: &str) -> Vec<ConnId> {
        let mut members = member_ids(self.groups(kind), name);
        if let Some(relay) = &self.relay {
            members.extend(relay.remote_members(&self.name, kind, name).await);
        }
        members
    }

    /// Connections on every node: this node's now, the others' as of
    /// their last heartbeats.
    pub fn cluster_connection_count(&self) -> usize {
        let remote = self
            .relay
            .as_ref()
            .map_or(0, |r| r.remote_connections(&self.name));
        self.connection_count() + remote
    }

    pub fn tagged(&self, tag: &str) -> Vec<ConnId> {
        member_ids(&self.tags, tag)
    }

    /// Tag names with their member counts.
    pub fn tag_counts(&self) -> Vec<(String, usize)> {
        self.tags
            .iter()
            .map(|t| (t.key().clone(), t.value().len()))
            .collect()
    }

    /// Every group with members on this node, for a cluster's presence
    /// snapshot.
    pub fn groups_present(&self) -> Vec<(GroupKind, String)> {
        let channels = self
            .channels
            .iter()
            .map(|c| (GroupKind::Channel, c.key().clone()));
        let tags = self.tags.iter().map(|t| (GroupKind::Tag, t.key().clone()));
        channels.chain(tags).collect()
    }

    /// Queues `msg` to every subscriber of `channel` but `except`.
    pub fn publish(&self, channel: &str, msg: &Message, except: Option<ConnId>) -> u32 {
        self.send(Target::Channel(channel), msg, except)
    }

    pub fn send_to_tag(&self, tag: &str, msg: &Message, except: Option<ConnId>) -> u32 {
        self.send(Target::Tag(tag), msg, except)
    }

    /// Queues `msg` to every connection of the plugin but `except`.
    pub fn broadcast(&self, msg: &Message, except: Option<ConnId>) -> u32 {
        self.send(Target::All, msg, except)
    }

    /// Delivers here and, in a cluster, on every other node. The count is
    /// this node's recipients plus one for each other node with members in
    /// the group: remote deliveries happen later and are not counted
    /// exactly, but a count of 0 still means nobody anywhere.
    ///
    /// Channel and tag deliveries are relayed even when presence says no
    /// other node has members: a member who joined elsewhere a moment ago
    /// is already heard there (its node listens before announcing it), but
    /// its announcement may not have reached this node yet.
    pub fn send(&self, target: Target<'_>, msg: &Message, except: Option<ConnId>) -> u32 {
        let local = self.deliver(target, msg, except);
        let Some(relay) = &self.relay else {
            return local;
        };
        if let Target::Connections(ids) = target
            && !ids.iter().any(|id| relay.is_remote(*id))
        {
            return local;
        }
        relay.forward(&self.name, target, msg, except);
        let remote = target
            .group()
            .map_or(0, |(kind, name)| self.remote_nodes(kind, name));
        local + remote
    }

    /// How many a delivery to a group reaches, counted as [`send`]
    /// counts, without delivering: for a recorded publish, which reaches
    /// this node's members through the bus.
    ///
    /// [`send`]: Self::send
    pub fn reach(&self, kind: GroupKind, name: &str, except: Option<ConnId>) -> u32 {
        let local = self.groups(kind).get(name).map_or(0, |members| {
            let open = members
                .values()
                .filter(|c| Some(c.id) != except && !c.is_closing());
            open.count() as u32
        });
        local + self.remote_nodes(kind, name)
    }

    /// Other nodes with members in a group: what a delivery's count adds
    /// for them.
    fn remote_nodes(&self, kind: GroupKind, name: &str) -> u32 {
        self.relay
            .as_ref()
            .map_or(0, |relay| relay.remote_nodes(&self.name, kind, name))
    }

    /// Delivers on this node only: what a delivery relayed from another
    /// node does here.
    pub fn deliver(&self, target: Target<'_>, msg: &Message, except: Option<ConnId>) -> u32 {
        let targets = match target {
            Target::Channel(name) => collect(&self.channels, name),
            Target::Tag(name) => collect(&self.tags, name),
            Target::All => self.connections(),
            Target::Route(route) => {
                let on_route = self.connections.iter().filter(|c| *c.route == *route);
                on_route.map(|c| c.value().clone()).collect()
            }
            Target::Connections(ids) => ids.iter().filter_map(|id| self.get(*id)).collect(),
        };
        fan_out(targets, msg, except)
    }
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
fn fan_out(targets: Vec<Arc<Connection>>, msg: &Message, except: Option<ConnId>) -> u32 {
    let mut sent = 0;
    for conn in targets {
        if Some(conn.id) != except && conn.deliver(msg.clone()).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CloseCode;

    fn conn(reg: &Registry, plugin: &str) -> (Arc<Connection>, Queue) {
        Connection::new(
            reg.next_id(),
            Arc::from(plugin),
            Arc::from("/ws/x"),
            "/ws/x".into(),
            "127.0.0.1:1".parse().unwrap(),
            QueueLimits {
                items: 2,
                bytes: 1 << 20,
            },
        )
    }

    #[test]
    fn channels_are_per_plugin_and_cleaned_up() {
        let reg = Registry::new();
        let a = reg.scope("a");
        let b = reg.scope("b");
        let (c1, rx1) = conn(&reg, "a");
        let (c2, rx2) = conn(&reg, "b");
        a.insert(c1.clone());
        b.insert(c2.clone());
        a.subscribe(&c1, "lobby");
        b.subscribe(&c2, "lobby");
        assert_eq!(a.publish("lobby", &Message::text("hi"), None), 1);
        assert!(rx1.try_recv().is_some());
        assert!(
            rx2.try_recv().is_none(),
            "plugin b's subscriber must not get plugin a's publish"
        );
        assert!(a.get(c2.id).is_none(), "a cannot see b's connection");
        a.remove(c1.id);
        assert!(a.channel_names().is_empty());
    }

    /// Records what a cluster would be told.
    #[derive(Default)]
    struct Recorder {
        events: std::sync::Mutex<Vec<String>>,
    }

    impl Relay for Recorder {
        fn forward(&self, plugin: &str, target: Target<'_>, _: &Message, _: Option<ConnId>) {
            let event = format!("forward {plugin} {target:?}");
            self.events.lock().unwrap().push(event);
        }
        fn presence(&self, plugin: &str, kind: GroupKind, name: &str, present: bool) {
            let event = format!("presence {plugin} {kind:?} {name} {present}");
            self.events.lock().unwrap().push(event);
        }
        fn remote_nodes(&self, _: &str, _: GroupKind, name: &str) -> u32 {
            u32::from(name == "elsewhere")
        }
        fn is_remote(&self, id: ConnId) -> bool {
            id >> NODE_SHIFT != 5
        }
        fn listen(&self, plugin: &str, interest: Interest<'_>) -> Option<Listening> {
            let event = format!("listen {plugin} {interest:?}");
            self.events.lock().unwrap().push(event);
            None
        }
        fn unlisten(&self, plugin: &str, interest: Interest<'_>) {
            let event = format!("unlisten {plugin} {interest:?}");
            self.events.lock().unwrap().push(event);
        }
        fn remote_names(&self, _: &str, _: GroupKind) -> Vec<String> {
            vec!["elsewhere".into()]
        }
        fn remote_connections(&self, _: &str) -> usize {
            3
        }
        fn remote_members(
            &self,
            _: &str,
            _: GroupKind,
            name: &str,
        ) -> futures_util::future::BoxFuture<'static, Vec<ConnId>> {
            let members = if name == "elsewhere" {
                vec![1 << NODE_SHIFT]
            } else {
                vec![]
            };
            Box::pin(async move { members })
        }
    }

    #[test]
    fn a_cluster_hears_first_joins_last_leaves_every_member_and_every_delivery() {
        let recorder = Arc::new(Recorder::default());
        let reg = Registry::for_node(
            5,
            Some(recorder.clone()),
            Store::memory(&crate::config::Limits::default()),
            History::memory(),
        );
        let s = reg.scope("a");
        let (c1, _rx1) = conn(&reg, "a");
        let (c2, _rx2) = conn(&reg, "a");
        assert_eq!(c1.id >> NODE_SHIFT, 5, "ids carry the node number");
        let _ = s.insert(c1.clone());
        let _ = s.insert(c2.clone());
        let _ = s.subscribe(&c1, "lobby");
        let _ = s.subscribe(&c2, "lobby");
        let _ = s.subscribe(&c2, "lobby");
        let _ = s.tag(&c1, "user:x");
        assert_eq!(s.publish("lobby", &Message::text("hi"), None), 2);
        assert_eq!(s.publish("elsewhere", &Message::text("hi"), None), 1);
        // Local ids stay local; another node's id is relayed.
        s.send(Target::Connections(&[c1.id]), &Message::text("x"), None);
        s.send(
            Target::Connections(&[1 << NODE_SHIFT]),
            &Message::text("x"),
            None,
        );
        s.unsubscribe(&c1, "lobby");
        s.remove(c2.id);
        s.remove(c1.id);
        let events = recorder.events.lock().unwrap().clone();
        assert_eq!(
            events,
            [
                "listen a Plugin",
                "listen a Plugin",
                "listen a Group(Channel, \"lobby\")",
                "presence a Channel lobby true",
                // A second member listens too; subscribing twice does not.
                "listen a Group(Channel, \"lobby\")",
                "listen a Group(Tag, \"user:x\")",
                "presence a Tag user:x true",
                "forward a Channel(\"lobby\")",
                "forward a Channel(\"elsewhere\")",
                "forward a Connections([1099511627776])",
                "unlisten a Group(Channel, \"lobby\")",
                "presence a Channel lobby false",
                "unlisten a Group(Channel, \"lobby\")",
                "unlisten a Plugin",
                "presence a Tag user:x false",
                "unlisten a Group(Tag, \"user:x\")",
                "unlisten a Plugin",
            ]
        );
    }

    #[test]
    fn full_queue_closes_slow_consumer_without_blocking() {
        let reg = Registry::new();
        let s = reg.scope("a");
        let (c, _rx) = conn(&reg, "a");
        s.insert(c.clone());
        assert_eq!(s.broadcast(&Message::text("1"), None), 1);
        assert_eq!(s.broadcast(&Message::text("2"), None), 1);
        assert_eq!(s.broadcast(&Message::text("3"), None), 0);
        assert!(c.is_aborted());
        assert_eq!(c.close_reason().unwrap().code, CloseCode::POLICY);
        assert_eq!(c.send(Message::text("4")), Err(SendError::Closed));
    }
}
