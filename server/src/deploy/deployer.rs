//! Keeping the running deployment in step with the plugin directory, without
//! a restart.
//!
//! Every change (a watch event, an admin command, startup) runs one
//! *reconcile* under a lock: the directory is scanned, and only plugins
//! whose `.wasm` or sidecar changed are compiled again; the others keep
//! their running [`Listener`]. A new version that fails to compile, link or
//! start is reported and the previous version keeps serving. The new route
//! table is then swapped in atomically: new connections get the new
//! version at once, while open connections hold their `Arc<Route>` and so
//! stay on the version they opened with until they close (or, with
//! `on_reload = "close"` in the sidecar, are closed with 1012).
//!
//! Route open-counters live in [`OpenCounters`], keyed by plugin and
//! pattern, so `on-first-open`/`on-last-close` stay paired across versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::{Deployment, Loaded, Source, load_one, plugin_files};
use crate::gateway::Gateway;
use crate::metrics::metrics;
use crate::protocol::close;
use crate::registry::Connection;
use crate::routing::{OnReload, OpenCounters};
use crate::runtime::{Listener, Timers, content_hash};
use crate::unix_ms;

/// Close code for connections closed because their plugin was replaced.
pub const SERVICE_RESTART: u16 = 1012;

pub struct Deployer {
    state: tokio::sync::Mutex<State>,
    counters: OpenCounters,
    /// Each plugin's timers, shared by its versions.
    timers: dashmap::DashMap<String, Arc<Timers>>,
    ready: AtomicBool,
    /// The latest plugin summaries, readable without waiting for a reload.
    summary: Mutex<Vec<PluginInfo>>,
    pub started: Instant,
}

impl Default for Deployer {
    fn default() -> Self {
        Deployer {
            state: Default::default(),
            counters: OpenCounters::default(),
            timers: Default::default(),
            ready: AtomicBool::new(false),
            summary: Mutex::default(),
            started: Instant::now(),
        }
    }
}

#[derive(Default)]
struct State {
    plugins: BTreeMap<String, Slot>,
    stopped: BTreeSet<String>,
}

#[derive(Default)]
struct Slot {
    file: String,
    /// Size, modification time and sidecar text last seen on disk: when
    /// these are unchanged the file is not even read again.
    seen: Option<(u64, Option<SystemTime>, Option<String>)>,
    /// Content hash and sidecar of the last failed attempt, so an
    /// unchanged broken file is reported once, not on every event.
    failed: Option<(String, Option<String>)>,
    serving: Option<Serving>,
    error: Option<String>,
    error_at: Option<SystemTime>,
}

struct Serving {
    listener: Arc<Listener>,
    patterns: Vec<String>,
    sidecar_text: Option<String>,
    on_reload: OnReload,
    compile_ms: f64,
    from_cache: bool,
}

/// One plugin as the admin API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub file: String,
    /// `loaded`, `failed` or `stopped`.
    pub status: &'static str,
    /// SHA-256 of the `.wasm` being served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_cache: Option<bool>,
    pub routes: Vec<String>,
    pub on_reload: OnReload,
    /// The last load error; with status `loaded` it means a newer file
    /// failed and the previous version is still serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_at_ms: Option<u64>,
}

/// What an admin command did.
#[derive(Debug)]
pub enum AdminError {
    UnknownPlugin,
}

/// The sidecar beside `wasm`: `None` when there is none; an error when it
/// exists but cannot be read.
fn read_sidecar(wasm: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(wasm.with_extension("toml")) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Deployer {
    /// Whether the first load has finished (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.summary.lock().unwrap().clone()
    }

    /// Plugins per status, for the `wsgate_plugins` gauge.
    pub fn status_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts = vec![("loaded", 0), ("failed", 0), ("stopped", 0)];
        for p in self.summary.lock().unwrap().iter() {
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == p.status) {
                c.1 += 1;
            }
        }
        counts
    }

    /// Scans the plugin directory and applies what changed. `force` names a
    /// plugin to load again from disk even if its file is unchanged.
    pub async fn reconcile(&self, gw: &Gateway, force: Option<&str>) {
        let mut state = self.state.lock().await;
        let dir = &gw.config.plugin_dir;
        let files = match plugin_files(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read the plugin directory: {e}");
                self.ready.store(true, Ordering::Release);
                return;
            }
        };
        if files.is_empty() && state.plugins.is_empty() {
            tracing::warn!(dir = %dir.display(), "no plugins (*.wasm) in the plugin directory");
        }
        let mut to_close: Vec<(Arc<Connection>, &'static str)> = Vec::new();
        let present: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
        for (name, path) in files {
            let forced = force == Some(name.as_str());
            if state.stopped.contains(&name) && !forced {
                continue;
            }
            let slot = state.plugins.entry(name.clone()).or_default();
            slot.file = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(closing) = self.refresh(gw, slot, &name, &path, forced).await {
                to_close.extend(closing);
            }
        }
        let removed: Vec<String> = state
            .plugins
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in removed {
            state.plugins.remove(&name);
            tracing::info!(plugin = %name, "removed; its open connections keep the old version until they close");
        }
        self.publish(gw, &mut state);
        drop(state);
        for (conn, reason) in to_close {
            let _ = conn.close(SERVICE_RESTART, reason);
        }
    }

    /// Loads one plugin again if its files changed (or `forced`). Returns
    /// the connections to close once the new version is in service.
    async fn refresh(
        &self,
        gw: &Gateway,
        slot: &mut Slot,
        name: &str,
        path: &Path,
        forced: bool,
    ) -> Option<Vec<(Arc<Connection>, &'static str)>> {
        let meta = std::fs::metadata(path).ok()?;
        let sidecar_read = read_sidecar(path);
        let sidecar_text = sidecar_read.as_ref().ok().cloned().flatten();
        let seen = (meta.len(), meta.modified().ok(), sidecar_text.clone());
        if !forced && slot.seen.as_ref() == Some(&seen) {
            return None;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(plugin = %name, "cannot read: {e}");
                return None;
            }
        };
        slot.seen = Some(seen);
        let hash = content_hash(&bytes);
        let fingerprint = (hash, sidecar_text.clone());
        if !forced
            && let Some(serving) = &slot.serving
            && serving.listener.hash == fingerprint.0
            && serving.sidecar_text == fingerprint.1
        {
            // Touched or rewritten with the same content.
            slot.error = None;
            return None;
        }
        if !forced && slot.failed.as_ref() == Some(&fingerprint) {
            return None;
        }
        let timers = self.timers.entry(name.to_owned()).or_default().clone();
        let loaded = match sidecar_read {
            Ok(sidecar) => {
                let source = Source {
                    bytes,
                    hash: fingerprint.0.clone(),
                    sidecar,
                };
                load_one(&gw.runtime, &gw.registry, &gw.config, name, source, timers).await
            }
            Err(e) => Err(format!("{name}.toml: {e}")),
        };
        match loaded {
            Ok(Loaded {
                listener,
                routes: patterns,
                on_reload,
                took,
                from_cache,
            }) => {
                let previous = slot.serving.take();
                let verb = if previous.is_some() {
                    "reloaded"
                } else {
                    "loaded"
                };
                tracing::info!(
                    plugin = %name, version = %&listener.hash[..12], routes = ?patterns,
                    cached = from_cache, "{verb} in {:.1} ms", took.as_secs_f64() * 1e3
                );
                metrics().reloads.with_label_values(&[name]).inc();
                // Connections of the old version, collected before the swap
                // so none of the new version's is among them.
                let closing = match (&previous, on_reload) {
                    (Some(_), OnReload::Close) => listener
                        .env
                        .scope
                        .connections()
                        .into_iter()
                        .map(|c| (c, "service restart"))
                        .collect(),
                    _ => Vec::new(),
                };
                slot.serving = Some(Serving {
                    listener,
                    patterns,
                    sidecar_text,
                    on_reload,
                    compile_ms: took.as_secs_f64() * 1e3,
                    from_cache,
                });
                slot.error = None;
                slot.error_at = None;
                slot.failed = None;
                Some(closing)
            }
            Err(error) => {
                metrics().load_failures.with_label_values(&[name]).inc();
                if slot.serving.is_some() {
                    tracing::error!(plugin = %name, file = %slot.file,
                        "new version not loaded, the previous one keeps serving: {error}");
                } else {
                    tracing::error!(plugin = %name, file = %slot.file, "not loaded: {error}");
                }
                slot.error = Some(error);
                slot.error_at = Some(SystemTime::now());
                slot.failed = Some(fingerprint);
                None
            }
        }
    }

    /// Builds the route table from the serving versions and swaps it in.
    fn publish(&self, gw: &Gateway, state: &mut State) {
        let mut deployment = Deployment::default();
        let mut summary = Vec::new();
        let State { plugins, stopped } = state;
        for (name, slot) in plugins.iter_mut() {
            let is_stopped = stopped.contains(name);
            if !is_stopped && let Some(serving) = &slot.serving {
                let added =
                    deployment
                        .routes
                        .add(&serving.patterns, &serving.listener, &self.counters);
                if let Err(e) = added {
                    tracing::error!(plugin = %name, "not routed: {e}");
                    slot.error = Some(e);
                    slot.error_at = Some(SystemTime::now());
                    slot.serving = None;
                }
            }
            let serving = slot.serving.as_ref();
            let status = if is_stopped {
                "stopped"
            } else if serving.is_some() {
                "loaded"
            } else {
                "failed"
            };
            let info = PluginInfo {
                name: name.clone(),
                file: slot.file.clone(),
                status,
                hash: serving.map(|s| s.listener.hash.clone()),
                loaded_at_ms: serving.map(|s| unix_ms(s.listener.loaded_at)),
                compile_ms: serving.map(|s| s.compile_ms),
                from_cache: serving.map(|s| s.from_cache),
                routes: serving.map(|s| s.patterns.clone()).unwrap_or_default(),
                on_reload: serving.map(|s| s.on_reload).unwrap_or_default(),
                error: slot.error.clone(),
                error_at_ms: slot.error_at.map(unix_ms),
            };
            summary.push(info);
        }
        gw.deploy(deployment);
        *self.summary.lock().unwrap() = summary;
        self.ready.store(true, Ordering::Release);
    }

    fn known(state: &State, dir: &Path, name: &str) -> bool {
        state.plugins.contains_key(name) || plugin_path(dir, name).is_some()
    }

    /// Takes a plugin out of service: its routes go (new connections get
    /// 404) and its open connections are closed with 1001. It stays
    /// stopped, whatever happens to its file, until started again.
    pub async fn stop(&self, gw: &Gateway, name: &str) -> Result<(), AdminError> {
        let mut state = self.state.lock().await;
        if !Self::known(&state, &gw.config.plugin_dir, name) {
            return Err(AdminError::UnknownPlugin);
        }
        state.stopped.insert(name.to_owned());
        if let Some(slot) = state.plugins.get_mut(name) {
            slot.serving = None;
            slot.seen = None;
        }
        self.publish(gw, &mut state);
        drop(state);
        tracing::info!(plugin = %name, "stopped by the admin API");
        for scope in gw.registry.scopes() {
            if &*scope.name == name {
                for conn in scope.connections() {
                    let _ = conn.close(close::GOING_AWAY, "plugin stopped");
                }
            }
        }
        Ok(())
    }

    /// Puts a stopped plugin back in service, loading it from disk.
    pub async fn start(&self, gw: &Gateway, name: &str) -> Result<(), AdminError> {
        {
            let mut state = self.state.lock().await;
            if !Self::known(&state, &gw.config.plugin_dir, name) {
                return Err(AdminError::UnknownPlugin);
            }
            state.stopped.remove(name);
        }
        tracing::info!(plugin = %name, "started by the admin API");
        self.reconcile(gw, Some(name)).await;
        Ok(())
    }

    /// Loads a plugin again from disk, even if its file is unchanged.
    pub async fn reload(&self, gw: &Gateway, name: &str) -> Result<(), AdminError> {
        if plugin_path(&gw.config.plugin_dir, name).is_none() {
            return Err(AdminError::UnknownPlugin);
        }
        tracing::info!(plugin = %name, "reload requested by the admin API");
        self.reconcile(gw, Some(name)).await;
        Ok(())
    }
}

fn plugin_path(dir: &Path, name: &str) -> Option<PathBuf> {
    if !super::valid_name(name) {
        return None;
    }
    let path = dir.join(format!("{name}.wasm"));
    path.is_file().then_some(path)
}
