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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use wsgate::config::Limits;
use wsgate::registry::Registry;
use wsgate::runtime::bindings::PluginPre;
use wsgate::runtime::host::HostState;
use wsgate::runtime::{InstancePool, PluginEnv, Runtime, Timers, content_hash};

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
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    let mut iterations = 2000;
    if let Some(i) = args.iter().position(|a| a == "--iterations") {
        iterations = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(iterations);
        args.drain(i..(i + 2).min(args.len()));
    }
    anyhow::ensure!(
        !args.is_empty(),
        "usage: instantiate PLUGIN.wasm... [--iterations N] [--json]"
    );
    let limits = Limits::default();
    let runtime = Runtime::new(limits.instance_memory, None)?;
    let registry = Registry::new();

    let floor_env = env(&registry, &limits, "floor");
    let (floor50, floor99) = time(iterations, async || {
        let store = wasmtime::Store::new(&runtime.engine, HostState::new(floor_env.clone()));
        std::hint::black_box(store);
    })
    .await;
    if !json {
        println!(
            "empty store (floor): p50 {:.1} us  p99 {:.1} us  ({iterations} iterations)",
            micros(floor50),
            micros(floor99)
        );
    }

    for path in &args {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        let compiled = runtime.compile(&bytes, content_hash(&bytes))?;
        let pre = PluginPre::new(runtime.linker.instantiate_pre(&compiled.component)?)?;
        let pool = InstancePool::new(
            pre,
            env(&registry, &limits, path),
            1,
            Duration::from_secs(5),
        );
        let (p50, p99) = time(iterations, async || {
            let instance = pool.instantiate().await.expect("instantiates");
            std::hint::black_box(instance);
        })
        .await;
        if json {
            let plugin = std::path::Path::new(path).file_stem().unwrap_or_default();
            let line = serde_json::json!({
                "mode": "instantiate", "plugin": plugin.to_string_lossy(),
                "p50_us": micros(p50), "p99_us": micros(p99),
                "floor_p50_us": micros(floor50), "kib": bytes.len() / 1024,
                "iterations": iterations,
            });
            println!("{line}");
        } else {
            println!(
                "{path}: p50 {:.1} us  p99 {:.1} us  ({:.1}x the floor at p50, {} KiB)",
                micros(p50),
                micros(p99),
                p50.as_secs_f64() / floor50.as_secs_f64(),
                bytes.len() / 1024
            );
        }
    }
    Ok(())
}

fn env(registry: &Registry, limits: &Limits, name: &str) -> Arc<PluginEnv> {
    Arc::new(PluginEnv {
        name: Arc::from(name),
        scope: registry.scope(name, limits.state_bytes),
        limits: limits.clone(),
        timers: Arc::new(Timers::default()),
        subprotocols: Vec::new(),
        grants: Default::default(),
    })
}
