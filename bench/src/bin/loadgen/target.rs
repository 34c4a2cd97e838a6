//! Where connections go: a loopback-checked target URL, and opening
//! WebSocket connections to it (spread over source addresses if asked).

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::handshake::HeadersOnly;

pub type Ws = WebSocketStream<TcpStream>;

/// A parsed, resolved, loopback-checked target.
pub struct Target {
    template: String,
    addr: SocketAddr,
    sources: Vec<IpAddr>,
}

impl Target {
    pub async fn new(url: &str, sources: u8) -> Result<Self> {
        let addr = resolve_loopback(url).await?;
        if sources == 0 {
            bail!("--sources must be at least 1");
        }
        // One source: let the kernel pick (no bind), so TIME_WAIT reuse works.
        let sources = if sources == 1 {
            vec![]
        } else {
            (1..=sources)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        };
        Ok(Self {
            template: url.to_owned(),
            addr,
            sources,
        })
    }

    fn url(&self, i: usize) -> String {
        self.template.replace("{i}", &i.to_string())
    }

    pub async fn connect(&self, i: usize, cfg: WebSocketConfig) -> Result<Ws> {
        self.connect_url(i, &self.url(i), cfg).await
    }

    pub async fn connect_url(&self, i: usize, url: &str, cfg: WebSocketConfig) -> Result<Ws> {
        let stream = self.dial(i).await?;
        let (ws, _resp) = client_async_with_config(url, stream, Some(cfg))
            .await
            .context("WebSocket handshake")?;
        Ok(ws)
    }

    /// Connection `i` after the handshake as the bare TCP stream, for a
    /// client that reads the frames itself (see `handshake.rs`): the next
    /// byte in it is the first of the server's first frame.
    pub async fn connect_raw(&self, i: usize) -> Result<TcpStream> {
        let stream = HeadersOnly::new(self.dial(i).await?);
        let (ws, _resp) = client_async_with_config(self.url(i), stream, Some(client_config()))
            .await
            .context("WebSocket handshake")?;
        Ok(ws.into_inner().into_inner())
    }

    /// A TCP connection for connection `i` (from its source address, if
    /// several were asked for).
    async fn dial(&self, i: usize) -> Result<TcpStream> {
        let sock = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.sources.is_empty() && self.addr.is_ipv4() {
            let src = self.sources[i % self.sources.len()];
            // Choose the port at connect() time, per 4-tuple, not at bind() time.
            unsafe {
                let one: libc::c_int = 1;
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            sock.bind(SocketAddr::new(src, 0))
                .with_context(|| format!("bind {src}"))?;
        }
        let stream = sock.connect(self.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// [`Self::connect_many`] for a measurement that needs connections:
    /// fails when none opened, reports partial failures on stderr, and
    /// returns the connections, the failure count and the seconds taken.
    pub async fn connect_at_least_one(
        &self,
        n: usize,
        concurrency: usize,
        what: &str,
    ) -> Result<(Vec<Ws>, usize, f64)> {
        at_least_one(n, concurrency, what, |i| self.connect(i, client_config())).await
    }

    /// [`Self::connect_at_least_one`] with [`Self::connect_raw`].
    pub async fn connect_raw_at_least_one(
        &self,
        n: usize,
        concurrency: usize,
        what: &str,
    ) -> Result<(Vec<TcpStream>, usize, f64)> {
        at_least_one(n, concurrency, what, |i| self.connect_raw(i)).await
    }

    /// Opens `n` connections, `concurrency` handshakes at a time.
    pub async fn connect_many(
        &self,
        n: usize,
        concurrency: usize,
        cfg: WebSocketConfig,
    ) -> (Vec<Ws>, usize, Option<String>) {
        many(n, concurrency, |i| self.connect(i, cfg)).await
    }
}

/// Opens connections `0..n` with `open`, `concurrency` at a time: those
/// that opened, how many failed and the first error.
async fn many<T, F: Future<Output = Result<T>>>(
    n: usize,
    concurrency: usize,
    open: impl Fn(usize) -> F,
) -> (Vec<T>, usize, Option<String>) {
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_err = None;
    let mut futs =
        futures_util::stream::iter((0..n).map(open)).buffer_unordered(concurrency.max(1));
    while let Some(r) = futs.next().await {
        match r {
            Ok(c) => out.push(c),
            Err(e) => {
                failed += 1;
                if first_err.is_none() {
                    first_err = Some(format!("{e:#}"));
                }
            }
        }
    }
    (out, failed, first_err)
}

/// [`many`], failing when none opened; also the seconds taken.
pub async fn at_least_one<T, F: Future<Output = Result<T>>>(
    n: usize,
    concurrency: usize,
    what: &str,
    open: impl Fn(usize) -> F,
) -> Result<(Vec<T>, usize, f64)> {
    let start = Instant::now();
    let (conns, failed, err) = many(n, concurrency, open).await;
    check_connected(conns.len(), failed, err, what)?;
    Ok((conns, failed, start.elapsed().as_secs_f64()))
}

/// Fails when none of the connections opened; reports partial failures.
fn check_connected(opened: usize, failed: usize, err: Option<String>, what: &str) -> Result<()> {
    if opened == 0 {
        bail!("no {what} connected: {}", err.unwrap_or_default());
    }
    if failed > 0 {
        eprintln!(
            "loadgen: {failed} {what} failed to connect: {}",
            err.unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn resolve_loopback(url: &str) -> Result<SocketAddr> {
    let u = url::Url::parse(&url.replace("{i}", "0")).with_context(|| format!("bad URL {url}"))?;
    if u.scheme() != "ws" {
        bail!("only ws:// URLs are supported, got {url}");
    }
    let host = u.host_str().ok_or_else(|| anyhow!("no host in {url}"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        bail!("{host} resolves to nothing");
    }
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("refusing non-loopback target {bad} (loadgen only targets 127.0.0.0/8 and ::1)");
    }
    Ok(addrs[0])
}

/// Small buffers: thousands of client connections must stay cheap.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}
