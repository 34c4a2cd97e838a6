//! Who the client is. Directly connected, it is the peer. Behind reverse
//! proxies the operator lists in `trusted_proxies`, it is the address those
//! proxies recorded in `Forwarded` (RFC 7239) or `X-Forwarded-For`: the
//! nearest hop that is not a trusted proxy. Headers from anyone else are
//! ignored, since any client can write them, so the per-address limits and
//! the plugin's `remote-addr` cannot be forged.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(proxies: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(proxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request that came from `peer`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        // Hops in the order they were appended, the nearest last.
        let hops: Vec<SocketAddr> = match forwarded(headers) {
            Some(hops) => hops,
            None => x_forwarded_for(headers),
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = hop;
            if !self.trusts(hop.ip()) {
                break;
            }
        }
        client
    }
}

/// `for=` of every `Forwarded` element, if the header is there; an element
/// that names no address (`for=unknown`, an obfuscated name) ends the list.
fn forwarded(headers: &HeaderMap) -> Option<Vec<SocketAddr>> {
    let values: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let fors = values.iter().flat_map(|v| v.split(',')).map(|element| {
        element.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then(|| value.trim().trim_matches('"'))
        })
    });
    Some(fors.map_while(|v| v.and_then(address)).collect())
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<SocketAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|hop| address(hop.trim()))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]`, `[2001:db8::1]:80` or
/// `2001:db8::1`; the port is 0 when none is given.
fn address(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.1/32".parse().unwrap(),
        ]);
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 192.168.1.1")]);
        assert_eq!(proxies.client(peer, &xff).to_string(), "203.0.113.9:0");
        // A client that forges the header in front of the real chain.
        let forged = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(proxies.client(peer, &forged).to_string(), "203.0.113.9:0");
        // Straight from the internet: headers are ignored.
        let direct: SocketAddr = "198.51.100.7:1000".parse().unwrap();
        assert_eq!(proxies.client(direct, &xff), direct);
        let fwd = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=192.168.1.1",
        )]);
        assert_eq!(proxies.client(peer, &fwd).to_string(), "[2001:db8::1]:4711");
        // Nothing recorded: the proxy itself.
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer);
    }
}
