//! `NAME.toml` beside `NAME.wasm`: how a plugin is deployed.

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Route patterns such as `/ws/chat/{channel}`; default `/ws/NAME`.
    /// A `{channel}` parameter subscribes each connection to that channel.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Subprotocols the plugin speaks, in order of preference; the first
    /// one a client offers is chosen and passed to `on-open`.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// What a new version of the plugin does to connections opened on the
    /// old one: `keep` them on the old version until they close (default),
    /// or `close` them with 1012 "service restart" so clients reconnect.
    #[serde(default)]
    pub on_reload: OnReload,
    /// Capabilities beyond the empty sandbox; none by default.
    #[serde(default)]
    pub grants: SidecarGrants,
    /// Which channels keep a history that clients resume from; none by
    /// default.
    #[serde(default)]
    pub history: crate::history::Recording,
}

/// `[grants]` in a sidecar: what a plugin may see of the host.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarGrants {
    /// Host environment variables passed through, by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Read-only directories: guest path (e.g. `/data`) to host path.
    #[serde(default)]
    pub dirs: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// URLs the plugin may reach over HTTP (`wasi:http`) and WebSocket
    /// (upstreams), as `scheme://host[:port]` with `*` wildcards, e.g.
    /// `["https://auth.example.com", "ws://127.0.0.1:9000"]`. Each must be
    /// within the server's `[grants] allowed_outbound_hosts`.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReload {
    #[default]
    Keep,
    Close,
}

impl Sidecar {
    pub fn parse(text: &str) -> Result<Sidecar, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// The routes this plugin serves.
    pub fn routes_for(&self, name: &str) -> Vec<String> {
        if self.routes.is_empty() {
            vec![format!("/ws/{name}")]
        } else {
            self.routes.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_defaults() {
        let s = Sidecar::parse("routes = [\"/ws/chat/{channel}\"]").unwrap();
        assert_eq!(s.routes_for("chat"), vec!["/ws/chat/{channel}"]);
        assert_eq!(Sidecar::default().routes_for("echo"), vec!["/ws/echo"]);
        assert!(Sidecar::parse("route = []").is_err());
        assert!(Sidecar::parse("routes = 3").is_err());
        assert_eq!(Sidecar::default().on_reload, OnReload::Keep);
        let s = Sidecar::parse("on_reload = \"close\"").unwrap();
        assert_eq!(s.on_reload, OnReload::Close);
        assert!(Sidecar::parse("on_reload = \"restart\"").is_err());
    }
}
