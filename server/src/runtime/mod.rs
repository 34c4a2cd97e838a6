//! The listener runtime: compiling plugins, pooling their instances and
//! calling their hooks inside the sandbox.

pub mod bindings;
mod engine;
pub mod host;
mod listener;
mod pool;
mod quarantine;
mod timers;

pub use engine::{Compiled, EPOCH_TICK, Runtime, content_hash, hex};
pub use host::{Grants, PluginEnv, to_ws};
pub use listener::{HookError, Listener};
pub use pool::InstancePool;
pub use timers::Timers;
