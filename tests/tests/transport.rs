//! The public listener's transport: wss:// with a certificate made at test
//! time, the handshake timeout that keeps slow or silent clients from
//! pinning sockets, and a port shared by several processes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgate_tests::*;

#[tokio::test]
async fn wss_echo_round_trip_and_https_health() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let cert = TestCert::generate();
    let server = Server::start_tls(plugins.path(), &cert, &[]).await;
    assert!(server.ws_url("/ws/echo").starts_with("wss://"));

    let mut ws = server.connect("/ws/echo").await;
    assert!(matches!(
        ws.get_ref(),
        tokio_tungstenite::MaybeTlsStream::Rustls(_)
    ));
    assert_eq!(ask(&mut ws, "over tls").await, "over tls");
    assert_eq!(
        server.http_get("/healthz").await.unwrap(),
        (200, "ok".into())
    );
    let (status, page) = server.http_get("/").await.unwrap();
    assert_eq!(status, 200, "the static demo is served over https too");
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    // The admin listener stays plain HTTP on loopback.
    let info = server.admin_info("").await;
    assert!(info["config"]["tls"]["cert"].is_string(), "{info}");
}

#[tokio::test]
async fn plain_clients_are_refused_on_the_tls_port() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let cert = TestCert::generate();
    let server = Server::start_tls(plugins.path(), &cert, &[]).await;
    let url = format!("ws://127.0.0.1:{}/ws/echo", server.port);
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("a plain handshake is answered or dropped, not left hanging");
    assert!(refused.is_err(), "a ws:// handshake succeeded on TLS");
    assert!(
        http_request(server.port, "GET", "/healthz", &[], "")
            .await
            .is_err(),
        "plain HTTP got an HTTP answer from the TLS port"
    );
    // The server is unharmed.
    let mut ws = server.connect("/ws/echo").await;
    assert_eq!(ask(&mut ws, "still here").await, "still here");
}

#[tokio::test]
async fn bad_tls_settings_stop_startup_with_the_key_named() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let cert = TestCert::generate();
    let cert_path = cert.cert.to_str().unwrap();
    let missing = cert.key.with_file_name("missing-key.pem");

    let out = start_fails(
        plugins.path(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            missing.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("tls.key") && out.contains("cannot read"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    let out = start_fails(plugins.path(), &["--tls-cert", cert_path]);
    assert!(out.contains("tls.cert is set but tls.key is not"), "{out}");

    // A certificate where the key should be.
    let out = start_fails(
        plugins.path(),
        &["--tls-cert", cert_path, "--tls-key", cert_path],
    );
    assert!(
        out.contains("tls.key") && out.contains("not a PEM private key"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

/// Reads until the server closes the connection; how long after `opened`
/// that was.
async fn time_until_closed(stream: &mut TcpStream, opened: Instant, limit: Duration) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((opened + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return opened.elapsed(),
            // An error page (e.g. 408) before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_and_half_sent_handshakes_are_dropped() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(plugins.path(), &["--handshake-timeout", "1s"]).await;
    let addr = ("127.0.0.1", server.port);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"GET /ws/echo HTT").await.unwrap();
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Well-behaved clients are not held up meanwhile.
    let mut ws = server.connect("/ws/echo").await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");

    let limit = Duration::from_secs(5);
    for (name, stream) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("trickle", &mut trickle),
    ] {
        let took = time_until_closed(stream, opened, limit).await;
        eprintln!("{name} connection closed after {took:?}");
        assert!(took >= Duration::from_millis(900), "{name}: {took:?}");
    }
    // The upgraded connection outlives the handshake timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ask(&mut ws, "later").await, "later");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let cert = TestCert::generate();
    let server = Server::start_tls(plugins.path(), &cert, &["--handshake-timeout", "1s"]).await;
    let addr = ("127.0.0.1", server.port);
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // The first bytes of a TLS record header, then nothing.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut ws = server.connect("/ws/echo").await;
    for stream in [&mut silent, &mut partial] {
        let took = time_until_closed(stream, opened, Duration::from_secs(5)).await;
        eprintln!("stalled TLS connection closed after {took:?}");
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }
    assert_eq!(ask(&mut ws, "fine").await, "fine");
}

#[tokio::test]
async fn sigterm_over_tls_closes_with_1001_without_waiting_on_silent_sockets() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let cert = TestCert::generate();
    let mut server = Server::start_tls(plugins.path(), &cert, &[]).await;
    let mut ws = server.connect("/ws/echo").await;
    assert_eq!(ask(&mut ws, "x").await, "x");
    // Mid-handshake sockets must not hold up the exit (the default
    // handshake timeout is 10 s).
    let _silent = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let client = tokio::spawn(async move { expect_close(&mut ws).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.await.unwrap().0, 1001);
}

#[tokio::test]
async fn processes_share_a_port_only_with_reuse_port() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    let a = Server::start_on(plugins.path(), free_port(), &["--reuse-port"]).await;
    let refused = start_fails_on(plugins.path(), a.port, &[]);
    assert!(refused.contains("cannot listen on"), "{refused}");
    let b = Server::start_on(plugins.path(), a.port, &["--reuse-port"]).await;

    // The kernel spreads new connections over both; each one is served.
    const N: usize = 40;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut ws = a.connect("/ws/echo").await;
        assert_eq!(
            ask(&mut ws, &format!("hello {i}")).await,
            format!("hello {i}")
        );
        clients.push(ws);
    }
    let open = |info: serde_json::Value| info["connections"]["total"].as_u64().unwrap();
    let (on_a, on_b) = (open(a.admin_info("").await), open(b.admin_info("").await));
    assert_eq!(on_a + on_b, N as u64);
    assert!(
        on_a > 0 && on_b > 0,
        "one process got them all: {on_a} + {on_b}"
    );
}
