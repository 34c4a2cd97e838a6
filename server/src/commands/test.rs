//! `wsgate test`: builds a project, then runs its tests with this binary as
//! the server of the integration test (`WSGATE_BIN`), so a fresh project
//! goes from `wsgate new` to green without anything else to set up.

use std::path::Path;
use std::process::Command;

use super::build::{build_into, run};
use super::project::Project;
use crate::config::Lang;

pub fn test(dir: &Path) -> Result<(), String> {
    let project = Project::open(dir)?;
    build_into(&project, &project.dist())?;
    let bin = std::env::current_exe().map_err(|e| format!("cannot find this wsgate: {e}"))?;
    let mut command = match project.lang {
        Lang::Rust => {
            let mut cargo = Command::new("cargo");
            cargo.arg("test");
            cargo
        }
        // pytest, installed into the tool cache on first use.
        Lang::Python => {
            let mut pytest = Command::new("bash");
            pytest.arg(project.dir.join("sdk/scripts/pytest.sh"));
            pytest
        }
        Lang::Js => {
            let mut node = Command::new("node");
            node.arg("--test").args(js_tests(&project.dir)?);
            node
        }
    };
    command.current_dir(&project.dir).env("WSGATE_BIN", bin);
    run(&mut command, "the tests")
}

/// The project's `*.test.mjs` / `*.test.js` files, outside sdk/ and
/// node_modules/ (Node 20's `--test` has no exclusion flag).
fn js_tests(dir: &Path) -> Result<Vec<String>, String> {
    let mut tests: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs") || name.ends_with(".test.js"))
        .collect();
    tests.sort();
    if tests.is_empty() {
        return Err(format!("{}: no *.test.mjs files", dir.display()));
    }
    Ok(tests)
}
