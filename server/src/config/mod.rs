//! Server configuration: built-in defaults, then `wsgate.toml`, then
//! `WSGATE_*` environment variables, then command-line flags — each layer
//! overriding the one before. No file is needed: the defaults serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cli;
pub use cli::{Cli, Command, Lang};

/// Everything the server can be told. Durations are written like `5s`,
/// `250ms`, `5m`; sizes are in bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the WebSocket and HTTP server listens.
    pub listen: SocketAddr,
    /// The plugin directory: `NAME.wasm` serves `/ws/NAME`.
    pub plugin_dir: PathBuf,
    /// Static files served at every non-WebSocket path; the bundled demo when unset.
    pub static_dir: Option<PathBuf>,
    /// Where compiled plugins are cached; default
    /// `$XDG_CACHE_HOME/wsgate/compiled` (or `~/.cache/wsgate/compiled`).
    pub cache_dir: Option<PathBuf>,
    /// Whether compiled plugins are cached on disk at all.
    pub cache: bool,
    /// Watch the plugin directory and apply changes without a restart.
    pub watch: bool,
    /// The admin API (`/admin/...`, `/metrics`) on its own listener.
    pub admin: Admin,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it. Off by
    /// default: each compressing connection costs CPU per message, and
    /// compressing secrets next to attacker-chosen text in one message leaks
    /// them through its length (CRIME/BREACH). Turn it on for bulky, repetitive
    /// text such as JSON over slow links.
    pub permessage_deflate: bool,
    /// Bind the public port with SO_REUSEPORT, so several wsgate processes
    /// on one host can share it (the kernel spreads new connections over
    /// them). For more connections than one process may hold open files,
    /// or a restart without a gap; run them as a cluster so deliveries
    /// reach every process. Off by default: a second process on a port in
    /// use is usually a mistake, and then it should fail to start.
    pub reuse_port: bool,
    /// Connections the kernel may hold accepted-but-not-yet-taken on the
    /// public port: what a reconnect storm (a node restarted, a network
    /// back) needs room for. The kernel caps it at `net.core.somaxconn`
    /// (4096 by default since Linux 5.4): raise both on a big host.
    pub listen_backlog: u32,
    /// Reverse proxies (addresses or networks, e.g. `10.0.0.0/8`) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the real client, for
    /// the per-address limits and the plugin's `remote-addr`. Empty: the
    /// peer is the client, and those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// What plugins may be granted at all: a sidecar's `[grants]` must fall
    /// within these lists, and by default nothing is allowed.
    pub grants: GrantPolicy,
    /// Bounds on what granted plugins do outside.
    pub outbound: Outbound,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Scale-out: several nodes as one, over Redis.
    pub cluster: Cluster,
    /// TLS for the public listener (wss:// and https://).
    pub tls: Tls,
    /// Where plugins' key-value state lives.
    pub state: State,
}

/// `[state]`: where plugins' key-value state (`state-get`, `state-set`,
/// `state-increment`, ...) lives. Every backend keeps each plugin's
/// entries apart, holds it to `limits.state_bytes`, and makes every call
/// atomic across the plugin's instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// `auto`: `redis` when `cluster.url` is set (every node shares the
    /// state), else `sqlite` when `path` is set, else `memory`.
    pub backend: StateBackend,
    /// The SQLite file for the `sqlite` backend, created if missing, so
    /// state survives a restart. Processes on one host may share it (each
    /// call is one transaction); nodes on several hosts share state
    /// through the cluster's Redis instead.
    pub path: Option<PathBuf>,
    /// The longest a state call waits for its backend (SQLite busy with
    /// another process, Redis slow or away); past it the call answers
    /// `unavailable` (and may or may not have taken effect). Keeps a hook
    /// from hanging on a backend that does not answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for State {
    fn default() -> Self {
        State {
            backend: StateBackend::Auto,
            path: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Where `[state]` keeps plugins' entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// `redis` with a cluster, `sqlite` with a `path`, `memory` otherwise.
    Auto,
    /// In the process: fast, gone on restart, one node's own.
    Memory,
    /// A SQLite file (`state.path`): durable across restarts, one node's.
    Sqlite,
    /// The cluster's Redis (`cluster.url`): shared by every node.
    Redis,
}

/// Several wsgate nodes behind a load balancer, sharing deliveries and
/// counts over Redis pub/sub. Off unless `url` is set: a single node needs
/// no Redis at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS; with
    /// `mode = "cluster"`, any one node of the Redis Cluster. Unset keeps
    /// everything in-process.
    pub url: Option<String>,
    /// A single Redis server, or a Redis Cluster (sharded pub/sub).
    pub mode: RedisMode,
    /// PEM file of the certificate authority that signed the Redis
    /// server's certificate, for `rediss://` with a private CA; unset, the
    /// system's roots are trusted.
    pub tls_ca: Option<PathBuf>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub prefix: String,
    /// Bus channels that channels and tags are hashed onto. A node listens
    /// only to those it has members in: more partitions, fewer deliveries a
    /// node receives for groups it does not have, and more subscriptions
    /// per node. Many, because a node with members in a few hundred groups
    /// already listens to most of 128 partitions (bench/scale-model.py),
    /// while a Redis subscription costs a node and Redis next to nothing.
    /// Every node of a cluster must use the same number.
    pub partitions: u16,
    /// How often a node reports itself (and its counts) to the others.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node not heard from for this long drops out of the cluster's
    /// counts and presence (so a dead node is gone within
    /// `node_ttl + heartbeat`).
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// How long `subscribers` and `tagged` wait for the other nodes with
    /// members to list theirs; a node that has not answered by then is
    /// left out of the answer (and the miss is logged).
    #[serde(with = "humantime_serde")]
    pub presence_timeout: Duration,
    /// Deliveries waiting to be forwarded to Redis; beyond it new ones are
    /// dropped (counted and logged) rather than letting memory grow during
    /// an outage.
    pub queue: usize,
    /// The same bound in bytes.
    pub outbox_bytes: usize,
    /// A secret every node shares: frames on the bus are sealed with it
    /// (HMAC-SHA256), and unsealed ones are ignored. For a Redis that other
    /// software can publish to.
    pub secret: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            url: None,
            mode: RedisMode::Standalone,
            tls_ca: None,
            prefix: "wsgate".into(),
            partitions: 16_384,
            heartbeat: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            presence_timeout: Duration::from_millis(500),
            queue: 65_536,
            outbox_bytes: 64 << 20,
            secret: None,
        }
    }
}

/// What `cluster.url` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (or a primary behind a proxy): PUBLISH/SUBSCRIBE.
    Standalone,
    /// A Redis Cluster: sharded pub/sub (SPUBLISH/SSUBSCRIBE), so each
    /// partition's traffic stays on the shard owning its slot.
    Cluster,
}

/// `[tls]`: with both set, the public listener speaks TLS only. The admin
/// listener stays plain HTTP: it is meant for loopback or a private network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the leaf certificate.
    pub key: Option<PathBuf>,
}

impl Tls {
    /// Whether TLS is on; `validate` has made sure both paths or neither are set.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// `[grants]`: the operator's allow-list for plugins' capabilities.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantPolicy {
    /// Environment variables a sidecar may pass to its plugin, by name.
    /// `WSGATE_*` variables (the server's own settings, its admin token
    /// among them) never pass, listed or not.
    pub env: Vec<String>,
    /// Host directories a sidecar may grant (read-only), or directories
    /// inside them.
    pub dirs: Vec<PathBuf>,
    /// Hosts a sidecar's `allowed_outbound_hosts` may name, written the
    /// same way (`scheme://host[:port]`, `*` wildcards): each sidecar entry
    /// must fall within one of these. Empty (the default): plugins reach
    /// nothing outside.
    pub allowed_outbound_hosts: Vec<String>,
}

impl GrantPolicy {
    /// The operator's outbound entries, parsed.
    pub fn outbound_hosts(&self) -> Result<Vec<crate::outbound::AllowedHost>, String> {
        self.allowed_outbound_hosts
            .iter()
            .map(|entry| entry.parse())
            .collect()
    }
}

/// `[outbound]`: what a plugin's calls to the outside world may cost once
/// its grants allow them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Outbound {
    /// `[outbound.http]`: requests over `wasi:http`.
    pub http: OutboundHttp,
}

/// `[outbound.http]`: limits on the HTTP requests a plugin makes. A request
/// runs inside the hook that made it and keeps that instance busy, so every
/// one of these is also bounded by the hook's own deadline
/// (`timeouts.hook`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundHttp {
    /// How long each step of a request may take: connecting (TCP and TLS),
    /// then waiting for the response's first byte, then each wait between
    /// two pieces of the body. Never past the calling hook's deadline,
    /// whichever comes first; a plugin may ask for less per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest response body a plugin may read, in bytes: past it the body
    /// stream fails (`HTTP-response-body-size`) and the connection is
    /// dropped, so a huge or endless response costs the server no more.
    pub max_response_bytes: u64,
    /// Requests one plugin version may have in flight at once (from the
    /// request to the end of its response body); one more fails at once
    /// with `connection-limit-reached` rather than waiting.
    pub max_in_flight: usize,
    /// PEM file of certificate authorities trusted for `https://` besides
    /// the system's (for services signed by a private CA).
    pub tls_ca: Option<PathBuf>,
}

impl Default for OutboundHttp {
    fn default() -> Self {
        OutboundHttp {
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            max_in_flight: 16,
            tls_ca: None,
        }
    }
}

/// The token-protected admin listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Serve the admin API at all.
    pub enabled: bool,
    /// Where the admin API listens; loopback by default.
    pub listen: SocketAddr,
    /// The bearer token admin requests must carry. When unset, a random
    /// token is generated at startup and logged once.
    pub token: Option<String>,
    /// Connections the admin listener holds at once; more are closed on
    /// arrival.
    pub max_connections: usize,
    /// How long the publish API remembers an `Idempotency-Key`: a retry
    /// within it is answered as the first publish was and not delivered
    /// again. Long enough for a client's retries, short enough to bound
    /// what is kept (also at most 100,000 keys per plugin on one node).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
            max_connections: 64,
            idempotency_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// The most one hook call may run before it is interrupted (the
    /// connection it served is closed with 1011). Lucee's requestTimeout was 50 s;
    /// a hook is an event handler, not a request, so ours is much shorter.
    #[serde(with = "humantime_serde")]
    pub hook: Duration,
    /// A connection that sends nothing (not even a pong) for this long is
    /// closed with 1001. Lucee's idleTimeout default, 300 s.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// How often the server pings each client, so live clients never idle out.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long to wait for the client's reply to a close frame.
    #[serde(with = "humantime_serde")]
    pub close: Duration,
    /// How long a graceful shutdown waits for connections to close.
    #[serde(with = "humantime_serde")]
    pub shutdown: Duration,
    /// How long the plugin directory must be quiet before changes are
    /// applied, so a file still being written is never loaded.
    #[serde(with = "humantime_serde")]
    pub watch_debounce: Duration,
    /// How long a new connection may take to finish its TLS handshake and,
    /// separately, to send its complete HTTP request head, so a client that
    /// connects and then trickles bytes (slowloris) cannot pin a socket.
    #[serde(with = "humantime_serde")]
    pub handshake: Duration,
    /// How long a plugin's upstream may take to open: name resolution,
    /// TCP connect, TLS and the WebSocket handshake together. Past it the
    /// plugin hears `on-upstream-close` with 1006 "timed out connecting",
    /// so an upstream that never answers holds its slot no longer.
    #[serde(with = "humantime_serde")]
    pub upstream_connect: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message (after reassembly, and so also largest frame) a
    /// client may send; larger ones close the connection with 1009.
    pub max_message_size: usize,
    /// Messages queued per connection before it counts as a slow consumer
    /// and is closed with 1008, so one stuck reader never stalls a broadcast.
    pub send_queue: usize,
    /// Payload bytes queued per connection before it counts as a slow
    /// consumer (1008): what one client that stops reading can pin.
    pub send_queue_bytes: usize,
    /// Bytes of partly received (fragmented) messages held for all clients
    /// together; a client whose fragment would go past it is closed with
    /// 1013 (try again later).
    pub reassembly_bytes: usize,
    /// Wasm instances per plugin serving hook calls concurrently; 0 means
    /// one per CPU core.
    pub instances_per_plugin: usize,
    /// Linear memory cap per plugin instance, in bytes.
    pub instance_memory: usize,
    /// Pending timers per plugin.
    pub timers_per_plugin: usize,
    /// Outbound WebSocket connections (upstreams) one plugin may hold at
    /// once, connecting, open or closing; `upstream-connect` past it is
    /// `limit-reached`. Each is held to the client limits: messages up to
    /// `max_message_size` either way, `send_queue` and `send_queue_bytes`
    /// waiting to be written.
    pub upstreams_per_plugin: usize,
    /// Shortest timer delay, in milliseconds.
    pub min_timer_ms: u32,
    /// Total bytes of a plugin's key-value state: keys, values and 64
    /// bytes per entry (what an entry really costs), so a million tiny
    /// entries are not free. Past it, writes answer `limit-reached`. On
    /// Redis, one budget for the plugin across every node.
    pub state_bytes: usize,
    /// The most keys one `state-keys` call returns, whatever limit the
    /// plugin asks for: bounds what one call copies into the plugin.
    pub state_keys_listed: usize,
    /// Bytes of a plugin's channel history held in this process when not
    /// clustered (messages plus 64 bytes each, channel names plus 128):
    /// past it, the oldest messages of any of its channels go first, and
    /// clients that needed them are told they cannot resume. Clustered,
    /// history is in Redis, bounded per channel by `[history] size`.
    pub history_bytes: usize,
    /// Attributes per connection.
    pub attributes_per_connection: usize,
    /// Bytes of attribute keys and values per connection.
    pub attribute_bytes: usize,
    /// Channels one connection may be subscribed to.
    pub channels_per_connection: usize,
    /// Tags one connection may carry.
    pub tags_per_connection: usize,
    /// Deliveries (recipients of send, publish, broadcast and send-to-tag)
    /// one hook call may queue; past it those calls fail with
    /// `limit-reached`, so one message cannot fan out without bound.
    pub deliveries_per_hook: usize,
    /// Longest line a plugin may log, in bytes; longer ones are cut.
    pub log_line_bytes: usize,
    /// Lines per second one plugin may log (bursts up to a second's
    /// worth); lines over it are dropped and counted.
    pub log_lines_per_second: u32,
    /// Longest channel, tag, attribute or state key name, in bytes.
    pub max_name_len: usize,
    /// Crashes (traps or deadline overruns) of one plugin version within
    /// `quarantine_window` after which it refuses new connections with 503
    /// for a while; 0 turns quarantine off.
    pub quarantine_after: usize,
    #[serde(with = "humantime_serde")]
    pub quarantine_window: Duration,
    /// The first quarantine's length; each one that follows within
    /// `quarantine_max` of the last doubles it, up to `quarantine_max`.
    #[serde(with = "humantime_serde")]
    pub quarantine_backoff: Duration,
    /// The longest quarantine, and the quiet time after which the length
    /// starts again from `quarantine_backoff`.
    #[serde(with = "humantime_serde")]
    pub quarantine_max: Duration,
    /// Messages per second one connection may send (bursts up to one
    /// second's worth); over it the connection is closed with 1008. 0 turns
    /// the limit off, the default, since a pipelining client legitimately
    /// sends tens of thousands per second.
    pub messages_per_second: u32,
    /// Open WebSocket connections in total; more are refused with 503.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client's /64);
    /// more are refused with 429.
    pub max_connections_per_ip: usize,
    /// Browser `Origin`s allowed to open WebSockets. Empty allows only the
    /// page's own site (the Origin's host equals the Host header); `["*"]`
    /// allows any. Handshakes without an Origin (non-browser clients) are
    /// not affected.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            plugin_dir: PathBuf::from("plugins"),
            static_dir: None,
            cache_dir: None,
            cache: true,
            watch: true,
            admin: Admin::default(),
            log_format: LogFormat::Text,
            permessage_deflate: false,
            reuse_port: false,
            listen_backlog: 4096,
            trusted_proxies: Vec::new(),
            grants: GrantPolicy::default(),
            outbound: Outbound::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            cluster: Cluster::default(),
            tls: Tls::default(),
            state: State::default(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            hook: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            ping_interval: Duration::from_secs(30),
            close: Duration::from_secs(5),
            shutdown: Duration::from_secs(10),
            watch_debounce: Duration::from_millis(300),
            handshake: Duration::from_secs(10),
            upstream_connect: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            send_queue: 1024,
            send_queue_bytes: 4 << 20,
            reassembly_bytes: 64 << 20,
            instances_per_plugin: 0,
            instance_memory: 128 << 20,
            timers_per_plugin: 64,
            upstreams_per_plugin: 16,
            min_timer_ms: 10,
            state_bytes: 16 << 20,
            state_keys_listed: 1000,
            history_bytes: 64 << 20,
            attributes_per_connection: 64,
            attribute_bytes: 64 << 10,
            channels_per_connection: 64,
            tags_per_connection: 32,
            deliveries_per_hook: 100_000,
            log_line_bytes: 4096,
            log_lines_per_second: 100,
            max_name_len: 256,
            quarantine_after: 5,
            quarantine_window: Duration::from_secs(60),
            quarantine_backoff: Duration::from_secs(10),
            quarantine_max: Duration::from_secs(300),
            messages_per_second: 0,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            allowed_origins: Vec::new(),
        }
    }
}

impl Limits {
    pub fn instances(&self) -> usize {
        match self.instances_per_plugin {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// The names of the config file's top-level keys.
pub(crate) fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// The compile cache directory in effect, if caching is on.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("wsgate").join("compiled"))
    }

    /// The state backend in effect: `state.backend`, with `auto` resolved.
    pub fn state_backend(&self) -> StateBackend {
        match self.state.backend {
            StateBackend::Auto if self.cluster.url.is_some() => StateBackend::Redis,
            StateBackend::Auto if self.state.path.is_some() => StateBackend::Sqlite,
            StateBackend::Auto => StateBackend::Memory,
            chosen => chosen,
        }
    }

    /// Rejects settings that would make the server misbehave rather than
    /// fail at start.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let t = &self.timeouts;
        let checks = [
            (
                l.max_message_size == 0,
                "limits.max_message_size must be > 0",
            ),
            (l.send_queue == 0, "limits.send_queue must be > 0"),
            (
                l.send_queue_bytes < l.max_message_size,
                "limits.send_queue_bytes must be at least limits.max_message_size",
            ),
            (
                l.reassembly_bytes < l.max_message_size,
                "limits.reassembly_bytes must be at least limits.max_message_size",
            ),
            (
                l.quarantine_backoff.is_zero() || l.quarantine_max < l.quarantine_backoff,
                "limits.quarantine_backoff must be > 0 and at most limits.quarantine_max",
            ),
            (l.max_connections == 0, "limits.max_connections must be > 0"),
            (
                self.admin.max_connections == 0,
                "admin.max_connections must be > 0",
            ),
            (
                l.max_connections_per_ip == 0,
                "limits.max_connections_per_ip must be > 0",
            ),
            (
                l.instance_memory < (1 << 20),
                "limits.instance_memory must be at least 1 MiB",
            ),
            (t.hook.is_zero(), "timeouts.hook must be > 0"),
            (t.idle.is_zero(), "timeouts.idle must be > 0"),
            (
                t.ping_interval.is_zero(),
                "timeouts.ping_interval must be > 0",
            ),
            (
                self.cluster.heartbeat.is_zero(),
                "cluster.heartbeat must be > 0",
            ),
            (
                self.cluster.node_ttl <= self.cluster.heartbeat,
                "cluster.node_ttl must be longer than cluster.heartbeat",
            ),
            (self.cluster.queue == 0, "cluster.queue must be > 0"),
            (
                self.cluster.outbox_bytes < l.max_message_size,
                "cluster.outbox_bytes must be at least limits.max_message_size",
            ),
            (
                self.cluster.prefix.is_empty(),
                "cluster.prefix must not be empty",
            ),
            (
                self.cluster.prefix.contains(['{', '}']),
                "cluster.prefix must not contain { or }: it becomes the Redis Cluster hash tag of every key",
            ),
            (
                self.cluster.partitions == 0,
                "cluster.partitions must be > 0",
            ),
            (t.handshake.is_zero(), "timeouts.handshake must be > 0"),
            (
                l.state_keys_listed == 0,
                "limits.state_keys_listed must be > 0",
            ),
            (self.state.timeout.is_zero(), "state.timeout must be > 0"),
            (
                self.state.backend == StateBackend::Redis && self.cluster.url.is_none(),
                "state.backend = \"redis\" needs a cluster: set cluster.url (the state lives in the cluster's Redis)",
            ),
            (
                self.state.backend == StateBackend::Sqlite && self.state.path.is_none(),
                "state.backend = \"sqlite\" needs state.path, the database file",
            ),
            (
                self.outbound.http.timeout.is_zero(),
                "outbound.http.timeout must be > 0",
            ),
            (
                self.outbound.http.max_in_flight == 0,
                "outbound.http.max_in_flight must be > 0",
            ),
            (
                self.outbound
                    .http
                    .tls_ca
                    .as_ref()
                    .is_some_and(|p| !p.is_file()),
                "outbound.http.tls_ca is not a readable file",
            ),
            (
                t.upstream_connect.is_zero(),
                "timeouts.upstream_connect must be > 0",
            ),
            (
                self.tls.cert.is_some() && self.tls.key.is_none(),
                "tls.cert is set but tls.key is not: set both, or neither for plain HTTP",
            ),
            (
                self.tls.key.is_some() && self.tls.cert.is_none(),
                "tls.key is set but tls.cert is not: set both, or neither for plain HTTP",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err((*msg).to_owned());
        }
        self.trusted_proxies()?;
        self.grants
            .outbound_hosts()
            .map_err(|e| format!("grants.{e}"))?;
        Ok(())
    }

    /// `trusted_proxies` parsed: addresses (`10.0.0.1`) or networks
    /// (`10.0.0.0/8`).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(Into::into))
                    .map_err(|_| {
                        format!("trusted_proxies: {entry:?} is not an address or a network")
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.timeouts.hook, Duration::from_secs(5));
        assert!(config.validate().is_ok());
        assert!(!config.tls.enabled());
        assert_eq!(config.state_backend(), StateBackend::Memory);
    }

    #[test]
    fn the_state_backend_follows_the_cluster_then_the_path() {
        let mut config = Config::default();
        config.state.path = Some("/s.db".into());
        assert_eq!(config.state_backend(), StateBackend::Sqlite);
        config.cluster.url = Some("redis://127.0.0.1:1".into());
        assert_eq!(config.state_backend(), StateBackend::Redis);
        config.state.backend = StateBackend::Memory;
        assert_eq!(config.state_backend(), StateBackend::Memory);

        let mut config = Config::default();
        config.state.backend = StateBackend::Redis;
        let err = config.validate().unwrap_err();
        assert!(err.contains("cluster.url"), "{err}");
        config.state.backend = StateBackend::Sqlite;
        let err = config.validate().unwrap_err();
        assert!(err.contains("state.path"), "{err}");
        config.state.path = Some("/s.db".into());
        assert!(config.validate().is_ok());
    }
}
