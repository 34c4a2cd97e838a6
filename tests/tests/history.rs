//! Channel history and recovery (issue #16), end to end: real wsgate
//! processes serving the chat example built from source, real WebSocket
//! clients that resume by the client rules (`wsgate_tests::resume`), a
//! real private Redis, and the publish API.
//!
//! The stream tests publish `{"n":I,"pos":POS}` through the publish API
//! (the position put in by `Position-Placeholder`, each with its own
//! `Idempotency-Key`), break something in the middle (a node killed, Redis
//! restarted), and check that every client saw every `n` exactly once, in
//! order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use wsgate_tests::cluster::*;
use wsgate_tests::redis::Redis;
use wsgate_tests::resume::{Event, Position, ResetReason, ResumingClient};
use wsgate_tests::*;

/// The chat example with `[history]` set to `history` (the lines after
/// the table's header) in its sidecar, in a fresh plugin directory.
fn chat_with_history(history: &str) -> tempfile::TempDir {
    let dir = plugin_dir(example_plugins(), &["chat"]);
    std::fs::write(
        dir.path().join("chat.toml"),
        format!(
            "routes = [\"/ws/chat/{{channel}}\"]\n\n[history]\nchannels = [\"*\"]\n{history}\n"
        ),
    )
    .unwrap();
    dir
}

const PLACEHOLDER: &str = "@@P@@";

/// The publish API's answer to one request, or why there was none.
async fn publish_once(
    admin_port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Value), String> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let (status, body) = http_request(admin_port, "POST", path, &all, body)
        .await
        .map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, json))
}

/// What the publisher of a stream saw.
#[derive(Default, Debug)]
struct PublishReport {
    /// Requests that failed (refused, 5xx, connection errors) and were
    /// retried.
    retries: u32,
    /// Answers marked `"duplicate": true`: a retry of a publish that had
    /// gone through after all.
    duplicates: u32,
}

/// Publishes `body` (with the placeholder) to the lobby with
/// `Idempotency-Key: key`, starting on `nodes[first]` and going round the
/// nodes on any failure until one answers 200 (at most 60 s).
async fn publish_reliably(
    admin_ports: &[u16],
    first: usize,
    key: &str,
    body: &str,
    report: &mut PublishReport,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let headers = [
        ("Position-Placeholder", PLACEHOLDER),
        ("Idempotency-Key", key),
    ];
    let mut attempt = 0;
    loop {
        let port = admin_ports[(first + attempt) % admin_ports.len()];
        match publish_once(port, "/publish/chat/channel/lobby", &headers, body).await {
            Ok((200, answer)) => {
                if answer["duplicate"] == true {
                    report.duplicates += 1;
                }
                return answer;
            }
            other => {
                report.retries += 1;
                assert!(
                    Instant::now() < deadline,
                    "publish {key} failed for 60 s, last: {other:?}"
                );
            }
        }
        attempt += 1;
        if attempt % admin_ports.len() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What one client ended with.
struct Outcome {
    name: String,
    ns: Vec<u64>,
    resets: Vec<ResetReason>,
    done: bool,
    counters: wsgate_tests::resume::Counters,
}

/// A chat client that follows the lobby until the end marker, keeping
/// the `n` of every stream message it is handed.
async fn follow(mut client: ResumingClient, name: String, quiet: Duration) -> Outcome {
    let mut ns = Vec::new();
    let mut resets = Vec::new();
    let mut done = false;
    while let Ok(event) = tokio::time::timeout(quiet, client.next()).await {
        match event {
            Event::Message(text) => {
                let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if msg["end"] == true {
                    done = true;
                    break;
                }
                if let Some(n) = msg["n"].as_u64() {
                    ns.push(n);
                }
            }
            Event::Reset(reason) => resets.push(reason),
            Event::Recovered => {}
        }
    }
    Outcome {
        name,
        ns,
        resets,
        done,
        counters: client.counters,
    }
}

/// Checks every client's outcome: all `total` messages exactly once, in
/// order, no reset; and prints what the clients did on the way.
fn assert_every_message_once_in_order(outcomes: &[Outcome], total: u64) {
    let want: Vec<u64> = (0..total).collect();
    let (mut reconnects, mut gaps, mut duplicates) = (0, 0, 0);
    let mut failures = Vec::new();
    for o in outcomes {
        reconnects += o.counters.reconnects;
        gaps += o.counters.gaps;
        duplicates += o.counters.duplicates;
        if o.ns != want || !o.resets.is_empty() || !o.done {
            let first_wrong = o.ns.iter().zip(&want).position(|(a, b)| a != b);
            failures.push(format!(
                "{}: {} messages, first out of place at index {first_wrong:?} \
                 (around {:?}), resets {:?}, saw the end: {}, {:?}",
                o.name,
                o.ns.len(),
                first_wrong.map(|i| &o.ns[i.saturating_sub(2)..(i + 3).min(o.ns.len())]),
                o.resets,
                o.done,
                o.counters
            ));
        }
    }
    eprintln!(
        "{} clients: {reconnects} reconnects, {gaps} gaps seen, {duplicates} duplicates dropped",
        outcomes.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} clients did not get every message exactly once in order:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}

/// Starts `clients` resuming chat clients in the lobby, alternately on
/// each of `servers` (each falling back to the others), and waits until
/// all are connected (as `info_of` counts them cluster-wide).
async fn lobby_clients(
    servers: &[&Server],
    clients: usize,
    quiet: Duration,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let name = format!("c{i}");
        let urls: Vec<String> = (0..servers.len())
            .map(|k| servers[(i + k) % servers.len()].ws_url(&join(&name, "lobby")))
            .collect();
        let client = ResumingClient::connect(urls).await;
        tasks.push(tokio::spawn(follow(client, name, quiet)));
    }
    tasks
}

/// Publishes `total` stream messages alternately on the nodes, then the
/// end marker; `progress` counts the acknowledged ones.
async fn stream(admin_ports: &[u16], total: u64, progress: &AtomicU64) -> PublishReport {
    let mut report = PublishReport::default();
    for n in 0..total {
        let body = format!(r#"{{"n":{n},"pos":"{PLACEHOLDER}"}}"#);
        let answer = publish_reliably(
            admin_ports,
            n as usize,
            &format!("m-{n}"),
            &body,
            &mut report,
        )
        .await;
        assert!(answer["position"]["offset"].as_u64().is_some(), "{answer}");
        progress.store(n + 1, Ordering::SeqCst);
    }
    let end = format!(r#"{{"end":true,"pos":"{PLACEHOLDER}"}}"#);
    publish_reliably(admin_ports, 0, "end", &end, &mut report).await;
    report
}

async fn until_progress(progress: &AtomicU64, n: u64) {
    while progress.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two nodes of the chat (every channel recorded, 10,000 kept for 10
/// minutes) on the Redis at `url`, and `clients` resuming clients of the
/// lobby spread over them, all connected.
async fn two_nodes_with_clients(
    url: &str,
    clients: usize,
) -> (
    tempfile::TempDir,
    Node,
    Node,
    Vec<tokio::task::JoinHandle<Outcome>>,
) {
    let dir = chat_with_history("size = 10000\nttl = \"10m\"");
    let a = node(dir.path(), url, "").await;
    let b = node(dir.path(), url, "").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let tasks = lobby_clients(&[&a.server, &b.server], clients, Duration::from_secs(20)).await;
    until_info(&b.server, "every client", |i| {
        i["cluster"]["connections"]["total"] == clients
    })
    .await;
    (dir, a, b, tasks)
}

/// (a) 200 clients over two nodes, 5,000 messages; node A is killed
/// (SIGKILL) in the middle; its clients come back on node B with `since`
/// and resume. Every client gets every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_costs_no_client_a_message() {
    const CLIENTS: usize = 200;
    const TOTAL: u64 = 5_000;
    raise_fd_limit();
    let started = Instant::now();
    let redis = Redis::start().await;
    let (_dir, a, b, tasks) = two_nodes_with_clients(&redis.url(), CLIENTS).await;
    eprintln!("{CLIENTS} clients connected after {:?}", started.elapsed());

    let progress = Arc::new(AtomicU64::new(0));
    let a_pid = a.server.pid();
    let killer = {
        let progress = progress.clone();
        tokio::spawn(async move {
            until_progress(&progress, TOTAL / 2).await;
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(a_pid as i32, libc::SIGKILL) };
            Instant::now()
        })
    };
    let streaming = Instant::now();
    let report = stream(
        &[a.server.admin_port, b.server.admin_port],
        TOTAL,
        &progress,
    )
    .await;
    let killed_at = killer.await.unwrap();
    eprintln!(
        "published {TOTAL} in {:?} ({report:?}); node A killed {:?} before the end",
        streaming.elapsed(),
        killed_at.elapsed()
    );
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    eprintln!("every client done after {:?}", started.elapsed());
    let moved = outcomes
        .iter()
        .filter(|o| o.counters.reconnects > 0)
        .count();
    assert!(moved >= CLIENTS / 2, "only {moved} clients reconnected");
    if outcomes.iter().any(|o| o.ns.len() as u64 != TOTAL) {
        eprintln!("node B's log:\n{}", tail(&b.server.logs(), 60));
    }
    assert_every_message_once_in_order(&outcomes, TOTAL);
    drop(a);
}

/// (b) Redis (with an append-only file, fsync'd on every write) is
/// restarted in the middle of the stream: every client still gets every
/// message once, in order, in the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_costs_no_client_a_message() {
    const CLIENTS: usize = 50;
    const TOTAL: u64 = 5_000;
    raise_fd_limit();
    let started = Instant::now();
    let mut redis = Redis::start_persistent().await;
    let (_dir, a, b, tasks) = two_nodes_with_clients(&redis.url(), CLIENTS).await;

    let progress = Arc::new(AtomicU64::new(0));
    let restarter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            until_progress(&progress, TOTAL / 2).await;
            redis.stop();
            let down = Instant::now();
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.restart().await;
            eprintln!("Redis down for {:?}", down.elapsed());
            redis
        })
    };
    let streaming = Instant::now();
    let report = stream(
        &[a.server.admin_port, b.server.admin_port],
        TOTAL,
        &progress,
    )
    .await;
    let _redis = restarter.await.unwrap();
    eprintln!(
        "published {TOTAL} in {:?} ({report:?})",
        streaming.elapsed()
    );
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    eprintln!("every client done after {:?}", started.elapsed());
    if outcomes.iter().any(|o| o.ns.len() as u64 != TOTAL) {
        eprintln!("node A's log:\n{}", tail(&a.server.logs(), 60));
        eprintln!("node B's log:\n{}", tail(&b.server.logs(), 60));
    }
    assert_every_message_once_in_order(&outcomes, TOTAL);
}

/// The last `lines` lines of a log.
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `pos` of a chat message.
fn pos_of(msg: &Value) -> Position {
    msg["pos"]
        .as_str()
        .unwrap_or_else(|| panic!("no pos in {msg}"))
        .parse()
        .unwrap()
}

/// Closes `ws` and waits until the server has closed its side too.
async fn close(ws: &mut Client) {
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
}

/// Reads until the socket is quiet for `quiet`; everything as JSON.
async fn read_all(ws: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(msg) = tokio::time::timeout(quiet, next_json(ws)).await {
        got.push(msg);
    }
    got
}

/// (c) Standalone, ttl 1 s: a client away longer than the TTL while
/// messages were published is told `recovered:false` first; one away
/// shorter is sent exactly what it missed, then `recovered:true`.
#[tokio::test]
async fn away_longer_than_the_ttl_is_not_recovered_shorter_is() {
    let dir = chat_with_history("size = 100\nttl = \"1s\"");
    let server = Server::start(dir.path(), &[]).await;
    let mut watcher = server.connect(&join("watcher", "lobby")).await;
    let mut long = server.connect(&join("long", "lobby")).await;
    drain(&mut watcher, QUIET).await;
    let long_last = pos_of(read_all(&mut long, QUIET).await.last().unwrap());
    close(&mut long).await;
    drain(&mut watcher, QUIET).await;
    for n in 0..3 {
        let body = format!(r#"{{"n":{n},"pos":"{PLACEHOLDER}"}}"#);
        let (status, answer) = server
            .publish(
                "/publish/chat/channel/lobby",
                &[("Position-Placeholder", PLACEHOLDER)],
                &body,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    drain(&mut watcher, QUIET).await;
    // Longer than the TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let path = format!("{}&since={long_last}", join("long", "lobby"));
    let mut long = server.connect(&path).await;
    let got = read_all(&mut long, QUIET).await;
    assert_eq!(got[0]["type"], "recovery", "{got:?}");
    assert_eq!(got[0]["recovered"], false, "{got:?}");
    let latest: Position = got[0]["latest"].as_str().unwrap().parse().unwrap();
    assert_eq!(latest.epoch, long_last.epoch);
    assert!(
        got[1..].iter().all(|m| m["n"].is_null()),
        "the expired messages are not replayed: {got:?}"
    );
    assert_eq!(got.last().unwrap()["message"], "long connected");
    // The resuming client takes it as a fresh start.
    let url = server.ws_url(&join("long2", "lobby"));
    let mut resumer = ResumingClient::resume(vec![url], Some(long_last.clone())).await;
    let first = tokio::time::timeout(Duration::from_secs(5), resumer.next())
        .await
        .unwrap();
    assert_eq!(first, Event::Reset(ResetReason::NotRecovered));
    drop(resumer);
    drain(&mut watcher, QUIET).await;
    drain(&mut long, QUIET).await;

    // Away shorter than the TTL: exactly what the watcher saw meanwhile.
    let mut short = server.connect(&join("short", "lobby")).await;
    let short_last = pos_of(read_all(&mut short, QUIET).await.last().unwrap());
    drain(&mut watcher, QUIET).await;
    drain(&mut long, QUIET).await;
    close(&mut short).await;
    for n in 10..13 {
        let body = format!(r#"{{"n":{n},"pos":"{PLACEHOLDER}"}}"#);
        let headers = [("Position-Placeholder", PLACEHOLDER)];
        let (status, answer) = server
            .publish("/publish/chat/channel/lobby", &headers, &body)
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let missed = read_all(&mut watcher, QUIET).await;
    let path = format!("{}&since={short_last}", join("short", "lobby"));
    let mut short = server.connect(&path).await;
    let got = read_all(&mut short, QUIET).await;
    assert_eq!(missed.len(), 4, "short's leave and three lines: {missed:?}");
    assert_eq!(&got[..missed.len()], &missed[..], "exactly what it missed");
    let notice = &got[missed.len()];
    assert_eq!(notice["type"], "recovery");
    assert_eq!(notice["recovered"], true);
    assert_eq!(
        notice["latest"],
        json!(pos_of(missed.last().unwrap()).to_string())
    );
    assert_eq!(got.len(), missed.len() + 2, "then its join: {got:?}");
    assert_eq!(got[missed.len() + 1]["message"], "short connected");
    assert_eq!(
        pos_of(&got[missed.len() + 1]).offset,
        pos_of(missed.last().unwrap()).offset + 1
    );
}

/// (d) The publish API: a retried publish with the same `Idempotency-Key`
/// is answered `"duplicate": true` with the first position and delivered
/// once; a recorded channel's answer has a position; `Position-Placeholder`
/// is refused on a target that is not a recorded channel.
#[tokio::test]
async fn idempotency_keys_and_positions_in_the_publish_api() {
    let dir = chat_with_history("size = 100");
    let server = Server::start(dir.path(), &[]).await;
    let mut alice = server.connect(&join("alice", "lobby")).await;
    drain(&mut alice, QUIET).await;
    let path = "/publish/chat/channel/lobby";

    let headers = [
        ("Position-Placeholder", PLACEHOLDER),
        ("Idempotency-Key", "k-1"),
    ];
    let body = format!(r#"{{"n":1,"pos":"{PLACEHOLDER}"}}"#);
    let (status, first) = server.publish(path, &headers, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["delivered"], 1);
    assert!(first.get("duplicate").is_none(), "{first}");
    let position = format!(
        "{}:{}",
        first["position"]["epoch"].as_str().unwrap(),
        first["position"]["offset"]
    );
    let got = next_json(&mut alice).await;
    assert_eq!(got, json!({"n": 1, "pos": position}));

    let (status, again) = server.publish(path, &headers, &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["position"], first["position"]);
    // Only the next publish arrives, right after the first.
    let (status, next) = server.publish(path, &[], "plain").await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(
        next["position"]["offset"].as_u64(),
        Some(first["position"]["offset"].as_u64().unwrap() + 1),
        "a plain publish to a recorded channel is recorded: {next}"
    );
    assert_eq!(next_text(&mut alice).await, "plain");
    assert_silent(&mut alice, Duration::from_millis(200)).await;

    // A key on a target that is not recorded works the same way.
    let tag = "/publish/chat/tag/user:alice@lobby";
    let key = [("Idempotency-Key", "k-2")];
    let (status, once) = server.publish(tag, &key, "to alice").await;
    assert_eq!((status, &once["delivered"]), (200, &json!(1)), "{once}");
    let (status, twice) = server.publish(tag, &key, "to alice").await;
    assert_eq!(status, 200, "{twice}");
    assert_eq!(twice["duplicate"], true, "{twice}");
    assert_eq!(next_text(&mut alice).await, "to alice");
    assert_silent(&mut alice, Duration::from_millis(200)).await;

    // Position-Placeholder needs a recorded channel, and the text in the body.
    let placeholder = [("Position-Placeholder", PLACEHOLDER)];
    let (status, refused) = server
        .publish(tag, &placeholder, &format!("at {PLACEHOLDER}"))
        .await;
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = server.publish(path, &placeholder, "no place").await;
    assert_eq!(status, 400, "{refused}");
    // A key that is not 1-128 printable characters.
    let long = "k".repeat(129);
    let (status, refused) = server
        .publish(path, &[("Idempotency-Key", long.as_str())], "x")
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_silent(&mut alice, Duration::from_millis(200)).await;
}

/// Across nodes: a retry sent to the other node is still a duplicate.
#[tokio::test]
async fn an_idempotency_key_holds_across_nodes() {
    let redis = Redis::start().await;
    let dir = chat_with_history("size = 100");
    let a = node(dir.path(), &redis.url(), "").await;
    let b = node(dir.path(), &redis.url(), "").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let mut alice = a.server.connect(&join("alice", "lobby")).await;
    let mut bob = b.server.connect(&join("bob", "lobby")).await;
    until_info(&a.server, "both", |i| {
        i["cluster"]["connections"]["total"] == 2
    })
    .await;
    drain(&mut alice, QUIET).await;
    drain(&mut bob, QUIET).await;
    let path = "/publish/chat/channel/lobby";
    let headers = [
        ("Position-Placeholder", PLACEHOLDER),
        ("Idempotency-Key", "x-1"),
    ];
    let body = format!(r#"{{"n":1,"pos":"{PLACEHOLDER}"}}"#);
    let (status, first) = a.server.publish(path, &headers, &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = b.server.publish(path, &headers, &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["position"], first["position"]);
    for ws in [&mut alice, &mut bob] {
        assert_eq!(next_json(ws).await["n"], 1);
        assert_silent(ws, Duration::from_millis(300)).await;
    }
}

/// A client floods a recorded channel with large messages on a server
/// whose `limits.history_bytes` is 1 MiB: history stays within it (a
/// returning client is told it cannot resume, and what is replayed fits
/// in 1 MiB), an honest client in another channel is served throughout,
/// and the server's memory grows by a bounded amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_is_held_to_the_history_budget() {
    const BUDGET: usize = 1 << 20;
    const MESSAGES: usize = 3_000;
    const SIZE: usize = 64 << 10;
    // Without the budget, history would keep every message recorded (size
    // 10000: up to 640 MiB of these). The bound allows the budget, the
    // flooder's send queue (`send_queue_bytes`, 4 MiB) and what the
    // chat's instances and the allocator keep after handling 64 KiB
    // messages; it is far below what the flood records (checked below).
    const BOUND_MIB: u64 = 24;
    let dir = chat_with_history("size = 10000\nttl = \"10m\"");
    let (_cfg, file) = config_file(&format!("[limits]\nhistory_bytes = {BUDGET}\n"));
    let server = Server::start(dir.path(), &["--config", &file]).await;
    let mut honest = server.connect(&join("honest", "kitchen")).await;
    drain(&mut honest, QUIET).await;
    let mut watcher = server.connect(&join("watcher", "lobby")).await;
    let first = pos_of(&next_json(&mut watcher).await);
    drop(watcher);
    let base = server.rss_kib();

    // The flooder does not read: each of its connections ends once its
    // own echoes fill its send queue (closed as a slow consumer), or once
    // the server, stuck writing to it, stops reading (then the flooder
    // drops it after a second, which resets it), and it comes back for
    // more, until it has sent MESSAGES.
    let url = server.ws_url(&join("flooder", "lobby"));
    let writer = tokio::spawn(async move {
        let line = "x".repeat(SIZE);
        let (mut sent, mut connections) = (0, 0);
        while sent < MESSAGES {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                .await
                .expect("connect");
            connections += 1;
            while sent < MESSAGES {
                let send = ws.send(tungstenite::Message::text(line.clone()));
                let sent_in_time = tokio::time::timeout(Duration::from_secs(1), send).await;
                if !matches!(sent_in_time, Ok(Ok(()))) {
                    break;
                }
                sent += 1;
            }
        }
        (sent, connections)
    });
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the flood did not get through in 60 s\n{}",
            tail(&server.logs(), 40)
        );
        send_text(&mut honest, &format!("still here {rounds}")).await;
        let echo = tokio::time::timeout(Duration::from_secs(10), next_json(&mut honest))
            .await
            .expect("the honest client was not served during the flood");
        assert_eq!(echo["message"], format!("still here {rounds}"));
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sent, connections) = writer.await.unwrap();
    eprintln!(
        "flood: {sent} messages of {SIZE} bytes over {connections} connections; \
         {rounds} honest rounds"
    );
    server.assert_rss_within(base, BOUND_MIB, "a flood of 64 KiB messages into history");

    // What history kept fits the budget, and a client that wanted all of
    // it is told it cannot have it.
    let path = format!("{}&since={first}", join("late", "lobby"));
    let mut late = server.connect(&path).await;
    let notice = next_json(&mut late).await;
    assert_eq!(notice["type"], "recovery", "{notice}");
    assert_eq!(notice["recovered"], false, "{notice}");
    let latest: Position = notice["latest"].as_str().unwrap().parse().unwrap();
    assert_eq!(latest.epoch, first.epoch);
    let recorded = (latest.offset - first.offset) as usize;
    eprintln!("{recorded} messages recorded in the lobby during the flood");
    assert!(
        recorded * SIZE > 16 * BUDGET,
        "the flood ({recorded} messages recorded) must outgrow the budget many times"
    );
    let mut kept = 0usize;
    let mut count = 0;
    loop {
        let text = next_text(&mut late).await;
        let msg: Value = serde_json::from_str(&text).unwrap();
        if msg["message"] == "late connected" {
            break;
        }
        kept += text.len();
        count += 1;
    }
    eprintln!("history kept {count} messages, {kept} bytes");
    assert!(kept <= BUDGET, "history held {kept} bytes, over {BUDGET}");
    assert!(count > 0, "the newest messages are kept");
    send_text(&mut honest, "after").await;
    assert_eq!(next_json(&mut honest).await["message"], "after");
}

/// A connection of the inspect fixture and its id (from its greeting).
async fn inspect_client(server: &Server) -> (Client, u64) {
    let mut ws = server.connect("/ws/inspect").await;
    let greeting = next_json(&mut ws).await;
    let id = greeting["id"].as_u64().expect("an id in the greeting");
    (ws, id)
}

fn ids(list: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Cluster-wide presence: `connection-count`, `subscribers`, `tagged` and
/// `channels` answer for every node (the count as of the nodes' last
/// heartbeats), the `node-*` calls for this node alone; a dead node drops
/// out of both.
#[tokio::test]
async fn presence_answers_for_the_whole_cluster_and_node_calls_for_one_node() {
    let redis = Redis::start().await;
    let dir = plugin_dir(fixture_plugins(), &["inspect"]);
    let a = node(dir.path(), &redis.url(), "").await;
    let mut b = node(dir.path(), &redis.url(), "").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let (mut x, x_id) = inspect_client(&a.server).await;
    let (mut y, y_id) = inspect_client(&b.server).await;
    let (mut z, z_id) = inspect_client(&b.server).await;
    let (_w, _) = inspect_client(&b.server).await;
    for ws in [&mut x, &mut y, &mut z] {
        assert_eq!(ask(ws, "sub room").await, "Ok(())");
    }
    assert_eq!(ask(&mut z, "tag vip").await, "Ok(())");
    assert_eq!(ask(&mut y, "sub attic").await, "Ok(())");

    // The other node's count arrives with its heartbeat.
    let deadline = Instant::now() + Duration::from_millis(NODE_TTL_MS + 5 * HEARTBEAT_MS);
    let seen = loop {
        let seen: Value = serde_json::from_str(&ask(&mut x, "presence room vip").await).unwrap();
        if seen["count"] == 4 || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["count"], 4, "{seen}");
    assert_eq!(seen["node-count"], 1, "{seen}");
    let mut room = vec![x_id, y_id, z_id];
    room.sort_unstable();
    assert_eq!(ids(&seen["subscribers"]), room, "{seen}");
    assert_eq!(ids(&seen["node-subscribers"]), [x_id], "{seen}");
    assert_eq!(ids(&seen["tagged"]), [z_id], "{seen}");
    assert_eq!(ids(&seen["node-tagged"]), Vec::<u64>::new(), "{seen}");
    assert_eq!(seen["channels"], json!(["attic", "room"]), "{seen}");
    assert_eq!(seen["node-channels"], json!(["room"]), "{seen}");
    // And from node B's side.
    let seen: Value = serde_json::from_str(&ask(&mut y, "presence room vip").await).unwrap();
    assert_eq!(seen["node-count"], 3, "{seen}");
    assert_eq!(ids(&seen["subscribers"]), room, "{seen}");
    assert_eq!(ids(&seen["node-tagged"]), [z_id], "{seen}");

    // Node B dies: it drops out within node_ttl + heartbeat.
    b.server.kill();
    let deadline = Instant::now() + Duration::from_millis(NODE_TTL_MS + 2 * HEARTBEAT_MS + 500);
    let seen = loop {
        let seen: Value = serde_json::from_str(&ask(&mut x, "presence room vip").await).unwrap();
        if seen["count"] == 1 || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["count"], 1, "{seen}");
    assert_eq!(ids(&seen["subscribers"]), [x_id], "{seen}");
    assert_eq!(ids(&seen["tagged"]), Vec::<u64>::new(), "{seen}");
    assert_eq!(seen["channels"], json!(["room"]), "{seen}");
}

/// The lifecycle fixture's log of hooks (kept in plugin state, which a
/// cluster shares through Redis), without adding to it.
async fn lifecycle_events(server: &Server) -> Vec<String> {
    let mut probe = server.connect("/ws/lifecycle/probe").await;
    let log = ask(&mut probe, "events").await;
    log.lines()
        .filter(|l| l.starts_with("first-open") || l.starts_with("last-close"))
        .map(str::to_owned)
        .collect()
}

/// `on-first-open` and `on-last-close` are per node, as the contract
/// says: each node calls them for its own first and last connection on a
/// route, whatever the other nodes hold.
#[tokio::test]
async fn first_open_and_last_close_are_per_node() {
    let redis = Redis::start().await;
    let dir = plugin_dir(fixture_plugins(), &["lifecycle"]);
    let a = node(dir.path(), &redis.url(), "").await;
    let b = node(dir.path(), &redis.url(), "").await;
    until_info(&a.server, "two nodes", |i| {
        i["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let wait = |n: usize| {
        let server = &a.server;
        async move {
            eventually("the hooks", server, Duration::from_secs(10), || async {
                let events = lifecycle_events(server).await;
                (events.len() >= n).then_some(events)
            })
            .await
        }
    };
    let mut on_a = a.server.connect("/ws/lifecycle").await;
    assert_eq!(wait(1).await, ["first-open /ws/lifecycle"]);
    let mut on_b = b.server.connect("/ws/lifecycle").await;
    assert_eq!(
        wait(2).await,
        ["first-open /ws/lifecycle", "first-open /ws/lifecycle"],
        "node B's first connection, though node A has one"
    );
    on_a.close(None).await.unwrap();
    assert_eq!(
        wait(3).await[2],
        "last-close /ws/lifecycle",
        "node A's last connection, though node B has one"
    );
    on_b.close(None).await.unwrap();
    let events = wait(4).await;
    assert_eq!(events[3], "last-close /ws/lifecycle");
    tokio::time::sleep(QUIET).await;
    assert_eq!(lifecycle_events(&a.server).await.len(), 4);
}
