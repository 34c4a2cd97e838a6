//! Listeners in every SDK language behave the same: the Python,
//! JavaScript and C chat and echo examples must pass exactly the assertions
//! the Rust ones pass, against a real `wsgate` process.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use serde_json::Value;
use wsgate::history::Position;
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

/// Reads the next chat message and checks all four fields, and its
/// position where the chat records the channel (a fifth field, `pos`).
async fn expect_chat(ws: &mut Client, from: &str, message: &str, channel: &str) -> Value {
    let json = next_json(ws).await;
    let obj = json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {json}"));
    let positioned = match obj.get("pos") {
        Some(pos) => {
            let pos = pos.as_str().unwrap_or_default();
            assert!(pos.parse::<Position>().is_ok(), "pos: {json}");
            1
        }
        None => 0,
    };
    assert_eq!(
        obj.len(),
        4 + positioned,
        "exactly from/message/channel/timestamp (and pos): {json}"
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
    json
}

fn position_of(json: &Value) -> Position {
    let pos = json["pos"].as_str().unwrap_or_default();
    pos.parse()
        .unwrap_or_else(|_| panic!("no position: {json}"))
}

/// The chats that record their channels: every channel message carries its
/// position, and a client that comes back with `since` gets what it
/// missed, in order, then the recovery notice; a `since` that is no
/// position is refused, one of another epoch starts the client afresh.
async fn resume_scenario(name: &str) {
    let dir = plugin_dir(example_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let url = |user: &str| format!("/ws/{name}/lobby?username={user}");
    let mut alice = server.connect(&url("alice")).await;
    let joined =
        position_of(&expect_chat(&mut alice, "<server>", "alice connected", "lobby").await);
    let mut positions = vec![joined.clone()];
    for line in ["one", "two", "three"] {
        send_text(&mut alice, line).await;
        positions.push(position_of(
            &expect_chat(&mut alice, "alice", line, "lobby").await,
        ));
    }
    for (a, b) in positions.iter().zip(&positions[1..]) {
        assert_eq!(
            (&a.epoch, a.offset + 1),
            (&b.epoch, b.offset),
            "{positions:?}"
        );
    }
    let since = format!("{}&since={}", url("bob"), positions[1]);
    let mut bob = server.connect(&since).await;
    for line in ["two", "three"] {
        expect_chat(&mut bob, "alice", line, "lobby").await;
    }
    let notice = next_json(&mut bob).await;
    assert_eq!(notice["type"], "recovery", "{notice}");
    assert_eq!(notice["recovered"], true, "{notice}");
    assert_eq!(notice["latest"], positions[3].to_string(), "{notice}");
    expect_chat(&mut bob, "<server>", "bob connected", "lobby").await;
    expect_chat(&mut alice, "<server>", "bob connected", "lobby").await;

    let (status, _) = server
        .handshake_error(&format!("{}&since=junk", url("carol")))
        .await;
    assert_eq!(status, 400);
    let mut carol = server
        .connect(&format!("{}&since=0000:2", url("carol")))
        .await;
    let notice = next_json(&mut carol).await;
    assert_eq!(
        (notice["type"].as_str(), notice["recovered"].as_bool()),
        (Some("recovery"), Some(false))
    );
    // What is kept, from the oldest: a fresh start.
    expect_chat(&mut carol, "<server>", "alice connected", "lobby").await;
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
async fn chat_rust_resumes() {
    resume_scenario("chat").await;
}

#[tokio::test]
async fn chat_python_resumes() {
    resume_scenario("chat-py").await;
}

#[tokio::test]
async fn chat_javascript_resumes() {
    resume_scenario("chat-js").await;
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

#[tokio::test]
async fn chat_c() {
    chat_scenario("chat-c").await;
}

#[tokio::test]
async fn echo_c() {
    echo_scenario("echo-c").await;
}

/// The C chat reads JSON by hand, so it must tell a whisper from plain
/// chat exactly as the Rust chat does with serde_json: same verdict, same
/// decoded text, for valid, invalid and borderline JSON.
#[tokio::test]
async fn chat_c_reads_whispers_as_rust_does() {
    let nested = |depth: usize| {
        format!(
            r#"{{"to":"bob","message":"nested","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // (text, is it a whisper to bob?)
    let cases: Vec<(String, bool)> = [
        (r#"{"to":"bob","message":"hi"}"#, true),
        (" \n{ \"message\" : \"hi\" ,\t\"to\":\"bob\" }\r\n", true),
        (
            r#"{"to":"bob","message":"m","x":[1,-0.5e+3,{"a":null,"b":[true,false]}],"y":""}"#,
            true,
        ),
        (
            r#"{"\u0074o":"bob","message":"\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t \u00e9\u0000"}"#,
            true,
        ),
        (r#"{"to":"bob","message":"hi","x":"\udc00 skipped"}"#, true),
        (r#"{"to":"bob"}"#, false),
        (r#"{"to":"bob","message":"hi"} x"#, false),
        (r#"{"to":"bob","message":"hi",}"#, false),
        (r#"{"to":"bob","to":"bob","message":"hi"}"#, false),
        (r#"{"to":"bob","message":"\ud800"}"#, false),
        (r#"{"to":"bob","message":"\ud800\u0041"}"#, false),
        (r#"{"to":1,"message":"hi"}"#, false),
        (r#"{"to":"bob","message":null}"#, false),
        (r#"{"to":"bob","message":"hi","n":01}"#, false),
        (r#"{"to":"bob","message":"hi","n":1.}"#, false),
        (r#"{"to":"bob","message":"hi","n":tru}"#, false),
        ("{\"to\":\"bob\",\"message\":\"raw\ttab\"}", false),
        (r#"{"to":"bob","message":"\x"}"#, false),
        (r#"{"to":"bob","message":"hi""#, false),
        ("hello", false),
        ("", false),
        ("{}", false),
    ]
    .into_iter()
    .map(|(text, whisper)| (text.to_owned(), whisper))
    // serde_json skips an ignored member at any depth: past its recursion
    // limit of 128, and deeper than a recursive parser's stack would allow.
    .chain([
        (nested(127), true),
        (nested(20_000), true),
        (nested(20_000).replacen(']', "}", 1), false),
    ])
    .collect();

    let dir = plugin_dir(example_plugins(), &["chat", "chat-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut verdicts = Vec::new();
    for name in ["chat", "chat-c"] {
        let url = |user: &str| format!("/ws/{name}/lobby?username={user}");
        let mut alice = server.connect(&url("alice")).await;
        let mut bob = server.connect(&url("bob")).await;
        let mut carol = server.connect(&url("carol")).await;
        for (ws, joins) in [(&mut alice, 3), (&mut bob, 2), (&mut carol, 1)] {
            for _ in 0..joins {
                next_json(ws).await;
            }
        }
        let mut seen = Vec::new();
        for (text, _) in &cases {
            send_text(&mut alice, text).await;
            // Plain chat and a whisper to bob both reach alice and bob.
            let json = next_json(&mut bob).await;
            assert_eq!(next_json(&mut alice).await["message"], json["message"]);
            let whisper = json["private"] == true;
            if whisper {
                assert_eq!(json["to"], "bob", "{name}: {json}");
            } else {
                assert_eq!(json["message"], text.as_str(), "{name}: {json}");
                next_json(&mut carol).await;
            }
            seen.push((whisper, json["message"].clone()));
        }
        assert_silent(&mut carol, QUIET).await;
        verdicts.push(seen);
    }
    for (i, (text, whisper)) in cases.iter().enumerate() {
        assert_eq!(verdicts[0][i].0, *whisper, "rust on {text:?}");
        assert_eq!(verdicts[1][i], verdicts[0][i], "c on {text:?}");
    }
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
    for name in ["echo", "echo-py", "echo-js", "echo-c"] {
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
