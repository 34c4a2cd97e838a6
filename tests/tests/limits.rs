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

/// With no list, only the server's own pages may open WebSockets: another
/// site cannot ride on the user's cookies. `["*"]` opts out.
#[tokio::test]
async fn by_default_only_the_same_site_may_open_websockets() {
    let (_p, _c, server) = server_with_config("").await;
    let own = format!("http://127.0.0.1:{}", server.port);
    let (mut ok, _) = server.connect_with("/ws/echo", &[("Origin", &own)]).await;
    assert_eq!(ask(&mut ok, "hi").await, "hi");
    let _plain = server.connect("/ws/echo").await;
    for evil in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let refused = server
            .try_handshake_with("/ws/echo", &[("Origin", evil)])
            .await;
        assert_eq!(
            refused.err(),
            Some((403, "origin not allowed".into())),
            "{evil}"
        );
    }
    let (_p, _c, open) = server_with_config("[limits]\nallowed_origins = [\"*\"]\n").await;
    let (mut any, _) = open
        .connect_with("/ws/echo", &[("Origin", "https://elsewhere.example")])
        .await;
    assert_eq!(ask(&mut any, "hi").await, "hi");
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

/// Crashes `/ws/trap` `times` times, each on a fresh connection (1011).
async fn crash(server: &Server, times: usize) {
    for _ in 0..times {
        let mut ws = server.connect("/ws/trap").await;
        send_text(&mut ws, "trap").await;
        assert_eq!(expect_close(&mut ws).await.0, 1011);
    }
}

async fn quarantined(server: &Server) -> bool {
    match server.try_handshake("/ws/trap").await {
        Ok(_) => false,
        Err((status, body)) => {
            assert_eq!(
                (status, body.as_str()),
                (503, "this service is unavailable")
            );
            true
        }
    }
}

#[tokio::test]
async fn a_crash_looping_plugin_is_quarantined_with_a_backoff_that_heals() {
    let plugins = plugin_dir(fixture_plugins(), &["trap"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        "[limits]\nquarantine_after = 3\nquarantine_window = \"1m\"\n\
         quarantine_backoff = \"1s\"\nquarantine_max = \"3s\"\n",
    )
    .unwrap();
    let server = Server::start(plugins.path(), &["--config", file.to_str().unwrap()]).await;
    let mut survivor = server.connect("/ws/trap").await;
    crash(&server, 3).await;
    let tripped = Instant::now();
    assert!(quarantined(&server).await);
    assert!(
        server.logs().contains("quarantined for 1s after 3 crashes"),
        "{}",
        server.logs()
    );
    // Visible in admin info and the metrics while it lasts.
    let info = server.admin_info("").await;
    let trap = plugin_info(&info, "trap");
    assert!(trap["quarantined_until_ms"].as_u64().is_some(), "{trap}");
    let (_, metrics) = server.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("wsgate_plugin_quarantined{plugin=\"trap\"} 1"),
        "{metrics}"
    );
    // Connections already open are not cut off.
    send_text(&mut survivor, "still").await;
    assert_eq!(next_text(&mut survivor).await, "still");
    // It heals on its own.
    eventually(
        "the quarantine to end",
        &server,
        Duration::from_secs(5),
        || async { (!quarantined(&server).await).then_some(()) },
    )
    .await;
    assert!(tripped.elapsed() >= Duration::from_millis(900));
    // Crashing again soon after: twice as long.
    crash(&server, 3).await;
    assert!(server.logs().contains("quarantined for 2s after 3 crashes"));
    let again = Instant::now();
    eventually(
        "the second quarantine to end",
        &server,
        Duration::from_secs(6),
        || async { (!quarantined(&server).await).then_some(()) },
    )
    .await;
    assert!(
        again.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        again.elapsed()
    );
    // A redeploy is a new version with a clean record.
    crash(&server, 3).await;
    assert!(quarantined(&server).await);
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

/// Behind a trusted proxy, the per-address limit counts the client the
/// proxy names (an IPv6 client by its /64) and the plugin sees that
/// address; from anyone else, the header is ignored.
#[tokio::test]
async fn trusted_proxies_name_the_client_and_an_ipv6_64_is_one_client() {
    let plugins = plugin_dir(fixture_plugins(), &["inspect"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        "trusted_proxies = [\"127.0.0.0/8\"]\n[limits]\nmax_connections_per_ip = 2\n",
    )
    .unwrap();
    let server = Server::start(plugins.path(), &["--config", file.to_str().unwrap()]).await;
    let via = |client: &'static str| [("X-Forwarded-For", client)];
    let (mut first, _) = server
        .connect_with("/ws/inspect", &via("2001:db8::1"))
        .await;
    assert_eq!(next_json(&mut first).await["remote"], "[2001:db8::1]:0");
    let (_second, _) = server
        .connect_with("/ws/inspect", &via("2001:db8::2"))
        .await;
    let third = server
        .try_handshake_with("/ws/inspect", &via("2001:db8::3"))
        .await;
    assert_eq!(third.err().map(|(s, _)| s), Some(429), "the same /64");
    let (_elsewhere, _) = server
        .connect_with("/ws/inspect", &via("2001:db8:0:1::1"))
        .await;

    // Without trusted proxies the header is the client's own claim.
    let plain = Server::start(plugins.path(), &[]).await;
    let (mut ws, _) = plain.connect_with("/ws/inspect", &via("203.0.113.7")).await;
    let remote = next_json(&mut ws).await["remote"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
}
