//! Outbound HTTP for plugins: `wasi:http/outgoing-handler`, linked for
//! every plugin, sends only what the plugin's `allowed_outbound_hosts`
//! grant (`send.rs`: admission and the HTTP exchange, with the timeouts;
//! `connect.rs`: resolved, checked addresses and nothing else; `tls.rs`;
//! `body.rs`: the response body's cap; `exchange.rs`: the in-flight place,
//! outcome and metrics of one request). A plugin without a grant still
//! loads, and every request it makes fails with `HTTP-request-denied`.
//!
//! Wasmtime's `wasmtime-wasi-http` implements the interface (resources,
//! streams, header rules); the hooks here decide what is sent and how.

mod body;
mod connect;
mod exchange;
mod send;
mod tls;

use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

pub use exchange::Outcome;

use crate::config::OutboundHttp;
use crate::runtime::{Gate, PluginEnv};

/// One plugin version's HTTP client: its limits, its requests in flight
/// (shared by all its instances) and its counters.
pub struct HttpClient {
    settings: OutboundHttp,
    in_flight: Arc<Semaphore>,
    counters: exchange::Counters,
    /// Built on the first `https` request.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl HttpClient {
    pub fn new(plugin: &str, settings: OutboundHttp) -> Arc<HttpClient> {
        Arc::new(HttpClient {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            counters: exchange::Counters::new(plugin),
            tls: OnceLock::new(),
            settings,
        })
    }

    /// The TLS configuration; the first call reads certificate files, off
    /// the async workers.
    async fn tls(self: &Arc<Self>) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = self.tls.get() {
            return config.clone();
        }
        let client = self.clone();
        tokio::task::spawn_blocking(move || {
            client
                .tls
                .get_or_init(|| tls::client_config(client.settings.tls_ca.as_deref()))
                .clone()
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// The `wasi:http` hooks of one instance.
pub struct HttpHooks {
    env: Arc<PluginEnv>,
    /// The running hook's deadline: no request outlives it.
    pub deadline: Instant,
}

impl HttpHooks {
    pub fn new(env: Arc<PluginEnv>) -> HttpHooks {
        HttpHooks {
            env,
            deadline: Instant::now(),
        }
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<send::Sent, Error>> + Send> {
        Box::new(send::send(
            self.env.clone(),
            request,
            options,
            self.deadline,
        ))
    }

    // The request path maps its errors itself; these only see what
    // wasmtime met on its own (a request body the plugin broke), and say
    // nothing about the host.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        send::response_error(err).1
    }

    fn p2_error_from_connect(&mut self, _err: &std::io::Error) -> ErrorCode {
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, _err: &std::io::Error) -> ErrorCode {
        ErrorCode::TlsProtocolError
    }
}

/// Counts a request that ended, and logs one that failed: plugin,
/// destination and what happened, through the plugin's allowance of log
/// lines (a plugin looping on a denied request cannot flood the log).
fn report(env: &PluginEnv, outcome: Outcome, target: &dyn Display, start: Instant, why: &str) {
    env.http.counters.count(outcome, start.elapsed());
    if outcome == Outcome::Ok {
        return;
    }
    let plugin = &*env.name;
    match env.log_gate.admit() {
        Gate::Drop => return,
        Gate::Write { dropped_before: 0 } => {}
        Gate::Write { dropped_before } => tracing::warn!(
            plugin,
            "{dropped_before} log lines dropped (over limits.log_lines_per_second)"
        ),
    }
    let label = outcome.as_str();
    match outcome {
        Outcome::Denied | Outcome::Limited => tracing::warn!(plugin, destination = %target,
            outcome = label, "outbound HTTP request refused: {why}"),
        _ => tracing::info!(plugin, destination = %target, outcome = label,
            "outbound HTTP request failed: {why}"),
    }
}
