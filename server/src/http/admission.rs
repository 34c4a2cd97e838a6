//! Who may open a WebSocket at all: the Origin allow-list and the
//! connection limits (total and per client address), checked before the
//! plugin is asked, so a flood of handshakes never reaches plugin code.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, StatusCode, header};
use dashmap::DashMap;

/// A refused handshake: status and a reason safe to show the client.
pub type Refusal = (StatusCode, &'static str);

pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    allowed_origins: Vec<String>,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives the place back.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        allowed_origins: Vec<String>,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_ip,
            allowed_origins,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        })
    }

    /// With an allow-list, a browser handshake must name a listed Origin.
    /// Clients that send no Origin (non-browsers) are not affected.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.allowed_origins.is_empty() {
            return Ok(());
        }
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            None => Ok(()),
            Some(Ok(origin))
                if self
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(origin)) =>
            {
                Ok(())
            }
            Some(_) => Err((StatusCode::FORBIDDEN, "origin not allowed")),
        }
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address",
            ));
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err((
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
        let a = Admission::new(3, 2, vec![]);
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(ip1).unwrap();
        let _s2 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).err().unwrap().0, StatusCode::TOO_MANY_REQUESTS);
        let _s3 = a.admit(ip2).unwrap();
        assert_eq!(
            a.admit(ip2).err().unwrap().0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(s1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(ip1).is_ok());
    }

    #[test]
    fn origins() {
        let open = Admission::new(1, 1, vec![]);
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(open.check_origin(&h).is_ok());
        let strict = Admission::new(1, 1, vec!["https://app.example".into()]);
        assert_eq!(
            strict.check_origin(&h).err().unwrap().0,
            StatusCode::FORBIDDEN
        );
        h.insert(header::ORIGIN, "https://APP.example".parse().unwrap());
        assert!(strict.check_origin(&h).is_ok());
        assert!(strict.check_origin(&HeaderMap::new()).is_ok());
    }
}
