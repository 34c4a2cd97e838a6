//! Host-side bindings generated from `wit/wsgate.wit`. Exports are called
//! asynchronously so a running hook yields to the tokio scheduler at every
//! epoch tick instead of pinning a worker thread.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub use self::wsgate::plugin::types::{Error, LogLevel, Message, OpenDecision};
