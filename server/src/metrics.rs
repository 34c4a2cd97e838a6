//! Prometheus metrics, served at `GET /metrics` on the admin listener
//! (rendered by `admin::metrics`).
//!
//! Counters live in one process-wide registry. Hot paths never look a
//! label up: each plugin version resolves its label children once
//! ([`PluginMetrics`]) and sessions and hook calls bump those directly.
//! Gauges that describe the present (connections, loaded plugins) are set
//! when scraped. This module depends on nothing else in the server, so
//! anything may count.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub messages_in: IntCounterVec,
    pub messages_out: IntCounterVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub connections_opened: IntCounterVec,
    pub hook_seconds: HistogramVec,
    pub traps: IntCounterVec,
    pub deadline_overruns: IntCounterVec,
    pub quarantines: IntCounterVec,
    pub reloads: IntCounterVec,
    pub load_failures: IntCounterVec,
    pub connections: IntGaugeVec,
    pub channels: IntGaugeVec,
    pub plugins: IntGaugeVec,
    pub quarantined: IntGaugeVec,
    cluster_frames: IntCounterVec,
    pub cluster_nodes: IntGaugeVec,
    pub cluster_partitions: IntGauge,
    pub outbound_http_requests: IntCounterVec,
    pub outbound_http_seconds: HistogramVec,
    pub history_calls: IntCounterVec,
    upstreams: IntGaugeVec,
    upstream_messages: IntCounterVec,
    upstream_bytes: IntCounterVec,
    upstream_failures: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new_custom(Some("wsgate".into()), None).expect("valid registry");
        let hook_seconds = HistogramVec::new(
            HistogramOpts::new("hook_duration_seconds", "Time spent in plugin hook calls").buckets(
                vec![
                    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["plugin", "hook"],
        )
        .expect("valid metric");
        r.register(Box::new(hook_seconds.clone()))
            .expect("unique metric");
        let outbound_http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "outbound_http_request_duration_seconds",
                "Plugins' outbound HTTP requests, from the request to the end of the response body (or the failure)",
            )
            .buckets(vec![
                0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["plugin"],
        )
        .expect("valid metric");
        r.register(Box::new(outbound_http_seconds.clone()))
            .expect("unique metric");
        let p = &["plugin"];
        Metrics {
            outbound_http_requests: counter(
                &r,
                "outbound_http_requests_total",
                "Plugins' outbound HTTP requests by outcome: ok, denied (not granted, or a private address), timeout, too_large (response body over the cap), limited (too many in flight), error",
                &["plugin", "outcome"],
            ),
            outbound_http_seconds,
            history_calls: counter(
                &r,
                "history_calls_total",
                "Channel history calls (publish: recorded publishes, from plugins and the publish API; read) by outcome: ok, duplicate (an idempotency key seen before), not_recorded, invalid, unavailable (the backend failed or did not answer)",
                &["plugin", "call", "outcome"],
            ),
            messages_in: counter(
                &r,
                "messages_received_total",
                "Text and binary messages received from clients",
                p,
            ),
            messages_out: counter(
                &r,
                "messages_sent_total",
                "Text and binary messages written to clients",
                p,
            ),
            bytes_in: counter(
                &r,
                "received_bytes_total",
                "Payload bytes received from clients",
                p,
            ),
            bytes_out: counter(
                &r,
                "sent_bytes_total",
                "Payload bytes written to clients",
                p,
            ),
            connections_opened: counter(
                &r,
                "connections_opened_total",
                "WebSocket connections upgraded",
                p,
            ),
            hook_seconds,
            traps: counter(&r, "hook_traps_total", "Hook calls that trapped", p),
            deadline_overruns: counter(
                &r,
                "hook_deadline_overruns_total",
                "Hook calls interrupted at their deadline",
                p,
            ),
            quarantines: counter(
                &r,
                "plugin_quarantines_total",
                "Quarantines started after repeated crashes",
                p,
            ),
            quarantined: gauge(
                &r,
                "plugin_quarantined",
                "1 while a plugin refuses new connections after repeated crashes",
                p,
            ),
            reloads: counter(
                &r,
                "plugin_reloads_total",
                "New plugin versions put in service (including the first load)",
                p,
            ),
            load_failures: counter(
                &r,
                "plugin_load_failures_total",
                "Plugin versions that failed to compile, link or start",
                p,
            ),
            connections: gauge(&r, "connections", "Open connections", p),
            channels: gauge(&r, "channels", "Channels with at least one subscriber", p),
            plugins: gauge(
                &r,
                "plugins",
                "Plugins by status (loaded, failed, stopped)",
                &["status"],
            ),
            cluster_frames: counter(
                &r,
                "cluster_frames_total",
                "Cluster bus frames by event: forwarded, received, dropped (not relayed), missed (from Redis, while the inbox was full), undecodable (or unsealed), refused (over the size limit)",
                &["event"],
            ),
            cluster_nodes: gauge(
                &r,
                "cluster_nodes",
                "Nodes in the cluster as last heard (this one included), by Redis link state",
                &["redis"],
            ),
            cluster_partitions: {
                let g = IntGauge::new(
                    "cluster_partitions_listening",
                    "Bus partitions this node listens to: those it has members in",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            upstreams: gauge(
                &r,
                "upstreams",
                "Upstream WebSocket connections plugins hold: connecting, open or closing",
                p,
            ),
            upstream_messages: counter(
                &r,
                "upstream_messages_total",
                "Messages plugins exchanged with their upstreams, by direction (in: from the upstream, out: to it)",
                &["plugin", "direction"],
            ),
            upstream_bytes: counter(
                &r,
                "upstream_bytes_total",
                "Payload bytes plugins exchanged with their upstreams, by direction",
                &["plugin", "direction"],
            ),
            upstream_failures: counter(
                &r,
                "upstream_connect_failures_total",
                "Upstream connections that never opened, by reason: denied, unresolved, refused, timeout, tls, handshake, network",
                &["plugin", "reason"],
            ),
            registry: r,
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// One plugin's label children, resolved once per plugin version.
pub struct PluginMetrics {
    /// Messages and bytes read from clients.
    pub received: Traffic,
    /// Messages and bytes written to clients.
    pub sent: Traffic,
    pub connections_opened: IntCounter,
    pub traps: IntCounter,
    pub deadline_overruns: IntCounter,
    pub quarantines: IntCounter,
    hooks: Vec<Histogram>,
}

impl PluginMetrics {
    /// `hooks` names the hooks timed, in the order `observe_hook` indexes them.
    pub fn new(plugin: &str, hooks: &[&str]) -> Arc<PluginMetrics> {
        let m = metrics();
        let l = &[plugin];
        Arc::new(PluginMetrics {
            received: Traffic::new(
                &m.messages_in.with_label_values(l),
                &m.bytes_in.with_label_values(l),
            ),
            sent: Traffic::new(
                &m.messages_out.with_label_values(l),
                &m.bytes_out.with_label_values(l),
            ),
            connections_opened: m.connections_opened.with_label_values(l),
            traps: m.traps.with_label_values(l),
            deadline_overruns: m.deadline_overruns.with_label_values(l),
            quarantines: m.quarantines.with_label_values(l),
            hooks: hooks
                .iter()
                .map(|h| m.hook_seconds.with_label_values(&[plugin, h]))
                .collect(),
        })
    }

    /// Records one call of the hook at `index` (of those given to `new`).
    pub fn observe_hook(&self, index: usize, took: Duration) {
        if let Some(histogram) = self.hooks.get(index) {
            histogram.observe(took.as_secs_f64());
        }
    }
}

/// Messages and their bytes not yet added to the shared counters, which
/// are atomics every worker updates: a session counts a burst's worth at
/// once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    messages: u32,
    bytes: u32,
}

impl Tally {
    /// Adds a message of `bytes` bytes, unless the tally could not hold
    /// it: then it is unchanged, and must be counted before it can.
    #[must_use]
    fn add(&mut self, bytes: usize) -> bool {
        let (Some(messages), Some(bytes)) = (
            self.messages.checked_add(1),
            u32::try_from(bytes)
                .ok()
                .and_then(|b| self.bytes.checked_add(b)),
        ) else {
            return false;
        };
        *self = Tally { messages, bytes };
        true
    }
}

/// A message counter and its byte counter, bumped together. One pointer:
/// every open connection holds one for as long as it is open.
#[derive(Clone, Debug)]
pub struct Traffic(Arc<(IntCounter, IntCounter)>);

impl Traffic {
    pub fn new(messages: &IntCounter, bytes: &IntCounter) -> Traffic {
        Traffic(Arc::new((messages.clone(), bytes.clone())))
    }

    /// One message of `bytes` payload bytes.
    pub fn count(&self, bytes: usize) {
        self.count_all(1, bytes);
    }

    /// Adds a message of `bytes` bytes to `tally`, counting the tally
    /// first if it is full.
    pub fn count_later(&self, tally: &mut Tally, bytes: usize) {
        if !tally.add(bytes) {
            self.settle(tally);
            if !tally.add(bytes) {
                self.count(bytes);
            }
        }
    }

    /// Counts what `tally` holds, and clears it.
    pub fn settle(&self, tally: &mut Tally) {
        let Tally { messages, bytes } = std::mem::take(tally);
        if messages > 0 {
            self.count_all(messages.into(), bytes as usize);
        }
    }

    /// `messages` messages of `bytes` payload bytes in all.
    pub fn count_all(&self, messages: u64, bytes: usize) {
        self.0.0.inc_by(messages);
        self.0.1.inc_by(bytes as u64);
    }
}

/// One plugin's upstream metrics, resolved once per plugin.
pub struct UpstreamMetrics {
    plugin: Arc<str>,
    /// Upstreams held: connecting, open or closing.
    pub open: IntGauge,
    /// Messages from the upstreams.
    pub received: Traffic,
    /// Messages written to the upstreams.
    pub sent: Traffic,
}

impl UpstreamMetrics {
    pub fn new(plugin: &str) -> UpstreamMetrics {
        let m = metrics();
        let direction = |dir: &str| {
            Traffic::new(
                &m.upstream_messages.with_label_values(&[plugin, dir]),
                &m.upstream_bytes.with_label_values(&[plugin, dir]),
            )
        };
        UpstreamMetrics {
            plugin: Arc::from(plugin),
            open: m.upstreams.with_label_values(&[plugin]),
            received: direction("in"),
            sent: direction("out"),
        }
    }

    /// Counts an upstream that never opened, by a reason of a few fixed
    /// words (the label's values stay few).
    pub fn connect_failed(&self, reason: &'static str) {
        metrics()
            .upstream_failures
            .with_label_values(&[&*self.plugin, reason])
            .inc();
    }
}

/// The counters of `cluster_frames_total`, one per event, resolved once:
/// `received` is bumped for every frame a node relays.
pub struct ClusterFrames {
    pub forwarded: IntCounter,
    pub received: IntCounter,
    pub dropped: IntCounter,
    pub undecodable: IntCounter,
    pub refused: IntCounter,
    pub missed: IntCounter,
}

pub fn cluster_frames() -> &'static ClusterFrames {
    static FRAMES: LazyLock<ClusterFrames> = LazyLock::new(|| {
        let events = &metrics().cluster_frames;
        ClusterFrames {
            forwarded: events.with_label_values(&["forwarded"]),
            received: events.with_label_values(&["received"]),
            dropped: events.with_label_values(&["dropped"]),
            undecodable: events.with_label_values(&["undecodable"]),
            refused: events.with_label_values(&["refused"]),
            missed: events.with_label_values(&["missed"]),
        }
    });
    &FRAMES
}

impl Metrics {
    /// The Prometheus text exposition of every metric; the caller sets the
    /// gauges first.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntCounter;

    use super::{Tally, Traffic};

    fn traffic() -> (Traffic, IntCounter, IntCounter) {
        let messages = IntCounter::new("m", "messages").unwrap();
        let bytes = IntCounter::new("b", "bytes").unwrap();
        (Traffic::new(&messages, &bytes), messages, bytes)
    }

    #[test]
    fn a_tally_is_counted_when_settled_and_only_once() {
        let (traffic, messages, bytes) = traffic();
        let mut tally = Tally::default();
        traffic.count_later(&mut tally, 10);
        traffic.count_later(&mut tally, 0);
        traffic.count_later(&mut tally, 5);
        assert_eq!((messages.get(), bytes.get()), (0, 0));
        traffic.settle(&mut tally);
        traffic.settle(&mut tally);
        assert_eq!((messages.get(), bytes.get()), (3, 15));
    }

    #[test]
    fn what_a_tally_cannot_hold_is_counted_at_once_in_order() {
        let (traffic, messages, bytes) = traffic();
        let mut tally = Tally::default();
        let huge = u32::MAX as usize;
        traffic.count_later(&mut tally, 1);
        // Full: what it held is counted first, then it holds this one.
        traffic.count_later(&mut tally, huge);
        assert_eq!((messages.get(), bytes.get()), (1, 1));
        // Over what any tally holds: counted at once.
        traffic.count_later(&mut tally, huge + 1);
        assert_eq!((messages.get(), bytes.get()), (3, 1 + 2 * huge as u64 + 1));
        traffic.settle(&mut tally);
        assert_eq!(messages.get(), 3);
    }
}
