//! Echoes every message, text or binary, back to its sender.

use wsgate_sdk::{ConnectionId, Listener, Message, export_listener};

struct Echo;

impl Listener for Echo {
    fn on_message(_conn: ConnectionId, msg: Message) -> Option<Message> {
        Some(msg)
    }
}

export_listener!(Echo);
