//! The admin API, on its own listener (loopback by default) and behind a
//! bearer token:
//!
//! - `GET /admin/info` — Lucee's `websocketInfo()`: effective config (token
//!   redacted), plugins with version hash, load time and errors, routes,
//!   connection and channel counts; `?connections=true` adds every
//!   connection with its attributes, channels, tags and remote address.
//! - `POST /admin/plugins/{name}/stop|start|reload`.
//! - `GET /metrics` — Prometheus text format.
//! - `POST /publish/...` — server push into plugins (see `http::publish`).
//!
//! Every request needs `Authorization: Bearer TOKEN`; a missing or wrong
//! token is answered 401. The token comes from `admin.token`
//! (`WSGATE_ADMIN__TOKEN`, `--admin-token`); without one, a random token is
//! generated at startup and logged once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::deploy::AdminError;
use crate::gateway::Gateway;

struct Admin {
    gw: Arc<Gateway>,
    token_digest: [u8; 32],
}

/// The admin token in effect: the configured one, or a fresh random one
/// (which is logged, once, so the operator can use it).
pub fn token(configured: Option<&str>) -> String {
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        return token.to_owned();
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    let token = crate::runtime::hex(&bytes);
    tracing::warn!(
        "no admin.token configured; generated one for this run (set WSGATE_ADMIN__TOKEN to choose): {token}"
    );
    token
}

pub fn router(gw: Arc<Gateway>, token: &str) -> Router {
    let admin = Arc::new(Admin {
        gw,
        token_digest: Sha256::digest(token.as_bytes()).into(),
    });
    let publish = crate::http::publish::router().with_state(admin.gw.clone());
    Router::new()
        .route("/admin/info", get(info))
        .route("/admin/plugins/{name}/{action}", post(plugin_action))
        .route("/metrics", get(metrics))
        .with_state(admin.clone())
        .merge(publish)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(admin, authorize))
}

/// Compares digests of the tokens in constant time, so neither the
/// token's content nor its length leaks through timing.
fn token_matches(given: &str, expected: &[u8; 32]) -> bool {
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn authorize(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(token) if token_matches(token, &admin.token_digest) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"wsgate admin\"")],
            "a valid admin token is required (Authorization: Bearer TOKEN)",
        )
            .into_response(),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&admin.gw),
    )
        .into_response()
}

#[derive(Deserialize)]
struct InfoQuery {
    #[serde(default)]
    connections: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("" | "1" | "true" | "yes"))
}

async fn info(State(admin): State<Arc<Admin>>, Query(q): Query<InfoQuery>) -> Response {
    axum::Json(info_json(&admin.gw, truthy(&q.connections))).into_response()
}

/// Everything `/admin/info` reports.
pub fn info_json(gw: &Gateway, with_connections: bool) -> Value {
    let mut config = serde_json::to_value(&gw.config).unwrap_or(Value::Null);
    if let Some(admin) = config.get_mut("admin").and_then(Value::as_object_mut) {
        admin.insert("token".into(), json!("<redacted>"));
    }
    if let Some(url) = &gw.config.cluster.url {
        config["cluster"]["url"] = json!(crate::cluster::redact(url));
    }
    config["effective_cache_dir"] = json!(gw.config.effective_cache_dir());

    let scopes: BTreeMap<String, _> = gw
        .registry
        .scopes()
        .into_iter()
        .map(|s| (s.name.to_string(), s))
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
            v
        })
        .collect();

    let deployment = gw.deployment();
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

async fn plugin_action(
    State(admin): State<Arc<Admin>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let gw = &admin.gw;
    let result = match action.as_str() {
        "stop" => gw.deployer.stop(gw, &name).await,
        "start" => gw.deployer.start(gw, &name).await,
        "reload" => gw.deployer.reload(gw, &name).await,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "unknown action: use stop, start or reload",
            )
                .into_response();
        }
    };
    match result {
        Ok(()) => {
            let plugin = gw.deployer.plugins().into_iter().find(|p| p.name == name);
            axum::Json(json!({ "action": action, "plugin": plugin })).into_response()
        }
        Err(AdminError::UnknownPlugin) => {
            (StatusCode::NOT_FOUND, format!("no plugin named {name:?}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn token_comparison() {
        let expected: [u8; 32] = Sha256::digest(b"secret").into();
        assert!(super::token_matches("secret", &expected));
        assert!(!super::token_matches("secreT", &expected));
        assert!(!super::token_matches("", &expected));
        assert!(!super::token_matches("secret2", &expected));
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(super::token(None), super::token(None));
        assert_eq!(super::token(Some("x")), "x");
    }
}
