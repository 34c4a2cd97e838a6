//! A connection's place in the server, and its undo.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::Slot;
use crate::protocol::CloseFrame;
use crate::registry::{Connection, Listening};
use crate::routing::Route;
use crate::runtime::{HookError, OpenDecision, OpenRequest};

/// Everything a connection holds: its admission slot, its registration in
/// its plugin's scope, its count on its route and, once `on-open` accepted
/// it, the `on-close` it is owed. Given back with [`forget`](Self::forget)
/// (refused before it opened) or [`close`](Self::close); dropped without
/// either (its task was cut short), it gives everything back in a task of
/// its own.
pub struct Registration {
    held: Option<Held>,
}

struct Held {
    conn: Arc<Connection>,
    /// In a cluster, until the node hears broadcasts from other nodes.
    listening: Option<Listening>,
    route: Arc<Route>,
    /// Counted onto its route: it must be counted off.
    counted: bool,
    /// `on-open` accepted it: `on-close` must follow.
    opened: bool,
    /// Dropped last, once the connection is gone from everywhere.
    _slot: Slot,
    tasks: TaskTracker,
}

impl Registration {
    /// Registers `conn` in its plugin's scope, so host calls from `on-open`
    /// already find it.
    pub fn new(
        conn: Arc<Connection>,
        route: Arc<Route>,
        slot: Slot,
        tasks: TaskTracker,
    ) -> Registration {
        let listening = route.listener.env.scope.insert(conn.clone());
        Registration {
            held: Some(Held {
                conn,
                listening,
                route,
                counted: false,
                opened: false,
                _slot: slot,
                tasks,
            }),
        }
    }

    fn held(&self) -> &Held {
        self.held.as_ref().expect("held until given back")
    }

    pub fn conn(&self) -> &Arc<Connection> {
        &self.held().conn
    }

    pub fn route(&self) -> &Arc<Route> {
        &self.held().route
    }

    /// The open half after registration: counts the connection onto its
    /// route (the first one calls `on-first-open`), subscribes it to its
    /// route's channel, and asks `on-open`. In a cluster it first waits
    /// (bounded) until the node hears what other nodes deliver to the
    /// plugin and to that channel, so that nothing sent to the connection
    /// after its handshake completed is missed.
    pub async fn open(
        &mut self,
        request: OpenRequest,
        channel: Option<String>,
    ) -> Result<OpenDecision, HookError> {
        let held = self.held.as_mut().expect("held until given back");
        enter_route(&held.route).await;
        held.counted = true;
        let (conn, listener) = (&held.conn, &held.route.listener);
        let joined = channel.and_then(|channel| listener.env.scope.subscribe(conn, &channel));
        for listening in [held.listening.take(), joined].into_iter().flatten() {
            listening.await;
        }
        let decision = listener.on_open(conn.id, request).await;
        conn.opened();
        decision
    }

    /// `on-open` accepted the connection: from now on it is owed an
    /// `on-close`.
    pub fn opened(&mut self) {
        self.held.as_mut().expect("held until given back").opened = true;
    }

    /// Undoes a connection refused before it opened: no `on-close`.
    pub fn forget(self) -> Ending {
        self.end(None)
    }

    /// The close half: `on-close` with how the connection ended, then
    /// unregistration and `on-last-close` for the route's last.
    pub fn close(self, close: CloseFrame) -> Ending {
        self.end(Some(close))
    }

    fn end(mut self, close: Option<CloseFrame>) -> Ending {
        let held = self.held.take().expect("held until given back");
        Box::pin(held.end(close))
    }
}

/// The close half, boxed: it runs once, and inline it would add to the size
/// of every connection's task for as long as the connection is open.
pub type Ending = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Held {
    async fn end(self, close: Option<CloseFrame>) {
        let listener = &self.route.listener;
        self.conn.mark_closing();
        if self.opened {
            let close = close.unwrap_or_else(CloseFrame::abnormal);
            let _ = listener.on_close(self.conn.id, close).await;
        }
        listener.env.scope.remove(self.conn.id);
        if self.counted {
            leave_route(&self.route).await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Without a runtime the process is ending, and nothing is left to undo.
        if let Some(held) = self.held.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let tasks = held.tasks.clone();
            tasks.spawn(held.end(None));
        }
    }
}

/// Counts a connection onto its route, calling `on-first-open` for the first.
async fn enter_route(route: &Route) {
    let mut open = route.open.lock().await;
    if *open == 0 {
        let _ = route.listener.on_first_open(&route.pattern).await;
    }
    *open += 1;
}

/// Counts a connection off its route, calling `on-last-close` for the last.
async fn leave_route(route: &Route) {
    let mut open = route.open.lock().await;
    *open = open.saturating_sub(1);
    if *open == 0 {
        let _ = route.listener.on_last_close(&route.pattern).await;
    }
}
