//! Multi-channel chat, after the Lucee ChatListener example, plus private
//! messages that stay in sync across one user's devices, and no line lost
//! when a client reconnects.
//!
//! Connect to `/ws/chat/{channel}?username=NAME`. The host subscribes the
//! connection to `{channel}`. A text message is published to the channel as
//! `{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS,"pos":POS}`;
//! joins and leaves are announced by `<server>` the same way.
//!
//! `POS` is the message's place in the channel's history, `EPOCH:OFFSET`
//! (the sidecar records every channel). A client that keeps the last `pos`
//! it saw reconnects with `?since=EPOCH:OFFSET` and is sent, before
//! anything else, what the channel published after it, in order, then
//! `{"type":"recovery","recovered":true,"latest":POS}`. When the gap is no
//! longer whole (the client was away longer than the history keeps, or
//! history was lost and a new epoch began), the notice says
//! `"recovered":false` and comes first, and the messages after it are the
//! ones still kept: the client starts afresh, as it does when the channel
//! is not recorded at all (the notice's `"latest"` is then `null`). When
//! the history is unavailable (its Redis is restarting), the open is
//! refused with 503: the gap may well still be kept, so the client comes
//! back with the same `since` rather than start afresh. A `since` that is
//! not a position is refused with 400.
//!
//! A whisper is a text message `{"to":USER,"message":TEXT}`: it reaches
//! every connection of USER in the same channel, and every connection of the
//! sender there (so all of the sender's devices show it), and nobody else.
//! It arrives as the channel message above plus `"to":USER,"private":true`,
//! without `pos`: it is not a channel message, so it is not recorded.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use wsgate_sdk::history::{self, PublishError};
use wsgate_sdk::{
    ConnectionId, HistoryError, Listener, LogLevel, Message, OpenDecision, Position, Request,
    export_listener, host, log,
};

const SERVER: &str = "<server>";

#[derive(Serialize)]
struct ChatMessage<'a> {
    from: &'a str,
    message: &'a str,
    channel: &'a str,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pos: Option<&'a str>,
}

/// Tells a returning client whether the replay before (or after) it
/// filled its whole gap.
#[derive(Serialize)]
struct Recovery {
    #[serde(rename = "type")]
    kind: &'static str,
    recovered: bool,
    latest: Option<String>,
}

#[derive(Deserialize)]
struct Whisper {
    to: String,
    message: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn render(from: &str, message: &str, channel: &str, to: Option<&str>, pos: Option<&str>) -> String {
    let body = ChatMessage {
        from,
        message,
        channel,
        timestamp: now_ms(),
        to,
        private: to.is_some(),
        pos,
    };
    serde_json::to_string(&body).expect("chat message serializes")
}

/// Publishes a channel message with its position in it. Served without
/// its sidecar, the chat records nothing: the line then goes out without
/// a position, which clients take as a message they cannot resume from.
/// (When the history backend fails, the server sends nothing at all.)
/// Publishes a channel message, recorded, with its position as "pos";
/// returns whether it was published.
fn announce(channel: &str, from: &str, message: &str) -> bool {
    let positioned = history::publish_positioned(
        channel,
        |pos| render(from, message, channel, None, Some(pos)),
        None,
    );
    let Err(e) = positioned else {
        return true;
    };
    log(
        LogLevel::Warn,
        format!("recorded publish to {channel} failed: {e}"),
    );
    if e != PublishError::History(HistoryError::NotRecorded) {
        return false;
    }
    let plain = Message::text(render(from, message, channel, None, None));
    match host::publish(channel, &plain, None) {
        Ok(_) => true,
        Err(e) => {
            log(
                LogLevel::Warn,
                format!("publish to {channel} failed: {e:?}"),
            );
            false
        }
    }
}

/// What a sender is told when its line could not be published (the
/// history is unavailable).
const NOT_DELIVERED: &str = r#"{"type":"error","error":"not delivered; try again"}"#;

fn recovery(recovered: bool, latest: Option<&Position>) -> Message {
    let notice = Recovery {
        kind: "recovery",
        recovered,
        latest: latest.map(Position::to_string),
    };
    Message::text(serde_json::to_string(&notice).expect("recovery notice serializes"))
}

/// Sends `conn` what `channel` published after `since`, and the recovery
/// notice: after the messages when they fill the gap, before them when
/// they do not (they are then a fresh start, and the client must know
/// that before it shows them). Sends nothing when the history is
/// unavailable, and says so: the caller refuses the connection.
fn replay(conn: ConnectionId, channel: &str, since: &Position) -> Result<(), HistoryError> {
    let page = match history::catch_up(channel, since) {
        Ok(page) => page,
        Err(e) => {
            log(
                LogLevel::Warn,
                format!("history of {channel} unreadable: {e:?}"),
            );
            if e == HistoryError::Unavailable {
                return Err(e);
            }
            // This history cannot serve `since` at all: a fresh start.
            let _ = host::send(conn, &recovery(false, None));
            return Ok(());
        }
    };
    let notice = recovery(page.recovered, Some(&page.latest));
    if !page.recovered {
        let _ = host::send(conn, &notice);
    }
    // A message that does not fit the queue leaves a gap the client sees
    // in the offsets, and it comes back for the rest.
    for entry in &page.entries {
        let _ = host::send(conn, &entry.msg);
    }
    if page.recovered {
        let _ = host::send(conn, &notice);
    }
    Ok(())
}

/// The tag for one user's connections in one channel: `user:NAME@CHANNEL`,
/// with `%` and `@` escaped in both, so no other name and channel can make
/// the same tag (user `a` in `b@c` and user `a@b` in `c` would).
fn user_tag(name: &str, channel: &str) -> String {
    let escape = |s: &str| s.replace('%', "%25").replace('@', "%40");
    format!("user:{}@{}", escape(name), escape(channel))
}

/// The username and channel remembered for a connection at open time.
fn identity(conn: ConnectionId) -> Option<(String, String)> {
    let name = host::get_attribute(conn, "username").ok()??;
    let channel = host::get_attribute(conn, "channel").ok()??;
    Some((name, channel))
}

fn whisper(conn: ConnectionId, name: &str, channel: &str, w: Whisper) {
    let msg = Message::text(render(name, &w.message, channel, Some(&w.to), None));
    let reached = host::send_to_tag(&user_tag(&w.to, channel), &msg, None).unwrap_or(0);
    if reached == 0 {
        let notice = format!("{} is not in {channel}", w.to);
        let notice = render(SERVER, &notice, channel, None, None);
        let _ = host::send(conn, &Message::text(notice));
        return;
    }
    if w.to != name {
        let _ = host::send_to_tag(&user_tag(name, channel), &msg, None);
    }
}

struct Chat;

impl Listener for Chat {
    fn on_open(conn: ConnectionId, req: Request) -> OpenDecision {
        let Some(name) = req.query_param("username").filter(|n| !n.trim().is_empty()) else {
            return OpenDecision::reject(403, "a username query parameter is required");
        };
        let Some(channel) = req.param("channel") else {
            return OpenDecision::reject(404, "no channel in the path");
        };
        let name = name.trim().to_owned();
        if name == SERVER {
            return OpenDecision::reject(403, "that username is reserved");
        }
        let since = match req.query_param("since").map(str::parse::<Position>) {
            None => None,
            Some(Ok(since)) => Some(since),
            Some(Err(_)) => return OpenDecision::reject(400, "since is EPOCH:OFFSET"),
        };
        let channel = channel.to_owned();
        let remembered = host::set_attribute(conn, "username", Some(&name))
            .and_then(|()| host::set_attribute(conn, "channel", Some(&channel)))
            .and_then(|()| host::tag(conn, &user_tag(&name, &channel)));
        if remembered.is_err() {
            return OpenDecision::reject(400, "username or channel name too long");
        }
        if let Some(since) = since
            && replay(conn, &channel, &since).is_err()
        {
            return OpenDecision::reject(503, "history unavailable; try again with the same since");
        }
        announce(&channel, SERVER, &format!("{name} connected"));
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        let (name, channel) = identity(conn)?;
        match serde_json::from_str::<Whisper>(text) {
            Ok(w) => whisper(conn, &name, &channel, w),
            Err(_) => {
                if !announce(&channel, &name, text) {
                    let _ = host::send(conn, &Message::text(NOT_DELIVERED));
                }
            }
        }
        None
    }

    fn on_close(conn: ConnectionId, _code: u16, _reason: String) {
        if let Some((name, channel)) = identity(conn) {
            announce(&channel, SERVER, &format!("{name} disconnected"));
        }
    }
}

export_listener!(Chat);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wsgate_sdk::testing::{FakeHost, HistoryConfig, request};

    /// A fake host that records history as chat.toml asks the server to.
    fn chat_host() -> FakeHost<Chat> {
        let sidecar: toml::Table = include_str!("../chat.toml").parse().unwrap();
        let table = sidecar["history"]
            .as_table()
            .expect("chat.toml has [history]");
        let channels: Vec<&str> = table["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let mut config = HistoryConfig::channels(&channels);
        if let Some(size) = table.get("size") {
            config = config.size(size.as_integer().unwrap() as u32);
        }
        assert!(
            table.get("ttl").is_none(),
            "the tests assume the default ttl"
        );
        let host = FakeHost::<Chat>::new();
        host.record_history(config);
        host
    }

    fn join_since(
        host: &FakeHost<Chat>,
        name: &str,
        channel: &str,
        since: Option<&str>,
    ) -> Result<ConnectionId, wsgate_sdk::Rejection> {
        let mut req = request(&format!("/ws/chat/{channel}"))
            .with_route("/ws/chat/{channel}")
            .with_param("channel", channel)
            .with_query("username", name);
        if let Some(since) = since {
            req = req.with_query("since", since);
        }
        host.open(req)
    }

    fn join(host: &FakeHost<Chat>, name: &str, channel: &str) -> ConnectionId {
        join_since(host, name, channel, None).expect("accepted")
    }

    /// Everything `conn` received since the last look, as JSON.
    fn received(host: &FakeHost<Chat>, conn: ConnectionId) -> Vec<Value> {
        host.received_texts(conn)
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect()
    }

    /// The chat messages `conn` received since the last look, as
    /// (from, message) pairs.
    fn heard(host: &FakeHost<Chat>, conn: ConnectionId) -> Vec<(String, String)> {
        received(host, conn)
            .iter()
            .map(|json| {
                (
                    json["from"].as_str().unwrap().into(),
                    json["message"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    fn pair(from: &str, message: &str) -> (String, String) {
        (from.into(), message.into())
    }

    fn pos(json: &Value) -> Position {
        json["pos"].as_str().expect("a pos").parse().unwrap()
    }

    /// What a replay and the live messages after it look like to a
    /// client: `(from, message)` for chat lines, `recovered:BOOL` for the
    /// recovery notice.
    fn story(messages: &[Value]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match m["type"].as_str() {
                Some("recovery") => format!("recovered:{}", m["recovered"]),
                _ => format!("{}: {}", m["from"].as_str().unwrap(), m["message"]),
            })
            .collect()
    }

    #[test]
    fn the_sidecar_records_every_channel() {
        let _host = chat_host();
        for channel in ["lobby", "b@c", "x"] {
            assert!(host::history(channel, None, 1).is_ok(), "{channel}");
        }
    }

    #[test]
    fn joins_messages_and_leaves_reach_the_channel_only() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        let carol = join(&host, "carol", "garden");
        assert_eq!(
            heard(&host, alice),
            [
                pair(SERVER, "alice connected"),
                pair(SERVER, "bob connected")
            ]
        );
        heard(&host, bob);
        heard(&host, carol);
        assert_eq!(host.send_text(alice, "hello"), None);
        assert_eq!(heard(&host, bob), [pair("alice", "hello")]);
        assert_eq!(heard(&host, alice), [pair("alice", "hello")]);
        assert!(heard(&host, carol).is_empty());
        host.close(bob, 1000, "");
        assert_eq!(heard(&host, alice), [pair(SERVER, "bob disconnected")]);
    }

    #[test]
    fn every_channel_message_carries_its_position() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        host.send_text(alice, r#"say "hi""#);
        host.close(bob, 1000, "");
        let got = received(&host, alice);
        let positions: Vec<Position> = got.iter().map(pos).collect();
        let epoch = &positions[0].epoch;
        assert_eq!(
            positions,
            (1..=4).map(|n| Position::new(epoch, n)).collect::<Vec<_>>()
        );
        assert_eq!(got[2]["message"], r#"say "hi""#, "the rest as before");
        assert_eq!(got[2]["from"], "alice");
        assert_eq!(got[2]["channel"], "lobby");
        assert!(got[2]["timestamp"].as_u64().unwrap() > 0);
        // What is recorded is what was delivered.
        let page = host::history("lobby", None, 10).unwrap();
        let recorded: Vec<Value> = page
            .entries
            .iter()
            .map(|e| serde_json::from_str(e.msg.as_text().unwrap()).unwrap())
            .collect();
        assert_eq!(recorded, got);
    }

    #[test]
    fn whispers_have_no_position_and_are_not_recorded() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        heard(&host, alice);
        heard(&host, bob);
        let before = host::history("lobby", None, 100).unwrap().latest;
        host.send_text(alice, r#"{"to":"bob","message":"psst"}"#);
        host.send_text(alice, r#"{"to":"zed","message":"?"}"#);
        let whisper = received(&host, bob).pop().unwrap();
        assert_eq!(whisper["private"], true);
        assert!(whisper.get("pos").is_none(), "{whisper}");
        let to_alice = received(&host, alice);
        assert_eq!(to_alice.len(), 2, "her copy and the not-in notice");
        assert!(to_alice.iter().all(|m| m.get("pos").is_none()));
        assert_eq!(host::history("lobby", None, 100).unwrap().latest, before);
    }

    #[test]
    fn a_returning_client_gets_what_it_missed_in_order_then_the_live_messages() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        heard(&host, alice);
        let last = pos(received(&host, bob).last().unwrap());
        host.close(bob, 1006, "");
        for line in ["one", "two", "three"] {
            host.send_text(alice, line);
        }
        let alice_saw = received(&host, alice);

        let bob = join_since(&host, "bob", "lobby", Some(&last.to_string())).unwrap();
        let got = received(&host, bob);
        assert_eq!(
            story(&got),
            [
                r#"<server>: "bob disconnected""#,
                r#"alice: "one""#,
                r#"alice: "two""#,
                r#"alice: "three""#,
                "recovered:true",
                r#"<server>: "bob connected""#,
            ]
        );
        assert_eq!(
            &got[..4],
            &alice_saw[..],
            "the very messages, positions and all"
        );
        assert_eq!(got[4]["latest"], json!(pos(&got[3]).to_string()));
        assert_eq!(pos(&got[5]).offset, pos(&got[3]).offset + 1);

        // Up to date: only the notice.
        let now = pos(&got[5]).to_string();
        host.close(bob, 1006, "");
        let bob = join_since(&host, "bob", "lobby", Some(&now)).unwrap();
        assert_eq!(
            story(&received(&host, bob)),
            [
                r#"<server>: "bob disconnected""#,
                "recovered:true",
                r#"<server>: "bob connected""#,
            ]
        );
    }

    #[test]
    fn a_client_whose_gap_is_gone_is_told_first_and_starts_afresh() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let old = pos(received(&host, alice).last().unwrap());
        // The server restarted: its in-memory history is gone.
        host.lose_history();
        host.send_text(alice, "after the restart");
        let bob = join_since(&host, "bob", "lobby", Some(&old.to_string())).unwrap();
        let got = received(&host, bob);
        assert_eq!(
            story(&got),
            [
                "recovered:false",
                r#"alice: "after the restart""#,
                r#"<server>: "bob connected""#,
            ]
        );
        let latest: Position = got[0]["latest"].as_str().unwrap().parse().unwrap();
        assert_ne!(latest.epoch, old.epoch);
        assert_eq!(latest, pos(&got[1]));

        // Away for more lines than a channel keeps (100 by default).
        let since = pos(&got[2]).to_string();
        host.close(bob, 1006, "");
        for n in 0..150 {
            host.send_text(alice, &format!("line {n}"));
        }
        let bob = join_since(&host, "bob", "lobby", Some(&since)).unwrap();
        let got = story(&received(&host, bob));
        assert_eq!(got.len(), 1 + 100 + 1);
        assert_eq!(got[0], "recovered:false");
        assert_eq!(got[1], r#"alice: "line 50""#, "the oldest kept");
        assert_eq!(got[100], r#"alice: "line 149""#);
        assert_eq!(got[101], r#"<server>: "bob connected""#);
    }

    #[test]
    fn a_since_that_is_not_a_position_is_refused() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        heard(&host, alice);
        let latest = host::history("lobby", None, 1).unwrap().latest;
        for since in ["", "yesterday", "abc:", ":7", "abc:-1", "abc:1.5"] {
            let refused = join_since(&host, "bob", "lobby", Some(since)).unwrap_err();
            assert_eq!(refused.status, 400, "{since:?}");
        }
        assert!(heard(&host, alice).is_empty(), "no join announced");
        assert_eq!(host::history("lobby", None, 1).unwrap().latest, latest);
        assert_eq!(host::connection_count(), 1);
    }

    #[test]
    fn without_since_nothing_is_replayed() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        host.send_text(alice, "before bob");
        let bob = join(&host, "bob", "lobby");
        assert_eq!(
            story(&received(&host, bob)),
            [r#"<server>: "bob connected""#]
        );
    }

    #[test]
    fn an_unavailable_history_refuses_a_returning_client_with_503() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let since = pos(received(&host, alice).last().unwrap()).to_string();
        host.history_unavailable(true);
        let refused = join_since(&host, "bob", "lobby", Some(&since)).unwrap_err();
        assert_eq!(refused.status, 503);
        assert!(heard(&host, alice).is_empty(), "no join announced");
        assert_eq!(host::connection_count(), 1);
        assert!(host.logs().iter().any(|(level, line)| {
            *level == LogLevel::Warn && line.contains("history of lobby unreadable")
        }));
        // Once the history is back, the same since gets the whole gap.
        host.history_unavailable(false);
        let bob = join_since(&host, "bob", "lobby", Some(&since)).unwrap();
        assert_eq!(
            story(&received(&host, bob)),
            ["recovered:true", r#"<server>: "bob connected""#]
        );
    }

    #[test]
    fn a_since_on_an_unrecorded_channel_is_a_fresh_start() {
        let host = FakeHost::<Chat>::new();
        let bob = join_since(&host, "bob", "lobby", Some("e:3")).unwrap();
        assert_eq!(
            received(&host, bob)[0],
            json!({"type": "recovery", "recovered": false, "latest": null})
        );
    }

    #[test]
    fn a_line_that_cannot_be_recorded_is_not_sent_and_its_sender_is_told() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        received(&host, alice);
        received(&host, bob);
        host.history_unavailable(true);
        host.send_text(alice, "hello");
        assert_eq!(
            received(&host, alice),
            [json!({"type": "error", "error": "not delivered; try again"})]
        );
        assert!(received(&host, bob).is_empty());
    }

    #[test]
    fn served_without_its_sidecar_the_chat_goes_on_without_positions() {
        let host = FakeHost::<Chat>::new();
        let alice = join(&host, "alice", "lobby");
        host.send_text(alice, "hi");
        let got = received(&host, alice);
        assert_eq!(
            story(&got),
            [r#"<server>: "alice connected""#, r#"alice: "hi""#]
        );
        assert!(got.iter().all(|m| m.get("pos").is_none()));
        // A returning client learns that nothing can be replayed.
        let bob = join_since(&host, "bob", "lobby", Some("e:1")).unwrap();
        assert_eq!(
            story(&received(&host, bob)),
            ["recovered:false", r#"<server>: "bob connected""#]
        );
    }

    #[test]
    fn a_whisper_reaches_the_addressee_and_the_senders_devices_only() {
        let host = chat_host();
        let alice = join(&host, "alice", "lobby");
        let alice_phone = join(&host, "alice", "lobby");
        let bob = join(&host, "bob", "lobby");
        let eve = join(&host, "eve", "lobby");
        for conn in [alice, alice_phone, bob, eve] {
            heard(&host, conn);
        }
        host.send_text(alice, r#"{"to":"bob","message":"psst"}"#);
        for conn in [bob, alice, alice_phone] {
            assert_eq!(heard(&host, conn), [pair("alice", "psst")]);
        }
        assert!(heard(&host, eve).is_empty());
        host.send_text(bob, r#"{"to":"zed","message":"?"}"#);
        assert_eq!(heard(&host, bob), [pair(SERVER, "zed is not in lobby")]);
    }

    #[test]
    fn nobody_speaks_as_the_announcer_and_user_tags_do_not_collide() {
        let host = chat_host();
        for name in ["", "  ", SERVER] {
            let req = request("/ws/chat/lobby")
                .with_param("channel", "lobby")
                .with_query("username", name);
            assert_eq!(host.open(req).unwrap_err().status, 403, "{name:?}");
        }
        // User `a` in `b@c` and user `a@b` in `c` are different people.
        let a = join(&host, "a", "b@c");
        let ab = join(&host, "a@b", "c");
        let x = join(&host, "x", "c");
        for conn in [a, ab, x] {
            heard(&host, conn);
        }
        host.send_text(x, r#"{"to":"a@b","message":"for a@b"}"#);
        assert_eq!(heard(&host, ab), [pair("x", "for a@b")]);
        assert!(heard(&host, a).is_empty());
        assert_ne!(user_tag("a", "b@c"), user_tag("a@b", "c"));
    }
}
