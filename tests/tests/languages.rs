//! Listeners in every SDK language behave the same: the Python and
//! JavaScript chat and echo examples must pass exactly the assertions the
//! Rust ones pass, against a real `wsgate` process.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use wsgate_tests::tungstenite::Message;
use wsgate_tests::{
    Client, Server, assert_silent, example_plugins, next_json, next_msg, next_text, plugin_dir,
    send_text,
};

const QUIET: Duration = Duration::from_millis(300);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Reads the next chat message and checks all four fields.
async fn expect_chat(ws: &mut Client, from: &str, message: &str, channel: &str) {
    let json = next_json(ws).await;
    let obj = json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {json}"));
    assert_eq!(
        obj.len(),
        4,
        "exactly from/message/channel/timestamp: {json}"
    );
    assert_eq!(json["from"], from, "{json}");
    assert_eq!(json["message"], message, "{json}");
    assert_eq!(json["channel"], channel, "{json}");
    let ts = json["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("timestamp: {json}"));
    assert!(
        ts.abs_diff(now_ms()) < 60_000,
        "timestamp {ts} is not now: {json}"
    );
}

/// The chat scenario of `example-plugins/chat`, run against the plugin
/// `name` served at `/ws/{name}/{channel}`.
async fn chat_scenario(name: &str) {
    let dir = plugin_dir(example_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let url = |channel: &str, user: &str| format!("/ws/{name}/{channel}?username={user}");

    // No, or a blank, username: refused before the upgrade; and nobody
    // may speak as the announcer.
    for path in [
        format!("/ws/{name}/lobby"),
        url("lobby", ""),
        url("lobby", "%20"),
        url("lobby", "%3Cserver%3E"),
        url("lobby", "%20%3Cserver%3E%20"),
    ] {
        let (status, _) = server.handshake_error(&path).await;
        assert_eq!(status, 403, "{path}");
    }

    // User tags cannot collide: user `a` in `b@c` and user `a@b` in `c`
    // are different people, and a whisper reaches only the one meant.
    let mut a_in_bc = server.connect(&url("b@c", "a")).await;
    expect_chat(&mut a_in_bc, "<server>", "a connected", "b@c").await;
    let mut ab_in_c = server.connect(&url("c", "a%40b")).await;
    expect_chat(&mut ab_in_c, "<server>", "a@b connected", "c").await;
    let mut x_in_c = server.connect(&url("c", "x")).await;
    expect_chat(&mut x_in_c, "<server>", "x connected", "c").await;
    expect_chat(&mut ab_in_c, "<server>", "x connected", "c").await;
    send_text(&mut x_in_c, r#"{"to":"a@b","message":"for a@b"}"#).await;
    for ws in [&mut ab_in_c, &mut x_in_c] {
        assert_eq!(next_json(ws).await["message"], "for a@b");
    }
    assert_silent(&mut a_in_bc, QUIET).await;
    for ws in [a_in_bc, ab_in_c, x_in_c] {
        drop(ws);
    }

    let mut alice = server.connect(&url("lobby", "alice")).await;
    expect_chat(&mut alice, "<server>", "alice connected", "lobby").await;
    let mut bob = server.connect(&url("lobby", "bob")).await;
    expect_chat(&mut bob, "<server>", "bob connected", "lobby").await;
    expect_chat(&mut alice, "<server>", "bob connected", "lobby").await;
    let mut carol = server.connect(&url("garden", "carol")).await;
    expect_chat(&mut carol, "<server>", "carol connected", "garden").await;

    // Fan-out to the channel, sender included; text that needs escaping
    // must still come out as valid JSON with the exact text.
    let tricky = "say \"hi\" \\ <b>&</b> \u{e9}\u{4e16}\u{1f600}\n\ttab";
    for text in ["hello", tricky] {
        send_text(&mut alice, text).await;
        expect_chat(&mut alice, "alice", text, "lobby").await;
        expect_chat(&mut bob, "alice", text, "lobby").await;
    }
    send_text(&mut carol, "anyone?").await;
    expect_chat(&mut carol, "carol", "anyone?", "garden").await;

    // Channel isolation both ways.
    assert_silent(&mut alice, QUIET).await;
    assert_silent(&mut bob, QUIET).await;

    // A whisper reaches the addressee and the sender's own devices only.
    let mut alice2 = server.connect(&url("lobby", "alice")).await;
    expect_chat(&mut alice2, "<server>", "alice connected", "lobby").await;
    expect_chat(&mut alice, "<server>", "alice connected", "lobby").await;
    expect_chat(&mut bob, "<server>", "alice connected", "lobby").await;
    send_text(&mut alice, r#"{"to":"bob","message":"psst"}"#).await;
    for ws in [&mut bob, &mut alice, &mut alice2] {
        let json = next_json(ws).await;
        assert_eq!(
            (json["from"].as_str(), json["to"].as_str()),
            (Some("alice"), Some("bob"))
        );
        assert_eq!(
            (json["message"].as_str(), json["private"].as_bool()),
            (Some("psst"), Some(true))
        );
    }
    assert_silent(&mut carol, QUIET).await;
    send_text(&mut bob, r#"{"to":"zed","message":"?"}"#).await;
    expect_chat(&mut bob, "<server>", "zed is not in lobby", "lobby").await;
    assert_silent(&mut alice, QUIET).await;
    alice2.close(None).await.unwrap();
    expect_chat(&mut alice, "<server>", "alice disconnected", "lobby").await;
    expect_chat(&mut bob, "<server>", "alice disconnected", "lobby").await;

    // Binary frames are not chat messages.
    bob.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_silent(&mut alice, QUIET).await;

    bob.close(None).await.unwrap();
    expect_chat(&mut alice, "<server>", "bob disconnected", "lobby").await;
    assert_silent(&mut carol, QUIET).await;
}

/// Text and binary come back unchanged to the sender only.
async fn echo_scenario(name: &str) {
    let dir = plugin_dir(example_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let mut a = server.connect(&format!("/ws/{name}")).await;
    let mut b = server.connect(&format!("/ws/{name}")).await;

    for text in ["hello", "", "\u{e9}\u{4e16}\u{1f600}"] {
        send_text(&mut a, text).await;
        assert_eq!(next_text(&mut a).await, text);
    }
    let big: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
    for bytes in [vec![0u8, 1, 2, 255], Vec::new(), big] {
        a.send(Message::binary(bytes.clone())).await.unwrap();
        match next_msg(&mut a).await {
            Message::Binary(got) => assert_eq!(got.as_ref(), bytes.as_slice()),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_silent(&mut b, QUIET).await;
}

#[tokio::test]
async fn chat_rust() {
    chat_scenario("chat").await;
}

#[tokio::test]
async fn chat_python() {
    chat_scenario("chat-py").await;
}

#[tokio::test]
async fn chat_javascript() {
    chat_scenario("chat-js").await;
}

#[tokio::test]
async fn echo_rust() {
    echo_scenario("echo").await;
}

#[tokio::test]
async fn echo_python() {
    echo_scenario("echo-py").await;
}

#[tokio::test]
async fn echo_javascript() {
    echo_scenario("echo-js").await;
}

/// The C example: not in `scripts/build-plugins.sh` because it needs clang
/// and wasi-libc from apt (see `scripts/build-c-plugins.sh`), hence ignored.
#[tokio::test]
#[ignore]
async fn echo_c() {
    let out = tempfile::tempdir().unwrap();
    let status =
        std::process::Command::new(wsgate_tests::root().join("scripts/build-c-plugins.sh"))
            .arg(out.path())
            .status()
            .unwrap();
    assert!(status.success(), "scripts/build-c-plugins.sh failed");
    let dir = plugin_dir(out.path(), &["echo-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/echo-c").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.send(Message::binary(vec![0u8, 255])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![0u8, 255]));
}

/// Startup and first-message latency per language, printed rather than
/// asserted (machine-dependent). Run with
/// `cargo test -p wsgate-tests --test languages -- --ignored --nocapture`.
/// Each plugin is served alone: once with no compile cache, then twice with
/// a fresh cache directory (cold, then warm).
#[tokio::test]
#[ignore]
async fn measure_languages() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    println!(
        "plugin    | run        | ready ms | compile ms | first reply ms | next 100 replies ms"
    );
    for name in ["echo", "echo-py", "echo-js"] {
        let dir = plugin_dir(example_plugins(), &[name]);
        let runs: [(&str, &[&str]); 3] = [
            ("no cache", &[]),
            ("cache cold", &["--cache-dir", cache_dir]),
            ("cache warm", &["--cache-dir", cache_dir]),
        ];
        for (label, args) in runs {
            let start = Instant::now();
            let server = Server::start(dir.path(), args).await;
            let ready = start.elapsed();
            let start = Instant::now();
            let mut ws = server.connect(&format!("/ws/{name}")).await;
            send_text(&mut ws, "ping").await;
            assert_eq!(next_text(&mut ws).await, "ping");
            let first = start.elapsed();
            let start = Instant::now();
            for _ in 0..100 {
                send_text(&mut ws, "ping").await;
                next_text(&mut ws).await;
            }
            let rest = start.elapsed();
            // The server logs "loaded in N ms" per plugin: compile or cache load.
            let logs = server.logs();
            let compile = logs
                .split("loaded in ")
                .nth(1)
                .and_then(|rest| rest.split(" ms").next())
                .unwrap_or("?");
            println!(
                "{name:9} | {label:10} | {:8} | {compile:>10} | {:14.1} | {:19.1}",
                ready.as_millis(),
                first.as_secs_f64() * 1e3,
                rest.as_secs_f64() * 1e3
            );
        }
    }
}
