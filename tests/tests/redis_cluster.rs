//! wsgate nodes over a Redis Cluster (`mode = "cluster"`: sharded pub/sub
//! over the cluster's masters) and over a Redis reached by TLS
//! (`rediss://` with `tls_ca`): the cross-node flows of tests/cluster.rs.

use std::time::Duration;

use wsgate_tests::redis::{Redis, RedisCluster};

/// The harness itself: three masters, all slots served, sharded pub/sub
/// answered. Needs no wsgate.
#[tokio::test]
async fn the_harness_starts_a_three_master_cluster() {
    let cluster = RedisCluster::start().await;
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert!(cluster.url().ends_with(&format!(":{}", ports[0])));
    for &port in &ports {
        let info = cluster.command(port, &[b"CLUSTER", b"INFO"]).await;
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_size:3"), "{port}: {info}");
        assert!(
            info.contains("cluster_slots_assigned:16384"),
            "{port}: {info}"
        );
    }
    // Each master owns a third of the slots; a shard channel's publish is
    // answered by its owner and redirected by the others.
    let slot: u16 = cluster
        .command(ports[0], &[b"CLUSTER", b"KEYSLOT", b"room-1"])
        .await
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let owner = ports[usize::from(slot) * 3 / 16384];
    for &port in &ports {
        let reply = cluster
            .command(port, &[b"SPUBLISH", b"room-1", b"hi"])
            .await;
        if port == owner {
            assert_eq!(reply, ":0", "no subscribers yet");
        } else {
            assert!(reply.starts_with("-MOVED"), "{port}: {reply}");
        }
    }
    let shard_channels = cluster.command(owner, &[b"PUBSUB", b"SHARDCHANNELS"]).await;
    assert_eq!(shard_channels, "", "nobody subscribed");
}

/// A TLS-only Redis: plain connections are refused, TLS ones trusting the
/// test CA are answered.
#[tokio::test]
async fn the_harness_starts_a_tls_only_redis() {
    let redis = Redis::start_tls().await;
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    assert!(redis.ca_path().exists());
    assert_eq!(redis.command(&[b"PING"]).await, "+PONG");
    assert_eq!(redis.command(&[b"SET", b"k", b"v"]).await, "+OK");
    assert_eq!(redis.command(&[b"GET", b"k"]).await, "v");
    // redis-cli (when it has TLS, as Debian's does) agrees.
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(redis.ca_path())
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "ping"])
        .output();
    if let Ok(out) = out {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "PONG",
            "{out:?}"
        );
    }
    // A plain client gets nothing.
    let plain = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
            .await
            .unwrap();
        tcp.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0; 64];
        tcp.read(&mut buf).await.map(|n| buf[..n].to_vec())
    })
    .await;
    assert!(
        !matches!(&plain, Ok(Ok(b)) if b.starts_with(b"+PONG")),
        "a plain client was answered: {plain:?}"
    );
}
