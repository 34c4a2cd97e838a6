//! `wsgate check`: everything the deployer does to a plugin, short of
//! serving it. The same loader runs (read, sidecar, decode, validate, link,
//! exports, one instantiation), against the operator's config when there
//! is one, so a plugin that checks clean loads, and one that does not is
//! refused with the same message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::load::{Loader, Source};
use super::valid_name;
use crate::config::Config;
use crate::registry::Registry;
use crate::routing::{Sidecar, check_pattern};
use crate::runtime::{LoadError, Runtime, Stage, content_hash};

/// What a plugin that checked clean is.
#[derive(Debug)]
pub struct Checked {
    pub name: String,
    pub hash: String,
    pub routes: Vec<String>,
    /// The sidecar's grants, as the operator must allow them.
    pub grants: Vec<String>,
    pub imports: Vec<String>,
}

/// Checks `wasm` (with `sidecar`, else the `NAME.toml` beside it).
pub async fn check(
    config: &Config,
    wasm: &Path,
    sidecar: Option<&Path>,
) -> Result<Checked, LoadError> {
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    if !valid_name(&name) {
        return Err(LoadError::new(
            Stage::Read,
            "plugin names may use only letters, digits, - and _ (at most 64)",
        )
        .with_hint("rename the file: its name is the plugin's name and its URL"));
    }
    let bytes = std::fs::read(wasm)
        .map_err(|e| LoadError::new(Stage::Read, format!("{}: {e}", wasm.display())))?;
    let sidecar_path: PathBuf = sidecar.map_or_else(|| wasm.with_extension("toml"), Path::to_owned);
    let sidecar = match std::fs::read_to_string(&sidecar_path) {
        Ok(text) => Sidecar::parse(&text).map_err(|e| {
            LoadError::new(Stage::Sidecar, format!("{}: {e}", sidecar_path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && sidecar.is_none() => {
            Sidecar::default()
        }
        Err(e) => {
            return Err(LoadError::new(
                Stage::Sidecar,
                format!("{}: {e}", sidecar_path.display()),
            ));
        }
    };
    let routes = sidecar.routes_for(&name);
    for pattern in &routes {
        check_pattern(pattern).map_err(|e| LoadError::new(Stage::Sidecar, e.to_string()))?;
    }
    let mut grants: Vec<String> = sidecar
        .grants
        .env
        .iter()
        .map(|v| format!("env {v}"))
        .collect();
    grants.extend(
        sidecar
            .grants
            .dirs
            .iter()
            .map(|(guest, host)| format!("dir {} as {guest}", host.display())),
    );

    // Relative grants resolve against the plugin's own directory here.
    let mut config = config.clone();
    config.plugin_dir = wasm.parent().unwrap_or(Path::new(".")).to_owned();
    let runtime = Arc::new(
        Runtime::new(config.limits.instance_memory, None)
            .map_err(|e| LoadError::new(Stage::Validate, format!("{e:#}")))?,
    );
    let registry = Registry::new();
    let loader = Loader {
        runtime: &runtime,
        registry: &registry,
        config: &config,
    };
    let hash = content_hash(&bytes);
    let source = Source {
        bytes,
        hash: hash.clone(),
        sidecar,
    };
    let loaded = loader.load(&name, source, &loader.shared(&name)).await?;
    Ok(Checked {
        name,
        hash,
        routes,
        grants,
        imports: loaded.imports,
    })
}
