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
    /// Patterns of plugins whose first version is still loading, with the
    /// plugin's name: answered 503 until it serves.
    starting: matchit::Router<Arc<str>>,
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
            check_pattern(pattern).map_err(|e| e.to_string())?;
            let route = Arc::new(Route {
                pattern: Arc::from(pattern.as_str()),
                listener: listener.clone(),
                open: counters.get(&listener.name, pattern),
            });
            trial
                .insert(pattern.as_str(), route.clone())
                .map_err(|e| self.conflict(pattern, e))?;
            added.push(route);
        }
        self.router = trial;
        self.routes.extend(added);
        Ok(())
    }

    /// Why `pattern` could not be added, naming the plugin in the way.
    fn conflict(&self, pattern: &str, e: matchit::InsertError) -> String {
        if let matchit::InsertError::Conflict { with } = &e
            && let Some(other) = self.routes.iter().find(|r| &*r.pattern == with)
        {
            return format!(
                "route {pattern} conflicts with route {with} of plugin {}",
                other.listener.name
            );
        }
        format!("route {pattern}: {e}")
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

    /// Marks a loading plugin's patterns, so requests for them learn it is
    /// starting instead of getting a 404. Best effort: a pattern that does
    /// not fit the table is left out (loading will report it).
    pub fn add_starting(&mut self, patterns: &[String], plugin: &str) {
        let plugin: Arc<str> = Arc::from(plugin);
        for pattern in patterns {
            if check_pattern(pattern).is_ok() {
                let _ = self.starting.insert(pattern.as_str(), plugin.clone());
            }
        }
    }

    /// The plugin starting on this path, if any.
    pub fn starting_at(&self, path: &str) -> Option<&str> {
        self.starting.at(path).ok().map(|m| &**m.value)
    }
}

/// The longest route pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;

/// Why a route pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("route {0:?} must start with /")]
    NoLeadingSlash(String),
    #[error("route {0:?} is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong(String),
    #[error("route {0:?} has invalid characters")]
    InvalidCharacters(String),
    #[error("route {0:?} would hide the static files at /")]
    Root(String),
    #[error("route {pattern:?} overlaps the server's own {reserved}")]
    Reserved {
        pattern: String,
        reserved: &'static str,
    },
    /// Malformed parameters: unbalanced or empty braces, two parameters in
    /// one segment, a catch-all before the end.
    #[error("route {pattern:?}: {reason}")]
    Syntax { pattern: String, reason: String },
}

/// Checks one pattern on its own, without a plugin or the other routes, so
/// sidecars and tests can validate patterns before anything is loaded.
/// Conflicts between patterns are found by [`RouteTable::add`].
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    let owned = || pattern.to_owned();
    if !pattern.starts_with('/') {
        return Err(PatternError::NoLeadingSlash(owned()));
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(PatternError::TooLong(owned()));
    }
    if pattern.chars().any(|c| c.is_control() || c == ' ') {
        return Err(PatternError::InvalidCharacters(owned()));
    }
    // `/`, `/{x}` or `/{*rest}` would answer for the static files.
    if pattern == "/" || pattern.starts_with("/{") {
        return Err(PatternError::Root(owned()));
    }
    let reserved = RESERVED
        .iter()
        .find(|r| pattern == **r || pattern.starts_with(&format!("{r}/")));
    if let Some(reserved) = reserved {
        return Err(PatternError::Reserved {
            pattern: owned(),
            reserved,
        });
    }
    matchit::Router::new()
        .insert(pattern, ())
        .map_err(|e| PatternError::Syntax {
            pattern: owned(),
            reason: e.to_string(),
        })
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
        assert!(matches!(check_pattern("/"), Err(PatternError::Root(_))));
        assert!(matches!(
            check_pattern("/{*rest}"),
            Err(PatternError::Root(_))
        ));
        assert!(matches!(
            check_pattern("/{page}"),
            Err(PatternError::Root(_))
        ));
        assert!(check_pattern("/ws/{*rest}").is_ok());
        assert!(matches!(
            check_pattern("/ws/{a"),
            Err(PatternError::Syntax { .. })
        ));
    }
}
