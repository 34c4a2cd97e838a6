//! Benchmark plugin: broadcasts every text or binary message to every
//! connection of this plugin (the sender included) with one host call.

use wsgate_sdk::{ConnectionId, Listener, Message, export_listener, host};

struct Fanout;

impl Listener for Fanout {
    fn on_message(_conn: ConnectionId, msg: Message) -> Option<Message> {
        host::broadcast(&msg, None);
        None
    }
}

export_listener!(Fanout);
