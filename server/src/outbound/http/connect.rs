//! The connection a request travels over: the destination's name
//! resolved and every address checked (`OutboundPolicy::resolve`), then a
//! TCP connection to exactly those addresses (the name is never resolved
//! again, so a DNS answer that changes in between, a rebinding, cannot
//! redirect it), and TLS over it for `https`.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime_wasi_http::Error;

use super::exchange::Outcome;
use super::send::{Failure, Steps};
use crate::outbound::{Denied, Destination};
use crate::runtime::PluginEnv;

/// A stream a request travels over: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection to `dest`, by the connect step's deadline.
pub async fn open(
    env: &PluginEnv,
    dest: &Destination,
    steps: &Steps,
) -> Result<Box<dyn Io>, Failure> {
    let by = steps.connect_by();
    let addrs = match tokio::time::timeout_at(by, env.grants.outbound.resolve(dest)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(denied)) => {
            let failure = match denied {
                Denied::PrivateAddress(..) => {
                    Failure::new(Outcome::Denied, Error::DestinationIpProhibited)
                }
                Denied::Unresolved(_) => Failure::new(
                    Outcome::Error,
                    Error::DnsError {
                        rcode: Some("the name does not resolve".into()),
                        info_code: None,
                    },
                ),
                Denied::BadUrl | Denied::NotAllowed(_) => {
                    Failure::new(Outcome::Denied, Error::HttpRequestDenied)
                }
            };
            return Err(failure.because(denied.to_string()));
        }
        Err(_) => return Err(Failure::new(Outcome::Timeout, Error::DnsTimeout)),
    };
    let tcp = tcp(&addrs, by).await.map_err(|error| {
        let outcome = match error {
            Error::ConnectionTimeout => Outcome::Timeout,
            _ => Outcome::Error,
        };
        Failure::new(outcome, error)
    })?;
    if !dest.scheme.is_tls() {
        return Ok(Box::new(tcp));
    }
    let config = env.http.tls().await.map_err(|why| {
        tracing::error!("outbound.http.tls_ca: {why}");
        Failure::new(Outcome::Error, Error::TlsCertificateError)
    })?;
    match tokio::time::timeout_at(by, super::tls::connect(config, dest, tcp)).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(error)) => Err(Failure::new(Outcome::Error, error)),
        Err(_) => Err(Failure::new(Outcome::Timeout, Error::ConnectionTimeout)),
    }
}

/// A TCP connection to the first of `addrs` that answers by `by`.
async fn tcp(addrs: &[SocketAddr], by: Instant) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout_at(by, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = io_error(&e),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    }
    Err(last)
}

/// What a failed connection is, for the plugin.
pub fn io_error(e: &std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Error::ConnectionRefused,
        ConnectionReset | ConnectionAborted | BrokenPipe => Error::ConnectionTerminated,
        TimedOut => Error::ConnectionTimeout,
        _ => Error::DestinationUnavailable,
    }
}
