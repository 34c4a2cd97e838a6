//! What one `on-message` call costs the host, layer by layer, so a change
//! to the call path can be judged without a network in the way:
//! - `direct`: the hook called on an instance already in hand (the
//!   generated binding's call, with the message converted at the edge);
//! - `listener`: `Listener::on_message`, the path a session takes (instance
//!   pool, deadline, hook metrics, error mapping);
//! - `burst`: `Listener::on_messages` with `--burst` messages per call, per
//!   message, where the plugin exports it: what one call per burst saves
//!   over `listener`, and what is left per message (lowering, the guest's
//!   loop, lifting the replies).
//!
//!   cargo bench -p wsgate --bench hook_call -- $PWD/PLUGIN.wasm [--calls N] [--json]
//!
//! Prints the mean cost per call of each (with `--json`, one JSON object,
//! for bench/run.sh). Not a test: nothing is asserted.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use bytes::Bytes;
use wsgate::protocol::Message;
use wsgate::runtime::{InstancePool, Listener};

#[derive(Parser)]
struct Cli {
    /// The plugin (an absolute path: cargo runs benches in `server/`).
    plugin: PathBuf,
    /// Calls measured per path, after a tenth as many to warm up.
    #[arg(long, default_value_t = 200_000)]
    calls: usize,
    /// Messages per `on-messages` call in the burst measure.
    #[arg(long, default_value_t = 16)]
    burst: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Cli {
        plugin: path,
        calls,
        burst,
        json,
        ..
    } = Cli::parse();
    let bench = common::Bench::new()?;
    let (pre, _) = bench.prelink(&path)?;
    let env = bench.env("bench");
    let payload = vec![7u8; 32];
    let timeout = Duration::from_secs(5);

    let pool = InstancePool::new(pre.clone(), env.clone(), 1, timeout);
    let mut instance = pool.instantiate().await?;
    let direct = per_call(calls, async || {
        let msg = Message::Binary(Bytes::from(payload.clone()));
        let reply = instance.on_message(1, msg).await;
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
        let msg = Message::Binary(Bytes::from(payload.clone()));
        let reply = listener.on_message(1, msg).await;
        std::hint::black_box(reply.expect("no trap"));
    })
    .await;
    let per_message = if listener.has_batch() {
        let msgs: Vec<Message> = (0..burst)
            .map(|_| Message::Binary(Bytes::from(payload.clone())))
            .collect();
        let per_burst = per_call(calls / burst, async || {
            let replies = listener.on_messages(1, &msgs).await;
            std::hint::black_box(replies.expect("no trap"));
        })
        .await;
        Some(per_burst / burst as f64)
    } else {
        None
    };
    if json {
        let line = serde_json::json!({
            "mode": "hook_call", "plugin": common::plugin_name(&path), "calls": calls,
            "direct_us": direct * 1e6, "listener_us": full * 1e6,
            "burst": burst, "burst_per_message_us": per_message.map(|s| s * 1e6),
        });
        println!("{line}");
    } else {
        println!("direct:   {:.3} us per call", direct * 1e6);
        println!(
            "listener: {:.3} us per call (+{:.3} us over direct)",
            full * 1e6,
            (full - direct) * 1e6
        );
        match per_message {
            Some(s) => println!(
                "burst:    {:.3} us per message, {burst} per on-messages call",
                s * 1e6
            ),
            None => println!("burst:    not measured (the plugin does not export on-messages)"),
        }
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
