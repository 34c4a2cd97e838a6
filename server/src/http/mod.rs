//! The HTTP front: health checks, WebSocket routes, and static files for
//! everything else.

mod client_addr;
mod idempotency;
mod origin;
pub mod publish;
mod static_files;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::Gateway;
pub use client_addr::TrustedProxies;
use static_files::StaticFiles;

pub fn app(gw: Arc<Gateway>) -> Router {
    let files = StaticFiles::new(gw.config.static_dir.clone());
    // Validated with the rest of the config.
    let proxies = TrustedProxies::new(gw.config.trusted_proxies().unwrap_or_default());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(
            move |State(gw): State<Arc<Gateway>>,
                  ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  req: Request| {
                let files = files.clone();
                let remote = proxies.client(peer, req.headers());
                async move { dispatch(gw, remote, req, &files).await }
            },
        )
        .with_state(gw)
}

/// Ready once the plugin directory has been loaded, until shutdown starts.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.deployer.is_ready() && !gw.shutdown.is_cancelled() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// How long a client should wait before trying a plugin that is still
/// starting again: Python and JavaScript plugins take seconds to compile.
const RETRY_STARTING_S: &str = "2";

/// WebSocket routes first; every other path is a static file.
async fn dispatch(
    gw: Arc<Gateway>,
    remote: SocketAddr,
    req: Request,
    files: &StaticFiles,
) -> Response {
    let deployment = gw.deployer.deployment();
    let path = req.uri().path();
    if let Some(matched) = deployment.routes.at(path) {
        return upgrade::handle(gw, matched, remote, req).await;
    }
    if deployment.routes.starting_at(path).is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_STARTING_S)],
            "this service is starting; try again shortly",
        )
            .into_response();
    }
    files.serve(req).await
}
