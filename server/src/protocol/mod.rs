//! The WebSocket protocol side: close codes and the per-connection session.

pub mod close;
mod message;
mod rate;
pub mod session;
mod socket;

pub use message::{CloseFrame, Message, Utf8Bytes};
