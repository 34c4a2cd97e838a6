//! The `echo` and `relay` modes: their options, opening the lanes (one
//! connection, or a sender/receiver pair) and the report.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Common;
use crate::cpu::cpu_window;
use crate::lane::{EchoShared, Lane, echo_conn};
use crate::stats::{emit, percentile, us};
use crate::target::{Target, at_least_one, client_config};

#[derive(Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,
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
    /// Offered load, messages per second in all, spread evenly over the
    /// connections (pairs) and sent on a schedule whatever comes back (open
    /// loop); `-k` then only caps the messages in flight per connection
    /// (a send due while at the cap is skipped and counted). 0: closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[derive(Args)]
pub struct RelayArgs {
    /// URL is the senders' (`{i}` = pair index, e.g. a channel per pair);
    /// `-c` is the number of pairs, `-k` the messages in flight per pair.
    #[command(flatten)]
    pub echo: EchoArgs,
    /// The receivers' URL (`{i}` = pair index); the server must relay what
    /// sender i sends to receiver i, and nothing back to the sender.
    #[arg(long)]
    pub receiver_url: String,
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
    at_least_one(n, concurrency, "pairs", pair).await
}

/// `echo`, or with `receiver` (the receivers' URL) `relay`.
pub async fn echo(a: EchoArgs, receiver: Option<&str>) -> Result<()> {
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
        every: (a.rate > 0.0).then(|| Duration::from_secs_f64(lanes.len() as f64 / a.rate)),
    });
    let cpu = tokio::spawn(cpu_window(a.server_pid.clone(), sh.warm_end, sh.end));
    let n = lanes.len();
    let handles: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(i, lane)| {
            // Paced lanes start staggered over one interval, not all at once.
            let offset = sh.every.map(|e| e.mul_f64(i as f64 / n as f64));
            tokio::spawn(echo_conn(lane, sh.clone(), offset.unwrap_or_default()))
        })
        .collect();
    let mut lat = Vec::new();
    let (mut in_window, mut received, mut lost, mut errors) = (0u64, 0u64, 0u64, 0usize);
    let mut skipped = 0u64;
    let mut first_error = None;
    for h in handles {
        let mut s = h.await?;
        in_window += s.in_window;
        received += s.received;
        lost += s.lost;
        skipped += s.skipped;
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
         cpu: server {} loadgen {:.0}% (connect {:.2} s, failed {failed}, lost {lost}, errors {errors}{}{})",
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
        if a.rate > 0.0 {
            format!(", offered {:.0} msg/s, skipped {skipped}", a.rate)
        } else {
            String::new()
        },
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
            "offered_rate": (a.rate > 0.0).then_some(a.rate), "skipped": skipped,
        }),
    );
    if in_window == 0 {
        bail!("no message came back in the measured window");
    }
    Ok(())
}
