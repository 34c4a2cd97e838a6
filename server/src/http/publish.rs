//! Server push from outside (the Lucee gateway's `sendGatewayMessage`):
//! publish to a plugin's channel, tag, given connections or all its
//! connections, or hand a payload to the plugin's `on-push` hook.
//!
//! The body is the message: text unless the request says
//! `Content-Type: application/octet-stream`. Errors are JSON
//! `{"error": "..."}` with a 4xx status (503 when history is
//! unavailable); nothing internal is exposed.
//!
//! On a recorded channel (the plugin's `[history] channels`) the message
//! is recorded and the answer gives its position; `Position-Placeholder:
//! TEXT` has the first TEXT of a text body replaced by the position.
//! `Idempotency-Key: KEY` makes a retry harmless: within
//! `admin.idempotency_window`, a publish with a key already used for the
//! plugin is not delivered again, and gets the first one's answer with
//! `"duplicate": true`. On a recorded channel that holds exactly, even
//! across nodes and crashes (the key is kept in the step that records the
//! message); elsewhere a retry that arrives while the first is still
//! being delivered is answered 409, to be retried.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::idempotency::{Claim, Idempotency};
use crate::gateway::Gateway;
use crate::history::{self, Body, HistoryError};
use crate::protocol::Message;
use crate::registry::{ConnId, GroupKind, Scope, Target};
use crate::runtime::Listener;

/// Makes a retried publish harmless (see the module's doc).
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Names the text in the body that the position replaces.
const POSITION_PLACEHOLDER: &str = "position-placeholder";

/// What the publish API's handlers share.
pub struct Api {
    gw: Arc<Gateway>,
    keys: Idempotency,
}

type Shared = State<Arc<Api>>;

/// Routes under `/publish/{plugin}/...`; the caller adds authentication.
pub fn router(gw: Arc<Gateway>) -> Router {
    let api = Arc::new(Api {
        keys: Idempotency::new(gw.cluster.as_ref()),
        gw: gw.clone(),
    });
    Router::new()
        .route("/publish/{plugin}/{kind}/{name}", post(to_group))
        .route("/publish/{plugin}/connections", post(to_connections))
        .route("/publish/{plugin}/all", post(to_all))
        .route("/publish/{plugin}/push", post(push))
        .layer(middleware::from_fn_with_state(gw, announced_size))
        .with_state(api)
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
async fn read_body(gw: &Gateway, body: axum::body::Body) -> Result<Bytes, ApiError> {
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

fn delivered(n: u32) -> Value {
    json!({ "delivered": n })
}

/// The request's `Idempotency-Key`, if it has a valid one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key))
        }
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 128 printable ASCII characters",
        )),
    }
}

/// Runs `publish` once per idempotency key (see the module's doc): a
/// retry gets the first answer, marked `duplicate`.
async fn once(
    api: &Api,
    plugin: &str,
    key: Option<&str>,
    publish: impl Future<Output = Result<Value, ApiError>>,
) -> Reply {
    let Some(key) = key else {
        return publish.await.map(|v| Json(v).into_response());
    };
    let window = api.gw.config.admin.idempotency_window;
    match api.keys.claim(plugin, key, window).await {
        Ok(Claim::New) => match publish.await {
            Ok(answer) => {
                api.keys.complete(plugin, key, &answer).await;
                Ok(Json(answer).into_response())
            }
            Err(e) => {
                api.keys.release(plugin, key).await;
                Err(e)
            }
        },
        Ok(Claim::InProgress) => Err(error(
            StatusCode::CONFLICT,
            "a publish with this Idempotency-Key is in progress; retry",
        )),
        Ok(Claim::Done(mut answer)) => {
            answer["duplicate"] = json!(true);
            Ok(Json(answer).into_response())
        }
        Err(why) => {
            tracing::warn!("publish API: idempotency keys unavailable: {why}");
            Err(unavailable())
        }
    }
}

fn unavailable() -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the cluster's Redis is unavailable; retry",
    )
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

/// The message with a place for its position, per `Position-Placeholder`.
fn positioned(headers: &HeaderMap, msg: Message) -> Result<Body, ApiError> {
    let Some(placeholder) = headers.get(POSITION_PLACEHOLDER) else {
        return Ok(Body::Plain(msg));
    };
    let placeholder = placeholder.to_str().unwrap_or_default();
    let Message::Text(text) = &msg else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Position-Placeholder needs a text body",
        ));
    };
    match text.as_str().split_once(placeholder) {
        Some((before, after)) if !placeholder.is_empty() => Ok(Body::Positioned {
            before: before.to_owned(),
            after: after.to_owned(),
        }),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "the Position-Placeholder text is not in the body",
        )),
    }
}

/// Records and delivers a publish to a recorded channel.
async fn record(
    api: &Api,
    listener: &Listener,
    channel: &str,
    body: Body,
    key: Option<&str>,
) -> Reply {
    let window = api.gw.config.admin.idempotency_window;
    let env = &listener.env;
    let publish = history::Publish {
        scope: &env.scope,
        recording: &env.recording,
        channel,
        body,
        except: None,
        idempotency: key.map(|k| (k, window)),
    };
    let published = match env.history.publish(publish).await {
        Ok(published) => published,
        Err(HistoryError::Unavailable(_)) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "channel history is unavailable; retry",
            ));
        }
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "invalid message")),
    };
    let mut answer = json!({
        "delivered": published.delivered,
        "position": {
            "epoch": published.position.epoch,
            "offset": published.position.offset,
        },
    });
    if published.duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(Json(answer).into_response())
}

/// The request body as a message, within the size limit.
async fn message(
    gw: &Gateway,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Message, ApiError> {
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
    State(api): Shared,
    Path((plugin, kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let gw = &api.gw;
    let listener = listener(gw, &plugin)?;
    let Ok(kind) = kind.parse::<GroupKind>() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "use /channel/NAME or /tag/NAME",
        ));
    };
    check_name(gw, kind.as_str(), &name)?;
    let key = idempotency_key(&headers)?;
    let msg = message(gw, &headers, body).await?;
    if kind == GroupKind::Channel && listener.env.recording.records(&name) {
        let body = positioned(&headers, msg)?;
        return record(&api, &listener, &name, body, key).await;
    }
    if headers.contains_key(POSITION_PLACEHOLDER) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Position-Placeholder needs a recorded channel (the plugin's [history] channels)",
        ));
    }
    let target = match kind {
        GroupKind::Channel => Target::Channel(&name),
        GroupKind::Tag => Target::Tag(&name),
    };
    let scope = &listener.env.scope;
    once(&api, &plugin, key, async {
        Ok(delivered(scope.send(target, &msg, None)))
    })
    .await
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
    State(api): Shared,
    Path(plugin): Path<String>,
    Query(Ids { ids }): Query<Ids>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let scope = scope(&api.gw, &plugin)?;
    let ids = parse_ids(&ids)?;
    let key = idempotency_key(&headers)?;
    let msg = message(&api.gw, &headers, body).await?;
    // Ids of other plugins' connections are simply not found here (nor on
    // any other node).
    once(&api, &plugin, key, async {
        Ok(delivered(scope.send(Target::Connections(&ids), &msg, None)))
    })
    .await
}

#[derive(Deserialize)]
struct RouteFilter {
    /// Only connections that came in on this route pattern.
    route: Option<String>,
}

async fn to_all(
    State(api): Shared,
    Path(plugin): Path<String>,
    Query(filter): Query<RouteFilter>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let scope = scope(&api.gw, &plugin)?;
    let key = idempotency_key(&headers)?;
    let msg = message(&api.gw, &headers, body).await?;
    let target = match &filter.route {
        None => Target::All,
        Some(route) => Target::Route(route),
    };
    once(&api, &plugin, key, async {
        Ok(delivered(scope.send(target, &msg, None)))
    })
    .await
}

async fn push(
    State(api): Shared,
    Path(plugin): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let listener = listener(&api.gw, &plugin)?;
    let key = idempotency_key(&headers)?;
    let payload = message(&api.gw, &headers, body).await?;
    once(&api, &plugin, key, async {
        match listener.on_push(payload).await {
            Ok(()) => Ok(json!({ "pushed": true })),
            Err(_) => Err(error(
                StatusCode::BAD_GATEWAY,
                "the plugin failed to handle the push",
            )),
        }
    })
    .await
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
