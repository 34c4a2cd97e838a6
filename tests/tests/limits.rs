//! Handshake admission: the Origin allow-list and connection limits.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use wsgate_tests::*;

async fn server_with_config(toml: &str) -> (tempfile::TempDir, tempfile::TempDir, Server) {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(&file, toml).unwrap();
    let server = Server::start(plugins.path(), &["--config", file.to_str().unwrap()]).await;
    (plugins, config, server)
}

#[tokio::test]
async fn connections_per_address_and_in_total_are_capped() {
    let toml = "[limits]\nmax_connections = 3\nmax_connections_per_ip = 2\n";
    let (_p, _c, server) = server_with_config(toml).await;
    let a = server.connect("/ws/echo").await;
    let _b = server.connect("/ws/echo").await;
    let (status, body) = server.handshake_error("/ws/echo").await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address")
    );

    // A closed connection gives its place back.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        match tokio_tungstenite::connect_async(server.ws_url("/ws/echo")).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the place was not given back: {e}"),
        }
    };
    send_text(&mut c, "in").await;
    assert_eq!(next_text(&mut c).await, "in");
}

#[tokio::test]
async fn the_total_cap_answers_503() {
    let toml = "[limits]\nmax_connections = 2\n";
    let (_p, _c, server) = server_with_config(toml).await;
    let _a = server.connect("/ws/echo").await;
    let _b = server.connect("/ws/echo").await;
    let (status, _) = server.handshake_error("/ws/echo").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn only_listed_origins_may_open_websockets() {
    let toml = "[limits]\nallowed_origins = [\"https://good.example\"]\n";
    let (_p, _c, server) = server_with_config(toml).await;
    let (mut ok, _) = server
        .connect_with("/ws/echo", &[("Origin", "https://good.example")])
        .await;
    send_text(&mut ok, "hi").await;
    assert_eq!(next_text(&mut ok).await, "hi");
    // Non-browser clients send no Origin and are not affected.
    let _plain = server.connect("/ws/echo").await;

    use tungstenite::client::IntoClientRequest;
    let mut req = server.ws_url("/ws/echo").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn a_crash_looping_plugin_is_quarantined_until_redeployed() {
    let plugins = plugin_dir(fixture_plugins(), &["trap"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        "[limits]\nquarantine_after = 3\nquarantine_window = \"1m\"\n",
    )
    .unwrap();
    let server = Server::start(plugins.path(), &["--config", file.to_str().unwrap()]).await;
    let mut survivor = server.connect("/ws/trap").await;
    for _ in 0..3 {
        let mut ws = server.connect("/ws/trap").await;
        send_text(&mut ws, "trap").await;
        assert_eq!(expect_close(&mut ws).await.0, 1011);
    }
    let (status, body) = server.handshake_error("/ws/trap").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "this service is unavailable")
    );
    assert!(
        server.logs().contains("quarantined after 3 crashes"),
        "{}",
        server.logs()
    );
    // Connections already open are not cut off.
    send_text(&mut survivor, "still").await;
    assert_eq!(next_text(&mut survivor).await, "still");
    // A redeploy is a new version with a clean record.
    let (status, _) = server.admin("POST", "/admin/plugins/trap/reload").await;
    assert_eq!(status, 200);
    let mut fresh = server.connect("/ws/trap").await;
    send_text(&mut fresh, "ok").await;
    assert_eq!(next_text(&mut fresh).await, "ok");
}

#[tokio::test]
async fn a_client_over_the_message_rate_is_closed_with_1008() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &["--messages-per-second", "20"]).await;
    let mut polite = server.connect("/ws/echo").await;
    let mut flood = server.connect("/ws/echo").await;
    for i in 0..100 {
        if flood
            .send(tungstenite::Message::text(format!("{i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        expect_close(&mut flood).await,
        (1008, "message rate limit exceeded".into())
    );
    for _ in 0..5 {
        send_text(&mut polite, "fine").await;
        assert_eq!(next_text(&mut polite).await, "fine");
    }
}
