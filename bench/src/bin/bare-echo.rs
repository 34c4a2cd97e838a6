//! A bare tokio + tungstenite echo server, no Wasm: the ceiling for wsgate's
//! stack. Written the way wsgate should be: frames are fed into the write
//! buffer as they are produced and flushed once nothing more is queued, so a
//! pipelined client costs one write syscall per batch, not one per frame.
//!
//! With `--broadcast`, every text or binary message is instead sent to every
//! connection (the sender included): the baseline for the fan-out benchmark.
//! The message is shared (`Bytes`) across recipients, never copied per
//! subscriber, and no lock is held while writing to sockets.
//!
//! Usage: bare-echo [--listen 127.0.0.1:9001] [--read-buffer 4096] [--broadcast]

use anyhow::Result;
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Read buffer per connection, bytes (tungstenite's default, 128 KiB, is
    /// zero-filled on the first read and so costs that much RSS per connection).
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Broadcast every message to every connection instead of echoing it.
    #[arg(long)]
    broadcast: bool,
}

/// The connections, for broadcast mode: id -> queue of outgoing messages.
#[derive(Default)]
struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
    let listener = TcpListener::bind(&cli.listen).await?;
    eprintln!("bare-echo listening on {}", listener.local_addr()?);
    let cfg = WebSocketConfig::default().read_buffer_size(cli.read_buffer);
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if cli.broadcast {
            let hub = hub.clone();
            tokio::spawn(async move {
                let _ = handle_broadcast(stream, cfg, hub).await;
            });
        } else {
            tokio::spawn(async move {
                let _ = handle(stream, cfg).await;
            });
        }
    }
}

async fn handle(stream: TcpStream, cfg: WebSocketConfig) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await?;
    while let Some(msg) = ws.next().await {
        echo(&mut ws, msg?).await?;
        // Everything that has already arrived is answered before one flush.
        while let Some(next) = ws.next().now_or_never() {
            match next {
                Some(msg) => echo(&mut ws, msg?).await?,
                None => break,
            }
        }
        // Also sends the queued pongs and the close reply.
        ws.flush().await?;
    }
    Ok(())
}

async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, msg: Message) -> Result<()> {
    match msg {
        Message::Text(_) | Message::Binary(_) => ws.feed(msg).await?,
        // tungstenite answers pings and closes itself.
        _ => {}
    }
    Ok(())
}

async fn handle_broadcast(stream: TcpStream, cfg: WebSocketConfig, hub: Arc<Hub>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await?;
    let id = hub.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    hub.conns.lock().unwrap().insert(id, tx);
    let r: Result<()> = async {
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(msg) => {
                        let msg = msg?;
                        if msg.is_text() || msg.is_binary() {
                            // Snapshot the recipients, then send without the lock.
                            let to: Vec<_> = hub.conns.lock().unwrap().values().cloned().collect();
                            for t in to {
                                let _ = t.send(msg.clone());
                            }
                        }
                        ws.flush().await?;
                    }
                    None => break,
                },
                out = rx.recv() => {
                    let Some(out) = out else { break };
                    ws.feed(out).await?;
                    while let Ok(more) = rx.try_recv() {
                        ws.feed(more).await?;
                    }
                    ws.flush().await?;
                }
            }
        }
        Ok(())
    }
    .await;
    hub.conns.lock().unwrap().remove(&id);
    r
}
