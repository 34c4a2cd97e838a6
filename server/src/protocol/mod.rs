//! The WebSocket protocol side: close codes, the socket's message layer,
//! the conversation with a peer (`wire`) and the client session on it.

pub mod close;
pub mod direct;
mod message;
pub mod session;
mod socket;
pub mod wire;

pub use close::{CloseCode, CloseFrame};
pub use message::{Message, Utf8Bytes};
pub use socket::{Incoming, ReadError, ReassemblyBudget, Socket};
