//! The SDK that a project made by `wsgate new` builds and tests against,
//! embedded in the binary: the WIT contract, the language's SDK and the
//! repository's own build scripts, laid out as in the repository under the
//! project's `sdk/`. The scripts then work there unchanged, so a project
//! builds exactly as the examples do, and against the contract of the
//! server that created it.

use std::io;
use std::path::Path;

use crate::config::Lang;

/// One embedded file, at its path relative to the repository root.
struct Embedded {
    path: &'static str,
    contents: &'static str,
}

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(Embedded { path: $path, contents: include_str!(concat!("../../../", $path)) }),*]
    };
}

/// The contract and the WASI packages it names (its `plugin-http` world,
/// which the Python build uses, imports `wasi:http`).
const CONTRACT: &[Embedded] = embed![
    "wit/wsgate.wit",
    "wit/deps/cli.wit",
    "wit/deps/clocks.wit",
    "wit/deps/filesystem.wit",
    "wit/deps/http.wit",
    "wit/deps/io.wit",
    "wit/deps/random.wit",
    "wit/deps/sockets.wit",
];

const RUST: &[Embedded] = embed![
    "plugin-sdk/rust/Cargo.toml",
    "plugin-sdk/rust/src/batch.rs",
    "plugin-sdk/rust/src/history.rs",
    "plugin-sdk/rust/src/http.rs",
    "plugin-sdk/rust/src/lib.rs",
    "plugin-sdk/rust/src/packed.rs",
    "plugin-sdk/rust/src/position.rs",
    "plugin-sdk/rust/src/request.rs",
    "plugin-sdk/rust/src/testing.rs",
    "plugin-sdk/rust/src/testing/history.rs",
];

const PYTHON: &[Embedded] = embed![
    "plugin-sdk/python/wsgate.py",
    "plugin-sdk/python/wsgate_testing.py",
    "plugin-sdk/python/requirements.txt",
    "scripts/build-python-plugins.sh",
    "scripts/pytest.sh",
    "scripts/lib/plugin-cache.sh",
];

const JS: &[Embedded] = embed![
    "plugin-sdk/js/index.js",
    "plugin-sdk/js/index.d.ts",
    "plugin-sdk/js/types/plugin.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-host.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-listener.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-types.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-upstream-listener.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-error-listener.d.ts",
    "plugin-sdk/js/types/interfaces/wsgate-plugin-batch-listener.d.ts",
    "plugin-sdk/js/build.mjs",
    "plugin-sdk/js/package.json",
    "plugin-sdk/js/package-lock.json",
    "plugin-sdk/js/testing.mjs",
    "plugin-sdk/js/testing-loader.mjs",
    "plugin-sdk/js/testing.d.ts",
    "scripts/build-js-plugins.sh",
    "scripts/lib/plugin-cache.sh",
];

fn files(lang: Lang) -> &'static [Embedded] {
    match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    }
}

/// Writes the SDK for `lang` into `sdk` (the project's `sdk/`), replacing
/// the files it has: run again, it updates a project to this binary's SDK.
pub fn write(lang: Lang, sdk: &Path) -> io::Result<()> {
    for file in CONTRACT.iter().chain(files(lang)) {
        let path = sdk.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let contents = match file.path {
            "plugin-sdk/rust/Cargo.toml" => standalone_manifest(file.contents),
            _ => file.contents.to_owned(),
        };
        std::fs::write(&path, contents)?;
        if file.path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// The SDK crate's manifest inherits from this repository's workspace,
/// which a project does not have: the inherited keys get their values.
fn standalone_manifest(manifest: &str) -> String {
    manifest
        .lines()
        .map(|line| match line.trim() {
            "edition.workspace = true" => "edition = \"2024\"".to_owned(),
            "license.workspace = true" => "license = \"Apache-2.0\"".to_owned(),
            "version.workspace = true" => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_sdk_manifest_stands_alone() {
        let manifest = standalone_manifest(RUST[0].contents);
        assert!(!manifest.contains("workspace"), "{manifest}");
        let parsed: toml::Table = manifest.parse().unwrap();
        assert_eq!(parsed["package"]["edition"].as_str(), Some("2024"));
    }

    /// A file added to an SDK and not embedded breaks only projects made
    /// by `wsgate new`, far from the change that forgot it.
    #[test]
    fn every_sdk_source_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (lang, dir, ext) in [
            (Lang::Rust, "plugin-sdk/rust/src", ".rs"),
            (Lang::Js, "plugin-sdk/js/types", ".d.ts"),
        ] {
            let mut pending = vec![root.join(dir)];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    let relative = path.strip_prefix(&root).unwrap().to_str().unwrap();
                    if relative.ends_with(ext) {
                        assert!(
                            files(lang).iter().any(|f| f.path == relative),
                            "{relative} is not embedded for {lang:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_language_gets_the_contract_and_a_build() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            write(lang, dir.path()).unwrap();
        }
        assert!(dir.path().join("wit/wsgate.wit").is_file());
        assert!(dir.path().join("wit/deps/http.wit").is_file());
        for script in [
            "build-python-plugins.sh",
            "build-js-plugins.sh",
            "pytest.sh",
        ] {
            let meta = std::fs::metadata(dir.path().join("scripts").join(script)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o111,
                0o111,
                "{script} is executable"
            );
        }
    }
}
