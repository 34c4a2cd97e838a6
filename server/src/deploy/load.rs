//! Loading one plugin version: from the bytes and sidecar read from disk to
//! a [`Listener`] that has started once, every step failing with a reason a
//! person can act on.

use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use crate::config::{Config, GrantPolicy};
use crate::outbound::upstream::{UpstreamSettings, Upstreams};
use crate::outbound::{AllowedHost, OutboundPolicy};
use crate::registry::Registry;
use crate::routing::{OnReload, Sidecar, SidecarGrants};
use crate::runtime::{
    Grants, InstancePool, Listener, LoadError, PluginEnv, Runtime, Stage, Timers,
};

/// A plugin version as read from disk, once: the deployer hashes it to
/// decide whether anything changed, and loading uses the same bytes.
pub(super) struct Source {
    pub bytes: Vec<u8>,
    /// [`content_hash`](crate::runtime::content_hash) of `bytes`.
    pub hash: String,
    /// The parsed sidecar (the default when there is none).
    pub sidecar: Sidecar,
}

/// A version that compiled, linked and started.
pub(super) struct Loaded {
    pub listener: Arc<Listener>,
    pub routes: Vec<String>,
    pub on_reload: OnReload,
    pub took: Duration,
    pub from_cache: bool,
    /// What it imports (for `wsgate check`).
    pub imports: Vec<String>,
}

/// What loading needs from the server, borrowed for one load.
pub(super) struct Loader<'a> {
    pub runtime: &'a Arc<Runtime>,
    pub registry: &'a Registry,
    pub config: &'a Config,
}

/// What a plugin's versions share: its timers and its upstreams.
pub(super) struct Shared {
    pub timers: Arc<Timers>,
    pub upstreams: Arc<Upstreams>,
}

impl Loader<'_> {
    /// Fresh timers and upstreams for plugin `name`, on the config's
    /// limits and timeouts.
    pub fn shared(&self, name: &str) -> Shared {
        let settings = UpstreamSettings::new(&self.config.limits, &self.config.timeouts);
        Shared {
            timers: Arc::default(),
            upstreams: Upstreams::new(name, settings),
        }
    }

    pub async fn load(
        &self,
        name: &str,
        source: Source,
        shared: &Shared,
    ) -> Result<Loaded, LoadError> {
        let Source {
            bytes,
            hash,
            sidecar,
        } = source;
        let grants = resolve_grants(
            &sidecar.grants,
            &self.config.grants,
            &self.config.plugin_dir,
        )
        .map_err(|e| {
            LoadError::new(Stage::Sidecar, format!("{name}.toml: {e}"))
                .with_hint("the server's [grants] in wsgate.toml lists what sidecars may ask for")
        })?;
        sidecar
            .history
            .validate()
            .map_err(|e| LoadError::new(Stage::Sidecar, format!("{name}.toml: {e}")))?;
        let rt = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || rt.compile(&bytes, hash))
            .await
            .map_err(|e| LoadError::new(Stage::Validate, format!("the compiler crashed: {e}")))??;
        let prepared = self.runtime.prepare(&compiled)?;
        let imports = self.runtime.imports(&compiled);
        let limits = self.config.limits.clone();
        let env = PluginEnv::new(name, self.registry, limits)
            .with_timers(shared.timers.clone())
            .with_upstreams(shared.upstreams.clone())
            .with_subprotocols(sidecar.subprotocols.clone())
            .with_grants(grants)
            .with_recording(sidecar.history.clone())
            .with_outbound_http(&self.config.outbound.http);
        let env = Arc::new(env);
        let hook_timeout = self.config.timeouts.hook;
        let pool = InstancePool::new(
            prepared,
            env.clone(),
            self.config.limits.instances(),
            hook_timeout,
        );
        let listener = Listener::new(compiled.hash, env, pool, hook_timeout);
        listener.warm_up().await?;
        listener.activate();
        Ok(Loaded {
            listener,
            routes: sidecar.routes_for(name),
            on_reload: sidecar.on_reload,
            took: compiled.took,
            from_cache: compiled.from_cache,
            imports,
        })
    }
}

/// Turns sidecar grants into values: only what the operator's `policy`
/// allows, and failing on what is not there (a plugin that was promised a
/// directory should not start without it). Relative host paths are taken
/// from the plugin directory.
fn resolve_grants(
    g: &SidecarGrants,
    policy: &GrantPolicy,
    plugin_dir: &Path,
) -> Result<Grants, String> {
    let mut grants = Grants::default();
    for name in &g.env {
        if name.starts_with("WSGATE_") {
            return Err(format!(
                "environment variable {name}: WSGATE_* variables are the server's own and never granted"
            ));
        }
        if !policy.env.contains(name) {
            return Err(format!(
                "environment variable {name} is not in the server's grants.env allow-list"
            ));
        }
        let value = std::env::var(name)
            .map_err(|_| format!("granted environment variable {name} is not set"))?;
        grants.env.push((name.clone(), value));
    }
    for (guest, host) in &g.dirs {
        if !guest.starts_with('/') {
            return Err(format!(
                "granted directory {guest:?} must be an absolute guest path"
            ));
        }
        let real = plugin_dir
            .join(host)
            .canonicalize()
            .map_err(|_| format!("granted directory {} does not exist", host.display()))?;
        if !real.is_dir() {
            return Err(format!(
                "granted directory {} is not a directory",
                host.display()
            ));
        }
        let allowed = policy
            .dirs
            .iter()
            .filter_map(|dir| dir.canonicalize().ok())
            .any(|dir| real.starts_with(dir));
        if !allowed {
            return Err(format!(
                "granted directory {} is not within the server's grants.dirs allow-list",
                host.display()
            ));
        }
        grants.dirs.push((real, guest.clone()));
    }
    grants.outbound = outbound_policy(&g.allowed_outbound_hosts, policy)?;
    Ok(grants)
}

/// The sidecar's outbound entries, each within one of the operator's.
fn outbound_policy(asked: &[String], policy: &GrantPolicy) -> Result<OutboundPolicy, String> {
    let allowed = policy.outbound_hosts()?;
    let mut entries = Vec::with_capacity(asked.len());
    for text in asked {
        let entry: AllowedHost = text.parse()?;
        if !allowed.iter().any(|a| a.covers(&entry)) {
            return Err(format!(
                "allowed_outbound_hosts entry {text:?} is not within the server's grants.allowed_outbound_hosts"
            ));
        }
        entries.push(entry);
    }
    Ok(OutboundPolicy::new(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_stay_within_the_operators_allow_list() {
        let root = tempfile_dir("grants");
        let data = root.join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let plugins = root.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let policy = GrantPolicy {
            env: vec!["HOME".into(), "WSGATE_ADMIN__TOKEN".into()],
            dirs: vec![data.clone()],
            allowed_outbound_hosts: Vec::new(),
        };
        let ask = |env: &[&str], dirs: &[(&str, &Path)]| SidecarGrants {
            env: env.iter().map(|s| s.to_string()).collect(),
            dirs: dirs
                .iter()
                .map(|(g, h)| (g.to_string(), h.to_path_buf()))
                .collect(),
            allowed_outbound_hosts: Vec::new(),
        };
        let ok = resolve_grants(
            &ask(&["HOME"], &[("/d", &data.join("sub"))]),
            &policy,
            &plugins,
        );
        assert!(ok.is_ok(), "{ok:?}");
        // Relative to the plugin directory.
        let relative = resolve_grants(
            &ask(&[], &[("/d", Path::new("../data"))]),
            &policy,
            &plugins,
        );
        assert!(relative.is_ok(), "{relative:?}");
        for (refused, why) in [
            (ask(&["PATH"], &[]), "grants.env"),
            (ask(&["WSGATE_ADMIN__TOKEN"], &[]), "never granted"),
            (ask(&[], &[("/d", Path::new("/"))]), "grants.dirs"),
            (ask(&[], &[("/d", &plugins)]), "grants.dirs"),
            (
                ask(&[], &[("/d", &data.join("../data/../plugins"))]),
                "grants.dirs",
            ),
        ] {
            let err = resolve_grants(&refused, &policy, &plugins).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let none = GrantPolicy::default();
        assert!(resolve_grants(&ask(&["HOME"], &[]), &none, &plugins).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn outbound_hosts_stay_within_the_operators_entries() {
        let policy = GrantPolicy {
            allowed_outbound_hosts: vec!["https://*.example.com".into(), "*://127.0.0.1:*".into()],
            ..GrantPolicy::default()
        };
        let ask = |hosts: &[&str]| hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let granted = outbound_policy(
            &ask(&["https://auth.example.com", "ws://127.0.0.1:9000"]),
            &policy,
        )
        .unwrap();
        assert_eq!(granted.entries().len(), 2);
        for (refused, why) in [
            (ask(&["https://example.org"]), "not within the server's"),
            (ask(&["http://auth.example.com"]), "not within the server's"),
            (ask(&["https://*"]), "not within the server's"),
            (ask(&["auth.example.com"]), "no scheme"),
        ] {
            let err = outbound_policy(&refused, &policy).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let none = GrantPolicy::default();
        assert!(outbound_policy(&ask(&["https://auth.example.com"]), &none).is_err());
        assert!(outbound_policy(&[], &none).unwrap().is_empty());
    }

    fn tempfile_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
