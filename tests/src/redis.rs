//! Private Redis servers for cluster tests: a standalone `redis-server`
//! (plain or TLS-only, without persistence or with an fsync'd append-only
//! file), and a three-master Redis Cluster. Each runs on its own free
//! ports and is killed on drop.
//! `redis-server` comes from Debian's `redis-server` package
//! (scripts/setup-redis.sh installs it); Debian builds it with TLS.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

fn redis_server_bin() -> String {
    std::env::var("WSGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn spawn_redis_server(args: &[String], cwd: Option<&Path>) -> Child {
    let bin = redis_server_bin();
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {bin} ({e}): run scripts/setup-redis.sh (apt-get install redis-server)")
    })
}

/// Waits (at most 10 s) until `port` accepts TCP connections.
async fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} on port {port} exited at start with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = super::free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl std::fmt::Display for Reply {
    /// `+OK`, `-ERR …` and `:3` as on the wire; a bulk string as its
    /// content; an array as its elements, one a line; nil as `(nil)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(s) => write!(f, "-{s}"),
            Reply::Int(n) => write!(f, ":{n}"),
            Reply::Bulk(Some(b)) => f.write_str(&String::from_utf8_lossy(b)),
            Reply::Bulk(None) | Reply::Array(None) => f.write_str("(nil)"),
            Reply::Array(Some(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

fn read_reply<'a, R: AsyncBufRead + Unpin + Send>(
    r: &'a mut R,
) -> Pin<Box<dyn Future<Output = std::io::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1.min(line.len()));
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad RESP line {line:?}"),
            )
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; len as usize + 2];
                    r.read_exact(&mut buf).await?;
                    buf.truncate(len as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(read_reply(r).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    })
}

/// Sends one command (RESP) over `stream` and reads its whole reply.
async fn request<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    args: &[&[u8]],
) -> std::io::Result<Reply> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        req.extend_from_slice(arg);
        req.extend_from_slice(b"\r\n");
    }
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(&req).await?;
    stream.get_mut().flush().await?;
    read_reply(&mut stream).await
}

/// One plain command to `127.0.0.1:port`, its reply as text (see [`Reply`]).
async fn plain_command(port: u16, args: &[&[u8]]) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to redis on {port}: {e}"));
    request(tcp, args)
        .await
        .unwrap_or_else(|e| panic!("redis on {port}: {e}"))
        .to_string()
}

/// The PEM files of a TLS-only Redis: a test CA and a server certificate
/// it signed for `127.0.0.1` and `localhost`.
struct RedisTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl RedisTls {
    fn generate() -> RedisTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test Redis CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let paths = (
            dir.path().join("ca.pem"),
            dir.path().join("redis.pem"),
            dir.path().join("redis-key.pem"),
        );
        std::fs::write(&paths.0, ca_cert.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();

        RedisTls {
            ca: paths.0,
            cert: paths.1,
            key: paths.2,
            client: super::client_trusting(ca_cert.der()),
            _dir: dir,
        }
    }
}

/// A standalone `redis-server`.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Set for [`Redis::start_tls`]: the server speaks TLS only.
    tls: Option<RedisTls>,
    /// Set for [`Redis::start_persistent`]: where its append-only file is.
    data: Option<tempfile::TempDir>,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: super::free_port(),
            tls: None,
            data: None,
        };
        redis.spawn().await;
        redis
    }

    /// A Redis that speaks TLS only (no plain port), with a certificate
    /// for `127.0.0.1` and `localhost` signed by a CA made for the test
    /// ([`Redis::ca_path`]). Clients are not asked for certificates.
    pub async fn start_tls() -> Redis {
        let mut redis = Redis {
            child: None,
            port: super::free_port(),
            tls: Some(RedisTls::generate()),
            data: None,
        };
        redis.spawn().await;
        redis
    }

    /// A Redis that keeps its data across [`Redis::stop`] and
    /// [`Redis::restart`]: an append-only file, fsync'd on every write
    /// (`appendfsync always`), so even a kill loses nothing it answered.
    pub async fn start_persistent() -> Redis {
        let mut redis = Redis {
            child: None,
            port: super::free_port(),
            tls: None,
            data: Some(tempfile::tempdir().unwrap()),
        };
        redis.spawn().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://…` for a TLS Redis.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The PEM file of the CA that signed a TLS Redis's certificate.
    pub fn ca_path(&self) -> &Path {
        &self
            .tls
            .as_ref()
            .expect("ca_path: not a TLS Redis (use Redis::start_tls)")
            .ca
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<String> = Vec::new();
        match &self.tls {
            None => args.extend(["--port".into(), port]),
            Some(tls) => {
                let path = |p: &Path| p.to_str().unwrap().to_owned();
                args.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    path(&tls.cert),
                    "--tls-key-file".into(),
                    path(&tls.key),
                    "--tls-ca-cert-file".into(),
                    path(&tls.ca),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
            }
        }
        args.extend(["--bind", "127.0.0.1", "--save", ""].map(String::from));
        match &self.data {
            None => args.extend(["--appendonly", "no"].map(String::from)),
            Some(dir) => args.extend([
                "--dir".into(),
                dir.path().to_str().unwrap().to_owned(),
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
            ]),
        }
        let mut child = spawn_redis_server(&args, None);
        wait_listening(self.port, &mut child, "redis-server").await;
        self.child = Some(child);
    }

    /// Runs one command (RESP over a fresh connection, TLS for a TLS
    /// Redis) and returns the reply as text: `:3`, `+OK` or `-ERR …` as
    /// on the wire, a bulk string as its content, an array one element a
    /// line (see [`Reply`]).
    pub async fn command(&self, args: &[&[u8]]) -> String {
        let Some(tls) = &self.tls else {
            return plain_command(self.port, args).await;
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls.client.clone())
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to redis on {}: {e}", self.port));
        request(stream, args)
            .await
            .unwrap_or_else(|e| panic!("redis on {}: {e}", self.port))
            .to_string()
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is
    /// answered, as with a Redis that hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server, as an outage would (all data is lost, unless it
    /// was started with [`Redis::start_persistent`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and, for TLS, the same certificate).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One master of a [`RedisCluster`].
struct ClusterNode {
    port: u16,
    child: Child,
    dir: PathBuf,
}

/// A local Redis Cluster of three masters (no replicas) on loopback, the
/// 16384 slots split evenly, every node reporting `cluster_state:ok`.
/// Each node has its own working directory and `nodes.conf` in a tempdir,
/// and its cluster bus on a second free port (`cluster-port`, Redis 7),
/// not on port + 10000.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        const MASTERS: usize = 3;
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * MASTERS);
        let mut nodes = Vec::with_capacity(MASTERS);
        for i in 0..MASTERS {
            let (port, bus) = (ports[i], ports[MASTERS + i]);
            let node_dir = dir.path().join(format!("node-{port}"));
            std::fs::create_dir(&node_dir).unwrap();
            let s = |p: &Path| p.to_str().unwrap().to_owned();
            let args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-port".into(),
                bus.to_string(),
                "--cluster-config-file".into(),
                s(&node_dir.join(format!("nodes-{port}.conf"))),
                "--dir".into(),
                s(&node_dir),
                "--logfile".into(),
                s(&node_dir.join("redis.log")),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
            ];
            let child = spawn_redis_server(&args, Some(&node_dir));
            nodes.push(ClusterNode {
                port,
                child,
                dir: node_dir,
            });
        }
        let mut cluster = RedisCluster { nodes, _dir: dir };
        for node in &mut cluster.nodes {
            wait_listening(node.port, &mut node.child, "redis-server (cluster node)").await;
        }

        // By hand rather than `redis-cli --cluster create`, which polls once
        // a second and takes about 6 s: distinct config epochs, an even
        // split of the slots, then the first node meets the others.
        let per = 16384 / MASTERS;
        for (i, &port) in cluster.ports().iter().enumerate() {
            let epoch = (i + 1).to_string();
            let first = (i * per).to_string();
            let last = if i + 1 == MASTERS {
                16383
            } else {
                (i + 1) * per - 1
            }
            .to_string();
            for args in [
                &[&b"CLUSTER"[..], b"SET-CONFIG-EPOCH", epoch.as_bytes()][..],
                &[
                    b"CLUSTER",
                    b"ADDSLOTSRANGE",
                    first.as_bytes(),
                    last.as_bytes(),
                ],
            ] {
                let reply = plain_command(port, args).await;
                assert_eq!(reply, "+OK", "{args:?} on {port}");
            }
        }
        let seed = cluster.nodes[0].port;
        for i in 1..MASTERS {
            let port = cluster.nodes[i].port.to_string();
            let bus = ports[MASTERS + i].to_string();
            let reply = plain_command(
                seed,
                &[
                    b"CLUSTER",
                    b"MEET",
                    b"127.0.0.1",
                    port.as_bytes(),
                    bus.as_bytes(),
                ],
            )
            .await;
            assert_eq!(reply, "+OK", "CLUSTER MEET {port} from {seed}");
        }

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all_ok = true;
            for port in cluster.ports() {
                let info = plain_command(port, &[b"CLUSTER", b"INFO"]).await;
                all_ok &= info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{MASTERS}"));
            }
            if all_ok {
                break;
            }
            if Instant::now() > deadline {
                let mut report = String::new();
                for node in &cluster.nodes {
                    let info = plain_command(node.port, &[b"CLUSTER", b"INFO"]).await;
                    let log =
                        std::fs::read_to_string(node.dir.join("redis.log")).unwrap_or_default();
                    report.push_str(&format!(
                        "--- node {}:\n{info}\n--- its log:\n{log}\n",
                        node.port
                    ));
                }
                panic!(
                    "the Redis Cluster did not reach cluster_state:ok on every node within 30 s:\n{report}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "Redis Cluster on ports {:?} ready after {:?}",
            cluster.ports(),
            started.elapsed()
        );
        cluster
    }

    /// The seed node's URL, `redis://127.0.0.1:PORT` (the first master).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The masters' client ports, the seed first.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Runs one command on the node at `port` (no redirection is
    /// followed) and returns its reply as text, like [`Redis::command`].
    pub async fn command(&self, port: u16, args: &[&[u8]]) -> String {
        plain_command(port, args).await
    }

    /// The log of the node at `port`, for failure messages.
    pub fn log(&self, port: u16) -> String {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| std::fs::read_to_string(n.dir.join("redis.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
    }
}
