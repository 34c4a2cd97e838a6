//! The listener runtime: compiling plugins, pooling their instances and
//! calling their hooks inside the sandbox.
//!
//! Only this module sees the types generated from the WIT (`bindings`):
//! the rest of the server calls hooks with its own types ([`OpenRequest`],
//! [`OpenDecision`], [`Message`](crate::protocol::Message)), converted at
//! the edge in `hook.rs`.

mod bindings;
mod burst;
mod engine;
mod env;
mod hook;
mod host;
mod limits;
mod listener;
mod load_error;
mod packed;
mod plugin_log;
mod pool;
mod quarantine;
mod timers;

pub use engine::{Compiled, EPOCH_TICK, Runtime, content_hash, hex};
pub use env::{Grants, PluginEnv};
pub use hook::{Hook, OpenDecision, OpenRequest};
pub use listener::{HookError, Listener};
pub use load_error::{LISTENER_EXPORT, LoadError, Stage, WIT_PACKAGE};
pub use plugin_log::Gate;
pub use pool::{Instance, InstancePool, Prepared};
pub use quarantine::Quarantine;
pub use timers::{TimerTarget, Timers};
