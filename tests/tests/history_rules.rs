//! A channel's history follows one rule on every backend: where a page
//! starts and whether it recovers what a client missed, by size, by age,
//! by epoch. The memory backend runs `history::rules::plan`; Redis runs
//! the same rule as Lua. Both are driven here through a real plugin (the
//! inspect fixture's `record` and `history` commands) and must answer the
//! same.

use std::time::Duration;

use serde_json::{Value, json};
use wsgate_tests::cluster::node;
use wsgate_tests::redis::Redis;
use wsgate_tests::*;

/// The inspect fixture, recording every channel, 6 messages each, for 1 s.
fn recorded_inspect() -> tempfile::TempDir {
    let dir = plugin_dir(fixture_plugins(), &["inspect"]);
    std::fs::write(
        dir.path().join("inspect.toml"),
        "[history]\nchannels = [\"*\"]\nsize = 6\nttl = \"1s\"\n",
    )
    .unwrap();
    dir
}

/// `history CH SINCE LIMIT`, with the answer's epoch checked and dropped.
async fn page(ws: &mut Client, channel: &str, since: &str, limit: u32, epoch: &str) -> Value {
    let answer = ask(ws, &format!("history {channel} {since} {limit}")).await;
    let mut page: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    let latest = page["latest"].as_str().unwrap().to_owned();
    let (latest_epoch, offset) = latest.rsplit_once(':').unwrap();
    if !epoch.is_empty() {
        assert_eq!(latest_epoch, epoch, "one epoch throughout: {page}");
    }
    page["latest"] = json!(offset.parse::<u64>().unwrap());
    page
}

fn expect(entries: &[u64], latest: u64, recovered: bool) -> Value {
    json!({"entries": entries, "latest": latest, "recovered": recovered})
}

/// The cases of `history::rules`, on the server behind `ws`.
async fn the_rule(ws: &mut Client) {
    // A channel nothing was published to: latest 0, nothing lost.
    let fresh = page(ws, "fresh", "-", 10, "").await;
    assert_eq!(fresh, expect(&[], 0, true));

    let mut epoch = String::new();
    for i in 1..=5 {
        let position = ask(ws, &format!("record c m{i}")).await;
        let (e, offset) = position
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{position}"));
        assert_eq!(offset, i.to_string());
        epoch = e.to_owned();
    }
    let at = |offset: u64| format!("{epoch}:{offset}");
    let e = epoch.as_str();
    assert_eq!(
        page(ws, "c", "-", 10, e).await,
        expect(&[1, 2, 3, 4, 5], 5, true)
    );
    assert_eq!(page(ws, "c", &at(3), 10, e).await, expect(&[4, 5], 5, true));
    assert_eq!(page(ws, "c", &at(5), 10, e).await, expect(&[], 5, true));
    assert_eq!(
        page(ws, "c", &at(0), 10, e).await,
        expect(&[1, 2, 3, 4, 5], 5, true)
    );
    assert_eq!(
        page(ws, "c", &at(3), 1, e).await,
        expect(&[4], 5, true),
        "limit"
    );

    // Four more: size 6 keeps 4..=9.
    for i in 6..=9 {
        ask(ws, &format!("record c m{i}")).await;
    }
    let kept = [4, 5, 6, 7, 8, 9];
    assert_eq!(page(ws, "c", "-", 10, e).await, expect(&kept, 9, false));
    assert_eq!(page(ws, "c", &at(3), 10, e).await, expect(&kept, 9, true));
    assert_eq!(page(ws, "c", &at(2), 10, e).await, expect(&kept, 9, false));
    assert_eq!(
        page(ws, "c", "other:3", 10, e).await,
        expect(&kept, 9, false),
        "another epoch"
    );
    assert_eq!(
        page(ws, "c", &at(10), 10, e).await,
        expect(&kept, 9, false),
        "from the future"
    );

    // After the TTL nothing is kept: only a client that missed nothing
    // has recovered.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(page(ws, "c", &at(9), 10, e).await, expect(&[], 9, true));
    assert_eq!(page(ws, "c", &at(8), 10, e).await, expect(&[], 9, false));

    // Bad arguments are refused, not trapped.
    assert_eq!(ask(ws, "history c - 0").await, "Err(invalid-argument)");
}

#[tokio::test]
async fn in_memory() {
    let dir = recorded_inspect();
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/inspect").await;
    next_json(&mut ws).await;
    the_rule(&mut ws).await;
    // Admin info says what the plugin records.
    let info = server.admin_info("").await;
    assert_eq!(
        plugin_info(&info, "inspect")["history"],
        json!({"channels": ["*"], "size": 6, "ttl_ms": 1000})
    );
    // What the rule did, counted.
    let (status, metrics) = server.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    for (call, outcome, n) in [
        ("publish", "ok", 9),
        ("read", "ok", 13),
        ("read", "invalid", 1),
    ] {
        let line = format!(
            "wsgate_history_calls_total{{call=\"{call}\",outcome=\"{outcome}\",plugin=\"inspect\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn in_redis() {
    let redis = Redis::start().await;
    let dir = recorded_inspect();
    let a = node(dir.path(), &redis.url(), "").await;
    let mut ws = a.server.connect("/ws/inspect").await;
    next_json(&mut ws).await;
    the_rule(&mut ws).await;
}

/// Unrecorded channels answer `not-recorded`, for both calls.
#[tokio::test]
async fn only_recorded_channels_have_history() {
    let dir = plugin_dir(fixture_plugins(), &["inspect"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/inspect").await;
    next_json(&mut ws).await;
    assert_eq!(ask(&mut ws, "record c x").await, "Err(not-recorded)");
    assert_eq!(ask(&mut ws, "history c - 10").await, "Err(not-recorded)");
}
