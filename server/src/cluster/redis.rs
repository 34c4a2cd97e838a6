//! The Redis side of the cluster: one pub/sub channel (`PREFIX:bus`) that
//! every node publishes to and subscribes to, per-node heartbeat keys
//! (`PREFIX:node:N`, expiring after `node_ttl`) listed in `PREFIX:nodes`,
//! and node-number leases (`PREFIX:lease:N`) that the heartbeat renews.
//!
//! Each loop reconnects by itself with backoff; none of them ever stops
//! the node. Errors are logged once per outage, not once per message.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::{Cluster, NodeReport, now_ms};
use crate::registry::{MAX_NODE, Registry};

/// Deliveries sent to Redis in one pipelined round trip.
const MAX_BATCH: usize = 512;
/// How long one connection attempt or command may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Every this many heartbeats a node re-sends its whole presence, so an
/// announcement lost on the way (deliveries to a group are only relayed to
/// nodes known to have members) heals by itself.
const SNAPSHOT_EVERY: u64 = 10;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A node number no live node holds. A counter suggests the next one
/// (wrapping after [`MAX_NODE`]), and a lease (`SET NX` with the node's
/// token, expiring after `node_ttl`, renewed by every heartbeat) makes it
/// this node's: after thousands of restarts the counter comes round to
/// numbers still in use, and those are skipped.
pub async fn lease_node_number(
    client: &redis::Client,
    settings: &crate::config::Cluster,
    token: &str,
) -> anyhow::Result<u64> {
    let mut conn = connect(client).await?;
    let ttl = settings.node_ttl.as_millis() as u64;
    for _ in 0..MAX_NODE {
        let claimed = async {
            let n: u64 = conn
                .incr(format!("{}:node-seq", settings.prefix), 1)
                .await?;
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
    format!("{prefix}:lease:{node}")
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

async fn connect(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

fn backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// Sends queued frames to the bus in pipelined batches. While Redis is
/// away, frames are dropped and counted: replaying them minutes later
/// would deliver stale messages out of order with live ones.
pub async fn publish_loop(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Bytes>) {
    let mut link = Publisher {
        bus: cluster.bus(),
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
        cluster.dequeued(batch.iter().map(Bytes::len).sum());
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
    bus: String,
    conn: Option<MultiplexedConnection>,
    next_attempt: Instant,
    wait: Duration,
}

impl Publisher {
    async fn send(
        &mut self,
        cluster: &Cluster,
        frames: &[Bytes],
        retry: bool,
    ) -> anyhow::Result<()> {
        // The subscriber getting through means Redis is back: try at once,
        // or the presence snapshot it just queued would be dropped.
        let redis_back = cluster.connected.load(Ordering::Relaxed);
        if self.conn.is_none() && (retry || redis_back || Instant::now() >= self.next_attempt) {
            match connect(&cluster.client).await {
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
        let mut pipe = redis::pipe();
        for frame in frames {
            pipe.publish(&self.bus, frame.as_ref()).ignore();
        }
        let sent = pipe.query_async::<()>(c).await;
        if sent.is_err() {
            self.conn = None;
        }
        Ok(sent?)
    }
}

/// Keeps this node subscribed to the bus and hands every frame to
/// [`Cluster::receive`]. On every (re)subscription it sends a presence
/// snapshot asking for everyone else's, which repairs what an outage lost.
pub async fn subscribe_loop(
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    let bus = cluster.bus();
    let mut wait = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let subscribed = async {
            let mut pubsub = timeout(IO_TIMEOUT, cluster.client.get_async_pubsub()).await??;
            timeout(IO_TIMEOUT, pubsub.subscribe(&bus)).await??;
            anyhow::Ok(pubsub)
        };
        match tokio::select! { r = subscribed => r, _ = stop.cancelled() => return } {
            Ok(pubsub) => {
                if failing {
                    tracing::info!("cluster: Redis is back; relaying resumed");
                }
                wait = MIN_BACKOFF;
                cluster.connected.store(true, Ordering::Relaxed);
                cluster.send_snapshot(&registry, true);
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(cluster.settings.heartbeat);
                loop {
                    tokio::select! {
                        frame = stream.next() => match frame {
                            Some(msg) => cluster.receive(&registry, Bytes::copy_from_slice(msg.get_payload_bytes())),
                            None => break,
                        },
                        // A dead peer without a FIN only shows when a ping goes unanswered.
                        _ = ping.tick() => {
                            // A subscribed connection answers PING with an array, not "PONG".
                            let pong = timeout(IO_TIMEOUT, sink.ping::<redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                }
                cluster.connected.store(false, Ordering::Relaxed);
                tracing::error!(
                    "cluster: lost the Redis subscription; serving locally and reconnecting (deliveries from other nodes are missed meanwhile)"
                );
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
    let nodes_key = format!("{prefix}:nodes");
    let node_key = |n: u64| format!("{prefix}:node:{n}");
    let mut conn: Option<MultiplexedConnection> = None;
    let mut tick = tokio::time::interval(cluster.settings.heartbeat);
    let mut beats = 0u64;
    let mut lease_lost = false;
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
            conn = connect(&cluster.client).await.ok();
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
    c: &mut MultiplexedConnection,
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
