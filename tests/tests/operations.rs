//! Operations end to end: hot deploy (replace, break, add, remove a plugin
//! under live connections), the admin API (token, info, stop/start/reload),
//! Prometheus metrics, readiness and the compile cache.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsgate_tests::*;

/// How long a change in the plugin directory may take to show.
const PATIENCE: Duration = Duration::from_secs(15);

/// Installs `src` as `dir/NAME.wasm` the safe way: copy to a dot-file, then
/// rename, so the watcher never sees a half-written file.
fn install(dir: &Path, name: &str, src: &Path) {
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// The reply to one message on a fresh connection to `path`.
async fn one_reply(server: &Server, path: &str, text: &str) -> String {
    let mut ws = server.connect(path).await;
    send_text(&mut ws, text).await;
    let reply = next_text(&mut ws).await;
    let _ = ws.close(None).await;
    reply
}

async fn metrics(server: &Server) -> String {
    let (status, body) = server.admin("GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn replaced_plugin_serves_new_connections_while_old_ones_keep_their_version() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let before = server.admin_info("").await;
    let old_hash = plugin_info(&before, "echo")["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut old = server.connect("/ws/echo").await;
    send_text(&mut old, "a").await;
    assert_eq!(next_text(&mut old).await, "a");

    install(dir.path(), "echo", &fixture_plugins().join("echo-v2.wasm"));
    eventually("the new version", &server, PATIENCE, || async {
        (one_reply(&server, "/ws/echo", "b").await == "v2:b").then_some(())
    })
    .await;

    // Side by side: the old connection still runs version 1.
    let mut new = server.connect("/ws/echo").await;
    send_text(&mut new, "c").await;
    send_text(&mut old, "c").await;
    assert_eq!(next_text(&mut new).await, "v2:c");
    assert_eq!(next_text(&mut old).await, "c");

    // The probes above closed their connections without waiting for the
    // server to finish closing them: the count is two once it has.
    let info = eventually(
        "the probes' connections closed",
        &server,
        PATIENCE,
        || async {
            let info = server.admin_info("").await;
            (plugin_info(&info, "echo")["connections"] == 2).then_some(info)
        },
    )
    .await;
    let echo = plugin_info(&info, "echo");
    assert_eq!(echo["status"], "loaded");
    assert_ne!(echo["hash"], old_hash.as_str());
    let m = metrics(&server).await;
    assert_eq!(
        sample(&m, "wsgate_plugin_reloads_total", &["plugin=\"echo\""]),
        2.0
    );
    assert!(server.logs().contains("reloaded"), "{}", server.logs());
}

#[tokio::test]
async fn on_reload_close_closes_old_connections_with_1012() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(dir.path().join("echo.toml"), "on_reload = \"close\"\n").unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut old = server.connect("/ws/echo").await;
    send_text(&mut old, "a").await;
    assert_eq!(next_text(&mut old).await, "a");
    install(dir.path(), "echo", &fixture_plugins().join("echo-v2.wasm"));
    let (code, reason) = expect_close(&mut old).await;
    assert_eq!((code, reason.as_str()), (1012, "service restart"));
    assert_eq!(one_reply(&server, "/ws/echo", "b").await, "v2:b");
}

#[tokio::test]
async fn broken_upload_leaves_the_old_version_serving_and_is_reported() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let hash = plugin_info(&server.admin_info("").await, "echo")["hash"].clone();
    let mut live = server.connect("/ws/echo").await;

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\0asm this is not a component").unwrap();
    install(dir.path(), "echo", &junk);
    // A brand-new plugin that never worked is reported as failed.
    install(dir.path(), "broken", &junk);

    let info = eventually("the failure report", &server, PATIENCE, || async {
        let info = server.admin_info("").await;
        let reported = plugin_info(&info, "echo")["error"].is_string()
            && info["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "broken");
        reported.then_some(info)
    })
    .await;
    let echo = plugin_info(&info, "echo");
    assert_eq!(echo["status"], "loaded", "{echo}");
    assert_eq!(echo["hash"], hash, "the working version stays");
    assert!(
        echo["error"]
            .as_str()
            .unwrap()
            .contains("decode failed: not a WebAssembly component"),
        "{echo}"
    );
    assert_eq!(echo["error_stage"], "decode", "{echo}");
    let broken = plugin_info(&info, "broken");
    assert_eq!(broken["status"], "failed", "{broken}");
    assert!(broken["error"].is_string());

    send_text(&mut live, "still").await;
    assert_eq!(next_text(&mut live).await, "still");
    assert_eq!(one_reply(&server, "/ws/echo", "new").await, "new");
    assert_eq!(server.handshake_error("/ws/broken").await.0, 404);
    let m = metrics(&server).await;
    assert_eq!(
        sample(
            &m,
            "wsgate_plugin_load_failures_total",
            &["plugin=\"echo\""]
        ),
        1.0
    );
    assert!(server.logs().contains("the previous one keeps serving"));

    // Fixing the file puts the fix in service.
    install(dir.path(), "echo", &fixture_plugins().join("echo-v2.wasm"));
    eventually("the fixed version", &server, PATIENCE, || async {
        (one_reply(&server, "/ws/echo", "x").await == "v2:x").then_some(())
    })
    .await;
    let info = server.admin_info("").await;
    assert!(plugin_info(&info, "echo")["error"].is_null());
}

#[tokio::test]
async fn added_and_removed_plugins_take_effect_without_restart() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    assert_eq!(server.handshake_error("/ws/trap").await.0, 404);
    install(dir.path(), "trap", &fixture_plugins().join("trap.wasm"));
    eventually("the added plugin", &server, PATIENCE, || async {
        let ok = tokio_tungstenite::connect_async(server.ws_url("/ws/trap"))
            .await
            .is_ok();
        ok.then_some(())
    })
    .await;
    assert_eq!(one_reply(&server, "/ws/trap", "hi").await, "hi");

    // A sidecar change alone is a new deployment of the plugin.
    std::fs::write(dir.path().join("trap.toml"), "routes = [\"/ws/trap2\"]\n").unwrap();
    eventually("the new route", &server, PATIENCE, || async {
        let ok = tokio_tungstenite::connect_async(server.ws_url("/ws/trap2"))
            .await
            .is_ok();
        ok.then_some(())
    })
    .await;
    assert_eq!(server.handshake_error("/ws/trap").await.0, 404);

    let mut live = server.connect("/ws/echo").await;
    std::fs::remove_file(dir.path().join("echo.wasm")).unwrap();
    eventually("the removal", &server, PATIENCE, || async {
        let refused = tokio_tungstenite::connect_async(server.ws_url("/ws/echo"))
            .await
            .is_err();
        refused.then_some(())
    })
    .await;
    assert_eq!(server.handshake_error("/ws/echo").await.0, 404);
    // The open connection keeps the version it opened with.
    send_text(&mut live, "still here").await;
    assert_eq!(next_text(&mut live).await, "still here");
    let info = server.admin_info("").await;
    assert!(
        !info["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo")
    );
}

#[tokio::test]
async fn admin_needs_the_token_and_health_is_public() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let p = server.admin_port;
    for path in ["/admin/info", "/metrics"] {
        let (status, _) = http_request(p, "GET", path, &[], "").await.unwrap();
        assert_eq!(status, 401, "{path} without a token");
        let wrong = [("Authorization", "Bearer nope")];
        let (status, _) = http_request(p, "GET", path, &wrong, "").await.unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, _) = http_request(p, "POST", "/admin/plugins/echo/stop", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(one_reply(&server, "/ws/echo", "up").await, "up");

    let (status, _) = server.admin("GET", "/admin/info").await;
    assert_eq!(status, 200);
    // The admin API is not on the public listener.
    assert_eq!(server.http_get("/admin/info").await.unwrap().0, 404);
    assert_eq!(server.http_get("/healthz").await.unwrap().0, 200);
    assert_eq!(
        server.http_get("/readyz").await.unwrap(),
        (200, "ready".into())
    );
    let info = server.admin_info("").await;
    assert_eq!(info["config"]["admin"]["token"], "<redacted>");
    assert!(!info.to_string().contains(ADMIN_TOKEN));
    assert_eq!(
        server.admin("POST", "/admin/plugins/nope/stop").await.0,
        404
    );
}

#[tokio::test]
async fn metrics_and_info_reflect_a_scenario() {
    let dir = plugin_dir(example_plugins(), &["echo", "chat"]);
    copy_plugins(fixture_plugins(), &["trap"], dir.path());
    let server = Server::start(dir.path(), &[]).await;

    const N: usize = 3;
    const M: usize = 5;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(server.connect("/ws/echo").await);
    }
    for ws in &mut clients {
        for i in 0..M {
            send_text(ws, &format!("msg{i}")).await;
            assert_eq!(next_text(ws).await, format!("msg{i}"));
        }
    }
    let mut alice = server.connect("/ws/chat/lobby?username=alice").await;
    let _hello = next_json(&mut alice).await;
    let mut trap = server.connect("/ws/trap").await;
    send_text(&mut trap, "trap").await;
    assert_eq!(expect_close(&mut trap).await.0, 1011);

    let m = metrics(&server).await;
    let echo = ["plugin=\"echo\""];
    assert_eq!(sample(&m, "wsgate_connections", &echo), N as f64, "{m}");
    let msgs = (N * M) as f64;
    assert_eq!(sample(&m, "wsgate_messages_received_total", &echo), msgs);
    assert_eq!(sample(&m, "wsgate_messages_sent_total", &echo), msgs);
    // "msg0".."msg4": 4 bytes each, both ways.
    assert_eq!(sample(&m, "wsgate_received_bytes_total", &echo), msgs * 4.0);
    assert_eq!(sample(&m, "wsgate_sent_bytes_total", &echo), msgs * 4.0);
    assert_eq!(
        sample(
            &m,
            "wsgate_hook_duration_seconds_count",
            &["plugin=\"echo\"", "hook=\"on-message\""]
        ),
        msgs
    );
    assert_eq!(
        sample(&m, "wsgate_hook_traps_total", &["plugin=\"trap\""]),
        1.0
    );
    assert_eq!(
        sample(&m, "wsgate_hook_traps_total", &echo),
        0.0,
        "a trap stays with its plugin"
    );
    assert_eq!(sample(&m, "wsgate_plugins", &["status=\"loaded\""]), 3.0);
    assert_eq!(
        sample(&m, "wsgate_channels", &["plugin=\"chat\""]),
        1.0,
        "{m}"
    );

    let info = server.admin_info("?connections=true").await;
    assert_eq!(info["server"]["ready"], true);
    assert_eq!(info["connections"]["per_plugin"]["echo"], N);
    assert_eq!(info["connections"]["per_plugin"]["chat"], 1);
    let chat = plugin_info(&info, "chat");
    assert_eq!(chat["channels"]["lobby"], 1);
    assert_eq!(chat["routes"][0], "/ws/chat/{channel}");
    assert_eq!(plugin_info(&info, "echo")["connections"], N);
    assert!(
        info["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pattern"] == "/ws/echo" && r["open"] == N)
    );
    let list = info["connection_list"].as_array().unwrap();
    let alice_info = list
        .iter()
        .find(|c| c["plugin"] == "chat")
        .expect("alice listed");
    assert_eq!(alice_info["attributes"]["username"], "alice");
    assert_eq!(alice_info["channels"][0], "lobby");
    assert_eq!(alice_info["tags"][0], "user:alice@lobby");
    assert_eq!(alice_info["path"], "/ws/chat/lobby");
    assert!(
        alice_info["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(list.iter().filter(|c| c["plugin"] == "echo").count(), N);
    // Without the flag, no per-connection details.
    assert!(server.admin_info("").await.get("connection_list").is_none());
}

#[tokio::test]
async fn admin_stop_start_and_reload() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut live = server.connect("/ws/echo").await;

    let (status, body) = server.admin("POST", "/admin/plugins/echo/stop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        expect_close(&mut live).await,
        (1001, "plugin stopped".into())
    );
    assert_eq!(server.handshake_error("/ws/echo").await.0, 404);
    assert_eq!(
        plugin_info(&server.admin_info("").await, "echo")["status"],
        "stopped"
    );
    // A stopped plugin stays stopped when its file changes.
    install(dir.path(), "echo", &fixture_plugins().join("echo-v2.wasm"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.handshake_error("/ws/echo").await.0, 404);

    let (status, body) = server.admin("POST", "/admin/plugins/echo/start").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(one_reply(&server, "/ws/echo", "a").await, "v2:a");

    let before = plugin_info(&server.admin_info("").await, "echo").clone();
    let (status, body) = server.admin("POST", "/admin/plugins/echo/reload").await;
    assert_eq!(status, 200, "{body}");
    let after = plugin_info(&server.admin_info("").await, "echo").clone();
    assert_eq!(after["hash"], before["hash"]);
    assert_eq!(
        after["from_cache"], true,
        "an unchanged file is not recompiled"
    );
    assert!(after["loaded_at_ms"].as_u64() >= before["loaded_at_ms"].as_u64());
    assert_eq!(one_reply(&server, "/ws/echo", "b").await, "v2:b");
    assert_eq!(
        server.admin("POST", "/admin/plugins/echo/bogus").await.0,
        404
    );
}

#[tokio::test]
async fn first_open_and_last_close_stay_paired_across_a_reload() {
    let dir = plugin_dir(fixture_plugins(), &["lifecycle"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut a = server.connect("/ws/lifecycle").await;
    let (status, _) = server
        .admin("POST", "/admin/plugins/lifecycle/reload")
        .await;
    assert_eq!(status, 200);
    let mut b = server.connect("/ws/lifecycle").await;
    send_text(&mut b, "events").await;
    let events = next_text(&mut b).await;
    assert_eq!(
        events.matches("first-open /ws/lifecycle").count(),
        1,
        "the new version must not see a second first-open:\n{events}"
    );
    a.close(None).await.unwrap();
    // `a` closing is not the route's last close: `b` is still open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_text(&mut b, "events").await;
    let events = next_text(&mut b).await;
    assert!(!events.contains("last-close"), "{events}");
    b.close(None).await.unwrap();
    let mut probe = server.connect("/ws/lifecycle/probe").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        send_text(&mut probe, "events").await;
        let events = next_text(&mut probe).await;
        if events.contains("last-close") {
            break events;
        }
        assert!(Instant::now() < deadline, "no last-close:\n{events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        events.matches("last-close /ws/lifecycle\n").count(),
        1,
        "{events}"
    );
}

#[tokio::test]
async fn restart_with_an_unchanged_plugin_loads_from_the_cache() {
    let dir = plugin_dir(example_plugins(), &["echo", "chat"]);
    let cache = tempfile::tempdir().unwrap();
    let args = ["--cache-dir", cache.path().to_str().unwrap()];
    let mut first = Server::start(dir.path(), &args).await;
    let info = first.admin_info("").await;
    assert_eq!(plugin_info(&info, "echo")["from_cache"], false);
    assert!(first.terminate().success());

    let started = Instant::now();
    let second = Server::start(dir.path(), &args).await;
    let startup = started.elapsed();
    let info = second.admin_info("").await;
    for name in ["echo", "chat"] {
        let p = plugin_info(&info, name);
        assert_eq!(p["from_cache"], true, "{p}");
        assert!(p["compile_ms"].as_f64().unwrap() < 1000.0, "{p}");
    }
    assert!(startup < Duration::from_secs(5), "{startup:?}");
    assert_eq!(one_reply(&second, "/ws/echo", "cached").await, "cached");

    // --no-cache compiles afresh.
    let third = Server::start(dir.path(), &["--no-cache"]).await;
    let info = third.admin_info("").await;
    assert_eq!(plugin_info(&info, "echo")["from_cache"], false);
    assert_eq!(info["config"]["effective_cache_dir"], Value::Null);
}

/// A push loop armed in `on-first-open` keeps running across a reload: the
/// plugin's timers move to the new version instead of dying with the old.
#[tokio::test]
async fn timers_survive_a_reload() {
    let dir = plugin_dir(example_plugins(), &["ticker"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut old = server.connect("/ws/ticker").await;
    assert!(next_text(&mut old).await.contains("\"tick\""));
    let (status, _) = server.admin("POST", "/admin/plugins/ticker/reload").await;
    assert_eq!(status, 200);
    let mut new = server.connect("/ws/ticker").await;
    assert!(next_text(&mut new).await.contains("\"tick\""));
    old.close(None).await.unwrap();
    drop(old);
    // The old version is gone now; the ticks go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert!(next_text(&mut new).await.contains("\"tick\""));
    }
}

/// A hot-deployed plugin whose routes collide with a running plugin's is
/// refused, with an error naming the conflict, and the running plugin keeps
/// serving. Once the conflict is gone, the newcomer is routed by itself.
#[tokio::test]
async fn a_route_conflict_refuses_the_newcomer_until_it_is_gone() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut live = server.connect("/ws/echo").await;
    std::fs::write(dir.path().join("trap.toml"), "routes = [\"/ws/echo\"]\n").unwrap();
    install(dir.path(), "trap", &fixture_plugins().join("trap.wasm"));
    let info = eventually("the conflict to be reported", &server, PATIENCE, || async {
        let info = server.admin_info("").await;
        let reported = info["plugins"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "trap" && p["error"].is_string());
        reported.then_some(info)
    })
    .await;
    let trap = plugin_info(&info, "trap");
    assert_eq!(trap["status"], "failed", "{trap}");
    assert!(
        trap["error"]
            .as_str()
            .unwrap()
            .contains("route /ws/echo conflicts with route /ws/echo of plugin echo"),
        "{trap}"
    );
    assert_eq!(plugin_info(&info, "echo")["status"], "loaded");
    // The incumbent serves old and new connections.
    assert_eq!(ask(&mut live, "still echo").await, "still echo");
    assert_eq!(one_reply(&server, "/ws/echo", "new echo").await, "new echo");
    // Remove the incumbent: the newcomer gets the route.
    std::fs::remove_file(dir.path().join("echo.wasm")).unwrap();
    eventually("the newcomer to be routed", &server, PATIENCE, || async {
        let info = server.admin_info("").await;
        (plugin_info(&info, "trap")["status"] == "loaded").then_some(())
    })
    .await;
    assert_eq!(
        plugin_info(&server.admin_info("").await, "trap")["error"],
        Value::Null
    );
    let mut trap = server.connect("/ws/echo").await;
    send_text(&mut trap, "trap").await;
    assert_eq!(
        expect_close(&mut trap).await.0,
        1011,
        "the trap plugin serves /ws/echo now"
    );
}

/// A route at the root would answer for every static file: refused. A
/// plugin file name is shown escaped in the logs, so it cannot forge lines.
#[tokio::test]
async fn a_root_catch_all_is_refused_and_file_names_cannot_forge_log_lines() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(
        dir.path().join("echo.toml"),
        "routes = [\"/{*everything}\"]\n",
    )
    .unwrap();
    let evil = "x\nINFO wsgate: forged";
    std::fs::copy(
        example_plugins().join("echo.wasm"),
        dir.path().join(format!("{evil}.wasm")),
    )
    .unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let info = server.admin_info("").await;
    let echo = plugin_info(&info, "echo");
    assert_eq!(echo["status"], "failed", "{echo}");
    assert!(
        echo["error"]
            .as_str()
            .unwrap()
            .contains("would hide the static files"),
        "{echo}"
    );
    let (status, body) = server.http_get("/").await.unwrap();
    assert_eq!(status, 200, "the demo page is still served");
    assert!(body.contains("<html"), "{body}");
    let logs = server.logs();
    assert!(logs.contains("x\\nINFO wsgate: forged"), "{logs}");
    assert!(
        !logs.lines().any(|l| l.starts_with("INFO wsgate: forged")),
        "{logs}"
    );
}
