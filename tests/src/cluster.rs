//! Several wsgate nodes as one cluster, on whatever Redis a test starts
//! (`redis.rs`): the nodes, and the cross-node flows that every kind of
//! Redis (a single server, a Redis Cluster, TLS) must carry alike.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

/// Short heartbeats so node death shows within a test's patience.
pub const HEARTBEAT_MS: u64 = 200;
pub const NODE_TTL_MS: u64 = 1000;
/// Join notices are past once a socket has been quiet this long.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct Node {
    pub server: Server,
    _config: tempfile::TempDir,
}

/// A node on the Redis at `url`, with extra `[cluster]` settings.
pub async fn node(plugins: &Path, url: &str, extra: &str) -> Node {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nurl = \"{url}\"\nheartbeat = \"{HEARTBEAT_MS}ms\"\nnode_ttl = \"{NODE_TTL_MS}ms\"\n{extra}"
        ),
    )
    .unwrap();
    let server = Server::start(plugins, &["--config", file.to_str().unwrap()]).await;
    Node {
        server,
        _config: config,
    }
}

/// Waits (at most 15 s) until `check` holds for the admin info of `server`.
pub async fn until_info(server: &Server, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, server, Duration::from_secs(15), || async {
        let info = server.admin_info("").await;
        check(&info).then_some(info)
    })
    .await
}

/// The chat's path for `name` joining `channel`.
pub fn join(name: &str, channel: &str) -> String {
    format!("/ws/chat/{channel}?username={name}")
}

/// The chat example with its channels not recorded: what the bus tests
/// use, since a recorded channel's delivery needs Redis (its history is
/// there), and they show the bus alone (history: tests/tests/history.rs).
pub fn unrecorded_chat() -> tempfile::TempDir {
    let dir = plugin_dir(example_plugins(), &["chat"]);
    std::fs::write(
        dir.path().join("chat.toml"),
        "routes = [\"/ws/chat/{channel}\"]\n",
    )
    .unwrap();
    dir
}

/// Two nodes with the chat plugin (channels not recorded) on the Redis at
/// `url`, both seeing each other.
pub async fn two_nodes(url: &str, extra: &str) -> (tempfile::TempDir, Node, Node) {
    let dir = unrecorded_chat();
    let a = node(dir.path(), url, extra).await;
    let b = node(dir.path(), url, extra).await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    (dir, a, b)
}

/// Alice on node `a` and bob on node `b`, both in the lobby, each known to
/// the other node, the join notices read.
pub async fn alice_and_bob(a: &Node, b: &Node) -> (Client, Client) {
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

/// Chat across two nodes: alice on `a` hears bob join on `b`, lines cross
/// both ways, a whisper reaches a user on the other node (and no "not in
/// lobby" notice), a whisper to nobody anywhere tells the sender.
pub async fn chat_and_whispers_cross(a: &Node, b: &Node) {
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
    send_text(&mut bob, "hello from B").await;
    assert_eq!(next_json(&mut alice).await["message"], "hello from B");
    assert_eq!(next_json(&mut bob).await["message"], "hello from B");
    assert_silent(&mut carol, Duration::from_millis(100)).await;

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

/// Every publish API target, sent to node `a`, reaches node `b`'s clients,
/// and the cluster-wide counts add up. Returns alice (on `a`), bob and
/// dave (on `b`), their messages read.
pub async fn publish_api_reaches_the_other_node(a: &Node, b: &Node) -> (Client, Client, Client) {
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

    // A channel.
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
    assert_silent(&mut dave, Duration::from_millis(200)).await;

    // A tag.
    let (status, body) = a
        .server
        .publish("/publish/chat/tag/user:dave@attic", &[], "for dave")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_text(&mut dave).await, "for dave");

    // Everyone on a route.
    let (status, body) = a
        .server
        .publish("/publish/chat/all?route=/ws/chat/{channel}", &[], "all")
        .await;
    assert_eq!(status, 200, "{body}");
    for ws in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(next_text(ws).await, "all");
    }

    // Connections by id, all of them on node B.
    let on_b = b.server.admin_info("?connections=true").await;
    let ids: Vec<String> = on_b["connection_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let path = format!("/publish/chat/connections?ids={}", ids.join(","));
    let (status, body) = a.server.publish(&path, &[], "by id").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"], 0, "none of them is on node A");
    assert_eq!(next_text(&mut bob).await, "by id");
    assert_eq!(next_text(&mut dave).await, "by id");
    assert_silent(&mut alice, Duration::from_millis(200)).await;

    // And the other way round: node B's publish API reaches alice.
    let (status, body) = b
        .server
        .publish("/publish/chat/tag/user:alice@lobby", &[], "for alice")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_text(&mut alice).await, "for alice");
    (alice, bob, dave)
}

/// Node `b` dies without a word: within node_ttl + heartbeat it is gone
/// from `a`'s counts and presence, and alice (on `a`), whispering to bob
/// (who was on `b`), is told he is not there.
pub async fn a_dead_node_drops_out(a: &Node, b: &mut Node, alice: &mut Client) {
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
    send_text(alice, r#"{"to":"bob","message":"still there?"}"#).await;
    assert_eq!(next_json(alice).await["message"], "bob is not in lobby");
}
