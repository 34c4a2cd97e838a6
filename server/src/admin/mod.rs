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

mod info;
mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::deploy::AdminError;
use crate::gateway::Gateway;
pub use info::info_json;

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
    let publish = crate::http::publish::router(admin.gw.clone());
    // A request body gets as long as a request head: a client that trickles
    // one does not hold its connection.
    let body_timeout = admin.gw.config.timeouts.handshake;
    Router::new()
        .route("/admin/info", get(info))
        .route("/admin/plugins/{name}/{action}", post(plugin_action))
        .route("/metrics", get(metrics))
        .with_state(admin.clone())
        .merge(publish)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(admin, authorize))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
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
        metrics::render(&admin.gw),
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

/// What `POST /admin/plugins/{name}/{action}` can do to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum PluginAction {
    Stop,
    Start,
    Reload,
}

impl std::str::FromStr for PluginAction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "stop" => Ok(PluginAction::Stop),
            "start" => Ok(PluginAction::Start),
            "reload" => Ok(PluginAction::Reload),
            _ => Err(()),
        }
    }
}

async fn plugin_action(
    State(admin): State<Arc<Admin>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let Ok(action) = action.parse::<PluginAction>() else {
        return (
            StatusCode::NOT_FOUND,
            "unknown action: use stop, start or reload",
        )
            .into_response();
    };
    let deployer = &admin.gw.deployer;
    let result = match action {
        PluginAction::Stop => deployer.stop(&name).await,
        PluginAction::Start => deployer.start(&name).await,
        PluginAction::Reload => deployer.reload(&name).await,
    };
    match result {
        Ok(()) => {
            let plugin = deployer.plugins().into_iter().find(|p| p.name == name);
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
