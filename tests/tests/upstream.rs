//! Upstreams over real sockets: the plugins (the `relay` example and the
//! `dialer` fixture) open WebSocket connections to servers this test
//! starts, and the host holds them to the grants and the limits. Hostile
//! upstreams (a huge message, a flood, a handshake never answered, a close
//! never completed, a peer that never reads) cost bounded memory and never
//! keep an honest client of the plugin waiting.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wsgate_tests::*;

/// One connection the feed accepted, with the path it asked for.
type FeedConn = (String, WebSocketStream<TcpStream>);

/// A WebSocket server on loopback: the upstream the plugins connect to.
/// Each accepted connection is handed to the test, which plays the feed.
struct Feed {
    port: u16,
    accepted: Arc<AtomicUsize>,
    conns: mpsc::UnboundedReceiver<FeedConn>,
    task: AbortHandle,
}

impl Feed {
    async fn start() -> Feed {
        Feed::start_on(0).await
    }

    async fn start_on(port: u16) -> Feed {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, conns) = mpsc::unbounded_channel();
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    // tungstenite's callback type, not ours to shrink.
                    #[allow(clippy::result_large_err)]
                    let record =
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                            path = req.uri().to_string();
                            Ok(resp)
                        };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await {
                        let _ = tx.send((path, ws));
                    }
                });
            }
        });
        Feed {
            port,
            accepted,
            conns,
            task: task.abort_handle(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The next connection a plugin opened, within `wait`.
    async fn next_conn_within(&mut self, wait: Duration) -> FeedConn {
        tokio::time::timeout(wait, self.conns.recv())
            .await
            .expect("the plugin connected to the feed in time")
            .unwrap()
    }

    async fn next_conn(&mut self) -> FeedConn {
        self.next_conn_within(Duration::from_secs(10)).await
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The close frame the feed reads next (data before it is skipped).
async fn feed_hears_close(ws: &mut WebSocketStream<TcpStream>, wait: Duration) -> CloseFrame {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame,
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A config file: the operator allows any ws:// host (sidecars narrow it),
/// `RELAY_UPSTREAM`, and `extra` settings.
fn config(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wsgate.toml"),
        format!(
            "{extra}\n[grants]\nenv = [\"RELAY_UPSTREAM\"]\nallowed_outbound_hosts = [\"ws://*:*\"]\n"
        ),
    )
    .unwrap();
    dir
}

fn config_arg(dir: &tempfile::TempDir) -> String {
    dir.path().join("wsgate.toml").display().to_string()
}

/// A sidecar granting `hosts`, written beside plugin `name`.
fn grant(dir: &Path, name: &str, routes: &str, env: &str, hosts: &[&str]) {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "{routes}\n[grants]\nenv = [{env}]\nallowed_outbound_hosts = [{}]\n",
            hosts.join(", ")
        ),
    )
    .unwrap();
}

/// A server running the relay against `feed_url`, allowed `host`.
async fn relay_server(
    feed_url: &str,
    host: &str,
) -> (tempfile::TempDir, tempfile::TempDir, Server) {
    let dir = plugin_dir(example_plugins(), &["relay"]);
    grant(
        dir.path(),
        "relay",
        "routes = [\"/ws/relay\"]",
        "\"RELAY_UPSTREAM\"",
        &[host],
    );
    let config = config("");
    let server = Server::start_with_env(
        dir.path(),
        &["--config", &config_arg(&config)],
        &[("RELAY_UPSTREAM", feed_url)],
    )
    .await;
    (dir, config, server)
}

#[tokio::test]
async fn the_relay_fans_one_upstream_out_to_every_client_in_order() {
    let mut feed = Feed::start().await;
    let host = format!("ws://127.0.0.1:{}", feed.port);
    let (_dir, _config, server) = relay_server(&feed.url("/prices?depth=1"), &host).await;

    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.connect("/ws/relay").await);
    }
    let (path, mut up) = feed.next_conn().await;
    assert_eq!(path, "/prices?depth=1");
    // Five clients, one upstream connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(feed.accepted(), 1, "connected once for every client");

    for i in 0..200 {
        up.send(Message::text(format!("tick {i}"))).await.unwrap();
    }
    up.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    for ws in &mut clients {
        for i in 0..200 {
            assert_eq!(next_text(ws).await, format!("tick {i}"));
        }
        assert_eq!(next_msg(ws).await, Message::binary(vec![0u8, 1, 2, 255]));
    }

    // The last client leaving closes the upstream.
    for mut ws in clients {
        ws.close(None).await.unwrap();
    }
    let close = feed_hears_close(&mut up, Duration::from_secs(10)).await;
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason, "no clients");
    assert_eq!(feed.accepted(), 1);

    // The next client opens it again.
    let mut ws = server.connect("/ws/relay").await;
    let (_, mut up) = feed.next_conn().await;
    up.send(Message::text("again")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "again");
}

#[tokio::test]
async fn the_relay_keeps_its_clients_while_the_upstream_fails_and_reconnects() {
    // Nothing listens on the feed's port yet: connecting is refused.
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/feed");
    let (_dir, _config, server) = relay_server(&url, &format!("ws://127.0.0.1:{port}")).await;
    let mut a = server.connect("/ws/relay").await;
    eventually(
        "the refusal reaches the relay",
        &server,
        Duration::from_secs(10),
        || async {
            server
                .logs()
                .contains("upstream closed (1006 connection refused); reconnecting")
                .then_some(())
        },
    )
    .await;
    // Still served: a second client connects, and the first is open.
    let mut b = server.connect("/ws/relay").await;
    assert_silent(&mut a, Duration::from_millis(200)).await;

    // The feed comes up: the relay's next attempt finds it.
    let mut feed = Feed::start_on(port).await;
    let (_, mut up) = feed.next_conn_within(Duration::from_secs(40)).await;
    up.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "hello");
    assert_eq!(next_text(&mut b).await, "hello");

    // It vanishes without a close frame: the relay reconnects at once
    // (the first delay after a connection that opened is 250 ms).
    drop(up);
    let started = Instant::now();
    let (_, mut up) = feed.next_conn().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    up.send(Message::text("back")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "back");
    assert_eq!(next_text(&mut b).await, "back");
}

/// A client of the dialer fixture: command replies, and upstream events
/// kept aside until asked for.
struct Dialer {
    ws: Client,
    events: VecDeque<String>,
}

fn is_event(text: &str) -> bool {
    ["open ", "message ", "close "]
        .iter()
        .any(|p| text.starts_with(p))
}

impl Dialer {
    async fn connect(server: &Server) -> Dialer {
        Dialer {
            ws: server.connect("/ws/dialer").await,
            events: VecDeque::new(),
        }
    }

    async fn ask(&mut self, cmd: &str) -> String {
        send_text(&mut self.ws, cmd).await;
        loop {
            let text = next_text(&mut self.ws).await;
            if !is_event(&text) {
                return text;
            }
            self.events.push_back(text);
        }
    }

    /// The id in an `Ok(ID)` reply.
    async fn connect_to(&mut self, url: &str) -> u64 {
        let reply = self.ask(&format!("connect {url}")).await;
        reply
            .strip_prefix("Ok(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("connect {url}: {reply}"))
    }

    /// The next event starting with `prefix`, within 10 s.
    async fn event(&mut self, prefix: &str) -> String {
        if let Some(i) = self.events.iter().position(|e| e.starts_with(prefix)) {
            return self.events.remove(i).unwrap();
        }
        loop {
            let text = next_text(&mut self.ws).await;
            if text.starts_with(prefix) {
                return text;
            }
            self.events.push_back(text);
        }
    }
}

/// A server with the dialer granted `hosts`, `echo` beside it, and
/// `extra` settings.
async fn dialer_server(
    hosts: &[&str],
    extra: &str,
) -> (tempfile::TempDir, tempfile::TempDir, Server) {
    let dir = plugin_dir(fixture_plugins(), &["dialer"]);
    copy_plugins(example_plugins(), &["echo"], dir.path());
    grant(dir.path(), "dialer", "", "", hosts);
    let config = config(extra);
    let server = Server::start(dir.path(), &["--config", &config_arg(&config)]).await;
    (dir, config, server)
}

#[tokio::test]
async fn only_granted_hosts_are_reached_and_never_an_internal_address_by_wildcard() {
    let mut feed = Feed::start().await;
    let (_dir, _config, server) = dialer_server(&["ws://*:*"], "").await;
    let mut d = Dialer::connect(&server).await;
    // A wildcard entry allows the name, and then the address is checked.
    for (url, shown) in [
        (feed.url("/"), format!("ws://127.0.0.1:{}", feed.port)),
        (
            format!("ws://localhost:{}/", feed.port),
            format!("ws://localhost:{}", feed.port),
        ),
        ("ws://[::1]:9/".into(), "ws://[::1]:9".into()),
        ("ws://10.1.2.3/".into(), "ws://10.1.2.3:80".into()),
        (
            "ws://169.254.169.254/latest".into(),
            "ws://169.254.169.254:80".into(),
        ),
    ] {
        let id = d.connect_to(&url).await;
        assert_eq!(
            d.event(&format!("close {id} ")).await,
            format!("close {id} 1006 denied: {shown} resolves to an address that is not allowed")
        );
    }
    assert_eq!(feed.accepted(), 0, "nothing reached the feed");
    // Not an entry's scheme, not a WebSocket URL, too much in the handshake.
    assert_eq!(d.ask("connect wss://example.com/").await, "Err(denied)");
    assert_eq!(
        d.ask("connect https://example.com/").await,
        "Err(invalid-url)"
    );
    let url = feed.url("/");
    assert_eq!(
        d.ask(&format!("connect-headers {url} 33 1")).await,
        "Err(invalid-argument)"
    );
    assert_eq!(
        d.ask(&format!("connect-headers {url} 1 9000")).await,
        "Err(invalid-argument)"
    );
    assert_eq!(
        d.ask(&format!("connect {url} good,a/b")).await,
        "Err(invalid-argument)"
    );
    drop(server);

    // Granted one address: that one is reached (with the subprotocols
    // offered), another port is not.
    let granted = format!("ws://127.0.0.1:{}", feed.port);
    let (_dir, _config, server) = dialer_server(&[&granted], "").await;
    let mut d = Dialer::connect(&server).await;
    assert_eq!(
        d.ask(&format!("connect ws://127.0.0.1:{}/", feed.port + 1))
            .await,
        "Err(denied)"
    );
    let id = d.connect_to(&feed.url("/x")).await;
    let (path, _up) = feed.next_conn().await;
    assert_eq!(path, "/x");
    assert_eq!(d.event("open ").await, format!("open {id}"));
    drop(server);

    // No grants: nothing at all.
    let (_dir, _config, server) = dialer_server(&[], "").await;
    let mut d = Dialer::connect(&server).await;
    assert_eq!(
        d.ask(&format!("connect {}", feed.url("/"))).await,
        "Err(denied)"
    );
}

#[tokio::test]
async fn refusals_and_drops_are_reported_and_a_trap_costs_one_message() {
    // A feed that answers every handshake with 403.
    let refusing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refusing_port = refusing.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = refusing.accept().await {
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)]
                let refuse = |_: &_, _| {
                    let mut resp =
                        tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                    *resp.status_mut() =
                        tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                    Err(resp)
                };
                let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
            });
        }
    });
    let mut feed = Feed::start().await;
    let hosts = [
        format!("ws://127.0.0.1:{}", feed.port),
        format!("ws://127.0.0.1:{refusing_port}"),
    ];
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let (_dir, _config, server) = dialer_server(&hosts, "").await;
    let mut d = Dialer::connect(&server).await;

    let id = d
        .connect_to(&format!("ws://127.0.0.1:{refusing_port}/"))
        .await;
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 1006 handshake failed: status 403")
    );

    // Open, then a trap in on-upstream-message: logged, and the upstream
    // stays open for the next message.
    let id = d.connect_to(&feed.url("/")).await;
    let (_, mut up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    assert_eq!(d.ask(&format!("send {id} hello upstream")).await, "Ok(())");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), up.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        Message::text("hello upstream")
    );
    up.send(Message::text("trap")).await.unwrap();
    up.send(Message::text("after the trap")).await.unwrap();
    assert_eq!(
        d.event("message ").await,
        format!("message {id} after the trap")
    );
    assert!(
        server.logs().contains("on-upstream-message trapped"),
        "{}",
        server.logs()
    );
    assert_eq!(d.ask("list").await, format!("[{id}]"));

    // The upstream closes with a code of its own.
    up.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "rotating".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 4001 rotating")
    );
    // It vanishes: 1006.
    let id = d.connect_to(&feed.url("/")).await;
    let (_, up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    drop(up);
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 1006 connection lost")
    );
    assert_eq!(d.ask("list").await, "[]");

    let (status, metrics) = server.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"wsgate_upstream_connect_failures_total{plugin="dialer",reason="handshake"} 1"#,
        r#"wsgate_upstream_messages_total{direction="in",plugin="dialer"} 2"#,
        r#"wsgate_upstream_messages_total{direction="out",plugin="dialer"} 1"#,
        r#"wsgate_upstream_bytes_total{direction="out",plugin="dialer"} 14"#,
        r#"wsgate_upstreams{plugin="dialer"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_plugin_holds_at_most_upstreams_per_plugin() {
    let mut feed = Feed::start().await;
    let granted = format!("ws://127.0.0.1:{}", feed.port);
    let (_dir, _config, server) =
        dialer_server(&[&granted], "[limits]\nupstreams_per_plugin = 3").await;
    let mut d = Dialer::connect(&server).await;
    let url = feed.url("/");
    assert_eq!(
        d.ask(&format!("connect-many {url} 5")).await,
        "opened=3 then Err(limit-reached)"
    );
    let mut ups = Vec::new();
    for _ in 0..3 {
        ups.push(feed.next_conn().await.1);
    }
    for id in 1..=3 {
        assert_eq!(d.event(&format!("open {id}")).await, format!("open {id}"));
    }
    assert_eq!(d.ask("list").await, "[1, 2, 3]");
    // A slot comes free once an upstream's close is over.
    assert_eq!(d.ask("close 2 1000 enough").await, "Ok(())");
    assert_eq!(d.ask("close 2 1000 again").await, "Err(closed)");
    assert_eq!(d.event("close 2 ").await, "close 2 1000 enough");
    assert_eq!(d.ask(&format!("connect {url}")).await, "Ok(4)");
    assert_eq!(d.ask(&format!("connect {url}")).await, "Err(limit-reached)");
    // `connect` answers before it dials: the fourth arrives after it, and
    // the refused one never does.
    ups.push(feed.next_conn().await.1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(feed.accepted(), 4);
}

#[tokio::test]
async fn upstreams_outlive_a_reload_and_close_with_the_plugin_or_the_server() {
    let mut feed = Feed::start().await;
    let granted = format!("ws://127.0.0.1:{}", feed.port);
    let (dir, config, server) = dialer_server(&[&granted], "").await;
    let mut a = Dialer::connect(&server).await;
    let id = a.connect_to(&feed.url("/")).await;
    let (_, mut up) = feed.next_conn().await;
    assert_eq!(a.event("open ").await, format!("open {id}"));
    a.ws.close(None).await.unwrap();
    drop(a);

    // A new version (its sidecar changed): the upstream stays open, and
    // its messages reach the new version (the old one has no connection
    // left to keep it).
    let before = plugin_info(&server.admin_info("").await, "dialer")["loaded_at_ms"].clone();
    let sidecar = dir.path().join("dialer.toml");
    let mut text = std::fs::read_to_string(&sidecar).unwrap();
    text.push_str("# v2\n");
    std::fs::write(&sidecar, text).unwrap();
    eventually(
        "the new version",
        &server,
        Duration::from_secs(10),
        || async {
            let info = server.admin_info("").await;
            (plugin_info(&info, "dialer")["loaded_at_ms"] != before).then_some(())
        },
    )
    .await;
    let mut b = Dialer::connect(&server).await;
    assert_eq!(b.ask("list").await, format!("[{id}]"));
    up.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        b.event("message ").await,
        format!("message {id} still here")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), up.next())
            .await
            .is_err(),
        "the feed heard nothing from the reload"
    );

    // The plugin removed (and its last connection gone): 1001.
    std::fs::remove_file(dir.path().join("dialer.wasm")).unwrap();
    eventually(
        "the plugin removed",
        &server,
        Duration::from_secs(10),
        || async {
            let info = server.admin_info("").await;
            let gone = info["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["name"] != "dialer");
            gone.then_some(())
        },
    )
    .await;
    b.ws.close(None).await.unwrap();
    let close = feed_hears_close(&mut up, Duration::from_secs(10)).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1001, "plugin removed")
    );
    drop(server);

    // The server shutting down: 1001 too.
    let dir = plugin_dir(fixture_plugins(), &["dialer"]);
    grant(dir.path(), "dialer", "", "", &[&granted]);
    let mut server = Server::start(dir.path(), &["--config", &config_arg(&config)]).await;
    let mut d = Dialer::connect(&server).await;
    let id = d.connect_to(&feed.url("/")).await;
    let (_, mut up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    assert!(server.terminate().success());
    let close = feed_hears_close(&mut up, Duration::from_secs(5)).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1001, "server shutting down")
    );
}

/// Another client of the same plugin is answered promptly.
async fn honest_is_served(honest: &mut Dialer, during: &str) {
    let asked = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(2), honest.ask("ping")).await;
    assert_eq!(
        reply.as_deref(),
        Ok("pong"),
        "{during}: the honest client is not served"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{during}: {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn a_huge_message_or_a_flood_from_an_upstream_is_bounded() {
    let mut feed = Feed::start().await;
    let granted = format!("ws://127.0.0.1:{}", feed.port);
    let (_dir, _config, server) = dialer_server(&[&granted], "").await;
    let mut honest = Dialer::connect(&server).await;
    honest_is_served(&mut honest, "before").await;
    let mut d = Dialer::connect(&server).await;
    let base = server.rss_kib();

    // 8 MiB in one message, past limits.max_message_size (1 MiB): 1009.
    let id = d.connect_to(&feed.url("/")).await;
    let (_, mut up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    let huge = tokio::spawn(async move {
        let _ = up.send(Message::binary(vec![b'x'; 8 << 20])).await;
        up
    });
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 1009 message too big")
    );
    honest_is_served(&mut honest, "after a huge message").await;
    drop(huge.await);

    // A flood, as fast as the feed can write: the host reads it no faster
    // than the plugin's hook takes it, and loses nothing.
    assert_eq!(d.ask("quiet").await, "Ok(())");
    let id = d.connect_to(&feed.url("/")).await;
    let (_, mut up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    let flood = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(3);
        let mut sent = 0u64;
        while Instant::now() < until {
            for _ in 0..64 {
                up.feed(Message::text("f".repeat(512))).await.unwrap();
                sent += 1;
            }
            up.flush().await.unwrap();
        }
        (sent, up)
    });
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        honest_is_served(&mut honest, &format!("during the flood ({i})")).await;
    }
    let (sent, _up) = flood.await.unwrap();
    // Everything arrives, counted by the plugin.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counted: u64 = honest.ask("count").await.parse().unwrap();
        if counted == sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of {sent} delivered\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("flood: {sent} messages in 3 s, all delivered");
    server.assert_rss_within(base, 24, "a huge message and a flood from an upstream");
}

#[tokio::test]
async fn upstreams_that_stall_are_given_up_within_their_timeouts() {
    // Accepts, reads the handshake, never answers; counts the sockets the
    // host lets go of.
    let stalling = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalling_port = stalling.local_addr().unwrap().port();
    let let_go = Arc::new(AtomicUsize::new(0));
    let counted = let_go.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = stalling.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let mut feed = Feed::start().await;
    let hosts = [
        format!("ws://127.0.0.1:{}", feed.port),
        format!("ws://127.0.0.1:{stalling_port}"),
    ];
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let (_dir, _config, server) = dialer_server(
        &hosts,
        "[timeouts]\nupstream_connect = \"1s\"\nclose = \"1s\"",
    )
    .await;
    let mut honest = Dialer::connect(&server).await;
    let mut d = Dialer::connect(&server).await;
    let base = server.rss_kib();

    // Every slot taken by a handshake that is never answered.
    let started = Instant::now();
    let url = format!("ws://127.0.0.1:{stalling_port}/");
    assert_eq!(
        d.ask(&format!("connect-many {url} 20")).await,
        "opened=16 then Err(limit-reached)"
    );
    honest_is_served(&mut honest, "while 16 handshakes stall").await;
    for id in 1..=16 {
        assert_eq!(
            d.event(&format!("close {id} ")).await,
            format!("close {id} 1006 timed out connecting")
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "given up after {took:?}");
    eventually(
        "the stalled sockets closed",
        &server,
        Duration::from_secs(5),
        || async { (let_go.load(Ordering::SeqCst) == 16).then_some(()) },
    )
    .await;
    assert_eq!(d.ask("list").await, "[]");

    // An upstream that stops reading: what the plugin queues for it is
    // bounded (limits.send_queue_bytes, 4 MiB, past the socket's buffers),
    // and a close it never answers is given up after timeouts.close.
    let id = d.connect_to(&feed.url("/")).await;
    let (_, up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    let filled = d.ask(&format!("fill {id} 65536")).await;
    assert!(filled.ends_with("then Err(queue-full)"), "{filled}");
    let sent: usize = filled["sent=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((64..1000).contains(&sent), "{filled}");
    honest_is_served(&mut honest, "while an upstream does not read").await;
    server.assert_rss_within(base, 24, "4 MiB queued for an upstream that does not read");
    assert_eq!(d.ask(&format!("close {id} 1000 bye")).await, "Ok(())");
    let closing = Instant::now();
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 1000 bye")
    );
    let took = closing.elapsed();
    assert!(took < Duration::from_secs(4), "a stuck close held {took:?}");
    assert_eq!(d.ask("list").await, "[]");
    // The peer that never read is let go of.
    let mut raw = up.into_inner();
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(raw.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(drained.is_ok(), "the stuck upstream's socket was closed");
    let _ = raw.shutdown().await;

    // An upstream that reads everything and never answers our close: its
    // slot is held for timeouts.close, no longer.
    let id = d.connect_to(&feed.url("/")).await;
    let (_, up) = feed.next_conn().await;
    assert_eq!(d.event("open ").await, format!("open {id}"));
    let mut raw = up.into_inner();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(raw.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    assert_eq!(d.ask(&format!("close {id} 1000 bye")).await, "Ok(())");
    let closing = Instant::now();
    assert_eq!(
        d.event(&format!("close {id} ")).await,
        format!("close {id} 1000 bye")
    );
    let took = closing.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "an unanswered close held {took:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the host closed the socket")
        .unwrap();
    honest_is_served(&mut honest, "after").await;
    server.assert_rss_within(base, 24, "stalling upstreams");
}
