//! What one `on-message` call costs the host, layer by layer, so a change
//! to the call path can be judged without a network in the way:
//! - `direct`: the generated binding's call on an instance already in hand;
//! - `listener`: `Listener::on_message`, the path a session takes (instance
//!   pool, deadline, hook metrics, error mapping).
//!
//!   cargo bench -p wsgate --bench hook_call -- $PWD/PLUGIN.wasm [--calls N] [--json]
//!
//! Prints the mean cost per call of each (with `--json`, one JSON object,
//! for bench/run.sh). Not a test: nothing is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use wsgate::config::Limits;
use wsgate::registry::Registry;
use wsgate::runtime::bindings::{Message, PluginPre};
use wsgate::runtime::{InstancePool, Listener, PluginEnv, Runtime, Timers, content_hash};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    let mut calls = 200_000;
    if let Some(i) = args.iter().position(|a| a == "--calls") {
        calls = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(calls);
        args.drain(i..(i + 2).min(args.len()));
    }
    let [path] = args.as_slice() else {
        anyhow::bail!("usage: hook_call PLUGIN.wasm [--calls N] [--json]");
    };
    let limits = Limits::default();
    let runtime = Runtime::new(limits.instance_memory, None)?;
    let registry = Registry::new();
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let compiled = runtime.compile(&bytes, content_hash(&bytes))?;
    let pre = PluginPre::new(runtime.linker.instantiate_pre(&compiled.component)?)?;
    let env = Arc::new(PluginEnv {
        name: Arc::from("bench"),
        scope: registry.scope("bench", limits.state_bytes),
        limits: limits.clone(),
        timers: Arc::new(Timers::default()),
        subprotocols: Vec::new(),
        grants: Default::default(),
    });
    let payload = vec![7u8; 32];
    let timeout = Duration::from_secs(5);

    let pool = InstancePool::new(pre.clone(), env.clone(), 1, timeout);
    let mut instance = pool.instantiate().await?;
    let direct = per_call(calls, async || {
        let hooks = instance.guest.wsgate_plugin_listener();
        let msg = Message::Binary(payload.clone());
        let reply = hooks.call_on_message(&mut instance.store, 1, &msg).await;
        std::hint::black_box(reply.expect("no trap"));
    })
    .await;

    let listener = Listener::new(
        "bench".into(),
        env.clone(),
        InstancePool::new(pre, env, 4, timeout),
        timeout,
    );
    let full = per_call(calls, async || {
        let msg = Message::Binary(payload.clone());
        let reply = listener.on_message(1, msg).await;
        std::hint::black_box(reply.expect("no trap"));
    })
    .await;
    if json {
        let plugin = std::path::Path::new(path).file_stem().unwrap_or_default();
        let line = serde_json::json!({
            "mode": "hook_call", "plugin": plugin.to_string_lossy(), "calls": calls,
            "direct_us": direct * 1e6, "listener_us": full * 1e6,
        });
        println!("{line}");
    } else {
        println!("direct:   {:.3} us per call", direct * 1e6);
        println!(
            "listener: {:.3} us per call (+{:.3} us over direct)",
            full * 1e6,
            (full - direct) * 1e6
        );
    }
    Ok(())
}

/// Mean seconds per call over `calls` calls, after a tenth as many to warm up.
async fn per_call<F: AsyncFnMut()>(calls: usize, mut call: F) -> f64 {
    for _ in 0..calls / 10 {
        call().await;
    }
    let start = Instant::now();
    for _ in 0..calls {
        call().await;
    }
    start.elapsed().as_secs_f64() / calls as f64
}
