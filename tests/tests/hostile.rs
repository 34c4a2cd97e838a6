//! Hostile plugins lose, nothing else notices: every attack of the `hostile`
//! fixture is contained to its own connection (or fails inside the sandbox),
//! an `echo` neighbour keeps answering during and after it, and the hostile
//! plugin itself serves a fresh connection afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use wsgate_tests::*;

/// A plugin dir with `hostile` and `inspect` (fixtures) and `echo` (example),
/// and a server on it; the dir path is unique, so it also finds the process.
async fn start(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = plugin_dir(fixture_plugins(), &["hostile", "inspect"]);
    copy_plugins(example_plugins(), &["echo"], dir.path());
    let server = Server::start(dir.path(), args).await;
    (dir, server)
}

async fn echo_answers(ws: &mut Client, what: &str) {
    send_text(ws, what).await;
    assert_eq!(next_text(ws).await, what, "echo neighbour answers");
}

/// The hostile plugin still serves a new connection (its instance was
/// replaced if it had to be).
async fn hostile_serves_fresh(server: &Server) {
    let mut fresh = server.connect("/ws/hostile").await;
    send_text(&mut fresh, "hello again").await;
    assert_eq!(next_text(&mut fresh).await, "hello again");
    fresh.close(None).await.unwrap();
}

/// One attack that should cost only its own connection, with 1011.
/// Returns how long the attack held its connection (send to close).
async fn contained_with_1011(server: &Server, attack: &str) -> Duration {
    let mut victim = server.connect("/ws/hostile").await;
    let mut echo = server.connect("/ws/echo").await;
    echo_answers(&mut echo, "before").await;
    let start = Instant::now();
    send_text(&mut victim, attack).await;
    // During: the neighbour on another plugin answers promptly.
    let during = Instant::now();
    echo_answers(&mut echo, "during").await;
    assert!(
        during.elapsed() < Duration::from_secs(1),
        "echo slowed down by {attack}: {:?}",
        during.elapsed()
    );
    let (code, reason) = tokio::time::timeout(Duration::from_secs(20), expect_close(&mut victim))
        .await
        .unwrap_or_else(|_| panic!("{attack}: no close\n{}", server.logs()));
    let took = start.elapsed();
    assert_eq!(code, 1011, "{attack}");
    assert_eq!(reason, "internal error", "{attack}: nothing internal leaks");
    echo_answers(&mut echo, "after").await;
    hostile_serves_fresh(server).await;
    took
}

#[tokio::test]
async fn spin_hits_the_deadline_and_hold_time_is_measured() {
    let (_dir, server) = start(&["--hook-timeout", "300ms"]).await;
    let took = contained_with_1011(&server, "spin").await;
    eprintln!("HOLD spin with --hook-timeout 300ms: {took:?}");
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(server);

    let (_dir, server) = start(&[]).await;
    let took = contained_with_1011(&server, "spin").await;
    eprintln!("HOLD spin with default hook timeout (5s): {took:?}");
    assert!(took >= Duration::from_millis(4900), "{took:?}");
    assert!(took < Duration::from_secs(7), "{took:?}");
}

#[tokio::test]
async fn unbounded_recursion_is_a_trap() {
    let (_dir, server) = start(&["--hook-timeout", "300ms"]).await;
    let took = contained_with_1011(&server, "recurse").await;
    eprintln!("HOLD recurse: {took:?}");
}

#[tokio::test]
async fn process_exit_is_a_trap() {
    let (_dir, server) = start(&["--hook-timeout", "300ms"]).await;
    let took = contained_with_1011(&server, "exit").await;
    eprintln!("HOLD exit: {took:?}");
    assert!(server.connect("/ws/echo").await.close(None).await.is_ok());
}

fn server_pid(dir: &Path) -> u32 {
    let out = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(dir.to_str().unwrap())
        .output()
        .expect("pgrep");
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 1, "one server process for {dir:?}: {text}");
    pids[0]
}

/// A plugin that keeps a little of every call (some language runtimes
/// do) never runs out of memory mid-call: an instance grown to three
/// quarters of its limit is replaced between calls, so no call fails and
/// the server holds no more than its instances' limits.
#[tokio::test]
async fn a_plugin_that_keeps_memory_after_every_call_is_given_fresh_instances() {
    let (dir, server) = start(&["--instance-memory", "33554432", "--instances", "2"]).await;
    let pid = server_pid(dir.path());
    let mut leaker = server.connect("/ws/hostile").await;
    let mut echo = server.connect("/ws/echo").await;
    // 160 MiB kept in all, five times what one instance may hold and more
    // than both together.
    for i in 0..160 {
        send_text(&mut leaker, "leak 1024").await;
        let reply = tokio::time::timeout(Duration::from_secs(10), next_text(&mut leaker))
            .await
            .unwrap_or_else(|_| panic!("call {i}: no reply\n{}", server.logs()));
        assert_eq!(reply, "leaked 1024 KiB", "call {i}");
        if i % 40 == 0 {
            echo_answers(&mut echo, &format!("during {i}")).await;
        }
    }
    let (rss, peak) = rss_kib(pid);
    eprintln!("LEAK 160 x 1 MiB kept, 32 MiB per instance: rss {rss} KiB (peak {peak} KiB)");
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB over 200 MiB");
    assert!(
        !server.logs().contains("trapped"),
        "no call ran out of memory\n{}",
        server.logs()
    );
    echo_answers(&mut echo, "after").await;
    hostile_serves_fresh(&server).await;
}

#[tokio::test]
async fn membomb_is_capped_by_the_instance_memory_limit() {
    let cap: u64 = 32 << 20;
    let (dir, server) = start(&["--hook-timeout", "2s", "--instance-memory", "33554432"]).await;
    let pid = server_pid(dir.path());
    // Warm up every plugin so the baseline includes instantiated pools.
    let mut echo = server.connect("/ws/echo").await;
    echo_answers(&mut echo, "warm").await;
    hostile_serves_fresh(&server).await;
    let (base, base_hwm) = rss_kib(pid);
    let took = contained_with_1011(&server, "membomb").await;
    let (after, hwm) = rss_kib(pid);
    // Several bombs in a row: memory of discarded instances is reclaimed.
    for _ in 0..3 {
        contained_with_1011(&server, "membomb").await;
    }
    let (after_more, hwm_more) = rss_kib(pid);
    eprintln!(
        "MEMBOMB cap={} KiB: rss before={base} KiB (peak {base_hwm}), after one={after} KiB \
         (peak {hwm}), after four={after_more} KiB (peak {hwm_more}); held {took:?}",
        cap / 1024
    );
    assert!(
        hwm.saturating_sub(base) < cap / 1024 + 16 * 1024,
        "peak RSS grew by {} KiB, more than the 32 MiB cap (+16 MiB slack)",
        hwm - base
    );
    assert!(
        hwm_more < 200 * 1024,
        "peak RSS {hwm_more} KiB over 200 MiB"
    );
    assert!(after_more < 200 * 1024, "RSS {after_more} KiB over 200 MiB");
    assert!(
        server.logs().contains("hostile"),
        "the failure is logged with the plugin"
    );
}

#[tokio::test]
async fn a_send_flood_gets_typed_errors_not_a_host_trap() {
    let (_dir, server) = start(&["--hook-timeout", "5s"]).await;
    let mut flooder = server.connect("/ws/hostile").await;
    let mut echo = server.connect("/ws/echo").await;
    let start = Instant::now();
    send_text(&mut flooder, "flood").await;
    echo_answers(&mut echo, "during").await;
    // Read what the flooder gets: the queued floods, then the count reply
    // or a close (slow consumer / queue overflow).
    let mut floods = 0u64;
    let mut outcome = None;
    while outcome.is_none() {
        match tokio::time::timeout(Duration::from_secs(15), next_msg(&mut flooder)).await {
            Err(_) => panic!("flooder: neither reply nor close\n{}", server.logs()),
            Ok(tungstenite::Message::Text(t)) if t.as_str() == "flood" => floods += 1,
            Ok(tungstenite::Message::Text(t)) => outcome = Some(format!("reply {t}")),
            Ok(tungstenite::Message::Close(f)) => {
                outcome = Some(format!(
                    "close {:?}",
                    f.map(|f| (u16::from(f.code), f.reason.to_string()))
                ))
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    let outcome = outcome.unwrap();
    let took = start.elapsed();
    // The plugin logs its own counts: the host answered every call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let logs = server.logs();
        if let Some(line) = logs.lines().find(|l| l.contains("flood ok=")) {
            break line[line.find("flood ok=").unwrap()..].to_owned();
        }
        assert!(Instant::now() < deadline, "no flood counts logged:\n{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "FLOOD: received {floods} flood frames, then {outcome}, in {took:?}; plugin saw {counts}"
    );
    assert!(
        counts.contains("other=0"),
        "only typed queue errors: {counts}"
    );
    assert!(
        !counts.contains("queue-full=0 closed=0"),
        "queue is bounded: {counts}"
    );
    assert!(
        outcome.starts_with("reply flood ok=") || outcome.starts_with("close Some((1008"),
        "{outcome}"
    );
    if let Some(counts) = outcome.strip_prefix("reply ") {
        assert!(
            counts.contains("other=0"),
            "only typed queue errors: {counts}"
        );
        assert!(
            !counts.contains("queue-full=0 closed=0"),
            "queue is bounded: {counts}"
        );
        // The sender keeps working after its flood.
        send_text(&mut flooder, "still there").await;
        assert_eq!(next_text(&mut flooder).await, "still there");
    }
    assert!(
        !server.logs().contains("trapped"),
        "no trap:\n{}",
        server.logs()
    );
    echo_answers(&mut echo, "after").await;
    hostile_serves_fresh(&server).await;
}

#[tokio::test]
async fn another_plugins_connection_is_unknown() {
    let (_dir, server) = start(&[]).await;
    let mut stranger = server.connect("/ws/inspect").await;
    let greeting = next_json(&mut stranger).await;
    let id = greeting["id"].as_u64().expect("inspect greets with its id");
    let mut hostile = server.connect("/ws/hostile").await;
    let mut echo = server.connect("/ws/echo").await;
    send_text(&mut hostile, "id").await;
    let own: u64 = next_text(&mut hostile).await.parse().unwrap();
    // The stranger's id, its neighbours (the echo client is one of them)
    // and nonsense: all unknown.
    for target in [id, own + 1, own + 2, id.saturating_sub(1), 0, u64::MAX] {
        if target == own {
            continue;
        }
        send_text(&mut hostile, &format!("foreign {target}")).await;
        let reply = next_text(&mut hostile).await;
        assert_eq!(
            reply.matches("name: \"unknown-connection\"").count(),
            3,
            "send, close and set-attribute on {target}: {reply}"
        );
        assert!(reply.starts_with("foreign send=Err("), "{reply}");
    }
    assert_silent(&mut stranger, Duration::from_millis(300)).await;
    send_text(&mut stranger, "attr-get owned").await;
    assert_eq!(next_text(&mut stranger).await, "Ok(None)");
    echo_answers(&mut echo, "untouched").await;
}

#[tokio::test]
async fn no_ambient_authority() {
    let (_dir, server) = start(&[]).await;
    let mut ws = server.connect("/ws/hostile").await;
    let mut echo = server.connect("/ws/echo").await;

    send_text(&mut ws, "readfile").await;
    let reply = next_text(&mut ws).await;
    eprintln!("READFILE: {reply}");
    assert!(!reply.contains("root:"), "file content leaked: {reply}");
    assert!(reply.starts_with("readfile=Err "), "{reply}");
    assert!(reply.contains("readdir=Err "), "{reply}");
    assert!(reply.contains("write=Err "), "{reply}");
    assert!(!Path::new("/tmp/wsgate-hostile-was-here").exists());

    send_text(&mut ws, "env").await;
    let reply = next_text(&mut ws).await;
    eprintln!("ENV: {reply}");
    assert!(reply.starts_with("env vars=0 home=Err("), "{reply}");

    send_text(&mut ws, "args").await;
    let reply = next_text(&mut ws).await;
    eprintln!("ARGS: {reply}");
    let count: usize = reply
        .strip_prefix("args count=")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(count <= 1, "{reply}");
    assert!(
        !reply.contains("--plugins") && !reply.contains("--listen"),
        "{reply}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    send_text(&mut ws, &format!("socket {port}")).await;
    let reply = next_text(&mut ws).await;
    eprintln!("SOCKET: {reply}");
    assert!(reply.starts_with("socket Err "), "{reply}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_err(),
        "the plugin reached a host socket"
    );
    // Also the server's own port.
    send_text(&mut ws, &format!("socket {}", server.port)).await;
    let reply = next_text(&mut ws).await;
    assert!(reply.starts_with("socket Err "), "{reply}");

    echo_answers(&mut echo, "after").await;
    hostile_serves_fresh(&server).await;
}

#[tokio::test]
async fn a_looping_on_open_is_a_500_within_the_deadline() {
    let (_dir, server) = start(&["--hook-timeout", "300ms"]).await;
    let mut echo = server.connect("/ws/echo").await;
    let start = Instant::now();
    let looping = server.handshake_error("/ws/hostile?loop=open");
    let (answer, ()) = tokio::join!(looping, async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        echo_answers(&mut echo, "during").await;
    });
    let took = start.elapsed();
    eprintln!("HOLD on-open loop (300ms deadline): {took:?} -> {answer:?}");
    let (status, body) = answer;
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("wasm") && !body.contains("epoch"), "{body}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    echo_answers(&mut echo, "after").await;
    hostile_serves_fresh(&server).await;
}

#[tokio::test]
async fn a_looping_on_close_disturbs_no_one() {
    let (_dir, server) = start(&["--hook-timeout", "300ms"]).await;
    let mut echo = server.connect("/ws/echo").await;
    let mut neighbour = server.connect("/ws/hostile").await;
    let mut ws = server.connect("/ws/hostile").await;
    send_text(&mut ws, "set-loop-close").await;
    let reply = next_text(&mut ws).await;
    eprintln!("LOOP-CLOSE: {reply}");
    let start = Instant::now();
    ws.close(None).await.unwrap();
    drop(ws);
    for i in 0..5 {
        let t = Instant::now();
        echo_answers(&mut echo, &format!("during {i}")).await;
        send_text(&mut neighbour, "still").await;
        assert_eq!(next_text(&mut neighbour).await, "still");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = server.http_get("/healthz").await.unwrap();
    assert_eq!(status, 200);
    hostile_serves_fresh(&server).await;
    // Give the looping hook time to hit its deadline, then check the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = server.logs();
    eprintln!(
        "LOOP-CLOSE: on-close loop seen in log: {}, after {:?}",
        logs.contains("on-close looping"),
        start.elapsed()
    );
    assert!(
        logs.contains("on-close looping"),
        "on-close ran with the attribute or state:\n{logs}"
    );
    let trigger = logs.lines().find(|l| l.contains("on-close looping"));
    eprintln!("LOOP-CLOSE: {trigger:?}");
    let overrun = logs.lines().find(|l| l.contains("on-close ran past its"));
    eprintln!("LOOP-CLOSE: {overrun:?}");
    assert!(
        overrun.is_some(),
        "the on-close deadline is enforced:\n{logs}"
    );
    echo_answers(&mut echo, "after").await;
}
