//! Server push from outside (the Lucee gateway's `sendGatewayMessage`):
//! publish to a plugin's channel, tag, given connections or all its
//! connections, or hand a payload to the plugin's `on-push` hook.
//!
//! The body is the message: text unless the request says
//! `Content-Type: application/octet-stream`. Errors are JSON
//! `{"error": "..."}` with a 4xx status; nothing internal is exposed.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::gateway::Gateway;
use crate::protocol::Message;
use crate::registry::{ConnId, GroupKind, Scope, Target};
use crate::runtime::Listener;

/// Routes under `/publish/{plugin}/...`; the caller adds authentication.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/publish/{plugin}/{kind}/{name}", post(to_group))
        .route("/publish/{plugin}/connections", post(to_connections))
        .route("/publish/{plugin}/all", post(to_all))
        .route("/publish/{plugin}/push", post(push))
        .layer(middleware::from_fn_with_state(gw.clone(), announced_size))
        .with_state(gw)
}

/// A body announced as over the limit is refused before it is read, so a
/// client cannot hold a request open for a body that may never come.
async fn announced_size(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(len) if len > gw.config.limits.max_message_size as u64 => {
            too_large(&gw).into_response()
        }
        _ => next.run(req).await,
    }
}

fn too_large(gw: &Gateway) -> ApiError {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("message over {} bytes", gw.config.limits.max_message_size),
    )
}

/// The body, read up to the size limit (a chunked one has no announced
/// length to check first).
async fn read_body(gw: &Gateway, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, gw.config.limits.max_message_size)
        .await
        .map_err(|_| too_large(gw))
}

/// A refusal, answered as `{"error": "..."}` with its status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

type Reply = Result<Response, ApiError>;

fn delivered(n: u32) -> Response {
    Json(json!({ "delivered": n })).into_response()
}

/// The loaded plugin named `name`.
fn listener(gw: &Gateway, name: &str) -> Result<Arc<Listener>, ApiError> {
    gw.deployer
        .deployment()
        .routes
        .routes()
        .iter()
        .find(|r| &*r.listener.name == name)
        .map(|r| r.listener.clone())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no plugin named {name:?} is loaded"),
            )
        })
}

fn scope(gw: &Gateway, name: &str) -> Result<Arc<Scope>, ApiError> {
    listener(gw, name).map(|l| l.env.scope.clone())
}

/// The request body as a message, within the size limit.
async fn message(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Message, ApiError> {
    let body = read_body(gw, body).await?;
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if binary {
        return Ok(Message::Binary(body));
    }
    crate::protocol::Utf8Bytes::from_utf8(body)
        .map(Message::Text)
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "text body is not UTF-8 (send binary as application/octet-stream)",
            )
        })
}

fn check_name(gw: &Gateway, what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > gw.config.limits.max_name_len {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid {what} name"),
        ));
    }
    Ok(())
}

/// `/publish/{plugin}/channel/{name}` and `/publish/{plugin}/tag/{name}`.
async fn to_group(
    State(gw): State<Arc<Gateway>>,
    Path((plugin, kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let scope = scope(&gw, &plugin)?;
    let Ok(kind) = kind.parse::<GroupKind>() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "use /channel/NAME or /tag/NAME",
        ));
    };
    check_name(&gw, kind.as_str(), &name)?;
    let msg = message(&gw, &headers, body).await?;
    let target = match kind {
        GroupKind::Channel => Target::Channel(&name),
        GroupKind::Tag => Target::Tag(&name),
    };
    Ok(delivered(scope.send(target, &msg, None)))
}

#[derive(Deserialize)]
struct Ids {
    /// Comma-separated connection ids.
    ids: String,
}

fn parse_ids(ids: &str) -> Result<Vec<ConnId>, ApiError> {
    let parsed: Result<Vec<ConnId>, _> = ids.split(',').map(|s| s.trim().parse()).collect();
    match parsed {
        Ok(ids) if !ids.is_empty() && ids.len() <= 10_000 => Ok(ids),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "ids must be 1 to 10000 comma-separated connection ids",
        )),
    }
}

async fn to_connections(
    State(gw): State<Arc<Gateway>>,
    Path(plugin): Path<String>,
    Query(Ids { ids }): Query<Ids>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let scope = scope(&gw, &plugin)?;
    let ids = parse_ids(&ids)?;
    let msg = message(&gw, &headers, body).await?;
    // Ids of other plugins' connections are simply not found here (nor on
    // any other node).
    Ok(delivered(scope.send(Target::Connections(&ids), &msg, None)))
}

#[derive(Deserialize)]
struct RouteFilter {
    /// Only connections that came in on this route pattern.
    route: Option<String>,
}

async fn to_all(
    State(gw): State<Arc<Gateway>>,
    Path(plugin): Path<String>,
    Query(filter): Query<RouteFilter>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let scope = scope(&gw, &plugin)?;
    let msg = message(&gw, &headers, body).await?;
    let target = match &filter.route {
        None => Target::All,
        Some(route) => Target::Route(route),
    };
    Ok(delivered(scope.send(target, &msg, None)))
}

async fn push(
    State(gw): State<Arc<Gateway>>,
    Path(plugin): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let listener = listener(&gw, &plugin)?;
    let payload = message(&gw, &headers, body).await?;
    match listener.on_push(payload).await {
        Ok(()) => Ok(Json(json!({ "pushed": true })).into_response()),
        Err(_) => Err(error(
            StatusCode::BAD_GATEWAY,
            "the plugin failed to handle the push",
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids() {
        assert_eq!(super::parse_ids("1, 2,3").ok(), Some(vec![1, 2, 3]));
        assert!(super::parse_ids("").is_err());
        assert!(super::parse_ids("1,x").is_err());
        assert!(super::parse_ids("-1").is_err());
    }
}
