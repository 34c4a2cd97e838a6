//! Several wsgate processes as one cluster over a real, private
//! redis-server: cross-node chat and whispers, the publish API, cluster-wide
//! counts, a node killed, Redis restarted.

use std::time::{Duration, Instant};

use wsgate::registry::{GroupKind, Interest};
use wsgate_tests::cluster::*;
use wsgate_tests::redis::Redis;
use wsgate_tests::*;

#[tokio::test]
async fn chat_and_whispers_cross_nodes() {
    let redis = Redis::start().await;
    let (_dir, a, b) = two_nodes(&redis.url(), "").await;
    chat_and_whispers_cross(&a, &b).await;
}

#[tokio::test]
async fn publish_api_and_counts_reach_the_whole_cluster_and_a_dead_node_drops_out() {
    let redis = Redis::start().await;
    let (_dir, a, mut b) = two_nodes(&redis.url(), "").await;
    let (mut alice, _bob, _dave) = publish_api_reaches_the_other_node(&a, &b).await;

    a_dead_node_drops_out(&a, &mut b, &mut alice).await;
}

#[tokio::test]
async fn a_redis_restart_costs_only_cross_node_delivery_while_it_lasts() {
    let mut redis = Redis::start().await;
    let (dir, a, b) = two_nodes(&redis.url(), "").await;
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
    let c = node(dir.path(), &redis.url(), "").await;
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

/// Node numbers are leased: when the counter comes round to a number a
/// live node holds (after thousands of starts), the next one is taken.
#[tokio::test]
async fn a_live_nodes_number_is_never_handed_out_again() {
    let redis = Redis::start().await;
    let dir = unrecorded_chat();
    let a = node(dir.path(), &redis.url(), "").await;
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
    let b = node(dir.path(), &redis.url(), "").await;
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
    let dir = unrecorded_chat();
    let a = node(dir.path(), &redis.url(), "").await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    drain(&mut alice, QUIET).await;
    let header = br#"{"t":"deliver","node":8000,"plugin":"chat","target":{"kind":"channel","name":"lobby"},"binary":false}"#;
    // Where the nodes listen for the lobby's deliveries.
    let lobby = wsgate::cluster::channel_for(
        "wsgate",
        "chat",
        Interest::Group(GroupKind::Channel, "lobby"),
        wsgate::config::Cluster::default().partitions,
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
    let a = node(dir.path(), &redis.url(), secret).await;
    let b = node(dir.path(), &redis.url(), secret).await;
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
    let dir = unrecorded_chat();
    let a = node(dir.path(), &redis.url(), "outbox_bytes = 8388608\n").await;
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
        node(dir.path(), &redis.url(), "").await,
        node(dir.path(), &redis.url(), "").await,
        node(dir.path(), &redis.url(), "").await,
    );
    until_info(&c.server, "three nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    // Carol's channel, tag and plugin-wide interest do not share the
    // lobby's partition (the hash is fixed, so this holds for good).
    let partitions = wsgate::config::Cluster::default().partitions;
    let partition = |i: Interest<'_>| wsgate::cluster::channel_for("wsgate", "chat", i, partitions);
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
    // the partitions.
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
    let dir = unrecorded_chat();
    let a = node(dir.path(), &redis.url(), "").await;
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

/// Nodes that disagree on `cluster.partitions` would not hear each other's
/// channel deliveries: the operator is told, by name.
#[tokio::test]
async fn nodes_with_different_partition_counts_are_reported() {
    let redis = Redis::start().await;
    let dir = unrecorded_chat();
    let a = node(dir.path(), &redis.url(), "").await;
    let b = node(dir.path(), &redis.url(), "partitions = 64\n").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    for (server, theirs) in [(&a.server, 64), (&b.server, 16_384)] {
        let told = format!("has cluster.partitions = {theirs}");
        eventually(
            "the mismatch logged",
            server,
            Duration::from_secs(10),
            || async { server.logs().contains(&told).then_some(()) },
        )
        .await;
    }
}
