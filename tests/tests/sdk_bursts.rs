//! Bursts through the Python and JavaScript SDKs' `on-messages` (a loop
//! over the plugin's `on_message` / `onMessage`): a client that sends many
//! messages at once gets what one `on-message` call per message would have
//! given it, in order, both from a plugin that only replies (the `echo-py`
//! and `echo-js` examples) and from one that delivers between its replies
//! (the `burst-py` and `burst-js` fixtures: send, broadcast, publish and
//! send-to-tag), where the SDK must stop after each delivering message and
//! leave the rest to the host's next call. The C SDK's are `c_bursts.rs`,
//! the host's side `batching.rs`.

use std::time::Duration;

use wsgate_tests::raw::{BINARY, RawWs, TEXT, frame};
use wsgate_tests::*;

const WAIT: Duration = Duration::from_secs(20);

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

fn show(frames: &[(u8, Vec<u8>)]) -> Vec<String> {
    frames
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn hook_calls(metrics: &str, plugin: &str, hook: &str) -> f64 {
    sample(
        metrics,
        "wsgate_hook_duration_seconds_count",
        &[&format!("plugin=\"{plugin}\""), &format!("hook=\"{hook}\"")],
    )
}

/// An echo answers a pipelined burst of text and binary in order, in far
/// fewer guest calls than messages: the SDK's loop handles whole bursts.
async fn echo_answers_bursts_in_order_in_few_calls(name: &str) {
    let dir = plugin_dir(example_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = RawWs::connect(server.port, &format!("/ws/{name}"), &[])
        .await
        .unwrap();
    const N: usize = 1_000;
    let frames: Vec<(u8, Vec<u8>)> = (0..N)
        .map(|i| match i % 4 {
            0 => text(&format!("text {i} \u{e9}\u{1f600}")),
            1 => (BINARY, vec![i as u8; i % 200]),
            2 => text(""),
            _ => (BINARY, vec![(i % 251) as u8; 16 * 1024]),
        })
        .collect();
    pipeline(&mut ws, &frames).await;
    assert!(read_frames(&mut ws, N).await == frames, "echoes in order");

    let (_, metrics) = server.admin("GET", "/metrics").await;
    let batches = hook_calls(&metrics, name, "on-messages");
    let singles = hook_calls(&metrics, name, "on-message");
    assert!(batches >= 1.0, "no on-messages call:\n{metrics}");
    assert!(
        batches + singles <= (N / 4) as f64,
        "{batches} on-messages and {singles} on-message calls for {N} pipelined messages"
    );
}

/// What a message delivers arrives after the replies to the messages
/// before it and before its own reply, to the sender; the other client
/// gets the fan-out in order.
async fn burst_delivers_between_its_replies_in_order(name: &str) {
    let dir = plugin_dir(fixture_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let path = format!("/ws/{name}");
    let mut a = RawWs::connect(server.port, &path, &[]).await.unwrap();
    let mut b = server.connect(&path).await;
    for round in 0..20 {
        let sent = [
            format!("a{round}"),
            format!("b{round}"),
            format!("send:x{round}"),
            format!("c{round}"),
            format!("broadcast:w{round}"),
            format!("publish:p{round}"),
            format!("d{round}"),
            format!("tag:t{round}"),
            format!("send:y{round}"),
            format!("e{round}"),
            format!("f{round}"),
        ];
        // One on-message per message: what it delivers first, then its reply.
        let mut want = Vec::new();
        for t in &sent {
            if let Some((_, x)) = t.split_once(':') {
                want.push(text(x));
            }
            want.push(text(&format!("r:{t}")));
        }
        let frames: Vec<(u8, Vec<u8>)> = sent.iter().map(|t| text(t)).collect();
        pipeline(&mut a, &frames).await;
        let got = read_frames(&mut a, want.len()).await;
        assert_eq!(show(&got), show(&want), "round {round}");
        assert_eq!(got, want, "round {round}: all text");
        for fanned in ["w", "p", "t"] {
            assert_eq!(next_text(&mut b).await, format!("{fanned}{round}"));
        }
    }
    assert_silent(&mut b, Duration::from_millis(300)).await;

    let (_, metrics) = server.admin("GET", "/metrics").await;
    assert!(
        hook_calls(&metrics, name, "on-messages") >= 1.0,
        "the bursts went to on-messages:\n{metrics}"
    );
}

#[tokio::test]
async fn echo_py_answers_bursts_in_order_in_few_calls() {
    echo_answers_bursts_in_order_in_few_calls("echo-py").await;
}

#[tokio::test]
async fn echo_js_answers_bursts_in_order_in_few_calls() {
    echo_answers_bursts_in_order_in_few_calls("echo-js").await;
}

#[tokio::test]
async fn burst_py_delivers_between_its_replies_in_order() {
    burst_delivers_between_its_replies_in_order("burst-py").await;
}

#[tokio::test]
async fn burst_js_delivers_between_its_replies_in_order() {
    burst_delivers_between_its_replies_in_order("burst-js").await;
}
