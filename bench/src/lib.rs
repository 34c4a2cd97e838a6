//! What the load generator shares with the integration tests
//! (`wsgate-tests`): both start servers on ports they pick.

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};

/// A loopback port free now, for a server about to listen on it.
///
/// Chosen below the kernel's ephemeral range: a port from `bind(0)` is one
/// that any process's next outgoing connection may take before the server
/// binds it (CI runs Autobahn's client beside the tests and benchmarks, and
/// the load generators themselves open thousands); none takes a port below
/// the range unless asked for it by number. Falls back to `bind(0)` when no
/// such port is free.
pub fn free_port() -> std::io::Result<u16> {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if first_ephemeral > LOWEST {
        let span = u64::from(first_ephemeral - LOWEST);
        let start = RandomState::new().hash_one(std::process::id());
        for step in 0..64 {
            let port = LOWEST + (start.wrapping_add(step * 7_919) % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
