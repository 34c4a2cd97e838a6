//! One loaded plugin version and its hooks. Every hook call runs on a
//! pooled instance under a deadline; a trap or overrun is confined to that
//! call: the instance is thrown away and the caller decides what to close.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::Trap;

use super::bindings::{Message, OpenDecision, Request};
use super::host::PluginEnv;
use super::pool::{Instance, InstancePool};
use crate::registry::ConnId;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{hook} ran past its {timeout:?} deadline")]
    Deadline {
        hook: &'static str,
        timeout: Duration,
    },
    #[error("{hook} trapped: {detail}")]
    Trap { hook: &'static str, detail: String },
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
    pub metrics: Arc<crate::metrics::PluginMetrics>,
    /// Crash-loop protection for this version.
    pub crashes: super::quarantine::CrashWindow,
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
        let crashes = super::quarantine::CrashWindow::new(
            env.limits.quarantine_after,
            env.limits.quarantine_window,
        );
        Arc::new(Listener {
            crashes,
            metrics: crate::metrics::PluginMetrics::new(&name),
            name,
            hash,
            loaded_at: SystemTime::now(),
            env,
            pool,
            hook_timeout,
        })
    }

    /// Puts this version in service: the plugin's timers fire into it from
    /// now on. Called once it has started, so a version that fails to start
    /// never takes the timers from the one serving.
    pub fn activate(self: &Arc<Self>) {
        self.env.timers.bind(Arc::downgrade(self));
    }

    /// Instantiates once up front, so a plugin that cannot start (missing
    /// imports, a trapping start function) is refused at load time.
    pub async fn warm_up(&self) -> Result<(), HookError> {
        let loan = self
            .pool
            .borrow()
            .await
            .map_err(|e| HookError::Instantiate(format!("{e:#}")))?;
        self.pool.give_back(loan);
        Ok(())
    }

    async fn call<R>(
        &self,
        hook: &'static str,
        f: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, HookError> {
        let mut loan = self.pool.borrow().await.map_err(|e| {
            tracing::error!(plugin = %self.name, "cannot instantiate: {e:#}");
            HookError::Instantiate(format!("{e:#}"))
        })?;
        let start = Instant::now();
        loan.instance().store.data_mut().deadline = start + self.hook_timeout;
        loan.instance().store.set_epoch_deadline(1);
        let result = f(loan.instance()).await;
        let took = start.elapsed();
        self.metrics.observe_hook(hook, took.as_secs_f64());
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
                if self.crashes.record() {
                    tracing::error!(
                        plugin = %self.name,
                        "quarantined after {} crashes within {:?}: new connections get 503 until it is redeployed",
                        self.env.limits.quarantine_after,
                        self.env.limits.quarantine_window
                    );
                }
                tracing::warn!(plugin = %self.name, "{err}");
                Err(err)
            }
        }
    }

    pub async fn on_open(&self, conn: ConnId, req: Request) -> Result<OpenDecision, HookError> {
        self.call("on-open", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_open(&mut i.store, conn, &req).await
        })
        .await
    }

    pub async fn on_message(
        &self,
        conn: ConnId,
        msg: Message,
    ) -> Result<Option<Message>, HookError> {
        self.call("on-message", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_message(&mut i.store, conn, &msg).await
        })
        .await
    }

    pub async fn on_close(&self, conn: ConnId, code: u16, reason: String) -> Result<(), HookError> {
        self.call("on-close", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_close(&mut i.store, conn, code, &reason).await
        })
        .await
    }

    pub async fn on_first_open(&self, route: String) -> Result<(), HookError> {
        self.call("on-first-open", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_first_open(&mut i.store, &route).await
        })
        .await
    }

    pub async fn on_last_close(&self, route: String) -> Result<(), HookError> {
        self.call("on-last-close", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_last_close(&mut i.store, &route).await
        })
        .await
    }

    pub async fn on_push(&self, payload: Message) -> Result<(), HookError> {
        self.call("on-push", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_push(&mut i.store, &payload).await
        })
        .await
    }

    pub async fn on_timer(&self, id: u64) -> Result<(), HookError> {
        self.call("on-timer", async move |i: &mut Instance| {
            let hooks = i.guest.wsgate_plugin_listener();
            hooks.call_on_timer(&mut i.store, id).await
        })
        .await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.env.timers.release(self);
    }
}
