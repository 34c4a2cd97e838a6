//! Keeping the running deployment in step with the plugin directory, without
//! a restart.
//!
//! Every change (a watch event, an admin command, startup) runs one
//! *reconcile* under a lock: the directory is scanned, and only plugins
//! whose `.wasm` or sidecar changed are compiled again; the others keep
//! their running [`Listener`]. Changed plugins load side by side (up to one
//! per core, smallest first, so a Rust plugin that compiles in milliseconds
//! never waits for a Python one that takes seconds), and each is put in
//! service as soon as it is ready: until then the routes of a plugin with
//! no version serving answer 503 (`starting`), while a plugin being
//! replaced keeps serving its previous version. A new version that fails to
//! compile, link or start is reported and the previous version keeps
//! serving.
//!
//! Each route table is swapped in atomically: new connections get the new
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

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::Serialize;

use super::load::{Loaded, Loader, Shared, Source};
use super::{Deployment, plugin_files, valid_name};
use crate::config::Config;
use crate::metrics::metrics;
use crate::protocol::CloseCode;
use crate::registry::{Connection, Registry};
use crate::routing::{OnReload, OpenCounters, Sidecar};
use crate::runtime::{Listener, LoadError, Runtime, Stage, content_hash};
use crate::unix_ms;

pub struct Deployer {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    config: Config,
    /// The routes in effect; request handlers read it without waiting.
    live: ArcSwap<Deployment>,
    state: tokio::sync::Mutex<State>,
    counters: OpenCounters,
    /// Each plugin's timers and upstreams, shared by its versions.
    shared: dashmap::DashMap<String, Arc<Shared>>,
    ready: AtomicBool,
    /// The latest plugin summaries, readable without waiting for a reload.
    summary: Mutex<Vec<PluginInfo>>,
    pub started: Instant,
}

/// Where a plugin stands, as the admin API and the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginStatus {
    /// Its first version is being compiled; its routes answer 503.
    Loading,
    Loaded,
    Failed,
    /// Taken out of service by the admin API.
    Stopped,
}

impl PluginStatus {
    pub const ALL: [PluginStatus; 4] = [
        PluginStatus::Loading,
        PluginStatus::Loaded,
        PluginStatus::Failed,
        PluginStatus::Stopped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Loading => "loading",
            PluginStatus::Loaded => "loaded",
            PluginStatus::Failed => "failed",
            PluginStatus::Stopped => "stopped",
        }
    }
}

#[derive(Default)]
struct State {
    plugins: BTreeMap<String, Slot>,
    stopped: BTreeSet<String>,
}

/// Size, modification time and sidecar text of a plugin's files.
type Seen = (u64, Option<SystemTime>, Option<String>);

/// Content hash and sidecar text: what makes a version a version.
type Fingerprint = (String, Option<String>);

#[derive(Default)]
struct Slot {
    file: String,
    /// What was last seen on disk: when it is unchanged the file is not
    /// even read again.
    seen: Option<Seen>,
    /// The last failed attempt, so an unchanged broken file is reported
    /// once, not on every event.
    failed: Option<Fingerprint>,
    serving: Option<Serving>,
    /// The routes of a version being loaded while none serves.
    starting: Option<Vec<String>>,
    /// Why the serving version has no routes: another plugin holds them.
    conflict: Option<String>,
    error: Option<LoadError>,
    error_at: Option<SystemTime>,
}

struct Serving {
    listener: Arc<Listener>,
    patterns: Vec<String>,
    /// Its routes are in the table: it keeps them against newcomers.
    routed: bool,
    sidecar_text: Option<String>,
    on_reload: OnReload,
    compile_ms: f64,
    from_cache: bool,
}

/// One plugin version to load (its [`Source`] travels beside it).
struct Job {
    name: String,
    fingerprint: Fingerprint,
}

/// The size up to which a plugin counts as small when loading: Rust and C
/// listeners are tens to hundreds of KB and compile in milliseconds;
/// Python and JavaScript ones carry an interpreter (12-18 MB) and take
/// seconds.
const SMALL_PLUGIN: usize = 4 << 20;

/// One plugin as the admin API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub file: String,
    pub status: PluginStatus,
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
    /// Where loading stopped (`read`, `sidecar`, `decode`, `validate`,
    /// `link`, `exports`, `instantiate`), with `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_stage: Option<Stage>,
    /// What to do about the error, when there is something to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_at_ms: Option<u64>,
}

/// What an admin command did.
#[derive(Debug)]
pub enum AdminError {
    UnknownPlugin,
}

/// A name from the plugin directory as logs show it: any file name can
/// be there, newlines included.
fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    crate::text::printable(name, 128)
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
    pub fn new(config: Config, runtime: Arc<Runtime>, registry: Arc<Registry>) -> Deployer {
        Deployer {
            runtime,
            registry,
            config,
            live: ArcSwap::from_pointee(Deployment::default()),
            state: Default::default(),
            counters: OpenCounters::default(),
            shared: Default::default(),
            ready: AtomicBool::new(false),
            summary: Mutex::default(),
            started: Instant::now(),
        }
    }

    /// The deployment in effect; requests in flight keep the one they saw.
    pub fn deployment(&self) -> Arc<Deployment> {
        self.live.load_full()
    }

    /// Whether the first load has finished, every plugin in service or
    /// failed (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.summary.lock().unwrap().clone()
    }

    /// Plugins per status, for the `wsgate_plugins` gauge.
    pub fn status_counts(&self) -> Vec<(PluginStatus, usize)> {
        let summary = self.summary.lock().unwrap();
        PluginStatus::ALL
            .iter()
            .map(|&status| {
                (
                    status,
                    summary.iter().filter(|p| p.status == status).count(),
                )
            })
            .collect()
    }

    fn loader(&self) -> Loader<'_> {
        Loader {
            runtime: &self.runtime,
            registry: &self.registry,
            config: &self.config,
        }
    }

    /// Scans the plugin directory and applies what changed. `force` names a
    /// plugin to load again from disk even if its file is unchanged.
    pub async fn reconcile(&self, force: Option<&str>) {
        let mut state = self.state.lock().await;
        let dir = &self.config.plugin_dir;
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
        let present: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let mut jobs = Vec::new();
        for (name, path) in files {
            let forced = force == Some(name.as_str());
            if state.stopped.contains(&name) && !forced {
                continue;
            }
            let slot = state.plugins.entry(name.clone()).or_default();
            slot.file = path.file_name().unwrap().to_string_lossy().into_owned();
            jobs.extend(self.job(slot, &name, &path, forced));
        }
        let removed: Vec<String> = state
            .plugins
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in removed {
            state.plugins.remove(&name);
            tracing::info!(plugin = %shown(&name), "removed; its open connections keep the old version until they close");
        }
        self.publish(&mut state);

        // Small plugins first, up to one per core at a time: beside a
        // large one, a small one would wait in Wasmtime's compile threads
        // behind the large one's functions (measured: a 47 KB echo took
        // 12.6 s beside a 12 MB JavaScript plugin, 80 ms alone). Then the
        // large ones one at a time, each on every core through Wasmtime's
        // parallel compilation: side by side they take as long in all
        // (26-33 s for a Python and a JavaScript plugin, against 29 s one
        // after the other) and the first is served 10 s later.
        let (small, large) = jobs
            .into_iter()
            .partition(|(_, source): &(Job, Source)| source.bytes.len() <= SMALL_PLUGIN);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.load_all(&mut state, small, cores).await;
        self.load_all(&mut state, large, 1).await;
        self.ready.store(true, Ordering::Release);
    }

    /// Loads `jobs`, up to `parallel` at a time, smallest first, and serves
    /// each as soon as it is loaded.
    async fn load_all(&self, state: &mut State, mut jobs: Vec<(Job, Source)>, parallel: usize) {
        jobs.sort_by_key(|(_, source)| source.bytes.len());
        let mut loads = futures_util::stream::iter(jobs)
            .map(|(job, source)| async move {
                let shared = self
                    .shared
                    .entry(job.name.clone())
                    .or_insert_with(|| Arc::new(self.loader().shared(&job.name)))
                    .clone();
                let loaded = self.loader().load(&job.name, source, &shared).await;
                (job, loaded)
            })
            .buffer_unordered(parallel);
        while let Some((job, loaded)) = loads.next().await {
            let Some(slot) = state.plugins.get_mut(&job.name) else {
                continue;
            };
            let closing = self.apply(slot, job, loaded);
            self.publish(state);
            for conn in closing {
                let _ = conn.close(CloseCode::SERVICE_RESTART, "service restart");
            }
        }
    }

    /// What to load for one plugin, if its files changed (or `forced`).
    fn job(&self, slot: &mut Slot, name: &str, path: &Path, forced: bool) -> Option<(Job, Source)> {
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
                let error = LoadError::new(Stage::Read, format!("{}: {e}", slot.file));
                self.fail(slot, name, error, (String::new(), sidecar_text));
                return None;
            }
        };
        slot.seen = Some(seen);
        let fingerprint = (content_hash(&bytes), sidecar_text);
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
        let sidecar = match (valid_name(name), sidecar_read) {
            (false, _) => Err(LoadError::new(
                Stage::Read,
                "plugin names may use only letters, digits, - and _ (at most 64)",
            )
            .with_hint("rename the file: its name is the plugin's name and its URL")),
            (true, Err(e)) => Err(LoadError::new(Stage::Sidecar, format!("{name}.toml: {e}"))),
            (true, Ok(None)) => Ok(Sidecar::default()),
            (true, Ok(Some(text))) => Sidecar::parse(&text)
                .map_err(|e| LoadError::new(Stage::Sidecar, format!("{name}.toml: {e}"))),
        };
        let sidecar = match sidecar {
            Ok(sidecar) => sidecar,
            Err(error) => {
                self.fail(slot, name, error, fingerprint);
                return None;
            }
        };
        if slot.serving.is_none() {
            slot.starting = Some(sidecar.routes_for(name));
        }
        let source = Source {
            bytes,
            hash: fingerprint.0.clone(),
            sidecar,
        };
        let job = Job {
            name: name.to_owned(),
            fingerprint,
        };
        Some((job, source))
    }

    /// Puts a loaded version in service, or records why it failed. Returns
    /// the connections of the previous version to close, if its sidecar
    /// asks for that.
    fn apply(
        &self,
        slot: &mut Slot,
        job: Job,
        loaded: Result<Loaded, LoadError>,
    ) -> Vec<Arc<Connection>> {
        slot.starting = None;
        let Job { name, fingerprint } = job;
        let Loaded {
            listener,
            routes: patterns,
            on_reload,
            took,
            from_cache,
            ..
        } = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.fail(slot, &name, error, fingerprint);
                return Vec::new();
            }
        };
        let previous = slot.serving.take();
        let verb = if previous.is_some() {
            "reloaded"
        } else {
            "loaded"
        };
        tracing::info!(
            plugin = %shown(&name), version = %&listener.hash[..12], routes = ?patterns,
            cached = from_cache, "{verb} in {:.1} ms", took.as_secs_f64() * 1e3
        );
        metrics().reloads.with_label_values(&[&name]).inc();
        // Connections of the old version, collected before the swap so none
        // of the new version's is among them.
        let closing = match (&previous, on_reload) {
            (Some(_), OnReload::Close) => listener.env.scope.connections(),
            _ => Vec::new(),
        };
        slot.serving = Some(Serving {
            listener,
            patterns,
            routed: previous.as_ref().is_some_and(|p| p.routed),
            sidecar_text: fingerprint.1,
            on_reload,
            compile_ms: took.as_secs_f64() * 1e3,
            from_cache,
        });
        slot.error = None;
        slot.error_at = None;
        slot.failed = None;
        closing
    }

    fn fail(&self, slot: &mut Slot, name: &str, error: LoadError, fingerprint: Fingerprint) {
        metrics().load_failures.with_label_values(&[name]).inc();
        let error_text = error.to_string();
        let error_text = crate::text::printable(&error_text, 4096);
        if slot.serving.is_some() {
            tracing::error!(plugin = %shown(name), file = %shown(&slot.file),
                "new version not loaded, the previous one keeps serving: {error_text}");
        } else {
            tracing::error!(plugin = %shown(name), file = %shown(&slot.file), "not loaded: {error_text}");
        }
        slot.starting = None;
        slot.error = Some(error);
        slot.error_at = Some(SystemTime::now());
        slot.failed = Some(fingerprint);
    }

    /// Builds the route table from the serving (and starting) versions and
    /// swaps it in. Versions routed before go first and keep their routes:
    /// a newcomer whose routes collide with theirs is refused, keeps its
    /// loaded version unrouted, and is tried again at every change, so it
    /// is routed once the conflict is gone.
    fn publish(&self, state: &mut State) {
        let mut deployment = Deployment::default();
        let mut summary = Vec::new();
        let State { plugins, stopped } = state;
        for incumbents in [true, false] {
            for (name, slot) in plugins.iter_mut() {
                let Some(serving) = slot.serving.as_mut() else {
                    continue;
                };
                if stopped.contains(name) || serving.routed != incumbents {
                    continue;
                }
                let routes = &mut deployment.routes;
                match routes.add(&serving.patterns, &serving.listener, &self.counters) {
                    Ok(()) => {
                        serving.routed = true;
                        if slot.conflict.take().is_some() {
                            tracing::info!(plugin = %shown(name), "routed now that its routes are free");
                        }
                    }
                    Err(e) => {
                        serving.routed = false;
                        if slot.conflict.as_ref() != Some(&e) {
                            tracing::error!(plugin = %shown(name), "not routed: {e}");
                            slot.error_at = Some(SystemTime::now());
                        }
                        slot.conflict = Some(e);
                    }
                }
            }
        }
        for (name, slot) in plugins.iter_mut() {
            let is_stopped = stopped.contains(name);
            if !is_stopped && let Some(patterns) = &slot.starting {
                deployment.routes.add_starting(patterns, name);
            }
            let serving = slot.serving.as_ref().filter(|s| s.routed);
            // A conflict, when there is one, is the error shown.
            let load_error = slot.error.as_ref().filter(|_| slot.conflict.is_none());
            let status = if is_stopped {
                PluginStatus::Stopped
            } else if serving.is_some() {
                PluginStatus::Loaded
            } else if slot.starting.is_some() {
                PluginStatus::Loading
            } else {
                PluginStatus::Failed
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
                error: slot
                    .conflict
                    .clone()
                    .or_else(|| slot.error.as_ref().map(ToString::to_string)),
                error_stage: load_error.map(|e| e.stage),
                error_hint: load_error.and_then(|e| e.hint.clone()),
                error_at_ms: slot.error_at.map(unix_ms),
            };
            summary.push(info);
        }
        self.live.store(Arc::new(deployment));
        *self.summary.lock().unwrap() = summary;
    }

    fn known(&self, state: &State, name: &str) -> bool {
        state.plugins.contains_key(name) || self.plugin_path(name).is_some()
    }

    fn plugin_path(&self, name: &str) -> Option<PathBuf> {
        if !valid_name(name) {
            return None;
        }
        let path = self.config.plugin_dir.join(format!("{name}.wasm"));
        path.is_file().then_some(path)
    }

    /// Takes a plugin out of service: its routes go (new connections get
    /// 404) and its open connections are closed with 1001. It stays
    /// stopped, whatever happens to its file, until started again.
    pub async fn stop(&self, name: &str) -> Result<(), AdminError> {
        let mut state = self.state.lock().await;
        if !self.known(&state, name) {
            return Err(AdminError::UnknownPlugin);
        }
        state.stopped.insert(name.to_owned());
        if let Some(slot) = state.plugins.get_mut(name) {
            slot.serving = None;
            slot.conflict = None;
            slot.seen = None;
        }
        self.publish(&mut state);
        drop(state);
        tracing::info!(plugin = %shown(name), "stopped by the admin API");
        if let Some(scope) = self.registry.existing_scope(name) {
            for conn in scope.connections() {
                let _ = conn.close(CloseCode::GOING_AWAY, "plugin stopped");
            }
        }
        Ok(())
    }

    /// The server is shutting down: every plugin's upstreams are closed
    /// (1001), their close handshakes waited for up to `bound`.
    pub async fn stop_upstreams(&self, bound: std::time::Duration) {
        let all: Vec<Arc<Shared>> = self.shared.iter().map(|s| s.value().clone()).collect();
        futures_util::future::join_all(all.iter().map(|s| s.upstreams.stop(bound))).await;
    }

    /// Puts a stopped plugin back in service, loading it from disk.
    pub async fn start(&self, name: &str) -> Result<(), AdminError> {
        {
            let mut state = self.state.lock().await;
            if !self.known(&state, name) {
                return Err(AdminError::UnknownPlugin);
            }
            state.stopped.remove(name);
        }
        tracing::info!(plugin = %shown(name), "started by the admin API");
        self.reconcile(Some(name)).await;
        Ok(())
    }

    /// Loads a plugin again from disk, even if its file is unchanged.
    pub async fn reload(&self, name: &str) -> Result<(), AdminError> {
        if self.plugin_path(name).is_none() {
            return Err(AdminError::UnknownPlugin);
        }
        tracing::info!(plugin = %shown(name), "reload requested by the admin API");
        self.reconcile(Some(name)).await;
        Ok(())
    }
}
