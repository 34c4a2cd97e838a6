//! Deliveries to a parked connection are corked and written straight into
//! its socket by a flusher (`registry/cork.rs`, `protocol/direct.rs`),
//! beside what the connection's own task writes (pings, queued messages,
//! the rest of a frame the socket took only part of). A reader that
//! pauses fills its socket mid-frame while pings keep coming: every message
//! must still arrive whole and in order, and count as sent.

use std::time::Duration;

use wsgate_tests::*;

/// Messages published while the paused reader reads nothing: 6.4 MB, more
/// than its socket takes, so the socket fills in the middle of a frame.
const MESSAGES: usize = 200;
const SIZE: usize = 32 << 10;

/// Message `n`: its number, then one letter repeated, so a frame cut or
/// spliced anywhere shows.
fn body(n: usize) -> String {
    let letter = char::from(b'a' + (n % 26) as u8);
    let mut body = format!("{n:05}:");
    body.extend(std::iter::repeat_n(letter, SIZE - body.len()));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_gets_every_delivery_whole_and_in_order() {
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(
        plugins.path().join("echo.toml"),
        "routes = [\"/ws/bus/{channel}\"]\n",
    )
    .unwrap();
    // Room in the queue for everything the paused reader's socket cannot
    // take (it is not a slow consumer to close), and pings every 50 ms to
    // go out between the deliveries.
    let (_config, file) = config_file(&format!(
        "[limits]\nsend_queue_bytes = {}\n[timeouts]\nping_interval = \"50ms\"\n",
        16 << 20
    ));
    // One worker: the flusher and the connections' tasks take turns on it.
    let server = Server::start_with_env(
        plugins.path(),
        &["--config", &file],
        &[("TOKIO_WORKER_THREADS", "1")],
    )
    .await;

    // The paused reader: a small receive buffer, and nothing read until
    // everything is published.
    let mut paused = server.connect_with_recv_buffer("/ws/bus/news", 8192).await;
    let mut honest = server.connect("/ws/bus/news").await;
    let rss = server.rss_kib();

    let reading = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let got = next_text(&mut honest).await;
            assert!(
                got == body(n),
                "the reader's message {n} is not what was published"
            );
        }
        honest
    });
    for n in 0..MESSAGES {
        let (status, reply) = server
            .publish("/publish/echo/channel/news", &[], &body(n))
            .await;
        assert_eq!(status, 200, "{reply}");
    }
    let mut honest = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the honest reader was held up by the paused one")
        .unwrap();

    // Pings pile up behind the deliveries meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..MESSAGES {
        let got = next_text(&mut paused).await;
        assert!(got.len() == SIZE, "message {n} is {} bytes", got.len());
        assert!(
            got == body(n),
            "the paused reader's message {n} is not what was published"
        );
    }

    // Both still subscribed, and served.
    let (status, _) = server
        .publish("/publish/echo/channel/news", &[], "after")
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut paused).await, "after");
    assert_eq!(next_text(&mut honest).await, "after");

    let (status, metrics) = server.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    let sent = sample(&metrics, "wsgate_messages_sent_total", &["plugin=\"echo\""]);
    assert_eq!(sent, 2.0 * (MESSAGES + 1) as f64, "{metrics}");
    server.assert_rss_within(rss, 32, "a paused reader of 6.4 MB of deliveries");
}
