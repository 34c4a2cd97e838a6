//! Handshake context, session and application scope, tags, whispers and
//! timers, against a real server.

use std::time::{Duration, Instant};

use wsgate_tests::*;

async fn server_with(names: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = plugin_dir(fixture_plugins(), &["inspect", "trap"]);
    copy_plugins(example_plugins(), names, dir.path());
    let server = Server::start(dir.path(), &[]).await;
    (dir, server)
}

fn pair<'a>(pairs: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == key)
        .map(|p| p[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn on_open_sees_the_whole_handshake_and_picks_a_subprotocol() {
    let (_dir, server) = server_with(&[]).await;
    let (mut ws, resp) = server
        .connect_with(
            "/ws/inspect?a=1&a=two%20words&b=",
            &[
                ("Sec-WebSocket-Protocol", "v1.wsgate, v2.wsgate, other"),
                ("Cookie", "session=abc123; theme=dark"),
                ("X-Custom", "yes"),
            ],
        )
        .await;
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v2.wsgate");
    let req = next_json(&mut ws).await;
    assert_eq!(req["path"], "/ws/inspect");
    assert_eq!(req["route"], "/ws/inspect");
    assert_eq!(pair(&req["query"], "a"), ["1", "two words"]);
    assert_eq!(pair(&req["query"], "b"), [""]);
    assert_eq!(pair(&req["cookies"], "session"), ["abc123"]);
    assert_eq!(pair(&req["cookies"], "theme"), ["dark"]);
    assert_eq!(pair(&req["headers"], "x-custom"), ["yes"]);
    assert!(req["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        req["subprotocols"],
        serde_json::json!(["v1.wsgate", "v2.wsgate", "other"])
    );
    assert_eq!(req["protocol"], "v2.wsgate");

    let (mut plain, resp) = server.connect_with("/ws/inspect", &[]).await;
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    assert!(next_json(&mut plain).await["protocol"].is_null());
}

#[tokio::test]
async fn on_open_rejects_with_any_4xx_and_its_reason() {
    let (_dir, server) = server_with(&[]).await;
    for status in [400, 401, 403, 429] {
        let (got, body) = server
            .handshake_error(&format!("/ws/inspect?status={status}"))
            .await;
        assert_eq!((got, body.as_str()), (status, "go away"));
    }
    // A status outside 400-599 is the plugin's bug: a plain 500, logged.
    let (got, _) = server.handshake_error("/ws/inspect?status=200").await;
    assert_eq!(got, 500);
    assert!(server.logs().contains("outside 400-599"));
}

#[tokio::test]
async fn attributes_are_per_connection_and_state_outlives_instances() {
    let (_dir, server) = server_with(&[]).await;
    let mut a = server.connect("/ws/inspect").await;
    let mut b = server.connect("/ws/inspect").await;
    next_json(&mut a).await;
    next_json(&mut b).await;
    assert_eq!(ask(&mut a, "attr-set color red").await, "Ok(())");
    assert_eq!(ask(&mut a, "attr-get color").await, "Ok(Some(\"red\"))");
    assert_eq!(ask(&mut b, "attr-get color").await, "Ok(None)");
    assert_eq!(ask(&mut a, "state-set motd hello").await, "Ok(())");
    // Crash an instance: the state lives in the host, not the instance.
    send_text(&mut b, "trap").await;
    assert_eq!(expect_close(&mut b).await.0, 1011);
    let mut c = server.connect("/ws/inspect").await;
    next_json(&mut c).await;
    assert_eq!(ask(&mut c, "state-get motd").await, "Some(\"hello\")");
    assert_eq!(ask(&mut a, "attr-get color").await, "Ok(Some(\"red\"))");
}

#[tokio::test]
async fn a_plugin_cannot_reach_another_plugins_connections() {
    let (_dir, server) = server_with(&[]).await;
    let mut victim = server.connect("/ws/trap").await;
    let mut attacker = server.connect("/ws/inspect").await;
    let me = next_json(&mut attacker).await["id"].as_u64().unwrap();
    // Connection ids are sequential, so the trap connection is a neighbour.
    for id in me.saturating_sub(3)..me {
        let answer = ask(&mut attacker, &format!("send {id} hi")).await;
        assert!(answer.contains("unknown-connection"), "{answer}");
    }
    assert_silent(&mut victim, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn whispers_reach_exactly_one_user_and_all_their_devices() {
    let (_dir, server) = server_with(&["chat"]).await;
    let join = |name: &str, channel: &str| format!("/ws/chat/{channel}?username={name}");
    let mut alice_phone = server.connect(&join("alice", "lobby")).await;
    let mut alice_laptop = server.connect(&join("alice", "lobby")).await;
    let mut bob = server.connect(&join("bob", "lobby")).await;
    let mut carol = server.connect(&join("carol", "lobby")).await;
    let mut other_bob = server.connect(&join("bob", "kitchen")).await;
    // Drain the join notices.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for ws in [
        &mut alice_phone,
        &mut alice_laptop,
        &mut bob,
        &mut carol,
        &mut other_bob,
    ] {
        drain(ws, Duration::from_millis(100)).await;
    }

    send_text(&mut alice_phone, r#"{"to":"bob","message":"psst"}"#).await;
    for ws in [&mut bob, &mut alice_phone, &mut alice_laptop] {
        let msg = next_json(ws).await;
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["to"], "bob");
        assert_eq!(msg["message"], "psst");
        assert_eq!(msg["private"], true);
    }
    for ws in [&mut carol, &mut other_bob] {
        assert_silent(ws, Duration::from_millis(300)).await;
    }

    // Nobody to whisper to: only the sender hears about it.
    send_text(&mut carol, r#"{"to":"zed","message":"hello?"}"#).await;
    assert_eq!(
        next_json(&mut carol).await["message"],
        "zed is not in lobby"
    );
    for ws in [&mut alice_phone, &mut bob] {
        assert_silent(ws, Duration::from_millis(200)).await;
    }

    // Ordinary messages still reach the whole channel, all devices included.
    send_text(&mut bob, "hi all").await;
    for ws in [&mut alice_phone, &mut alice_laptop, &mut bob, &mut carol] {
        assert_eq!(next_json(ws).await["message"], "hi all");
    }
    assert_silent(&mut other_bob, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_to_tag_reaches_tagged_connections_only() {
    let (_dir, server) = server_with(&[]).await;
    let mut a = server.connect("/ws/inspect").await;
    let mut b = server.connect("/ws/inspect").await;
    let mut c = server.connect("/ws/inspect").await;
    for ws in [&mut a, &mut b, &mut c] {
        next_json(ws).await;
    }
    assert_eq!(ask(&mut a, "tag user:42").await, "Ok(())");
    assert_eq!(ask(&mut b, "tag user:42").await, "Ok(())");
    assert_eq!(ask(&mut c, "to-tag user:42 sync").await, "Ok(2)");
    assert_eq!(next_text(&mut a).await, "sync");
    assert_eq!(next_text(&mut b).await, "sync");
    assert_silent(&mut c, Duration::from_millis(200)).await;
    let answer = ask(&mut c, "tag ").await;
    assert!(answer.contains("invalid-argument"), "{answer}");
}

#[tokio::test]
async fn ticker_pushes_while_connected_and_stops_at_last_close() {
    let (_dir, server) = server_with(&["ticker"]).await;
    let mut a = server.connect("/ws/ticker").await;
    let started = Instant::now();
    let first = next_json(&mut a).await;
    let second = next_json(&mut a).await;
    assert_eq!(first["tick"], 1);
    assert_eq!(second["tick"], 2);
    let gap = second["timestamp"].as_u64().unwrap() - first["timestamp"].as_u64().unwrap();
    assert!((500..2500).contains(&gap), "ticks {gap} ms apart");
    assert!(started.elapsed() < Duration::from_secs(6));
    a.close(None).await.unwrap();
    drop(a);

    // With nobody connected for 2.5 s the feed must not advance.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut b = server.connect("/ws/ticker").await;
    send_text(&mut b, "count").await;
    assert_eq!(next_json(&mut b).await["ticks"], 2);
    assert_eq!(
        next_json(&mut b).await["tick"],
        3,
        "a fresh timer resumes the feed"
    );
}

#[tokio::test]
async fn the_publish_api_targets_channels_tags_connections_and_routes() {
    let (_dir, server) = server_with(&["chat"]).await;
    let mut lobby = server.connect("/ws/chat/lobby?username=ann").await;
    let mut kitchen = server.connect("/ws/chat/kitchen?username=ben").await;
    next_json(&mut lobby).await;
    next_json(&mut kitchen).await;
    let (status, body) = server
        .publish("/publish/chat/channel/lobby", &[], "from outside")
        .await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(next_text(&mut lobby).await, "from outside");
    assert_silent(&mut kitchen, Duration::from_millis(200)).await;

    let (status, body) = server.publish("/publish/chat/all", &[], "everyone").await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(2)));
    assert_eq!(next_text(&mut lobby).await, "everyone");
    assert_eq!(next_text(&mut kitchen).await, "everyone");
    let (_, body) = server
        .publish("/publish/chat/all?route=/ws/nope", &[], "x")
        .await;
    assert_eq!(body["delivered"], 0);

    // Tags and connection ids, with the privacy property: only the target hears.
    let mut a = server.connect("/ws/inspect").await;
    let mut b = server.connect("/ws/inspect").await;
    let a_id = next_json(&mut a).await["id"].as_u64().unwrap();
    next_json(&mut b).await;
    assert_eq!(ask(&mut a, "tag user:7").await, "Ok(())");
    let (_, body) = server
        .publish("/publish/inspect/tag/user:7", &[], "for seven")
        .await;
    assert_eq!(body["delivered"], 1);
    assert_eq!(next_text(&mut a).await, "for seven");
    let (_, body) = server
        .publish(
            &format!("/publish/inspect/connections?ids={a_id}"),
            &[],
            "just you",
        )
        .await;
    assert_eq!(body["delivered"], 1);
    assert_eq!(next_text(&mut a).await, "just you");
    assert_silent(&mut b, Duration::from_millis(200)).await;
    for ws in [&mut lobby, &mut kitchen] {
        assert_silent(ws, Duration::from_millis(100)).await;
    }
    // A chat connection's id is not the inspect plugin's to reach.
    let (_, body) = server
        .publish(&format!("/publish/chat/connections?ids={a_id}"), &[], "no")
        .await;
    assert_eq!(body["delivered"], 0);

    // Binary bodies, and on-push letting the plugin decide.
    let (status, _) = server
        .publish(
            "/publish/inspect/all",
            &[("Content-Type", "application/octet-stream")],
            "raw",
        )
        .await;
    assert_eq!(status, 200);
    for ws in [&mut a, &mut b] {
        assert_eq!(
            next_msg(ws).await,
            tungstenite::Message::binary(b"raw".to_vec())
        );
    }
    let (status, body) = server.publish("/publish/inspect/push", &[], "news").await;
    assert_eq!((status, body["pushed"].as_bool()), (200, Some(true)));
    assert_eq!(next_text(&mut b).await, "pushed: news");
}

#[tokio::test]
async fn the_publish_api_refuses_bad_requests_clearly() {
    let (_dir, server) = server_with(&["chat"]).await;
    let (status, _) = http_request(server.admin_port, "POST", "/publish/chat/all", &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) = server.publish("/publish/nope/all", &[], "x").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (status, _) = server
        .publish("/publish/inspect/connections?ids=1,x", &[], "x")
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .publish("/publish/inspect/connections", &[], "x")
        .await;
    assert_eq!(status, 400);
    let big = "x".repeat(1_100_000);
    let (status, _) = server.publish("/publish/inspect/all", &[], &big).await;
    assert_eq!(status, 413);
    // The public listener does not serve the publish API.
    let (status, _) = http_request(server.port, "POST", "/publish/chat/all", &[], "x")
        .await
        .unwrap();
    assert!(status == 404 || status == 405, "{status}");
}

#[tokio::test]
async fn application_state_survives_a_plugin_reload() {
    let (_dir, server) = server_with(&[]).await;
    let mut a = server.connect("/ws/inspect").await;
    next_json(&mut a).await;
    assert_eq!(ask(&mut a, "state-set visits 41").await, "Ok(())");
    let (status, _) = server.admin("POST", "/admin/plugins/inspect/reload").await;
    assert_eq!(status, 200);
    let mut b = server.connect("/ws/inspect").await;
    next_json(&mut b).await;
    assert_eq!(ask(&mut b, "state-get visits").await, "Some(\"41\")");
}
