//! Which web pages may open a WebSocket here. Browsers send the page's
//! `Origin` with every handshake, and the user's cookies with it, so
//! without a check any site the user visits could talk to a plugin in the
//! user's name (cross-site WebSocket hijacking). The default is the page's
//! own site: the Origin's host and port must be the ones the request was
//! sent to (`Host`). `limits.allowed_origins` lists others instead, and
//! `["*"]` allows any. Clients that send no Origin (anything but a
//! browser) are not affected: they carry no one else's cookies.

use axum::http::{HeaderMap, StatusCode, header};

pub fn check(allowed: &[String], headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let ok = match allowed {
        [any] if any == "*" => true,
        [] => same_site(origin.to_str().ok(), headers),
        list => origin
            .to_str()
            .is_ok_and(|origin| list.iter().any(|a| a.eq_ignore_ascii_case(origin))),
    };
    if ok {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "origin not allowed"))
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request
/// was sent to.
fn same_site(origin: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some(origin) = origin.and_then(|o| url::Url::parse(o).ok()) else {
        return false;
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    // A default port is left out of both (`url` drops it from the Origin).
    let authority = match (origin.port(), origin.port_or_known_default()) {
        (Some(port), _) => format!("{origin_host}:{port}"),
        (None, Some(default)) if host.ends_with(&format!(":{default}")) => {
            format!("{origin_host}:{default}")
        }
        (None, _) => origin_host.to_owned(),
    };
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn same_site_by_default() {
        let none: [String; 0] = [];
        assert!(check(&none, &headers("http://127.0.0.1:8080", "127.0.0.1:8080")).is_ok());
        assert!(check(&none, &headers("https://chat.example", "chat.example")).is_ok());
        assert!(check(&none, &headers("https://chat.example", "chat.example:443")).is_ok());
        assert!(check(&none, &headers("http://evil.example", "127.0.0.1:8080")).is_err());
        assert!(check(&none, &headers("http://127.0.0.1:9999", "127.0.0.1:8080")).is_err());
        assert!(check(&none, &headers("null", "127.0.0.1:8080")).is_err());
        // No Origin: not a browser.
        assert!(check(&none, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn lists_and_the_wildcard() {
        let h = headers("https://evil.example", "127.0.0.1:8080");
        assert!(check(&["*".to_owned()], &h).is_ok());
        let strict = ["https://app.example".to_owned()];
        assert_eq!(check(&strict, &h).err().unwrap().0, StatusCode::FORBIDDEN);
        let h = headers("https://APP.example", "127.0.0.1:8080");
        assert!(check(&strict, &h).is_ok());
    }
}
