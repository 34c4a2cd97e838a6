//! Opening an upstream: the addresses the policy resolved and checked
//! (never the name again, so a DNS answer that changes in between cannot
//! point the connection elsewhere), TCP, TLS for `wss://` with the URL's
//! host as the server name, then the WebSocket handshake. A failure says
//! what went wrong in words a plugin may be told: the destination and the
//! stage, never an address it did not give or anything about the host.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use yawc::{MaybeTlsStream, Options, WebSocket, WebSocketError};

use super::request::UpstreamRequest;
use crate::outbound::{Denied, Destination, OutboundPolicy};

/// An upstream's transport.
pub type Stream = MaybeTlsStream<TcpStream>;

/// Why an upstream did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The name resolved to an address no entry allows.
    Denied(Destination),
    Unresolved(Destination),
    Refused,
    /// Unreachable, reset, or another network error.
    Network(&'static str),
    /// The whole connect (resolution, TCP, TLS, handshake) took too long.
    Timeout,
    Tls(String),
    Handshake(String),
}

impl Failure {
    /// The metric label: one of a few fixed words.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Denied(_) => "denied",
            Failure::Unresolved(_) => "unresolved",
            Failure::Refused => "refused",
            Failure::Network(_) => "network",
            Failure::Timeout => "timeout",
            Failure::Tls(_) => "tls",
            Failure::Handshake(_) => "handshake",
        }
    }

    /// The reason `on-upstream-close` carries, cut to what a close reason
    /// may hold.
    pub fn reason(&self) -> String {
        let text = match self {
            Failure::Denied(dest) => {
                format!("denied: {dest} resolves to an address that is not allowed")
            }
            Failure::Unresolved(dest) => format!("{} does not resolve", dest.host),
            Failure::Refused => "connection refused".into(),
            Failure::Network(what) => (*what).into(),
            Failure::Timeout => "timed out connecting".into(),
            Failure::Tls(what) => format!("TLS handshake failed: {what}"),
            Failure::Handshake(what) => format!("handshake failed: {what}"),
        };
        cut(text, crate::protocol::close::MAX_REASON_BYTES)
    }
}

/// `text` cut at a character boundary to at most `max` bytes.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Resolves, connects and handshakes; the caller bounds the time.
pub async fn dial(
    req: &UpstreamRequest,
    dest: &Destination,
    policy: &OutboundPolicy,
    tls: &Arc<rustls::ClientConfig>,
    options: Options,
) -> Result<WebSocket<Stream>, Failure> {
    let addrs = policy.resolve(dest).await.map_err(|e| match e {
        Denied::Unresolved(dest) => Failure::Unresolved(dest),
        Denied::PrivateAddress(dest, ip) => {
            tracing::debug!(%dest, %ip, "upstream denied: a private address");
            Failure::Denied(dest)
        }
        Denied::BadUrl | Denied::NotAllowed(_) => Failure::Denied(dest.clone()),
    })?;
    let tcp = connect_first(&addrs).await?;
    let _ = tcp.set_nodelay(true);
    let stream = if dest.scheme.is_tls() {
        let name = ServerName::try_from(dest.host.clone())
            .map_err(|_| Failure::Tls("not a valid server name".into()))?;
        let tls = TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(tls_failure)?;
        MaybeTlsStream::Tls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    WebSocket::handshake_with_request(req.url.clone(), stream, options, req.builder())
        .await
        .map_err(handshake_failure)
}

/// The first of `addrs` that accepts, tried in order.
async fn connect_first(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = Failure::Network("no address to connect to");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = network_failure(&e),
        }
    }
    Err(last)
}

fn network_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::ConnectionReset => Failure::Network("connection reset"),
        io::ErrorKind::ConnectionAborted => Failure::Network("connection aborted"),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
            Failure::Network("connection closed")
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            Failure::Network("unreachable")
        }
        io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Network("connection failed"),
    }
}

/// rustls says what was wrong with the certificate or the handshake in
/// words about the peer, which is what the plugin needs to hear.
fn tls_failure(e: io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Failure::Tls(tls.to_string()),
        None => match network_failure(&e) {
            Failure::Network(what) => Failure::Tls(what.into()),
            other => other,
        },
    }
}

fn handshake_failure(e: WebSocketError) -> Failure {
    let what = match e {
        WebSocketError::InvalidStatusCode(status) => format!("status {status}"),
        WebSocketError::Redirected { status_code, .. } => {
            format!("status {status_code} (redirects are not followed)")
        }
        WebSocketError::InvalidUpgradeHeader | WebSocketError::InvalidConnectionHeader => {
            "not a WebSocket upgrade".into()
        }
        WebSocketError::IoError(e) => return network_failure(&e),
        WebSocketError::HTTPError(e) if e.is_incomplete_message() => "connection closed".into(),
        WebSocketError::HTTPError(e) if e.is_parse_too_large() => "response head too large".into(),
        WebSocketError::HTTPError(e) if e.is_parse() => "not an HTTP response".into(),
        _ => "connection failed".into(),
    };
    Failure::Handshake(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_plain_and_fit_a_close_frame() {
        assert_eq!(Failure::Refused.reason(), "connection refused");
        assert_eq!(
            Failure::Handshake("status 403".into()).reason(),
            "handshake failed: status 403"
        );
        let dest = Destination {
            scheme: crate::outbound::Scheme::Ws,
            host: "é".repeat(100),
            port: 80,
        };
        let long = Failure::Denied(dest).reason();
        assert!(
            long.len() <= 123 && long.starts_with("denied: ws://"),
            "{long}"
        );
    }
}
