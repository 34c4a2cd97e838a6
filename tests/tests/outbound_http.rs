//! Outbound HTTP from plugins (`wasi:http`), over real sockets: the `fetch`
//! fixture makes the request a message names, against a real upstream
//! server the test starts, inside a real wsgate whose config grants (or
//! not) what the test says. Every attack also checks that an honest `echo`
//! client is still served and that the server's memory stays bounded.

use std::time::{Duration, Instant};

use serde_json::Value;
use wsgate_tests::upstream::Upstream;
use wsgate_tests::*;

/// A plugin directory with `fetch` (its sidecar granting `granted`) and
/// `echo`, and a config file allowing `operator` plus `extra` TOML.
struct Setup {
    plugins: tempfile::TempDir,
    config: tempfile::TempDir,
}

impl Setup {
    fn new(granted: Option<&[String]>, operator: &[&str], extra: &str) -> Setup {
        let plugins = plugin_dir(fixture_plugins(), &["fetch"]);
        copy_plugins(example_plugins(), &["echo"], plugins.path());
        if let Some(granted) = granted {
            std::fs::write(
                plugins.path().join("fetch.toml"),
                format!("[grants]\nallowed_outbound_hosts = {granted:?}\n"),
            )
            .unwrap();
        }
        let config = tempfile::tempdir().unwrap();
        std::fs::write(
            config.path().join("wsgate.toml"),
            format!("[grants]\nallowed_outbound_hosts = {operator:?}\n{extra}"),
        )
        .unwrap();
        Setup { plugins, config }
    }

    async fn start(&self, args: &[&str]) -> Server {
        let config = self.config.path().join("wsgate.toml");
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        Server::start(self.plugins.path(), &all).await
    }
}

/// Sends a fetch command and parses the reply.
async fn fetch(ws: &mut Client, cmd: &str) -> Value {
    let reply = ask(ws, cmd).await;
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("not JSON ({e}): {reply}"))
}

async fn echo_answers(echo: &mut Client, what: &str) {
    let start = Instant::now();
    assert_eq!(ask(echo, what).await, what);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "echo took {:?}",
        start.elapsed()
    );
}

/// `wsgate_outbound_http_requests_total{plugin="fetch",outcome=...}`.
async fn counted(server: &Server, outcome: &str) -> u64 {
    let (status, text) = server.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with("wsgate_outbound_http_requests_total{"))
        .filter(|l| l.contains("plugin=\"fetch\"") && l.contains(&format!("outcome=\"{outcome}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn one_host(upstream: &Upstream) -> Vec<String> {
    vec![format!("http://127.0.0.1:{}", upstream.port)]
}

#[tokio::test]
async fn a_granted_request_is_answered() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(Some(&one_host(&upstream)), &["http://127.0.0.1:*"], "");
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;

    let hello = fetch(&mut ws, &format!("GET {}", upstream.url("/hello"))).await;
    assert_eq!(hello["status"], 200, "{hello}");
    assert_eq!(hello["body"], "hello from upstream");
    assert_eq!(hello["headers"]["x-upstream"], "yes");

    let echo = fetch(
        &mut ws,
        &format!("POST {} a payload", upstream.url("/echo?x=1")),
    )
    .await;
    assert_eq!(echo["status"], 200, "{echo}");
    let seen: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/echo?x=1");
    assert_eq!(seen["body"], "a payload");
    assert_eq!(seen["host"], format!("127.0.0.1:{}", upstream.port));

    let missing = fetch(&mut ws, &format!("GET {}", upstream.url("/status/404"))).await;
    assert_eq!(missing["status"], 404, "{missing}");

    assert_eq!(upstream.requests().len(), 3);
    assert_eq!(counted(&server, "ok").await, 3);
}

#[tokio::test]
async fn without_a_grant_every_request_is_denied() {
    let upstream = Upstream::start().await;
    // No sidecar: the plugin loads (wasi:http is linked for every plugin),
    // and reaches nothing.
    let setup = Setup::new(None, &["http://127.0.0.1:*"], "");
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let url = upstream.url("/hello");
    let denied = fetch(&mut ws, &format!("GET {url}")).await;
    assert_eq!(denied["error"], "denied", "{denied}");
    assert_eq!(upstream.accepted(), 0, "nothing reached the upstream");
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("outbound HTTP request refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(line.contains("fetch"), "names the plugin: {line}");
    assert!(
        line.contains(&format!("http://127.0.0.1:{}", upstream.port)),
        "names the destination: {line}"
    );
    assert_eq!(counted(&server, "denied").await, 1);
    drop(server);

    // Granted one port, another is denied; so are other schemes.
    let setup = Setup::new(Some(&one_host(&upstream)), &["http://127.0.0.1:*"], "");
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let other = format!("GET http://127.0.0.1:{}/hello", upstream.port + 1);
    assert_eq!(fetch(&mut ws, &other).await["error"], "denied");
    let https = format!("GET https://127.0.0.1:{}/hello", upstream.port);
    assert_eq!(fetch(&mut ws, &https).await["error"], "denied");
    let bad = fetch(&mut ws, "GET ftp://127.0.0.1/x").await;
    assert_eq!(bad["error"], "invalid-url", "{bad}");
    assert_eq!(upstream.accepted(), 0);
    // The granted one goes through.
    let ok = fetch(&mut ws, &format!("GET {url}")).await;
    assert_eq!(ok["status"], 200, "{ok}");
}

#[tokio::test]
async fn a_wildcard_never_reaches_loopback_by_name_or_address() {
    let upstream = Upstream::start().await;
    let port = upstream.port;
    let setup = Setup::new(Some(&[format!("http://*:{port}")]), &["*://*:*"], "");
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    for url in [
        format!("http://localhost:{port}/hello"),
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
    ] {
        let refused = fetch(&mut ws, &format!("GET {url}")).await;
        assert_eq!(refused["error"], "forbidden-address", "{url}: {refused}");
    }
    assert_eq!(upstream.accepted(), 0, "nothing reached the upstream");
    assert_eq!(counted(&server, "denied").await, 3);
    assert!(
        server.logs().contains("a loopback or private address"),
        "{}",
        server.logs()
    );
    drop(server);

    // An entry that names localhost reaches it.
    let setup = Setup::new(
        Some(&[format!("http://localhost:{port}")]),
        &["*://*:*"],
        "",
    );
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let ok = fetch(&mut ws, &format!("GET http://localhost:{port}/hello")).await;
    assert_eq!(ok["status"], 200, "{ok}");
}

#[tokio::test]
async fn a_sidecar_asking_beyond_the_operator_is_refused_at_load() {
    let setup = Setup::new(
        Some(&["https://*".to_owned()]),
        &["https://*.example.com"],
        "",
    );
    let server = setup.start(&[]).await;
    let info = server.admin_info("").await;
    let fetch = plugin_info(&info, "fetch");
    assert_eq!(fetch["status"], "failed", "{fetch:#}");
    assert_eq!(fetch["error_stage"], "sidecar", "{fetch:#}");
    let error = fetch["error"].as_str().unwrap();
    assert!(
        error.contains("\"https://*\"") && error.contains("grants.allowed_outbound_hosts"),
        "{error}"
    );
    assert!(server.logs().contains("https://*"), "{}", server.logs());
    // The others serve.
    let mut echo = server.connect("/ws/echo").await;
    echo_answers(&mut echo, "still here").await;
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_the_others_are_served() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(
        Some(&one_host(&upstream)),
        &["http://127.0.0.1:*"],
        "[outbound.http]\ntimeout = \"500ms\"\n",
    );
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let mut echo = server.connect("/ws/echo").await;
    let base = server.rss_kib();

    // No answer at all: the first byte never comes.
    let start = Instant::now();
    send_text(&mut ws, &format!("GET {}", upstream.url("/hang"))).await;
    echo_answers(&mut echo, "during").await;
    let reply: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let took = start.elapsed();
    eprintln!("HANG with outbound.http.timeout 500ms: failed after {took:?}");
    assert_eq!(reply["error"], "timeout", "{reply}");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A head, then the body stalls: the wait between bytes is bounded too.
    let start = Instant::now();
    let stalled = fetch(&mut ws, &format!("GET {}", upstream.url("/stall"))).await;
    let took = start.elapsed();
    eprintln!("STALL mid-body: failed after {took:?}");
    assert_eq!(stalled["error"], "timeout", "{stalled}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A plugin may ask for less.
    let start = Instant::now();
    let short = fetch(
        &mut ws,
        &format!("timeout=100 GET {}", upstream.url("/hang")),
    )
    .await;
    assert_eq!(short["error"], "timeout", "{short}");
    assert!(
        start.elapsed() < Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );

    assert_eq!(ask(&mut ws, "ping").await, "pong");
    echo_answers(&mut echo, "after").await;
    assert_eq!(counted(&server, "timeout").await, 3);
    let after = server.rss_kib();
    eprintln!("HANG: rss before {base} KiB, after {after} KiB");
    assert!(after < base + 32 * 1024, "RSS {base} -> {after} KiB");
    // The server let go of the upstream's connections.
    eventually(
        "upstream connections closed",
        &server,
        Duration::from_secs(5),
        || async { (upstream.open_connections() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn no_request_outlives_the_hook_deadline() {
    let upstream = Upstream::start().await;
    // The request's own timeout is long; the hook's deadline comes first.
    let setup = Setup::new(
        Some(&one_host(&upstream)),
        &["http://127.0.0.1:*"],
        "[outbound.http]\ntimeout = \"30s\"\n",
    );
    let server = setup.start(&["--hook-timeout", "1s"]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let mut echo = server.connect("/ws/echo").await;
    let start = Instant::now();
    send_text(&mut ws, &format!("GET {}", upstream.url("/hang"))).await;
    echo_answers(&mut echo, "during").await;
    // The request fails at the deadline, and the hook, past it, is
    // interrupted: its connection is closed with 1011.
    let (code, reason) = tokio::time::timeout(Duration::from_secs(10), expect_close(&mut ws))
        .await
        .expect("closed at the deadline");
    let took = start.elapsed();
    eprintln!("HANG with hook deadline 1s, request timeout 30s: closed after {took:?}");
    assert_eq!((code, reason.as_str()), (1011, "internal error"));
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    echo_answers(&mut echo, "after").await;
    let mut fresh = server.connect("/ws/fetch").await;
    assert_eq!(ask(&mut fresh, "ping").await, "pong");
    eventually(
        "upstream connection closed",
        &server,
        Duration::from_secs(5),
        || async { (upstream.open_connections() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_response_over_the_cap_fails_and_memory_stays_bounded() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(
        Some(&one_host(&upstream)),
        &["http://127.0.0.1:*"],
        "[limits]\ninstances_per_plugin = 4\n",
    );
    let server = setup.start(&[]).await;
    let cap = 1 << 20;
    let mut ws = server.connect("/ws/fetch").await;
    let mut echo = server.connect("/ws/echo").await;

    // Exactly the cap is fine.
    let full = fetch(
        &mut ws,
        &format!("GET {}", upstream.url(&format!("/stream?bytes={cap}"))),
    )
    .await;
    assert_eq!(full["status"], 200, "{full}");
    assert_eq!(full["len"], cap);
    // One byte more is not, announced or not.
    for route in ["stream", "declared"] {
        let over = cap + 1;
        let reply = fetch(
            &mut ws,
            &format!("GET {}", upstream.url(&format!("/{route}?bytes={over}"))),
        )
        .await;
        assert_eq!(reply["error"], "too-large", "{route}: {reply}");
    }

    // 4 clients, each pulling 100 MiB responses 5 times, at once.
    let base = server.rss_kib();
    let huge = upstream.url(&format!("/stream?bytes={}", 100u64 << 20));
    let declared = upstream.url(&format!("/declared?bytes={}", 100u64 << 20));
    let start = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..4 {
        let mut ws = server.connect("/ws/fetch").await;
        let url = if i % 2 == 0 {
            huge.clone()
        } else {
            declared.clone()
        };
        attackers.push(tokio::spawn(async move {
            for _ in 0..5 {
                let reply = fetch(&mut ws, &format!("GET {url}")).await;
                assert_eq!(reply["error"], "too-large", "{reply}");
            }
        }));
    }
    let mut peak = base;
    while attackers.iter().any(|a| !a.is_finished()) {
        echo_answers(&mut echo, "during").await;
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for a in attackers {
        a.await.unwrap();
    }
    let after = server.rss_kib();
    eprintln!(
        "TOO LARGE: 20 requests for 100 MiB each (cap 1 MiB) in {:?}; rss before {base} KiB, \
         peak {peak} KiB, after {after} KiB",
        start.elapsed()
    );
    assert!(
        peak < base + 64 * 1024,
        "RSS grew from {base} KiB to {peak} KiB: more than 64 MiB"
    );
    echo_answers(&mut echo, "after").await;
    assert_eq!(counted(&server, "too_large").await, 22);
    assert_eq!(counted(&server, "ok").await, 1);
}

#[tokio::test]
async fn requests_in_flight_are_capped_per_plugin() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(
        Some(&one_host(&upstream)),
        &["http://127.0.0.1:*"],
        "[limits]\ninstances_per_plugin = 4\n[outbound.http]\nmax_in_flight = 2\ntimeout = \"3s\"\n",
    );
    let server = setup.start(&[]).await;
    let mut echo = server.connect("/ws/echo").await;
    let base = server.rss_kib();
    let hang = format!("GET {}", upstream.url("/hang"));

    // Two requests hang, holding both places...
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut ws = server.connect("/ws/fetch").await;
        send_text(&mut ws, &hang).await;
        holders.push(ws);
    }
    eventually(
        "two requests in flight",
        &server,
        Duration::from_secs(5),
        || async { (upstream.open_connections() == 2).then_some(()) },
    )
    .await;
    // ...so a third and a fourth fail at once, not queued.
    for _ in 0..2 {
        let mut ws = server.connect("/ws/fetch").await;
        let start = Instant::now();
        let reply = fetch(&mut ws, &hang).await;
        assert_eq!(reply["error"], "too-many-requests", "{reply}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
    }
    assert_eq!(upstream.accepted(), 2, "the refused ones never connected");
    echo_answers(&mut echo, "during").await;

    // The two time out, and their places are free again.
    for ws in &mut holders {
        let reply: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        assert_eq!(reply["error"], "timeout", "{reply}");
    }
    let mut ws = server.connect("/ws/fetch").await;
    let ok = fetch(&mut ws, &format!("GET {}", upstream.url("/hello"))).await;
    assert_eq!(ok["status"], 200, "{ok}");
    let after = server.rss_kib();
    eprintln!("IN FLIGHT cap 2: rss before {base} KiB, after {after} KiB");
    assert!(after < base + 32 * 1024, "RSS {base} -> {after} KiB");
    assert_eq!(counted(&server, "limited").await, 2);
    assert_eq!(counted(&server, "timeout").await, 2);
    assert!(server.logs().contains("max_in_flight"), "{}", server.logs());
}

#[tokio::test]
async fn https_is_checked_against_the_name_asked_for() {
    let cert = TestCert::generate();
    let upstream = Upstream::start_tls(&cert).await;
    let port = upstream.port;
    let granted = [
        format!("https://localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ];
    let extra = format!(
        "[outbound.http]\ntls_ca = {:?}\n",
        cert.cert.display().to_string()
    );
    let setup = Setup::new(
        Some(&granted),
        &["https://localhost:*", "https://127.0.0.1:*"],
        &extra,
    );
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;

    let by_name = fetch(&mut ws, &format!("GET https://localhost:{port}/echo")).await;
    assert_eq!(by_name["status"], 200, "{by_name}");
    let seen: Value = serde_json::from_str(by_name["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen["sni"], "localhost",
        "the server name is the URL's host"
    );
    assert_eq!(seen["host"], format!("localhost:{port}"));

    let by_address = fetch(&mut ws, &format!("GET https://127.0.0.1:{port}/echo")).await;
    assert_eq!(by_address["status"], 200, "{by_address}");
    let seen: Value = serde_json::from_str(by_address["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["sni"], Value::Null, "no server name for an address");
    drop(server);

    // Without the CA, the certificate is not trusted.
    let setup = Setup::new(
        Some(&granted),
        &["https://localhost:*", "https://127.0.0.1:*"],
        "",
    );
    let server = setup.start(&[]).await;
    let mut ws = server.connect("/ws/fetch").await;
    let untrusted = fetch(&mut ws, &format!("GET https://localhost:{port}/echo")).await;
    assert_eq!(untrusted["error"], "tls", "{untrusted}");
    assert_eq!(counted(&server, "error").await, 1);
}
