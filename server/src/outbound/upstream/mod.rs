//! Outbound WebSocket connections a plugin opens (`upstream-connect`): the
//! host owns each upstream's socket as it owns a client's, with the same
//! limits, and tells the plugin what happens through its
//! `upstream-listener` hooks.
//!
//! Upstreams belong to the plugin, not to one version of it, as its timers
//! do: a reload re-points them at the new version ([`Upstreams::bind`]),
//! so a feed stays connected across a redeploy and its messages reach the
//! version in service. Removing the plugin closes them (1001), and so does
//! the server's shutdown.
//!
//! - `request.rs`: what a plugin may ask for (URL, subprotocols, headers);
//! - `connect.rs`: resolution through the policy, TCP, TLS, handshake;
//! - `tls.rs`: the TLS client configuration;
//! - `link.rs`: one upstream's handle and the task that owns its socket.

mod connect;
mod link;
mod request;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use connect::Failure;
pub use request::{Invalid, MAX_HEADER_BYTES, MAX_HEADERS, MAX_PROTOCOLS, MAX_URL_BYTES};

use self::link::{Dial, Link};
use self::request::UpstreamRequest;
use super::{Denied, OutboundPolicy};
use crate::config::{Limits, Timeouts};
use crate::metrics::UpstreamMetrics;
use crate::protocol::wire::Peer;
use crate::protocol::{CloseCode, CloseFrame, Message, ReassemblyBudget, close};
use crate::registry::{QueueLimits, queue};

/// A plugin's handle on one of its upstreams.
pub type UpstreamId = u64;

/// What happened to an upstream, for the plugin's hooks.
#[derive(Debug)]
pub enum UpstreamEvent {
    Open,
    Message(Message),
    /// It closed, or never opened (1006 and what went wrong).
    Close(CloseFrame),
}

/// Whatever hears upstream events: the plugin version in service. A
/// trait, so upstreams know nothing of listeners (which own the
/// environment that owns the upstreams).
pub trait UpstreamTarget: Send + Sync {
    /// Runs the event's hook; failures are the target's to log and count.
    fn deliver(
        self: Arc<Self>,
        id: UpstreamId,
        event: UpstreamEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Never upgrades: the target of upstreams bound to nothing yet.
struct Unbound;

impl UpstreamTarget for Unbound {
    fn deliver(
        self: Arc<Self>,
        _: UpstreamId,
        _: UpstreamEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

/// Why an upstream call did nothing: the WIT's `upstream-error`, in the
/// server's own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    InvalidUrl,
    Denied,
    LimitReached,
    UnknownUpstream,
    Closed,
    QueueFull,
    InvalidArgument,
}

/// How upstreams are run: a client connection's limits and timeouts, and
/// a few of their own.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Upstreams one plugin may hold at once (connecting, open or closing).
    pub max_upstreams: usize,
    /// The largest message either way.
    pub max_message_size: usize,
    /// What may wait to be written to one upstream.
    pub queue: QueueLimits,
    /// Pings, the idle deadline and the close handshake, as for clients.
    pub timeouts: Arc<Timeouts>,
    /// Resolution, TCP, TLS and the handshake together.
    pub connect_timeout: Duration,
    /// Whom `wss://` upstreams are trusted as: Mozilla's roots by default.
    pub tls: Arc<rustls::ClientConfig>,
}

impl UpstreamSettings {
    pub fn new(limits: &Limits, timeouts: &Timeouts) -> UpstreamSettings {
        UpstreamSettings {
            max_upstreams: limits.upstreams_per_plugin,
            max_message_size: limits.max_message_size,
            queue: QueueLimits {
                items: limits.send_queue,
                bytes: limits.send_queue_bytes,
            },
            timeouts: Arc::new(timeouts.clone()),
            connect_timeout: timeouts.upstream_connect,
            tls: tls::default_config(),
        }
    }
}

/// One plugin's upstreams.
pub struct Upstreams {
    plugin: Arc<str>,
    settings: UpstreamSettings,
    next: AtomicU64,
    links: Mutex<HashMap<UpstreamId, Arc<Link>>>,
    /// The version events go to: the newest one in service.
    target: Mutex<Weak<dyn UpstreamTarget>>,
    tasks: TaskTracker,
    /// The server is shutting down: no new upstreams.
    stopped: AtomicBool,
    /// Partly received messages of all the plugin's upstreams: each is
    /// held to the message size limit, so this is their sum.
    reassembly: Arc<ReassemblyBudget>,
    metrics: UpstreamMetrics,
}

impl Upstreams {
    pub fn new(plugin: &str, settings: UpstreamSettings) -> Arc<Upstreams> {
        let reassembly = settings
            .max_message_size
            .saturating_mul(settings.max_upstreams.max(1));
        Arc::new(Upstreams {
            plugin: Arc::from(plugin),
            metrics: UpstreamMetrics::new(plugin),
            reassembly: ReassemblyBudget::new(reassembly),
            settings,
            next: AtomicU64::new(0),
            links: Mutex::default(),
            target: Mutex::new(Weak::<Unbound>::new()),
            tasks: TaskTracker::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// Points events at `target`, the version now in service. A version
    /// without the upstream hooks could not hear them: the upstreams the
    /// plugin has open are closed.
    pub fn bind(&self, target: Weak<dyn UpstreamTarget>, has_hooks: bool) {
        *self.target.lock().unwrap() = target;
        if !has_hooks {
            self.abort_all("the plugin no longer has upstream hooks");
        }
    }

    fn current(&self) -> Option<Arc<dyn UpstreamTarget>> {
        self.target.lock().unwrap().upgrade()
    }

    /// Called when a version goes away: if it was the one in service (the
    /// plugin was stopped or removed, not replaced), its upstreams close.
    pub fn release<T: UpstreamTarget>(&self, version: &T) {
        let bound = self.target.lock().unwrap().as_ptr() as *const ();
        if std::ptr::eq(bound, (version as *const T).cast()) {
            self.abort_all("plugin removed");
        }
    }

    /// Starts opening an upstream: checks what can be checked now (the
    /// request, the policy by name, the cap) and leaves resolution,
    /// connecting and the handshake to the upstream's task.
    pub fn connect(
        self: &Arc<Self>,
        policy: &OutboundPolicy,
        url: &str,
        protocols: Vec<String>,
        headers: Vec<(String, String)>,
    ) -> Result<UpstreamId, CallError> {
        let request = UpstreamRequest::new(url, protocols, headers).map_err(|e| match e {
            Invalid::Url => CallError::InvalidUrl,
            Invalid::Argument => CallError::InvalidArgument,
        })?;
        let dest = policy.check(&request.url).map_err(|e| match e {
            Denied::BadUrl => CallError::InvalidUrl,
            e => {
                self.metrics.connect_failed("denied");
                tracing::debug!(plugin = %self.plugin, "upstream-connect denied: {e}");
                CallError::Denied
            }
        })?;
        if self.stopped.load(Ordering::Acquire) {
            return Err(CallError::Denied);
        }
        let (tx, queue) = queue(self.settings.queue);
        let link = {
            let mut links = self.links.lock().unwrap();
            if links.len() >= self.settings.max_upstreams {
                return Err(CallError::LimitReached);
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let link = Arc::new(Link::new(id, tx, self.settings.timeouts.close));
            links.insert(id, link.clone());
            link
        };
        self.metrics.open.inc();
        let id = link.id;
        let dial = Dial {
            request,
            dest,
            policy: policy.clone(),
        };
        self.tasks.spawn(link::run(self.clone(), link, queue, dial));
        Ok(id)
    }

    fn link(&self, id: UpstreamId) -> Result<Arc<Link>, CallError> {
        let links = self.links.lock().unwrap();
        links.get(&id).cloned().ok_or(CallError::UnknownUpstream)
    }

    /// Queues a message, no bigger than a client may send.
    pub fn send(&self, id: UpstreamId, msg: Message) -> Result<(), CallError> {
        if msg.len() > self.settings.max_message_size {
            return Err(CallError::InvalidArgument);
        }
        self.link(id)?.send(msg)
    }

    /// Starts the close handshake with the plugin's code and reason.
    pub fn close(&self, id: UpstreamId, code: u16, reason: &str) -> Result<(), CallError> {
        let code = close::validate(code, reason).map_err(|_| CallError::InvalidArgument)?;
        self.link(id)?.close(CloseFrame::new(code, reason))
    }

    /// The upstreams connecting or open, in the order they were opened.
    pub fn ids(&self) -> Vec<UpstreamId> {
        let links = self.links.lock().unwrap();
        let mut ids: Vec<UpstreamId> = links
            .values()
            .filter(|link| !link.is_closing())
            .map(|link| link.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Upstreams held: connecting, open or closing.
    pub fn count(&self) -> usize {
        self.links.lock().unwrap().len()
    }

    /// An upstream's task is over: its slot is free.
    fn forget(&self, id: UpstreamId) {
        if self.links.lock().unwrap().remove(&id).is_some() {
            self.metrics.open.dec();
        }
    }

    async fn deliver(&self, id: UpstreamId, event: UpstreamEvent) {
        if let Some(target) = self.current() {
            target.deliver(id, event).await;
        }
    }

    /// Closes every upstream now with 1001.
    fn abort_all(&self, reason: &str) {
        let links: Vec<Arc<Link>> = self.links.lock().unwrap().values().cloned().collect();
        for link in links {
            link.abort(CloseFrame::new(CloseCode::GOING_AWAY, reason));
        }
    }

    /// The server is shutting down: no new upstreams, the open ones closed
    /// (1001), and their close handshakes waited for, up to `bound`.
    pub async fn stop(&self, bound: Duration) {
        self.stopped.store(true, Ordering::Release);
        self.abort_all("server shutting down");
        self.tasks.close();
        if tokio::time::timeout(bound, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(plugin = %self.plugin, "some upstreams did not close within {bound:?}");
        }
    }
}

#[cfg(test)]
mod tests;
