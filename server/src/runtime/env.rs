//! What every instance of one plugin version shares: its name, its scope in
//! the registry, its limits, its timers and what its sidecar granted. One
//! constructor serves the deployer, the benches and the tests, so they all
//! run plugins in the same sandbox.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtx};

use super::plugin_log::LogGate;
use super::timers::Timers;
use crate::config::{Limits, OutboundHttp, Timeouts};
use crate::history::{History, Recording};
use crate::outbound::OutboundPolicy;
use crate::outbound::http::HttpClient;
use crate::outbound::upstream::{UpstreamSettings, Upstreams};
use crate::registry::{Registry, Scope};

pub struct PluginEnv {
    pub name: Arc<str>,
    pub scope: Arc<Scope>,
    pub limits: Limits,
    /// Shared by every version of the plugin, so timers survive a reload.
    pub timers: Arc<Timers>,
    /// Shared by every version of the plugin, so upstreams stay open
    /// across a reload.
    pub upstreams: Arc<Upstreams>,
    /// Subprotocols the plugin speaks, from its sidecar, in order of
    /// preference.
    pub subprotocols: Vec<String>,
    /// What the sidecar grants beyond the empty sandbox.
    pub grants: Grants,
    /// Its outbound HTTP requests: limits, those in flight, counters.
    pub http: Arc<HttpClient>,
    /// Which of its channels keep a history, from its sidecar.
    pub recording: Recording,
    /// Where the server keeps channel history.
    pub history: Arc<History>,
    /// The plugin's allowance of log lines (its outbound requests' failures
    /// count against it too).
    pub(crate) log_gate: LogGate,
}

/// Capabilities a sidecar granted, resolved at load time.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    /// Environment variables with their values.
    pub env: Vec<(String, String)>,
    /// Read-only preopened directories: host path and guest path.
    pub dirs: Vec<(PathBuf, String)>,
    /// What the plugin may reach over HTTP and WebSocket.
    pub outbound: OutboundPolicy,
}

impl PluginEnv {
    /// Plugin `name` in its scope of `registry`, with its own timers and
    /// upstreams (on the default timeouts) and nothing granted: no files,
    /// environment, subprotocols or outbound hosts.
    pub fn new(name: &str, registry: &Registry, limits: Limits) -> PluginEnv {
        let upstreams = UpstreamSettings::new(&limits, &Timeouts::default());
        PluginEnv {
            name: Arc::from(name),
            scope: registry.scope(name),
            log_gate: LogGate::new(limits.log_lines_per_second),
            http: HttpClient::new(name, OutboundHttp::default()),
            upstreams: Upstreams::new(name, upstreams),
            limits,
            timers: Arc::new(Timers::default()),
            subprotocols: Vec::new(),
            grants: Grants::default(),
            recording: Recording::default(),
            history: registry.history().clone(),
        }
    }

    /// Timers shared with the plugin's other versions.
    pub fn with_timers(self, timers: Arc<Timers>) -> PluginEnv {
        PluginEnv { timers, ..self }
    }

    /// Upstreams shared with the plugin's other versions.
    pub fn with_upstreams(self, upstreams: Arc<Upstreams>) -> PluginEnv {
        PluginEnv { upstreams, ..self }
    }

    pub fn with_subprotocols(self, subprotocols: Vec<String>) -> PluginEnv {
        PluginEnv {
            subprotocols,
            ..self
        }
    }

    pub fn with_grants(self, grants: Grants) -> PluginEnv {
        PluginEnv { grants, ..self }
    }

    pub fn with_recording(self, recording: Recording) -> PluginEnv {
        PluginEnv { recording, ..self }
    }

    /// `[outbound.http]` limits instead of the defaults.
    pub fn with_outbound_http(self, settings: &OutboundHttp) -> PluginEnv {
        PluginEnv {
            http: HttpClient::new(&self.name, settings.clone()),
            ..self
        }
    }

    /// The WASI context for one instance: nothing but what was granted.
    /// With no grants: no preopened directories, no environment, no
    /// arguments, stdio discarded, every socket address denied, no name
    /// lookups.
    pub(super) fn wasi_ctx(&self) -> WasiCtx {
        let mut builder = WasiCtx::builder();
        builder.envs(&self.grants.env);
        for (host, guest) in &self.grants.dirs {
            // Checked at load time; a directory that vanished since is skipped.
            if let Err(e) = builder.preopened_dir(host, guest, FsPerms::ReadOnly) {
                tracing::warn!(plugin = %self.name, dir = %host.display(), "granted directory unavailable: {e:#}");
            }
        }
        builder.build()
    }
}
