//! `GET /metrics`: the process-wide counters, with the gauges that describe
//! the present (connections, channels, plugins, cluster nodes) read from the
//! registry, the deployer and the cluster at scrape time.

use crate::gateway::Gateway;
use crate::metrics::metrics;

pub fn render(gw: &Gateway) -> String {
    let m = metrics();
    m.connections.reset();
    m.channels.reset();
    for scope in gw.registry.scopes() {
        m.connections
            .with_label_values(&[&scope.name])
            .set(scope.connection_count() as i64);
        m.channels
            .with_label_values(&[&scope.name])
            .set(scope.channel_names().len() as i64);
    }
    m.cluster_nodes.reset();
    if let Some(cluster) = &gw.cluster {
        let link = if cluster.is_connected() {
            "connected"
        } else {
            "disconnected"
        };
        m.cluster_nodes
            .with_label_values(&[link])
            .set(cluster.node_count() as i64);
    }
    m.quarantined.reset();
    for route in gw.deployer.deployment().routes.routes() {
        let listener = &route.listener;
        let active = i64::from(listener.quarantine.is_active());
        m.quarantined
            .with_label_values(&[&listener.name])
            .set(active);
    }
    m.plugins.reset();
    for (status, n) in gw.deployer.status_counts() {
        m.plugins
            .with_label_values(&[status.as_str()])
            .set(n as i64);
    }
    m.encode()
}
