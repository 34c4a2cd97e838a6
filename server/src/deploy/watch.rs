//! Watching the plugin directory: any change to a `NAME.wasm` or
//! `NAME.toml` triggers a reconcile once the directory has been quiet for
//! `timeouts.watch_debounce` (300 ms by default), so a file still being
//! copied is not loaded half-written. Files whose names start with `.` are
//! ignored: copy to `.NAME.wasm.tmp`, then rename to `NAME.wasm`, and the
//! server only ever sees a complete file.

use std::path::Path;
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::gateway::Gateway;

fn relevant_path(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".wasm") || name.ends_with(".toml"))
}

fn relevant(event: &notify::Event) -> bool {
    let kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind && event.paths.iter().any(|p| relevant_path(p))
}

/// Starts watching; the watch ends when the server shuts down. A directory
/// that cannot be watched is logged, and the server runs without hot
/// deploy (the admin API's reload still works).
pub fn spawn(gw: Arc<Gateway>) {
    let dir = gw.config.plugin_dir.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tx_initial = tx.clone();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) if relevant(&event) => {
            tracing::debug!(paths = ?event.paths, kind = ?event.kind, "plugin directory changed");
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("watching the plugin directory: {e}"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the plugin directory: {e}");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), "cannot watch the plugin directory: {e}");
        return;
    }
    tracing::info!(dir = %dir.display(), "watching the plugin directory");
    // One pass right away catches changes made while the first load ran.
    let _ = tx_initial.send(());
    let debounce = gw.config.timeouts.watch_debounce;
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                event = rx.recv() => if event.is_none() { return },
            }
            // Wait for quiet: every further event restarts the wait.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if gw.shutdown.is_cancelled() {
                return;
            }
            gw.deployer.reconcile(None).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn temp_and_other_files_ignored() {
        assert!(super::relevant_path(Path::new("/p/echo.wasm")));
        assert!(super::relevant_path(Path::new("/p/echo.toml")));
        assert!(!super::relevant_path(Path::new("/p/.echo.wasm.tmp")));
        assert!(!super::relevant_path(Path::new("/p/.echo.wasm")));
        assert!(!super::relevant_path(Path::new("/p/README.md")));
    }
}
