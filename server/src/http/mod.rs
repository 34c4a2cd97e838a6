//! The HTTP front: health checks, WebSocket routes, and static files for
//! everything else.

pub mod admission;
pub mod publish;
mod static_files;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::Gateway;
use static_files::StaticFiles;

pub fn app(gw: Arc<Gateway>) -> Router {
    let files = StaticFiles::new(gw.config.static_dir.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(
            move |State(gw): State<Arc<Gateway>>,
                  ConnectInfo(remote): ConnectInfo<SocketAddr>,
                  req: Request| {
                let files = files.clone();
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

/// WebSocket routes first; every other path is a static file.
async fn dispatch(
    gw: Arc<Gateway>,
    remote: SocketAddr,
    req: Request,
    files: &StaticFiles,
) -> Response {
    let matched = gw.deployment().routes.at(req.uri().path());
    match matched {
        Some(matched) => upgrade::handle(gw, matched, remote, req).await,
        None => files.serve(req).await,
    }
}
