//! Multi-channel chat, after the Lucee ChatListener example.
//!
//! Connect to `/ws/chat/{channel}?username=NAME`. The host subscribes the
//! connection to `{channel}`; every text message is published to the channel
//! as `{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}`, and joins
//! and leaves are announced by `<server>`.

use serde::Serialize;
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn announce(channel: &str, from: &str, message: &str) {
    let body = ChatMessage {
        from,
        message,
        channel,
        timestamp: now_ms(),
    };
    let json = serde_json::to_string(&body).expect("chat message serializes");
    if let Err(e) = host::publish(channel, &Message::text(json), None) {
        log(
            LogLevel::Warn,
            format!("publish to {channel} failed: {e:?}"),
        );
    }
}

/// The username and channel remembered for a connection at open time.
fn identity(conn: ConnectionId) -> Option<(String, String)> {
    let name = host::get_attribute(conn, "username").ok()??;
    let channel = host::get_attribute(conn, "channel").ok()??;
    Some((name, channel))
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
        let channel = channel.to_owned();
        // Both only fail for a connection that is already gone.
        let _ = host::set_attribute(conn, "username", Some(&name));
        let _ = host::set_attribute(conn, "channel", Some(&channel));
        announce(&channel, SERVER, &format!("{name} connected"));
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        let (name, channel) = identity(conn)?;
        announce(&channel, &name, text);
        None
    }

    fn on_close(conn: ConnectionId, _code: u16, _reason: String) {
        if let Some((name, channel)) = identity(conn) {
            announce(&channel, SERVER, &format!("{name} disconnected"));
        }
    }
}

export_listener!(Chat);
