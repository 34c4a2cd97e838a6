//! How long a hook call waits when no idle instance is pooled: a fresh
//! instance from the pre-linked `PluginPre` (pooling allocator, copy-on-write
//! memory, the plugin's own start-up code), against creating an empty store
//! in the same run as the floor.
//!
//!   cargo bench -p wsgate --bench instantiate -- $PWD/PLUGIN.wasm... [--iterations N] [--json]
//!
//! (cargo runs benches in `server/`, so give absolute paths.)
//! Prints one line per plugin with p50/p99 and the ratio to the floor
//! (with `--json`, one JSON object per plugin, for bench/run.sh).
//! Not a test: nothing is asserted (issue #7's target is < 100 µs).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use wsgate::runtime::InstancePool;

#[derive(Parser)]
struct Cli {
    /// The plugins (absolute paths: cargo runs benches in `server/`).
    #[arg(required = true)]
    plugins: Vec<PathBuf>,
    /// Instantiations timed per plugin, after a tenth as many to warm up.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// One JSON object per plugin instead of text.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn time<F: AsyncFnMut()>(iterations: usize, mut step: F) -> (Duration, Duration) {
    // Warm the allocator's slots and the caches first.
    for _ in 0..iterations / 10 {
        step().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        step().await;
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Cli {
        plugins,
        iterations,
        json,
        ..
    } = Cli::parse();
    let bench = common::Bench::new()?;
    let timeout = Duration::from_secs(5);

    let (floor50, floor99) = match plugins.first() {
        Some(first) => {
            let (pre, _) = bench.prelink(first)?;
            let floor = InstancePool::new(pre, bench.env("floor"), 1, timeout);
            time(iterations, async || {
                std::hint::black_box(floor.empty_store());
            })
            .await
        }
        None => (Duration::ZERO, Duration::ZERO),
    };
    if !json {
        println!(
            "empty store (floor): p50 {:.1} us  p99 {:.1} us  ({iterations} iterations)",
            micros(floor50),
            micros(floor99)
        );
    }

    for path in &plugins {
        let (pre, size) = bench.prelink(path)?;
        let pool = InstancePool::new(pre, bench.env(&common::plugin_name(path)), 1, timeout);
        let (p50, p99) = time(iterations, async || {
            let instance = pool.instantiate().await.expect("instantiates");
            std::hint::black_box(instance);
        })
        .await;
        if json {
            let line = serde_json::json!({
                "mode": "instantiate", "plugin": common::plugin_name(path),
                "p50_us": micros(p50), "p99_us": micros(p99),
                "floor_p50_us": micros(floor50), "kib": size / 1024,
                "iterations": iterations,
            });
            println!("{line}");
        } else {
            println!(
                "{}: p50 {:.1} us  p99 {:.1} us  ({:.1}x the floor at p50, {} KiB)",
                path.display(),
                micros(p50),
                micros(p99),
                p50.as_secs_f64() / floor50.as_secs_f64(),
                size / 1024
            );
        }
    }
    Ok(())
}
