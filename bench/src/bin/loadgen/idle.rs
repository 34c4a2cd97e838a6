//! The `idle` mode: open N connections and hold them, for memory measurements.

use anyhow::{Result, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::Common;
use crate::stats::emit;
use crate::target::{Target, client_config};

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Hold them this many seconds after READY.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
}

pub async fn idle(a: IdleArgs) -> Result<()> {
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
