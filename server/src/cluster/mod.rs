//! Scale-out: several wsgate nodes behind a load balancer acting as one.
//!
//! Each node keeps its own connections. What one node delivers (publish,
//! send to a tag, broadcast, the HTTP publish API) is relayed over Redis
//! pub/sub and repeated by the other nodes for their own members. A node
//! listens only to the partitions it has members in (`bus.rs`), so it
//! receives only deliveries it may have to make: the cluster's capacity
//! grows with its nodes. Connection ids carry their node's number, so they
//! are unique cluster-wide and a send to another node's connection goes to
//! that node alone. Nodes also announce which groups they have members in
//! (so a delivery count of 0 means nobody anywhere), only once they hear
//! those groups (`interest.rs`), and report their counts with heartbeats
//! (so admin info can count the whole cluster and forget a dead node).
//!
//! Redis being away never stops a node: local delivery goes on, what could
//! not be relayed meanwhile is dropped and counted (deliveries are not
//! replayed late), and the node reconnects by itself and re-exchanges
//! presence with the others.

mod bus;
mod envelope;
mod interest;
mod link;
mod on_demand;
mod presence;
mod queries;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Result;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::protocol::Message;
use crate::registry::{
    ConnId, GroupKind, Interest, Listening, MAX_NODE, NODE_SHIFT, Registry, Relay, Target,
};
use bus::{Bus, partition};
pub use bus::{channel_for, key};
use envelope::{Header, Seal, WireTarget};
use interest::{Announce, Interests};
pub use link::Link;
pub use on_demand::{Lua, OnDemand};
use presence::Presence;
use queries::Queries;

/// A delivery another node relayed.
struct Relayed<'a> {
    node: u64,
    plugin: &'a str,
    target: crate::registry::Target<'a>,
    except: Option<ConnId>,
}

/// A recorded message's way onto the bus (its channel's, [`bus_channel_of`]),
/// for the history script.
///
/// [`bus_channel_of`]: Cluster::bus_channel_of
pub struct RecordedFrame {
    /// The frame up to the position, which the script appends.
    pub head: Bytes,
    /// PUBLISH, or SPUBLISH on a Redis Cluster.
    pub command: &'static str,
}

/// One node's counts, as its heartbeat reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: u64,
    pub listen: String,
    pub started_ms: u64,
    /// Its `cluster.partitions`: nodes that disagree do not hear each other.
    #[serde(default)]
    pub partitions: u16,
    pub plugins: BTreeMap<String, PluginCounts>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PluginCounts {
    pub connections: usize,
    /// Channel name -> subscribers on the node.
    pub channels: BTreeMap<String, usize>,
    /// Distinct tags with members on the node.
    pub tags: usize,
}

pub struct Cluster {
    /// This node's number, the high bits of its connection ids.
    pub node: u64,
    settings: crate::config::Cluster,
    backend: link::Backend,
    /// Seals frames with `cluster.secret`, and checks them.
    seal: Seal,
    /// This node's claim on its number: the value of its lease key.
    lease: String,
    /// The largest message a node delivers from the bus, as from a client.
    max_message_size: usize,
    outbox: mpsc::Sender<(Bus, Bytes)>,
    /// The other end of `outbox`, until the publisher task takes it.
    outbox_rx: Mutex<Option<mpsc::Receiver<(Bus, Bytes)>>>,
    /// Bytes of the frames in `outbox` now (bounded by `outbox_bytes`).
    outbox_held: AtomicUsize,
    presence: Presence,
    /// Presence questions waiting for other nodes' answers.
    queries: Arc<Queries>,
    /// The partitions this node has members in.
    interests: Interests,
    /// The latest heartbeat reports of the other live nodes.
    peers: RwLock<Vec<NodeReport>>,
    /// Whether the bus subscription is up.
    connected: AtomicBool,
    /// Deliveries not relayed since the last time this was logged.
    lost: AtomicU64,
    listen: String,
    started_ms: u64,
}

fn now_ms() -> u64 {
    crate::unix_ms(SystemTime::now())
}

/// `url` without its password, for logs and admin info.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid url>".into(),
    }
}

/// Connects to the cluster named by `cluster.url`, if any. Only a
/// malformed URL fails: an unreachable Redis is logged and retried, so a
/// node can start (and serve locally) before Redis does.
pub async fn join(config: &Config) -> Result<Option<Arc<Cluster>>> {
    let Some(url) = &config.cluster.url else {
        return Ok(None);
    };
    let backend = link::Backend::new(&config.cluster, url)?;
    let settings = config.cluster.clone();
    let lease = {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random number generator");
        crate::runtime::hex(&bytes)
    };
    let node = match redis::lease_node_number(&backend, &settings, &lease).await {
        Ok(n) => n,
        Err(e) => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).expect("the OS random number generator");
            let n = u64::from_le_bytes(bytes) % MAX_NODE + 1;
            tracing::error!(
                "cluster: Redis at {} unreachable at start ({e}); serving locally, retrying; picked node number {n} at random",
                redact(url)
            );
            n
        }
    };
    tracing::info!(
        "cluster: node {node} via {} ({:?})",
        redact(url),
        settings.mode
    );
    let (outbox, rx) = mpsc::channel(settings.queue);
    Ok(Some(Arc::new(Cluster {
        node,
        seal: Seal::new(settings.secret.as_deref()),
        interests: Interests::new(settings.partitions),
        settings,
        backend,
        lease,
        max_message_size: config.limits.max_message_size,
        outbox,
        outbox_rx: Mutex::new(Some(rx)),
        outbox_held: AtomicUsize::new(0),
        presence: Presence::default(),
        queries: Arc::default(),
        peers: RwLock::new(Vec::new()),
        connected: AtomicBool::new(false),
        lost: AtomicU64::new(0),
        listen: config.listen.to_string(),
        started_ms: now_ms(),
    })))
}

impl Cluster {
    /// Starts relaying for `registry`: the publisher, the bus subscriber
    /// and the heartbeat. The returned task finishes once `stop` is
    /// cancelled and the node has signed off.
    pub fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rx = self.outbox_rx.lock().unwrap().take();
        let rx = rx.expect("a cluster is started once");
        tokio::spawn(redis::publish_loop(self.clone(), rx));
        tokio::spawn(redis::subscribe_loop(
            self.clone(),
            registry.clone(),
            stop.clone(),
        ));
        tokio::spawn(redis::heartbeat_loop(self.clone(), registry, stop))
    }

    /// Queues a frame for `bus`, unless the outbox is full in frames or in
    /// bytes (Redis is slow or away): then it is dropped and counted.
    fn enqueue(&self, bus: Bus, frame: Bytes) {
        let len = frame.len();
        let held = self.outbox_held.fetch_add(len, Ordering::AcqRel);
        if held + len > self.settings.outbox_bytes || self.outbox.try_send((bus, frame)).is_err() {
            self.outbox_held.fetch_sub(len, Ordering::AcqRel);
            self.count_lost(1);
        }
    }

    /// Frames of `bytes` in all left the outbox.
    fn dequeued(&self, bytes: usize) {
        self.outbox_held.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn count_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        crate::metrics::cluster_frames().dropped.inc_by(n);
    }

    /// Handles one frame from the bus.
    fn receive(&self, registry: &Registry, frame: Bytes) {
        let (header, msg) = match envelope::decode(&self.seal, frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                crate::metrics::cluster_frames().undecodable.inc();
                tracing::warn!("cluster: ignored a frame from the bus: {e}");
                return;
            }
        };
        match header {
            Header::Deliver { node, .. }
            | Header::Presence { node, .. }
            | Header::Snapshot { node, .. }
            | Header::Query { node, .. }
            | Header::Members { node, .. }
                if node == self.node => {}
            // Recorded messages reach their own node through the bus too:
            // the bus orders them.
            Header::Recorded {
                node,
                plugin,
                channel,
                except,
                ..
            } => {
                // The position the script put in may add to the message.
                let limit = self.max_message_size + crate::history::Position::MAX_TEXT;
                let target = crate::registry::Target::Channel(&channel);
                let relayed = Relayed {
                    node,
                    plugin: &plugin,
                    target,
                    except,
                };
                self.deliver_here(registry, relayed, msg, limit);
            }
            Header::Query {
                node,
                id,
                plugin,
                kind,
                name,
            } => {
                let members = registry
                    .existing_scope(&plugin)
                    .map(|s| match kind {
                        GroupKind::Channel => s.subscribers(&name),
                        GroupKind::Tag => s.tagged(&name),
                    })
                    .unwrap_or_default();
                let header = Header::Members {
                    node: self.node,
                    id,
                    members,
                };
                self.enqueue(Bus::Node(node), envelope::encode(&self.seal, &header, b""));
            }
            Header::Members { node, id, members } => self.queries.answer(id, node, members),
            Header::Deliver {
                node,
                plugin,
                target,
                except,
                ..
            } => {
                let target = target.as_target();
                let relayed = Relayed {
                    node,
                    plugin: &plugin,
                    target,
                    except,
                };
                self.deliver_here(registry, relayed, msg, self.max_message_size);
            }
            Header::Presence {
                node,
                plugin,
                kind,
                name,
                present,
            } => self.presence.set(node, &plugin, kind, &name, present),
            Header::Snapshot {
                node,
                reply,
                groups,
            } => {
                self.presence.replace_node(node, &groups);
                if reply {
                    self.send_snapshot(registry, false);
                }
            }
        }
    }

    /// Delivers what another node relayed to this node's members. Nodes
    /// check sizes before relaying, so a message over `limit` is from a
    /// node with other limits, or not from a node: refused.
    fn deliver_here(
        &self,
        registry: &Registry,
        r: Relayed<'_>,
        msg: Option<Message>,
        limit: usize,
    ) {
        crate::metrics::cluster_frames().received.inc();
        let (Some(scope), Some(msg)) = (registry.existing_scope(r.plugin), msg) else {
            return;
        };
        let node = r.node;
        if msg.len() > limit {
            crate::metrics::cluster_frames().refused.inc();
            tracing::warn!(
                "cluster: refused a {}-byte delivery from node {node}: over limits.max_message_size",
                msg.len()
            );
            return;
        }
        scope.deliver(r.target, &msg, r.except);
    }

    /// Tells the other nodes every group this node has members in.
    fn send_snapshot(&self, registry: &Registry, reply: bool) {
        let groups = registry
            .scopes()
            .iter()
            .flat_map(|s| {
                s.groups_present()
                    .into_iter()
                    .map(|(kind, name)| (s.name.to_string(), kind, name))
            })
            .collect();
        let header = Header::Snapshot {
            node: self.node,
            reply,
            groups,
        };
        self.announce(envelope::encode(&self.seal, &header, b""));
    }

    /// Sends presence to every node, once this node hears what it
    /// announces.
    fn announce(&self, frame: Bytes) {
        match self.interests.announce(frame) {
            Announce::Now(frame) => self.enqueue(Bus::Control, frame),
            Announce::Held => {}
            Announce::Dropped => self.count_lost(1),
        }
    }

    /// The bus channel of `plugin`'s channel `channel`: its history keys
    /// take its name as their hash tag, to share its slot.
    pub fn bus_channel_of(&self, plugin: &str, channel: &str) -> String {
        let interest = Interest::Group(GroupKind::Channel, channel);
        Bus::Partition(self.partition(plugin, interest)).name(&self.settings.prefix)
    }

    /// What the history script needs to publish a recorded message to
    /// the bus.
    pub fn recorded_frame(
        &self,
        plugin: &str,
        channel: &str,
        except: Option<ConnId>,
        body: &crate::history::Body,
    ) -> RecordedFrame {
        let (binary, before, after) = body.parts();
        let at = matches!(body, crate::history::Body::Positioned { .. }).then_some(before.len());
        let header = Header::Recorded {
            node: self.node,
            plugin: plugin.to_owned(),
            channel: channel.to_owned(),
            except,
            binary,
            at,
        };
        RecordedFrame {
            head: envelope::recorded_head(&self.seal, &header, before, after),
            command: match self.settings.mode {
                crate::config::RedisMode::Cluster => "SPUBLISH",
                _ => "PUBLISH",
            },
        }
    }

    /// The partition a delivery to `interest` of `plugin` travels on.
    fn partition(&self, plugin: &str, interest: Interest<'_>) -> u16 {
        partition(plugin, interest, self.settings.partitions)
    }

    fn report(&self, registry: &Registry) -> NodeReport {
        let plugins = registry
            .scopes()
            .iter()
            .map(|s| {
                let counts = PluginCounts {
                    connections: s.connection_count(),
                    channels: s.channel_counts().into_iter().collect(),
                    tags: s.tag_counts().len(),
                };
                (s.name.to_string(), counts)
            })
            .collect();
        NodeReport {
            node: self.node,
            listen: self.listen.clone(),
            started_ms: self.started_ms,
            partitions: self.settings.partitions,
            plugins,
        }
    }

    /// What `/admin/info` reports as `cluster`: this node's live counts
    /// plus the other nodes' latest heartbeats.
    pub fn info(&self, registry: &Registry) -> Value {
        let mut reports = vec![self.report(registry)];
        reports.extend(self.peers.read().unwrap().iter().cloned());
        let mut per_plugin: BTreeMap<&str, usize> = BTreeMap::new();
        let mut channels: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        for report in &reports {
            for (plugin, counts) in &report.plugins {
                *per_plugin.entry(plugin).or_default() += counts.connections;
                let plugin_channels = channels.entry(plugin).or_default();
                for (name, n) in &counts.channels {
                    *plugin_channels.entry(name).or_default() += n;
                }
            }
        }
        let tags: BTreeMap<&str, usize> = per_plugin
            .keys()
            .map(|plugin| {
                let mut names: BTreeSet<String> = self
                    .presence
                    .names(plugin, GroupKind::Tag)
                    .into_iter()
                    .collect();
                if let Some(scope) = registry.existing_scope(plugin) {
                    names.extend(scope.tag_counts().into_iter().map(|(n, _)| n));
                }
                (*plugin, names.len())
            })
            .collect();
        let nodes: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "node": r.node,
                    "listen": r.listen,
                    "started_ms": r.started_ms,
                    "connections": r.plugins.values().map(|p| p.connections).sum::<usize>(),
                })
            })
            .collect();
        json!({
            "node": self.node,
            "redis": if self.connected.load(Ordering::Relaxed) { "connected" } else { "disconnected" },
            "mode": self.settings.mode,
            "partitions": {
                "total": self.settings.partitions,
                "listening": self.interests.listening(),
            },
            "nodes": nodes,
            "connections": {
                "total": per_plugin.values().sum::<usize>(),
                "per_plugin": per_plugin,
            },
            "channels": channels,
            "tags": tags,
        })
    }

    /// A new connection to the cluster's Redis, for what else the nodes
    /// share through it (plugin state).
    pub async fn connect(&self) -> Result<Link> {
        self.backend.connect().await
    }

    /// `cluster.prefix`: the start of every Redis key the cluster uses.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Nodes in the cluster as last heard, this one included.
    pub fn node_count(&self) -> usize {
        self.peers.read().unwrap().len() + 1
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

impl Relay for Cluster {
    /// A delivery to a group (or to the whole plugin) goes to its
    /// partition; one to given connections goes to each of their nodes
    /// with only that node's ids.
    fn forward(&self, plugin: &str, target: Target<'_>, msg: &Message, except: Option<ConnId>) {
        let (binary, body) = msg.payload();
        let frame = |target: Target<'_>| {
            let header = Header::Deliver {
                node: self.node,
                plugin: plugin.to_owned(),
                target: WireTarget::from_target(target),
                except,
                binary,
            };
            envelope::encode(&self.seal, &header, body)
        };
        match Interest::of(target) {
            Some(interest) => {
                let bus = Bus::Partition(self.partition(plugin, interest));
                self.enqueue(bus, frame(target));
            }
            None => {
                let Target::Connections(ids) = target else {
                    unreachable!("only deliveries to connections have no interest")
                };
                let mut per_node: BTreeMap<u64, Vec<ConnId>> = BTreeMap::new();
                for id in ids.iter().filter(|id| self.is_remote(**id)) {
                    per_node.entry(id >> NODE_SHIFT).or_default().push(*id);
                }
                for (node, ids) in per_node {
                    self.enqueue(Bus::Node(node), frame(Target::Connections(&ids)));
                }
            }
        }
    }

    fn presence(&self, plugin: &str, kind: GroupKind, name: &str, present: bool) {
        let header = Header::Presence {
            node: self.node,
            plugin: plugin.to_owned(),
            kind,
            name: name.to_owned(),
            present,
        };
        self.announce(envelope::encode(&self.seal, &header, b""));
    }

    fn remote_nodes(&self, plugin: &str, kind: GroupKind, name: &str) -> u32 {
        self.presence.nodes_with(plugin, kind, name)
    }

    fn is_remote(&self, id: ConnId) -> bool {
        id >> NODE_SHIFT != self.node
    }

    fn listen(&self, plugin: &str, interest: Interest<'_>) -> Option<Listening> {
        let version = self.interests.add(self.partition(plugin, interest))?;
        Some(self.interests.wait(version))
    }

    fn unlisten(&self, plugin: &str, interest: Interest<'_>) {
        self.interests.remove(self.partition(plugin, interest));
    }

    fn remote_names(&self, plugin: &str, kind: GroupKind) -> Vec<String> {
        self.presence.names(plugin, kind)
    }

    fn remote_connections(&self, plugin: &str) -> usize {
        let peers = self.peers.read().unwrap();
        peers
            .iter()
            .filter_map(|p| p.plugins.get(plugin))
            .map(|counts| counts.connections)
            .sum()
    }

    fn remote_members(
        &self,
        plugin: &str,
        kind: GroupKind,
        name: &str,
    ) -> futures_util::future::BoxFuture<'static, Vec<ConnId>> {
        let nodes = self.presence.nodes(plugin, kind, name);
        if nodes.is_empty() {
            return Box::pin(std::future::ready(Vec::new()));
        }
        let (id, answer) = self.queries.ask(nodes.clone());
        let header = Header::Query {
            node: self.node,
            id,
            plugin: plugin.to_owned(),
            kind,
            name: name.to_owned(),
        };
        let frame = envelope::encode(&self.seal, &header, b"");
        for node in nodes {
            self.enqueue(Bus::Node(node), frame.clone());
        }
        let queries = self.queries.clone();
        let wait = self.settings.presence_timeout;
        Box::pin(async move {
            if let Ok(Ok(members)) = tokio::time::timeout(wait, answer).await {
                return members;
            }
            let (members, silent) = queries.give_up(id);
            tracing::warn!(
                "cluster: nodes {silent:?} did not list their members within cluster.presence_timeout ({wait:?}); answered without them"
            );
            members
        })
    }
}
