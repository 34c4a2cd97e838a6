//! Sending one request a plugin made: admitted when its grants allow the
//! URL by name and a place among its requests in flight is free, sent over
//! a connection to the checked addresses (`connect.rs`), as HTTP/1.1, its
//! response body capped (`body.rs`). Every step has its timeout, and
//! nothing outlives the deadline of the hook that asked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;
use url::Url;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::body::CappedBody;
use super::connect::Io;
use super::exchange::{Exchange, Outcome};
use super::report;
use crate::outbound::Denied;
use crate::runtime::PluginEnv;
use crate::text::printable;

/// A response with its body, and the task that drives its connection.
pub type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Largest response head (status line and headers) read, and the most a
/// connection buffers: what one request in flight costs the server, body
/// pieces included, besides what the plugin has read.
const MAX_BUFFER: usize = 64 << 10;

/// When each step of one request must be done: `outbound.http.timeout`
/// (or less, when the plugin asked for less) from the step's start, and
/// never later than the hook's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    end: Instant,
}

impl Steps {
    pub fn new(limit: Duration, asked: Option<RequestOptions>, end: std::time::Instant) -> Steps {
        let asked = asked.unwrap_or_default();
        let pick = |asked: Option<Duration>| asked.map_or(limit, |a| a.min(limit));
        Steps {
            connect: pick(asked.connect_timeout),
            first_byte: pick(asked.first_byte_timeout),
            between_bytes: pick(asked.between_bytes_timeout),
            end: Instant::from_std(end),
        }
    }

    fn by(&self, step: Duration) -> Instant {
        (Instant::now() + step).min(self.end)
    }

    /// For resolving, connecting and the TLS handshake together.
    pub fn connect_by(&self) -> Instant {
        self.by(self.connect)
    }

    /// For the response head, once connected.
    fn first_byte_by(&self) -> Instant {
        self.by(self.first_byte)
    }

    /// For the next piece of the body.
    pub fn between_bytes(&self) -> Instant {
        self.by(self.between_bytes)
    }
}

/// Why a request failed at some step: how it is counted, what the plugin
/// is told, and (when the error alone would not say) what the log says.
pub(super) struct Failure {
    outcome: Outcome,
    error: Error,
    why: Option<String>,
}

impl Failure {
    pub(super) fn new(outcome: Outcome, error: Error) -> Failure {
        Failure {
            outcome,
            error,
            why: None,
        }
    }

    pub(super) fn because(mut self, why: impl Into<String>) -> Failure {
        self.why = Some(why.into());
        self
    }

    fn from_code((outcome, code): (Outcome, ErrorCode)) -> Failure {
        Failure::new(outcome, code.into())
    }
}

/// Sends a plugin's request, made in a hook that must end by `deadline`.
pub async fn send(
    env: Arc<PluginEnv>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    deadline: std::time::Instant,
) -> Result<Sent, Error> {
    let exchange = admit(&env, request.uri())?;
    let steps = Steps::new(env.http.settings.timeout, options, deadline);
    let sent = async {
        let io = super::connect::open(&env, exchange.dest(), &steps).await?;
        let cap = env.http.settings.max_response_bytes;
        exchange_over(io, request, steps, cap, &exchange).await
    };
    sent.await.map_err(|failure| {
        let why = failure.why.unwrap_or_else(|| failure.error.to_string());
        exchange.finish(failure.outcome, &why);
        failure.error
    })
}

/// The request's place among the plugin's requests in flight, if its URL
/// is granted by name and a place is free; refused at once otherwise.
fn admit(env: &Arc<PluginEnv>, uri: &http::Uri) -> Result<Arc<Exchange>, Error> {
    let start = std::time::Instant::now();
    let dest = match url_of(uri).and_then(|url| env.grants.outbound.check(&url)) {
        Ok(dest) => dest,
        Err(denied) => {
            let target = printable(&uri.to_string(), 256).into_owned();
            report(env, Outcome::Denied, &target, start, &denied.to_string());
            return Err(match denied {
                Denied::BadUrl => Error::HttpRequestUriInvalid,
                _ => Error::HttpRequestDenied,
            });
        }
    };
    let client = &env.http;
    let Ok(place) = client.in_flight.clone().try_acquire_owned() else {
        let why = format!(
            "{} requests already in flight (outbound.http.max_in_flight)",
            client.settings.max_in_flight
        );
        report(env, Outcome::Limited, &dest, start, &why);
        return Err(Error::ConnectionLimitReached);
    };
    Ok(Arc::new(Exchange::new(env.clone(), dest, start, place)))
}

/// The request and its response head over `io`, as HTTP/1.1; the body
/// comes as the plugin reads it, capped at `cap` bytes.
async fn exchange_over(
    io: Box<dyn Io>,
    mut request: http::Request<WasiBody>,
    steps: Steps,
    cap: u64,
    exchange: &Arc<Exchange>,
) -> Result<Sent, Failure> {
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::from_code(response_error(&e)))?;
    // The request line carries the path only: the scheme and host went
    // into the connection and the Host header.
    *request.uri_mut() = request
        .uri()
        .path_and_query()
        .map_or_else(|| http::Uri::from_static("/"), |pq| pq.clone().into());

    // The connection is driven here until the response head is in, then
    // by its own task until the body is done; either way, never past the
    // hook's deadline.
    let mut conn = Box::pin(tokio::time::timeout_at(steps.end, conn));
    let sending = tokio::time::timeout_at(steps.first_byte_by(), sender.send_request(request));
    tokio::pin!(sending);
    let mut ended = None;
    let response = tokio::select! {
        biased;
        response = &mut sending => response,
        end = &mut conn => {
            ended = Some(end);
            (&mut sending).await
        }
    };
    let response = match response {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            return Err(Failure::from_code(match &ended {
                Some(Ok(Err(cause))) => response_error(cause),
                Some(Err(_)) => (Outcome::Timeout, ErrorCode::HttpResponseTimeout),
                _ => response_error(&e),
            }));
        }
        Err(_) => return Err(Failure::new(Outcome::Timeout, Error::HttpResponseTimeout)),
    };

    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(Failure::new(
            Outcome::TooLarge,
            Error::HttpResponseBodySize(Some(cap)),
        ));
    }
    let response = response
        .map(|incoming| CappedBody::new(incoming, cap, steps, exchange.clone()).boxed_unsync());
    let driver: Box<dyn Future<Output = Result<(), Error>> + Send> = match ended {
        // The connection is already done with.
        Some(_) => {
            exchange.release();
            Box::new(async { Ok(()) })
        }
        None => {
            let exchange = exchange.clone();
            Box::new(async move {
                match conn.await {
                    Ok(Ok(())) => exchange.release(),
                    Ok(Err(e)) => {
                        let (outcome, code) = response_error(&e);
                        exchange.finish(outcome, &Error::from(code).to_string());
                    }
                    Err(_) => exchange.finish(Outcome::Timeout, "the hook's deadline came"),
                }
                // The body reports the failure to the plugin; wasmtime
                // would only log it again.
                Ok(())
            })
        }
    };
    Ok((response, driver))
}

/// The URL a request goes to. Credentials in the authority are refused:
/// they would end up in the Host header.
fn url_of(uri: &http::Uri) -> Result<Url, Denied> {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Denied::BadUrl);
    }
    Url::parse(&uri.to_string()).map_err(|_| Denied::BadUrl)
}

/// What a failed exchange with the server is, and what the plugin is told.
pub fn response_error(e: &hyper::Error) -> (Outcome, ErrorCode) {
    use std::error::Error as _;
    if let Some(code) = e.source().and_then(|s| s.downcast_ref::<ErrorCode>()) {
        return (Outcome::Error, code.clone());
    }
    let code = if e.is_timeout() {
        return (Outcome::Timeout, ErrorCode::HttpResponseTimeout);
    } else if e.is_parse_too_large() {
        ErrorCode::HttpResponseHeaderSectionSize(Some(MAX_BUFFER as u32))
    } else if e.is_incomplete_message() {
        ErrorCode::HttpResponseIncomplete
    } else if e.is_canceled() || e.is_closed() {
        ErrorCode::ConnectionTerminated
    } else {
        ErrorCode::HttpProtocolError
    };
    (Outcome::Error, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_step_goes_past_the_hook_deadline() {
        let now = std::time::Instant::now();
        let limit = Duration::from_secs(5);
        // The plugin asked for less than the limit for connecting only.
        let asked = RequestOptions {
            connect_timeout: Some(Duration::from_millis(100)),
            first_byte_timeout: Some(Duration::from_secs(60)),
            between_bytes_timeout: None,
        };
        let steps = Steps::new(limit, Some(asked), now + Duration::from_secs(60));
        let within = |at: Instant, most: Duration| at <= Instant::now() + most;
        assert!(within(steps.connect_by(), Duration::from_millis(100)));
        assert!(within(steps.first_byte_by(), limit));
        assert!(within(steps.between_bytes(), limit));
        // A hook deadline 1 s away bounds every step.
        let steps = Steps::new(limit, None, now + Duration::from_secs(1));
        let end = Instant::from_std(now + Duration::from_secs(1));
        assert!(steps.connect_by() <= end);
        assert!(steps.first_byte_by() <= end);
        assert!(steps.between_bytes() <= end);
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        let uri: http::Uri = "http://user:pw@example.com/x".parse().unwrap();
        assert_eq!(url_of(&uri), Err(Denied::BadUrl));
        let uri: http::Uri = "https://example.com:8443/x?y=1".parse().unwrap();
        assert_eq!(
            url_of(&uri).unwrap().as_str(),
            "https://example.com:8443/x?y=1"
        );
    }
}
