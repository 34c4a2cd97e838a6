//! wsgate: a WebSocket server whose application logic runs in sandboxed
//! WebAssembly component plugins.
//!
//! The layout follows the architecture: `http` accepts requests and
//! answers handshakes, `routing` maps paths to plugins, `lifecycle` owns a
//! connection from admission to its last hook, `protocol` speaks WebSocket
//! on each connection, `registry` holds connections, channels and tags,
//! `runtime` runs plugin code in the sandbox, `deploy` turns the plugin
//! directory into routes, `admin` and `metrics` report, `cluster` joins
//! several nodes over Redis, `outbound` decides what plugins may reach,
//! `state` keeps plugins' key-value state in memory, SQLite or the
//! cluster's Redis, and `history` keeps recorded channels' messages with
//! their positions, so clients resume after a reconnect.

mod accept;
pub mod admin;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod gateway;
mod health;
pub mod history;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod protocol;
mod rate;
mod recent;
pub mod registry;
pub mod routing;
pub mod runtime;
mod server;
pub mod state;
mod text;
mod tls;

pub use server::serve;

/// Milliseconds since the Unix epoch, as admin info and node reports give
/// times (0 for a clock set before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
