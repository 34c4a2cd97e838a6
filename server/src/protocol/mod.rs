//! The WebSocket protocol side: close codes and the per-connection session.

pub mod close;
mod message;
pub mod session;
mod socket;

pub use close::{CloseCode, CloseFrame};
pub use message::{Message, Utf8Bytes};
pub use socket::ReassemblyBudget;
