//! One loaded plugin version and its hooks. Every hook call runs on a
//! pooled instance under a deadline; a trap or overrun is confined to that
//! call: the instance is thrown away and the caller decides what to close.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::Trap;

use super::engine::EPOCH_TICK;
use super::env::PluginEnv;
use super::hook::{Hook, OpenDecision, OpenRequest};
use super::load_error::{LoadError, Stage};
use super::pool::{Instance, InstancePool};
use super::quarantine::Quarantine;
use super::timers::TimerTarget;
use crate::metrics::PluginMetrics;
use crate::outbound::upstream::{UpstreamEvent, UpstreamId, UpstreamTarget};
use crate::protocol::{CloseFrame, Message};
use crate::registry::{ConnId, Corked};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{hook} ran past its {timeout:?} deadline")]
    Deadline { hook: Hook, timeout: Duration },
    #[error("{hook} trapped: {detail}")]
    Trap { hook: Hook, detail: String },
    #[error("no instance could be created: {0}")]
    Instantiate(String),
}

pub struct Listener {
    pub name: Arc<str>,
    /// SHA-256 of the `.wasm` this version was built from.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub env: Arc<PluginEnv>,
    /// This plugin's Prometheus counters, resolved once.
    pub metrics: Arc<PluginMetrics>,
    /// Crash-loop protection for this version.
    pub quarantine: Quarantine,
    /// Where deliveries corked for its plain-TCP clients are flushed and
    /// counted: one for the version, so that each connection holds a
    /// pointer to it ([`crate::registry::Corked`]).
    pub corked: OnceLock<Arc<Corked>>,
    pool: InstancePool,
    hook_timeout: Duration,
}

impl Listener {
    pub fn new(
        hash: String,
        env: Arc<PluginEnv>,
        pool: InstancePool,
        hook_timeout: Duration,
    ) -> Arc<Listener> {
        let name = env.name.clone();
        let limits = &env.limits;
        let quarantine = Quarantine::new(
            limits.quarantine_after,
            limits.quarantine_window,
            limits.quarantine_backoff,
            limits.quarantine_max,
        );
        Arc::new(Listener {
            quarantine,
            corked: OnceLock::new(),
            metrics: PluginMetrics::new(&name, &Hook::names()),
            name,
            hash,
            loaded_at: SystemTime::now(),
            env,
            pool,
            hook_timeout,
        })
    }

    /// Puts this version in service: the plugin's timers fire into it, and
    /// its upstreams' events go to it, from now on. Called once it has
    /// started, so a version that fails to start never takes them from the
    /// one serving.
    pub fn activate(self: &Arc<Self>) {
        let target: Arc<dyn TimerTarget> = self.clone();
        self.env.timers.bind(Arc::downgrade(&target));
        let target: Arc<dyn UpstreamTarget> = self.clone();
        let hooks = self.pool.has_upstream_hooks();
        self.env.upstreams.bind(Arc::downgrade(&target), hooks);
    }

    /// Instantiates once up front, so a plugin that cannot start (a
    /// trapping start function, one past its deadline or memory) is refused
    /// at load time.
    pub async fn warm_up(&self) -> Result<(), LoadError> {
        let loan = self.pool.borrow().await.map_err(|e| {
            LoadError::new(Stage::Instantiate, format!("{e:#}")).with_hint(
                "its start-up code failed: it must start within timeouts.hook and limits.instance_memory",
            )
        })?;
        self.pool.give_back(loan);
        Ok(())
    }

    async fn call<R>(
        &self,
        hook: Hook,
        f: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, HookError> {
        let mut loan = self.pool.borrow().await.map_err(|e| {
            tracing::error!(plugin = %self.name, "cannot instantiate: {e:#}");
            HookError::Instantiate(format!("{e:#}"))
        })?;
        let start = Instant::now();
        loan.instance().begin_call(start + self.hook_timeout);
        // The epoch interrupts guest code at the deadline, but not a host
        // call the guest waits in (a WASI sleep or poll): a few ticks past
        // the deadline the call is dropped, abandoning the instance, so the
        // deadline holds whatever the guest waits on.
        // The cutoff's timer is armed only if the call waits at all: most
        // calls finish in their first poll, and a timer registered and
        // cancelled around each of them is a measurable share of a
        // message's cost.
        let result = {
            let mut call = std::pin::pin!(f(loan.instance()));
            match poll_once(call.as_mut()).await {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    let cutoff = start + self.hook_timeout + 5 * EPOCH_TICK;
                    tokio::time::timeout_at(cutoff.into(), call)
                        .await
                        .unwrap_or_else(|_| Err(wasmtime::Error::from(Trap::Interrupt)))
                }
            }
        };
        self.metrics.observe_hook(hook.index(), start.elapsed());
        match result {
            Ok(value) => {
                self.pool.give_back(loan);
                Ok(value)
            }
            Err(e) => {
                // `loan` is dropped here: a trapped instance is never reused.
                let err = if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    self.metrics.deadline_overruns.inc();
                    HookError::Deadline {
                        hook,
                        timeout: self.hook_timeout,
                    }
                } else {
                    self.metrics.traps.inc();
                    HookError::Trap {
                        hook,
                        detail: format!("{e:#}"),
                    }
                };
                if let Some(length) = self.quarantine.record() {
                    self.metrics.quarantines.inc();
                    tracing::error!(
                        plugin = %self.name,
                        "quarantined for {length:?} after {} crashes within {:?}: new connections get 503 meanwhile",
                        self.env.limits.quarantine_after,
                        self.env.limits.quarantine_window
                    );
                }
                tracing::warn!(plugin = %self.name, "{err}");
                Err(err)
            }
        }
    }

    pub async fn on_open(&self, conn: ConnId, req: OpenRequest) -> Result<OpenDecision, HookError> {
        self.call(Hook::Open, async move |i: &mut Instance| {
            i.on_open(conn, req).await
        })
        .await
    }

    pub async fn on_message(
        &self,
        conn: ConnId,
        msg: Message,
    ) -> Result<Option<Message>, HookError> {
        self.call(Hook::Message, async move |i: &mut Instance| {
            i.on_message(conn, msg).await
        })
        .await
    }

    /// Whether the plugin exports `on-messages`: a burst then costs one
    /// call ([`Listener::on_messages`]).
    pub fn has_batch(&self) -> bool {
        self.pool.has_batch()
    }

    /// A burst of `conn`'s messages in one call, where the plugin exports
    /// `on-messages`: the results of the first messages, at least one,
    /// in order (the plugin stops after a message that delivered; the
    /// caller hands the rest to the next call). A plugin that answers
    /// with no results, or more than it was given, broke the contract:
    /// that is a failed call, like a trap.
    pub async fn on_messages(
        &self,
        conn: ConnId,
        msgs: &[Message],
    ) -> Result<Vec<Option<Message>>, HookError> {
        self.call(Hook::Messages, async move |i: &mut Instance| {
            let given = msgs.len();
            let results = i.on_messages(conn, msgs).await?;
            if results.is_empty() || results.len() > given {
                wasmtime::bail!(
                    "on-messages returned {} results for {given} messages (1 to {given} allowed)",
                    results.len()
                );
            }
            Ok(results)
        })
        .await
    }

    pub async fn on_close(&self, conn: ConnId, close: CloseFrame) -> Result<(), HookError> {
        self.call(Hook::Close, async move |i: &mut Instance| {
            i.on_close(conn, close).await
        })
        .await
    }

    pub async fn on_first_open(&self, route: &str) -> Result<(), HookError> {
        self.call(Hook::FirstOpen, async move |i: &mut Instance| {
            i.on_first_open(route).await
        })
        .await
    }

    pub async fn on_last_close(&self, route: &str) -> Result<(), HookError> {
        self.call(Hook::LastClose, async move |i: &mut Instance| {
            i.on_last_close(route).await
        })
        .await
    }

    pub async fn on_push(&self, payload: Message) -> Result<(), HookError> {
        self.call(Hook::Push, async move |i: &mut Instance| {
            i.on_push(payload).await
        })
        .await
    }

    pub async fn on_timer(&self, id: u64) -> Result<(), HookError> {
        self.call(Hook::Timer, async move |i: &mut Instance| {
            i.on_timer(id).await
        })
        .await
    }

    /// Tells the plugin that a hook for `conn` trapped or overran its
    /// deadline, once the host has started closing the connection (or
    /// refused it, for `on-open`). The connection is still registered, so
    /// the plugin can read its attributes to say whose it was. The failed
    /// instance is gone, so this runs on another (a fresh one if none is
    /// idle). Its own failure is only logged (by `call`, which counts it
    /// towards quarantine like any crash): it never triggers another
    /// `on-error`. A failure to instantiate is not reported: the
    /// plugin could not run `on-error` either.
    pub async fn on_error(&self, conn: ConnId, failure: &HookError) {
        if matches!(failure, HookError::Instantiate(_)) {
            return;
        }
        let detail = failure.to_string();
        let _ = self
            .call(Hook::Error, async move |i: &mut Instance| {
                i.on_error(conn, &detail).await
            })
            .await;
    }

    pub async fn on_upstream_open(&self, id: u64) -> Result<(), HookError> {
        self.call(Hook::UpstreamOpen, async move |i: &mut Instance| {
            i.on_upstream_open(id).await
        })
        .await
    }

    pub async fn on_upstream_message(&self, id: u64, msg: Message) -> Result<(), HookError> {
        self.call(Hook::UpstreamMessage, async move |i: &mut Instance| {
            i.on_upstream_message(id, msg).await
        })
        .await
    }

    pub async fn on_upstream_close(&self, id: u64, close: CloseFrame) -> Result<(), HookError> {
        self.call(Hook::UpstreamClose, async move |i: &mut Instance| {
            i.on_upstream_close(id, close).await
        })
        .await
    }
}

/// Polls `fut` once, and says whether it finished.
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
}

impl TimerTarget for Listener {
    fn fire(self: Arc<Self>, id: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Errors are logged and counted by the hook call itself.
        Box::pin(async move {
            let _ = self.on_timer(id).await;
        })
    }
}

/// A trap or overrun in an upstream hook is logged and counted (by the
/// hook call) and costs only that event: the upstream stays open.
impl UpstreamTarget for Listener {
    fn deliver(
        self: Arc<Self>,
        id: UpstreamId,
        event: UpstreamEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let _ = match event {
                UpstreamEvent::Open => self.on_upstream_open(id).await,
                UpstreamEvent::Message(msg) => self.on_upstream_message(id, msg).await,
                UpstreamEvent::Close(frame) => self.on_upstream_close(id, frame).await,
            };
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.env.timers.release(self);
        self.env.upstreams.release(self);
    }
}
