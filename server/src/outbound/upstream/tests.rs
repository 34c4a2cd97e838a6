//! Upstreams against real WebSocket servers on loopback sockets, the
//! server side answered by hand so it can also run over TLS, refuse, or
//! never answer; the plugin is a recorder of the events it is given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use yawc::{Frame, OpCode, Options, Role, WebSocket};

use super::*;
use crate::config::{Limits, Timeouts};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Open(UpstreamId),
    Message(UpstreamId, Message),
    Close(UpstreamId, u16, String),
}

/// The plugin: records every event, each hook taking `delay`.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    delay: Duration,
}

impl UpstreamTarget for Recorder {
    fn deliver(
        self: Arc<Self>,
        id: UpstreamId,
        event: UpstreamEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let seen = match event {
                UpstreamEvent::Open => Seen::Open(id),
                UpstreamEvent::Message(msg) => Seen::Message(id, msg),
                UpstreamEvent::Close(f) => Seen::Close(id, f.code.get(), f.reason),
            };
            let _ = self.seen.send(seen);
        })
    }
}

struct Plugin {
    upstreams: Arc<Upstreams>,
    _recorder: Arc<Recorder>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Plugin {
    fn new(settings: UpstreamSettings) -> Plugin {
        Plugin::with_delay(settings, Duration::ZERO)
    }

    fn with_delay(settings: UpstreamSettings, delay: Duration) -> Plugin {
        let (tx, seen) = mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder { seen: tx, delay });
        let upstreams = Upstreams::new("test", settings);
        let target: Arc<dyn UpstreamTarget> = recorder.clone();
        upstreams.bind(Arc::downgrade(&target), true);
        Plugin {
            upstreams,
            _recorder: recorder,
            seen,
        }
    }

    fn connect(&self, policy: &OutboundPolicy, url: &str) -> Result<UpstreamId, CallError> {
        self.upstreams.connect(policy, url, vec![], vec![])
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("an upstream event within 10 s")
            .expect("the recorder is alive")
    }
}

fn settings() -> UpstreamSettings {
    let timeouts = Timeouts {
        close: Duration::from_millis(500),
        upstream_connect: Duration::from_secs(2),
        ..Timeouts::default()
    };
    UpstreamSettings::new(&Limits::default(), &timeouts)
}

fn policy(entries: &[&str]) -> OutboundPolicy {
    OutboundPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
}

fn loopback() -> OutboundPolicy {
    policy(&["ws://127.0.0.1:*", "wss://localhost:*"])
}

/// How the test server answers a handshake.
#[derive(Clone, Copy)]
enum Answer {
    Upgrade,
    Status(u16),
}

/// Reads a request head and answers it; with `Upgrade`, the server side
/// of the WebSocket and the head it was opened with.
async fn accept_ws<S>(io: S, answer: Answer) -> Option<(String, WebSocket<BufReader<S>>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = BufReader::new(io);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let key = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })?;
    match answer {
        Answer::Status(status) => {
            let response = format!("HTTP/1.1 {status} No\r\ncontent-length: 0\r\n\r\n");
            io.write_all(response.as_bytes()).await.ok()?;
            None
        }
        Answer::Upgrade => {
            let mut sha = Sha1::new();
            sha.update(key.as_bytes());
            sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            );
            io.write_all(response.as_bytes()).await.ok()?;
            let options = Options::default().with_max_payload_read(8 << 20);
            Some((
                head,
                WebSocket::from_stream(io, Role::Server, options).ok()?,
            ))
        }
    }
}

type ServerSide = (String, WebSocket<BufReader<TcpStream>>);

/// A plain WebSocket server on loopback: its address, and each accepted
/// conversation.
async fn server(answer: Answer) -> (SocketAddr, mpsc::UnboundedReceiver<ServerSide>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(accepted) = accept_ws(tcp, answer).await {
                    let _ = tx.send(accepted);
                }
            });
        }
    });
    (addr, rx)
}

async fn accepted(rx: &mut mpsc::UnboundedReceiver<ServerSide>) -> ServerSide {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a connection within 10 s")
        .unwrap()
}

/// The next data or close frame the server side reads.
async fn read<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Option<Frame> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")?;
        if !matches!(frame.opcode(), OpCode::Ping | OpCode::Pong) {
            return Some(frame);
        }
    }
}

#[tokio::test]
async fn opens_relays_in_order_and_closes_with_the_plugins_code() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let mut plugin = Plugin::new(settings());
    let url = format!("ws://{addr}/feed?x=1");
    let id = plugin
        .upstreams
        .connect(
            &loopback(),
            &url,
            vec!["feed.v2".into(), "feed.v1".into()],
            vec![("Authorization".into(), "Bearer t0k3n".into())],
        )
        .unwrap();
    // Sent before the handshake: it waits in the queue.
    plugin.upstreams.send(id, Message::text("early")).unwrap();
    assert_eq!(plugin.upstreams.ids(), [id]);
    let (head, mut ws) = accepted(&mut conns).await;
    assert!(head.starts_with("GET /feed?x=1 HTTP/1.1\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("sec-websocket-protocol: feed.v2, feed.v1\r\n"),
        "{head}"
    );
    assert!(head.contains("authorization: bearer t0k3n\r\n"), "{head}");
    assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    assert_eq!(plugin.next().await, Seen::Open(id));
    let early = read(&mut ws).await.unwrap();
    assert_eq!(early.as_str(), "early");

    for i in 0..200 {
        ws.send(Frame::text(format!("m{i}"))).await.unwrap();
    }
    ws.send(Frame::binary(vec![0u8, 255])).await.unwrap();
    for i in 0..200 {
        assert_eq!(
            plugin.next().await,
            Seen::Message(id, Message::text(format!("m{i}")))
        );
    }
    assert_eq!(
        plugin.next().await,
        Seen::Message(id, Message::Binary(vec![0u8, 255].into()))
    );

    plugin.upstreams.close(id, 4000, "done here").unwrap();
    assert_eq!(
        plugin.upstreams.send(id, Message::text("late")),
        Err(CallError::Closed)
    );
    assert!(
        plugin.upstreams.ids().is_empty(),
        "a closing upstream is not listed"
    );
    let close = read(&mut ws).await.unwrap();
    assert_eq!(close.opcode(), OpCode::Close);
    assert_eq!(close.close_code().map(u16::from), Some(4000));
    // The server side answers the close (yawc echoes it).
    assert!(read(&mut ws).await.is_none());
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 4000, "done here".into())
    );
    assert_eq!(plugin.upstreams.count(), 0);
    assert_eq!(
        plugin.upstreams.send(id, Message::text("gone")),
        Err(CallError::UnknownUpstream)
    );
}

#[tokio::test]
async fn the_upstream_closing_or_vanishing_is_reported() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let mut plugin = Plugin::new(settings());
    let url = format!("ws://{addr}/");
    let id = plugin.connect(&loopback(), &url).unwrap();
    let (_, mut ws) = accepted(&mut conns).await;
    assert_eq!(plugin.next().await, Seen::Open(id));
    ws.send(Frame::close(yawc::close::CloseCode::Away, b"maintenance"))
        .await
        .unwrap();
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1001, "maintenance".into())
    );

    let id = plugin.connect(&loopback(), &url).unwrap();
    let (_, ws) = accepted(&mut conns).await;
    assert_eq!(plugin.next().await, Seen::Open(id));
    drop(ws);
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1006, "connection lost".into())
    );
}

#[tokio::test]
async fn failures_to_open_say_what_failed() {
    let mut plugin = Plugin::new(settings());
    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let id = plugin
        .connect(&loopback(), &format!("ws://127.0.0.1:{port}/"))
        .unwrap();
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1006, "connection refused".into())
    );

    // Refused with a status.
    let (addr, _conns) = server(Answer::Status(403)).await;
    let id = plugin
        .connect(&loopback(), &format!("ws://{addr}/"))
        .unwrap();
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1006, "handshake failed: status 403".into())
    );

    // Not an allowed name: refused at once.
    assert_eq!(
        plugin.connect(&loopback(), "ws://example.com/"),
        Err(CallError::Denied)
    );
    assert_eq!(
        plugin.connect(&loopback(), "https://example.com/"),
        Err(CallError::InvalidUrl)
    );
    // A wildcard entry never reaches a loopback address.
    let id = plugin
        .connect(&policy(&["ws://*:*"]), &format!("ws://{addr}/"))
        .unwrap();
    assert_eq!(
        plugin.next().await,
        Seen::Close(
            id,
            1006,
            format!("denied: ws://{addr} resolves to an address that is not allowed")
        )
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_given_up_and_let_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut plugin = Plugin::new(settings());
    let id = plugin
        .connect(&loopback(), &format!("ws://{addr}/"))
        .unwrap();
    let (mut tcp, _) = listener.accept().await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1006, "timed out connecting".into())
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Its socket is closed, not left behind.
    let mut buf = [0u8; 4096];
    let eof = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the given-up connection is closed");
    assert_eq!(plugin.upstreams.count(), 0);
}

#[tokio::test]
async fn the_plugin_holds_at_most_its_cap() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let limits = Limits {
        upstreams_per_plugin: 2,
        ..Limits::default()
    };
    let mut plugin = Plugin::new(UpstreamSettings::new(&limits, &settings().timeouts));
    let url = format!("ws://{addr}/");
    let a = plugin.connect(&loopback(), &url).unwrap();
    let b = plugin.connect(&loopback(), &url).unwrap();
    assert_eq!(
        plugin.connect(&loopback(), &url),
        Err(CallError::LimitReached)
    );
    let (_, _wa) = accepted(&mut conns).await;
    let (_, _wb) = accepted(&mut conns).await;
    let mut opened = [plugin.next().await, plugin.next().await];
    opened.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(opened, [Seen::Open(a), Seen::Open(b)]);
    // Closing one makes room, once its close handshake is over.
    plugin.upstreams.close(a, 1000, "").unwrap();
    assert_eq!(
        plugin.connect(&loopback(), &url),
        Err(CallError::LimitReached)
    );
    assert!(matches!(plugin.next().await, Seen::Close(id, 1000, _) if id == a));
    let c = plugin.connect(&loopback(), &url).unwrap();
    assert!(c > b, "ids are never reused");
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let limits = Limits {
        max_message_size: 1 << 16,
        ..Limits::default()
    };
    let mut plugin = Plugin::new(UpstreamSettings::new(&limits, &settings().timeouts));
    let id = plugin
        .connect(&loopback(), &format!("ws://{addr}/"))
        .unwrap();
    assert_eq!(
        plugin
            .upstreams
            .send(id, Message::Binary(vec![0; (1 << 16) + 1].into())),
        Err(CallError::InvalidArgument)
    );
    let (_, mut ws) = accepted(&mut conns).await;
    assert_eq!(plugin.next().await, Seen::Open(id));
    ws.send(Frame::binary(vec![7u8; 1 << 20])).await.unwrap();
    assert_eq!(
        plugin.next().await,
        Seen::Close(id, 1009, "message too big".into())
    );
}

#[tokio::test]
async fn messages_are_read_no_faster_than_the_hooks_take_them() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let mut plugin = Plugin::with_delay(settings(), Duration::from_millis(20));
    let id = plugin
        .connect(&loopback(), &format!("ws://{addr}/"))
        .unwrap();
    let (_, mut ws) = accepted(&mut conns).await;
    assert_eq!(plugin.next().await, Seen::Open(id));
    let started = std::time::Instant::now();
    for i in 0..20 {
        ws.send(Frame::text(format!("{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            plugin.next().await,
            Seen::Message(id, Message::text(format!("{i}")))
        );
    }
    // One hook at a time: 20 hooks of 20 ms take 400 ms at least.
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn removing_the_plugin_closes_its_upstreams_with_1001() {
    let (addr, mut conns) = server(Answer::Upgrade).await;
    let mut plugin = Plugin::new(settings());
    let id = plugin
        .connect(&loopback(), &format!("ws://{addr}/"))
        .unwrap();
    let (_, mut ws) = accepted(&mut conns).await;
    assert_eq!(plugin.next().await, Seen::Open(id));
    plugin.upstreams.release(&*plugin._recorder);
    let close = read(&mut ws).await.unwrap();
    assert_eq!(close.close_code().map(u16::from), Some(1001));
    assert_eq!(close.close_reason().ok().flatten(), Some("plugin removed"));
}

/// A TLS WebSocket server for `localhost` with a certificate of its own:
/// its address, the certificate, and the server name each client sent.
async fn tls_server() -> (
    SocketAddr,
    rustls::pki_types::CertificateDer<'static>,
    mpsc::UnboundedReceiver<Option<String>>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, names) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls.get_ref().1.server_name().map(str::to_owned);
                let _ = tx.send(name);
                if let Some((_, mut ws)) = accept_ws(tls, Answer::Upgrade).await {
                    let _ = ws.send(Frame::text("over tls")).await;
                    let _ = ws.next().await;
                }
            });
        }
    });
    (addr, cert, names)
}

#[tokio::test]
async fn wss_verifies_the_certificate_for_the_urls_name() {
    let (addr, cert, mut names) = tls_server().await;
    let url = format!("wss://localhost:{}/", addr.port());
    // The name is sent as SNI, and the certificate checked against it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = UpstreamSettings {
        tls: tls::config_trusting(roots),
        ..settings()
    };
    let mut plugin = Plugin::new(trusting);
    let id = plugin.connect(&loopback(), &url).unwrap();
    assert_eq!(plugin.next().await, Seen::Open(id));
    assert_eq!(
        plugin.next().await,
        Seen::Message(id, Message::text("over tls"))
    );
    assert_eq!(names.recv().await.unwrap().as_deref(), Some("localhost"));

    // With the default (public) roots, a self-signed certificate fails.
    let mut plugin = Plugin::new(settings());
    let id = plugin.connect(&loopback(), &url).unwrap();
    let Seen::Close(closed, 1006, reason) = plugin.next().await else {
        panic!("expected a failure")
    };
    assert_eq!(closed, id);
    assert!(
        reason.starts_with("TLS handshake failed: invalid peer certificate"),
        "{reason}"
    );
}
