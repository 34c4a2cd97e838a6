//! The binary's commands for plugin authors, besides serving: create a
//! listener project (`new`), `build` it, `test` it, `check` a built plugin.

mod build;
mod new;
mod project;
mod sdk;
mod test;

use std::process::ExitCode;

use crate::config::{Command, Config};

/// Runs one command; what it prints is for a person at a terminal.
pub async fn run(command: Command, config: &Config) -> ExitCode {
    let done = match command {
        Command::Check { wasm, sidecar } => check(config, &wasm, sidecar.as_deref()).await,
        Command::New { path, lang } => new::create(&path, lang),
        Command::Build { dir, out } => build::build(&dir, out),
        Command::Test { dir } => test::test(&dir),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn check(
    config: &Config,
    wasm: &std::path::Path,
    sidecar: Option<&std::path::Path>,
) -> Result<(), String> {
    match crate::deploy::check(config, wasm, sidecar).await {
        Ok(checked) => {
            println!("ok: {} ({})", wasm.display(), &checked.hash[..12]);
            println!("  serves {}", checked.routes.join(", "));
            println!("  exports {}", crate::runtime::LISTENER_EXPORT);
            println!("  imports {}", checked.imports.join(", "));
            match checked.grants.as_slice() {
                [] => println!("  grants nothing"),
                grants => println!(
                    "  grants {} (allowed by this server's [grants])",
                    grants.join(", ")
                ),
            }
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", wasm.display())),
    }
}
