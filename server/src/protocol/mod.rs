//! The WebSocket protocol side: close codes and the per-connection session.

pub mod close;
mod rate;
pub mod session;
