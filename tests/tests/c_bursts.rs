//! Bursts through the C SDK's default `on-messages`: a client that sends
//! many messages at once gets what one `on-message` call per message would
//! have given it, in order, both from a plugin that only replies (the
//! `echo-c` example) and from one that delivers between its replies (the
//! `burst-c` fixture), where the SDK must stop after each delivering
//! message and leave the rest to the host's next call. The host's side is
//! `batching.rs`.

use std::time::Duration;

use wsgate_tests::raw::{RawWs, text, texts};
use wsgate_tests::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_c_answers_bursts_in_order_in_few_calls() {
    echo_answers_bursts_in_order_in_few_calls("echo-c").await;
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
        a.pipeline(&frames).await;
        let got = a.read_frames(want.len(), WAIT).await;
        assert_eq!(texts(&got), texts(&want), "round {round}");
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
