//! Turning the plugin directory into a running deployment: every
//! `NAME.wasm` (with its optional `NAME.toml`) is compiled, linked,
//! instantiated once and routed. A plugin that fails any step is reported
//! with the reason and skipped; the others still serve.

mod deployer;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::registry::Registry;
use crate::routing::{OnReload, RouteTable, Sidecar};
use crate::runtime::bindings::PluginPre;
use crate::runtime::{Grants, InstancePool, Listener, PluginEnv, Runtime, Timers};
pub use deployer::{AdminError, Deployer, PluginInfo, SERVICE_RESTART};

/// The routes in effect (plugin status lives in the [`Deployer`]).
#[derive(Default)]
pub struct Deployment {
    pub routes: RouteTable,
}

/// A plugin name becomes a URL segment and a log field: keep it plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `NAME.wasm` files in `dir`, sorted by name.
pub(crate) fn plugin_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm")
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.push((stem.to_owned(), path));
        }
    }
    files.sort();
    Ok(files)
}

/// A plugin version as read from disk, once: the deployer hashes it to
/// decide whether anything changed, and loading uses the same bytes.
pub(crate) struct Source {
    pub bytes: Vec<u8>,
    /// [`content_hash`](crate::runtime::content_hash) of `bytes`.
    pub hash: String,
    /// The sidecar's text; `None` when there is no sidecar.
    pub sidecar: Option<String>,
}

/// A version that compiled, linked and started.
pub(crate) struct Loaded {
    pub listener: Arc<Listener>,
    pub routes: Vec<String>,
    pub on_reload: OnReload,
    pub took: Duration,
    pub from_cache: bool,
}

pub(crate) async fn load_one(
    runtime: &Arc<Runtime>,
    registry: &Registry,
    config: &Config,
    name: &str,
    source: Source,
    timers: Arc<Timers>,
) -> Result<Loaded, String> {
    if !valid_name(name) {
        return Err("plugin names may use only letters, digits, - and _ (at most 64)".into());
    }
    let sidecar = match &source.sidecar {
        Some(text) => Sidecar::parse(text).map_err(|e| format!("{name}.toml: {e}"))?,
        None => Sidecar::default(),
    };
    let Source { bytes, hash, .. } = source;
    let rt = runtime.clone();
    let compiled = tokio::task::spawn_blocking(move || rt.compile(&bytes, hash))
        .await
        .map_err(|e| format!("compiler crashed: {e}"))?
        .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
    let pre = runtime
        .linker
        .instantiate_pre(&compiled.component)
        .map_err(|e| {
            format!("cannot be linked (does it target the wsgate:plugin world?): {e:#}")
        })?;
    let pre = PluginPre::new(pre)
        .map_err(|e| format!("does not export the wsgate listener interface: {e:#}"))?;
    let grants = resolve_grants(&sidecar.grants).map_err(|e| format!("{name}.toml: {e}"))?;
    let env = Arc::new(PluginEnv {
        grants,
        name: Arc::from(name),
        scope: registry.scope(name, config.limits.state_bytes),
        limits: config.limits.clone(),
        timers,
        subprotocols: sidecar.subprotocols.clone(),
    });
    let pool = InstancePool::new(
        pre,
        env.clone(),
        config.limits.instances(),
        config.timeouts.hook,
    );
    let listener = Listener::new(compiled.hash, env, pool, config.timeouts.hook);
    listener
        .warm_up()
        .await
        .map_err(|e| format!("fails to start: {e}"))?;
    listener.activate();
    Ok(Loaded {
        listener,
        routes: sidecar.routes_for(name),
        on_reload: sidecar.on_reload,
        took: compiled.took,
        from_cache: compiled.from_cache,
    })
}

/// Turns sidecar grants into values, failing on what is not there: a
/// plugin that was promised a directory should not start without it.
fn resolve_grants(g: &crate::routing::SidecarGrants) -> Result<Grants, String> {
    let mut grants = Grants::default();
    for name in &g.env {
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
        if !host.is_dir() {
            return Err(format!(
                "granted directory {} does not exist",
                host.display()
            ));
        }
        grants.dirs.push((host.clone(), guest.clone()));
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["echo", "chat-py", "a_1"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
