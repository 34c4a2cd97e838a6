//! Whether a plugin may reach a URL, decided twice: by name against its
//! granted `allowed_outbound_hosts`, then by address after DNS resolution,
//! so that a name that resolves to a loopback or private address (a
//! wildcard entry, a hijacked or rebinding DNS record) cannot reach the
//! operator's internal network. Those addresses are reachable only through
//! an entry that names the address itself (or `localhost`, for loopback).
//! The caller connects to the addresses returned here, never resolving the
//! name again.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use url::Url;

use super::allowed::{AllowedHost, Destination, HostPattern};

/// Why a plugin may not reach a URL. Its `Display` is what the plugin (and
/// the log) is told: the destination, never anything about the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("not an absolute http, https, ws or wss URL with a host")]
    BadUrl,
    #[error("{0} is not in the plugin's allowed_outbound_hosts")]
    NotAllowed(Destination),
    #[error("{0} resolves to {1}, a loopback or private address that no entry names")]
    PrivateAddress(Destination, IpAddr),
    #[error("{0}: the name does not resolve")]
    Unresolved(Destination),
}

/// A plugin's granted entries. Empty (the default) allows nothing.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    entries: Vec<AllowedHost>,
}

impl OutboundPolicy {
    pub fn new(entries: Vec<AllowedHost>) -> OutboundPolicy {
        OutboundPolicy { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }

    /// The destination of `url`, if an entry allows it by name.
    pub fn check(&self, url: &Url) -> Result<Destination, Denied> {
        let dest = Destination::of(url).ok_or(Denied::BadUrl)?;
        if self.entries.iter().any(|e| e.allows(&dest)) {
            Ok(dest)
        } else {
            Err(Denied::NotAllowed(dest))
        }
    }

    /// The addresses to connect to for an allowed destination: all it
    /// resolves to, each checked. One forbidden address denies the whole
    /// name rather than being skipped, so a record that mixes public and
    /// internal addresses is refused, not tried in part.
    pub async fn resolve(&self, dest: &Destination) -> Result<Vec<SocketAddr>, Denied> {
        let addrs: Vec<SocketAddr> = match dest.address() {
            Some(ip) => vec![SocketAddr::new(ip, dest.port)],
            None => tokio::net::lookup_host((dest.host.as_str(), dest.port))
                .await
                .map_err(|_| Denied::Unresolved(dest.clone()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Denied::Unresolved(dest.clone()));
        }
        for addr in &addrs {
            let ip = canonical(addr.ip());
            if is_internal(ip) && !self.names_address(dest, ip) {
                return Err(Denied::PrivateAddress(dest.clone(), ip));
            }
        }
        Ok(addrs)
    }

    /// Whether an entry that allows `dest` names `ip` itself, or names
    /// `localhost` and `ip` is loopback.
    fn names_address(&self, dest: &Destination, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .filter(|e| e.allows(dest))
            .any(|e| match &e.host {
                HostPattern::Address(a) => canonical(*a) == ip,
                HostPattern::Name(name) => name == "localhost" && ip.is_loopback(),
                HostPattern::Any | HostPattern::Below(_) => false,
            })
    }
}

impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<&str> = self.entries.iter().map(AllowedHost::as_str).collect();
        write!(f, "[{}]", entries.join(", "))
    }
}

/// An IPv4 address carried in IPv6 (`::ffff:10.0.0.1`) as the IPv4
/// address it is, so it cannot slip past the IPv4 checks.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast,
/// multicast or documentation addresses: nothing a plugin should reach by
/// a name.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let p = OutboundPolicy::default();
        assert!(matches!(
            p.check(&url("https://example.com/")),
            Err(Denied::NotAllowed(_))
        ));
        assert_eq!(p.check(&url("mailto:a@example.com")), Err(Denied::BadUrl));
    }

    #[tokio::test]
    async fn a_listed_address_is_reachable() {
        let p = policy(&["http://127.0.0.1:8000", "ws://localhost:9000"]);
        let dest = p.check(&url("http://127.0.0.1:8000/auth")).unwrap();
        let addrs = p.resolve(&dest).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8000".parse().unwrap()]);
        let dest = p.check(&url("ws://localhost:9000/feed")).unwrap();
        let addrs = p.resolve(&dest).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn a_wildcard_never_reaches_an_internal_address() {
        let p = policy(&["*://*:*"]);
        for internal in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
        ] {
            let dest = p.check(&url(internal)).unwrap();
            assert!(
                matches!(p.resolve(&dest).await, Err(Denied::PrivateAddress(..))),
                "{internal}"
            );
        }
        // A name that resolves to loopback is refused too.
        let dest = p.check(&url("http://localhost:8000/")).unwrap();
        assert!(matches!(
            p.resolve(&dest).await,
            Err(Denied::PrivateAddress(..))
        ));
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn denials_say_where_not_why_inside() {
        let p = policy(&["https://auth.example.com"]);
        let err = p.check(&url("https://evil.example.net/x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "https://evil.example.net:443 is not in the plugin's allowed_outbound_hosts"
        );
    }
}
