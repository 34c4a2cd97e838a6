//! The chat, for signed-in users only, with its last lines kept.
//!
//! Connect to `/ws/auth-chat/{channel}` with the token the application
//! gave its user: an `Authorization: Bearer TOKEN` header, a `session`
//! cookie, or `?token=TOKEN` (a browser cannot set headers on a
//! WebSocket). `on-open` asks the application who that is: a `GET` of
//! `$AUTH_CHAT_URL` with `Authorization: Bearer TOKEN`.
//! - 200 with `{"user":"NAME"}`: the connection opens as NAME.
//! - 401 or 403: refused with 401, before the upgrade.
//! - Anything else (the service down, hanging past the outbound timeout,
//!   a 5xx, a body that is not that JSON): refused with 503. Why is logged,
//!   never told to the client.
//!
//! A text message is a line: published to the channel as
//! `{"from":NAME,"message":TEXT,"channel":CH,"seq":N}` and kept in the
//! plugin's durable state, so that a new member first gets the channel's
//! last [`KEPT`] lines, oldest first. `seq` numbers a channel's lines; it
//! comes from `state-increment`, atomic across instances and nodes.

use serde::{Deserialize, Serialize};
use wsgate_sdk::{
    ConnectionId, Listener, LogLevel, Message, OpenDecision, Request, export_listener, host, log,
};

mod auth;

/// Lines kept per channel.
pub const KEPT: u64 = 20;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Line {
    from: String,
    message: String,
    channel: String,
    seq: u64,
}

/// The key counting a channel's lines.
fn seq_key(channel: &str) -> String {
    format!("seq:{channel}")
}

/// Line `seq` of a channel lives in one of [`KEPT`] slots, so a channel
/// holds at most that many lines; a slot's line says which `seq` it is, so
/// a slot overwritten meanwhile is never shown as an older line.
fn line_key(channel: &str, seq: u64) -> String {
    format!("line:{}:{channel}", seq % KEPT)
}

fn identity(conn: ConnectionId) -> Option<(String, String)> {
    let user = host::get_attribute(conn, "user").ok()??;
    let channel = host::get_attribute(conn, "channel").ok()??;
    Some((user, channel))
}

fn as_message(line: &Line) -> Message {
    Message::text(serde_json::to_string(line).expect("a line serializes"))
}

/// Sends `conn` the channel's kept lines, oldest first.
fn replay(conn: ConnectionId, channel: &str) {
    let last = host::state_get(&seq_key(channel))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    for seq in last.saturating_sub(KEPT - 1).max(1)..=last {
        let Some(bytes) = host::state_get(&line_key(channel, seq)) else {
            continue;
        };
        match serde_json::from_slice::<Line>(&bytes) {
            Ok(line) if line.seq == seq => {
                let _ = host::send(conn, &as_message(&line));
            }
            _ => {}
        }
    }
}

/// Numbers a line, keeps it, and publishes it.
fn say(user: &str, channel: &str, message: &str) {
    let seq = match host::state_increment(&seq_key(channel), 1) {
        Ok(seq) => seq as u64,
        Err(e) => {
            log(
                LogLevel::Error,
                format!("cannot number a line in {channel}: {e:?}"),
            );
            return;
        }
    };
    let line = Line {
        from: user.to_owned(),
        message: message.to_owned(),
        channel: channel.to_owned(),
        seq,
    };
    let bytes = serde_json::to_vec(&line).expect("a line serializes");
    if let Err(e) = host::state_set(&line_key(channel, seq), Some(&bytes)) {
        log(
            LogLevel::Warn,
            format!("line {seq} of {channel} not kept: {e:?}"),
        );
    }
    if let Err(e) = host::publish(channel, &as_message(&line), None) {
        log(
            LogLevel::Warn,
            format!("publish to {channel} failed: {e:?}"),
        );
    }
}

struct AuthChat;

impl Listener for AuthChat {
    fn on_open(conn: ConnectionId, req: Request) -> OpenDecision {
        let Some(channel) = req.param("channel").map(str::to_owned) else {
            return OpenDecision::reject(404, "no channel in the path");
        };
        let Some(token) = auth::token(&req) else {
            return OpenDecision::reject(401, "sign in first");
        };
        let user = match auth::who(&token) {
            Ok(user) => user,
            Err(auth::Refused::Unknown) => return OpenDecision::reject(401, "sign in first"),
            Err(auth::Refused::Unavailable(why)) => {
                log(LogLevel::Warn, format!("auth service unavailable: {why}"));
                return OpenDecision::reject(503, "try again later");
            }
        };
        let remembered = host::set_attribute(conn, "user", Some(&user))
            .and_then(|()| host::set_attribute(conn, "channel", Some(&channel)));
        if remembered.is_err() {
            return OpenDecision::reject(400, "channel name too long");
        }
        replay(conn, &channel);
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        let (user, channel) = identity(conn)?;
        say(&user, &channel, text);
        None
    }
}

export_listener!(AuthChat);

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_sdk::testing::{FakeHost, request};

    #[test]
    fn slots_cycle_and_lines_know_their_number() {
        assert_eq!(line_key("lobby", 1), line_key("lobby", 1 + KEPT));
        assert_ne!(line_key("lobby", 1), line_key("lobby", 2));
        let line = Line {
            from: "ann".into(),
            message: "hi".into(),
            channel: "lobby".into(),
            seq: 7,
        };
        let text = as_message(&line);
        assert_eq!(
            text.as_text().unwrap(),
            r#"{"from":"ann","message":"hi","channel":"lobby","seq":7}"#
        );
    }

    #[test]
    fn a_connection_without_a_token_is_refused() {
        let host = FakeHost::<AuthChat>::new();
        let req = request("/ws/auth-chat/lobby")
            .with_route("/ws/auth-chat/{channel}")
            .with_param("channel", "lobby");
        let refused = host.open(req).unwrap_err();
        assert_eq!(refused.status, 401);
    }
}
