//! Turning the plugin directory into a running deployment: every
//! `NAME.wasm` (with its optional `NAME.toml`) is compiled, linked,
//! instantiated once and routed. A plugin that fails any step is reported
//! with the reason and skipped; the others still serve.

mod check;
mod deployer;
mod load;
pub mod watch;

use std::path::{Path, PathBuf};

use crate::routing::RouteTable;
pub use check::{Checked, check};
pub use deployer::{AdminError, Deployer, PluginInfo, PluginStatus};

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
