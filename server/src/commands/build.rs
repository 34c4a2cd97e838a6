//! `wsgate build`: a project into NAME.wasm and its sidecar NAME.toml.
//! Python and JavaScript go through the build scripts in the project's
//! `sdk/`, the repository's own, so a project builds exactly as the
//! examples do (and shares their compile cache); Rust goes through cargo,
//! as `scripts/build-rust-plugins.sh` does for the workspace's crates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::project::Project;
use crate::config::Lang;

/// Builds the project in `dir` into `out` (default: its `dist/`).
pub fn build(dir: &Path, out: Option<PathBuf>) -> Result<(), String> {
    let project = Project::open(dir)?;
    let out = out.unwrap_or_else(|| project.dist());
    let wasm = build_into(&project, &out)?;
    let size = std::fs::metadata(&wasm)
        .map(|m| m.len())
        .unwrap_or_default();
    println!("built {} ({} KiB)", wasm.display(), size.div_ceil(1024));
    Ok(())
}

/// Builds `project` into `out`; the path of the NAME.wasm made.
pub fn build_into(project: &Project, out: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let out = std::path::absolute(out).map_err(|e| format!("{}: {e}", out.display()))?;
    match project.lang {
        Lang::Rust => cargo_build(project, &out)?,
        Lang::Python => build_script(project, "build-python-plugins.sh", &out)?,
        Lang::Js => build_script(project, "build-js-plugins.sh", &out)?,
    }
    let wasm = out.join(format!("{}.wasm", project.name));
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("the build made no {}", wasm.display()))
    }
}

fn build_script(project: &Project, script: &str, out: &Path) -> Result<(), String> {
    let script = project.dir.join("sdk/scripts").join(script);
    run(
        Command::new("bash").arg(script).arg(out).arg(&project.dir),
        "the build",
    )
}

/// Runs `command` with the terminal as its output.
pub fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn cargo_build(project: &Project, out: &Path) -> Result<(), String> {
    add_wasm_target();
    // cargo names the artifact; asking beats guessing its target directory.
    let output = Command::new("cargo")
        .current_dir(&project.dir)
        .args(["build", "--release", "--lib", "--target", "wasm32-wasip2"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo ({e}): install Rust from https://rustup.rs"))?;
    if !output.status.success() {
        return Err(format!("the build failed ({})", output.status));
    }
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or("cargo built no .wasm: the crate needs crate-type = [\"cdylib\"]")?;
    // The sidecar first: a watching server loads the plugin when its .wasm
    // lands, with whatever sidecar is beside it then.
    let sidecar = project.dir.join(format!("{}.toml", project.name));
    if sidecar.is_file() {
        install(&sidecar, &out.join(format!("{}.toml", project.name)))?;
    }
    install(&artifact, &out.join(format!("{}.wasm", project.name)))
}

/// `rustup target add wasm32-wasip2` unless it is there; without rustup,
/// cargo's own error says what is missing.
fn add_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(list) = installed
        && !String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|t| t == "wasm32-wasip2")
    {
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
    }
}

/// Copy, then rename: a server watching `to` never sees half a file.
fn install(from: &Path, to: &Path) -> Result<(), String> {
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let partial = to.with_file_name(format!(".{name}.tmp"));
    std::fs::copy(from, &partial)
        .and_then(|_| std::fs::rename(&partial, to))
        .map_err(|e| format!("{}: {e}", to.display()))
}
