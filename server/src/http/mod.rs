//! The HTTP front: health checks, WebSocket routes, and static files for
//! everything else.

mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::Gateway;

pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(dispatch)
        .with_state(gw)
}

async fn dispatch(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let deployment = gw.deployment();
    match deployment.routes.at(req.uri().path()) {
        Some(matched) => upgrade::handle(gw.clone(), matched, remote, req).await,
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
