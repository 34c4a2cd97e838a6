//! Starting and stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::accept::{ConnectionCap, Http1Only, PlainSockets};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::protocol::CloseCode;
use crate::protocol::session::wind_down;
use crate::runtime::Runtime;

/// The public listener: what `TcpListener::bind` does (SO_REUSEADDR), with
/// the configured backlog, plus SO_REUSEPORT when asked.
fn bind_public(
    addr: SocketAddr,
    reuse_port: bool,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Runs the server until SIGINT or SIGTERM, then closes every connection
/// with 1001 and waits (bounded) for the sessions to end.
pub async fn serve(config: Config) -> Result<()> {
    // Certificate trouble is a startup error, before any port is taken.
    let tls = crate::tls::server_config(&config.tls).map_err(anyhow::Error::msg)?;
    let runtime = Runtime::new(config.limits.instance_memory, config.effective_cache_dir())?;
    let listener = bind_public(config.listen, config.reuse_port, config.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = match config.admin.enabled {
        true => Some(
            tokio::net::TcpListener::bind(config.admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?,
        ),
        false => None,
    };
    let cluster = crate::cluster::join(&config).await?;
    let state = crate::state::Store::open(&config, cluster.as_ref())?;
    let gw = Gateway::new(config, Arc::new(runtime), cluster, state);
    let cluster_leave = gw
        .cluster
        .as_ref()
        .map(|c| c.start(gw.registry.clone(), gw.shutdown.clone()));
    // Plugins load while the server already listens: each one serves as
    // soon as it is ready, and `/readyz` says when all of them are.
    let deployer = gw.deployer.clone();
    tokio::spawn(async move { deployer.reconcile(None).await });
    if gw.config.watch {
        crate::deploy::watch::spawn(gw.clone());
    }
    let handshake = gw.config.timeouts.handshake;
    let admin_handle = axum_server::Handle::<SocketAddr>::new();
    let admin = admin_listener.map(|listener| {
        let token = crate::admin::token(gw.config.admin.token.as_deref());
        let app = crate::admin::router(gw.clone(), &token);
        tracing::info!("admin API on http://{}", gw.config.admin.listen);
        // The public listener's bounds, and a cap on connections: the
        // admin API serves a few operators and scrapers, never a crowd.
        let mut server = axum_server::Server::from_listener(listener)
            .acceptor(ConnectionCap::new(gw.config.admin.max_connections))
            .handle(admin_handle.clone())
            .first_request_timeout(handshake)
            .http1_only();
        server.http_builder().http1().header_read_timeout(handshake);
        tokio::spawn(server.serve(app.into_make_service()))
    });
    tracing::info!(
        "wsgate listening on {}://{} (plugins from {})",
        if tls.is_some() { "https" } else { "http" },
        gw.config.listen,
        gw.config.plugin_dir.display()
    );

    let app = crate::http::app(gw.clone());
    let handle = axum_server::Handle::<SocketAddr>::new();
    let mut public = axum_server::Server::from_listener(listener)
        .handle(handle.clone())
        // Bounds a fresh connection that sends nothing or half a request
        // head; later request heads on a kept-alive connection get the same.
        .first_request_timeout(handshake);
    public.http_builder().http1().header_read_timeout(handshake);
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    // TCP_NODELAY: sessions batch their own writes, so Nagle's algorithm
    // only adds delay: a second small frame written to a socket before the
    // client acknowledged the first (a client that also sends, and so
    // delays its acknowledgements) waited for that acknowledgement, up to
    // tens of milliseconds (bench/history.sh's publishers, BENCHMARKS.md).
    let server = match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls))
                .handshake_timeout(handshake)
                .acceptor(NoDelayAcceptor::new());
            tokio::spawn(public.acceptor(Http1Only(acceptor)).serve(make_service))
        }
        None => tokio::spawn(
            public
                .acceptor(Http1Only(PlainSockets(NoDelayAcceptor::new())))
                .serve(make_service),
        ),
    };

    shutdown_signal().await;
    tracing::info!("shutting down: closing connections with 1001");
    gw.shutdown.cancel();
    // Stop accepting; plain HTTP requests in flight get the same bound as
    // the WebSocket sessions below.
    handle.graceful_shutdown(Some(gw.config.timeouts.shutdown));
    for scope in gw.registry.scopes() {
        for conn in scope.connections() {
            let _ = conn.close(CloseCode::GOING_AWAY, "server shutting down");
        }
    }
    let tasks = gw.lifecycle.tasks();
    tasks.close();
    let bound = gw
        .config
        .timeouts
        .shutdown
        .max(wind_down(&gw.config.timeouts));
    // Plugins' upstreams close beside the clients (1001); the plugins
    // hear of it while they are still loaded.
    let (waited, ()) = tokio::join!(
        tokio::time::timeout(bound, tasks.wait()),
        gw.deployer.stop_upstreams(bound)
    );
    if waited.is_err() {
        tracing::warn!("some connections did not close within {bound:?}");
    }
    let _ = tokio::time::timeout(bound, server).await;
    if let Some(admin) = admin {
        admin_handle.graceful_shutdown(Some(bound));
        let _ = tokio::time::timeout(bound, admin).await;
    }
    if let Some(leave) = cluster_leave {
        let _ = tokio::time::timeout(bound, leave).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
