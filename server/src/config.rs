//! Server configuration: built-in defaults, then `wsgate.toml`, then
//! `WSGATE_*` environment variables, then command-line flags — each layer
//! overriding the one before. No file is needed: the defaults serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Scale-out: several nodes as one, over Redis.
    pub cluster: Cluster,
    /// TLS for the public listener (wss:// and https://).
    pub tls: Tls,
}

/// Several wsgate nodes behind a load balancer, sharing deliveries and
/// counts over Redis pub/sub. Off unless `url` is set: a single node needs
/// no Redis at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`; unset keeps everything in-process.
    pub url: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub prefix: String,
    /// How often a node reports itself (and its counts) to the others.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node not heard from for this long drops out of the cluster's
    /// counts and presence (so a dead node is gone within
    /// `node_ttl + heartbeat`).
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// Deliveries waiting to be forwarded to Redis; beyond it new ones are
    /// dropped (counted and logged) rather than letting memory grow during
    /// an outage.
    pub queue: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            url: None,
            prefix: "wsgate".into(),
            heartbeat: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            queue: 65_536,
        }
    }
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
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
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
    /// Wasm instances per plugin serving hook calls concurrently; 0 means
    /// one per CPU core.
    pub instances_per_plugin: usize,
    /// Linear memory cap per plugin instance, in bytes.
    pub instance_memory: usize,
    /// Pending timers per plugin.
    pub timers_per_plugin: usize,
    /// Shortest timer delay, in milliseconds.
    pub min_timer_ms: u32,
    /// Total bytes of a plugin's key-value state (keys plus values).
    pub state_bytes: usize,
    /// Attributes per connection.
    pub attributes_per_connection: usize,
    /// Longest channel, tag, attribute or state key name, in bytes.
    pub max_name_len: usize,
    /// Crashes (traps or deadline overruns) of one plugin version within
    /// `quarantine_window` after which it refuses new connections with 503
    /// until redeployed; 0 turns quarantine off.
    pub quarantine_after: usize,
    #[serde(with = "humantime_serde")]
    pub quarantine_window: Duration,
    /// Messages per second one connection may send (bursts up to one
    /// second's worth); over it the connection is closed with 1008. 0 turns
    /// the limit off, the default, since a pipelining client legitimately
    /// sends tens of thousands per second.
    pub messages_per_second: u32,
    /// Open WebSocket connections in total; more are refused with 503.
    pub max_connections: usize,
    /// Open connections from one client address; more are refused with 429.
    pub max_connections_per_ip: usize,
    /// Browser `Origin`s allowed to open WebSockets; empty allows any.
    /// Handshakes without an Origin (non-browser clients) are not affected.
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
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            cluster: Cluster::default(),
            tls: Tls::default(),
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
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            send_queue: 1024,
            instances_per_plugin: 0,
            instance_memory: 128 << 20,
            timers_per_plugin: 64,
            min_timer_ms: 10,
            state_bytes: 16 << 20,
            attributes_per_connection: 64,
            max_name_len: 256,
            quarantine_after: 5,
            quarantine_window: Duration::from_secs(60),
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

/// Command-line flags. Each one overrides the same setting from the file and
/// the environment.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, about)]
pub struct Cli {
    /// Config file (TOML). Default: ./wsgate.toml if it exists.
    #[arg(long, short = 'c', env = "WSGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Plugin directory.
    #[arg(long = "plugins")]
    pub plugin_dir: Option<PathBuf>,
    /// Static file directory (default: the bundled demo).
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
    /// Compiled-plugin cache directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Hook deadline, e.g. 5s or 500ms.
    #[arg(long)]
    pub hook_timeout: Option<String>,
    /// Idle timeout, e.g. 300s.
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Ping interval, e.g. 30s.
    #[arg(long)]
    pub ping_interval: Option<String>,
    /// Largest client message in bytes.
    #[arg(long)]
    pub max_message_size: Option<usize>,
    /// Wasm instances per plugin (0: one per core).
    #[arg(long)]
    pub instances: Option<usize>,
    /// Messages per second per connection (0: no limit).
    #[arg(long)]
    pub messages_per_second: Option<u32>,
    /// Memory cap per plugin instance in bytes.
    #[arg(long)]
    pub instance_memory: Option<usize>,
    /// Offer permessage-deflate compression to clients.
    #[arg(long)]
    pub permessage_deflate: bool,
    /// Share the public port with other wsgate processes (SO_REUSEPORT).
    #[arg(long)]
    pub reuse_port: bool,
    /// Do not cache compiled plugins on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not watch the plugin directory for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// Admin API address, e.g. 127.0.0.1:9090.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Admin API bearer token (prefer WSGATE_ADMIN__TOKEN: flags show in `ps`).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Do not serve the admin API.
    #[arg(long)]
    pub no_admin: bool,
    /// Join a cluster over Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key the listener speaks TLS only.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Time allowed for the TLS handshake and the HTTP request head, e.g. 10s.
    #[arg(long)]
    pub handshake_timeout: Option<String>,
}

impl Cli {
    /// Layers defaults, file, environment and flags into one config.
    pub fn load(&self) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match &self.config {
            Some(path) => {
                if !path.exists() {
                    return Err(format!("config file {} does not exist", path.display()));
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None => fig = fig.merge(Toml::file(Path::new("wsgate.toml"))),
        }
        // Only variables naming a setting are config; other WSGATE_* names
        // (tool and test variables) are none of the server's business.
        let sections = top_level_keys();
        fig = fig.merge(Env::prefixed("WSGATE_").split("__").filter(move |key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            sections.iter().any(|s| s.eq_ignore_ascii_case(top))
        }));
        let overrides: [(&str, Option<figment::value::Value>); _] = [
            ("listen", self.listen.map(|v| v.to_string().into())),
            ("plugin_dir", path_value(&self.plugin_dir)),
            ("static_dir", path_value(&self.static_dir)),
            ("cache_dir", path_value(&self.cache_dir)),
            (
                "log_format",
                self.log_format.map(|f| {
                    match f {
                        LogFormat::Text => "text",
                        LogFormat::Json => "json",
                    }
                    .into()
                }),
            ),
            ("timeouts.hook", self.hook_timeout.clone().map(Into::into)),
            ("timeouts.idle", self.idle_timeout.clone().map(Into::into)),
            (
                "timeouts.ping_interval",
                self.ping_interval.clone().map(Into::into),
            ),
            (
                "limits.max_message_size",
                self.max_message_size.map(|v| (v as u64).into()),
            ),
            (
                "limits.instances_per_plugin",
                self.instances.map(|v| (v as u64).into()),
            ),
            (
                "limits.instance_memory",
                self.instance_memory.map(|v| (v as u64).into()),
            ),
            (
                "limits.messages_per_second",
                self.messages_per_second.map(|v| u64::from(v).into()),
            ),
            (
                "permessage_deflate",
                self.permessage_deflate.then(|| true.into()),
            ),
            ("reuse_port", self.reuse_port.then(|| true.into())),
            ("cache", self.no_cache.then(|| false.into())),
            ("watch", self.no_watch.then(|| false.into())),
            ("admin.enabled", self.no_admin.then(|| false.into())),
            (
                "admin.listen",
                self.admin_listen.map(|v| v.to_string().into()),
            ),
            ("admin.token", self.admin_token.clone().map(Into::into)),
            ("cluster.url", self.cluster.clone().map(Into::into)),
            ("tls.cert", path_value(&self.tls_cert)),
            ("tls.key", path_value(&self.tls_key)),
            (
                "timeouts.handshake",
                self.handshake_timeout.clone().map(Into::into),
            ),
        ];
        for (key, value) in overrides {
            if let Some(value) = value {
                fig = fig.merge(Serialized::default(key, value));
            }
        }
        let config: Config = fig.extract().map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }
}

/// The names of the config file's top-level keys.
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn path_value(path: &Option<PathBuf>) -> Option<figment::value::Value> {
    path.as_ref()
        .map(|p| p.to_string_lossy().into_owned().into())
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
            (l.max_connections == 0, "limits.max_connections must be > 0"),
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
                self.cluster.prefix.is_empty(),
                "cluster.prefix must not be empty",
            ),
            (t.handshake.is_zero(), "timeouts.handshake must be > 0"),
            (
                self.tls.cert.is_some() && self.tls.key.is_none(),
                "tls.cert is set but tls.key is not: set both, or neither for plain HTTP",
            ),
            (
                self.tls.key.is_some() && self.tls.cert.is_none(),
                "tls.key is set but tls.cert is not: set both, or neither for plain HTTP",
            ),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err((*msg).to_owned()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("wsgate").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_no_file() {
        let config = cli(&["--config", "/nonexistent.toml"]).load();
        assert!(config.is_err(), "an explicit missing file is an error");
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.timeouts.hook, Duration::from_secs(5));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("wsgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wsgate.toml");
        std::fs::write(
            &file,
            "plugin_dir = \"/p\"\n[timeouts]\nhook = \"250ms\"\n[limits]\nmax_message_size = 100\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let config = cli(&["-c", f, "--max-message-size", "200"]).load().unwrap();
        assert_eq!(config.plugin_dir, PathBuf::from("/p"));
        assert_eq!(config.timeouts.hook, Duration::from_millis(250));
        assert_eq!(config.limits.max_message_size, 200);
        let config = cli(&["-c", f, "--hook-timeout", "2s"]).load().unwrap();
        assert_eq!(config.timeouts.hook, Duration::from_secs(2));
        assert!(!config.permessage_deflate);
        assert!(!config.reuse_port);
        let config = cli(&["-c", f, "--permessage-deflate", "--reuse-port"])
            .load()
            .unwrap();
        assert!(config.permessage_deflate);
        assert!(config.reuse_port);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("wsgate-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        assert!(cli(&["-c", file.to_str().unwrap()]).load().is_err());
        std::fs::write(&file, "[limits]\nsend_queue = 0\n").unwrap();
        let err = cli(&["-c", file.to_str().unwrap()]).load().unwrap_err();
        assert!(err.to_string().contains("send_queue"), "{err}");
    }

    #[test]
    fn tls_needs_both_paths() {
        let config = cli(&["--tls-cert", "/c.pem", "--handshake-timeout", "2s"]).load();
        let err = config.unwrap_err();
        assert!(err.contains("tls.key"), "{err}");
        let err = cli(&["--tls-key", "/k.pem"]).load().unwrap_err();
        assert!(err.contains("tls.cert"), "{err}");
        let config = cli(&["--tls-cert", "/c.pem", "--tls-key", "/k.pem"])
            .load()
            .unwrap();
        assert!(config.tls.enabled());
        assert_eq!(config.timeouts.handshake, Duration::from_secs(10));
        assert!(!Config::default().tls.enabled());
    }
}
