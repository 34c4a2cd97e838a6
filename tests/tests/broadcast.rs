//! A broadcast to thousands of subscribers is not held up by one client
//! that has stopped reading: the stuck one is closed 1008 as a slow
//! consumer, everyone else gets every message promptly.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;
use wsgate_tests::*;

/// Messages the stuck client's queue holds before it counts as slow.
const SEND_QUEUE: usize = 48;
/// Messages in the burst: more than the queue, so the stuck client overflows.
const BURST: usize = 100;

async fn publish(server: &Server, path: &str, body: &str) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, reply) = http_request(
        server.admin_port,
        "POST",
        path,
        &[("Authorization", &auth)],
        body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{path}: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_does_not_stall_a_broadcast_to_thousands() {
    // Each subscriber is one socket here and one in the server; keep clear
    // of the limit with room for the server's own files.
    let fds = raise_fd_limit();
    let subscribers = 10_000.min(fds.saturating_sub(300) as usize);
    assert!(subscribers >= 500, "open-file limit {fds} is too low");

    // The echo plugin on two routes whose {channel} subscribes each
    // connection: one for the readers, one to reach the stuck client alone.
    let plugins = plugin_dir(example_plugins(), &["echo"]);
    std::fs::write(
        plugins.path().join("echo.toml"),
        "routes = [\"/ws/bus/{channel}\", \"/ws/stuck/{channel}\"]\n",
    )
    .unwrap();
    // The stuck client reads only once every reader has its burst, which
    // on a loaded machine is well past the default close wait; the server
    // must still be holding its close frame for it then.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("wsgate.toml");
    std::fs::write(
        &file,
        format!(
            "[limits]\nsend_queue = {SEND_QUEUE}\nmax_connections_per_ip = 100000\n\
             [timeouts]\nclose = \"60s\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(plugins.path(), &["--config", file.to_str().unwrap()]).await;

    // The stuck client: a tiny receive buffer, and it never reads.
    let mut stuck = server
        .connect_with_recv_buffer("/ws/stuck/news", 4096)
        .await;

    let started = Instant::now();
    let readers: Vec<Client> = stream::iter(0..subscribers)
        .map(|_| server.connect("/ws/bus/news"))
        .buffer_unordered(64)
        .collect()
        .await;
    let connect_time = started.elapsed();

    // Fill the stuck client's socket buffers so its writer is blocked and
    // whatever is published next can only pile up in its queue.
    let route = "/ws/stuck/%7Bchannel%7D";
    let big = "x".repeat(512 << 10);
    for _ in 0..8 {
        publish(&server, &format!("/publish/echo/all?route={route}"), &big).await;
    }

    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for n in 0..BURST {
                    assert_eq!(next_text(&mut ws).await, format!("m{n}"));
                }
                (Instant::now(), ws)
            })
        })
        .collect();
    let burst_start = Instant::now();
    for n in 0..BURST {
        publish(&server, "/publish/echo/channel/news", &format!("m{n}")).await;
    }
    let publish_time = burst_start.elapsed();
    let mut last = burst_start;
    let mut readers = Vec::with_capacity(subscribers);
    for handle in handles {
        let (done, ws) = handle.await.expect("a subscriber missed messages");
        last = last.max(done);
        readers.push(ws);
    }
    let delivery = last - burst_start;
    eprintln!(
        "{subscribers} subscribers connected in {connect_time:?}; {BURST} messages \
         published in {publish_time:?}, all delivered to every reader within {delivery:?}"
    );
    assert!(delivery < Duration::from_secs(15), "{delivery:?}");

    // The stuck client, reading at last, finds the server gave up on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let close = loop {
        let msg = tokio::time::timeout_at(deadline.into(), stuck.next())
            .await
            .expect("the stuck client was never closed");
        match msg {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "send queue full")
    );

    // Everyone else is still subscribed and served.
    publish(&server, "/publish/echo/channel/news", "after").await;
    for ws in readers.iter_mut().take(100) {
        assert_eq!(next_text(ws).await, "after");
    }
}
