//! Host-side bindings generated from `wit/wsgate.wit`. Exports are called
//! asynchronously so a running hook yields to the tokio scheduler at every
//! epoch tick instead of pinning a worker thread. Joining a channel or a
//! tag is async too: in a cluster, it may wait (bounded) until the node
//! hears the group's deliveries from other nodes. So is every state call:
//! a durable backend (SQLite, Redis) answers asynchronously, and so does
//! every history call (a publish to a recorded channel included) and the
//! cluster-wide presence calls, which ask the other nodes.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
    imports: {
        "wsgate:plugin/host.subscribe": async,
        "wsgate:plugin/host.publish": async,
        "wsgate:plugin/host.publish-recorded": async,
        "wsgate:plugin/host.history": async,
        "wsgate:plugin/host.subscribers": async,
        "wsgate:plugin/host.tagged": async,
        "wsgate:plugin/host.tag": async,
        "wsgate:plugin/host.state-get": async,
        "wsgate:plugin/host.state-set": async,
        "wsgate:plugin/host.state-increment": async,
        "wsgate:plugin/host.state-compare-and-swap": async,
        "wsgate:plugin/host.state-set-expiring": async,
        "wsgate:plugin/host.state-keys": async,
    },
});

pub use self::wsgate::plugin::types::{
    Error, HistoryError, HistoryPage, LogLevel, Message, OpenDecision, Position, Publication,
    Published, StateError, UpstreamError,
};
