//! Test harness: builds plugins from source once, spawns a real `wsgate`
//! process on a free loopback port, and connects real WebSocket clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

/// Example plugins, built by `scripts/build-plugins.sh` (once per test
/// process, or taken from `WSGATE_TEST_PLUGINS` when the test script built
/// them already).
pub fn example_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("WSGATE_TEST_PLUGINS") {
            return PathBuf::from(dir);
        }
        let dir = root().join("target/test-plugins/examples");
        run(Command::new(root().join("scripts/build-plugins.sh")).arg(&dir));
        dir
    })
}

/// The hostile and misbehaving plugins under `tests/fixtures`, built from
/// source into their own directory.
pub fn fixture_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("WSGATE_TEST_FIXTURES") {
            return PathBuf::from(dir);
        }
        let dir = root().join("target/test-plugins/fixtures");
        run(Command::new(root().join("scripts/build-fixtures.sh")).arg(&dir));
        dir
    })
}

/// A fresh plugin directory holding copies of the named plugins (with their
/// sidecars) from `from`.
pub fn plugin_dir(from: &Path, names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(from, names, dir.path());
    dir
}

/// Copies the named plugins (with their sidecars) from `from` into `to`,
/// e.g. example plugins beside fixtures in one directory.
pub fn copy_plugins(from: &Path, names: &[&str], to: &Path) {
    for name in names {
        for ext in ["wasm", "toml"] {
            let src = from.join(format!("{name}.{ext}"));
            if src.exists() {
                std::fs::copy(&src, to.join(format!("{name}.{ext}"))).unwrap();
            }
        }
    }
}

/// The wsgate binary under test: `WSGATE_BIN`, else the one beside the tests.
pub fn wsgate_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("WSGATE_BIN") {
        return PathBuf::from(bin);
    }
    // Test executables live in target/<profile>/deps; the binary one up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("wsgate");
    assert!(
        bin.exists(),
        "{} not found: run scripts/test.sh, or `cargo build -p wsgate` first",
        bin.display()
    );
    bin
}

/// Raises this process's soft open-file limit to the hard one (servers
/// spawned afterwards inherit it) and returns the soft limit now in force.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim = wanted;
            }
        }
    }
    lim.rlim_cur
}

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub mod cluster;
pub mod raw;
pub mod redis;
pub mod resume;
pub mod upstream;

/// A `wsgate.toml` holding `toml`, and its path; the file lasts as long
/// as the returned directory.
pub fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wsgate.toml");
    std::fs::write(&file, toml).unwrap();
    let path = file.to_str().unwrap().to_owned();
    (dir, path)
}

/// A loopback port free now, for a server about to listen on it: below
/// the kernel's ephemeral range (see [`wsgate_bench::free_port`]).
pub fn free_port() -> u16 {
    wsgate_bench::free_port().expect("a free loopback port")
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, made at test
/// time and written as PEM files, with a client config trusting only it.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TestCert {
            cert,
            key,
            client: client_trusting(made.cert.der()),
            _dir: dir,
        }
    }
}

/// The `wsgate` command line every test server runs with, before its own
/// flags: loopback ports, the plugin directory and the test admin token.
fn wsgate_command(plugins: &Path, port: u16, admin_port: u16, log: &Path) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(wsgate_bin());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins")
        .arg(plugins)
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin_port}"))
        .env("WSGATE_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info,wsgate=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd
}

/// Whether a server that exited could not listen on a port picked for it
/// (its admin port always is; its public port where `public_picked`).
fn lost_a_port_race(logs: &str, public_picked: bool) -> bool {
    logs.lines().any(|line| {
        line.contains("cannot listen on") && (public_picked || line.contains("(admin)"))
    })
}

/// Runs `wsgate` with `args`, expecting it to refuse to start; returns
/// everything it printed. Panics if it is still running after 60 s.
pub fn start_fails(plugins: &Path, args: &[&str]) -> String {
    start_fails_on(plugins, free_port(), args)
}

/// Like [`start_fails`], with the public listener on `port`.
pub fn start_fails_on(plugins: &Path, port: u16, args: &[&str]) -> String {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("wsgate.log");
    let mut child = wsgate_command(plugins, port, free_port(), &log)
        .args(args)
        .spawn()
        .expect("spawn wsgate");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "wsgate kept running:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "wsgate started:\n{output}");
    output
}

/// A running `wsgate` process, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    /// The admin API's port; its token is [`ADMIN_TOKEN`].
    pub admin_port: u16,
    /// Set when the public listener speaks TLS: the client side trusting it.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The admin listener is on (no `--no-admin`).
    has_admin: bool,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `wsgate` serving `plugins` with extra CLI `args`, and waits
    /// until it is ready: every plugin loaded or failed (`/readyz`).
    pub async fn start(plugins: &Path, args: &[&str]) -> Server {
        Server::spawn(plugins, None, args, None, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables, e.g. ones
    /// the config lets sidecars grant.
    pub async fn start_with_env(plugins: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(plugins, None, args, None, env).await
    }

    /// Like [`Server::start`], but returns as soon as the public port
    /// accepts connections, while plugins may still be compiling; see
    /// [`Server::wait_ready`].
    pub async fn start_listening(plugins: &Path, args: &[&str]) -> Server {
        let port = free_port();
        let admin_port = free_port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("wsgate.log");
        let mut child = wsgate_command(plugins, port, admin_port, &log)
            .args(args)
            .spawn()
            .expect("spawn wsgate");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wsgate exited with {status}");
            }
            assert!(Instant::now() < deadline, "wsgate never listened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Server {
            child,
            port,
            admin_port,
            tls: None,
            has_admin: !args.contains(&"--no-admin"),
            log,
            _log_dir: log_dir,
        }
    }

    /// Like [`Server::start`], with the public listener on `port`.
    pub async fn start_on(plugins: &Path, port: u16, args: &[&str]) -> Server {
        Server::spawn(plugins, Some(port), args, None, &[]).await
    }

    /// Like [`Server::start`], with the public listener on TLS with `cert`;
    /// the URLs, `connect*` and `http_get` then use wss:// and https://.
    pub async fn start_tls(plugins: &Path, cert: &TestCert, args: &[&str]) -> Server {
        let mut all = vec![
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::spawn(plugins, None, &all, Some(cert.client.clone()), &[]).await
    }

    /// Starts a server on `port` (`None`: one picked here) and an admin
    /// port picked here, and waits until it is ready. A port picked here
    /// was free when picked, but another server starting beside this one
    /// (tests run two at a time, beside Autobahn's) may bind it first:
    /// then this server cannot listen, and starts again on new ports.
    async fn spawn(
        plugins: &Path,
        port: Option<u16>,
        args: &[&str],
        tls: Option<Arc<rustls::ClientConfig>>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let log_dir = tempfile::tempdir().unwrap();
            let log = log_dir.path().join("wsgate.log");
            let (public, admin_port) = (port.unwrap_or_else(free_port), free_port());
            let child = wsgate_command(plugins, public, admin_port, &log)
                .args(args)
                .envs(env.iter().copied())
                .spawn()
                .expect("spawn wsgate");
            let mut server = Server {
                child,
                port: public,
                admin_port,
                tls: tls.clone(),
                has_admin: !args.contains(&"--no-admin"),
                log,
                _log_dir: log_dir,
            };
            let Err(status) = server.ready_or_exit().await else {
                return server;
            };
            let logs = server.logs();
            if attempts == 3 || !lost_a_port_race(&logs, port.is_none()) {
                panic!("wsgate exited with {status}:\n{logs}");
            }
        }
    }

    /// Waits until every plugin has loaded or failed.
    pub async fn wait_ready(&mut self) {
        if let Err(status) = self.ready_or_exit().await {
            panic!("wsgate exited with {status}:\n{}", self.logs());
        }
    }

    /// [`wait_ready`](Self::wait_ready), or how the process ended first.
    async fn ready_or_exit(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            if self.is_ready().await {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "wsgate not ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this process has loaded its plugins. Asked on its own admin
    /// port when it has one: the public port may be shared with other
    /// processes (`--reuse-port`), and then any of them could answer. The
    /// answer must name this process: another server that took the admin
    /// port picked for this one (tests and Autobahn's server start side by
    /// side) would otherwise pass for it, and the test would then find
    /// nothing listening on its public port.
    async fn is_ready(&self) -> bool {
        if !self.has_admin {
            return matches!(self.http_get("/readyz").await, Ok((200, _)));
        }
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers = [("Authorization", auth.as_str())];
        match http_request(self.admin_port, "GET", "/admin/info", &headers, "").await {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|info| {
                info["server"]["pid"] == self.child.id() && info["server"]["ready"] == true
            }),
            _ => false,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// A WebSocket handshake over TLS when the server speaks it.
    async fn handshake(
        &self,
        req: tungstenite::handshake::client::Request,
    ) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
        let connector = self.tls.clone().map(Connector::Rustls);
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connects a WebSocket client to `path`.
    pub async fn connect(&self, path: &str) -> Client {
        let req = self.ws_url(path).into_client_request().unwrap();
        let (ws, _) = self
            .handshake(req)
            .await
            .unwrap_or_else(|e| panic!("connect {path}: {e}\n{}", self.logs()));
        ws
    }

    /// Connects over a socket whose kernel receive buffer is `bytes`, for
    /// a client that stops reading: the server's writes to it back up
    /// after a few KiB instead of the default's megabytes.
    pub async fn connect_with_recv_buffer(&self, path: &str, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let tcp = socket
            .connect(([127, 0, 0, 1], self.port).into())
            .await
            .unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(self.ws_url(path), MaybeTlsStream::Plain(tcp))
                .await
                .unwrap_or_else(|e| panic!("connect {path}: {e}\n{}", self.logs()));
        ws
    }

    /// Connects with extra handshake headers; returns the handshake response too.
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Client, tungstenite::handshake::client::Response) {
        let mut req = self.ws_url(path).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        self.handshake(req)
            .await
            .unwrap_or_else(|e| panic!("connect {path}: {e}\n{}", self.logs()))
    }

    /// Tries a handshake and returns the HTTP status and body of a refusal.
    pub async fn handshake_error(&self, path: &str) -> (u16, String) {
        match self.try_handshake(path).await {
            Ok(_) => panic!("handshake to {path} unexpectedly succeeded"),
            Err(refusal) => refusal,
        }
    }

    /// A handshake that may be refused: the client, or the HTTP status and
    /// body of the refusal.
    pub async fn try_handshake(&self, path: &str) -> Result<Client, (u16, String)> {
        self.try_handshake_with(path, &[]).await
    }

    /// Like [`Server::try_handshake`], with extra handshake headers.
    pub async fn try_handshake_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        let mut req = self.ws_url(path).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match self.handshake(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((resp.status().as_u16(), body))
            }
            Err(e) => panic!("handshake to {path}: unexpected error {e}"),
        }
    }

    /// A minimal HTTP/1.1 GET (over TLS when the server speaks it): status
    /// and body.
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let Some(tls) = &self.tls else {
            return http_request(self.port, "GET", path, &[], "").await;
        };
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await?;
        http_exchange(stream, self.port, "GET", path, &[], "").await
    }

    /// An admin API request with the test token: status and body.
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http_request(
            self.admin_port,
            method,
            path,
            &[("Authorization", &auth)],
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}\n{}", self.logs()))
    }

    /// `GET /admin/info` parsed.
    pub async fn admin_info(&self, query: &str) -> serde_json::Value {
        let (status, body) = self.admin("GET", &format!("/admin/info{query}")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("info is not JSON ({e}): {body}"))
    }

    /// Sends SIGTERM and waits for the exit status.
    /// A request to the publish API on the admin listener; a JSON body is
    /// parsed, anything else comes back as a string.
    pub async fn publish(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let (status, body) = http_request(self.admin_port, "POST", path, &all, body)
            .await
            .unwrap_or_else(|e| panic!("publish {path}: {e}\n{}", self.logs()));
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, json)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).0
    }

    /// Asserts the server grew by less than `bound_mib` over `base_kib`
    /// (what `rss_kib` said before `attack`), and logs by how much.
    pub fn assert_rss_within(&self, base_kib: u64, bound_mib: u64, attack: &str) {
        let now = self.rss_kib();
        eprintln!(
            "RSS {attack}: {base_kib} KiB before, {now} KiB after (+{} KiB; bound +{bound_mib} MiB)",
            now.saturating_sub(base_kib)
        );
        assert!(
            now < base_kib + bound_mib * 1024,
            "{attack}: RSS grew from {base_kib} KiB to {now} KiB (bound +{bound_mib} MiB)"
        );
    }

    /// Kills the process without warning, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process's (VmRSS, VmHWM) in KiB: resident memory now, and its peak.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A plain HTTP/1.1 request over a fresh connection (`Connection: close`).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    http_exchange(stream, port, method, path, headers, body).await
}

async fn http_exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Ok((status, body))
}

/// The next data message, skipping pings/pongs; panics after 10 s.
pub async fn next_msg(ws: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// The next message as text; panics if it is not text.
pub async fn next_text(ws: &mut Client) -> String {
    match next_msg(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next message parsed as JSON.
pub async fn next_json(ws: &mut Client) -> serde_json::Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts no data or close frame arrives within `wait` (pings and pongs,
/// which the client answers by itself, do not count).
pub async fn assert_silent(ws: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Waits for the close frame and returns its code and reason.
pub async fn expect_close(ws: &mut Client) -> (u16, String) {
    loop {
        match next_msg(ws).await {
            Message::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
            Message::Close(None) => return (1005, String::new()),
            _ => continue,
        }
    }
}

/// Sends a text message and returns the text reply.
pub async fn ask(ws: &mut Client, cmd: &str) -> String {
    send_text(ws, cmd).await;
    next_text(ws).await
}

/// One plugin's entry in `/admin/info`'s `plugins` list.
pub fn plugin_info<'a>(info: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    info["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("plugin {name} not in {info:#}"))
}

/// Polls `check` until it returns `Some`, for at most `within`; on timeout
/// the server's log is shown.
pub async fn eventually<T, F, Fut>(what: &str, server: &Server, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads and discards messages (join notices and the like) until the
/// socket has been quiet for `quiet`.
pub async fn drain(ws: &mut Client, quiet: Duration) {
    while tokio::time::timeout(quiet, next_msg(ws)).await.is_ok() {}
}

pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// A TLS client configuration that trusts only `root`, for a test's own
/// certificate authority or self-signed certificate.
pub fn client_trusting(
    root: &rustls::pki_types::CertificateDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(client)
}

/// The value of one sample in Prometheus text: `name` with every one of
/// `labels` (`key="value"`) present; 0 when absent.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| {
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            metric == name && labels.iter().all(|label| rest.contains(label))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// How many times `plugin`'s `hook` was called, by its duration histogram.
pub fn hook_calls(metrics: &str, plugin: &str, hook: &str) -> f64 {
    sample(
        metrics,
        "wsgate_hook_duration_seconds_count",
        &[&format!("plugin=\"{plugin}\""), &format!("hook=\"{hook}\"")],
    )
}

/// An echo answers a pipelined burst of text and binary in order, in far
/// fewer guest calls than messages: the SDK's loop handles whole bursts.
/// `name` is an echo example; text and binary, empty and 16 KiB, so that
/// the SDK's loop hands on and frees buffers of every kind.
pub async fn echo_answers_bursts_in_order_in_few_calls(name: &str) {
    let dir = plugin_dir(example_plugins(), &[name]);
    let server = Server::start(dir.path(), &[]).await;
    let mut ws = raw::RawWs::connect(server.port, &format!("/ws/{name}"), &[])
        .await
        .unwrap();
    const N: usize = 1_000;
    let frames: Vec<(u8, Vec<u8>)> = (0..N)
        .map(|i| match i % 4 {
            0 => raw::text(&format!("text {i} \u{e9}\u{1f600}")),
            1 => (raw::BINARY, vec![i as u8; i % 200]),
            2 => raw::text(""),
            _ => (raw::BINARY, vec![(i % 251) as u8; 16 * 1024]),
        })
        .collect();
    ws.pipeline(&frames).await;
    assert!(
        ws.read_frames(N, Duration::from_secs(20)).await == frames,
        "echoes in order"
    );

    let (_, metrics) = server.admin("GET", "/metrics").await;
    let batches = hook_calls(&metrics, name, "on-messages");
    let singles = hook_calls(&metrics, name, "on-message");
    assert!(batches >= 1.0, "no on-messages call:\n{metrics}");
    assert!(
        batches + singles <= (N / 4) as f64,
        "{batches} on-messages and {singles} on-message calls for {N} pipelined messages"
    );
}

#[cfg(test)]
mod tests {
    use super::lost_a_port_race;

    #[test]
    fn only_a_port_picked_here_is_a_lost_race() {
        let admin = "ERROR wsgate: cannot listen on 127.0.0.1:20001 (admin): Address already in use (os error 98)";
        let public =
            "ERROR wsgate: cannot listen on 127.0.0.1:20002: Address already in use (os error 98)";
        assert!(lost_a_port_race(admin, false));
        assert!(lost_a_port_race(public, true));
        // A public port the test chose itself is not picked again.
        assert!(!lost_a_port_race(public, false));
        assert!(!lost_a_port_race("ERROR wsgate: plugin failed", true));
    }
}
