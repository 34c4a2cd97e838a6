//! Plugin state over every backend, driven by real clients through the
//! `state` fixture: the semantics of each call (increment, compare-and-
//! swap, expiring keys, keys by prefix), atomicity under concurrent
//! connections, durability across a restart (SQLite), one counter shared
//! by two nodes (Redis), the quota held against a client filling state,
//! and a Redis that hangs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use wsgate_tests::cluster::{self, until_info};
use wsgate_tests::redis::{Redis, RedisCluster};
use wsgate_tests::tungstenite::Message;
use wsgate_tests::*;

/// The `state` fixture and the `echo` example in one plugin directory.
fn plugins() -> tempfile::TempDir {
    let dir = plugin_dir(fixture_plugins(), &["state"]);
    copy_plugins(example_plugins(), &["echo"], dir.path());
    dir
}

async fn state_client(server: &Server) -> Client {
    server.connect("/ws/state").await
}

/// The honest client: an echo connection that must keep answering.
async fn honest(server: &Server) -> Client {
    let mut ws = server.connect("/ws/echo").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    ws
}

async fn still_served(ws: &mut Client, what: &str) {
    let reply = tokio::time::timeout(Duration::from_secs(5), ask(ws, what)).await;
    assert_eq!(
        reply.as_deref(),
        Ok(what),
        "the honest client is not served"
    );
}

/// Every call's meaning, on whatever backend `a` and `b` share (they may
/// be one server, or two nodes of a cluster): what one writes, the other
/// reads.
async fn semantics(a: &Server, b: &Server) {
    let mut a = state_client(a).await;
    let mut b = state_client(b).await;
    // Increments count from 0, as text; what is not a number is refused.
    assert_eq!(ask(&mut a, "incr n 5").await, "Ok(5)");
    assert_eq!(ask(&mut b, "incr n -7").await, "Ok(-2)");
    assert_eq!(ask(&mut a, "get n").await, r#"Some("-2")"#);
    assert_eq!(ask(&mut a, "set s abc").await, "Ok(())");
    assert_eq!(ask(&mut b, "incr s 1").await, "Err(not-a-number)");
    assert_eq!(ask(&mut a, "set z 07").await, "Ok(())");
    assert_eq!(ask(&mut b, "incr z 1").await, "Err(not-a-number)");
    assert_eq!(ask(&mut a, "set big 9223372036854775807").await, "Ok(())");
    assert_eq!(ask(&mut b, "incr big 1").await, "Err(not-a-number)");
    assert_eq!(
        ask(&mut a, "get big").await,
        r#"Some("9223372036854775807")"#
    );
    assert_eq!(ask(&mut b, "incr big -1").await, "Ok(9223372036854775806)");
    // Keys are checked.
    assert_eq!(ask(&mut a, "incr").await, "Err(invalid-argument)");
    let long = "k".repeat(257);
    assert_eq!(
        ask(&mut a, &format!("incr {long} 1")).await,
        "Err(invalid-argument)"
    );
    assert_eq!(ask(&mut a, &format!("get {long}")).await, "None");

    // Compare-and-swap.
    assert_eq!(ask(&mut a, "cas c x y").await, "Ok(false)");
    assert_eq!(ask(&mut a, "cas c - x").await, "Ok(true)");
    assert_eq!(ask(&mut b, "cas c - y").await, "Ok(false)");
    assert_eq!(ask(&mut b, "cas c x y").await, "Ok(true)");
    assert_eq!(ask(&mut a, "get c").await, r#"Some("y")"#);
    assert_eq!(ask(&mut a, "cas c y -").await, "Ok(true)");
    assert_eq!(ask(&mut b, "get c").await, "None");

    // Keys by prefix, in byte order, at most the limit asked for.
    for key in [
        "ls/user:b",
        "ls/user:a",
        "ls/users",
        "ls/user:é",
        "ls/room:1",
    ] {
        assert_eq!(ask(&mut a, &format!("set {key} 1")).await, "Ok(())");
    }
    assert_eq!(
        ask(&mut b, "keys ls/user: 10").await,
        r#"Ok(["ls/user:a", "ls/user:b", "ls/user:é"])"#
    );
    assert_eq!(
        ask(&mut b, "keys ls/ 3").await,
        r#"Ok(["ls/room:1", "ls/user:a", "ls/user:b"])"#
    );
    assert_eq!(ask(&mut b, "keys ls/nobody 3").await, "Ok([])");
    assert_eq!(ask(&mut b, "keys ls/ 0").await, "Ok([])");

    // Expiring keys: gone after their TTL; a set or a swap makes a key
    // permanent again, an increment keeps its deadline.
    assert_eq!(ask(&mut a, "expire t 0 v").await, "Err(invalid-argument)");
    for cmd in [
        "expire ttl/gone 400 v",
        "expire ttl/set 400 v",
        "set ttl/set w",
        "expire ttl/cas 400 v",
        "cas ttl/cas v w",
        "expire ttl/incr 400 5",
        "incr ttl/incr 1",
    ] {
        assert!(ask(&mut a, cmd).await.starts_with("Ok("), "{cmd}");
    }
    assert_eq!(ask(&mut b, "get ttl/gone").await, r#"Some("v")"#);
    assert_eq!(ask(&mut b, "get ttl/incr").await, r#"Some("6")"#);
    assert_eq!(
        ask(&mut b, "keys ttl/ 10").await,
        r#"Ok(["ttl/cas", "ttl/gone", "ttl/incr", "ttl/set"])"#
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ask(&mut b, "get ttl/gone").await, "None");
    assert_eq!(ask(&mut b, "get ttl/incr").await, "None");
    assert_eq!(ask(&mut a, "get ttl/set").await, r#"Some("w")"#);
    assert_eq!(ask(&mut a, "get ttl/cas").await, r#"Some("w")"#);
    assert_eq!(
        ask(&mut b, "keys ttl/ 10").await,
        r#"Ok(["ttl/cas", "ttl/set"])"#
    );
    assert_eq!(ask(&mut a, "cas ttl/gone v x").await, "Ok(false)");
    assert_eq!(
        ask(&mut a, "incr ttl/incr 1").await,
        "Ok(1)",
        "from 0 again"
    );
}

/// Sends every command at once (pipelined), then reads the replies.
async fn pipelined(ws: &mut Client, cmds: &[String]) -> Vec<String> {
    for cmd in cmds {
        ws.feed(Message::text(cmd.clone())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut replies = Vec::with_capacity(cmds.len());
    while replies.len() < cmds.len() {
        replies.push(next_text(ws).await);
    }
    replies
}

/// `clients` connections per server, each incrementing `key` `each`
/// times, all at once; returns every value the increments answered.
async fn increments(servers: &[&Server], key: &str, clients: usize, each: usize) -> Vec<i64> {
    let mut tasks = Vec::new();
    for server in servers {
        for _ in 0..clients {
            let mut ws = state_client(server).await;
            let cmds = vec![format!("incr {key} 1"); each];
            tasks.push(tokio::spawn(async move {
                let replies = pipelined(&mut ws, &cmds).await;
                replies
                    .iter()
                    .map(|r| {
                        r.strip_prefix("Ok(")
                            .and_then(|r| r.strip_suffix(')'))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("increment answered {r}"))
                    })
                    .collect::<Vec<i64>>()
            }));
        }
    }
    let mut values = Vec::new();
    for task in tasks {
        values.extend(task.await.unwrap());
    }
    values
}

/// Increments and read-modify-write swaps from many connections at once
/// lose nothing: every increment answers a distinct value, and the swaps
/// add up (each retries until its swap lands).
async fn no_lost_updates(server: &Server) {
    let values = increments(&[server], "hits", 8, 250).await;
    let distinct: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=2000).collect(),
        "every increment counted once"
    );

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut ws = state_client(server).await;
        tasks.push(tokio::spawn(async move {
            ask(&mut ws, "cas-add swaps 100").await
        }));
    }
    let mut retries = 0;
    for task in tasks {
        let done = task.await.unwrap();
        let r = done
            .strip_prefix("added=100 retries=")
            .unwrap_or_else(|| panic!("{done}"));
        retries += r.parse::<u64>().unwrap();
    }
    let mut ws = state_client(server).await;
    assert_eq!(ask(&mut ws, "get swaps").await, r#"Some("800")"#);
    eprintln!("800 swaps from 8 connections: {retries} retries");
}

/// A client makes the plugin fill its state: it is refused at
/// `limits.state_bytes` exactly (entries counted with their overhead),
/// stays refused, the honest client is served throughout, and the
/// server's memory grows by less than `bound_mib`.
async fn quota_holds(server: &Server, quota: usize, bound_mib: u64, what: &str) {
    let mut echo = honest(server).await;
    let mut ws = state_client(server).await;
    assert_eq!(ask(&mut ws, "set warm x").await, "Ok(())");
    assert_eq!(ask(&mut ws, "del warm").await, "Ok(())");
    let base = server.rss_kib();
    let mut filler = state_client(server).await;
    let fill = tokio::spawn(async move {
        send_text(&mut filler, "fill 1000 fill").await;
        let answer = tokio::time::timeout(Duration::from_secs(60), next_text(&mut filler)).await;
        answer.expect("the fill never finished")
    });
    while !fill.is_finished() {
        still_served(&mut echo, "during").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = fill.await.unwrap();
    eprintln!("{what}: fill 1000 fill → {answer}");
    let field = |name: &str| -> usize {
        let start = answer.find(&format!("{name}=")).unwrap() + name.len() + 1;
        answer[start..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(answer.ends_with("then Err(limit-reached)"), "{answer}");
    let (stored, bytes, next) = (field("stored"), field("bytes"), field("next"));
    assert!(stored > 0, "{answer}");
    assert!(bytes <= quota && bytes + next > quota, "{answer}");
    // Still full, for every connection.
    let refused = format!(
        "stored=0 bytes=0 next={} then Err(limit-reached)",
        7 + 1000 + 64
    );
    assert_eq!(ask(&mut ws, "fill 1000 again").await, refused);
    assert_eq!(ask(&mut ws, "incr fill:0 1").await, "Err(not-a-number)");
    // Bigger than any room the last refusal can have left (1070 bytes).
    let more = format!("set more {}", "m".repeat(1100));
    assert_eq!(ask(&mut ws, &more).await, "Err(limit-reached)");
    // Deleting makes room again.
    assert_eq!(ask(&mut ws, "del fill:0").await, "Ok(())");
    assert_eq!(ask(&mut ws, &more).await, "Ok(())");
    still_served(&mut echo, "after").await;
    server.assert_rss_within(base, bound_mib, what);
}

#[tokio::test]
async fn memory_state_semantics_atomicity_and_listing_bound() {
    let dir = plugins();
    let (_cfg, file) = config_file("[limits]\nstate_keys_listed = 2\n");
    let server = Server::start(dir.path(), &["--config", &file]).await;
    let info = server.admin_info("").await;
    assert_eq!(info["config"]["state"]["effective_backend"], "memory");
    let mut ws = state_client(&server).await;
    for key in ["a", "b", "c"] {
        assert_eq!(ask(&mut ws, &format!("set {key} 1")).await, "Ok(())");
    }
    // The plugin asks for 10; the server lists at most state_keys_listed.
    assert_eq!(ask(&mut ws, "keys - 10").await, r#"Ok(["a", "b"])"#);
    drop(server);

    let server = Server::start(dir.path(), &[]).await;
    semantics(&server, &server).await;
    no_lost_updates(&server).await;
}

#[tokio::test]
async fn sqlite_state_survives_a_restart_and_keeps_its_semantics() {
    let dir = plugins();
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("state.db");
    let args = ["--state-path", path.to_str().unwrap()];
    let mut server = Server::start(dir.path(), &args).await;
    let info = server.admin_info("").await;
    assert_eq!(info["config"]["state"]["effective_backend"], "sqlite");
    let mut ws = state_client(&server).await;
    for (cmd, answer) in [
        ("set k/motd hello", "Ok(())"),
        ("incr k/visits 41", "Ok(41)"),
        ("expire k/session 3600000 token", "Ok(())"),
        ("cas k/owner - alice", "Ok(true)"),
        ("expire flash 1000 gone-soon", "Ok(())"),
    ] {
        assert_eq!(ask(&mut ws, cmd).await, answer, "{cmd}");
    }
    let written = Instant::now();
    assert_eq!(ask(&mut ws, "get flash").await, r#"Some("gone-soon")"#);
    // Killed without warning: what was answered is on disk.
    server.kill();
    drop(ws);

    let server = Server::start(dir.path(), &args).await;
    let mut ws = state_client(&server).await;
    assert_eq!(ask(&mut ws, "get k/motd").await, r#"Some("hello")"#);
    assert_eq!(ask(&mut ws, "incr k/visits 1").await, "Ok(42)");
    assert_eq!(ask(&mut ws, "get k/session").await, r#"Some("token")"#);
    assert_eq!(ask(&mut ws, "cas k/owner - bob").await, "Ok(false)");
    assert_eq!(ask(&mut ws, "cas k/owner alice bob").await, "Ok(true)");
    assert_eq!(
        ask(&mut ws, "keys k/ 10").await,
        r#"Ok(["k/motd", "k/owner", "k/session", "k/visits"])"#
    );
    // The deadline held across the restart.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(written.elapsed())).await;
    assert_eq!(ask(&mut ws, "get flash").await, "None");
    assert_eq!(ask(&mut ws, "get k/owner").await, r#"Some("bob")"#);

    semantics(&server, &server).await;
    no_lost_updates(&server).await;
}

#[tokio::test]
async fn a_client_filling_sqlite_state_is_held_to_the_quota() {
    let dir = plugins();
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("state.db");
    let quota = 1 << 20;
    let (_cfg, file) = config_file(&format!(
        "[limits]\nstate_bytes = {quota}\n[state]\npath = \"{}\"\n",
        path.display()
    ));
    let server = Server::start(dir.path(), &["--config", &file]).await;
    quota_holds(&server, quota, 8, "sqlite").await;
}

#[tokio::test]
async fn two_nodes_count_one_counter_exactly_over_redis() {
    let redis = Redis::start().await;
    let dir = plugins();
    let a = cluster::node(dir.path(), &redis.url(), "").await;
    let b = cluster::node(dir.path(), &redis.url(), "").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert_eq!(
        a.server.admin_info("").await["config"]["state"]["effective_backend"],
        "redis"
    );
    // The issue's test: 10,000 increments from 20 connections, half on
    // each node, all at once, end at exactly 10,000, and no two
    // increments saw the same value.
    let started = Instant::now();
    let values = increments(&[&a.server, &b.server], "counter", 10, 500).await;
    eprintln!(
        "10,000 increments over two nodes in {:?}",
        started.elapsed()
    );
    let distinct: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(values.len(), 10_000);
    assert_eq!(distinct, (1..=10_000).collect());
    for node in [&a.server, &b.server] {
        let mut ws = state_client(node).await;
        assert_eq!(ask(&mut ws, "get counter").await, r#"Some("10000")"#);
    }

    semantics(&a.server, &b.server).await;
    no_lost_updates(&b.server).await;
}

#[tokio::test]
async fn a_client_filling_redis_state_is_held_to_one_quota_across_nodes() {
    let redis = Redis::start().await;
    let dir = plugins();
    let quota = 1 << 20;
    let extra = format!("[limits]\nstate_bytes = {quota}\n");
    let a = cluster::node(dir.path(), &redis.url(), &extra).await;
    let b = cluster::node(dir.path(), &redis.url(), &extra).await;
    quota_holds(&a.server, quota, 8, "redis").await;
    // The other node sees the same budget, already spent.
    let mut ws = state_client(&b.server).await;
    assert_eq!(
        ask(&mut ws, "fill 1000 other").await,
        format!(
            "stored=0 bytes=0 next={} then Err(limit-reached)",
            7 + 1000 + 64
        )
    );
    // What the scripts count is what Redis holds: the byte count is the
    // sum of the entries' costs, one per value key.
    let counted: usize = redis
        .command(&[b"GET", b"{wsgate:s:state}:bytes"])
        .await
        .parse()
        .unwrap();
    let costs = redis.command(&[b"HVALS", b"{wsgate:s:state}:cost"]).await;
    let costs: Vec<usize> = costs.lines().map(|c| c.parse().unwrap()).collect();
    let values = redis.command(&[b"KEYS", b"{wsgate:s:state}:v:*"]).await;
    assert_eq!(counted, costs.iter().sum::<usize>());
    assert_eq!(values.lines().count(), costs.len());
    assert!(counted <= quota, "{counted}");
}

#[tokio::test]
async fn state_calls_answer_unavailable_while_redis_hangs_and_recover() {
    let redis = Redis::start().await;
    let dir = plugins();
    let node = cluster::node(dir.path(), &redis.url(), "[state]\ntimeout = \"500ms\"\n").await;
    let server = &node.server;
    let mut echo = honest(server).await;
    let mut ws = state_client(server).await;
    assert_eq!(ask(&mut ws, "incr n 1").await, "Ok(1)");

    redis.pause();
    for (cmd, answer) in [
        ("incr n 1", "Err(unavailable)"),
        ("cas n 1 2", "Err(unavailable)"),
        ("expire e 1000 x", "Err(unavailable)"),
        ("keys - 10", "Err(unavailable)"),
        // The older calls have no `unavailable` to say.
        ("get n", "None"),
        ("set other 5", "Err(limit-reached)"),
    ] {
        let started = Instant::now();
        assert_eq!(ask(&mut ws, cmd).await, answer, "{cmd}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{cmd} took {took:?}");
        still_served(&mut echo, "during").await;
    }
    redis.resume();

    // Back by itself: the next calls reach Redis again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(&mut ws, "incr n 1").await;
        if answer.starts_with("Ok(") {
            let n: i64 = answer[3..answer.len() - 1].parse().unwrap();
            assert!(
                (2..=3).contains(&n),
                "{answer}: the paused increment may or may not have landed"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "state never recovered:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = server.logs();
    assert!(
        logs.contains("plugin state (Redis): ")
            && logs.contains("calls fail until it answers again"),
        "{logs}"
    );
    assert!(
        logs.contains("plugin state (Redis) answers again"),
        "{logs}"
    );
}

/// On a Redis Cluster every key of a plugin shares one slot, so the
/// scripts run where they must.
#[tokio::test]
async fn state_semantics_hold_on_a_redis_cluster() {
    let redis = RedisCluster::start().await;
    let dir = plugins();
    let a = cluster::node(dir.path(), &redis.url(), "mode = \"cluster\"\n").await;
    let b = cluster::node(dir.path(), &redis.url(), "mode = \"cluster\"\n").await;
    semantics(&a.server, &b.server).await;
    let values = increments(&[&a.server, &b.server], "counter", 4, 250).await;
    let distinct: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(distinct, (1..=2000).collect());
}

#[test]
fn a_backend_that_cannot_be_used_stops_the_server_at_startup() {
    let dir = plugins();
    let out = start_fails(dir.path(), &["--state-backend", "redis"]);
    assert!(out.contains("needs a cluster: set cluster.url"), "{out}");
    let out = start_fails(dir.path(), &["--state-backend", "sqlite"]);
    assert!(out.contains("needs state.path"), "{out}");
    let missing = Path::new("/nonexistent-dir/state.db");
    let out = start_fails(dir.path(), &["--state-path", missing.to_str().unwrap()]);
    assert!(
        out.contains("state.path: cannot use /nonexistent-dir/state.db"),
        "{out}"
    );
}
