//! {{name}}: a wsgate listener. It greets each new connection and answers
//! every text message; binary messages come back unchanged.
//!
//! The host calls these hooks; `wsgate_sdk::host` is how the listener acts
//! (send, broadcast, channels, tags, state, timers). Hooks are associated
//! functions, not methods: the server runs several instances, so keep data
//! in `host::set_attribute` (per connection) or `host::state_set` (shared),
//! never in statics.

use wsgate_sdk::{ConnectionId, Listener, Message, OpenDecision, Request, export_listener};

pub struct Plugin;

impl Listener for Plugin {
    fn on_open(_conn: ConnectionId, _req: Request) -> OpenDecision {
        OpenDecision::Greet(Message::Text("welcome to {{name}}".into()))
    }

    fn on_message(_conn: ConnectionId, msg: Message) -> Option<Message> {
        match msg {
            Message::Text(text) => Some(Message::Text(format!("echo: {text}"))),
            binary => Some(binary),
        }
    }
}

export_listener!(Plugin);

/// Unit tests: the hooks against the SDK's in-memory host, no server.
#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_sdk::testing::{FakeHost, request};

    #[test]
    fn greets_then_answers() {
        let host = FakeHost::<Plugin>::new();
        let conn = host.open(request("/ws/{{name}}")).expect("accepted");
        assert_eq!(host.received_texts(conn), ["welcome to {{name}}"]);
        let reply = host.send_text(conn, "hello");
        assert_eq!(reply, Some(Message::Text("echo: hello".into())));
    }
}
