//! Connections to Redis, a single server or a Redis Cluster, plain or TLS,
//! behind one type, so that the publisher, the subscriber and the
//! heartbeat do not care which.
//!
//! Both speak RESP3, whose push messages let one multiplexed connection
//! subscribe and unsubscribe while it receives. On a Redis Cluster the bus
//! uses sharded pub/sub (SPUBLISH, SSUBSCRIBE): each partition channel lives
//! on the shard that owns its hash slot, so pub/sub traffic spreads over
//! the shards instead of being copied to all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, PushInfo, PushKind, RedisFuture, Value};
use tokio::sync::{Notify, mpsc};

use crate::config::{self, RedisMode};

/// How long one connection attempt or command may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Channels (un)subscribed in one go.
const SUBSCRIBE_CHUNK: usize = 512;

/// How to reach Redis.
pub enum Backend {
    Single(redis::Client),
    /// A seed node, from which the client learns the rest.
    Cluster {
        seed: redis::ConnectionInfo,
        certs: Option<redis::TlsCertificates>,
    },
}

impl Backend {
    /// From `cluster.url`, `cluster.mode` and `cluster.tls_ca`. Fails only
    /// on a malformed URL or an unreadable CA file.
    pub fn new(settings: &config::Cluster, url: &str) -> Result<Backend> {
        let redacted = super::redact(url);
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .with_context(|| format!("cluster.url {redacted} is not a Redis URL"))?;
        let info = {
            let redis = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info.set_redis_settings(redis)
        };
        let certs =
            match &settings.tls_ca {
                Some(path) => Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(path).with_context(|| {
                        format!("cluster.tls_ca: cannot read {}", path.display())
                    })?),
                }),
                None => None,
            };
        Ok(match settings.mode {
            RedisMode::Standalone => Backend::Single(match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            }?),
            RedisMode::Cluster => Backend::Cluster { seed: info, certs },
        })
    }

    /// A connection for commands and publishing.
    pub async fn connect(&self) -> Result<Link> {
        self.open(None).await
    }

    /// A connection whose subscriptions' messages go to `inbox`.
    pub async fn listen(&self, inbox: Inbox) -> Result<Link> {
        self.open(Some(inbox)).await
    }

    async fn open(&self, inbox: Option<Inbox>) -> Result<Link> {
        let conn = match self {
            Backend::Single(client) => {
                let mut config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(IO_TIMEOUT))
                    .set_response_timeout(Some(IO_TIMEOUT));
                if let Some(inbox) = inbox {
                    config = config.set_push_sender(inbox);
                }
                let conn = client.get_multiplexed_async_connection_with_config(&config);
                Conn::Single(tokio::time::timeout(IO_TIMEOUT, conn).await??)
            }
            Backend::Cluster { seed, certs } => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(vec![seed.clone()])
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .connection_timeout(IO_TIMEOUT)
                    .response_timeout(IO_TIMEOUT);
                if let Some(certs) = certs {
                    builder = builder.certs(certs.clone());
                }
                if let Some(inbox) = inbox {
                    builder = builder.push_sender(inbox);
                }
                let client = builder.build()?;
                let conn = client.get_async_connection();
                Conn::Cluster(tokio::time::timeout(IO_TIMEOUT, conn).await??)
            }
        };
        Ok(Link { conn })
    }
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// One multiplexed connection to Redis: cheap to clone, and every clone
/// shares it.
#[derive(Clone)]
pub struct Link {
    conn: Conn,
}

impl Link {
    /// Publishes frames, each on its channel, in one round trip: one
    /// pipeline on a single server; on a cluster, concurrent SPUBLISHes
    /// that the client routes to each channel's shard.
    pub async fn publish(&mut self, frames: &[(String, Bytes)]) -> Result<()> {
        match &mut self.conn {
            Conn::Single(conn) => {
                let mut pipe = redis::pipe();
                for (channel, frame) in frames {
                    pipe.publish(channel, frame.as_ref()).ignore();
                }
                pipe.query_async::<()>(conn).await?;
            }
            Conn::Cluster(conn) => {
                let sends = frames.iter().map(|(channel, frame)| {
                    let mut conn = conn.clone();
                    async move { conn.spublish::<_, _, ()>(channel, frame.as_ref()).await }
                });
                futures_util::future::try_join_all(sends).await?;
            }
        }
        Ok(())
    }

    pub async fn subscribe(&mut self, channels: &[String]) -> Result<()> {
        self.subscription(channels, true).await
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<()> {
        self.subscription(channels, false).await
    }

    /// (Un)subscribes in chunks, each within [`IO_TIMEOUT`], so that a
    /// node resubscribing to thousands of partitions after an outage is
    /// not mistaken for a Redis that hangs.
    async fn subscription(&mut self, channels: &[String], on: bool) -> Result<()> {
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            let done = async {
                match &mut self.conn {
                    Conn::Single(conn) if on => conn.subscribe(chunk).await,
                    Conn::Single(conn) => conn.unsubscribe(chunk).await,
                    // Channels in one SSUBSCRIBE must share a slot: one
                    // command each, sent concurrently.
                    Conn::Cluster(conn) => {
                        let each = chunk.iter().map(|channel| {
                            let mut conn = conn.clone();
                            async move {
                                if on {
                                    conn.ssubscribe(channel).await
                                } else {
                                    conn.sunsubscribe(channel).await
                                }
                            }
                        });
                        futures_util::future::try_join_all(each).await.map(drop)
                    }
                }
            };
            tokio::time::timeout(IO_TIMEOUT, done).await??;
        }
        Ok(())
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where a listening connection's pushes go: frames into a queue bounded in
/// count and bytes (past either, a frame is dropped and counted: the
/// client library must never block, nor memory grow while this node is
/// slow), and a disconnection into a flag the subscriber wakes on.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Bytes>,
    held: Arc<AtomicUsize>,
    max_bytes: usize,
    disconnected: Arc<Notify>,
}

/// The subscriber's end of an [`Inbox`].
pub struct InboxRx {
    rx: mpsc::Receiver<Bytes>,
    held: Arc<AtomicUsize>,
    pub disconnected: Arc<Notify>,
}

pub fn inbox(frames: usize, max_bytes: usize) -> (Inbox, InboxRx) {
    let (tx, rx) = mpsc::channel(frames);
    let held = Arc::new(AtomicUsize::new(0));
    let disconnected = Arc::new(Notify::new());
    let inbox = Inbox {
        tx,
        held: held.clone(),
        max_bytes,
        disconnected: disconnected.clone(),
    };
    let rx = InboxRx {
        rx,
        held,
        disconnected,
    };
    (inbox, rx)
}

impl InboxRx {
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.held.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

impl redis::aio::AsyncPushSender for Inbox {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                // [channel, payload]
                let Some(Value::BulkString(payload)) = info.data.into_iter().nth(1) else {
                    return Ok(());
                };
                let frame = Bytes::from(payload);
                let len = frame.len();
                let held = self.held.fetch_add(len, Ordering::AcqRel);
                if held + len > self.max_bytes || self.tx.try_send(frame).is_err() {
                    self.held.fetch_sub(len, Ordering::AcqRel);
                    crate::metrics::cluster_frames().missed.inc();
                }
            }
            PushKind::Disconnection => self.disconnected.notify_one(),
            _ => {}
        }
        Ok(())
    }
}
