//! Why a plugin could not be loaded, in terms a plugin author can act on:
//! the stage it failed at, what exactly was wrong (the import the server
//! does not provide, the export it lacks, a contract version it does not
//! speak), and what to do about it. The deployer logs it and shows it in
//! `/admin/info`; `wsgate check` prints it.

use std::fmt;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The version of the contract this server speaks, `wit/wsgate.wit`'s.
/// A macro, as `concat!` takes literals only: every name with the version
/// in it is spelled from this one, so a version bump cannot miss one (a
/// missed `on-messages` name would silently cost one call per message).
macro_rules! wit_version {
    () => {
        "0.1.3"
    };
}
pub(crate) use wit_version;

/// The contract this server speaks: the WIT package of `wit/wsgate.wit`.
pub const WIT_PACKAGE: &str = concat!("wsgate:plugin@", wit_version!());
#[cfg(test)]
const WIT_VERSION: &str = wit_version!();
/// Versions this server links: 0.1.x only ever added to the contract
/// (Wasmtime matches a 0.1.0 import to the 0.1.3 the host defines).
const WIT_COMPATIBLE: &str = "0.1.";
const WIT_NAMESPACE: &str = "wsgate:plugin/";
/// The interface a plugin must export.
pub const LISTENER_EXPORT: &str = concat!("wsgate:plugin/listener@", wit_version!());

/// Where loading stopped, in the order loading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The file could not be read.
    Read,
    /// Its sidecar (`NAME.toml`) is wrong, or asks for what is not allowed.
    Sidecar,
    /// The bytes are not a WebAssembly component.
    Decode,
    /// A component, but not a valid one (or not one Wasmtime can compile).
    Validate,
    /// It imports something the server does not provide.
    Link,
    /// It does not export the listener interface.
    Exports,
    /// Starting an instance failed (its start-up code trapped or ran out of
    /// time or memory).
    Instantiate,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Sidecar => "sidecar",
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Link => "link",
            Stage::Exports => "exports",
            Stage::Instantiate => "instantiate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub stage: Stage,
    pub detail: String,
    /// What to do about it, when there is something to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl LoadError {
    pub fn new(stage: Stage, detail: impl Into<String>) -> LoadError {
        LoadError {
            stage,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> LoadError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.stage.as_str(), self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Checks the preamble before compiling, so the common mistakes (a core
/// module, a WIT package, not WebAssembly at all) get their own message.
pub fn check_preamble(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::new(Stage::Decode, "not a WebAssembly file")
            .with_hint("build the plugin for wasm32-wasip2 (Rust), or with componentize-py / ComponentizeJS"));
    }
    match bytes[4..8] {
        // A component: version 0x0d, layer 1.
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::new(
            Stage::Decode,
            "a core WebAssembly module, not a component",
        )
        .with_hint(
            "build for wasm32-wasip2, not wasm32-unknown-unknown or wasm32-wasip1, or wrap the module with `wasm-tools component new`",
        )),
        _ => Err(LoadError::new(
            Stage::Decode,
            "not a WebAssembly component of a version this server reads",
        )),
    }
}

/// A link failure explained from the component's own imports: a contract
/// version the server does not speak, or a capability it does not offer.
pub fn link_error(engine: &Engine, component: &Component, error: &str) -> LoadError {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if let Some(name) = imports.iter().find(|name| of_another_version(name)) {
        let version = name
            .rsplit_once('@')
            .map_or("no version".to_owned(), |(_, v)| format!("version {v}"));
        return LoadError::new(
            Stage::Link,
            format!(
                "the plugin was built against {name} ({version}); this server speaks {WIT_PACKAGE}"
            ),
        )
        .with_hint("rebuild it with the SDK and wit/ of this server's version");
    }
    let detail = match missing_import(error) {
        Some(name) => format!("it imports {name}, which this server does not provide"),
        None => error.to_owned(),
    };
    LoadError::new(Stage::Link, detail).with_hint(
        "a plugin may import only wsgate:plugin/host and WASI's interfaces; remove the import or ask for the capability in its sidecar",
    )
}

/// Whether `name` is one of wsgate's interfaces, at a version this server
/// does not speak.
fn of_another_version(name: &str) -> bool {
    name.starts_with(WIT_NAMESPACE)
        && !name
            .rsplit_once('@')
            .is_some_and(|(_, v)| v.starts_with(WIT_COMPATIBLE))
}

/// The import named in Wasmtime's "... import `NAME` ..." message.
fn missing_import(error: &str) -> Option<&str> {
    let start = error.find('`')? + 1;
    let len = error[start..].find('`')?;
    Some(&error[start..start + len])
}

/// A missing listener export explained from what the component does export.
pub fn exports_error(engine: &Engine, component: &Component) -> LoadError {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if let Some(other) = exports.iter().find(|name| of_another_version(name)) {
        return LoadError::new(
            Stage::Exports,
            format!("the plugin exports {other}; this server speaks {WIT_PACKAGE}"),
        )
        .with_hint("rebuild it with the SDK and wit/ of this server's version");
    }
    let found = if exports.is_empty() {
        "nothing".to_owned()
    } else {
        exports.join(", ")
    };
    LoadError::new(
        Stage::Exports,
        format!("it does not export {LISTENER_EXPORT}; it exports {found}"),
    )
    .with_hint("target the `plugin` world of wit/wsgate.wit (the SDKs' export_listener / Listener class / hook exports do that)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_matches_the_wit() {
        let wit = include_str!("../../../wit/wsgate.wit");
        assert!(wit.contains(&format!("package {WIT_PACKAGE};")));
        assert!(WIT_PACKAGE.ends_with(WIT_VERSION));
        assert!(LISTENER_EXPORT.ends_with(WIT_VERSION));
        assert!(WIT_VERSION.starts_with(WIT_COMPATIBLE));
        assert!(!of_another_version("wsgate:plugin/host@0.1.0"));
        assert!(of_another_version("wsgate:plugin/host@0.2.0"));
    }

    #[test]
    fn preambles() {
        assert_eq!(
            check_preamble(b"hello world").unwrap_err().stage,
            Stage::Decode
        );
        let core = check_preamble(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(core.detail.contains("core WebAssembly module"), "{core}");
        assert!(check_preamble(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn messages_name_the_stage_and_the_fix() {
        let e = LoadError::new(Stage::Link, "it imports x").with_hint("remove it");
        assert_eq!(e.to_string(), "link failed: it imports x (remove it)");
        assert_eq!(
            missing_import(
                "component imports instance `wasi:http/types@0.2.0`, but a matching implementation was not found"
            ),
            Some("wasi:http/types@0.2.0")
        );
    }
}
