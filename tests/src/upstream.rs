//! A real HTTP/1.1 server on a loopback port, for plugins' outbound
//! requests to reach: a few routes that answer, echo, authenticate, hang, stall or
//! stream without end, over plain TCP or TLS, recording what arrived.
//! One request per connection (`Connection: close`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The TLS server name the client sent (TLS only).
    pub sni: Option<String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Connections accepted and not yet closed.
    open: AtomicUsize,
    /// Connections accepted in all.
    accepted: AtomicUsize,
}

/// The server; stopped when dropped.
pub struct Upstream {
    pub port: u16,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Routes:
/// - `/hello`: 200 `hello from upstream`, header `x-upstream: yes`
/// - `/echo`: 200, the request as JSON (`method`, `path`, `host`, `body`, `sni`)
/// - `/status/N`: status N, empty body
/// - `/hang`: reads the request and never answers
/// - `/stall`: a head promising 1000 bytes, 10 of them, then nothing
/// - `/stream?bytes=N`: N bytes, chunked (no length announced), as fast as
///   the client reads
/// - `/declared?bytes=N`: the same with `Content-Length: N`
impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::spawn(None).await
    }

    /// Over TLS with `cert` (for `localhost` and `127.0.0.1`).
    pub async fn start_tls(cert: &crate::TestCert) -> Upstream {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Upstream::spawn(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn spawn(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                state.accepted.fetch_add(1, Ordering::SeqCst);
                state.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, None, &state).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                                serve(stream, sni, &state).await;
                            }
                        }
                    }
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            port,
            scheme,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// What arrived so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since it started.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, sni: Option<String>, state: &Shared) {
    let Some(seen) = read_request(&mut io, sni).await else {
        return;
    };
    state.seen.lock().unwrap().push(seen.clone());
    let (path, query) = seen.path.split_once('?').unwrap_or((&seen.path, ""));
    let bytes: u64 = query
        .strip_prefix("bytes=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let _ = match path {
        "/hello" => {
            respond(
                &mut io,
                200,
                &[("x-upstream", "yes")],
                b"hello from upstream",
            )
            .await
        }
        "/echo" => {
            let body = serde_json::json!({
                "method": seen.method,
                "path": seen.path,
                "host": seen.header("host"),
                "body": String::from_utf8_lossy(&seen.body),
                "sni": seen.sni,
            });
            respond(&mut io, 200, &[], body.to_string().as_bytes()).await
        }
        // An application's auth endpoint: who a bearer token belongs to.
        "/auth" => match seen.header("authorization") {
            Some("Bearer ann-token") => respond(&mut io, 200, &[], br#"{"user":"ann"}"#).await,
            Some("Bearer bob-token") => respond(&mut io, 200, &[], br#"{"user":"bob"}"#).await,
            _ => respond(&mut io, 401, &[], b"").await,
        },
        "/hang" => {
            // Holds the connection until the client goes away.
            let mut sink = [0u8; 1024];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            Ok(())
        }
        "/stall" => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n0123456789";
            let _ = io.write_all(head.as_bytes()).await;
            let mut sink = [0u8; 1024];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            Ok(())
        }
        "/stream" => stream(&mut io, bytes, false).await,
        "/declared" => stream(&mut io, bytes, true).await,
        _ => match path.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
            Some(status) => respond(&mut io, status, &[], b"").await,
            None => respond(&mut io, 404, &[], b"no such route").await,
        },
    };
    let _ = io.shutdown().await;
}

async fn read_request(io: &mut (impl AsyncRead + Unpin), sni: Option<String>) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
        sni,
    })
}

async fn respond(
    io: &mut (impl AsyncWrite + Unpin),
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// `total` bytes of `x`, chunked or with a declared length, in 16 KiB
/// pieces; stops when the client goes away.
async fn stream(
    io: &mut (impl AsyncWrite + Unpin),
    total: u64,
    declared: bool,
) -> std::io::Result<()> {
    let framing = if declared {
        format!("content-length: {total}")
    } else {
        "transfer-encoding: chunked".to_owned()
    };
    let head = format!("HTTP/1.1 200 OK\r\n{framing}\r\nconnection: close\r\n\r\n");
    io.write_all(head.as_bytes()).await?;
    let piece = vec![b'x'; 16 << 10];
    let mut left = total;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        if declared {
            io.write_all(&piece[..n]).await?;
        } else {
            io.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            io.write_all(&piece[..n]).await?;
            io.write_all(b"\r\n").await?;
        }
        left -= n as u64;
    }
    if !declared {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.flush().await?;
    // Let the client read the rest before the close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
