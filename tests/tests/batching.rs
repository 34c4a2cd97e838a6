//! `on-messages`: a burst of a client's messages goes to the plugin in one
//! call where the plugin exports it (every SDK-built plugin does), and the
//! client sees exactly what one `on-message` per message would show it.

use std::time::Duration;

use wsgate_tests::raw::{self, RawWs, text, texts};
use wsgate_tests::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_pipelined_burst_is_answered_in_order_in_few_calls() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = RawWs::connect(server.port, "/ws/echo", &[]).await.unwrap();
    const N: usize = 2_000;
    let sent: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    ws.pipeline(&sent.iter().map(|t| text(t)).collect::<Vec<_>>())
        .await;
    assert_eq!(texts(&ws.read_frames(N, WAIT).await), sent);

    let (_, metrics) = server.admin("GET", "/metrics").await;
    let batches = hook_calls(&metrics, "echo", "on-messages");
    let singles = hook_calls(&metrics, "echo", "on-message");
    assert!(batches >= 1.0, "no on-messages call:\n{metrics}");
    // Bursts are at most 256 frames, and a socket read may split one: far
    // fewer calls than messages all the same.
    assert!(
        batches + singles <= (N / 8) as f64,
        "{batches} on-messages and {singles} on-message calls for {N} pipelined messages"
    );
    assert_eq!(
        sample(
            &metrics,
            "wsgate_messages_received_total",
            &["plugin=\"echo\""]
        ),
        N as f64
    );
}

/// Large messages go to the plugin a few at a time, however many arrive
/// together: a burst is lowered into the guest's memory whole, and a
/// guest's memory never shrinks, so a burst is cut at 64 KiB of payload.
/// An honest client is served meanwhile and the server's memory stays
/// bounded.
#[tokio::test]
async fn a_burst_of_large_messages_reaches_the_plugin_a_few_at_a_time() {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut honest = server.connect("/ws/echo").await;
    let base = server.rss_kib();
    let mut ws = RawWs::connect(server.port, "/ws/echo", &[]).await.unwrap();
    const SIZE: usize = 60 << 10;
    // A round stays within what the socket buffers hold while the client
    // is still writing, since it reads only after.
    const PER_ROUND: usize = 16;
    const ROUNDS: usize = 40;
    for round in 0..ROUNDS {
        let frames: Vec<_> = (0..PER_ROUND)
            .map(|i| (raw::BINARY, vec![(round * PER_ROUND + i) as u8; SIZE]))
            .collect();
        ws.pipeline(&frames).await;
        assert!(
            ws.read_frames(PER_ROUND, WAIT).await == frames,
            "round {round} echoed in order"
        );
        send_text(&mut honest, &format!("still here {round}")).await;
        assert_eq!(next_text(&mut honest).await, format!("still here {round}"));
    }
    server.assert_rss_within(base, 16, "pipelined 60 KiB messages");

    let (_, metrics) = server.admin("GET", "/metrics").await;
    let calls =
        hook_calls(&metrics, "echo", "on-messages") + hook_calls(&metrics, "echo", "on-message");
    // Two 60 KiB messages reach 64 KiB: no call carries more.
    let sent = (PER_ROUND * ROUNDS + ROUNDS) as f64;
    assert!(
        calls >= (PER_ROUND * ROUNDS / 2) as f64,
        "{calls} calls for {sent} messages, {PER_ROUND} of 60 KiB pipelined at a time"
    );
}

/// A message that sends to its own sender ends the plugin's batch: what it
/// sent arrives after the replies before it and before its own reply.
#[tokio::test]
async fn what_a_message_sends_its_sender_keeps_its_place_among_the_replies() {
    let dir = plugin_dir(fixture_plugins(), &["inspect"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = RawWs::connect(server.port, "/ws/inspect", &[])
        .await
        .unwrap();
    ws.read_frame(WAIT).await.expect("the greeting");
    let commands = [
        "say a", "self b", "say c", "say d", "self e", "self f", "say g", "say h",
    ];
    let expected = [
        "a", "b", "sent", "c", "d", "e", "sent", "f", "sent", "g", "h",
    ];
    for round in 0..20 {
        ws.pipeline(&commands.map(text)).await;
        assert_eq!(
            texts(&ws.read_frames(expected.len(), WAIT).await),
            expected,
            "round {round}"
        );
    }
    let (_, metrics) = server.admin("GET", "/metrics").await;
    assert!(
        hook_calls(&metrics, "inspect", "on-messages") >= 1.0,
        "the bursts went to on-messages:\n{metrics}"
    );
}

/// A plugin whose `on-messages` answers a burst with no results, or with
/// more than it was given, fails that call like a trap: its connection is
/// closed with 1011 and nothing internal, the failure is logged, and other
/// connections are served.
#[tokio::test]
async fn an_on_messages_that_breaks_the_contract_fails_only_its_call() {
    let dir = plugin_dir(fixture_plugins(), &["bad-batch"]);
    let server = Server::start(dir.path(), &[]).await;
    let mut honest = server.connect("/ws/bad-batch").await;
    for word in ["none", "more"] {
        fails_only_its_call(&server, "/ws/bad-batch", word, &mut honest).await;
    }
    let logs = server.logs();
    assert!(
        logs.contains("on-messages returned 0 results for "),
        "{logs}"
    );
    assert!(
        one_result_too_many(&logs),
        "one more result than messages, logged:\n{logs}"
    );
    answered_whole(&server, "/ws/bad-batch", |i| i.to_string()).await;
}

/// The same for `on-packed-messages` (which the host prefers where a
/// plugin exports it, as the Rust SDK's do), and for the ways a packed
/// answer can be wrong besides its count: heads that describe more bytes
/// than the payload holds or fewer, and text that is not UTF-8.
#[tokio::test]
async fn an_on_packed_messages_that_breaks_the_contract_fails_only_its_call() {
    let dir = plugin_dir(fixture_plugins(), &["bad-packed"]);
    // Five failures in a row would quarantine the plugin (the default),
    // which is not what this test is about.
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[("WSGATE_LIMITS__QUARANTINE_AFTER", "10")],
    )
    .await;
    let mut honest = server.connect("/ws/bad-packed").await;
    for word in ["none", "more", "over", "short", "latin1"] {
        fails_only_its_call(&server, "/ws/bad-packed", word, &mut honest).await;
    }
    let logs = server.logs();
    for failure in [
        "on-messages returned 0 results for ",
        "results describe more than their ",
        " payload bytes left",
        "replied with text that is not UTF-8",
    ] {
        assert!(logs.contains(failure), "{failure:?} not logged:\n{logs}");
    }
    assert!(
        one_result_too_many(&logs),
        "one more result than messages, logged:\n{logs}"
    );
    answered_whole(&server, "/ws/bad-packed", |i| format!("é{i}")).await;
}

/// A burst of `word` breaks the contract: the connection is closed with
/// 1011 and nothing internal, and `honest` is still served.
async fn fails_only_its_call(server: &Server, path: &str, word: &str, honest: &mut Client) {
    let mut bad = RawWs::connect(server.port, path, &[]).await.unwrap();
    // However the reads split them, some call gets two or more.
    let sent = vec![word.to_string(); 50];
    bad.pipeline(&sent.iter().map(|t| text(t)).collect::<Vec<_>>())
        .await;
    let close = loop {
        let frame = bad.read_frame(WAIT).await.expect("a close");
        if frame.opcode == raw::CLOSE {
            break frame;
        }
    };
    assert_eq!(close.close_code(), Some(1011), "{word}: {close:?}");
    assert_eq!(&close.payload[2..], b"internal error");

    send_text(honest, "still here").await;
    assert_eq!(next_text(honest).await, "still here");
}

/// Whether the logs say a call returned one more result than messages.
fn one_result_too_many(logs: &str) -> bool {
    logs.lines().any(|line| {
        let Some((_, said)) = line.split_once("on-messages returned ") else {
            return false;
        };
        let numbers: Vec<usize> = said
            .split(' ')
            .filter_map(|word| word.parse().ok())
            .collect();
        matches!(numbers[..], [returned, given, ..] if returned == given + 1)
    })
}

/// A burst the plugin keeps the contract for is answered whole.
async fn answered_whole(server: &Server, path: &str, message: impl Fn(usize) -> String) {
    let mut ws = RawWs::connect(server.port, path, &[]).await.unwrap();
    let sent: Vec<String> = (0..50).map(message).collect();
    ws.pipeline(&sent.iter().map(|t| text(t)).collect::<Vec<_>>())
        .await;
    assert_eq!(texts(&ws.read_frames(50, WAIT).await), sent);
}
