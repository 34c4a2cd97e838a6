//! The core host end to end: real `wsgate` process, real plugins built from
//! source, real WebSocket clients over loopback.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use wsgate_tests::tungstenite::Message;
use wsgate_tests::tungstenite::protocol::CloseFrame;
use wsgate_tests::tungstenite::protocol::frame::Frame;
use wsgate_tests::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsgate_tests::*;

async fn examples() -> (tempfile::TempDir, Server) {
    let dir = plugin_dir(example_plugins(), &["echo", "chat"]);
    let server = Server::start(dir.path(), &[]).await;
    (dir, server)
}

#[tokio::test]
async fn echo_text_and_binary() {
    let (_dir, server) = examples().await;
    let mut ws = server.connect("/ws/echo").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    let payload: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::binary(payload));
    // A larger message crosses the Wasm boundary intact.
    let big = "x".repeat(200_000);
    send_text(&mut ws, &big).await;
    assert_eq!(next_text(&mut ws).await.len(), big.len());
}

#[tokio::test]
async fn unknown_route_is_404_and_rejection_is_403_before_upgrade() {
    let (_dir, server) = examples().await;
    let (status, _) = server.handshake_error("/ws/nope").await;
    assert_eq!(status, 404);
    let (status, body) = server.handshake_error("/ws/chat/lobby").await;
    assert_eq!(status, 403);
    assert_eq!(body, "a username query parameter is required");
    let (status, _) = server.handshake_error("/ws/chat/lobby?username=%20").await;
    assert_eq!(status, 403);
    // A plain GET on a WebSocket route is not an upgrade.
    let (status, _) = server.http_get("/ws/echo").await.unwrap();
    assert!((400..500).contains(&status), "{status}");
}

#[tokio::test]
async fn chat_broadcasts_within_a_channel_only() {
    let (_dir, server) = examples().await;
    let mut alice = server.connect("/ws/chat/lobby?username=alice").await;
    let hello = next_json(&mut alice).await;
    assert_eq!(hello["from"], "<server>");
    assert_eq!(hello["message"], "alice connected");
    assert_eq!(hello["channel"], "lobby");
    assert!(hello["timestamp"].as_u64().unwrap() > 1_600_000_000_000);

    let mut bob = server.connect("/ws/chat/lobby?username=bob").await;
    assert_eq!(next_json(&mut bob).await["message"], "bob connected");
    assert_eq!(next_json(&mut alice).await["message"], "bob connected");
    let mut carol = server.connect("/ws/chat/kitchen?username=carol").await;
    assert_eq!(next_json(&mut carol).await["message"], "carol connected");

    // Quotes and newlines must come back as valid JSON.
    let text = "hi \"bob\"\nhow are you? {}";
    send_text(&mut alice, text).await;
    for ws in [&mut alice, &mut bob] {
        let msg = next_json(ws).await;
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["message"], text);
        assert_eq!(msg["channel"], "lobby");
    }
    assert_silent(&mut carol, Duration::from_millis(300)).await;

    send_text(&mut carol, "anyone?").await;
    assert_eq!(next_json(&mut carol).await["message"], "anyone?");
    assert_silent(&mut alice, Duration::from_millis(300)).await;

    bob.close(None).await.unwrap();
    let bye = next_json(&mut alice).await;
    assert_eq!(bye["message"], "bob disconnected");
    assert_eq!(bye["from"], "<server>");
    assert_silent(&mut carol, Duration::from_millis(200)).await;
}

async fn fixtures(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = plugin_dir(fixture_plugins(), &["trap", "spin", "lifecycle"]);
    copy_plugins(example_plugins(), &["echo"], dir.path());
    let server = Server::start(dir.path(), args).await;
    (dir, server)
}

async fn events(server: &Server) -> Vec<String> {
    let mut probe = server.connect("/ws/lifecycle/probe").await;
    send_text(&mut probe, "events").await;
    let log = next_text(&mut probe).await;
    probe.close(None).await.unwrap();
    log.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn lifecycle_hooks_in_order_with_close_codes() {
    let (_dir, server) = fixtures(&[]).await;
    let mut a = server.connect("/ws/lifecycle").await;
    let mut b = server.connect("/ws/lifecycle?greet=1").await;
    assert_eq!(next_text(&mut b).await, "welcome");
    a.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "bye now".into(),
    }))
    .await
    .unwrap();
    // The plugin closes b itself; b sees the plugin's code and reason.
    send_text(&mut b, "close").await;
    assert_eq!(expect_close(&mut b).await, (4000, "asked".into()));
    drop(b);

    // Wait for the route to drain, then a new connection re-arms first-open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events(&server)
        .await
        .iter()
        .any(|e| e.starts_with("last-close"))
    {
        assert!(Instant::now() < deadline, "{:#?}", events(&server).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = server.connect("/ws/lifecycle").await;
    send_text(&mut c, "events").await;
    let log: Vec<String> = next_text(&mut c).await.lines().map(str::to_owned).collect();
    let kinds: Vec<&str> = log.iter().map(|e| e.split(' ').next().unwrap()).collect();
    assert_eq!(
        &kinds[..7],
        [
            "first-open",
            "open",
            "open",
            "close",
            "close",
            "last-close",
            "first-open"
        ],
        "{log:#?}"
    );
    // a and b close concurrently, so their order is not fixed.
    let closes = [&log[3], &log[4]];
    assert!(
        closes.iter().any(|e| e.ends_with(" 4001 bye now")),
        "{log:#?}"
    );
    assert!(
        closes.iter().any(|e| e.ends_with(" 4000 asked")),
        "{log:#?}"
    );
    assert_eq!(log[0], "first-open /ws/lifecycle");
}

#[tokio::test]
async fn a_trap_closes_only_its_connection() {
    let (_dir, server) = fixtures(&[]).await;
    let mut victim = server.connect("/ws/trap").await;
    let mut neighbour = server.connect("/ws/trap").await;
    let mut other = server.connect("/ws/echo").await;
    send_text(&mut victim, "trap").await;
    let (code, reason) = expect_close(&mut victim).await;
    assert_eq!(code, 1011);
    assert_eq!(
        reason, "internal error",
        "nothing internal reaches the client"
    );
    for ws in [&mut neighbour, &mut other] {
        send_text(ws, "still here").await;
        assert_eq!(next_text(ws).await, "still here");
    }
    // The trapped instance was replaced: the plugin keeps serving new clients.
    let mut fresh = server.connect("/ws/trap").await;
    send_text(&mut fresh, "ok").await;
    assert_eq!(next_text(&mut fresh).await, "ok");
    assert!(server.logs().contains("trapped"), "trap is logged");
}

/// The lines `on-error` recorded, once `want` of them are there.
async fn plugin_errors(server: &Server, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = server.connect("/ws/trap").await;
        send_text(&mut probe, "errors").await;
        let lines: Vec<String> = next_text(&mut probe)
            .await
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn on_error_hears_of_traps_and_overruns_once_each() {
    let (_dir, server) = fixtures(&["--hook-timeout", "300ms"]).await;
    let mut ann = server.connect("/ws/trap?user=ann").await;
    send_text(&mut ann, "trap").await;
    assert_eq!(expect_close(&mut ann).await.0, 1011);
    let mut bob = server.connect("/ws/trap?user=bob").await;
    send_text(&mut bob, "spin").await;
    assert_eq!(expect_close(&mut bob).await.0, 1011);
    // A trap in on-open refuses the handshake; on-error hears of it too.
    let (status, body) = server.handshake_error("/ws/trap?user=cy&trap-open").await;
    assert_eq!(status, 500);
    assert!(!body.contains("trap requested"), "nothing internal: {body}");

    let errors = plugin_errors(&server, 3).await;
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let find = |user: &str| {
        errors
            .iter()
            .find(|e| e.split(' ').nth(1) == Some(user))
            .unwrap_or_else(|| panic!("no error for {user}: {errors:#?}"))
            .clone()
    };
    // The connection's attributes are still there to say whose it was.
    assert!(find("ann").contains("on-message trapped"), "{errors:#?}");
    assert!(
        find("bob").contains("on-message ran past its 300ms deadline"),
        "{errors:#?}"
    );
    assert!(find("cy").contains("on-open trapped"), "{errors:#?}");

    // A trap in on-error is logged once and never loops.
    let mut grumpy = server.connect("/ws/trap?user=grumpy").await;
    send_text(&mut grumpy, "trap").await;
    assert_eq!(expect_close(&mut grumpy).await.0, 1011);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logs().contains("on-error trapped") {
        assert!(Instant::now() < deadline, "the on-error trap is logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.logs().matches("on-error trapped").count(), 1);
    // That was the plugin's fifth crash, so it is now quarantined (503):
    // a trapping on-error counts like any other crash. Others still serve.
    let mut other = server.connect("/ws/echo").await;
    send_text(&mut other, "ok").await;
    assert_eq!(next_text(&mut other).await, "ok");
}

#[tokio::test]
async fn a_hook_waiting_in_a_host_call_is_cut_off_at_its_deadline() {
    let (_dir, server) = fixtures(&["--hook-timeout", "300ms"]).await;
    let mut victim = server.connect("/ws/trap").await;
    let start = Instant::now();
    send_text(&mut victim, "sleep").await;
    let (code, _) = expect_close(&mut victim).await;
    let took = start.elapsed();
    assert_eq!(code, 1011);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        server
            .logs()
            .contains("on-message ran past its 300ms deadline")
    );
    let mut other = server.connect("/ws/trap").await;
    send_text(&mut other, "ok").await;
    assert_eq!(next_text(&mut other).await, "ok");
}

#[tokio::test]
async fn a_runaway_hook_hits_its_deadline_while_others_keep_working() {
    let (_dir, server) = fixtures(&["--hook-timeout", "300ms"]).await;
    let mut victim = server.connect("/ws/spin").await;
    let mut neighbour = server.connect("/ws/spin").await;
    let mut other = server.connect("/ws/echo").await;
    let start = Instant::now();
    send_text(&mut victim, "spin").await;
    // While the hook spins, other connections and plugins still answer.
    for ws in [&mut neighbour, &mut other] {
        send_text(ws, "ping").await;
        assert_eq!(next_text(ws).await, "ping");
    }
    let (code, _) = expect_close(&mut victim).await;
    let took = start.elapsed();
    assert_eq!(code, 1011);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "deadline enforced promptly: {took:?}"
    );
    send_text(&mut neighbour, "after").await;
    assert_eq!(next_text(&mut neighbour).await, "after");
    assert!(server.logs().contains("deadline"));
}

#[tokio::test]
async fn a_corrupt_plugin_is_reported_and_others_still_serve() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(
        dir.path().join("broken.wasm"),
        b"\0asm definitely not a component",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad name.wasm"), b"").unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/echo").await;
    send_text(&mut ws, "fine").await;
    assert_eq!(next_text(&mut ws).await, "fine");
    let (status, _) = server.handshake_error("/ws/broken").await;
    assert_eq!(status, 404);
    let logs = server.logs();
    assert!(
        logs.contains("plugin=broken")
            && logs.contains("decode failed: not a WebAssembly component"),
        "{logs}"
    );
    assert!(logs.contains("plugin names may use only"), "{logs}");
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &["--max-message-size", "1000"]).await;
    let mut ws = server.connect("/ws/echo").await;
    send_text(&mut ws, &"y".repeat(1000)).await;
    assert_eq!(next_text(&mut ws).await.len(), 1000);
    send_text(&mut ws, &"y".repeat(1001)).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);

    // Fragments count together.
    let mut ws = server.connect("/ws/echo").await;
    ws.send(fragment(OpCode::Data(Data::Text), b"y".repeat(600), false))
        .await
        .unwrap();
    ws.send(fragment(
        OpCode::Data(Data::Continue),
        b"y".repeat(600),
        true,
    ))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1009);
}

fn fragment(opcode: OpCode, payload: Vec<u8>, fin: bool) -> Message {
    Message::Frame(Frame::message(payload, opcode, fin))
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_at_the_bad_fragment() {
    let (_dir, server) = examples().await;
    let mut ws = server.connect("/ws/echo").await;
    ws.send(fragment(OpCode::Data(Data::Text), b"ok".to_vec(), false))
        .await
        .unwrap();
    ws.send(fragment(
        OpCode::Data(Data::Continue),
        b"\xff".to_vec(),
        false,
    ))
    .await
    .unwrap();
    // No last fragment: the server must not wait for one.
    assert_eq!(expect_close(&mut ws).await.0, 1007);
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let mut server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/echo").await;
    send_text(&mut ws, "x").await;
    assert_eq!(next_text(&mut ws).await, "x");
    let client = tokio::spawn(async move { expect_close(&mut ws).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(client.await.unwrap().0, 1001);
}

#[tokio::test]
async fn silent_clients_idle_out_and_pinged_clients_stay() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let args = ["--idle-timeout", "600ms", "--ping-interval", "10s"];
    let server = Server::start(dir.path(), &args).await;
    let mut silent = server.connect("/ws/echo").await;
    let start = Instant::now();
    assert_eq!(
        expect_close(&mut silent).await,
        (1001, "idle timeout".into())
    );
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );

    // Pings every 200 ms: a client that answers them (any live client does)
    // never idles out.
    let args = ["--idle-timeout", "600ms", "--ping-interval", "200ms"];
    let server = Server::start(dir.path(), &args).await;
    let mut live = server.connect("/ws/echo").await;
    assert_silent(&mut live, Duration::from_millis(1500)).await;
    send_text(&mut live, "still open").await;
    assert_eq!(next_text(&mut live).await, "still open");
}

#[tokio::test]
async fn a_plugin_built_against_the_first_contract_still_loads_and_serves() {
    let dir = plugin_dir(fixture_plugins(), &["contract-0-1-0"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/contract-0-1-0").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    for want in ["1", "2"] {
        send_text(&mut ws, "count").await;
        assert_eq!(next_text(&mut ws).await, want);
    }
    // It has no on-error export: a trap closes the connection as before.
    send_text(&mut ws, "trap").await;
    assert_eq!(expect_close(&mut ws).await.0, 1011);
    let mut again = server.connect("/ws/contract-0-1-0").await;
    send_text(&mut again, "count").await;
    assert_eq!(next_text(&mut again).await, "3");
    assert!(!server.logs().contains("on-error"), "{}", server.logs());
}
