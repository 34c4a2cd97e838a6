//! Outbound HTTP requests from a listener, over `wasi:http`.
//!
//! ```ignore
//! use wsgate_sdk::http;
//!
//! let answer = http::get("https://auth.example.com/me", &[("authorization", "Bearer abc")])?;
//! if answer.status == 200 { /* ... */ }
//!
//! let created = http::Request::post("https://api.example.com/items", r#"{"name":"x"}"#)
//!     .header("content-type", "application/json")
//!     .timeout(std::time::Duration::from_secs(2))
//!     .send()?;
//! ```
//!
//! A request blocks the hook that makes it until the response has been
//! read, so it costs that hook's time (`timeouts.hook`, 5 s by default)
//! and keeps one of the plugin's instances busy meanwhile.
//!
//! Nothing is reachable unless the plugin's sidecar asks for it and the
//! server's operator allows it:
//!
//! ```toml
//! # plugins/NAME.toml
//! [grants]
//! allowed_outbound_hosts = ["https://auth.example.com", "https://*.api.example.com"]
//! ```
//!
//! Anything else fails with [`HttpError::Denied`], and so does a name that
//! resolves to a loopback or private address unless an entry names that
//! address ([`HttpError::ForbiddenAddress`]). The server caps the response
//! body (`outbound.http.max_response_bytes`, 1 MiB by default:
//! [`HttpError::TooLarge`]), each step's time (`outbound.http.timeout`, 5 s:
//! [`HttpError::Timeout`]) and the plugin's requests in flight
//! (`outbound.http.max_in_flight`, 16: [`HttpError::TooManyRequests`]).
//!
//! With the `testing` feature, requests go to the in-memory host instead:
//! answer them with [`FakeHost::on_http`](crate::testing::FakeHost::on_http).

use std::fmt;
use std::time::Duration;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    /// Any other token, e.g. `PROPFIND`.
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to send: built up from its method and URL, then [`send`](Request::send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// At most this long for each step (connecting, the response's first
    /// byte, each wait between body bytes); the server's own limit and the
    /// hook's deadline still apply when shorter.
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::Get, url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::Post, url).body(body)
    }

    /// Adds a header. `host`, `connection`, `transfer-encoding` and the
    /// other hop-by-hop headers are the host's to set: a request carrying
    /// one fails with [`HttpError::InvalidHeader`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends it and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        request(self)
    }
}

/// A response, read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body` and no headers: for tests'
    /// canned answers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not an absolute `http://` or `https://` URL.
    InvalidUrl,
    /// A header the host sets itself, or one that is not valid HTTP.
    InvalidHeader(String),
    /// The URL is not in the plugin's `allowed_outbound_hosts` (or the
    /// operator did not allow it).
    Denied,
    /// The name resolves to a loopback or private address that no
    /// `allowed_outbound_hosts` entry names.
    ForbiddenAddress,
    /// The name does not resolve.
    Dns,
    /// The plugin already has `outbound.http.max_in_flight` requests
    /// running; this one was not sent.
    TooManyRequests,
    /// A step took too long, or the hook's deadline came.
    Timeout,
    /// The response body is larger than `outbound.http.max_response_bytes`.
    TooLarge,
    /// The connection was refused, reset or could not be made.
    Connection,
    /// The TLS handshake failed (e.g. an untrusted certificate).
    Tls,
    /// The answer was not HTTP, or was cut short.
    Protocol,
    /// Anything else, as `wasi:http` described it.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl => f.write_str("not an absolute http:// or https:// URL"),
            HttpError::InvalidHeader(name) => write!(f, "header {name:?} may not be sent"),
            HttpError::Denied => f.write_str("not in the plugin's allowed_outbound_hosts"),
            HttpError::ForbiddenAddress => {
                f.write_str("the name resolves to a loopback or private address")
            }
            HttpError::Dns => f.write_str("the name does not resolve"),
            HttpError::TooManyRequests => f.write_str("too many requests in flight"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::TooLarge => f.write_str("the response is too large"),
            HttpError::Connection => f.write_str("could not connect"),
            HttpError::Tls => f.write_str("TLS failed"),
            HttpError::Protocol => f.write_str("not a valid HTTP response"),
            HttpError::Other(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// A short name for the error, e.g. for a reply to a client:
    /// `denied`, `timeout`, `too-large`...
    pub fn name(&self) -> &'static str {
        match self {
            HttpError::InvalidUrl => "invalid-url",
            HttpError::InvalidHeader(_) => "invalid-header",
            HttpError::Denied => "denied",
            HttpError::ForbiddenAddress => "forbidden-address",
            HttpError::Dns => "dns",
            HttpError::TooManyRequests => "too-many-requests",
            HttpError::Timeout => "timeout",
            HttpError::TooLarge => "too-large",
            HttpError::Connection => "connection",
            HttpError::Tls => "tls",
            HttpError::Protocol => "protocol",
            HttpError::Other(_) => "other",
        }
    }
}

/// `GET url` with `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    let req = headers
        .iter()
        .fold(Request::get(url), |req, (name, value)| {
            req.header(*name, *value)
        });
    request(req)
}

/// Sends `req` and reads the whole response.
pub fn request(req: Request) -> Result<Response, HttpError> {
    #[cfg(not(feature = "testing"))]
    return wasi::send(req);
    #[cfg(feature = "testing")]
    return crate::testing::fake_http(req);
}

/// The parts of an absolute URL that `wasi:http` takes apart: scheme,
/// authority, and path with query (the fragment is not sent).
pub(crate) fn split_url(url: &str) -> Result<(bool, &str, String), HttpError> {
    let (scheme, rest) = url.split_once("://").ok_or(HttpError::InvalidUrl)?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(HttpError::InvalidUrl),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::InvalidUrl);
    }
    let path = match path.strip_prefix('?') {
        Some(_) => format!("/{path}"),
        None if path.is_empty() => "/".to_owned(),
        None => path.to_owned(),
    };
    Ok((https, authority, path))
}

#[cfg(not(feature = "testing"))]
mod wasi {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, Method as WasiMethod, OutgoingBody,
        OutgoingRequest, RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::{HttpError, Method, Request, Response, split_url};

    /// The most read or written in one stream call.
    const CHUNK: u64 = 64 << 10;

    pub fn send(req: Request) -> Result<Response, HttpError> {
        let (https, authority, path) = split_url(&req.url)?;
        let headers = Fields::new();
        let has_length = req
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        if !req.body.is_empty() && !has_length {
            // Announced, so the body goes out as it is rather than chunked.
            let _ = headers.append("content-length", req.body.len().to_string().as_bytes());
        }
        for (name, value) in &req.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| match e {
                    HeaderError::InvalidSyntax
                    | HeaderError::Forbidden
                    | HeaderError::Immutable => HttpError::InvalidHeader(name.clone()),
                })?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let method = match &req.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Delete => WasiMethod::Delete,
            Method::Patch => WasiMethod::Patch,
            Method::Options => WasiMethod::Options,
            Method::Other(m) => WasiMethod::Other(m.clone()),
        };
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        let valid = outgoing.set_method(&method).is_ok()
            && outgoing.set_scheme(Some(&scheme)).is_ok()
            && outgoing.set_authority(Some(authority)).is_ok()
            && outgoing.set_path_with_query(Some(&path)).is_ok();
        if !valid {
            return Err(HttpError::InvalidUrl);
        }
        let body = outgoing
            .body()
            .map_err(|()| HttpError::Other("no request body".into()))?;
        let options = req.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let future = outgoing_handler::handle(outgoing, options).map_err(from_code)?;
        // The body streams out as the host sends the request; a refused
        // request stops taking it, and the response says why.
        write_body(&body, &req.body);
        let _ = OutgoingBody::finish(body, None);

        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(from_code(code)),
            _ => return Err(HttpError::Other("no response".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Other("no response body".into()))?;
        let body = read_body(&incoming)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn write_body(body: &OutgoingBody, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Ok(stream) = body.write() else { return };
        for chunk in bytes.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }

    fn read_body(body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
        let stream = body
            .stream()
            .map_err(|()| HttpError::Other("no response body stream".into()))?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(CHUNK) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(out),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => from_code(code),
                        None => from_message(&e.to_debug_string()),
                    });
                }
            }
        }
    }

    fn from_code(code: ErrorCode) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied,
            ErrorCode::DestinationIpProhibited => HttpError::ForbiddenAddress,
            ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl,
            ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => HttpError::Dns,
            ErrorCode::ConnectionLimitReached => HttpError::TooManyRequests,
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout,
            ErrorCode::HttpResponseBodySize(_) => HttpError::TooLarge,
            ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpUnroutable => HttpError::Connection,
            ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => HttpError::Tls,
            ErrorCode::HttpProtocolError
            | ErrorCode::HttpResponseIncomplete
            | ErrorCode::HttpResponseHeaderSectionSize(_)
            | ErrorCode::HttpResponseHeaderSize(_) => HttpError::Protocol,
            other => HttpError::Other(format!("{other:?}")),
        }
    }

    /// A body stream's failure, which `wasi:http` 0.2 hosts report as text
    /// (wasmtime's messages) rather than as an error code.
    fn from_message(message: &str) -> HttpError {
        let lower = message.to_ascii_lowercase();
        if lower.contains("body size") {
            HttpError::TooLarge
        } else if lower.contains("timeout") || lower.contains("timed out") {
            HttpError::Timeout
        } else if lower.contains("connection") {
            HttpError::Connection
        } else {
            HttpError::Other(message.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_wasi_http_takes() {
        assert_eq!(
            split_url("https://api.example.com:8443/v1/items?x=1#top"),
            Ok((true, "api.example.com:8443", "/v1/items?x=1".to_owned()))
        );
        assert_eq!(
            split_url("http://127.0.0.1:9000"),
            Ok((false, "127.0.0.1:9000", "/".to_owned()))
        );
        assert_eq!(
            split_url("HTTP://example.com?q"),
            Ok((false, "example.com", "/?q".to_owned()))
        );
        for bad in [
            "example.com/x",
            "ftp://example.com/",
            "https:///path",
            "https://user:pw@example.com/",
        ] {
            assert_eq!(split_url(bad), Err(HttpError::InvalidUrl), "{bad}");
        }
    }
}
