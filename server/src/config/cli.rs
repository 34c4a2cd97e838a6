//! The command line: `--config FILE` and the flags that override single
//! settings. The overrides are a serde struct in the shape of [`Config`],
//! merged over the defaults, the file and the environment as one more
//! layer, so no key is spelled out by hand; durations are parsed (and
//! refused with the flag's name) when the command line is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

use super::{Config, LogFormat, StateBackend, top_level_keys};

/// Command-line flags. Each one overrides the same setting from the file and
/// the environment.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, about)]
pub struct Cli {
    /// Config file (TOML). Default: ./wsgate.toml if it exists.
    #[arg(long, short = 'c', env = "WSGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    /// Without a command, wsgate serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What else the binary does for plugin authors.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks a plugin against the contract without serving it: exports,
    /// imports, routes and grants, with this server's config.
    Check {
        /// The plugin, NAME.wasm.
        wasm: PathBuf,
        /// Its sidecar; default: NAME.toml beside it.
        #[arg(long)]
        sidecar: Option<PathBuf>,
    },
    /// Creates a listener project: the listener, its sidecar, its tests and
    /// the SDK it builds against.
    New {
        /// The project's folder, created; its name is the plugin's name
        /// (letters, digits, - and _), so the listener serves /ws/NAME.
        path: PathBuf,
        #[arg(long, value_enum)]
        lang: Lang,
    },
    /// Builds a project made by `wsgate new` into dist/NAME.wasm and
    /// dist/NAME.toml, with the scripts the examples are built with.
    Build {
        /// The project's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to put NAME.wasm and NAME.toml instead of the project's dist/,
        /// e.g. a server's plugin directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Builds a project made by `wsgate new`, then runs its tests: unit
    /// tests against an in-memory host and an integration test against this
    /// wsgate serving the build.
    Test {
        /// The project's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// The languages `wsgate new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        })
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// The top level of [`Config`]: only what was given is serialized.
#[derive(Debug, Args, Serialize)]
struct Overrides {
    /// Listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Plugin directory.
    #[arg(long = "plugins")]
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin_dir: Option<PathBuf>,
    /// Static file directory (default: the bundled demo).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    static_dir: Option<PathBuf>,
    /// Compiled-plugin cache directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    /// Offer permessage-deflate compression to clients.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    permessage_deflate: bool,
    /// Share the public port with other wsgate processes (SO_REUSEPORT).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    reuse_port: bool,
    /// Do not cache compiled plugins on disk.
    #[arg(long = "no-cache", action = ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    cache: bool,
    /// Do not watch the plugin directory for changes.
    #[arg(long = "no-watch", action = ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    watch: bool,
    #[command(flatten)]
    timeouts: TimeoutFlags,
    #[command(flatten)]
    limits: LimitFlags,
    #[command(flatten)]
    admin: AdminFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    state: StateFlags,
}

/// `[timeouts]`.
#[derive(Debug, Args, Serialize)]
struct TimeoutFlags {
    /// Hook deadline, e.g. 5s or 500ms.
    #[arg(long = "hook-timeout", value_parser = duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    hook: Option<Duration>,
    /// Idle timeout, e.g. 300s.
    #[arg(long = "idle-timeout", value_parser = duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    idle: Option<Duration>,
    /// Ping interval, e.g. 30s.
    #[arg(long = "ping-interval", value_parser = duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    ping_interval: Option<Duration>,
    /// Time allowed for the TLS handshake and the HTTP request head, e.g. 10s.
    #[arg(long = "handshake-timeout", value_parser = duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    handshake: Option<Duration>,
}

/// `[limits]`.
#[derive(Debug, Args, Serialize)]
struct LimitFlags {
    /// Largest client message in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_size: Option<usize>,
    /// Wasm instances per plugin (0: one per core).
    #[arg(long = "instances")]
    #[serde(skip_serializing_if = "Option::is_none")]
    instances_per_plugin: Option<usize>,
    /// Messages per second per connection (0: no limit).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    messages_per_second: Option<u32>,
    /// Memory cap per plugin instance in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_memory: Option<usize>,
}

/// `[admin]`.
#[derive(Debug, Args, Serialize)]
struct AdminFlags {
    /// Do not serve the admin API.
    #[arg(id = "admin_enabled", long = "no-admin", action = ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    enabled: bool,
    /// Admin API address, e.g. 127.0.0.1:9090.
    #[arg(id = "admin_listen", long = "admin-listen")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Admin API bearer token (prefer WSGATE_ADMIN__TOKEN: flags show in `ps`).
    #[arg(long = "admin-token")]
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// `[cluster]`.
#[derive(Debug, Args, Serialize)]
struct ClusterFlags {
    /// Join a cluster over Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long = "cluster", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Args, Serialize)]
struct TlsFlags {
    /// TLS certificate chain (PEM); with --tls-key the listener speaks TLS only.
    #[arg(long = "tls-cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long = "tls-key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
}

/// `[state]`.
#[derive(Debug, Args, Serialize)]
struct StateFlags {
    /// Where plugin state lives (auto: redis with --cluster, sqlite with
    /// --state-path, else memory).
    #[arg(long = "state-backend", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<StateBackend>,
    /// SQLite file for plugin state, kept across restarts.
    #[arg(long = "state-path", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
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
        fig = fig.merge(Serialized::defaults(&self.overrides));
        let config: Config = fig.extract().map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("wsgate").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_no_file() {
        let config = cli(&["--config", "/nonexistent.toml"]).load();
        assert!(config.is_err(), "an explicit missing file is an error");
    }

    /// Every flag names a setting: set all of them at once and each one
    /// lands where it should (a flag naming no setting would fail to load).
    #[test]
    fn every_flag_lands_on_its_setting() {
        let config = cli(&[
            "--config",
            "/dev/null",
            "--listen",
            "127.0.0.1:1",
            "--plugins",
            "/p",
            "--static-dir",
            "/s",
            "--cache-dir",
            "/c",
            "--log-format",
            "json",
            "--hook-timeout",
            "250ms",
            "--idle-timeout",
            "9s",
            "--ping-interval",
            "3s",
            "--handshake-timeout",
            "4s",
            "--max-message-size",
            "100",
            "--instances",
            "3",
            "--messages-per-second",
            "7",
            "--instance-memory",
            "2097152",
            "--permessage-deflate",
            "--reuse-port",
            "--no-cache",
            "--no-watch",
            "--admin-listen",
            "127.0.0.1:2",
            "--admin-token",
            "t",
            "--no-admin",
            "--cluster",
            "redis://127.0.0.1:1",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--state-backend",
            "sqlite",
            "--state-path",
            "/state.db",
        ])
        .load()
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        assert_eq!(config.plugin_dir, PathBuf::from("/p"));
        assert_eq!(config.static_dir, Some(PathBuf::from("/s")));
        assert_eq!(config.cache_dir, Some(PathBuf::from("/c")));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.timeouts.hook, Duration::from_millis(250));
        assert_eq!(config.timeouts.idle, Duration::from_secs(9));
        assert_eq!(config.timeouts.ping_interval, Duration::from_secs(3));
        assert_eq!(config.timeouts.handshake, Duration::from_secs(4));
        assert_eq!(config.limits.max_message_size, 100);
        assert_eq!(config.limits.instances_per_plugin, 3);
        assert_eq!(config.limits.messages_per_second, 7);
        assert_eq!(config.limits.instance_memory, 2 << 20);
        assert!(config.permessage_deflate && config.reuse_port);
        assert!(!config.cache && !config.watch && !config.admin.enabled);
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.admin.token.as_deref(), Some("t"));
        assert_eq!(config.cluster.url.as_deref(), Some("redis://127.0.0.1:1"));
        assert_eq!(config.tls.cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(config.tls.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(config.state.backend, StateBackend::Sqlite);
        assert_eq!(config.state.path, Some(PathBuf::from("/state.db")));
    }

    #[test]
    fn durations_are_checked_when_parsed() {
        let err = Cli::try_parse_from(["wsgate", "--hook-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--hook-timeout"), "{err}");
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
    }
}
