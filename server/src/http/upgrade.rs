//! The WebSocket handshake: the plugin's `on-open` decides before the
//! upgrade, so a refusal is a real HTTP status with the plugin's reason,
//! never an opaque 500.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use yawc::{CompressionLevel, DeflatePool, IncomingUpgrade, Options};

use crate::gateway::Gateway;
use crate::protocol::close;
use crate::protocol::session::{self, Session};
use crate::registry::Connection;
use crate::routing::{CHANNEL_PARAM, Matched};
use crate::runtime::bindings::{OpenDecision, Request as HookRequest};
use crate::runtime::to_ws;

/// Initial read buffer per connection; large messages grow it for as long
/// as they take, idle connections hold only this.
const READ_BUFFER: usize = 4096;

/// Initial write buffer: most connections are idle most of the time, and
/// the buffer grows with the first burst written to it.
const WRITE_BUFFER: usize = 256;

/// Messages shorter than this go out uncompressed: deflate's framing would
/// make them no smaller.
const COMPRESSION_THRESHOLD: usize = 64;

pub async fn handle(
    gw: Arc<Gateway>,
    matched: Matched,
    remote: SocketAddr,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    if let Err(refusal) = check_handshake(&parts) {
        return refusal.into_response();
    }
    if gw.config.permessage_deflate {
        pick_deflate_offer(&mut parts.headers);
    }
    let upgrade = match IncomingUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(status) => return (status, "invalid WebSocket handshake").into_response(),
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
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    let Matched { route, params } = matched;
    let listener = route.listener.clone();
    let scope = listener.env.scope.clone();
    let limits = &gw.config.limits;
    let protocol = select_protocol(&parts.headers, &listener.env.subprotocols);
    let hook_request = hook_request(&parts, &route.pattern, params, remote, protocol.clone());
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
        max_message_size: limits.max_message_size,
    };
    let options = socket_options(limits.max_message_size, gw.config.permessage_deflate);
    let (mut response, socket) = match upgrade.upgrade(options) {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(conn = conn.id, "handshake refused: {e}");
            session::end(&conn, &route, close::ABNORMAL, String::new()).await;
            return (StatusCode::BAD_REQUEST, "invalid WebSocket handshake").into_response();
        }
    };
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    // The conversation gets a task of its own once the upgrade is done:
    // inside this one it would also keep room for the upgrade's state, and
    // a task's size is paid for as long as its connection is open.
    let sessions = gw.sessions.clone();
    gw.sessions.spawn(async move {
        match socket.await {
            Ok(socket) => {
                sessions.spawn(session.run(socket).map(move |()| drop(slot)));
            }
            Err(e) => {
                tracing::debug!(conn = conn.id, "upgrade failed: {e}");
                session::end(&conn, &route, close::ABNORMAL, String::new()).await;
            }
        }
    });
    response.map(axum::body::Body::new)
}

/// What axum's own extractor checked and yawc's does not: a handshake is a
/// GET asking to upgrade to websocket.
fn check_handshake(parts: &Parts) -> Result<(), (StatusCode, &'static str)> {
    if parts.method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "WebSocket handshakes use GET",
        ));
    }
    let has_token = |name, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err((StatusCode::BAD_REQUEST, "not a WebSocket handshake"));
    }
    Ok(())
}

/// The first of the server's subprotocols the client offered: the server's
/// order is its preference.
fn select_protocol(headers: &HeaderMap, ours: &[String]) -> Option<String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    ours.iter().find(|p| offered.contains(&p.as_str())).cloned()
}

/// Leaves only the first permessage-deflate offer the server can honor:
/// yawc reads only the first offer of one header line, and deflate cannot
/// use a window under 9 bits (`server_max_window_bits=8`).
fn pick_deflate_offer(headers: &mut HeaderMap) {
    let honorable = |offer: &&str| {
        let mut params = offer.split(';').map(str::trim);
        params
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
            && params.all(|p| {
                let (key, value) = p.split_once('=').unwrap_or((p, ""));
                !key.trim().eq_ignore_ascii_case("server_max_window_bits")
                    || value
                        .trim()
                        .parse()
                        .is_ok_and(|bits: u8| (9..=15).contains(&bits))
            })
    };
    let offer = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(honorable)
        .and_then(|offer| HeaderValue::from_str(offer.trim()).ok());
    match offer {
        Some(offer) => headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offer),
        None => headers.remove(header::SEC_WEBSOCKET_EXTENSIONS),
    };
}

fn socket_options(max_message_size: usize, permessage_deflate: bool) -> Options {
    // yawc refuses a frame that reaches its limit; ours is inclusive. Whole
    // messages are reassembled, and checked for UTF-8, by protocol::socket.
    let options = Options::default()
        .with_max_payload_read(max_message_size.saturating_add(1))
        .with_read_buffer_capacity(READ_BUFFER)
        .with_write_buffer_capacity(WRITE_BUFFER);
    if !permessage_deflate {
        return options;
    }
    // No context takeover either way lets connections share deflate state
    // between messages: an idle connection then holds a few KiB instead of
    // ~370 KiB of its own windows, for a somewhat lower ratio.
    options
        .with_compression_level(CompressionLevel::fast())
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(deflate_pool().clone())
        .with_compression_threshold(COMPRESSION_THRESHOLD)
}

/// One pool for the process, sized for the messages compressed at once.
fn deflate_pool() -> &'static DeflatePool {
    static POOL: std::sync::OnceLock<DeflatePool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        DeflatePool::new(workers * 2)
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
    use axum::http::{HeaderMap, header};

    fn picked(offers: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for offer in offers {
            headers.append(header::SEC_WEBSOCKET_EXTENSIONS, offer.parse().unwrap());
        }
        super::pick_deflate_offer(&mut headers);
        let value = headers.get(header::SEC_WEBSOCKET_EXTENSIONS)?;
        Some(value.to_str().unwrap().to_owned())
    }

    #[test]
    fn deflate_offers() {
        let first = picked(&[
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits, permessage-deflate",
        ]);
        assert_eq!(
            first.as_deref(),
            Some("permessage-deflate; client_max_window_bits")
        );
        let full = picked(&["permessage-deflate; server_max_window_bits=15"]);
        assert_eq!(
            full.as_deref(),
            Some("permessage-deflate; server_max_window_bits=15")
        );
        assert_eq!(
            picked(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
    }

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
