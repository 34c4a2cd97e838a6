//! Several wsgate processes as one cluster over a real, private
//! redis-server: cross-node chat and whispers, the publish API, cluster-wide
//! counts, a node killed, Redis restarted.

use std::time::{Duration, Instant};

use serde_json::Value;
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
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nurl = \"{}\"\nheartbeat = \"{HEARTBEAT_MS}ms\"\nnode_ttl = \"{NODE_TTL_MS}ms\"\n",
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
