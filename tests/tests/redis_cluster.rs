//! wsgate nodes over a Redis Cluster (`mode = "cluster"`: sharded pub/sub
//! over the cluster's masters) and over a Redis reached by TLS
//! (`rediss://` with `tls_ca`): the cross-node flows of tests/cluster.rs.

use std::time::Duration;

use wsgate_tests::cluster::*;
use wsgate_tests::redis::{Redis, RedisCluster};
use wsgate_tests::*;

/// `[cluster]` settings for a Redis Cluster.
const CLUSTER_MODE: &str = "mode = \"cluster\"\n";

/// `[cluster]` settings for a TLS Redis.
fn tls_settings(redis: &Redis) -> String {
    format!("tls_ca = \"{}\"\n", redis.ca_path().display())
}

/// The shard channels each master of `cluster` carries (PUBSUB
/// SHARDCHANNELS), by port.
async fn shard_channels(cluster: &RedisCluster) -> Vec<(u16, Vec<String>)> {
    let mut all = Vec::new();
    for port in cluster.ports() {
        let reply = cluster.command(port, &[b"PUBSUB", b"SHARDCHANNELS"]).await;
        assert!(
            !reply.starts_with('-'),
            "PUBSUB SHARDCHANNELS on {port}: {reply}"
        );
        let channels = reply
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        all.push((port, channels));
    }
    all
}

/// The harness itself: three masters, all slots served, sharded pub/sub
/// answered. Needs no wsgate.
#[tokio::test]
async fn the_harness_starts_a_three_master_cluster() {
    let cluster = RedisCluster::start().await;
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert!(cluster.url().ends_with(&format!(":{}", ports[0])));
    for &port in &ports {
        let info = cluster.command(port, &[b"CLUSTER", b"INFO"]).await;
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_size:3"), "{port}: {info}");
        assert!(
            info.contains("cluster_slots_assigned:16384"),
            "{port}: {info}"
        );
    }
    // Each master owns a third of the slots; a shard channel's publish is
    // answered by its owner and redirected by the others.
    let slot: u16 = cluster
        .command(ports[0], &[b"CLUSTER", b"KEYSLOT", b"room-1"])
        .await
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let owner = ports[usize::from(slot) * 3 / 16384];
    for &port in &ports {
        let reply = cluster
            .command(port, &[b"SPUBLISH", b"room-1", b"hi"])
            .await;
        if port == owner {
            assert_eq!(reply, ":0", "no subscribers yet");
        } else {
            assert!(reply.starts_with("-MOVED"), "{port}: {reply}");
        }
    }
    let shard_channels = cluster.command(owner, &[b"PUBSUB", b"SHARDCHANNELS"]).await;
    assert_eq!(shard_channels, "", "nobody subscribed");
}

/// A TLS-only Redis: plain connections are refused, TLS ones trusting the
/// test CA are answered.
#[tokio::test]
async fn the_harness_starts_a_tls_only_redis() {
    let redis = Redis::start_tls().await;
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    assert!(redis.ca_path().exists());
    assert_eq!(redis.command(&[b"PING"]).await, "+PONG");
    assert_eq!(redis.command(&[b"SET", b"k", b"v"]).await, "+OK");
    assert_eq!(redis.command(&[b"GET", b"k"]).await, "v");
    // redis-cli (when it has TLS, as Debian's does) agrees.
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(redis.ca_path())
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "ping"])
        .output();
    if let Ok(out) = out {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "PONG",
            "{out:?}"
        );
    }
    // A plain client gets nothing.
    let plain = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
            .await
            .unwrap();
        tcp.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0; 64];
        tcp.read(&mut buf).await.map(|n| buf[..n].to_vec())
    })
    .await;
    assert!(
        !matches!(&plain, Ok(Ok(b)) if b.starts_with(b"+PONG")),
        "a plain client was answered: {plain:?}"
    );
}

/// The flow of `cluster::chat_and_whispers_cross_nodes`, the nodes on a
/// three-master Redis Cluster.
#[tokio::test]
async fn chat_and_whispers_cross_nodes_over_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let (_dir, a, b) = two_nodes(&cluster.url(), CLUSTER_MODE).await;
    chat_and_whispers_cross(&a, &b).await;
}

/// The publish API of node A reaches node B's clients for every target,
/// the nodes on a Redis Cluster; cluster-wide counts add up.
#[tokio::test]
async fn publish_api_reaches_every_node_over_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let (_dir, a, b) = two_nodes(&cluster.url(), CLUSTER_MODE).await;
    publish_api_reaches_the_other_node(&a, &b).await;
}

/// A node killed without a word drops out of the other's counts and
/// presence within node_ttl + heartbeat, over a Redis Cluster too.
#[tokio::test]
async fn a_dead_node_drops_out_over_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let (_dir, a, mut b) = two_nodes(&cluster.url(), CLUSTER_MODE).await;
    let (mut alice, _bob) = alice_and_bob(&a, &b).await;
    a_dead_node_drops_out(&a, &mut b, &mut alice).await;
}

/// Thirty channels, one subscriber each on node B, each published to
/// through node A: every subscriber gets its own message and no other,
/// and the nodes' sharded subscriptions are spread over the masters.
#[tokio::test]
async fn many_channels_spread_over_the_shards() {
    const ROOMS: usize = 30;
    let cluster = RedisCluster::start().await;
    let (_dir, a, b) = two_nodes(&cluster.url(), CLUSTER_MODE).await;
    let mut subscribers = Vec::with_capacity(ROOMS);
    for i in 0..ROOMS {
        let mut ws = b
            .server
            .connect(&join(&format!("u{i}"), &format!("room-{i}")))
            .await;
        assert_eq!(
            next_json(&mut ws).await["message"],
            format!("u{i} connected")
        );
        subscribers.push(ws);
    }
    // Node A knows where every room has members.
    until_info(&a.server, "every room seen from node A", |i| {
        (0..ROOMS).all(|r| i["cluster"]["channels"]["chat"][format!("room-{r}")] == 1)
    })
    .await;

    for i in 0..ROOMS {
        let (status, body) = a
            .server
            .publish(
                &format!("/publish/chat/channel/room-{i}"),
                &[],
                &format!("for room-{i}"),
            )
            .await;
        assert_eq!(status, 200, "room-{i}: {body}");
        assert_eq!(body["delivered"], 1, "room-{i}: one other node has members");
    }
    for (i, ws) in subscribers.iter_mut().enumerate() {
        assert_eq!(next_text(ws).await, format!("for room-{i}"));
    }
    tokio::time::sleep(QUIET).await;
    for ws in &mut subscribers {
        assert_silent(ws, Duration::from_millis(20)).await;
    }

    // The nodes' subscriptions are sharded: more than one master carries
    // some (partitions are spread by slot, and every master owns slots).
    let spread = shard_channels(&cluster).await;
    let carrying = spread.iter().filter(|(_, c)| !c.is_empty()).count();
    eprintln!(
        "shard channels per master: {:?}",
        spread.iter().map(|(p, c)| (p, c.len())).collect::<Vec<_>>()
    );
    assert!(
        carrying >= 2,
        "sharded subscriptions on {carrying} master(s) only: {spread:?}\n{}",
        b.server.logs()
    );
}

/// Two nodes on a TLS-only Redis (`rediss://` and the CA that signed its
/// certificate): cross-node chat works.
#[tokio::test]
async fn a_node_reaches_redis_over_tls() {
    let redis = Redis::start_tls().await;
    let (_dir, a, b) = two_nodes(&redis.url(), &tls_settings(&redis)).await;
    let (mut alice, mut bob) = alice_and_bob(&a, &b).await;
    send_text(&mut alice, "over TLS").await;
    assert_eq!(next_json(&mut bob).await["message"], "over TLS");
    assert_eq!(next_json(&mut alice).await["message"], "over TLS");
    send_text(&mut bob, r#"{"to":"alice","message":"psst"}"#).await;
    assert_eq!(next_json(&mut alice).await["message"], "psst");
    assert_eq!(next_json(&mut bob).await["message"], "psst");
}
