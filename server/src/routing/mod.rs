//! Which plugin serves a request path. Patterns use `{name}` parameters
//! (`/ws/chat/{channel}`) and `{*rest}` catch-alls, matched by `matchit`.

mod sidecar;

use std::sync::Arc;

use crate::runtime::Listener;
pub use sidecar::SidecarGrants;
pub use sidecar::{OnReload, Sidecar};

/// The route parameter that auto-subscribes a connection to a channel.
pub const CHANNEL_PARAM: &str = "channel";

/// Paths the server itself answers; no plugin may claim them.
const RESERVED: [&str; 5] = ["/admin", "/healthz", "/readyz", "/metrics", "/publish"];

/// One route pattern and the plugin serving it.
pub struct Route {
    pub pattern: Arc<str>,
    pub listener: Arc<Listener>,
    /// Open connections on this route, guarded so `on-first-open` and
    /// `on-last-close` never interleave for one route. Shared by every
    /// version of the plugin serving this pattern (see [`OpenCounters`]), so
    /// a reload neither repeats `on-first-open` nor fires `on-last-close`
    /// early.
    pub open: Arc<tokio::sync::Mutex<usize>>,
}

/// Open-connection counters keyed by (plugin, pattern), kept across
/// deployments so first-open/last-close pairing survives reloads.
#[derive(Default)]
pub struct OpenCounters(dashmap::DashMap<(Arc<str>, String), Arc<tokio::sync::Mutex<usize>>>);

impl OpenCounters {
    pub fn get(&self, plugin: &Arc<str>, pattern: &str) -> Arc<tokio::sync::Mutex<usize>> {
        self.0
            .entry((plugin.clone(), pattern.to_owned()))
            .or_default()
            .clone()
    }
}

#[derive(Default)]
pub struct RouteTable {
    router: matchit::Router<Arc<Route>>,
    routes: Vec<Arc<Route>>,
}

/// A path matched to its route, with the parameter values.
pub struct Matched {
    pub route: Arc<Route>,
    pub params: Vec<(String, String)>,
}

impl RouteTable {
    /// Adds a plugin's patterns; all or nothing, so a plugin is never half
    /// routed. Errors name the offending pattern. Open counters come from
    /// `counters`, which outlives this table.
    pub fn add(
        &mut self,
        patterns: &[String],
        listener: &Arc<Listener>,
        counters: &OpenCounters,
    ) -> Result<(), String> {
        let mut trial = self.router.clone();
        let mut added = Vec::new();
        for pattern in patterns {
            check_pattern(pattern)?;
            let route = Arc::new(Route {
                pattern: Arc::from(pattern.as_str()),
                listener: listener.clone(),
                open: counters.get(&listener.name, pattern),
            });
            trial
                .insert(pattern.as_str(), route.clone())
                .map_err(|e| format!("route {pattern}: {e}"))?;
            added.push(route);
        }
        self.router = trial;
        self.routes.extend(added);
        Ok(())
    }

    pub fn at(&self, path: &str) -> Option<Matched> {
        let m = self.router.at(path).ok()?;
        let params = m
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Matched {
            route: m.value.clone(),
            params,
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err(format!("route {pattern:?} must start with /"));
    }
    if pattern.len() > 512 || pattern.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("route {pattern:?} has invalid characters"));
    }
    let reserved = RESERVED
        .iter()
        .find(|r| pattern == **r || pattern.starts_with(&format!("{r}/")) || pattern == "/");
    if let Some(r) = reserved {
        return Err(format!("route {pattern:?} overlaps the server's own {r}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_checked() {
        assert!(check_pattern("/ws/chat/{channel}").is_ok());
        assert!(check_pattern("ws/chat").is_err());
        assert!(check_pattern("/admin/x").is_err());
        assert!(check_pattern("/healthz").is_err());
        assert!(check_pattern("/").is_err());
        assert!(check_pattern("/ws/a b").is_err());
        assert!(check_pattern("/administrator").is_ok());
    }
}
