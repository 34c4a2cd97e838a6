//! A few instances per plugin, never one per connection: a hook call
//! borrows an idle instance (or instantiates one from the pre-linked
//! `PluginPre`, which with the pooling allocator and copy-on-write memory
//! costs microseconds) and returns it afterwards. An instance that trapped
//! is dropped, never reused, since its memory may be inconsistent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{Plugin as Guest, PluginPre};
use super::host::{HostState, PluginEnv};

pub struct Instance {
    pub store: Store<HostState>,
    pub guest: Guest,
}

pub struct InstancePool {
    pre: PluginPre<HostState>,
    env: Arc<PluginEnv>,
    idle: Mutex<Vec<Instance>>,
    /// At most this many hook calls of the plugin run at once.
    permits: Semaphore,
    /// Instantiation runs guest code too, so it gets the hook deadline.
    deadline: Duration,
}

/// An instance on loan; it goes back to the pool only through `give_back`.
pub struct Loan<'a> {
    pub instance: Instance,
    _permit: SemaphorePermit<'a>,
}

impl InstancePool {
    pub fn new(
        pre: PluginPre<HostState>,
        env: Arc<PluginEnv>,
        size: usize,
        deadline: Duration,
    ) -> InstancePool {
        InstancePool {
            pre,
            env,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            deadline,
        }
    }

    pub async fn instantiate(&self) -> wasmtime::Result<Instance> {
        let mut store = Store::new(self.pre.engine(), HostState::new(self.env.clone()));
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
        let guest = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance { store, guest })
    }

    pub async fn borrow(&self) -> wasmtime::Result<Loan<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().unwrap().pop();
        let instance = match idle {
            Some(instance) => instance,
            // Boxed: the future is big, and inline it would be part of
            // every hook call's future, hence of every connection's task.
            None => Box::pin(self.instantiate()).await?,
        };
        Ok(Loan {
            instance,
            _permit: permit,
        })
    }

    pub fn give_back(&self, loan: Loan<'_>) {
        self.idle.lock().unwrap().push(loan.instance);
    }
}
