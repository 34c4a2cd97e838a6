//! The Wasmtime engine shared by every plugin: compilation (with an on-disk
//! cache keyed by content and engine settings), the pooling allocator, and
//! the epoch clock that enforces hook deadlines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::host::HostState;
use super::load_error::{LoadError, Stage, check_preamble, exports_error, link_error};
use super::pool::Prepared;

/// How often the epoch advances. A hook overrunning its deadline is
/// interrupted within one tick, and a long hook yields every tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
}

/// A compiled component and how it was obtained.
pub struct Compiled {
    pub component: Component,
    /// SHA-256 of the `.wasm` bytes, hex.
    pub hash: String,
    pub from_cache: bool,
    pub took: Duration,
}

impl Runtime {
    pub fn new(instance_memory: usize, cache_dir: Option<PathBuf>) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.memory_init_cow(true);
        // Linear memory never grows past the per-instance cap, so the pool
        // reserves exactly that per slot (plus guard pages).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(1000)
            .total_core_instances(4000)
            .total_memories(1000)
            .total_tables(2000)
            .max_memory_size(instance_memory)
            .table_elements(100_000)
            .max_core_instance_size(16 << 20)
            .max_component_instance_size(16 << 20)
            .max_memories_per_component(16)
            .max_tables_per_component(64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the Wasm engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        // WASI is linked so ordinary toolchain output instantiates, but each
        // store's WasiCtx grants nothing: no files, env, args or sockets.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // So is `wasi:http`, for every plugin: a plugin that uses it loads
        // without a grant, and each request it makes is checked against
        // its grants (`outbound::http`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        super::bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wsgate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let cache_dir = cache_dir.filter(|dir| match std::fs::create_dir_all(dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
                false
            }
        });
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
        })
    }

    /// Compiles a component, or loads it from the cache when these exact
    /// bytes were compiled before by an engine with the same settings.
    /// `hash` is [`content_hash`] of `bytes`: the deployer has it already,
    /// since it decides from it whether to compile at all.
    pub fn compile(&self, bytes: &[u8], hash: String) -> Result<Compiled, LoadError> {
        let start = Instant::now();
        check_preamble(bytes)?;
        let cached = self.cache_path(&hash);
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the cache directory holds only artifacts this
            // process family serialized itself, named by a hash of the
            // source bytes and the engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        hash,
                        from_cache: true,
                        took: start.elapsed(),
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring bad cache entry: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::new(Stage::Validate, format!("{e:#}")))?;
        if let Some(path) = &cached {
            let written = component
                .serialize()
                .map_err(std::io::Error::other)
                .and_then(|compiled| write_atomically(path, &compiled));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "could not cache compiled plugin: {e}");
            }
        }
        Ok(Compiled {
            component,
            hash,
            from_cache: false,
            took: start.elapsed(),
        })
    }

    /// Links a compiled plugin against the host's imports and checks that
    /// it exports the listener interface, so instances can be made from it
    /// in microseconds.
    pub fn prepare(&self, compiled: &Compiled) -> Result<Prepared, LoadError> {
        let component = &compiled.component;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| link_error(&self.engine, component, &format!("{e:#}")))?;
        Prepared::new(pre).ok_or_else(|| exports_error(&self.engine, component))
    }

    /// The names of what a compiled plugin imports.
    pub fn imports(&self, compiled: &Compiled) -> Vec<String> {
        let ty = compiled.component.component_type();
        ty.imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    fn cache_path(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut engine_hash,
        );
        let engine_hash = std::hash::Hasher::finish(&engine_hash);
        Some(dir.join(format!("{hash}-{engine_hash:016x}.cwasm")))
    }
}

/// The hex SHA-256 of a plugin's bytes: its version identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
