//! The `broadcast` mode: fan-out latency from one publisher to M subscribers.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::arrivals::MAX_ROUNDS;
use crate::common::Common;
use crate::cpu;
use crate::readers::Readers;
use crate::stats::{emit, percentile};
use crate::subscriber::Shared;
use crate::target::{Target, client_config, resolve_loopback};

#[derive(Args)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: Common,
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
    /// Once a subscriber's message came, the subscribers' reader looks for
    /// more only after this many microseconds (0: it wakes for every one).
    /// Reading in batches costs the load generator far less per delivery;
    /// an arrival is then stamped up to this much (plus the batch's
    /// reading) late.
    #[arg(long, default_value_t = 50)]
    read_interval_us: u64,
    /// Pause between rounds, ms.
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    /// PID of the server: its CPU time over the rounds (and the load
    /// generator's own) is reported per round and per delivery. Repeatable
    /// (the processes' times are summed).
    #[arg(long)]
    server_pid: Vec<u32>,
}

pub async fn broadcast(a: BroadcastArgs) -> Result<()> {
    let c = &a.common;
    let target = Target::new(&c.url, c.sources).await?;
    let pub_url = a
        .publisher_url
        .clone()
        .unwrap_or_else(|| c.url.replace("{i}", "pub"));
    resolve_loopback(&pub_url).await?;

    if a.rounds > MAX_ROUNDS {
        bail!("at most {MAX_ROUNDS} rounds");
    }
    let (subs, failed, connect_s) = target
        .connect_raw_at_least_one(a.subscribers, c.connect_concurrency, "subscribers")
        .await?;
    let m = subs.len();

    let shared = Arc::new(Shared::new(m));
    let streams = subs
        .into_iter()
        .map(|s| s.into_std())
        .collect::<std::io::Result<Vec<_>>>()?;
    let readers = Readers::start(
        streams,
        shared.clone(),
        Duration::from_micros(a.read_interval_us),
    )?;
    let arrivals = &shared.arrivals;

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
        let last = shared.last_msg_ns.load(Ordering::Relaxed);
        let quiet = Duration::from_nanos(arrivals.now_ns().saturating_sub(last));
        if quiet >= settle || Instant::now() > settle_limit {
            break;
        }
    }
    let settle_s = settle_start.elapsed().as_secs_f64();
    let pre_received = shared.received.load(Ordering::Relaxed);

    let mut complete_ns: Vec<u32> = Vec::with_capacity(a.rounds);
    let mut deliveries_ns: Vec<u32> = Vec::with_capacity(a.rounds * m);
    let mut missing = 0usize;
    let pad = "x".repeat(a.size.saturating_sub(16));
    // CPU over the rounds (the gaps between them included: a server idles there).
    let cpu0 = cpu::snapshot(&a.server_pid);
    for round in 0..a.rounds as u64 {
        let closed = shared.closed.load(Ordering::Relaxed);
        if closed > 0 {
            bail!(
                "{closed} subscribers were disconnected (the first: {})",
                shared.first_close.get().map_or("?", |s| s.as_str())
            );
        }
        let t0 = arrivals.open(round);
        ptx.send(Message::Text(format!("BCAST#{round}#{pad}").into()))
            .map_err(|_| anyhow!("publisher is gone"))?;
        let deadline = t0 + Duration::from_secs_f64(a.round_timeout);
        arrivals.wait_all(round, deadline).await;
        let mut got = 0usize;
        let mut last = 0u64;
        for ns in arrivals.latencies(round) {
            got += 1;
            last = last.max(ns);
            deliveries_ns.push(ns.min(u32::MAX as u64) as u32);
        }
        if got < m {
            missing += m - got;
            eprintln!("broadcast: round {round}: only {got} of {m} subscribers got the message");
        } else {
            complete_ns.push(last.min(u32::MAX as u64) as u32);
        }
        tokio::time::sleep(Duration::from_millis(a.gap_ms)).await;
    }
    let (server_cpu_s, loadgen_cpu_s) = cpu0.until(&cpu::snapshot(&a.server_pid));
    drop(ptx);
    let _ = tokio::time::timeout(Duration::from_secs(1), pub_task).await;
    drop(readers);
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
    // Per round: the CPU the server and the load generator spent, and the
    // mean time until all subscribers had the message. A load generator busy
    // for most of that time was (close to) the limit, not the server.
    let rounds = a.rounds.max(1) as f64;
    let server_ms_round = server_cpu_s.map(|s| s * 1e3 / rounds);
    let loadgen_ms_round = loadgen_cpu_s * 1e3 / rounds;
    let mean_complete_ms = if complete_ns.is_empty() {
        f64::NAN
    } else {
        complete_ns.iter().map(|&v| v as f64).sum::<f64>() / complete_ns.len() as f64 / 1e6
    };
    let delivered = deliveries_ns.len() as f64;
    let per_server_cpu_s = server_cpu_s.filter(|&s| s > 0.0).map(|s| delivered / s);
    eprintln!(
        "broadcast {}: {m} subscribers, {} rounds: all-delivered p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         per-delivery p50 {:.2} ms p99 {:.2} ms; missing {missing}; cpu per round: server {} ms, loadgen {:.2} ms \
         (all-delivered mean {:.2} ms) (connect {:.2} s, settle {:.2} s, {} msgs before rounds)",
        c.url,
        a.rounds,
        ms(c50),
        ms(c99),
        ms(cmax),
        ms(d50),
        ms(d99),
        server_ms_round
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "?".into()),
        loadgen_ms_round,
        mean_complete_ms,
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
            "complete_mean_ms": mean_complete_ms, "server_cpu_ms_per_round": server_ms_round,
            "loadgen_cpu_ms_per_round": loadgen_ms_round, "deliveries_per_server_cpu_s": per_server_cpu_s,
        }),
    );
    if missing > 0 {
        bail!("{missing} deliveries missing");
    }
    Ok(())
}
