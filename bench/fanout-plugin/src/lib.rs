//! Benchmark plugin.
//!
//! - On `/ws/fanout`: every text or binary message is broadcast to every
//!   connection of this plugin (the sender included) with one host call.
//! - On `/ws/fanout/{channel}` (routes in `fanout.toml`): the host subscribes
//!   the connection to `channel`; every message is published to that channel,
//!   the sender excepted (bench/cluster.sh's sender/receiver pairs).

use wsgate_sdk::{ConnectionId, Listener, Message, OpenDecision, Request, export_listener, host};

/// The attribute holding a connection's channel.
const CHANNEL: &str = "channel";

struct Fanout;

impl Listener for Fanout {
    fn on_open(conn: ConnectionId, req: Request) -> OpenDecision {
        if let Some(channel) = req.param(CHANNEL) {
            let _ = host::set_attribute(conn, CHANNEL, Some(channel));
        }
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        match host::get_attribute(conn, CHANNEL) {
            Ok(Some(channel)) => {
                let _ = host::publish(&channel, &msg, Some(conn));
            }
            _ => {
                host::broadcast(&msg, None);
            }
        }
        None
    }
}

export_listener!(Fanout);
