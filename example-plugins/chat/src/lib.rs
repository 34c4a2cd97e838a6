//! Multi-channel chat, after the Lucee ChatListener example, plus private
//! messages that stay in sync across one user's devices.
//!
//! Connect to `/ws/chat/{channel}?username=NAME`. The host subscribes the
//! connection to `{channel}`. A text message is published to the channel as
//! `{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}`; joins and
//! leaves are announced by `<server>`.
//!
//! A whisper is a text message `{"to":USER,"message":TEXT}`: it reaches
//! every connection of USER in the same channel, and every connection of the
//! sender there (so all of the sender's devices show it), and nobody else.
//! It arrives as the channel message above plus `"to":USER,"private":true`.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use wsgate_sdk::{
    ConnectionId, Listener, LogLevel, Message, OpenDecision, Request, export_listener, host, log,
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

fn render(from: &str, message: &str, channel: &str, to: Option<&str>) -> Message {
    let body = ChatMessage {
        from,
        message,
        channel,
        timestamp: now_ms(),
        to,
        private: to.is_some(),
    };
    Message::text(serde_json::to_string(&body).expect("chat message serializes"))
}

fn announce(channel: &str, from: &str, message: &str) {
    if let Err(e) = host::publish(channel, &render(from, message, channel, None), None) {
        log(
            LogLevel::Warn,
            format!("publish to {channel} failed: {e:?}"),
        );
    }
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
    let msg = render(name, &w.message, channel, Some(&w.to));
    let reached = host::send_to_tag(&user_tag(&w.to, channel), &msg, None).unwrap_or(0);
    if reached == 0 {
        let notice = format!("{} is not in {channel}", w.to);
        let _ = host::send(conn, &render(SERVER, &notice, channel, None));
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
        let channel = channel.to_owned();
        let remembered = host::set_attribute(conn, "username", Some(&name))
            .and_then(|()| host::set_attribute(conn, "channel", Some(&channel)))
            .and_then(|()| host::tag(conn, &user_tag(&name, &channel)));
        if remembered.is_err() {
            return OpenDecision::reject(400, "username or channel name too long");
        }
        announce(&channel, SERVER, &format!("{name} connected"));
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        let (name, channel) = identity(conn)?;
        match serde_json::from_str::<Whisper>(text) {
            Ok(w) => whisper(conn, &name, &channel, w),
            Err(_) => announce(&channel, &name, text),
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
    use serde_json::Value;
    use wsgate_sdk::testing::{FakeHost, request};

    fn join(host: &FakeHost<Chat>, name: &str, channel: &str) -> ConnectionId {
        let req = request(&format!("/ws/chat/{channel}"))
            .with_route("/ws/chat/{channel}")
            .with_param("channel", channel)
            .with_query("username", name);
        host.open(req).expect("accepted")
    }

    /// The chat messages `conn` received since the last look, as
    /// (from, message) pairs.
    fn heard(host: &FakeHost<Chat>, conn: ConnectionId) -> Vec<(String, String)> {
        host.received_texts(conn)
            .iter()
            .map(|text| {
                let json: Value = serde_json::from_str(text).unwrap();
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

    #[test]
    fn joins_messages_and_leaves_reach_the_channel_only() {
        let host = FakeHost::<Chat>::new();
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
    fn a_whisper_reaches_the_addressee_and_the_senders_devices_only() {
        let host = FakeHost::<Chat>::new();
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
        let host = FakeHost::<Chat>::new();
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
