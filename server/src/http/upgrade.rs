//! The WebSocket handshake, as far as HTTP goes: checking the request,
//! negotiating subprotocol and compression, and answering with the 101 or
//! a refusal. The connection's life (admission, `on-open` and everything
//! after) belongs to [`lifecycle`](crate::lifecycle); the plugin decides
//! before the upgrade, so a refusal is a real HTTP status with the
//! plugin's reason, never an opaque 500.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use yawc::{CompressionLevel, DeflatePool, IncomingUpgrade, Options};

use super::origin;
use crate::gateway::Gateway;
use crate::lifecycle::{Decision, Refusal};
use crate::protocol::direct::PlainSocket;
use crate::routing::Matched;
use crate::runtime::OpenRequest;

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
    if let Err(refusal) = origin::check(&gw.config.limits.allowed_origins, &parts.headers) {
        return refusal.into_response();
    }
    let Matched { route, params } = matched;
    let protocol = select_protocol(&parts.headers, &route.listener.env.subprotocols);
    let request = open_request(&parts, &route.pattern, params, remote, protocol.clone());
    let mut opening = match gw.lifecycle.open(route, request, remote) {
        Ok(opening) => opening,
        Err(refusal) => return refused(refusal),
    };
    if let Decision::Refuse(refusal) = opening.decision().await {
        return refused(refusal);
    }
    let limits = &gw.config.limits;
    let options = socket_options(limits.max_message_size, gw.config.permessage_deflate)
        .with_read_budget(gw.lifecycle.reassembly.clone());
    // Dropping `opening` on failure lets the connection's task undo it.
    let (mut response, socket) = match upgrade.upgrade(options) {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("handshake refused: {e}");
            return (StatusCode::BAD_REQUEST, "invalid WebSocket handshake").into_response();
        }
    };
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    opening.upgraded(socket, parts.extensions.get::<PlainSocket>().copied());
    response.map(axum::body::Body::new)
}

fn refused(refusal: Refusal) -> Response {
    (refusal.status, refusal.reason.into_owned()).into_response()
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
    // RFC 6455 §4.1: a base64-encoded 16-byte nonce, sent once.
    let mut keys = parts.headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let nonce = match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD.decode(key.as_bytes()),
        _ => return Err((StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key")),
    };
    if nonce.map_or(true, |n| n.len() != 16) {
        return Err((StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"));
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

/// The handshake as `on-open` sees it.
fn open_request(
    parts: &Parts,
    pattern: &str,
    params: Vec<(String, String)>,
    remote: SocketAddr,
    protocol: Option<String>,
) -> OpenRequest {
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
    OpenRequest {
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
