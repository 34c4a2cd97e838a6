//! Bursts through the C SDK's default `on-messages`: a client that sends
//! many messages at once gets what one `on-message` call per message would
//! have given it, in order, both from a plugin that only replies (the
//! `echo-c` example) and from one that delivers between its replies (the
//! `burst-c` fixture), where the SDK must stop after each delivering
//! message and leave the rest to the host's next call.

use std::time::Duration;

use futures_util::SinkExt;
use wsgate_tests::tungstenite::Message;
use wsgate_tests::*;

/// Sends `msgs` in one write, so that the server reads them as a burst.
async fn burst(ws: &mut Client, msgs: &[Message]) {
    for msg in msgs {
        ws.feed(msg.clone()).await.expect("feed");
    }
    ws.flush().await.expect("flush");
}

#[tokio::test]
async fn echo_c_answers_bursts_in_order() {
    let dir = plugin_dir(example_plugins(), &["echo-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = server.connect("/ws/echo-c").await;
    // Text and binary, empty and 16 KiB, so that the SDK's loop hands on
    // and frees buffers of every kind.
    let msgs: Vec<Message> = (0..256usize)
        .map(|i| match i % 4 {
            0 => Message::text(format!("text {i}")),
            1 => Message::binary(vec![i as u8; i]),
            2 => Message::text(""),
            _ => Message::binary(vec![(i % 251) as u8; 16 * 1024]),
        })
        .collect();
    for _ in 0..4 {
        burst(&mut ws, &msgs).await;
        for (i, want) in msgs.iter().enumerate() {
            assert_eq!(&next_msg(&mut ws).await, want, "message {i}");
        }
    }
}

#[tokio::test]
async fn burst_c_delivers_between_replies_in_order() {
    let dir = plugin_dir(fixture_plugins(), &["burst-c"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut a = server.connect("/ws/burst-c").await;
    let mut b = server.connect("/ws/burst-c").await;
    for round in 0..20 {
        let sent = [
            format!("a{round}"),
            format!("b{round}"),
            format!("send:x{round}"),
            format!("c{round}"),
            format!("send:y{round}"),
            format!("send:z{round}"),
            format!("broadcast:w{round}"),
            format!("d{round}"),
            format!("e{round}"),
        ];
        // One on-message per message: what it sends first, then its reply.
        let mut want = Vec::new();
        for text in &sent {
            if let Some(x) = text
                .strip_prefix("send:")
                .or(text.strip_prefix("broadcast:"))
            {
                want.push(x.to_owned());
            }
            want.push(format!("r:{text}"));
        }
        let msgs: Vec<Message> = sent.iter().map(|t| Message::text(t.as_str())).collect();
        burst(&mut a, &msgs).await;
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(next_text(&mut a).await);
        }
        assert_eq!(got, want, "round {round}");
        assert_eq!(next_text(&mut b).await, format!("w{round}"));
    }
    assert_silent(&mut a, Duration::from_millis(300)).await;
    assert_silent(&mut b, Duration::from_millis(300)).await;
}
