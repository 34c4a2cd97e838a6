//! The `auth-chat` example in Rust, Python and JavaScript, end to end: a
//! real wsgate whose config grants the plugin its auth endpoint, and a real
//! HTTP backend the test starts (`/auth` knows the tokens `ann-token` and
//! `bob-token`). A valid token opens the chat and the last lines greet a new
//! member; an invalid one is 401 before the upgrade; a backend that is down
//! is 503 with nothing internal told; a backend that hangs is bounded by the
//! deadline while other connections are served.

use std::time::{Duration, Instant};

use wsgate_tests::upstream::Upstream;
use wsgate_tests::*;

const LANGUAGES: [&str; 3] = ["auth-chat", "auth-chat-py", "auth-chat-js"];

/// A plugin directory with the three auth-chats and echo, and a config
/// granting what their sidecars ask for.
fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
    let plugins = plugin_dir(example_plugins(), &LANGUAGES);
    copy_plugins(example_plugins(), &["echo"], plugins.path());
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("wsgate.toml"),
        "[grants]\nenv = [\"AUTH_CHAT_URL\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n",
    )
    .unwrap();
    (plugins, config)
}

async fn serve(
    plugins: &tempfile::TempDir,
    config: &tempfile::TempDir,
    auth_url: &str,
    args: &[&str],
) -> Server {
    let config = config.path().join("wsgate.toml");
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start_with_env(plugins.path(), &all, &[("AUTH_CHAT_URL", auth_url)]).await
}

fn path(plugin: &str, token: &str) -> String {
    format!("/ws/{plugin}/lobby?token={token}")
}

#[tokio::test]
async fn a_valid_token_opens_the_chat_and_new_members_get_the_last_lines() {
    let backend = Upstream::start().await;
    let (plugins, config) = setup();
    let server = serve(&plugins, &config, &backend.url("/auth"), &[]).await;
    for plugin in LANGUAGES {
        let mut ann = server.connect(&path(plugin, "ann-token")).await;
        for i in 0..25 {
            send_text(&mut ann, &format!("line {i}")).await;
            let line = next_json(&mut ann).await;
            assert_eq!(line["from"], "ann", "{plugin}");
            assert_eq!(line["message"], format!("line {i}"), "{plugin}");
            assert_eq!(line["seq"], i + 1, "{plugin}");
        }
        // The token can come as a bearer header too.
        let (mut bob, _) = server
            .connect_with(
                &format!("/ws/{plugin}/lobby"),
                &[("authorization", "Bearer bob-token")],
            )
            .await;
        for i in 5..25 {
            let line = next_json(&mut bob).await;
            assert_eq!(line["message"], format!("line {i}"), "{plugin}");
        }
        send_text(&mut bob, "hi ann").await;
        let heard = next_json(&mut ann).await;
        assert_eq!(heard["from"], "bob", "{plugin}");
        assert_eq!(heard["message"], "hi ann", "{plugin}");
    }
    // Each plugin asked the backend, with the token as a bearer.
    let asked = backend.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.header("authorization") == Some("Bearer bob-token")),
        "{asked:?}"
    );
}

#[tokio::test]
async fn an_invalid_token_is_401_before_the_upgrade() {
    let backend = Upstream::start().await;
    let (plugins, config) = setup();
    let server = serve(&plugins, &config, &backend.url("/auth"), &[]).await;
    for plugin in LANGUAGES {
        let (status, _) = server.handshake_error(&path(plugin, "forged")).await;
        assert_eq!(status, 401, "{plugin}");
        let (status, _) = server.handshake_error(&format!("/ws/{plugin}/lobby")).await;
        assert_eq!(status, 401, "{plugin}: no token at all");
    }
}

#[tokio::test]
async fn a_backend_that_is_down_is_503_with_nothing_internal_told() {
    // A port nobody listens on.
    let down = format!("http://127.0.0.1:{}/auth", free_port());
    let (plugins, config) = setup();
    let server = serve(&plugins, &config, &down, &[]).await;
    for plugin in LANGUAGES {
        let (status, body) = server.handshake_error(&path(plugin, "ann-token")).await;
        assert_eq!(status, 503, "{plugin}");
        for leak in ["127.0.0.1", "refused", "auth", "/", "wasm", "Error"] {
            assert!(!body.contains(leak), "{plugin} told the client {body:?}");
        }
    }
    assert!(server.logs().contains("auth service unavailable"));
}

#[tokio::test]
async fn a_backend_that_hangs_is_bounded_and_others_are_served() {
    let backend = Upstream::start().await;
    let (plugins, config) = setup();
    let server = serve(
        &plugins,
        &config,
        &backend.url("/hang"),
        &["--hook-timeout", "2s"],
    )
    .await;
    let mut echo = server.connect("/ws/echo").await;
    for plugin in LANGUAGES {
        let start = Instant::now();
        let hung = {
            let server = &server;
            async move { server.handshake_error(&path(plugin, "ann-token")).await }
        };
        let served = async {
            // While on-open waits on the backend, others are served.
            tokio::time::sleep(Duration::from_millis(200)).await;
            send_text(&mut echo, "still here").await;
            assert_eq!(next_text(&mut echo).await, "still here");
            start.elapsed()
        };
        let ((status, body), echoed) = tokio::join!(hung, served);
        let took = start.elapsed();
        assert!(
            status == 503 || status == 500,
            "{plugin}: {status} {body:?}"
        );
        assert!(!body.contains("hang"), "{plugin} told the client {body:?}");
        assert!(took < Duration::from_secs(4), "{plugin} took {took:?}");
        assert!(echoed < Duration::from_secs(1), "echo took {echoed:?}");
    }
}
