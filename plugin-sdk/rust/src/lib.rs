//! Write wsgate listeners in Rust.
//!
//! A listener is a type implementing [`Listener`]; every hook has a default,
//! so implement only what you need, then export it with
//! [`export_listener!`]. Build with `cargo build --target wasm32-wasip2` and
//! drop the `.wasm` into the server's plugin directory.
//!
//! ```ignore
//! use wsgate_sdk::{export_listener, ConnectionId, Listener, Message};
//!
//! struct Echo;
//! impl Listener for Echo {
//!     fn on_message(_conn: ConnectionId, msg: Message) -> Option<Message> {
//!         Some(msg)
//!     }
//! }
//! export_listener!(Echo);
//! ```
//!
//! Hooks are associated functions, not methods: the host runs a small pool
//! of instances and any of them may serve any event, so per-connection data
//! belongs in [`host::set_attribute`] and plugin-wide data in
//! [`host::state_set`], never in statics.

mod batch;
pub mod history;
pub mod http;
mod packed;
mod position;
mod request;
#[cfg(feature = "testing")]
pub mod testing;

/// The raw bindings generated from `wit/wsgate.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin-packed",
        pub_export_macro: true,
        default_bindings_module: "wsgate_sdk::bindings",
        export_macro_name: "export_raw",
        // Tests compare what a listener sent and returned.
        additional_derives: [PartialEq, Eq],
    });
}

/// Host calls: send, broadcast, close, channels, tags, history, presence,
/// state, upstreams, timers, log. [`history`] builds on the history calls.
///
/// The generated calls, except that those which deliver to connections or
/// close one also end the current `on-messages` batch after this message
/// (see `batch`). Call the host through this module, not through
/// [`bindings`], or a burst's replies may overtake what was sent.
#[cfg(not(feature = "testing"))]
pub mod host {
    pub use crate::bindings::wsgate::plugin::host::*;

    use crate::batch::delivered;
    use crate::bindings::wsgate::plugin::host as raw;

    pub fn send(conn: ConnectionId, msg: &Message) -> Result<(), Error> {
        delivered();
        raw::send(conn, msg)
    }

    pub fn broadcast(msg: &Message, except: Option<ConnectionId>) -> u32 {
        delivered();
        raw::broadcast(msg, except)
    }

    pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), Error> {
        delivered();
        raw::close(conn, code, reason)
    }

    pub fn publish(
        channel: &str,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> Result<u32, Error> {
        delivered();
        raw::publish(channel, msg, except)
    }

    pub fn publish_recorded(
        channel: &str,
        msg: &Publication,
        except: Option<ConnectionId>,
    ) -> Result<Published, HistoryError> {
        delivered();
        raw::publish_recorded(channel, msg, except)
    }

    pub fn send_to_tag(
        tag: &str,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> Result<u32, Error> {
        delivered();
        raw::send_to_tag(tag, msg, except)
    }
}
pub use bindings::wsgate::plugin::types::{
    ConnectionId, Error, HistoryEntry, HistoryError, HistoryPage, LogLevel, Message, OpenDecision,
    Position, PositionedText, Publication, Published, Rejection, Request, StateError,
    UpstreamError, UpstreamId,
};
pub use position::ParsePositionError;
/// Host calls, answered by the in-memory host of [`testing`].
#[cfg(feature = "testing")]
pub use testing::fake_host as host;

use bindings::exports::wsgate::plugin::batch_listener::Guest as BatchGuest;
use bindings::exports::wsgate::plugin::error_listener::Guest as ErrorGuest;
use bindings::exports::wsgate::plugin::listener::Guest;
use bindings::exports::wsgate::plugin::packed_batch_listener::{
    Guest as PackedGuest, PackedMessages,
};
use bindings::exports::wsgate::plugin::upstream_listener::Guest as UpstreamGuest;

/// The lifecycle hooks of a listener. All have defaults: accept every
/// connection and ignore every event.
pub trait Listener {
    /// Decide on a connection before the WebSocket upgrade.
    fn on_open(_conn: ConnectionId, _req: Request) -> OpenDecision {
        OpenDecision::Accept
    }
    /// A message from the client; `Some(reply)` is sent back to it.
    fn on_message(_conn: ConnectionId, _msg: Message) -> Option<Message> {
        None
    }
    /// The connection closed with `code` (1006 when the peer vanished).
    fn on_close(_conn: ConnectionId, _code: u16, _reason: String) {}
    /// The first connection on `route` is about to open.
    fn on_first_open(_route: String) {}
    /// The last connection on `route` has closed.
    fn on_last_close(_route: String) {}
    /// A payload pushed from outside through the server's publish API.
    fn on_push(_payload: Message) {}
    /// A timer set with [`host::set_timer`] fired.
    fn on_timer(_id: u64) {}
    /// A hook for `conn` trapped or ran past its deadline and the host
    /// closed the connection; `detail` says which hook and why.
    fn on_error(_conn: ConnectionId, _detail: String) {}
    /// An upstream opened with [`host::upstream_connect`] is connected.
    fn on_upstream_open(_id: UpstreamId) {}
    /// A message from an upstream.
    fn on_upstream_message(_id: UpstreamId, _msg: Message) {}
    /// An upstream closed, or could not connect (1006).
    fn on_upstream_close(_id: UpstreamId, _code: u16, _reason: String) {}
}

impl<T: Listener> Guest for T {
    fn on_open(conn: ConnectionId, req: Request) -> OpenDecision {
        T::on_open(conn, req)
    }
    fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
        T::on_message(conn, msg)
    }
    fn on_close(conn: ConnectionId, code: u16, reason: String) {
        T::on_close(conn, code, reason)
    }
    fn on_first_open(route: String) {
        T::on_first_open(route)
    }
    fn on_last_close(route: String) {
        T::on_last_close(route)
    }
    fn on_push(payload: Message) {
        T::on_push(payload)
    }
    fn on_timer(id: u64) {
        T::on_timer(id)
    }
}

impl<T: Listener> BatchGuest for T {
    fn on_messages(conn: ConnectionId, msgs: Vec<Message>) -> Vec<Option<Message>> {
        batch::handle(msgs, |msg| T::on_message(conn, msg))
    }
}

impl<T: Listener> PackedGuest for T {
    fn on_packed_messages(conn: ConnectionId, msgs: PackedMessages) -> PackedMessages {
        batch::handle_packed(msgs, |msg| T::on_message(conn, msg))
    }
}

impl<T: Listener> ErrorGuest for T {
    fn on_error(conn: ConnectionId, detail: String) {
        T::on_error(conn, detail)
    }
}

impl<T: Listener> UpstreamGuest for T {
    fn on_upstream_open(id: UpstreamId) {
        T::on_upstream_open(id)
    }
    fn on_upstream_message(id: UpstreamId, msg: Message) {
        T::on_upstream_message(id, msg)
    }
    fn on_upstream_close(id: UpstreamId, code: u16, reason: String) {
        T::on_upstream_close(id, code, reason)
    }
}

/// Exports a [`Listener`] implementation as the plugin's hooks.
#[cfg(not(feature = "testing"))]
#[macro_export]
macro_rules! export_listener {
    ($listener:ident) => {
        $crate::bindings::export_raw!($listener with_types_in $crate::bindings);
    };
}

/// With `testing`, the crate is built natively for its tests, which drive
/// the listener through [`testing::FakeHost`]; the component's exports
/// would only break the native link (their names are not linker symbols).
#[cfg(feature = "testing")]
#[macro_export]
macro_rules! export_listener {
    ($listener:ident) => {};
}

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Message::Text(text.into())
    }
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Self {
        Message::Binary(bytes.into())
    }
    /// The text of a text message, `None` for binary.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t),
            Message::Binary(_) => None,
        }
    }
}

impl OpenDecision {
    /// Refuse the handshake with `status` (400-599) and a short reason.
    pub fn reject(status: u16, reason: impl Into<String>) -> Self {
        OpenDecision::Reject(Rejection {
            status,
            reason: reason.into(),
        })
    }
}

/// Logs through the host's tracing, under the plugin's own target.
pub fn log(level: LogLevel, msg: impl AsRef<str>) {
    host::log(level, msg.as_ref());
}
