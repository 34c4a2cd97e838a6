//! `allowed_outbound_hosts`: which URLs a plugin may reach. Entries are
//! written as Spin's manifests write them, `scheme://host[:port]`, with
//! `*` for any scheme, any host (`*`), any subdomain (`*.example.com`) or
//! any port. A sidecar asks for entries; each must be covered by an entry
//! of the operator's `[grants] allowed_outbound_hosts`, so a plugin author
//! cannot widen what the operator allowed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::Url;

/// A URL scheme a plugin may use: HTTP for `wasi:http`, WebSocket for
/// upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "ws" => Some(Scheme::Ws),
            "wss" => Some(Scheme::Wss),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Ws => 80,
            Scheme::Https | Scheme::Wss => 443,
        }
    }

    pub const fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemePattern {
    Any,
    Exact(Scheme),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// `*`: any host, by name or address.
    Any,
    /// `*.example.com`: any name below `example.com` (not itself).
    Below(String),
    /// A name, lower-cased.
    Name(String),
    /// An address literal: the only way to reach a loopback or private
    /// address (besides `localhost` for loopback).
    Address(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    /// The scheme's default port when the entry names none.
    Default,
    Exact(u16),
}

/// One `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    text: String,
    scheme: SchemePattern,
    pub(super) host: HostPattern,
    port: PortPattern,
}

/// Where a URL goes: what the policy checks and the connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    /// The host as written in the URL (a name, or an address literal
    /// without IPv6 brackets), lower-cased: the TLS server name.
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// The scheme, host and port of an absolute `http`, `https`, `ws` or
    /// `wss` URL.
    pub fn of(url: &Url) -> Option<Destination> {
        let scheme = Scheme::parse(url.scheme())?;
        let host = match url.host()? {
            url::Host::Domain(name) => name.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = url.port().unwrap_or(scheme.default_port());
        Some(Destination { scheme, host, port })
    }

    /// The host as an address, when it is a literal.
    pub fn address(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address() {
            Some(IpAddr::V6(ip)) => write!(f, "{}://[{ip}]:{}", self.scheme.as_str(), self.port),
            _ => write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port),
        }
    }
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(text: &str) -> Result<AllowedHost, String> {
        let bad = |why: &str| {
            format!(
                "allowed_outbound_hosts entry {text:?}: {why} (expected scheme://host[:port], e.g. \"https://api.example.com\" or \"ws://127.0.0.1:9000\")"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "*" => SchemePattern::Any,
            s => SchemePattern::Exact(
                Scheme::parse(s)
                    .ok_or_else(|| bad("the scheme must be http, https, ws, wss or *"))?,
            ),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only a scheme, a host and a port: no path, query or user",
            ));
        }
        // An IPv6 literal is bracketed: its colons are not the port's.
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                };
                let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| bad("a bad IPv6 address"))?;
                (HostPattern::Address(IpAddr::V6(ip)), port)
            }
            None => {
                let (host, port) = match rest.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (rest, None),
                };
                (host_pattern(host).ok_or_else(|| bad("a bad host"))?, port)
            }
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(
                p.parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad("a bad port"))?,
            ),
        };
        if scheme == SchemePattern::Any && port == PortPattern::Default {
            return Err(bad("with scheme * the port must be given (a number or *)"));
        }
        Ok(AllowedHost {
            text: text.to_owned(),
            scheme,
            host,
            port,
        })
    }
}

fn host_pattern(host: &str) -> Option<HostPattern> {
    if host == "*" {
        return Some(HostPattern::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(HostPattern::Address(ip));
    }
    let (below, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(if below {
        HostPattern::Below(name)
    } else {
        HostPattern::Name(name)
    })
}

impl AllowedHost {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this entry lets a plugin reach `dest`.
    pub fn allows(&self, dest: &Destination) -> bool {
        let scheme = match self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Exact(s) => s == dest.scheme,
        };
        let port = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => dest.scheme.default_port() == dest.port,
            PortPattern::Exact(p) => p == dest.port,
        };
        let host = match (&self.host, dest.address()) {
            (HostPattern::Any, _) => true,
            (HostPattern::Address(ip), Some(addr)) => *ip == addr,
            (HostPattern::Name(name), None) => *name == dest.host,
            (HostPattern::Below(name), None) => is_below(&dest.host, name),
            _ => false,
        };
        scheme && port && host
    }

    /// Whether everything `other` allows, this entry allows too: how an
    /// operator's entry bounds a sidecar's.
    pub fn covers(&self, other: &AllowedHost) -> bool {
        let scheme = match (&self.scheme, &other.scheme) {
            (SchemePattern::Any, _) => true,
            (SchemePattern::Exact(a), SchemePattern::Exact(b)) => a == b,
            (SchemePattern::Exact(_), SchemePattern::Any) => false,
        };
        let port = match (&self.port, &other.port) {
            (PortPattern::Any, _) => true,
            (_, PortPattern::Any) => false,
            (a, b) => self.port_for(a) == other.port_for(b),
        };
        let host = match (&self.host, &other.host) {
            (HostPattern::Any, _) => true,
            (_, HostPattern::Any) => false,
            (HostPattern::Below(a), HostPattern::Below(b)) => a == b || is_below(b, a),
            (HostPattern::Below(a), HostPattern::Name(b)) => is_below(b, a),
            (a, b) => a == b,
        };
        scheme && port && host
    }

    /// The one port an entry with a given or default port allows; `None`
    /// when a default port has no single value (scheme `*`, refused at
    /// parse time).
    fn port_for(&self, port: &PortPattern) -> Option<u16> {
        match (port, &self.scheme) {
            (PortPattern::Exact(p), _) => Some(*p),
            (PortPattern::Default, SchemePattern::Exact(s)) => Some(s.default_port()),
            _ => None,
        }
    }
}

fn is_below(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> AllowedHost {
        s.parse().unwrap()
    }

    fn dest(url: &str) -> Destination {
        Destination::of(&Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn entries_parse_as_spin_writes_them() {
        for ok in [
            "https://auth.example.com",
            "http://127.0.0.1:8000",
            "https://*.example.com",
            "*://example.com:*",
            "wss://[::1]:9000",
            "http://localhost:*",
            "https://example.com/",
        ] {
            assert!(ok.parse::<AllowedHost>().is_ok(), "{ok}");
        }
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://exa mple.com",
            "https://example.com:0",
            "https://example.com:99999",
            "*://example.com",
            "https://*example.com",
            "https://",
            "wss://[::1",
        ] {
            let err = bad.parse::<AllowedHost>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn urls_match_scheme_host_and_port() {
        let e = entry("https://auth.example.com");
        assert!(e.allows(&dest("https://auth.example.com/check?x=1")));
        assert!(e.allows(&dest("https://AUTH.example.com:443/")));
        assert!(!e.allows(&dest("http://auth.example.com/")));
        assert!(!e.allows(&dest("https://auth.example.com:8443/")));
        assert!(!e.allows(&dest("https://evil.auth.example.com/")));
        assert!(!e.allows(&dest("https://auth.example.com.evil.net/")));

        let e = entry("https://*.example.com");
        assert!(e.allows(&dest("https://a.b.example.com/")));
        assert!(!e.allows(&dest("https://example.com/")));
        assert!(!e.allows(&dest("https://badexample.com/")));

        let e = entry("ws://127.0.0.1:9000");
        assert!(e.allows(&dest("ws://127.0.0.1:9000/feed")));
        assert!(!e.allows(&dest("ws://127.0.0.1:9001/feed")));
        assert!(!e.allows(&dest("ws://localhost:9000/feed")));

        let e = entry("*://[::1]:*");
        assert!(e.allows(&dest("http://[::1]:8080/")));
        assert!(e.allows(&dest("wss://[::1]/")));
    }

    #[test]
    fn an_operator_entry_bounds_a_sidecar_entry() {
        let op = entry("https://*.example.com");
        assert!(op.covers(&entry("https://auth.example.com")));
        assert!(op.covers(&entry("https://auth.example.com:443")));
        assert!(op.covers(&entry("https://*.api.example.com")));
        assert!(!op.covers(&entry("https://example.com")));
        assert!(!op.covers(&entry("https://auth.example.com:8443")));
        assert!(!op.covers(&entry("http://auth.example.com")));
        assert!(!op.covers(&entry("https://*")));
        assert!(!op.covers(&entry("*://auth.example.com:443")));

        let op = entry("*://127.0.0.1:*");
        assert!(op.covers(&entry("ws://127.0.0.1:9000")));
        assert!(op.covers(&entry("http://127.0.0.1")));
        assert!(!op.covers(&entry("http://127.0.0.2")));
        assert!(!op.covers(&entry("http://localhost:80")));

        assert!(entry("*://*:*").covers(&entry("*://*:*")));
        assert!(!entry("https://*:443").covers(&entry("https://*:*")));
    }

    #[test]
    fn destinations_print_as_urls() {
        assert_eq!(
            dest("WS://Feed.example.com/x").to_string(),
            "ws://feed.example.com:80"
        );
        assert_eq!(
            dest("https://[::1]:8443/").to_string(),
            "https://[::1]:8443"
        );
        assert!(Destination::of(&Url::parse("ftp://example.com/").unwrap()).is_none());
    }
}
