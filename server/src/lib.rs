//! wsgate: a WebSocket server whose application logic runs in sandboxed
//! WebAssembly component plugins.
//!
//! The layout follows the architecture: `http` accepts requests and
//! performs handshakes, `routing` maps paths to plugins, `protocol` runs
//! each connection, `registry` holds connections, channels and tags,
//! `runtime` runs plugin code in the sandbox, and `deploy` turns the plugin
//! directory into routes.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod routing;
pub mod runtime;
mod server;
mod tls;

pub use server::serve;

/// Milliseconds since the Unix epoch, as admin info and node reports give
/// times (0 for a clock set before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
