//! The server's shared state, handed to every request handler.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::deploy::Deployment;
use crate::registry::{Registry, Relay};
use crate::runtime::Runtime;

pub struct Gateway {
    pub config: Config,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    deployment: ArcSwap<Deployment>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every connection's session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Keeps the deployment in step with the plugin directory.
    pub deployer: crate::deploy::Deployer,
    /// Origin allow-list and connection limits for handshakes.
    pub admission: Arc<crate::http::admission::Admission>,
    /// The cluster this node belongs to, if any.
    pub cluster: Option<Arc<Cluster>>,
}

impl Gateway {
    pub fn new(
        config: Config,
        runtime: Arc<Runtime>,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Gateway> {
        let limits = &config.limits;
        let admission = crate::http::admission::Admission::new(
            limits.max_connections,
            limits.max_connections_per_ip,
            limits.allowed_origins.clone(),
        );
        Arc::new(Gateway {
            admission,
            config,
            runtime,
            registry: match &cluster {
                Some(c) => Registry::for_node(c.node, Some(c.clone() as Arc<dyn Relay>)),
                None => Registry::new(),
            },
            cluster,
            deployment: ArcSwap::from_pointee(Deployment::default()),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            deployer: Default::default(),
        })
    }

    /// The deployment in effect; requests in flight keep the one they saw.
    pub fn deployment(&self) -> Arc<Deployment> {
        self.deployment.load_full()
    }

    pub fn deploy(&self, deployment: Deployment) {
        self.deployment.store(Arc::new(deployment));
    }

    /// Reads the plugin directory and puts its plugins in service.
    pub async fn load_plugins(&self) {
        self.deployer.reconcile(self, None).await;
    }
}
