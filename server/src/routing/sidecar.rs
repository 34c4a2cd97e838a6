//! `NAME.toml` beside `NAME.wasm`: how a plugin is deployed.

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Route patterns such as `/ws/chat/{channel}`; default `/ws/NAME`.
    /// A `{channel}` parameter subscribes each connection to that channel.
    #[serde(default)]
    pub routes: Vec<String>,
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
    }
}
