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

use wsgate_tests::raw::{RawWs, text, texts};
use wsgate_tests::*;

const WAIT: Duration = Duration::from_secs(20);

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
        a.pipeline(&frames).await;
        let got = a.read_frames(want.len(), WAIT).await;
        assert_eq!(texts(&got), texts(&want), "round {round}");
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
