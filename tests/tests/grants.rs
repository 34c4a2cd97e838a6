//! Capability grants: nothing by default, exactly what the sidecar lists
//! otherwise, read-only, and only within what the operator allows.

use std::path::Path;

use wsgate_tests::*;

/// A config file allowing plugins the environment variable HOME and the
/// directory `dir`.
fn policy(dir: &Path) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("wsgate.toml"),
        format!(
            "[grants]\nenv = [\"HOME\"]\ndirs = [{:?}]\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    config
}

fn config_arg(config: &tempfile::TempDir) -> String {
    config.path().join("wsgate.toml").display().to_string()
}

#[tokio::test]
async fn plugins_see_only_what_their_sidecar_grants() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "hi from the host").unwrap();
    let home = std::env::var("HOME").expect("HOME is set for the tests");

    // Without grants: no files, no environment.
    let plain = plugin_dir(fixture_plugins(), &["inspect"]);
    let server = Server::start(plain.path(), &[]).await;
    let mut ws = server.connect("/ws/inspect").await;
    next_json(&mut ws).await;
    let host_file = data.path().join("hello.txt");
    assert_eq!(
        ask(&mut ws, &format!("read {}", host_file.display())).await,
        "Err(NotFound)"
    );
    assert_eq!(ask(&mut ws, "read /data/hello.txt").await, "Err(NotFound)");
    assert_eq!(ask(&mut ws, "env HOME").await, "Err(NotPresent)");
    drop(server);

    // With grants: the directory read-only under /data, and HOME.
    let granted = plugin_dir(fixture_plugins(), &["inspect"]);
    std::fs::write(
        granted.path().join("inspect.toml"),
        format!(
            "[grants]\nenv = [\"HOME\"]\ndirs = {{ \"/data\" = {:?} }}\n",
            data.path().display().to_string()
        ),
    )
    .unwrap();
    let config = policy(data.path());
    let server = Server::start(granted.path(), &["--config", &config_arg(&config)]).await;
    let mut ws = server.connect("/ws/inspect").await;
    next_json(&mut ws).await;
    assert_eq!(
        ask(&mut ws, "read /data/hello.txt").await,
        "Ok(\"hi from the host\")"
    );
    assert!(
        ask(&mut ws, "write /data/new.txt")
            .await
            .starts_with("Err(")
    );
    assert!(
        !data.path().join("new.txt").exists(),
        "the grant is read-only"
    );
    let escape = ask(&mut ws, "read /data/../../etc/hostname").await;
    assert!(escape.starts_with("Err("), "{escape}");
    assert_eq!(ask(&mut ws, "env HOME").await, format!("Ok({home:?})"));
    assert_eq!(ask(&mut ws, "env PATH").await, "Err(NotPresent)");
}

/// A sidecar cannot grant what the operator did not allow: not `/`, not
/// an unlisted variable, never the server's own `WSGATE_*` settings.
#[tokio::test]
async fn grants_outside_the_operators_allow_list_refuse_the_plugin() {
    let data = tempfile::tempdir().unwrap();
    let config = policy(data.path());
    for grants in [
        "[grants]\ndirs = { \"/root\" = \"/\" }\n",
        "[grants]\nenv = [\"PATH\"]\n",
        "[grants]\nenv = [\"WSGATE_ADMIN__TOKEN\"]\n",
    ] {
        let dir = plugin_dir(fixture_plugins(), &["inspect"]);
        std::fs::write(dir.path().join("inspect.toml"), grants).unwrap();
        let server = Server::start(dir.path(), &["--config", &config_arg(&config)]).await;
        let (status, _) = server.handshake_error("/ws/inspect").await;
        assert_eq!(status, 404, "{grants}");
        let info = server.admin_info("").await;
        let error = info["plugins"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("allow-list") || error.contains("never granted"),
            "{error}"
        );
        assert!(!error.contains(ADMIN_TOKEN), "{error}");
    }
}

#[tokio::test]
async fn a_grant_of_something_missing_refuses_the_plugin() {
    let dir = plugin_dir(fixture_plugins(), &["inspect"]);
    std::fs::write(
        dir.path().join("inspect.toml"),
        "[grants]\ndirs = { \"/data\" = \"/nonexistent/wsgate-grant\" }\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let (status, _) = server.handshake_error("/ws/inspect").await;
    assert_eq!(status, 404);
    assert!(
        server.logs().contains("granted directory"),
        "{}",
        server.logs()
    );
}
