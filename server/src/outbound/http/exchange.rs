//! One request's life as the operator sees it: it holds one of the
//! plugin's in-flight places from the request until its response body ends
//! (or the connection does), and it is counted once, with its outcome and
//! duration, however it ends: the guest reads the body to its end, the
//! body fails, the connection times out, or the guest drops it all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{Histogram, IntCounter};
use tokio::sync::OwnedSemaphorePermit;

use super::report;
use crate::metrics::metrics;
use crate::outbound::Destination;
use crate::runtime::PluginEnv;

/// How a request ended: the `outcome` label of
/// `wsgate_outbound_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response, read to its end or dropped by the plugin.
    Ok,
    /// Not granted, or the name resolves to a loopback or private address.
    Denied,
    /// The plugin had `outbound.http.max_in_flight` requests running.
    Limited,
    /// A step took longer than `outbound.http.timeout`, or the hook's
    /// deadline came.
    Timeout,
    /// The response body went past `outbound.http.max_response_bytes`.
    TooLarge,
    /// The plugin dropped the request before its response came (or its
    /// instance was thrown away).
    Cancelled,
    /// Anything else: refused, reset, TLS, not HTTP, no such name.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Denied,
        Outcome::Limited,
        Outcome::Timeout,
        Outcome::TooLarge,
        Outcome::Cancelled,
        Outcome::Error,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Limited => "limited",
            Outcome::Timeout => "timeout",
            Outcome::TooLarge => "too_large",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
        }
    }
}

/// One plugin's label children, resolved once.
pub struct Counters {
    outcomes: [IntCounter; Outcome::ALL.len()],
    seconds: Histogram,
}

impl Counters {
    pub fn new(plugin: &str) -> Counters {
        let m = metrics();
        Counters {
            outcomes: Outcome::ALL.map(|o| {
                m.outbound_http_requests
                    .with_label_values(&[plugin, o.as_str()])
            }),
            seconds: m.outbound_http_seconds.with_label_values(&[plugin]),
        }
    }

    /// Counts a request that ended, `took` after it was made.
    pub fn count(&self, outcome: Outcome, took: std::time::Duration) {
        self.outcomes[outcome as usize].inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// A request that was admitted (granted, and within the in-flight cap).
/// Shared by the request's future, its response body and its connection
/// task; whichever learns the outcome first records it, and the place is
/// given back as soon as any of them is done.
pub struct Exchange {
    env: Arc<PluginEnv>,
    dest: Destination,
    start: Instant,
    place: Mutex<Option<OwnedSemaphorePermit>>,
    recorded: AtomicBool,
}

impl Exchange {
    pub fn new(
        env: Arc<PluginEnv>,
        dest: Destination,
        start: Instant,
        place: OwnedSemaphorePermit,
    ) -> Exchange {
        Exchange {
            env,
            dest,
            start,
            place: Mutex::new(Some(place)),
            recorded: AtomicBool::new(false),
        }
    }

    pub fn dest(&self) -> &Destination {
        &self.dest
    }

    /// The request ended with `outcome` (`why` says how, for the log):
    /// counted unless it already was, and its place given back.
    pub fn finish(&self, outcome: Outcome, why: &str) {
        if !self.recorded.swap(true, Ordering::AcqRel) {
            report(&self.env, outcome, &self.dest, self.start, why);
        }
        self.release();
    }

    /// Its connection is gone: the place is free, whatever the plugin
    /// still does with the body it holds.
    pub fn release(&self) {
        self.place.lock().unwrap().take();
    }
}

impl Drop for Exchange {
    /// Dropped without an outcome: the plugin gave up on it first.
    fn drop(&mut self) {
        if !*self.recorded.get_mut() {
            report(
                &self.env,
                Outcome::Cancelled,
                &self.dest,
                self.start,
                "dropped by the plugin before its response came",
            );
        }
    }
}
