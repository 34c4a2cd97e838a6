//! The Redis side of the cluster: the bus channels of `bus.rs` (the
//! publisher sends every frame on its own; the subscriber listens to the
//! control channel, this node's channel and the partitions it has members
//! in), per-node heartbeat keys (`{PREFIX}:node:N`, expiring after
//! `node_ttl`) listed in `{PREFIX}:nodes`, and node-number leases
//! (`{PREFIX}:lease:N`) that the heartbeat renews.
//!
//! Each loop reconnects by itself with backoff; none of them ever stops
//! the node. Errors are logged once per outage, not once per message.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::bus::{self, Bus};
use super::link::{self, IO_TIMEOUT, Link};
use super::{Cluster, NodeReport, now_ms};
use crate::registry::{MAX_NODE, Registry};

/// Deliveries sent to Redis in one round trip.
const MAX_BATCH: usize = 512;
/// Every this many heartbeats a node re-sends its whole presence, so an
/// announcement lost on the way (dropped while Redis was away, or past the
/// held bound) heals by itself.
const SNAPSHOT_EVERY: u64 = 10;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A node number no live node holds. A counter suggests the next one
/// (wrapping after [`MAX_NODE`]), and a lease (`SET NX` with the node's
/// token, expiring after `node_ttl`, renewed by every heartbeat) makes it
/// this node's: after thousands of restarts the counter comes round to
/// numbers still in use, and those are skipped.
pub async fn lease_node_number(
    backend: &link::Backend,
    settings: &crate::config::Cluster,
    token: &str,
) -> anyhow::Result<u64> {
    let mut conn = backend.connect().await?;
    let ttl = settings.node_ttl.as_millis() as u64;
    for _ in 0..MAX_NODE {
        let claimed = async {
            let n: u64 = conn.incr(bus::key(&settings.prefix, "node-seq"), 1).await?;
            let n = (n - 1) % MAX_NODE + 1;
            let lease: Option<String> = redis::cmd("SET")
                .arg(lease_key(&settings.prefix, n))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn)
                .await?;
            anyhow::Ok(lease.map(|_| n))
        };
        let claimed = timeout(IO_TIMEOUT, claimed)
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))??;
        if let Some(n) = claimed {
            return Ok(n);
        }
    }
    anyhow::bail!("all {MAX_NODE} node numbers are leased")
}

fn lease_key(prefix: &str, node: u64) -> String {
    bus::key(prefix, &format!("lease:{node}"))
}

/// Renews this node's lease, or takes it if it lapsed (Redis was away);
/// 0 when another node holds the number.
const RENEW_LEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

fn backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// Sends queued frames to the bus in pipelined batches. While Redis is
/// away, frames are dropped and counted: replaying them minutes later
/// would deliver stale messages out of order with live ones.
pub async fn publish_loop(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<(Bus, Bytes)>) {
    let mut link = Publisher {
        conn: None,
        next_attempt: Instant::now(),
        wait: MIN_BACKOFF,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let n = batch.len() as u64;
        // A connection that broke while idle only shows when used: one
        // immediate retry on a fresh connection, so a Redis restart does
        // not cost the first batch after it.
        let mut sent = link.send(&cluster, &batch, false).await;
        if sent.is_err() {
            sent = link.send(&cluster, &batch, true).await;
        }
        cluster.dequeued(batch.iter().map(|(_, frame)| frame.len()).sum());
        batch.clear();
        match sent {
            Ok(()) => {
                crate::metrics::cluster_frames().forwarded.inc_by(n);
                let lost = cluster.lost.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(
                        "cluster: {lost} deliveries and presence updates were not relayed to other nodes while Redis was unavailable"
                    );
                }
            }
            Err(e) => {
                if cluster.lost.load(Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "cluster: publishing to Redis failed ({e}); relaying paused until it is back"
                    );
                }
                cluster.count_lost(n);
            }
        }
    }
}

/// The publishing connection, reconnected with backoff.
struct Publisher {
    conn: Option<Link>,
    next_attempt: Instant,
    wait: Duration,
}

impl Publisher {
    async fn send(
        &mut self,
        cluster: &Cluster,
        frames: &[(Bus, Bytes)],
        retry: bool,
    ) -> anyhow::Result<()> {
        // The subscriber getting through means Redis is back: try at once,
        // or the presence snapshot it just queued would be dropped.
        let redis_back = cluster.connected.load(Ordering::Relaxed);
        if self.conn.is_none() && (retry || redis_back || Instant::now() >= self.next_attempt) {
            match cluster.backend.connect().await {
                Ok(c) => {
                    self.conn = Some(c);
                    self.wait = MIN_BACKOFF;
                }
                Err(e) => {
                    self.next_attempt = Instant::now() + self.wait;
                    self.wait = backoff(self.wait);
                    return Err(e);
                }
            }
        }
        let Some(c) = self.conn.as_mut() else {
            anyhow::bail!("waiting to reconnect");
        };
        let prefix = &cluster.settings.prefix;
        let named: Vec<(String, Bytes)> = frames
            .iter()
            .map(|(bus, frame)| (bus.name(prefix), frame.clone()))
            .collect();
        let sent = timeout(IO_TIMEOUT, c.publish(&named)).await;
        let sent = sent
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r);
        if sent.is_err() {
            self.conn = None;
        }
        sent
    }
}

/// Keeps this node subscribed to the control channel, its own channel and
/// the partitions it has members in, follows the wanted set as members
/// come and go, and hands every frame to [`Cluster::receive`]. On every
/// (re)subscription it sends a presence snapshot asking for everyone
/// else's, which repairs what an outage lost.
pub async fn subscribe_loop(
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    let mut wait = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let (inbox, frames) = link::inbox(cluster.settings.queue, cluster.settings.outbox_bytes);
        let fixed = [Bus::Control, Bus::Node(cluster.node)];
        let subscribed = async {
            let mut conn = cluster.backend.listen(inbox).await?;
            let names: Vec<String> = fixed
                .iter()
                .map(|b| b.name(&cluster.settings.prefix))
                .collect();
            conn.subscribe(&names).await?;
            anyhow::Ok(conn)
        };
        match tokio::select! { r = subscribed => r, _ = stop.cancelled() => return } {
            Ok(mut conn) => {
                let mut partitions = BTreeSet::new();
                if follow(&cluster, &mut conn, &mut partitions).await.is_ok() {
                    if failing {
                        tracing::info!("cluster: Redis is back; relaying resumed");
                    }
                    wait = MIN_BACKOFF;
                    cluster.connected.store(true, Ordering::Relaxed);
                    cluster.send_snapshot(&registry, true);
                    let subscription = Subscription {
                        conn,
                        partitions,
                        frames,
                    };
                    if let Ended::Stopped = subscription.run(&cluster, &registry, &stop).await {
                        return;
                    }
                }
                cluster.connected.store(false, Ordering::Relaxed);
                for frame in cluster.interests.lost() {
                    cluster.enqueue(Bus::Control, frame);
                }
                if !failing {
                    tracing::error!(
                        "cluster: lost the Redis subscription; serving locally and reconnecting (deliveries from other nodes are missed meanwhile)"
                    );
                }
                failing = true;
            }
            Err(e) => {
                if !failing {
                    tracing::error!("cluster: cannot subscribe to Redis ({e}); retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = backoff(wait);
    }
}

/// How a subscription ended.
enum Ended {
    Stopped,
    /// Redis went away or stopped answering.
    Lost,
}

/// A subscription that is up: its connection, the partitions it listens
/// to, and where its frames arrive.
struct Subscription {
    conn: Link,
    partitions: BTreeSet<u16>,
    frames: link::InboxRx,
}

impl Subscription {
    /// Delivers frames and follows the wanted set until the node stops or
    /// Redis is lost.
    async fn run(
        mut self,
        cluster: &Cluster,
        registry: &Registry,
        stop: &CancellationToken,
    ) -> Ended {
        let disconnected = self.frames.disconnected.clone();
        let mut ping = tokio::time::interval(cluster.settings.heartbeat);
        loop {
            tokio::select! {
                frame = self.frames.recv() => match frame {
                    Some(frame) => cluster.receive(registry, frame),
                    None => return Ended::Lost,
                },
                _ = cluster.interests.changed() => {
                    if follow(cluster, &mut self.conn, &mut self.partitions).await.is_err() {
                        return Ended::Lost;
                    }
                }
                _ = disconnected.notified() => return Ended::Lost,
                // A dead peer without a FIN only shows when a ping goes unanswered.
                _ = ping.tick() => {
                    let ping = redis::cmd("PING");
                    let pong = timeout(IO_TIMEOUT, ping.query_async::<redis::Value>(&mut self.conn));
                    if !matches!(pong.await, Ok(Ok(_))) {
                        return Ended::Lost;
                    }
                }
                _ = stop.cancelled() => return Ended::Stopped,
            }
        }
    }
}

/// Brings the partition subscriptions in line with the wanted set, then
/// releases the members and announcements that waited for it.
async fn follow(
    cluster: &Cluster,
    conn: &mut Link,
    partitions: &mut BTreeSet<u16>,
) -> anyhow::Result<()> {
    let (version, wanted) = cluster.interests.wanted();
    let prefix = &cluster.settings.prefix;
    let names = |set: Vec<&u16>| -> Vec<String> {
        set.into_iter()
            .map(|p| Bus::Partition(*p).name(prefix))
            .collect()
    };
    let add = names(wanted.difference(partitions).collect());
    let drop = names(partitions.difference(&wanted).collect());
    conn.subscribe(&add).await?;
    conn.unsubscribe(&drop).await?;
    *partitions = wanted;
    crate::metrics::metrics()
        .cluster_partitions
        .set(partitions.len() as i64);
    for frame in cluster.interests.caught_up(version) {
        cluster.enqueue(Bus::Control, frame);
    }
    Ok(())
}

/// Every `heartbeat`: writes this node's report (expiring after
/// `node_ttl`), reads the other live nodes' reports, and forgets the
/// presence of nodes whose report expired. On stop, signs off at once so
/// the others need not wait for the expiry.
pub async fn heartbeat_loop(
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    let prefix = cluster.settings.prefix.clone();
    let nodes_key = bus::key(&prefix, "nodes");
    let node_key = |n: u64| bus::key(&prefix, &format!("node:{n}"));
    let mut conn: Option<Link> = None;
    let mut tick = tokio::time::interval(cluster.settings.heartbeat);
    let mut beats = 0u64;
    let mut lease_lost = false;
    let mut partitions_differ = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        beats += 1;
        if beats.is_multiple_of(SNAPSHOT_EVERY) {
            cluster.send_snapshot(&registry, false);
        }
        if conn.is_none() {
            conn = cluster.backend.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let report = cluster.report(&registry);
        let beat = timeout(
            IO_TIMEOUT,
            beat(c, &cluster, &report, &nodes_key, &node_key),
        )
        .await;
        match beat {
            Ok(Ok((peers, leased))) => {
                let alive: HashSet<u64> = peers.iter().map(|p| p.node).collect();
                cluster.presence.keep_only(&alive);
                *cluster.peers.write().unwrap() = peers;
                if !leased && !lease_lost {
                    tracing::error!(
                        "cluster: node number {} is leased by another node; deliveries between the two are lost until one restarts",
                        cluster.node
                    );
                }
                lease_lost = !leased;
                let ours = cluster.settings.partitions;
                let others = cluster
                    .peers
                    .read()
                    .unwrap()
                    .iter()
                    .find(|p| p.partitions != ours)
                    .map(|p| (p.node, p.partitions));
                match others {
                    Some((node, theirs)) if !partitions_differ => {
                        tracing::error!(
                            "cluster: node {node} has cluster.partitions = {theirs}, this node {ours}: the two do not hear each other's channel and tag deliveries; give every node the same number"
                        );
                        partitions_differ = true;
                    }
                    None => partitions_differ = false,
                    _ => {}
                }
            }
            _ => conn = None,
        }
    }
    if let Some(c) = conn.as_mut() {
        let mut pipe = redis::pipe();
        pipe.del(node_key(cluster.node))
            .ignore()
            .zrem(&nodes_key, cluster.node)
            .ignore();
        if !lease_lost {
            pipe.del(lease_key(&prefix, cluster.node)).ignore();
        }
        let _ = timeout(IO_TIMEOUT, pipe.query_async::<()>(c)).await;
    }
}

/// One heartbeat round trip: renews the lease; returns the other live
/// nodes' reports and whether this node still holds its number.
async fn beat(
    c: &mut Link,
    cluster: &Cluster,
    report: &NodeReport,
    nodes_key: &str,
    node_key: &impl Fn(u64) -> String,
) -> anyhow::Result<(Vec<NodeReport>, bool)> {
    let ttl = cluster.settings.node_ttl.as_millis() as u64;
    let now = now_ms();
    let (leased, ids): (i64, Vec<u64>) = redis::pipe()
        .cmd("EVAL")
        .arg(RENEW_LEASE)
        .arg(1)
        .arg(lease_key(&cluster.settings.prefix, cluster.node))
        .arg(&cluster.lease)
        .arg(ttl)
        .pset_ex(node_key(cluster.node), serde_json::to_string(report)?, ttl)
        .ignore()
        .zadd(nodes_key, cluster.node, now)
        .ignore()
        // The list only says whom to look up; an expired report is what
        // marks a node dead. Old entries are pruned so the list stays small.
        .zrembyscore(nodes_key, 0, now.saturating_sub(ttl * 10))
        .ignore()
        .zrange(nodes_key, 0, -1)
        .query_async(c)
        .await?;
    let leased = leased == 1;
    let others: Vec<u64> = ids.into_iter().filter(|n| *n != cluster.node).collect();
    if others.is_empty() {
        return Ok((Vec::new(), leased));
    }
    let keys: Vec<String> = others.iter().map(|n| node_key(*n)).collect();
    let reports: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    let reports = reports
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_str(&r).ok())
        .collect();
    Ok((reports, leased))
}
