//! Several wsgate processes as one cluster over a real, private
//! redis-server: cross-node chat and whispers, the publish API, cluster-wide
//! counts, a node killed, Redis restarted.

use std::time::{Duration, Instant};

use serde_json::Value;
use wsgate::registry::{GroupKind, Interest};
use wsgate_tests::redis::Redis;
use wsgate_tests::*;

/// Short heartbeats so node death shows within a test's patience.
const HEARTBEAT_MS: u64 = 200;
const NODE_TTL_MS: u64 = 1000;
/// Join notices are past once a socket has been quiet this long.
const QUIET: Duration = Duration::from_millis(300);

struct Node {
    server: Server,
    _config: tempfile::TempDir,
}

async fn node(plugins: &std::path::Path, redis: &Redis) -> Node {
    node_with(plugins, redis, "").await
}

/// A node with extra `[cluster]` settings.
async fn node_with(plugins: &std::path::Path, redis: &Redis, extra: &str) -> Node {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nurl = \"{}\"\nheartbeat = \"{HEARTBEAT_MS}ms\"\nnode_ttl = \"{NODE_TTL_MS}ms\"\n{extra}",
            redis.url()
        ),
    )
    .unwrap();
    let server = Server::start(plugins, &["--config", file.to_str().unwrap()]).await;
    Node {
        server,
        _config: config,
    }
}

/// Waits (at most 10 s) until `check` holds for the admin info of `server`.
async fn until_info(server: &Server, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, server, Duration::from_secs(10), || async {
        let info = server.admin_info("").await;
        check(&info).then_some(info)
    })
    .await
}

fn join(name: &str, channel: &str) -> String {
    format!("/ws/chat/{channel}?username={name}")
}

/// Two nodes with the chat plugin, both seeing each other.
async fn two_nodes(redis: &Redis) -> (tempfile::TempDir, Node, Node) {
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let a = node(dir.path(), redis).await;
    let b = node(dir.path(), redis).await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    (dir, a, b)
}

#[tokio::test]
async fn chat_and_whispers_cross_nodes() {
    let redis = Redis::start().await;
    let (_dir, a, b) = two_nodes(&redis).await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    let mut carol = b.server.connect(&join("carol", "kitchen")).await;
    // Alice, on node A, hears that bob joined on node B.
    let mut heard_bob = false;
    while !heard_bob {
        let msg = next_json(&mut alice).await;
        heard_bob = msg["message"] == "bob connected";
    }
    drain(&mut alice, QUIET).await;
    drain(&mut bob, QUIET).await;
    drain(&mut carol, QUIET).await;

    send_text(&mut alice, "hello from A").await;
    let msg = next_json(&mut bob).await;
    assert_eq!(
        (msg["from"].as_str(), msg["message"].as_str()),
        (Some("alice"), Some("hello from A"))
    );
    assert_eq!(next_json(&mut alice).await["message"], "hello from A");

    // A whisper to a user on the other node: delivered there, echoed to
    // the sender's own devices, and no "not in lobby" notice.
    send_text(&mut bob, r#"{"to":"alice","message":"psst"}"#).await;
    for ws in [&mut alice, &mut bob] {
        let msg = next_json(ws).await;
        assert_eq!(msg["from"], "bob");
        assert_eq!(msg["to"], "alice");
        assert_eq!(msg["private"], true);
    }
    assert_silent(&mut bob, Duration::from_millis(300)).await;
    assert_silent(&mut carol, Duration::from_millis(100)).await;

    // Nobody anywhere: the sender is told.
    send_text(&mut alice, r#"{"to":"nobody","message":"hi?"}"#).await;
    let notice = next_json(&mut alice).await;
    assert_eq!(notice["message"], "nobody is not in lobby");
    assert_silent(&mut bob, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn publish_api_and_counts_reach_the_whole_cluster_and_a_dead_node_drops_out() {
    let redis = Redis::start().await;
    let (_dir, a, mut b) = two_nodes(&redis).await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    let mut dave = b.server.connect(&join("dave", "attic")).await;
    let info = until_info(&a.server, "three connections", |i| {
        i["cluster"]["connections"]["total"] == 3
    })
    .await;
    assert_eq!(info["cluster"]["channels"]["chat"]["lobby"], 2);
    assert_eq!(info["cluster"]["channels"]["chat"]["attic"], 1);
    assert_eq!(info["cluster"]["tags"]["chat"], 3);
    assert_eq!(
        info["connections"]["total"], 1,
        "node-local count stays local"
    );
    drain(&mut alice, QUIET).await;
    drain(&mut bob, QUIET).await;
    drain(&mut dave, QUIET).await;

    // Every publish API target, sent to node A, reaches node B's clients.
    let (status, body) = a
        .server
        .publish("/publish/chat/channel/lobby", &[], "news")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["delivered"], 2,
        "alice here plus one other node with lobby members"
    );
    for ws in [&mut alice, &mut bob] {
        assert_eq!(next_text(ws).await, "news");
    }
    a.server
        .publish("/publish/chat/tag/user:dave@attic", &[], "for dave")
        .await;
    assert_eq!(next_text(&mut dave).await, "for dave");
    a.server
        .publish("/publish/chat/all?route=/ws/chat/{channel}", &[], "all")
        .await;
    for ws in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(next_text(ws).await, "all");
    }
    let on_b = b.server.admin_info("?connections=true").await;
    let ids: Vec<String> = on_b["connection_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let path = format!("/publish/chat/connections?ids={}", ids.join(","));
    let (_, body) = a.server.publish(&path, &[], "by id").await;
    assert_eq!(body["delivered"], 0, "none of them is on node A");
    assert_eq!(next_text(&mut bob).await, "by id");
    assert_eq!(next_text(&mut dave).await, "by id");
    assert_silent(&mut alice, Duration::from_millis(200)).await;

    // Node B dies without a word: within node_ttl + heartbeat it is gone
    // from A's counts and presence.
    b.server.kill();
    let killed = Instant::now();
    until_info(&a.server, "node B gone", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(1)
            && i["cluster"]["connections"]["total"] == 1
    })
    .await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after < Duration::from_millis(NODE_TTL_MS + 2 * HEARTBEAT_MS + 500),
        "took {gone_after:?}"
    );
    eprintln!("dead node dropped out of counts after {gone_after:?}");
    send_text(&mut alice, r#"{"to":"bob","message":"still there?"}"#).await;
    assert_eq!(
        next_json(&mut alice).await["message"],
        "bob is not in lobby"
    );
}

#[tokio::test]
async fn a_redis_restart_costs_only_cross_node_delivery_while_it_lasts() {
    let mut redis = Redis::start().await;
    let (dir, a, b) = two_nodes(&redis).await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut ann = a.server.connect(&join("ann", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    until_info(&a.server, "three connections", |i| {
        i["cluster"]["connections"]["total"] == 3
    })
    .await;
    drain(&mut alice, QUIET).await;
    drain(&mut ann, QUIET).await;
    drain(&mut bob, QUIET).await;

    redis.stop();
    until_info(&a.server, "redis disconnected", |i| {
        i["cluster"]["redis"] == "disconnected"
    })
    .await;
    // Local delivery goes on; node B misses what A says meanwhile.
    send_text(&mut alice, "during the outage").await;
    assert_eq!(next_json(&mut ann).await["message"], "during the outage");
    assert_eq!(next_json(&mut alice).await["message"], "during the outage");
    assert_silent(&mut bob, Duration::from_millis(300)).await;
    // A node can still join while Redis is away, and serves locally.
    let c = node(dir.path(), &redis).await;
    let mut cy = c.server.connect(&join("cy", "lobby")).await;
    assert!(next_json(&mut cy).await["message"] == "cy connected");

    redis.restart().await;
    for server in [&a.server, &b.server, &c.server] {
        until_info(server, "redis connected", |i| {
            i["cluster"]["redis"] == "connected"
        })
        .await;
    }
    // Relaying resumes by itself: keep talking until node B hears it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send_text(&mut alice, "after the outage").await;
        let heard = tokio::time::timeout(Duration::from_millis(300), next_json(&mut bob)).await;
        if heard.is_ok_and(|msg| msg["message"] == "after the outage") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relaying never resumed:\n{}",
            a.server.logs()
        );
    }
    // Presence was re-exchanged: a whisper from the new node reaches bob.
    drain(&mut cy, QUIET).await;
    drain(&mut bob, QUIET).await;
    send_text(&mut cy, r#"{"to":"bob","message":"welcome back"}"#).await;
    assert_eq!(next_json(&mut bob).await["message"], "welcome back");
    assert_eq!(next_json(&mut cy).await["message"], "welcome back");

    let logs = a.server.logs();
    assert!(logs.contains("lost the Redis subscription"), "{logs}");
    assert!(logs.contains("Redis is back"), "{logs}");
}

/// Alice on node `a` and bob on node `b`, both in the lobby, each known to
/// the other node, the join notices read.
async fn alice_and_bob(a: &Node, b: &Node) -> (Client, Client) {
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    until_info(&a.server, "both nodes", |i| {
        i["cluster"]["connections"]["total"] == 2
    })
    .await;
    drain(&mut alice, QUIET).await;
    drain(&mut bob, QUIET).await;
    (alice, bob)
}

/// Node numbers are leased: when the counter comes round to a number a
/// live node holds (after thousands of starts), the next one is taken.
#[tokio::test]
async fn a_live_nodes_number_is_never_handed_out_again() {
    let redis = Redis::start().await;
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let a = node(dir.path(), &redis).await;
    let info = a.server.admin_info("").await;
    let taken = info["cluster"]["node"].as_u64().unwrap();
    // The counter wraps round to the number node A holds.
    let before = (taken - 1).to_string();
    assert_eq!(
        redis
            .command(&[b"SET", b"{wsgate}:node-seq", before.as_bytes()])
            .await,
        "+OK"
    );
    let b = node(dir.path(), &redis).await;
    let other = b.server.admin_info("").await["cluster"]["node"]
        .as_u64()
        .unwrap();
    assert_ne!(other, taken, "two live nodes share a number");
    // And they still talk.
    let (mut alice, mut bob) = alice_and_bob(&a, &b).await;
    send_text(&mut alice, "hi").await;
    assert_eq!(next_json(&mut bob).await["message"], "hi");
}

/// What arrives on the bus is held to the node's own rules: nothing over
/// the message size is delivered, and with `cluster.secret` nothing that
/// is not sealed with it.
#[tokio::test]
async fn the_bus_delivers_only_what_a_node_itself_would() {
    let redis = Redis::start().await;
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let a = node(dir.path(), &redis).await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    drain(&mut alice, QUIET).await;
    let header = br#"{"t":"deliver","node":8000,"plugin":"chat","target":{"kind":"channel","name":"lobby"},"binary":false}"#;
    // Where the nodes listen for the lobby's deliveries.
    let lobby = wsgate::cluster::channel_for(
        "wsgate",
        "chat",
        Interest::Group(GroupKind::Channel, "lobby"),
        128,
    );
    let lobby = lobby.as_bytes();
    let mut huge = header.to_vec();
    huge.push(b'\n');
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    redis.command(&[b"PUBLISH", lobby, &huge]).await;
    let mut small = header.to_vec();
    small.extend_from_slice(b"\nforged but small");
    redis.command(&[b"PUBLISH", lobby, &small]).await;
    // The small one is delivered (no secret set), the huge one is not.
    assert_eq!(next_text(&mut alice).await, "forged but small");
    assert_silent(&mut alice, QUIET).await;
    let (_, metrics) = a.server.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("wsgate_cluster_frames_total{event=\"refused\"} 1"),
        "{metrics}"
    );

    // With a secret: nodes that share it talk; a frame without it is ignored.
    let redis = Redis::start().await;
    let secret = "secret = \"shared between the nodes\"\n";
    let a = node_with(dir.path(), &redis, secret).await;
    let b = node_with(dir.path(), &redis, secret).await;
    let (mut alice, mut bob) = alice_and_bob(&a, &b).await;
    redis.command(&[b"PUBLISH", lobby, &small]).await;
    assert_silent(&mut alice, QUIET).await;
    send_text(&mut bob, "sealed").await;
    assert_eq!(next_json(&mut alice).await["message"], "sealed");
    let info = a.server.admin_info("").await;
    assert_eq!(info["config"]["cluster"]["secret"], "<redacted>");
}

/// Redis hanging (not gone: connections stay open, nothing answers) while
/// a node keeps delivering: what waits for the bus is bounded in bytes.
#[tokio::test]
async fn a_hanging_redis_does_not_grow_the_outbox_without_bound() {
    let redis = Redis::start().await;
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let a = node_with(dir.path(), &redis, "outbox_bytes = 8388608\n").await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    drain(&mut alice, QUIET).await;
    redis.pause();
    let base = a.server.rss_kib();
    let body = "n".repeat(512 << 10);
    for _ in 0..100 {
        let (status, _) = a
            .server
            .publish("/publish/chat/channel/lobby", &[], &body)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            next_text(&mut alice).await.len(),
            body.len(),
            "local delivery goes on"
        );
    }
    let grown = a.server.rss_kib().saturating_sub(base);
    eprintln!("OUTBOX: +{grown} KiB after 50 MiB of deliveries with Redis hanging (bound 8 MiB)");
    redis.resume();
    assert!(grown < 40 << 10, "+{grown} KiB");
    let (_, metrics) = a.server.admin("GET", "/metrics").await;
    assert!(
        !metrics.contains("wsgate_cluster_frames_total{event=\"dropped\"} 0"),
        "{metrics}"
    );
}

/// The cluster's `received` frame count on a node, from its metrics.
async fn frames_received(server: &Server) -> u64 {
    let (_, metrics) = server.admin("GET", "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wsgate_cluster_frames_total{event=\"received\"} "))
        .map_or(0, |n| n.parse().unwrap())
}

/// A node listens only where it has members: a channel's traffic between
/// two nodes, and a send to a connection by id, never reach a third node
/// with members elsewhere.
#[tokio::test]
async fn deliveries_reach_only_the_nodes_that_have_members() {
    let redis = Redis::start().await;
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let (a, b, c) = (
        node(dir.path(), &redis).await,
        node(dir.path(), &redis).await,
        node(dir.path(), &redis).await,
    );
    until_info(&c.server, "three nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    // Carol's channel, tag and plugin-wide interest do not share the
    // lobby's partition (the hash is fixed, so this holds for good).
    let partition = |i: Interest<'_>| wsgate::cluster::channel_for("wsgate", "chat", i, 128);
    let lobby = partition(Interest::Group(GroupKind::Channel, "lobby"));
    for carols in [
        Interest::Group(GroupKind::Channel, "kitchen"),
        Interest::Group(GroupKind::Tag, "user:carol@kitchen"),
        Interest::Plugin,
    ] {
        assert_ne!(partition(carols), lobby, "{carols:?}");
    }
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    let mut carol = c.server.connect(&join("carol", "kitchen")).await;
    until_info(&a.server, "three connections", |i| {
        i["cluster"]["connections"]["total"] == 3
    })
    .await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        drain(ws, QUIET).await;
    }
    let before = frames_received(&c.server).await;
    for i in 0..50 {
        send_text(&mut alice, &format!("m{i}")).await;
    }
    for i in 0..50 {
        assert_eq!(next_json(&mut bob).await["message"], format!("m{i}"));
    }
    let on_b = b.server.admin_info("?connections=true").await;
    let bobs_id = on_b["connection_list"][0]["id"].to_string();
    let path = format!("/publish/chat/connections?ids={bobs_id}");
    a.server.publish(&path, &[], "by id").await;
    assert_eq!(next_text(&mut bob).await, "by id");
    assert_eq!(
        frames_received(&c.server).await,
        before,
        "node C received deliveries it has no members for"
    );
    assert_silent(&mut carol, Duration::from_millis(100)).await;
    // Node B listens to the lobby, its tag and the plugin: a handful of
    // the 128 partitions.
    let listening = on_b["cluster"]["partitions"]["listening"].as_u64().unwrap();
    assert!((1..=3).contains(&listening), "{listening}");
}

/// Redis hanging while clients join new channels: a join waits for the
/// node's subscription at most a second (then the node stops waiting for a
/// Redis that does not answer), local chat goes on, and the joins' churn
/// holds no memory.
#[tokio::test]
async fn a_hanging_redis_delays_a_join_by_at_most_a_second() {
    let redis = Redis::start().await;
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let a = node(dir.path(), &redis).await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    drain(&mut alice, QUIET).await;
    let base = a.server.rss_kib();
    redis.pause();
    let joins = (0..200).map(|i| {
        let server = &a.server;
        async move {
            let started = Instant::now();
            let mut ws = server
                .connect(&join(&format!("u{i}"), &format!("room-{i}")))
                .await;
            let took = started.elapsed();
            assert_eq!(
                next_json(&mut ws).await["message"],
                format!("u{i} connected")
            );
            took
        }
    });
    let slowest = futures_util::future::join_all(joins)
        .await
        .into_iter()
        .max()
        .unwrap();
    eprintln!("slowest of 200 joins with Redis hanging: {slowest:?}");
    // A second of waiting, plus 200 handshakes on a loaded machine.
    assert!(slowest < Duration::from_millis(2000), "{slowest:?}");
    // The honest client is still served, locally.
    send_text(&mut alice, "still here").await;
    assert_eq!(next_json(&mut alice).await["message"], "still here");
    let grown = a.server.rss_kib().saturating_sub(base);
    eprintln!("RSS: +{grown} KiB for 200 joins with Redis hanging");
    assert!(grown < 32 << 10, "+{grown} KiB");
    redis.resume();
    until_info(&a.server, "redis connected", |i| {
        i["cluster"]["redis"] == "connected"
    })
    .await;
}
