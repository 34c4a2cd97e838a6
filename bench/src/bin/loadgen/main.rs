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
//! - `pubsub`: P publishers and S subscribers on one channel; each publisher
//!   gets its own messages back and keeps K in flight (closed loop); reports
//!   publishes/s, deliveries/s (and per server CPU-second) and
//!   publish-to-subscriber latency, and fails on a lost, missing or
//!   reordered message.
//! - `connect`: opens and closes connections as fast as C workers can for D
//!   seconds; reports connections/s and handshake latency.
//! - `idle`: opens N connections, prints `READY connected=N`, holds them
//!   for H seconds (the driver reads the server's RSS meanwhile), and exits.
//! - `wait`: waits until a WebSocket handshake to the URL succeeds.
//! - `free-port`: prints a free TCP port on 127.0.0.1, below the ephemeral
//!   range.
//!
//! Human-readable output goes to stderr; `--json` prints one JSON object on
//! stdout.

mod arrivals;
mod broadcast;
mod common;
mod connect;
mod cpu;
mod echo;
mod frames;
mod handshake;
mod idle;
mod lane;
mod marker;
mod pubsub;
mod readers;
mod stats;
mod subscriber;
mod target;
mod wait;

use anyhow::Result;
use clap::{Parser, Subcommand};

use broadcast::BroadcastArgs;
use common::{raise_nofile, runtime, watchdog};
use connect::ConnectArgs;
use echo::{EchoArgs, RelayArgs};
use idle::IdleArgs;
use pubsub::PubsubArgs;
use wait::WaitArgs;

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
    /// Publish throughput on one channel: P publishers (getting their own
    /// messages back), S subscribers.
    Pubsub(PubsubArgs),
    /// Connection (handshake) rate.
    Connect(ConnectArgs),
    /// Hold N idle connections (for memory measurements).
    Idle(IdleArgs),
    /// Wait until a WebSocket handshake to URL succeeds.
    Wait(WaitArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
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
            println!("{}", wsgate_bench::free_port()?);
            Ok(())
        }
        Cmd::Wait(a) => {
            watchdog(a.timeout + 5.0);
            runtime(1)?.block_on(wait::wait(a))
        }
        Cmd::Echo(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(echo::echo(a, None))
        }
        Cmd::Relay(a) => {
            watchdog(a.echo.common.max_time);
            runtime(a.echo.common.threads)?.block_on(echo::echo(a.echo, Some(&a.receiver_url)))
        }
        Cmd::Broadcast(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(broadcast::broadcast(a))
        }
        Cmd::Pubsub(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(pubsub::pubsub(a))
        }
        Cmd::Connect(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(connect::connect_rate(a))
        }
        Cmd::Idle(a) => {
            watchdog(a.common.max_time);
            runtime(a.common.threads)?.block_on(idle::idle(a))
        }
    }
}
