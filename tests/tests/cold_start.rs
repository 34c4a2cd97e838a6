//! A cold start does not block: the port opens at once, each plugin is
//! served as soon as it has compiled, the routes of plugins still compiling
//! answer 503 with Retry-After, and `/readyz` turns 200 once every plugin
//! has loaded.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgate_tests::*;

/// The raw response to a WebSocket handshake for `path`: status line,
/// headers and whatever body came with them.
async fn handshake_response(port: u16, path: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // A refusal ends with its body; an upgrade leaves the socket open.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.starts_with(b"HTTP/1.1 101") && response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn each_plugin_is_served_as_soon_as_it_has_compiled() {
    // Python and JavaScript plugins take seconds to compile; echo, in Rust,
    // a fraction of one. An empty compile cache: nothing is ready-made.
    let slow = ["chat-py", "chat-js"];
    let plugins = plugin_dir(example_plugins(), &["echo", slow[0], slow[1]]);
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut server = Server::start_listening(
        plugins.path(),
        &["--cache-dir", cache.path().to_str().unwrap()],
    )
    .await;
    let listening = started.elapsed();

    let mut echo = loop {
        if let Ok(ws) = server.try_handshake("/ws/echo").await {
            break ws;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "echo never served:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let echo_served = started.elapsed();
    send_text(&mut echo, "first").await;
    assert_eq!(next_text(&mut echo).await, "first");

    // While a plugin compiles, its routes say so, and when to come back.
    let mut refused = 0;
    for name in slow {
        let (ready, _) = server.http_get("/readyz").await.unwrap();
        let response =
            handshake_response(server.port, &format!("/ws/{name}/lobby?username=a")).await;
        if response.starts_with("HTTP/1.1 503") {
            refused += 1;
            assert_eq!(ready, 503, "not ready while {name} compiles");
            let lower = response.to_ascii_lowercase();
            assert!(lower.contains("\r\nretry-after: "), "{response}");
            assert!(
                response.ends_with("this service is starting; try again shortly"),
                "{response}"
            );
        } else {
            // It finished between the two requests: then it is served.
            assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        }
    }
    assert!(
        refused > 0,
        "both slow plugins compiled within {echo_served:?}; nothing was seen starting"
    );

    server.wait_ready().await;
    let all_ready = started.elapsed();
    assert_eq!(server.http_get("/readyz").await.unwrap().0, 200);
    for name in slow {
        let mut ws = server
            .connect(&format!("/ws/{name}/lobby?username=b"))
            .await;
        let join = next_json(&mut ws).await;
        assert_eq!(join["channel"], "lobby", "{name}: {join}");
    }
    // The echo connection opened early is still served.
    send_text(&mut echo, "last").await;
    assert_eq!(next_text(&mut echo).await, "last");
    eprintln!(
        "cold start, empty compile cache: listening after {listening:?}, /ws/echo served \
         after {echo_served:?}, every plugin after {all_ready:?}"
    );
}
