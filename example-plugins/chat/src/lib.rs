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
