//! The hooks a plugin exports, in the server's own types. The types
//! generated from the WIT stay inside `runtime/`: they are converted here,
//! by move, on their way in and out of a call, so the rest of the server
//! never depends on the bindings (and a WIT change stops at this module).

use std::fmt;

use super::bindings::{self, wsgate::plugin::types};
use super::pool::Instance;
use crate::protocol::{CloseFrame, Message};
use crate::registry::ConnId;

/// One of the hooks a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Open,
    Message,
    Close,
    FirstOpen,
    LastClose,
    Push,
    Timer,
    /// After a hook for a connection failed: the seeds' `onError`.
    Error,
    UpstreamOpen,
    UpstreamMessage,
    UpstreamClose,
    /// A burst of data messages in one call, where the plugin exports it.
    Messages,
}

impl Hook {
    /// Every hook, in the order of [`Hook::index`].
    pub const ALL: [Hook; 12] = [
        Hook::Open,
        Hook::Message,
        Hook::Close,
        Hook::FirstOpen,
        Hook::LastClose,
        Hook::Push,
        Hook::Timer,
        Hook::Error,
        Hook::UpstreamOpen,
        Hook::UpstreamMessage,
        Hook::UpstreamClose,
        Hook::Messages,
    ];

    /// The hook's name in the WIT, as logs and metric labels give it.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Open => "on-open",
            Hook::Message => "on-message",
            Hook::Close => "on-close",
            Hook::FirstOpen => "on-first-open",
            Hook::LastClose => "on-last-close",
            Hook::Push => "on-push",
            Hook::Timer => "on-timer",
            Hook::Error => "on-error",
            Hook::UpstreamOpen => "on-upstream-open",
            Hook::UpstreamMessage => "on-upstream-message",
            Hook::UpstreamClose => "on-upstream-close",
            Hook::Messages => "on-messages",
        }
    }

    /// Its position in [`Hook::ALL`], for per-hook tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Every hook's name, in the order of [`Hook::ALL`].
    pub fn names() -> [&'static str; 12] {
        Hook::ALL.map(Hook::name)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The HTTP upgrade request as `on-open` sees it.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// The request path, e.g. `/ws/chat/lobby`.
    pub path: String,
    /// The route pattern that matched, e.g. `/ws/chat/{channel}`.
    pub route: String,
    /// Values of the pattern's parameters.
    pub params: Vec<(String, String)>,
    /// Percent-decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<(String, String)>,
    /// The client's address, `ip:port`.
    pub remote_addr: String,
    /// Subprotocols the client offered.
    pub subprotocols: Vec<String>,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
}

impl OpenRequest {
    /// The value of route parameter `name`, if the route has one.
    pub fn param(&self, name: &str) -> Option<&str> {
        let (_, value) = self.params.iter().find(|(k, _)| k == name)?;
        Some(value)
    }
}

/// What `on-open` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenDecision {
    Accept,
    /// Accept, and send this message before anything else.
    Greet(Message),
    /// Answer the handshake with this HTTP status (meant to be 400-599).
    Reject {
        status: u16,
        reason: String,
    },
}

impl From<OpenRequest> for types::Request {
    fn from(r: OpenRequest) -> Self {
        types::Request {
            path: r.path,
            route: r.route,
            params: r.params,
            query: r.query,
            headers: r.headers,
            cookies: r.cookies,
            remote_addr: r.remote_addr,
            subprotocols: r.subprotocols,
            protocol: r.protocol,
        }
    }
}

impl From<bindings::OpenDecision> for OpenDecision {
    fn from(d: bindings::OpenDecision) -> Self {
        match d {
            bindings::OpenDecision::Accept => OpenDecision::Accept,
            bindings::OpenDecision::Greet(msg) => OpenDecision::Greet(msg.into()),
            bindings::OpenDecision::Reject(r) => OpenDecision::Reject {
                status: r.status,
                reason: r.reason,
            },
        }
    }
}

/// A guest's message as the server's: the string or vector becomes the
/// payload without a copy.
impl From<bindings::Message> for Message {
    fn from(msg: bindings::Message) -> Self {
        match msg {
            bindings::Message::Text(text) => Message::text(text),
            bindings::Message::Binary(bytes) => Message::Binary(bytes.into()),
        }
    }
}

/// The server's message as the guest's: a copy only when the payload is
/// shared (a slice of a read buffer, a fanned-out message).
impl From<Message> for bindings::Message {
    fn from(msg: Message) -> Self {
        match msg {
            Message::Text(text) => bindings::Message::Text(text.into_string()),
            Message::Binary(bytes) => bindings::Message::Binary(bytes.into()),
        }
    }
}

/// Each hook called on one instance, converting at the edge.
impl Instance {
    pub async fn on_open(
        &mut self,
        conn: ConnId,
        req: OpenRequest,
    ) -> wasmtime::Result<OpenDecision> {
        let hooks = &self.listener;
        let req = req.into();
        Ok(hooks
            .call_on_open(&mut self.store, conn, &req)
            .await?
            .into())
    }

    pub async fn on_message(
        &mut self,
        conn: ConnId,
        msg: Message,
    ) -> wasmtime::Result<Option<Message>> {
        let hooks = &self.listener;
        let msg = msg.into();
        let reply = hooks.call_on_message(&mut self.store, conn, &msg).await?;
        Ok(reply.map(Message::from))
    }

    /// `on-packed-messages` or `on-messages`, which the caller calls only
    /// where one is exported: the results of the messages the guest
    /// handled, in order.
    pub async fn on_messages(
        &mut self,
        conn: ConnId,
        msgs: &[Message],
    ) -> wasmtime::Result<Vec<Option<Message>>> {
        let Some(hooks) = &self.batch else {
            wasmtime::bail!("on-messages is not exported");
        };
        hooks.call(&mut self.store, conn, msgs).await
    }

    pub async fn on_close(&mut self, conn: ConnId, close: CloseFrame) -> wasmtime::Result<()> {
        let hooks = &self.listener;
        let code = close.code.get();
        hooks
            .call_on_close(&mut self.store, conn, code, &close.reason)
            .await
    }

    pub async fn on_first_open(&mut self, route: &str) -> wasmtime::Result<()> {
        let hooks = &self.listener;
        hooks.call_on_first_open(&mut self.store, route).await
    }

    pub async fn on_last_close(&mut self, route: &str) -> wasmtime::Result<()> {
        let hooks = &self.listener;
        hooks.call_on_last_close(&mut self.store, route).await
    }

    pub async fn on_push(&mut self, payload: Message) -> wasmtime::Result<()> {
        let hooks = &self.listener;
        let payload = payload.into();
        hooks.call_on_push(&mut self.store, &payload).await
    }

    pub async fn on_timer(&mut self, id: u64) -> wasmtime::Result<()> {
        let hooks = &self.listener;
        hooks.call_on_timer(&mut self.store, id).await
    }

    /// `on-error`, where exported; `Ok(false)` where not.
    pub async fn on_error(&mut self, conn: ConnId, detail: &str) -> wasmtime::Result<bool> {
        let Some(hooks) = &self.errors else {
            return Ok(false);
        };
        hooks.call_on_error(&mut self.store, conn, detail).await?;
        Ok(true)
    }

    /// The upstream hooks, where exported (a plugin without them cannot
    /// have opened an upstream: `upstream-connect` refuses it).
    pub async fn on_upstream_open(&mut self, id: u64) -> wasmtime::Result<()> {
        match &self.upstream {
            Some(hooks) => hooks.call_on_upstream_open(&mut self.store, id).await,
            None => Ok(()),
        }
    }

    pub async fn on_upstream_message(&mut self, id: u64, msg: Message) -> wasmtime::Result<()> {
        match &self.upstream {
            Some(hooks) => {
                let msg = msg.into();
                hooks
                    .call_on_upstream_message(&mut self.store, id, &msg)
                    .await
            }
            None => Ok(()),
        }
    }

    pub async fn on_upstream_close(&mut self, id: u64, close: CloseFrame) -> wasmtime::Result<()> {
        match &self.upstream {
            Some(hooks) => {
                let code = close.code.get();
                hooks
                    .call_on_upstream_close(&mut self.store, id, code, &close.reason)
                    .await
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_agree() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(hook.index(), i);
        }
        assert_eq!(Hook::names()[Hook::Timer.index()], "on-timer");
        assert_eq!(Hook::Open.to_string(), "on-open");
    }

    #[test]
    fn messages_convert_both_ways() {
        let text = bindings::Message::Text("héllo".into());
        let back = bindings::Message::from(Message::from(text));
        assert!(matches!(back, bindings::Message::Text(t) if t == "héllo"));
        let binary = bindings::Message::Binary(vec![0, 159, 255]);
        let back = bindings::Message::from(Message::from(binary));
        assert!(matches!(back, bindings::Message::Binary(b) if b == [0, 159, 255]));
    }
}
