//! The `pubsub` mode: publish throughput on one channel, with P publishers
//! and S subscribers on it.
//!
//! Each publisher is itself a member of the channel and gets its own
//! messages back (the server must deliver them to the sender too, e.g.
//! bench/fanout-plugin's `/ws/fanout/{channel}?self=1`); it keeps K
//! messages in flight and sends one more per message of its own that
//! comes back (closed loop, like `echo`). Every message carries its
//! publisher and the time it was sent, so each subscriber counts and times
//! every delivery, checks that each publisher's messages come in the order
//! they were sent, and at the end that it got every message published.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::Common;
use crate::cpu::cpu_window;
use crate::stats::{emit, percentile, us};
use crate::target::{Target, Ws, client_config};

#[derive(Args)]
pub struct PubsubArgs {
    /// URL is the publishers' (`{i}` = publisher index); they must get
    /// their own messages back.
    #[command(flatten)]
    pub common: Common,
    /// The subscribers' URL (`{i}` = subscriber index), on the same channel.
    #[arg(long)]
    subscriber_url: String,
    /// Publisher connections.
    #[arg(short = 'p', long, default_value_t = 4)]
    publishers: usize,
    /// Subscriber connections.
    #[arg(short = 'm', long, default_value_t = 4)]
    subscribers: usize,
    /// Messages in flight per publisher.
    #[arg(short = 'k', long, default_value_t = 16)]
    inflight: usize,
    /// Measured duration, seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up before measuring, seconds.
    #[arg(short = 'w', long, default_value_t = 1.0)]
    warmup: f64,
    /// Message size in bytes (binary), at least 12.
    #[arg(short = 's', long, default_value_t = 32)]
    size: usize,
    /// PIDs of the server's processes (e.g. a node and its Redis): their
    /// CPU over the measured window. Repeatable.
    #[arg(long)]
    server_pid: Vec<u32>,
}

const MAGIC: &[u8; 2] = b"PS";

/// The run's clock and measured window.
struct Window {
    base: Instant,
    warm_end: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }
}

fn make(w: &Window, publisher: u16, size: usize) -> Message {
    let t = w.base.elapsed().as_nanos() as u64;
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&publisher.to_le_bytes());
    v.extend_from_slice(&t.to_le_bytes());
    v.resize(size.max(12), b'x');
    Message::Binary(Bytes::from(v))
}

/// Publisher and send time (ns since base) of one of our messages.
fn parse(m: &Message) -> Option<(u16, u64)> {
    match m {
        Message::Binary(b) if b.len() >= 12 && &b[..2] == MAGIC => Some((
            u16::from_le_bytes(b[2..4].try_into().ok()?),
            u64::from_le_bytes(b[4..12].try_into().ok()?),
        )),
        _ => None,
    }
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    /// Our messages received, in all.
    received: u64,
    /// ... and inside the measured window.
    in_window: u64,
    /// Publish -> delivery, ns, inside the window (subscribers only).
    lat_ns: Vec<u32>,
    /// A publisher's message that came before one it sent earlier.
    reordered: u64,
    /// Per publisher, the send time of its last message seen.
    last: Vec<u64>,
}

impl Seen {
    fn new(publishers: usize) -> Seen {
        Seen {
            last: vec![0; publishers],
            ..Seen::default()
        }
    }

    /// Counts one delivery; returns its publisher.
    fn record(&mut self, w: &Window, m: &Message, time_it: bool) -> Option<u16> {
        let (p, t) = parse(m)?;
        let now = Instant::now();
        self.received += 1;
        if let Some(last) = self.last.get_mut(p as usize) {
            if t < *last {
                self.reordered += 1;
            }
            *last = t;
        }
        if w.contains(now) {
            self.in_window += 1;
            if time_it {
                let lat = ((now - w.base).as_nanos() as u64).saturating_sub(t);
                self.lat_ns.push(lat.min(u32::MAX as u64) as u32);
            }
        }
        Some(p)
    }
}

/// A publisher's counts: what it saw, and its own messages.
#[derive(Default)]
struct Sent {
    sent: u64,
    /// Its own messages back inside the window: publishes completed.
    own_in_window: u64,
    lost: u64,
}

async fn publisher(
    mut ws: Ws,
    id: u16,
    w: Arc<Window>,
    a: Arc<(usize, usize, usize)>,
) -> Result<(Seen, Sent)> {
    let (publishers, inflight_max, size) = *a;
    let mut seen = Seen::new(publishers);
    let mut sent = Sent::default();
    tokio::time::sleep_until(w.base.into()).await;
    for _ in 0..inflight_max {
        ws.feed(make(&w, id, size)).await?;
    }
    ws.flush().await?;
    sent.sent = inflight_max as u64;
    let mut inflight = inflight_max;
    let grace_end = w.end + Duration::from_secs(2);
    let mut more = 0usize;
    let mut batch = Vec::new();
    while inflight > 0 {
        let m = match tokio::time::timeout_at(grace_end.into(), ws.next()).await {
            Err(_) => {
                sent.lost += inflight as u64;
                break;
            }
            Ok(None) => bail!("server closed a publisher"),
            Ok(Some(r)) => r?,
        };
        // Whatever else is already here too: one flush per batch.
        batch.push(m);
        while let Some(r) = ws.next().now_or_never() {
            match r {
                None => bail!("server closed a publisher"),
                Some(m) => batch.push(m?),
            }
        }
        for m in batch.drain(..) {
            if let Message::Close(frame) = &m {
                bail!("server closed a publisher: {frame:?}");
            }
            if seen.record(&w, &m, false) == Some(id) {
                inflight -= 1;
                if w.contains(Instant::now()) {
                    sent.own_in_window += 1;
                }
                if Instant::now() < w.end {
                    more += 1;
                }
            }
        }
        for _ in 0..more {
            ws.feed(make(&w, id, size)).await?;
        }
        if more > 0 {
            ws.flush().await?;
        }
        sent.sent += more as u64;
        inflight += more;
        more = 0;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    Ok((seen, sent))
}

/// Reads until it has `expected` messages (known once the publishers are
/// done) or the deadline passes.
async fn subscriber(
    mut ws: Ws,
    w: Arc<Window>,
    publishers: usize,
    mut expected: watch::Receiver<Option<u64>>,
) -> Result<Seen> {
    let mut seen = Seen::new(publishers);
    let deadline = w.end + Duration::from_secs(5);
    loop {
        if let Some(n) = *expected.borrow()
            && seen.received >= n
        {
            break;
        }
        tokio::select! {
            r = ws.next() => match r {
                None => bail!("server closed a subscriber"),
                Some(m) => match m? {
                    Message::Close(frame) => bail!("server closed a subscriber: {frame:?}"),
                    m => { seen.record(&w, &m, true); }
                },
            },
            _ = expected.changed() => {}
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    Ok(seen)
}

pub async fn pubsub(a: PubsubArgs) -> Result<()> {
    let c = &a.common;
    if a.size < 12 {
        bail!("--size must be at least 12");
    }
    if a.publishers == 0 || a.publishers > u16::MAX as usize || a.subscribers == 0 {
        bail!("--publishers must be 1 to 65535, --subscribers at least 1");
    }
    let pubs = Target::new(&c.url, c.sources).await?;
    let subs = Target::new(&a.subscriber_url, c.sources).await?;
    // Subscribers first, so that they are members before anything is sent.
    let t0 = Instant::now();
    let (sub_ws, failed, err) = subs
        .connect_many(a.subscribers, c.connect_concurrency, client_config())
        .await;
    if failed > 0 {
        bail!(
            "{failed} subscribers failed to connect: {}",
            err.unwrap_or_default()
        );
    }
    let mut pub_ws = Vec::with_capacity(a.publishers);
    for i in 0..a.publishers {
        pub_ws.push(
            pubs.connect(i, client_config())
                .await
                .context("publisher")?,
        );
    }
    let connect_s = t0.elapsed().as_secs_f64();

    let base = Instant::now() + Duration::from_millis(50);
    let w = Arc::new(Window {
        base,
        warm_end: base + Duration::from_secs_f64(a.warmup),
        end: base + Duration::from_secs_f64(a.warmup + a.duration),
    });
    let cpu = tokio::spawn(cpu_window(a.server_pid.clone(), w.warm_end, w.end));
    let (expected_tx, expected_rx) = watch::channel(None);
    let sub_tasks: Vec<_> = sub_ws
        .into_iter()
        .map(|ws| tokio::spawn(subscriber(ws, w.clone(), a.publishers, expected_rx.clone())))
        .collect();
    let shape = Arc::new((a.publishers, a.inflight.max(1), a.size));
    let pub_tasks: Vec<_> = pub_ws
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(publisher(ws, i as u16, w.clone(), shape.clone())))
        .collect();

    let (mut published, mut completed, mut lost, mut delivered) = (0u64, 0u64, 0u64, 0u64);
    let mut reordered = 0u64;
    for t in pub_tasks {
        let (seen, sent) = t.await??;
        published += sent.sent;
        completed += sent.own_in_window;
        lost += sent.lost;
        delivered += seen.in_window;
        reordered += seen.reordered;
    }
    let _ = expected_tx.send(Some(published));
    let (mut lat, mut missing) = (Vec::new(), 0u64);
    for t in sub_tasks {
        let mut seen = t.await??;
        delivered += seen.in_window;
        reordered += seen.reordered;
        missing += published.saturating_sub(seen.received);
        lat.append(&mut seen.lat_ns);
    }
    let (server_each, loadgen_cpu) = cpu.await?;
    let server_cpu: Option<f64> = if server_each.is_empty() {
        None
    } else {
        server_each.iter().copied().sum()
    };
    lat.sort_unstable();
    let publish_rate = completed as f64 / a.duration;
    let delivery_rate = delivered as f64 / a.duration;
    let per_cpu_s = server_cpu
        .filter(|&pct| pct > 0.0)
        .map(|pct| delivered as f64 / (pct / 100.0 * a.duration));
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let pct = |v: &Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}%"));
    eprintln!(
        "pubsub {} -> {}: {} publishers x {} in flight, {} subscribers, {} B: {:.0} publishes/s, \
         {:.0} deliveries/s, {} deliveries per server CPU-s, latency p50 {:.1} us p99 {:.1} us; \
         cpu: server {} loadgen {:.0}% (connect {:.2} s, published {published}, lost {lost}, \
         missing {missing}, reordered {reordered})",
        c.url,
        a.subscriber_url,
        a.publishers,
        a.inflight,
        a.subscribers,
        a.size,
        publish_rate,
        delivery_rate,
        per_cpu_s.map_or("?".into(), |v| format!("{v:.0}")),
        us(p50),
        us(p99),
        server_each.iter().map(pct).collect::<Vec<_>>().join(" + "),
        loadgen_cpu,
        connect_s,
    );
    emit(
        c.json,
        json!({
            "mode": "pubsub", "label": c.label, "url": c.url, "subscriber_url": a.subscriber_url,
            "publishers": a.publishers, "subscribers": a.subscribers, "inflight": a.inflight,
            "size": a.size, "duration_s": a.duration, "warmup_s": a.warmup,
            "publishes_per_s": publish_rate, "deliveries_per_s": delivery_rate,
            "deliveries_per_server_cpu_s": per_cpu_s,
            "p50_us": us(p50), "p99_us": us(p99),
            "published": published, "lost": lost, "missing": missing, "reordered": reordered,
            "server_cpu_pct": server_cpu, "server_cpu_pct_each": server_each,
            "loadgen_cpu_pct": loadgen_cpu, "connect_s": connect_s,
        }),
    );
    if completed == 0 {
        bail!("no publish came back in the measured window");
    }
    if lost + missing + reordered > 0 {
        bail!("{lost} publishes lost, {missing} deliveries missing, {reordered} out of order");
    }
    Ok(())
}
