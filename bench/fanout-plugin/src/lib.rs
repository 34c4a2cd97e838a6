//! Benchmark plugin.
//!
//! - On `/ws/fanout`: every text or binary message is broadcast to every
//!   connection of this plugin (the sender included) with one host call.
//! - On `/ws/fanout/{channel}` (routes in `fanout.toml`): the host subscribes
//!   the connection to `channel`; every message is published to that channel,
//!   the sender excepted (bench/cluster.sh's sender/receiver pairs), or with
//!   `?self=1` the sender included (bench/history.sh's publishers, which
//!   count their own messages coming back to keep a fixed number in flight).

use wsgate_sdk::{ConnectionId, Listener, Message, OpenDecision, Request, export_listener, host};

/// The attribute saying where a connection's messages go: `others:CHANNEL`
/// or `all:CHANNEL`. One attribute, so that each message costs one lookup
/// whichever the route.
const PUBLISH_TO: &str = "publish-to";

struct Fanout;

impl Listener for Fanout {
    fn on_open(conn: ConnectionId, req: Request) -> OpenDecision {
        if let Some(channel) = req.param("channel") {
            let who = if req.query_param("self") == Some("1") {
                "all"
            } else {
                "others"
            };
            let _ = host::set_attribute(conn, PUBLISH_TO, Some(&format!("{who}:{channel}")));
        }
        OpenDecision::Accept
    }

    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        let to = host::get_attribute(conn, PUBLISH_TO).ok().flatten();
        match to.as_deref().and_then(|to| to.split_once(':')) {
            Some(("all", channel)) => {
                let _ = host::publish(channel, &msg, None);
            }
            Some((_, channel)) => {
                let _ = host::publish(channel, &msg, Some(conn));
            }
            None => {
                host::broadcast(&msg, None);
            }
        }
        None
    }
}

export_listener!(Fanout);
