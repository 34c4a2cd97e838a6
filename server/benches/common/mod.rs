//! What the in-process benches share: a plugin prepared the way the
//! deployer prepares it, without a server around it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use wsgate::config::Limits;
use wsgate::registry::Registry;
use wsgate::runtime::{PluginEnv, Prepared, Runtime, content_hash};

/// An engine with the server's default limits and no compile cache, so
/// every run compiles what it measures.
pub struct Bench {
    pub limits: Limits,
    pub runtime: Runtime,
    pub registry: Arc<Registry>,
}

impl Bench {
    pub fn new() -> anyhow::Result<Bench> {
        let limits = Limits::default();
        let runtime = Runtime::new(limits.instance_memory, None)?;
        Ok(Bench {
            limits,
            runtime,
            registry: Registry::new(),
        })
    }

    /// A plugin's environment as the deployer builds it (no grants).
    pub fn env(&self, name: &str) -> Arc<PluginEnv> {
        Arc::new(PluginEnv::new(name, &self.registry, self.limits.clone()))
    }

    /// Compiles and pre-links a plugin; also returns its size in bytes.
    pub fn prelink(&self, path: &Path) -> anyhow::Result<(Prepared, usize)> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let compiled = self.runtime.compile(&bytes, content_hash(&bytes))?;
        Ok((self.runtime.prepare(&compiled)?, bytes.len()))
    }
}

/// The plugin's name for reports: its file name without `.wasm`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
