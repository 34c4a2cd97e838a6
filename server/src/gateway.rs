//! The server's shared state, handed to every request handler: plain data,
//! each part owned and kept up to date by its own module.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::deploy::Deployer;
use crate::history::History;
use crate::lifecycle::Lifecycle;
use crate::registry::{Registry, Relay};
use crate::runtime::Runtime;
use crate::state::Store;

pub struct Gateway {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// The plugins in service and their routes.
    pub deployer: Arc<Deployer>,
    /// Connection limits and every connection's task.
    pub lifecycle: Lifecycle,
    /// The cluster this node belongs to, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub fn new(
        config: Config,
        runtime: Arc<Runtime>,
        cluster: Option<Arc<Cluster>>,
        state: Arc<Store>,
    ) -> Arc<Gateway> {
        let history = History::open(&config, cluster.as_ref());
        let registry = match &cluster {
            Some(c) => {
                let relay = Some(c.clone() as Arc<dyn Relay>);
                Registry::for_node(c.node, relay, state, history)
            }
            None => Registry::for_node(0, None, state, history),
        };
        let shutdown = CancellationToken::new();
        let lifecycle = Lifecycle::new(
            registry.clone(),
            &config.limits,
            &config.timeouts,
            shutdown.clone(),
        );
        let deployer = Arc::new(Deployer::new(config.clone(), runtime, registry.clone()));
        Arc::new(Gateway {
            config,
            registry,
            deployer,
            lifecycle,
            cluster,
            shutdown,
        })
    }
}
