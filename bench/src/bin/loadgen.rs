//! wsgate load generator.
//!
//! Every mode is bounded in time and count and stops by itself, and every
//! target (and every source address) must be on the loopback network: this is
//! a tool for benchmarking servers on this machine, never anything else.
//!
//! Modes:
//! - `echo`: N connections, K messages in flight on each (pipelined), for D
//!   seconds after a warm-up; reports msg/s and round-trip latency p50/p99.
//! - `relay`: N sender/receiver pairs: sender i (on URL) and receiver i (on
//!   `--receiver-url`, e.g. another node of a cluster) share a channel; the
//!   sender keeps K stamped messages in flight (one more per message the
//!   receiver gets), like `echo`; reports msg/s and sender-to-receiver latency.
//! - `broadcast`: M subscribers on a URL (`{i}` in it is replaced by the
//!   subscriber's index), plus a publisher connection that sends one text
//!   message per round; reports the time until all M have it (p50/p99 over R
//!   rounds) and the per-delivery latency.
//! - `connect`: opens and closes connections as fast as C workers can for D
//!   seconds; reports connections/s and handshake latency.
//! - `idle`: opens N connections, prints `READY connected=N`, holds them
//!   for H seconds (the driver reads the server's RSS meanwhile), and exits.
//! - `wait`: waits until a WebSocket handshake to the URL succeeds.
//! - `free-port`: prints a free TCP port on 127.0.0.1.
//!
//! Human-readable output goes to stderr; `--json` prints one JSON object on
//! stdout.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

type Ws = WebSocketStream<TcpStream>;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "WebSocket load generator (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pipelined echo throughput and latency.
    Echo(EchoArgs),
    /// Pipelined relay throughput and latency: sender i on URL, receiver i elsewhere.
    Relay(RelayArgs),
    /// Broadcast fan-out latency: one publish, time until all subscribers have it.
    Broadcast(BroadcastArgs),
    /// Connection (handshake) rate.
    Connect(ConnectArgs),
    /// Hold N idle connections (for memory measurements).
    Idle(IdleArgs),
    /// Wait until a WebSocket handshake to URL succeeds.
    Wait(WaitArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
}

#[derive(Args, Clone)]
struct Common {
    /// Target URL, ws://127.x.x.x:PORT/path (`{i}` is replaced by the connection index).
    url: String,
    /// Number of source addresses 127.0.0.1 .. 127.0.0.N to spread connections over
    /// (each gives its own ephemeral-port range, to pass the 64k-port limit).
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Worker threads for the load generator's runtime (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    json: bool,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Hard limit on the whole run, in seconds (the process exits with status 3 past it).
    #[arg(long, default_value_t = 300.0)]
    max_time: f64,
}

#[derive(Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 200)]
    connections: usize,
    /// Messages in flight per connection (pipelined).
    #[arg(short = 'k', long, default_value_t = 16)]
    inflight: usize,
    /// Measured duration, seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up before measuring, seconds.
    #[arg(short = 'w', long, default_value_t = 1.0)]
    warmup: f64,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 32)]
    size: usize,
    /// Send text messages instead of binary.
    #[arg(long)]
    text: bool,
    /// PID of the server: its CPU use over the measured window is reported
    /// (read from /proc), next to the load generator's own. Repeat it for
    /// several processes (e.g. two nodes and Redis): each is reported, and
    /// their sum as the server's.
    #[arg(long)]
    server_pid: Vec<u32>,
}

#[derive(Args)]
struct RelayArgs {
    /// URL is the senders' (`{i}` = pair index, e.g. a channel per pair);
    /// `-c` is the number of pairs, `-k` the messages in flight per pair.
    #[command(flatten)]
    echo: EchoArgs,
    /// The receivers' URL (`{i}` = pair index); the server must relay what
    /// sender i sends to receiver i, and nothing back to the sender.
    #[arg(long)]
    receiver_url: String,
}

#[derive(Args)]
struct BroadcastArgs {
    #[command(flatten)]
    common: Common,
    /// Subscriber connections.
    #[arg(short = 'm', long, default_value_t = 1000)]
    subscribers: usize,
    /// Publish rounds.
    #[arg(short = 'r', long, default_value_t = 20)]
    rounds: usize,
    /// Payload size of the published message, bytes.
    #[arg(short = 's', long, default_value_t = 32)]
    size: usize,
    /// URL of the publisher connection (default: the subscriber URL with `{i}` = "pub").
    #[arg(long)]
    publisher_url: Option<String>,
    /// The subscribers must have been quiet this long (ms) before the first round
    /// (join notices etc. drained).
    #[arg(long, default_value_t = 300)]
    settle_ms: u64,
    /// ... but start the rounds after at most this many seconds of settling.
    #[arg(long, default_value_t = 120.0)]
    settle_max: f64,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    round_timeout: f64,
    /// Pause between rounds, ms.
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Duration, seconds.
    #[arg(short = 'd', long, default_value_t = 3.0)]
    duration: f64,
    /// Concurrent connecting workers.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many connections in total.
    #[arg(long, default_value_t = 200_000)]
    max: u64,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Hold them this many seconds after READY.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
}

#[derive(Args)]
struct WaitArgs {
    url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

fn main() {
    let cli = Cli::parse();
    raise_nofile();
    if let Err(e) = run(cli) {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        Cmd::Wait(a) => {
            watchdog(a.timeout + 5.0);
            runtime(1)?.block_on(wait(a))
        }
        Cmd::Echo(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(echo(a, None))
        }
        Cmd::Relay(a) => {
            watchdog(a.echo.common.max_time);
            runtime(a.echo.common.threads)?.block_on(echo(a.echo, Some(&a.receiver_url)))
        }
        Cmd::Broadcast(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(broadcast(a))
        }
        Cmd::Connect(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(connect_rate(a))
        }
        Cmd::Idle(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(idle(a))
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

/// The run is bounded whatever happens: past `secs` the process exits.
fn watchdog(secs: f64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        eprintln!("loadgen: hard time limit of {secs} s reached, exiting");
        std::process::exit(3);
    });
}

fn raise_nofile() {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------- targets

/// A parsed, resolved, loopback-checked target.
struct Target {
    template: String,
    addr: SocketAddr,
    sources: Vec<IpAddr>,
}

impl Target {
    async fn new(url: &str, sources: u8) -> Result<Self> {
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

    async fn connect(&self, i: usize, cfg: WebSocketConfig) -> Result<Ws> {
        self.connect_url(i, &self.url(i), cfg).await
    }

    async fn connect_url(&self, i: usize, url: &str, cfg: WebSocketConfig) -> Result<Ws> {
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
        let (ws, _resp) = client_async_with_config(url, stream, Some(cfg))
            .await
            .context("WebSocket handshake")?;
        Ok(ws)
    }

    /// [`Self::connect_many`] for a measurement that needs connections:
    /// fails when none opened, reports partial failures on stderr, and
    /// returns the connections, the failure count and the seconds taken.
    async fn connect_at_least_one(
        &self,
        n: usize,
        concurrency: usize,
        what: &str,
    ) -> Result<(Vec<Ws>, usize, f64)> {
        let start = Instant::now();
        let (conns, failed, err) = self.connect_many(n, concurrency, client_config()).await;
        check_connected(conns.len(), failed, err, what)?;
        Ok((conns, failed, start.elapsed().as_secs_f64()))
    }

    /// Opens `n` connections, `concurrency` handshakes at a time.
    async fn connect_many(
        &self,
        n: usize,
        concurrency: usize,
        cfg: WebSocketConfig,
    ) -> (Vec<Ws>, usize, Option<String>) {
        let mut out = Vec::with_capacity(n);
        let mut failed = 0;
        let mut first_err = None;
        let mut futs = futures_util::stream::iter((0..n).map(|i| self.connect(i, cfg)))
            .buffer_unordered(concurrency.max(1));
        while let Some(r) = futs.next().await {
            match r {
                Ok(ws) => out.push(ws),
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

/// Opens `n` relay lanes: receiver i on `receivers`, then (so that it is
/// subscribed first) sender i on `senders`. Returns the lanes, how many
/// pairs failed and the seconds taken.
async fn connect_pairs(
    senders: &Target,
    receivers: &Target,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<Lane>, usize, f64)> {
    let start = Instant::now();
    let pair = |i| async move {
        let rx = receivers
            .connect(i, client_config())
            .await
            .context("receiver")?;
        let tx = senders
            .connect(i, client_config())
            .await
            .context("sender")?;
        anyhow::Ok(Lane { rx, tx: Some(tx) })
    };
    let mut lanes = Vec::with_capacity(n);
    let (mut failed, mut err) = (0, None);
    let mut futs =
        futures_util::stream::iter((0..n).map(pair)).buffer_unordered(concurrency.max(1));
    while let Some(r) = futs.next().await {
        match r {
            Ok(lane) => lanes.push(lane),
            Err(e) => {
                failed += 1;
                err.get_or_insert(format!("{e:#}"));
            }
        }
    }
    check_connected(lanes.len(), failed, err, "pairs")?;
    Ok((lanes, failed, start.elapsed().as_secs_f64()))
}

async fn resolve_loopback(url: &str) -> Result<SocketAddr> {
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
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

// ---------------------------------------------------------------- cpu

/// CPU seconds (user + system, all threads) used so far by process `pid`.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds used so far by this process.
fn self_cpu_s() -> f64 {
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// CPU use (%) over the measured window of each of `servers` (`None` where
/// /proc could not tell) and of this process.
async fn cpu_window(servers: Vec<u32>, start: Instant, end: Instant) -> (Vec<Option<f64>>, f64) {
    let read = |servers: &[u32]| -> Vec<Option<f64>> {
        servers.iter().map(|&pid| proc_cpu_s(pid)).collect()
    };
    tokio::time::sleep_until(start.into()).await;
    let (s0, l0) = (read(&servers), self_cpu_s());
    tokio::time::sleep_until(end.into()).await;
    let (s1, l1) = (read(&servers), self_cpu_s());
    let secs = (end - start).as_secs_f64();
    let pct = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| 100.0 * (b - a) / secs);
    (
        s0.into_iter().zip(s1).map(|(a, b)| pct(a, b)).collect(),
        100.0 * (l1 - l0) / secs,
    )
}

// ---------------------------------------------------------------- stats

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64
}

fn us(ns: f64) -> f64 {
    ns / 1000.0
}

fn emit(json_out: bool, v: serde_json::Value) {
    if json_out {
        println!("{v}");
    }
}

// ---------------------------------------------------------------- echo

const MAGIC: &[u8; 2] = b"LG";

struct EchoShared {
    base: Instant,
    warm_end: Instant,
    end: Instant,
    inflight: usize,
    size: usize,
    text: bool,
}

impl EchoShared {
    fn make(&self) -> Message {
        let t = self.base.elapsed().as_nanos() as u64;
        if self.text {
            let mut s = String::with_capacity(self.size);
            s.push_str("LG");
            s.push_str(&format!("{t:016x}"));
            while s.len() < self.size {
                s.push('x');
            }
            Message::Text(s.into())
        } else {
            let mut v = Vec::with_capacity(self.size);
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&t.to_le_bytes());
            v.resize(self.size.max(10), b'x');
            Message::Binary(Bytes::from(v))
        }
    }

    /// The send timestamp carried by one of our messages.
    fn stamp(&self, m: &Message) -> Option<u64> {
        match m {
            Message::Binary(b) if b.len() >= 10 && &b[..2] == MAGIC => {
                Some(u64::from_le_bytes(b[2..10].try_into().ok()?))
            }
            Message::Text(t) if t.len() >= 18 && t.as_bytes()[..2] == *MAGIC => {
                u64::from_str_radix(&t.as_str()[2..18], 16).ok()
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct EchoStats {
    received: u64,
    in_window: u64,
    lat_ns: Vec<u32>,
    lost: u64,
    error: Option<String>,
}

/// One closed loop: messages are written to `tx` and come back on `rx`,
/// the same connection for `echo` (`tx` is `None`), a sender and its
/// receiver for `relay`.
struct Lane {
    rx: Ws,
    tx: Option<Ws>,
}

impl Lane {
    fn tx(&mut self) -> &mut Ws {
        match &mut self.tx {
            Some(tx) => tx,
            None => &mut self.rx,
        }
    }

    /// A separate sender gets nothing back but pings: read (and so answer)
    /// those without waiting.
    fn drain_sender(&mut self, sh: &EchoShared) -> Result<()> {
        let Some(tx) = &mut self.tx else {
            return Ok(());
        };
        while let Some(r) = tx.next().now_or_never() {
            match r {
                None => bail!("server closed the sender"),
                Some(m) => {
                    if sh.stamp(&m?).is_some() {
                        bail!("the sender got its message back");
                    }
                }
            }
        }
        Ok(())
    }
}

async fn echo_conn(mut lane: Lane, sh: Arc<EchoShared>) -> EchoStats {
    let mut st = EchoStats::default();
    if let Err(e) = echo_loop(&mut lane, &sh, &mut st).await {
        st.error = Some(format!("{e:#}"));
    }
    let close = Duration::from_millis(500);
    if let Some(tx) = &mut lane.tx {
        let _ = tokio::time::timeout(close, tx.close(None)).await;
    }
    let _ = tokio::time::timeout(close, lane.rx.close(None)).await;
    st
}

async fn echo_loop(lane: &mut Lane, sh: &EchoShared, st: &mut EchoStats) -> Result<()> {
    tokio::time::sleep_until(sh.base.into()).await;
    let mut inflight = 0usize;
    for _ in 0..sh.inflight {
        lane.tx().feed(sh.make()).await?;
        inflight += 1;
    }
    lane.tx().flush().await?;
    let grace_end = sh.end + Duration::from_secs(2);
    let mut on_msg = |m: Message, ws_feed: &mut Vec<Message>, inflight: &mut usize| {
        let Some(t) = sh.stamp(&m) else { return };
        *inflight -= 1;
        st.received += 1;
        let now = Instant::now();
        if now >= sh.warm_end && now < sh.end {
            st.in_window += 1;
            let lat = (now - sh.base).as_nanos() as u64 - t;
            st.lat_ns.push(lat.min(u32::MAX as u64) as u32);
        }
        if now < sh.end {
            ws_feed.push(sh.make());
            *inflight += 1;
        }
    };
    let mut out = Vec::with_capacity(sh.inflight);
    while inflight > 0 {
        let m = match tokio::time::timeout_at(grace_end.into(), lane.rx.next()).await {
            Err(_) => {
                st.lost += inflight as u64;
                break;
            }
            Ok(None) => bail!("server closed the connection"),
            Ok(Some(r)) => r?,
        };
        on_msg(m, &mut out, &mut inflight);
        // Drain whatever else is already here before writing: one flush per batch.
        while let Some(r) = lane.rx.next().now_or_never() {
            match r {
                None => bail!("server closed the connection"),
                Some(m) => on_msg(m?, &mut out, &mut inflight),
            }
        }
        lane.drain_sender(sh)?;
        let tx = lane.tx();
        for m in out.drain(..) {
            tx.feed(m).await?;
        }
        tx.flush().await?;
    }
    Ok(())
}

/// `echo`, or with `receiver` (the receivers' URL) `relay`.
async fn echo(a: EchoArgs, receiver: Option<&str>) -> Result<()> {
    let c = &a.common;
    let target = Target::new(&c.url, c.sources).await?;
    if a.size < if a.text { 18 } else { 10 } {
        bail!("--size must be at least 18 (text) or 10 (binary)");
    }
    let (lanes, failed, connect_s) = match receiver {
        None => {
            let (conns, failed, connect_s) = target
                .connect_at_least_one(a.connections, c.connect_concurrency, "connections")
                .await?;
            let lanes = conns.into_iter().map(|rx| Lane { rx, tx: None });
            (lanes.collect(), failed, connect_s)
        }
        Some(url) => {
            let receivers = Target::new(url, c.sources).await?;
            connect_pairs(&target, &receivers, a.connections, c.connect_concurrency).await?
        }
    };
    let mode = if receiver.is_some() { "relay" } else { "echo" };
    let base = Instant::now() + Duration::from_millis(50);
    let sh = Arc::new(EchoShared {
        base,
        warm_end: base + Duration::from_secs_f64(a.warmup),
        end: base + Duration::from_secs_f64(a.warmup + a.duration),
        inflight: a.inflight,
        size: a.size,
        text: a.text,
    });
    let cpu = tokio::spawn(cpu_window(a.server_pid.clone(), sh.warm_end, sh.end));
    let handles: Vec<_> = lanes
        .into_iter()
        .map(|lane| tokio::spawn(echo_conn(lane, sh.clone())))
        .collect();
    let mut lat = Vec::new();
    let (mut in_window, mut received, mut lost, mut errors) = (0u64, 0u64, 0u64, 0usize);
    let mut first_error = None;
    for h in handles {
        let mut s = h.await?;
        in_window += s.in_window;
        received += s.received;
        lost += s.lost;
        lat.append(&mut s.lat_ns);
        if let Some(e) = s.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let (server_cpu_each, loadgen_cpu) = cpu.await?;
    let server_cpu: Option<f64> = if server_cpu_each.is_empty() {
        None
    } else {
        server_cpu_each.iter().copied().sum()
    };
    lat.sort_unstable();
    let rate = in_window as f64 / a.duration;
    let (p50, p99, p999) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
    );
    eprintln!(
        "{mode} {}{}: {} {} x {} in flight, {} B {}: {:.0} msg/s, latency p50 {:.1} us p99 {:.1} us p99.9 {:.1} us \
         cpu: server {} loadgen {:.0}% (connect {:.2} s, failed {failed}, lost {lost}, errors {errors}{})",
        c.url,
        receiver.map(|r| format!(" -> {r}")).unwrap_or_default(),
        if receiver.is_some() { "pairs" } else { "conns" },
        a.connections - failed,
        a.inflight,
        a.size,
        if a.text { "text" } else { "binary" },
        rate,
        us(p50),
        us(p99),
        us(p999),
        if server_cpu_each.is_empty() {
            "?".into()
        } else {
            server_cpu_each
                .iter()
                .map(|c| c.map(|c| format!("{c:.0}%")).unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join(" + ")
        },
        loadgen_cpu,
        connect_s,
        first_error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    emit(
        c.json,
        json!({
            "mode": mode, "label": c.label, "url": c.url, "receiver_url": receiver,
            "connections": a.connections - failed, "connect_failed": failed,
            "inflight": a.inflight, "size": a.size, "text": a.text,
            "duration_s": a.duration, "warmup_s": a.warmup,
            "messages": in_window, "received_total": received,
            "msg_per_s": rate, "p50_us": us(p50), "p99_us": us(p99), "p999_us": us(p999),
            "lost": lost, "errors": errors, "first_error": first_error, "connect_s": connect_s,
            "server_cpu_pct": server_cpu, "server_cpu_pct_each": server_cpu_each,
            "loadgen_cpu_pct": loadgen_cpu,
        }),
    );
    if in_window == 0 {
        bail!("no message came back in the measured window");
    }
    Ok(())
}

// ---------------------------------------------------------------- broadcast

fn round_marker(m: &Message) -> Option<u64> {
    let data: &[u8] = match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    const TAG: &[u8] = b"BCAST#";
    let pos = data.windows(TAG.len()).position(|w| w == TAG)?;
    let rest = &data[pos + TAG.len()..];
    let end = rest.iter().position(|&b| b == b'#')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn broadcast(a: BroadcastArgs) -> Result<()> {
    let c = &a.common;
    let target = Target::new(&c.url, c.sources).await?;
    let pub_url = a
        .publisher_url
        .clone()
        .unwrap_or_else(|| c.url.replace("{i}", "pub"));
    resolve_loopback(&pub_url).await?;

    let (subs, failed, connect_s) = target
        .connect_at_least_one(a.subscribers, c.connect_concurrency, "subscribers")
        .await?;
    let m = subs.len();

    let base = Instant::now();
    let last_msg = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let closed = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(m);
    for mut ws in subs {
        let (tx, last_msg, received, closed) = (
            tx.clone(),
            last_msg.clone(),
            received.clone(),
            closed.clone(),
        );
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let now = Instant::now();
                received.fetch_add(1, Ordering::Relaxed);
                last_msg.store((now - base).as_nanos() as u64, Ordering::Relaxed);
                if let Some(r) = round_marker(&msg) {
                    let _ = tx.send((r, now));
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    drop(tx);

    // The publisher (for the chat plugin it is one more member of the channel).
    let mut publisher = target
        .connect_url(usize::MAX, &pub_url, client_config())
        .await
        .context("publisher")?;
    let (ptx, mut prx) = mpsc::unbounded_channel::<Message>();
    let pub_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = prx.recv() => match m {
                    Some(msg) => if publisher.send(msg).await.is_err() { break },
                    None => break,
                },
                r = publisher.next() => if !matches!(r, Some(Ok(_))) { break },
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), publisher.close(None)).await;
    });

    // Let join notices and the like drain: wait until the subscribers are quiet.
    let settle = Duration::from_millis(a.settle_ms);
    let settle_start = Instant::now();
    let settle_limit = settle_start + Duration::from_secs_f64(a.settle_max);
    loop {
        tokio::time::sleep(settle / 4).await;
        let last = base + Duration::from_nanos(last_msg.load(Ordering::Relaxed));
        let now = Instant::now();
        if now.saturating_duration_since(last) >= settle || now > settle_limit {
            break;
        }
    }
    let settle_s = settle_start.elapsed().as_secs_f64();
    let pre_received = received.load(Ordering::Relaxed);

    let mut complete_ns: Vec<u32> = Vec::with_capacity(a.rounds);
    let mut deliveries_ns: Vec<u32> = Vec::with_capacity(a.rounds * m);
    let mut missing = 0usize;
    let pad = "x".repeat(a.size.saturating_sub(16));
    for round in 0..a.rounds as u64 {
        if closed.load(Ordering::Relaxed) > 0 {
            bail!(
                "{} subscribers were disconnected",
                closed.load(Ordering::Relaxed)
            );
        }
        let t0 = Instant::now();
        ptx.send(Message::Text(format!("BCAST#{round}#{pad}").into()))
            .map_err(|_| anyhow!("publisher is gone"))?;
        let deadline = t0 + Duration::from_secs_f64(a.round_timeout);
        let mut got = 0usize;
        let mut last = t0;
        while got < m {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((r, at))) if r == round => {
                    got += 1;
                    last = last.max(at);
                    deliveries_ns.push(((at - t0).as_nanos() as u64).min(u32::MAX as u64) as u32);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if got < m {
            missing += m - got;
            eprintln!("broadcast: round {round}: only {got} of {m} subscribers got the message");
        } else {
            complete_ns.push(((last - t0).as_nanos() as u64).min(u32::MAX as u64) as u32);
        }
        tokio::time::sleep(Duration::from_millis(a.gap_ms)).await;
    }
    drop(ptx);
    let _ = tokio::time::timeout(Duration::from_secs(1), pub_task).await;
    for r in &readers {
        r.abort();
    }
    complete_ns.sort_unstable();
    deliveries_ns.sort_unstable();
    let ms = |ns: f64| ns / 1e6;
    let (c50, c99, cmax) = (
        percentile(&complete_ns, 0.5),
        percentile(&complete_ns, 0.99),
        complete_ns.last().map(|&v| v as f64).unwrap_or(f64::NAN),
    );
    let (d50, d99) = (
        percentile(&deliveries_ns, 0.5),
        percentile(&deliveries_ns, 0.99),
    );
    eprintln!(
        "broadcast {}: {m} subscribers, {} rounds: all-delivered p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         per-delivery p50 {:.2} ms p99 {:.2} ms; missing {missing} (connect {:.2} s, settle {:.2} s, {} msgs before rounds)",
        c.url,
        a.rounds,
        ms(c50),
        ms(c99),
        ms(cmax),
        ms(d50),
        ms(d99),
        connect_s,
        settle_s,
        pre_received
    );
    emit(
        c.json,
        json!({
            "mode": "broadcast", "label": c.label, "url": c.url, "subscribers": m,
            "connect_failed": failed, "rounds": a.rounds, "complete_rounds": complete_ns.len(),
            "size": a.size, "complete_p50_ms": ms(c50), "complete_p99_ms": ms(c99), "complete_max_ms": ms(cmax),
            "delivery_p50_ms": ms(d50), "delivery_p99_ms": ms(d99), "missing": missing,
            "connect_s": connect_s, "settle_s": settle_s, "messages_before_rounds": pre_received,
        }),
    );
    if missing > 0 {
        bail!("{missing} deliveries missing");
    }
    Ok(())
}

// ---------------------------------------------------------------- connect rate

async fn connect_rate(a: ConnectArgs) -> Result<()> {
    let c = &a.common;
    let target = Arc::new(Target::new(&c.url, c.sources).await?);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let (target, counter) = (target.clone(), counter.clone());
        let max = a.max;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let mut first_err = None;
            let mut i = w;
            while Instant::now() < end && counter.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match tokio::time::timeout_at(end.into(), target.connect(i, client_config())).await
                {
                    Err(_) => break,
                    Ok(Ok(mut ws)) => {
                        lat.push((t.elapsed().as_nanos() as u64).min(u32::MAX as u64) as u32);
                        // Close handshake, bounded.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            ws.close(None).await.ok();
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                    }
                    Ok(Err(e)) => {
                        failed += 1;
                        first_err.get_or_insert(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                i += 1;
            }
            (lat, failed, first_err)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    let mut first_err = None;
    for w in workers {
        let (mut l, f, e) = w.await?;
        lat.append(&mut l);
        failed += f;
        if first_err.is_none() {
            first_err = e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(a.duration).max(1e-9);
    lat.sort_unstable();
    let rate = lat.len() as f64 / elapsed;
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    eprintln!(
        "connect {}: {} workers: {:.0} conn/s ({} in {:.2} s), handshake p50 {:.1} us p99 {:.1} us, failed {failed}{}",
        c.url,
        a.concurrency,
        rate,
        lat.len(),
        elapsed,
        us(p50),
        us(p99),
        first_err
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    emit(
        c.json,
        json!({
            "mode": "connect", "label": c.label, "url": c.url, "concurrency": a.concurrency,
            "connections": lat.len(), "failed": failed, "first_error": first_err,
            "duration_s": elapsed, "conn_per_s": rate, "p50_us": us(p50), "p99_us": us(p99),
        }),
    );
    if lat.is_empty() {
        bail!("no connection succeeded");
    }
    Ok(())
}

// ---------------------------------------------------------------- idle

async fn idle(a: IdleArgs) -> Result<()> {
    let c = &a.common;
    let target = Target::new(&c.url, c.sources).await?;
    let t = Instant::now();
    let (conns, failed, err) = target
        .connect_many(a.connections, c.connect_concurrency, client_config())
        .await;
    let connect_s = t.elapsed().as_secs_f64();
    eprintln!(
        "idle {}: {} connected, {failed} failed in {:.2} s{}",
        c.url,
        conns.len(),
        connect_s,
        err.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    // Tell the driver; it reads the server's RSS while we hold.
    println!("READY connected={} failed={failed}", conns.len());
    use std::io::Write;
    std::io::stdout().flush()?;
    // Hold, reading (and so answering pings) but otherwise idle.
    let alive = Arc::new(AtomicUsize::new(conns.len()));
    let hold = Duration::from_secs_f64(a.hold);
    let mut tasks = Vec::with_capacity(conns.len());
    for mut ws in conns {
        let alive = alive.clone();
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(hold, async {
                while let Some(Ok(_)) = ws.next().await {}
                alive.fetch_sub(1, Ordering::Relaxed);
            })
            .await;
            ws
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        held.push(t.await?);
    }
    let still = alive.load(Ordering::Relaxed);
    eprintln!(
        "idle: {still} of {} still open after {:.1} s",
        held.len(),
        a.hold
    );
    emit(
        c.json,
        json!({
            "mode": "idle", "label": c.label, "url": c.url, "requested": a.connections,
            "connected": held.len(), "failed": failed, "first_error": err,
            "still_open": still, "connect_s": connect_s, "hold_s": a.hold,
        }),
    );
    drop(held);
    if failed > 0 {
        bail!("{failed} connections failed");
    }
    Ok(())
}

// ---------------------------------------------------------------- wait

async fn wait(a: WaitArgs) -> Result<()> {
    let target = Target::new(&a.url, 1).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), target.connect(0, client_config())).await
        {
            Ok(Ok(mut ws)) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
                return Ok(());
            }
            Ok(Err(e)) => last_err = format!("{e:#}"),
            Err(_) => last_err = "handshake timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} not ready after {} s: {last_err}", a.url, a.timeout)
}
