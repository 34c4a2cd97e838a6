//! The outside world, as far as a plugin may reach it: which hosts it may
//! call (`allowed.rs`: the entries a sidecar asks for and the operator
//! allows; `policy.rs`: the check by name and then by address), and how
//! it reaches them over HTTP (`http/`). Nothing is reachable unless granted.

pub mod allowed;
pub mod http;
pub mod policy;

pub use allowed::{AllowedHost, Destination, Scheme};
pub use policy::{Denied, OutboundPolicy};
