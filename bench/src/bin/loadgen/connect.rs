//! The `connect` mode: connection (handshake) rate.

use anyhow::{Result, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::Common;
use crate::stats::{emit, percentile, us};
use crate::target::{Target, client_config};

#[derive(Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
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

pub async fn connect_rate(a: ConnectArgs) -> Result<()> {
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
