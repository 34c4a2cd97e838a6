//! The WebSocket handshake: the plugin's `on-open` decides before the
//! upgrade, so a refusal is a real HTTP status with the plugin's reason,
//! never an opaque 500.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::gateway::Gateway;
use crate::protocol::close;
use crate::protocol::session::{self, Session};
use crate::registry::Connection;
use crate::routing::{CHANNEL_PARAM, Matched};
use crate::runtime::bindings::{OpenDecision, Request as HookRequest};
use crate::runtime::to_ws;

/// Initial read buffer per connection.
const READ_BUFFER: usize = 4096;

pub async fn handle(
    gw: Arc<Gateway>,
    matched: Matched,
    remote: SocketAddr,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if gw.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    if matched.route.listener.crashes.is_tripped() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this service is unavailable",
        )
            .into_response();
    }
    if let Err(refusal) = gw.admission.check_origin(&parts.headers) {
        return refusal.into_response();
    }
    // Held for the connection's life; refused or failed handshakes drop it.
    let slot = match gw.admission.admit(remote.ip()) {
        Ok(slot) => Arc::new(slot),
        Err(refusal) => return refusal.into_response(),
    };
    let Matched { route, params } = matched;
    let listener = route.listener.clone();
    let scope = listener.env.scope.clone();
    let limits = &gw.config.limits;
    let upgrade = upgrade.protocols(listener.env.subprotocols.clone());
    let protocol = upgrade
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_owned);
    let hook_request = hook_request(&parts, &route.pattern, params, remote, protocol);
    let channel = hook_request
        .params
        .iter()
        .find(|(k, _)| k == CHANNEL_PARAM)
        .map(|(_, v)| v.clone());

    let (conn, queue) = Connection::new(
        gw.registry.next_id(),
        listener.name.clone(),
        route.pattern.clone(),
        hook_request.path.clone(),
        remote,
        limits.send_queue,
    );
    scope.insert(conn.clone());
    session::enter_route(&route).await;
    if let Some(channel) = channel.filter(|c| c.len() <= limits.max_name_len) {
        scope.subscribe(&conn, &channel);
    }

    let greeting = match listener.on_open(conn.id, hook_request).await {
        Ok(OpenDecision::Accept) => None,
        Ok(OpenDecision::Greet(msg)) => Some(to_ws(msg)),
        Ok(OpenDecision::Reject(rejection)) => {
            session::forget(&conn, &route).await;
            let status = StatusCode::from_u16(rejection.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error());
            let Some(status) = status else {
                tracing::warn!(plugin = %listener.name, status = rejection.status,
                    "on-open rejected with a status outside 400-599; answering 500");
                return (StatusCode::INTERNAL_SERVER_ERROR, "connection refused").into_response();
            };
            return (status, rejection.reason).into_response();
        }
        Err(_) => {
            session::forget(&conn, &route).await;
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the listener failed to open the connection",
            )
                .into_response();
        }
    };

    let session = Session {
        conn: conn.clone(),
        queue,
        greeting,
        route: route.clone(),
        timeouts: gw.config.timeouts.clone(),
        message_rate: limits.messages_per_second,
    };
    let tracker = gw.sessions.clone();
    upgrade
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
        // tungstenite's 128 KiB default read buffer is zero-filled per read
        // and held by every idle connection; large messages still grow it.
        .read_buffer_size(READ_BUFFER)
        .on_failed_upgrade({
            let slot = slot.clone();
            move |e| {
                tracing::debug!(conn = conn.id, "upgrade failed: {e}");
                tokio::spawn(async move {
                    session::end(&conn, &route, close::ABNORMAL, String::new()).await;
                    drop(slot);
                });
            }
        })
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                session.run(socket).await;
                drop(slot);
            })
        })
}

fn hook_request(
    parts: &Parts,
    pattern: &str,
    params: Vec<(String, String)>,
    remote: SocketAddr,
    protocol: Option<String>,
) -> HookRequest {
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let cookies = parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_cookies)
        .collect();
    let subprotocols = parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    HookRequest {
        path: parts.uri.path().to_owned(),
        route: pattern.to_owned(),
        params,
        query,
        headers,
        cookies,
        remote_addr: remote.to_string(),
        subprotocols,
        protocol,
    }
}

/// `a=1; b=2` into pairs; malformed pieces are skipped.
pub fn parse_cookies(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            let v = v.trim().trim_matches('"');
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cookies() {
        let c = super::parse_cookies("a=1; b = \"two\" ;bad; =x; c=");
        assert_eq!(
            c,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two".into()),
                ("c".into(), "".into())
            ]
        );
    }
}
