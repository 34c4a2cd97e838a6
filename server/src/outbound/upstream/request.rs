//! What a plugin asks `upstream-connect` for, checked before anything is
//! spent on it: a `ws://` or `wss://` URL, subprotocols and handshake
//! headers within fixed bounds, and none of the headers the host writes
//! itself (a plugin may not pick the `Host` an allowed address is asked
//! for, nor smuggle a second request into the handshake).

use axum::http::{HeaderName, HeaderValue};
use url::Url;

/// The longest URL a plugin may give.
pub const MAX_URL_BYTES: usize = 2048;
/// Subprotocols one handshake may offer.
pub const MAX_PROTOCOLS: usize = 16;
/// Headers one handshake may carry.
pub const MAX_HEADERS: usize = 32;
/// Bytes of header names and values and subprotocols, together.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Headers the host writes (the handshake's own, and framing), or that
/// would let a plugin address another site than the URL's.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
];

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a ws:// or wss:// URL with a host, without credentials or a fragment")]
    Url,
    #[error("bad subprotocols or headers: too many, too long, malformed or reserved")]
    Argument,
}

/// A checked handshake request.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub url: Url,
    pub protocols: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl UpstreamRequest {
    pub fn new(
        url: &str,
        protocols: Vec<String>,
        headers: Vec<(String, String)>,
    ) -> Result<UpstreamRequest, Invalid> {
        let url = parse_url(url)?;
        if protocols.len() > MAX_PROTOCOLS || headers.len() > MAX_HEADERS {
            return Err(Invalid::Argument);
        }
        let bytes = protocols.iter().map(String::len).sum::<usize>()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if bytes > MAX_HEADER_BYTES {
            return Err(Invalid::Argument);
        }
        for (i, protocol) in protocols.iter().enumerate() {
            if !is_token(protocol) || protocols[..i].contains(protocol) {
                return Err(Invalid::Argument);
            }
        }
        let headers = headers
            .into_iter()
            .map(|(name, value)| {
                let name =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| Invalid::Argument)?;
                let value = HeaderValue::from_str(&value).map_err(|_| Invalid::Argument)?;
                if RESERVED.contains(&name.as_str()) || name.as_str().starts_with("sec-websocket-")
                {
                    return Err(Invalid::Argument);
                }
                Ok((name, value))
            })
            .collect::<Result<_, _>>()?;
        Ok(UpstreamRequest {
            url,
            protocols,
            headers,
        })
    }

    /// The handshake's HTTP request, but for what yawc adds (method, path,
    /// `Host`, the upgrade headers and the key).
    pub fn builder(&self) -> yawc::HttpRequestBuilder {
        let mut builder = yawc::HttpRequest::builder();
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if !self.protocols.is_empty() {
            builder = builder.header("sec-websocket-protocol", self.protocols.join(", "));
        }
        builder
    }
}

fn parse_url(text: &str) -> Result<Url, Invalid> {
    if text.len() > MAX_URL_BYTES {
        return Err(Invalid::Url);
    }
    let url = Url::parse(text).map_err(|_| Invalid::Url)?;
    let plain = matches!(url.scheme(), "ws" | "wss")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none();
    plain.then_some(url).ok_or(Invalid::Url)
}

/// An RFC 7230 token: what a subprotocol name must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls() {
        for ok in [
            "ws://feed.example.com/x?y=1",
            "wss://127.0.0.1:9000",
            "ws://[::1]:80/",
        ] {
            assert!(UpstreamRequest::new(ok, vec![], vec![]).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/",
            "ws://",
            "ws://user:pw@example.com/",
            "ws://example.com/#frag",
            "not a url",
            &format!("ws://example.com/{}", "a".repeat(MAX_URL_BYTES)),
        ] {
            let err = UpstreamRequest::new(bad, vec![], vec![]).unwrap_err();
            assert_eq!(err, Invalid::Url, "{bad}");
        }
    }

    #[test]
    fn protocols_and_headers_are_bounded_and_checked() {
        let url = "wss://feed.example.com/";
        let ok = UpstreamRequest::new(
            url,
            strings(&["v2.feed", "v1.feed"]),
            pairs(&[("Authorization", "Bearer t"), ("x-client", "wsgate")]),
        )
        .unwrap();
        let req = ok.builder().uri("/").body(()).unwrap();
        assert_eq!(req.headers()["sec-websocket-protocol"], "v2.feed, v1.feed");
        assert_eq!(req.headers()["authorization"], "Bearer t");
        let refused = |protocols: Vec<String>, headers: Vec<(String, String)>| {
            UpstreamRequest::new(url, protocols, headers).unwrap_err()
        };
        for protocols in [
            strings(&[""]),
            strings(&["a b"]),
            strings(&["a,b"]),
            strings(&["same", "same"]),
            vec!["p".to_string(); MAX_PROTOCOLS + 1],
        ] {
            assert_eq!(
                refused(protocols.clone(), vec![]),
                Invalid::Argument,
                "{protocols:?}"
            );
        }
        for header in [
            ("Host", "internal.example"),
            ("sec-websocket-key", "x"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("x-bad", "a\r\nInjected: yes"),
            ("bad name", "x"),
        ] {
            assert_eq!(
                refused(vec![], pairs(&[header])),
                Invalid::Argument,
                "{header:?}"
            );
        }
        let many = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        assert_eq!(refused(vec![], many), Invalid::Argument);
        let big = vec![("x-big".to_string(), "v".repeat(MAX_HEADER_BYTES))];
        assert_eq!(refused(vec![], big), Invalid::Argument);
    }
}
