//! A few instances per plugin, never one per connection: a hook call
//! borrows an idle instance (or instantiates one from the pre-linked
//! `Prepared` component, which with the pooling allocator and copy-on-write memory
//! costs microseconds) and returns it afterwards. An instance that trapped
//! is dropped, never reused, since its memory may be inconsistent; one
//! whose memory grew close to its limit is dropped after its call
//! ([`InstanceLimits`](super::limits::InstanceLimits)), before a call runs
//! out of memory midway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use wasmtime::{Store, UpdateDeadline};

use wasmtime::component::InstancePre;

use super::bindings::exports::wsgate::plugin::{error_listener, listener, upstream_listener};
use super::burst::{BurstHook, BurstIndex};
use super::env::PluginEnv;
use super::host::HostState;

/// A compiled plugin linked against the host: instances are made from it.
/// Only `listener` must be exported; the other interfaces came later (a
/// plugin built against an older contract lacks them), so each is looked
/// up once here and called only where present.
#[derive(Clone)]
pub struct Prepared {
    pub(super) pre: InstancePre<HostState>,
    pub(super) exports: Arc<ExportIndices>,
}

pub(super) struct ExportIndices {
    pub(super) listener: listener::GuestIndices,
    pub(super) upstream: Option<upstream_listener::GuestIndices>,
    pub(super) errors: Option<error_listener::GuestIndices>,
    pub(super) batch: Option<BurstIndex>,
}

impl Prepared {
    /// `None` if the component does not export the listener interface.
    pub(super) fn new(pre: InstancePre<HostState>) -> Option<Prepared> {
        let exports = ExportIndices {
            listener: listener::GuestIndices::new(&pre).ok()?,
            upstream: upstream_listener::GuestIndices::new(&pre).ok(),
            errors: error_listener::GuestIndices::new(&pre).ok(),
            batch: BurstIndex::new(&pre),
        };
        Some(Prepared {
            pre,
            exports: Arc::new(exports),
        })
    }

    /// Whether the plugin exports the upstream hooks.
    pub fn has_upstream_hooks(&self) -> bool {
        self.exports.upstream.is_some()
    }

    /// Whether the plugin exports `on-messages`.
    pub fn has_batch(&self) -> bool {
        self.exports.batch.is_some()
    }
}

/// One instance of a plugin. Its hooks (in `hook.rs`) are called directly:
/// no pool, no deadline set, no metrics (the [`Listener`](super::Listener)
/// adds those).
pub struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) listener: listener::Guest,
    pub(super) upstream: Option<upstream_listener::Guest>,
    pub(super) errors: Option<error_listener::Guest>,
    pub(super) batch: Option<BurstHook>,
}

impl Instance {
    /// A hook call starts: it must be done by `deadline`.
    pub(super) fn begin_call(&mut self, deadline: std::time::Instant) {
        self.store.data_mut().begin_call(deadline);
        self.store.set_epoch_deadline(1);
    }
}

/// Not a semaphore: a hook call is the hot path of every message, and the
/// common case (an idle instance is there) should cost one uncontended
/// lock, not a permit acquired and released as well.
pub struct InstancePool {
    pre: Prepared,
    env: Arc<PluginEnv>,
    idle: Mutex<Vec<Instance>>,
    /// Instances that exist, idle or on loan; at most `size`, so at most
    /// that many hook calls of the plugin run at once.
    live: AtomicUsize,
    size: usize,
    /// Signalled whenever an instance is given back or thrown away.
    returned: Notify,
    /// Instantiation runs guest code too, so it gets the hook deadline.
    deadline: Duration,
}

/// An instance on loan. It goes back to the pool only through
/// `give_back`; dropped otherwise (a trapped instance), it frees its place.
pub struct Loan<'a> {
    instance: Option<Instance>,
    pool: &'a InstancePool,
}

impl Loan<'_> {
    pub fn instance(&mut self) -> &mut Instance {
        self.instance
            .as_mut()
            .expect("a loan holds its instance until dropped")
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if self.instance.is_some() {
            self.pool.release();
        }
    }
}

impl InstancePool {
    pub fn new(
        pre: Prepared,
        env: Arc<PluginEnv>,
        size: usize,
        deadline: Duration,
    ) -> InstancePool {
        InstancePool {
            pre,
            env,
            idle: Mutex::new(Vec::with_capacity(size)),
            live: AtomicUsize::new(0),
            size,
            returned: Notify::new(),
            deadline,
        }
    }

    pub async fn instantiate(&self) -> wasmtime::Result<Instance> {
        let pre = &self.pre.pre;
        let mut state = HostState::new(self.env.clone());
        state.upstream_hooks = self.pre.has_upstream_hooks();
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|ctx| {
            if std::time::Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.data_mut().deadline = std::time::Instant::now() + self.deadline;
        store.set_epoch_deadline(1);
        let instance = pre.instantiate_async(&mut store).await?;
        let exports = &self.pre.exports;
        let listener = exports.listener.load(&mut store, &instance)?;
        let upstream = match &exports.upstream {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        let errors = match &exports.errors {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        let batch = match &exports.batch {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        Ok(Instance {
            store,
            listener,
            upstream,
            errors,
            batch,
        })
    }

    /// Whether the plugin exports the upstream hooks.
    pub fn has_upstream_hooks(&self) -> bool {
        self.pre.has_upstream_hooks()
    }

    /// Whether the plugin exports `on-messages`.
    pub fn has_batch(&self) -> bool {
        self.pre.has_batch()
    }

    /// The store an instance would get, without the instance: the least
    /// that instantiating costs (the floor the `instantiate` bench compares
    /// against).
    pub fn empty_store(&self) -> impl Sized + use<> {
        Store::new(self.pre.pre.engine(), HostState::new(self.env.clone()))
    }

    /// An idle instance, else a new one while fewer than `size` exist,
    /// else the next one given back.
    pub async fn borrow(&self) -> wasmtime::Result<Loan<'_>> {
        loop {
            if let Some(instance) = self.idle.lock().unwrap().pop() {
                return Ok(self.lend(instance));
            }
            if self.reserve() {
                // Boxed: the future is big, and inline it would be part of
                // every hook call's future.
                return match Box::pin(self.instantiate()).await {
                    Ok(instance) => Ok(self.lend(instance)),
                    Err(e) => {
                        self.release();
                        Err(e)
                    }
                };
            }
            // All instances are busy. Register, then look again, so an
            // instance given back in between is not missed.
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if self.idle.lock().unwrap().is_empty()
                && self.live.load(Ordering::Acquire) >= self.size
            {
                returned.await;
            }
        }
    }

    fn lend(&self, instance: Instance) -> Loan<'_> {
        Loan {
            instance: Some(instance),
            pool: self,
        }
    }

    /// Counts in one more instance if there is room for it.
    fn reserve(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.size).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts out an instance that no longer exists (it trapped, or never
    /// came to be), so a waiting caller may create another.
    fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.returned.notify_one();
    }

    /// Returns an instance for the next call, unless its memory has grown
    /// too close to its limit: then it is dropped, and the next call that
    /// finds no idle instance makes a fresh one.
    pub fn give_back(&self, mut loan: Loan<'_>) {
        let Some(instance) = loan.instance.take() else {
            return;
        };
        if instance.store.data().limits.worn_out() {
            tracing::debug!(
                "an instance's memory grew to three quarters of limits.instance_memory; retired"
            );
            drop(instance);
            self.release();
            return;
        }
        self.idle.lock().unwrap().push(instance);
        self.returned.notify_one();
    }
}
