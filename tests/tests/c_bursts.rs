//! Bursts through the C SDK's default `on-messages`: a client that sends
//! many messages at once gets what one `on-message` call per message would
//! have given it, in order, both from a plugin that only replies (the
//! `echo-c` example) and from one that delivers between its replies (the
//! `burst-c` fixture), where the SDK must stop after each delivering
//! message and leave the rest to the host's next call. The host's side is
//! `batching.rs`.

use std::time::Duration;

use wsgate_tests::raw::{BINARY, RawWs, TEXT, frame};
use wsgate_tests::*;

const WAIT: Duration = Duration::from_secs(10);

/// Every frame of `frames` (opcode, payload) in one write, so that they
/// arrive as one burst.
async fn pipeline(ws: &mut RawWs, frames: &[(u8, Vec<u8>)]) {
    let bytes: Vec<u8> = frames
        .iter()
        .flat_map(|(opcode, payload)| frame(true, false, *opcode, payload))
        .collect();
    ws.send(&bytes).await.unwrap();
}

async fn read_frames(ws: &mut RawWs, n: usize) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::with_capacity(n);
    for i in 0..n {
        let frame = ws
            .read_frame(WAIT)
            .await
            .unwrap_or_else(|| panic!("reply {i} of {n}"));
        frames.push((frame.opcode, frame.payload));
    }
    frames
}

fn text(s: &str) -> (u8, Vec<u8>) {
    (TEXT, s.as_bytes().to_vec())
}

fn hook_calls(metrics: &str, plugin: &str, hook: &str) -> f64 {
    sample(
        metrics,
        "wsgate_hook_duration_seconds_count",
        &[&format!("plugin=\"{plugin}\""), &format!("hook=\"{hook}\"")],
    )
}

#[tokio::test]
async fn echo_c_answers_bursts_in_order_in_few_calls() {
    let dir = plugin_dir(example_plugins(), &["echo-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = RawWs::connect(server.port, "/ws/echo-c", &[])
        .await
        .unwrap();
    // Text and binary, empty and 16 KiB, so that the SDK's loop hands on
    // and frees buffers of every kind.
    const N: usize = 1_000;
    let frames: Vec<(u8, Vec<u8>)> = (0..N)
        .map(|i| match i % 4 {
            0 => text(&format!("text {i}")),
            1 => (BINARY, vec![i as u8; i % 200]),
            2 => text(""),
            _ => (BINARY, vec![(i % 251) as u8; 16 * 1024]),
        })
        .collect();
    pipeline(&mut ws, &frames).await;
    assert!(read_frames(&mut ws, N).await == frames, "echoes in order");

    let (_, metrics) = server.admin("GET", "/metrics").await;
    let batches = hook_calls(&metrics, "echo-c", "on-messages");
    let singles = hook_calls(&metrics, "echo-c", "on-message");
    assert!(batches >= 1.0, "no on-messages call:\n{metrics}");
    assert!(
        batches + singles <= (N / 4) as f64,
        "{batches} on-messages and {singles} on-message calls for {N} pipelined messages"
    );
}

/// What a message sends or broadcasts arrives after the replies to the
/// messages before it and before its own reply.
#[tokio::test]
async fn burst_c_delivers_between_its_replies_in_order() {
    let dir = plugin_dir(fixture_plugins(), &["burst-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut a = RawWs::connect(server.port, "/ws/burst-c", &[])
        .await
        .unwrap();
    let mut b = server.connect("/ws/burst-c").await;
    for round in 0..20 {
        let sent = [
            format!("a{round}"),
            format!("b{round}"),
            format!("send:x{round}"),
            format!("c{round}"),
            format!("broadcast:w{round}"),
            format!("send:y{round}"),
            format!("d{round}"),
            format!("e{round}"),
        ];
        // One on-message per message: what it sends first, then its reply.
        let mut want = Vec::new();
        for t in &sent {
            if let Some(x) = t.strip_prefix("send:").or(t.strip_prefix("broadcast:")) {
                want.push(text(x));
            }
            want.push(text(&format!("r:{t}")));
        }
        let frames: Vec<(u8, Vec<u8>)> = sent.iter().map(|t| text(t)).collect();
        pipeline(&mut a, &frames).await;
        let got = read_frames(&mut a, want.len()).await;
        let show = |frames: &[(u8, Vec<u8>)]| {
            frames
                .iter()
                .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&got), show(&want), "round {round}");
        assert_eq!(got, want, "round {round}: all text");
        assert_eq!(next_text(&mut b).await, format!("w{round}"));
    }
    assert_silent(&mut b, Duration::from_millis(300)).await;

    let (_, metrics) = server.admin("GET", "/metrics").await;
    assert!(
        hook_calls(&metrics, "burst-c", "on-messages") >= 1.0,
        "the bursts went to on-messages:\n{metrics}"
    );
}
