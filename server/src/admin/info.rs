//! `GET /admin/info`: Lucee's `websocketInfo()`, for people and scripts:
//! the effective config (secrets redacted), plugins, routes and counts, and
//! with `?connections=true` every connection.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::gateway::Gateway;

/// Everything `/admin/info` reports.
pub fn info_json(gw: &Gateway, with_connections: bool) -> Value {
    let mut config = serde_json::to_value(&gw.config).unwrap_or(Value::Null);
    if let Some(admin) = config.get_mut("admin").and_then(Value::as_object_mut) {
        admin.insert("token".into(), json!("<redacted>"));
    }
    if let Some(url) = &gw.config.cluster.url {
        config["cluster"]["url"] = json!(crate::cluster::redact(url));
    }
    if gw.config.cluster.secret.is_some() {
        config["cluster"]["secret"] = json!("<redacted>");
    }
    config["effective_cache_dir"] = json!(gw.config.effective_cache_dir());
    config["state"]["effective_backend"] = json!(gw.registry.state().kind());

    let scopes: BTreeMap<String, _> = gw
        .registry
        .scopes()
        .into_iter()
        .map(|s| (s.name.to_string(), s))
        .collect();
    let deployment = gw.deployer.deployment();
    // Quarantines of the versions serving now (read live, not from the
    // summary made at the last reload).
    // What each plugin in service records (its sidecar's `[history]`).
    let history: BTreeMap<&str, Value> = deployment
        .routes
        .routes()
        .iter()
        .filter(|r| !r.listener.env.recording.patterns.is_empty())
        .map(|r| {
            let recording = &r.listener.env.recording;
            let history = json!({
                "channels": recording.patterns,
                "size": recording.size,
                "ttl_ms": recording.ttl.as_millis() as u64,
            });
            (&*r.listener.name, history)
        })
        .collect();
    let quarantined: BTreeMap<&str, u64> = deployment
        .routes
        .routes()
        .iter()
        .filter_map(|r| {
            let until = r.listener.quarantine.until()?;
            Some((&*r.listener.name, crate::unix_ms(until)))
        })
        .collect();
    let plugins: Vec<Value> = gw
        .deployer
        .plugins()
        .into_iter()
        .map(|p| {
            let scope = scopes.get(&p.name);
            let channels: BTreeMap<String, usize> = scope
                .map(|s| s.channel_counts().into_iter().collect())
                .unwrap_or_default();
            let mut v = serde_json::to_value(&p).unwrap_or(Value::Null);
            v["connections"] = json!(scope.map_or(0, |s| s.connection_count()));
            v["channels"] = json!(channels);
            if let Some(history) = history.get(p.name.as_str()) {
                v["history"] = history.clone();
            }
            if let Some(until) = quarantined.get(p.name.as_str()) {
                v["quarantined_until_ms"] = json!(until);
            }
            v
        })
        .collect();

    let routes: Vec<Value> = deployment
        .routes
        .routes()
        .iter()
        .map(|r| {
            json!({
                "pattern": &*r.pattern,
                "plugin": &*r.listener.name,
                "version": &r.listener.hash,
                "open": r.open.try_lock().map(|n| *n).ok(),
            })
        })
        .collect();

    let per_plugin: BTreeMap<&String, usize> = scopes
        .iter()
        .map(|(n, s)| (n, s.connection_count()))
        .collect();
    let mut out = json!({
        "server": {
            "version": env!("CARGO_PKG_VERSION"),
            // Which process answered: with `--reuse-port` several share
            // the public port, and a supervisor (or a test) that picked an
            // admin port can tell its own server from another's.
            "pid": std::process::id(),
            "uptime_s": gw.deployer.started.elapsed().as_secs(),
            "ready": gw.deployer.is_ready(),
            "shutting_down": gw.shutdown.is_cancelled(),
        },
        "config": config,
        "plugins": plugins,
        "routes": routes,
        "connections": {
            "total": gw.registry.connection_count(),
            "per_plugin": per_plugin,
        },
    });
    if let Some(cluster) = &gw.cluster {
        out["cluster"] = cluster.info(&gw.registry);
    }
    if with_connections {
        let mut list: Vec<Value> = scopes
            .values()
            .flat_map(|s| s.connections())
            .map(|c| {
                let mut channels = c.channel_names();
                channels.sort();
                let mut tags = c.tag_names();
                tags.sort();
                let attributes: BTreeMap<String, String> = c.attributes().into_iter().collect();
                json!({
                    "id": c.id,
                    "plugin": &*c.plugin,
                    "route": &*c.route,
                    "path": &c.path,
                    "remote": c.remote.to_string(),
                    "opened_at_ms": crate::unix_ms(c.opened_at),
                    "closing": c.is_closing(),
                    "attributes": attributes,
                    "channels": channels,
                    "tags": tags,
                })
            })
            .collect();
        list.sort_by_key(|c| c["id"].as_u64());
        out["connection_list"] = json!(list);
    }
    out
}
