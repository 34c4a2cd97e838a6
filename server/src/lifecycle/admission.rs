//! The connection limits (total and per client address), checked before
//! the plugin is asked, so a flood of handshakes never reaches plugin code.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use dashmap::DashMap;

use super::Refusal;

pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives the place back.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ip = client_key(ip);
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address",
            ));
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server at its connection limit",
            ));
        }
        *count += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// What the per-client limit counts: an IPv6 client is usually given a
/// whole /64, so all its addresses count as one client (and an
/// IPv4-mapped address as its IPv4 address).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let a = &self.admission;
        a.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(mut count) = a.per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
        }
        a.per_ip.remove_if(&self.ip, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let a = Admission::new(3, 2);
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(ip1).unwrap();
        let _s2 = a.admit(ip1).unwrap();
        assert_eq!(
            a.admit(ip1).err().unwrap().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let _s3 = a.admit(ip2).unwrap();
        assert_eq!(
            a.admit(ip2).err().unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(s1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(ip1).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a = Admission::new(10, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _s1 = a.admit(ip("2001:db8:1:2::1")).unwrap();
        let _s2 = a.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        let refused = a.admit(ip("2001:db8:1:2:abcd::1")).err().unwrap();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _m1 = a.admit(ip("::ffff:10.0.0.7")).unwrap();
        let _m2 = a.admit(ip("10.0.0.7")).unwrap();
        assert!(
            a.admit(ip("10.0.0.7")).is_err(),
            "mapped and plain v4 are one"
        );
    }
}
