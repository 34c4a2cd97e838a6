//! A plugin that cannot load says why, the same way everywhere it is
//! reported: `wsgate check` on the command line, and the server's log and
//! `/admin/info` when it is dropped into the plugin directory. Each report
//! names the file, the stage loading stopped at, what exactly was wrong
//! and what to do about it.

use std::path::Path;
use std::process::Command;

use wsgate_tests::*;

/// A core module: what `wasm32-unknown-unknown` or `wasm32-wasip1` builds.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// `wsgate check ARGS`: whether it succeeded, and what it printed.
fn check(args: &[&Path]) -> (bool, String) {
    let out = Command::new(wsgate_bin())
        .arg("check")
        .args(args)
        // The checks run against defaults, not whatever the caller set.
        .env_remove("WSGATE_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_passes_a_good_plugin_and_says_what_it_serves() {
    let dir = plugin_dir(example_plugins(), &["chat"]);
    let wasm = dir.path().join("chat.wasm");
    let (ok, out) = check(&[&wasm]);
    assert!(ok, "{out}");
    assert!(out.starts_with(&format!("ok: {}", wasm.display())), "{out}");
    assert!(out.contains("serves /ws/chat/{channel}"), "{out}");
    assert!(
        out.contains("exports wsgate:plugin/listener@0.1.3"),
        "{out}"
    );
    assert!(
        out.contains("imports ") && out.contains("wsgate:plugin/host@0.1.3"),
        "{out}"
    );
}

#[test]
fn check_names_the_stage_the_problem_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let future = dir.path().join("future.wasm");
    std::fs::copy(fixture_plugins().join("future-wit.wasm"), &future).unwrap();
    let echo = dir.path().join("echo.wasm");
    std::fs::copy(example_plugins().join("echo.wasm"), &echo).unwrap();
    let bad_routes = write("routes.toml", b"routes = [\"no-slash\"]\n");
    let bad_toml = write("broken.toml", b"routes = [\n");
    let bad_grant = write("grant.toml", b"[grants]\nenv = [\"HOME\"]\n");

    let cases: [(&[&Path], &[&str]); 8] = [
        (
            &[&write("text.wasm", b"hello, world")],
            &["decode failed: not a WebAssembly file", "wasm32-wasip2"],
        ),
        (
            &[&write("core.wasm", CORE_MODULE)],
            &[
                "decode failed: a core WebAssembly module, not a component",
                "wasm-tools component new",
            ],
        ),
        (
            &[&write("torn.wasm", b"\0asm\x0d\0\x01\0\x01\x02")],
            &["validate failed"],
        ),
        (
            &[&future],
            &[
                "link failed: the plugin was built against wsgate:plugin/host@0.2.0",
                "this server speaks wsgate:plugin@0.1.3",
                "rebuild it with the SDK",
            ],
        ),
        (
            &[&dir.path().join("missing.wasm")],
            &["read failed", "missing.wasm"],
        ),
        (
            &[&echo, Path::new("--sidecar"), &bad_toml],
            &["sidecar failed", "broken.toml"],
        ),
        (
            &[&echo, Path::new("--sidecar"), &bad_routes],
            &["sidecar failed", "no-slash"],
        ),
        (
            &[&echo, Path::new("--sidecar"), &bad_grant],
            &["sidecar failed", "HOME"],
        ),
    ];
    for (args, expected) in cases {
        let (ok, out) = check(args);
        assert!(!ok, "{args:?} passed: {out}");
        // One message, starting with the file.
        assert_eq!(out.trim_end().lines().count(), 1, "{out}");
        assert!(out.starts_with(&args[0].display().to_string()), "{out}");
        for part in expected {
            assert!(out.contains(part), "{args:?}: {part:?} not in {out}");
        }
    }
}

#[tokio::test]
async fn a_plugin_that_cannot_load_is_explained_in_admin_info_and_the_log() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(plugins.path().join("core.wasm"), CORE_MODULE).unwrap();
    std::fs::copy(
        fixture_plugins().join("future-wit.wasm"),
        plugins.path().join("future.wasm"),
    )
    .unwrap();
    let server = Server::start(plugins.path(), &[]).await;

    let info = server.admin_info("").await;
    let core = plugin_info(&info, "core");
    assert_eq!(core["status"], "failed", "{core:#}");
    assert_eq!(core["error_stage"], "decode", "{core:#}");
    assert!(
        core["error"]
            .as_str()
            .unwrap()
            .contains("a core WebAssembly module"),
        "{core:#}"
    );
    assert!(
        core["error_hint"]
            .as_str()
            .unwrap()
            .contains("wasm32-wasip2"),
        "{core:#}"
    );
    let future = plugin_info(&info, "future");
    assert_eq!(future["status"], "failed", "{future:#}");
    assert_eq!(future["error_stage"], "link", "{future:#}");
    assert!(
        future["error"]
            .as_str()
            .unwrap()
            .contains("built against wsgate:plugin/host@0.2.0"),
        "{future:#}"
    );
    assert!(future["error_hint"].is_string(), "{future:#}");
    assert_eq!(plugin_info(&info, "echo")["status"], "loaded");

    let logs = server.logs();
    assert!(
        logs.contains("core.wasm") && logs.contains("a core WebAssembly module"),
        "{logs}"
    );
    assert!(logs.contains("wsgate:plugin/host@0.2.0"), "{logs}");

    // Its routes say only that nothing is there; the rest is served.
    let (status, body) = server.handshake_error("/ws/core").await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("core WebAssembly"), "{body}");
    let mut ws = server.connect("/ws/echo").await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
}
