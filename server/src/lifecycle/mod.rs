//! A connection's life, from admission to its last hook, in one place.
//!
//! The open half admits the connection (server not shutting down, plugin
//! not quarantined, connection limits), registers it in its plugin's scope,
//! counts it onto its route (the first one calls `on-first-open`),
//! subscribes it to its `{channel}` and asks `on-open`. The close half calls
//! `on-close`, unregisters it and counts it off its route (the last one
//! calls `on-last-close`).
//!
//! Both halves run in one task per connection, spawned before `on-open` is
//! asked. The HTTP handler only waits for the decision, so it can be
//! dropped midway (a client that gives up during the handshake) without
//! cutting the sequence short: `on-open` still finishes, nobody takes the
//! upgrade, and the close half runs. Every `on-open` that accepted is
//! followed by exactly one `on-close`. What the task holds is owned by a
//! [`Registration`], whose drop runs the undo if the task itself is cut
//! short (a panic), so nothing can be left registered.

mod admission;
mod registration;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yawc::UpgradeFut;

pub use admission::{Admission, Slot};
use registration::Registration;

use crate::config::{Limits, Timeouts};
use crate::protocol::direct::PlainSocket;
use crate::protocol::session::Session;
use crate::protocol::{CloseCode, CloseFrame, ReassemblyBudget};
use crate::registry::{Connection, Corks, QueueLimits, Registry};
use crate::routing::{CHANNEL_PARAM, Route};
use crate::runtime::{OpenDecision, OpenRequest};

/// A handshake refused: the HTTP status and a reason safe to show the
/// client (never anything internal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: Cow<'static, str>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// What the open half decided.
pub enum Decision {
    /// Upgrade the connection.
    Accept,
    Refuse(Refusal),
}

/// Every connection's life, and what they share: the connection limits,
/// the registry, and the tasks that shutdown waits for.
pub struct Lifecycle {
    pub admission: Arc<Admission>,
    /// Bytes of partly received messages, for every connection together.
    pub reassembly: Arc<ReassemblyBudget>,
    registry: Arc<Registry>,
    limits: Limits,
    /// Shared with every connection's wire.
    timeouts: Arc<Timeouts>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The flushers of corked deliveries to plain-TCP clients; none
    /// outside a runtime (then every delivery wakes its connection's task).
    corks: Option<Arc<Corks>>,
}

/// A connection between its admission and its upgrade, as the HTTP
/// handler holds it. Dropping it (a refused or abandoned handshake) is
/// always safe: the connection's task notices and undoes what it did.
pub struct Opening {
    decision: oneshot::Receiver<Decision>,
    upgrade: oneshot::Sender<Upgraded>,
}

impl Opening {
    /// The plugin's decision, once `on-open` has run.
    pub async fn decision(&mut self) -> Decision {
        (&mut self.decision).await.unwrap_or_else(|_| {
            // The task ended without deciding: it panicked.
            Decision::Refuse(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the listener failed to open the connection",
            ))
        })
    }

    /// Hands the upgraded socket (once the 101 response is out) to the
    /// connection's task, with its number where it is plain TCP.
    pub fn upgraded(self, socket: UpgradeFut, plain: Option<PlainSocket>) {
        let _ = self.upgrade.send(Upgraded { socket, plain });
    }
}

impl Lifecycle {
    pub fn new(
        registry: Arc<Registry>,
        limits: &Limits,
        timeouts: &Timeouts,
        shutdown: CancellationToken,
    ) -> Lifecycle {
        Lifecycle {
            admission: Admission::new(limits.max_connections, limits.max_connections_per_ip),
            reassembly: ReassemblyBudget::new(limits.reassembly_bytes),
            registry,
            limits: limits.clone(),
            timeouts: Arc::new(timeouts.clone()),
            shutdown,
            tasks: TaskTracker::new(),
            corks: tokio::runtime::Handle::try_current()
                .is_ok()
                .then(Corks::start),
        }
    }

    /// Every connection's task, so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Admits a handshake that passed the HTTP checks and starts its
    /// connection's life: the open half runs at once, in the connection's
    /// own task.
    pub fn open(
        &self,
        route: Arc<Route>,
        request: OpenRequest,
        remote: SocketAddr,
    ) -> Result<Opening, Refusal> {
        if self.shutdown.is_cancelled() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server shutting down",
            ));
        }
        if route.listener.quarantine.is_active() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this service is unavailable",
            ));
        }
        let slot = self.admission.admit(remote.ip())?;
        let (conn, queue) = Connection::new(
            self.registry.next_id(),
            route.listener.name.clone(),
            route.pattern.clone(),
            request.path.as_str().into(),
            remote,
            QueueLimits {
                items: self.limits.send_queue,
                bytes: self.limits.send_queue_bytes,
            },
        );
        conn.hold_until_opened();
        let registration = Registration::new(conn, route, slot, self.tasks.clone());
        let (decided, decision) = oneshot::channel();
        let (upgrade, upgraded) = oneshot::channel();
        let session = SessionSettings {
            queue,
            timeouts: self.timeouts.clone(),
            message_rate: self.limits.messages_per_second,
            max_message_size: self.limits.max_message_size,
            reassembly: self.reassembly.clone(),
            corks: self.corks.clone(),
        };
        let channel = request
            .param(CHANNEL_PARAM)
            .filter(|c| c.len() <= self.limits.max_name_len)
            .map(str::to_owned);
        self.tasks.spawn(live(
            registration,
            request,
            channel,
            decided,
            upgraded,
            session,
        ));
        Ok(Opening { decision, upgrade })
    }
}

/// The socket once the 101 response is out.
struct Upgraded {
    socket: UpgradeFut,
    plain: Option<PlainSocket>,
}

/// What the conversation needs besides the connection.
struct SessionSettings {
    queue: crate::registry::Queue,
    timeouts: Arc<Timeouts>,
    message_rate: u32,
    max_message_size: usize,
    reassembly: Arc<ReassemblyBudget>,
    corks: Option<Arc<Corks>>,
}

/// One connection's whole life.
///
/// Not an `async fn`: the open half runs in a boxed future of its own, so
/// the task, which lives as long as the connection, holds the conversation
/// and the registration only, not also room for the handshake's request,
/// the socket before it became the conversation's, and this function's
/// arguments (which an `async fn` keeps to its end).
fn live(
    registration: Registration,
    request: OpenRequest,
    channel: Option<String>,
    decided: oneshot::Sender<Decision>,
    upgraded: oneshot::Receiver<Upgraded>,
    settings: SessionSettings,
) -> impl Future<Output = ()> + Send {
    let opening = Box::pin(open(
        registration,
        request,
        channel,
        decided,
        upgraded,
        settings,
    ));
    async move {
        // `let ... else`, not `if let`: the matched value of an `if let`
        // would be kept, beside the conversation it holds, until its end.
        let Some((registration, conversation)) = opening.await else {
            return;
        };
        let over = conversation.await;
        registration.close(over).await;
    }
}

/// The open half, up to the upgraded socket: the registration and the
/// conversation to run, or `None` when the connection ended first (refused,
/// failed, or given up by the client), its undo done.
async fn open(
    mut registration: Registration,
    request: OpenRequest,
    channel: Option<String>,
    decided: oneshot::Sender<Decision>,
    upgraded: oneshot::Receiver<Upgraded>,
    settings: SessionSettings,
) -> Option<(Registration, impl Future<Output = CloseFrame> + Send)> {
    let greeting = match registration.open(request, channel).await {
        Ok(OpenDecision::Accept) => None,
        Ok(OpenDecision::Greet(msg)) if msg.len() > settings.max_message_size => {
            tracing::warn!(plugin = %registration.route().listener.name,
                "on-open greeted with {} bytes, over limits.max_message_size; refused", msg.len());
            registration.opened();
            let _ = decided.send(Decision::Refuse(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the listener failed to open the connection",
            )));
            let failed = CloseFrame::new(CloseCode::INTERNAL_ERROR, "internal error");
            registration.close(failed).await;
            return None;
        }
        Ok(OpenDecision::Greet(msg)) => Some(msg),
        Ok(OpenDecision::Reject { status, reason }) => {
            let _ = decided.send(Decision::Refuse(rejection(&registration, status, reason)));
            registration.forget().await;
            return None;
        }
        Err(failure) => {
            let refusal = Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the listener failed to open the connection",
            );
            let _ = decided.send(Decision::Refuse(refusal));
            let listener = registration.route().listener.clone();
            Box::pin(listener.on_error(registration.conn().id, &failure)).await;
            registration.forget().await;
            return None;
        }
    };
    registration.opened();
    if decided.send(Decision::Accept).is_err() {
        // The client gave up during the handshake.
        registration.close(CloseFrame::abnormal()).await;
        return None;
    }
    let Upgraded { socket, plain } = match upgraded.await {
        Ok(upgraded) => upgraded,
        Err(_) => {
            registration.close(CloseFrame::abnormal()).await;
            return None;
        }
    };
    let socket = match socket.await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(conn = registration.conn().id, "upgrade failed: {e}");
            registration.close(CloseFrame::abnormal()).await;
            return None;
        }
    };
    let conn = registration.conn().clone();
    let listener = registration.route().listener.clone();
    listener.metrics.connections_opened.inc();
    let session = Session {
        conn,
        queue: settings.queue,
        greeting,
        listener,
        timeouts: settings.timeouts,
        message_rate: settings.message_rate,
        max_message_size: settings.max_message_size,
        reassembly: settings.reassembly,
        direct: plain.zip(settings.corks),
    };
    Some((registration, session.run(socket)))
}

/// A plugin's rejection as an HTTP refusal; a status outside 400-599 is a
/// plugin bug, answered 500.
fn rejection(registration: &Registration, status: u16, reason: String) -> Refusal {
    match StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
    {
        Some(status) => Refusal::new(status, reason),
        None => {
            tracing::warn!(plugin = %registration.route().listener.name, status,
                "on-open rejected with a status outside 400-599; answering 500");
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "connection refused")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use crate::protocol::session::Session;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, G, R>(_: fn(A, B, C, D, E, G) -> R) -> usize {
        size_of::<R>()
    }

    /// An open connection's task lives as long as the connection: it holds
    /// the conversation and little else, not the handshake's request, the
    /// socket as it was before the upgrade, or `live`'s arguments.
    #[test]
    fn a_connections_task_is_its_conversation_and_little_else() {
        fn conversation<A, B, R>(_: fn(A, B) -> R) -> usize {
            size_of::<R>()
        }
        let task = future_size(super::live);
        let conversation = conversation(Session::run);
        assert!(
            task <= conversation + 128,
            "{task} bytes for a conversation of {conversation}"
        );
    }
}
