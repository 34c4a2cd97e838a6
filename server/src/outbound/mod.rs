//! The outside world, as far as a plugin may reach it: which hosts it may
//! call (`allowed.rs`: the entries a sidecar asks for and the operator
//! allows; `policy.rs`: the check by name and then by address), how it
//! reaches them over HTTP (`http/`), and the WebSocket connections it opens
//! to them (`upstream/`). Nothing is reachable unless granted.

pub mod allowed;
pub mod http;
pub mod policy;
pub mod upstream;

pub use allowed::{AllowedHost, Destination, Scheme};
pub use policy::{Denied, OutboundPolicy};
