//! One upgraded connection: a reader that feeds the plugin, a writer that
//! drains the connection's queue, and the close handshake between them.
//!
//! Frames the host can answer itself (ping, pong, close) never reach the
//! plugin. The writer batches: it feeds every queued frame and flushes once
//! the queue is empty and the reader has no client frames left in hand, so
//! a burst costs one syscall, not one per frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use yawc::{Frame, HttpWebSocket, WebSocketError};

use super::socket::{Incoming, ReadError, Socket};
use super::{CloseFrame, Message as WsMessage, close};
use crate::config::Timeouts;
use crate::metrics::PluginMetrics;
use crate::registry::{Connection, Outbound};
use crate::routing::Route;
use crate::runtime::bindings::Message;
use crate::runtime::to_ws;

/// Frames written before a flush, so one busy connection cannot starve the
/// flush of what it already queued.
const MAX_BATCH: usize = 256;

/// How long the writer holds written replies for a busy reader before
/// flushing anyway, so a slow hook delays earlier replies only so much.
const MAX_HOLD: Duration = Duration::from_millis(1);

/// What the writer knows of the reader: whether it has ended, whether it
/// is in the middle of a burst of client frames (already read, not yet
/// answered), and a signal for when that burst runs dry.
#[derive(Default)]
struct Reader {
    finished: CancellationToken,
    active: AtomicBool,
    idle: tokio::sync::Notify,
}

impl Reader {
    fn end(&self) {
        if self.active.swap(false, Ordering::AcqRel) {
            self.idle.notify_one();
        }
    }
}

pub struct Session {
    pub conn: Arc<Connection>,
    pub queue: mpsc::Receiver<Outbound>,
    pub greeting: Option<WsMessage>,
    pub route: Arc<Route>,
    pub timeouts: Timeouts,
    /// Messages per second a client may send; 0 for no limit.
    pub message_rate: u32,
    pub max_message_size: usize,
}

impl Session {
    pub async fn run(self, socket: HttpWebSocket) {
        let Session {
            conn,
            queue,
            greeting,
            route,
            timeouts,
            message_rate,
            max_message_size,
        } = self;
        let (sink, stream) = Socket::new(socket, max_message_size).split();
        let reader = Arc::new(Reader::default());
        let metrics = route.listener.metrics.clone();
        metrics.connections_opened.inc();
        let mut writer = tokio::spawn(write_loop(
            sink,
            queue,
            greeting,
            conn.clone(),
            timeouts.clone(),
            metrics,
            reader.clone(),
        ));
        let (code, reason) =
            read_loop(stream, &conn, &route, &timeouts, message_rate, &reader).await;
        conn.mark_closing();
        reader.finished.cancel();
        if tokio::time::timeout(timeouts.close, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        end(&conn, &route, code, reason).await;
    }
}

/// Reads until the connection is over and returns the close code and reason
/// the plugin's `on-close` should see.
async fn read_loop(
    mut stream: SplitStream<Socket>,
    conn: &Arc<Connection>,
    route: &Route,
    timeouts: &Timeouts,
    message_rate: u32,
    reader: &Reader,
) -> (u16, String) {
    let mut rate = super::rate::RateLimit::new(message_rate);
    let listener = &route.listener;
    // Both futures live across iterations: registering a waiter or a timer
    // per frame showed up in profiles.
    let shutdown = conn.shutdown.cancelled();
    tokio::pin!(shutdown);
    let timer = tokio::time::sleep(timeouts.idle);
    tokio::pin!(timer);
    let mut last_frame = Instant::now();
    let mut closing = false;
    loop {
        // A frame already buffered is handled at once; only when none is
        // does the reader wait (and the writer may flush).
        let ready = stream.next().now_or_never();
        let next = if let Some(next) = ready {
            next
        } else {
            reader.end();
            tokio::select! {
            biased;
            _ = &mut shutdown, if !closing => {
                closing = true;
                timer.as_mut().reset(Instant::now() + timeouts.close);
                continue;
            }
            _ = &mut timer => {
                if closing {
                    return server_reason(conn, close::ABNORMAL);
                }
                let due = last_frame + timeouts.idle;
                if due <= Instant::now() {
                    let _ = conn.close(close::GOING_AWAY, "idle timeout");
                    timer.as_mut().reset(Instant::now() + timeouts.close);
                } else {
                    timer.as_mut().reset(due);
                }
                continue;
            }
            next = stream.next() => next,
            }
        };
        reader.active.store(true, Ordering::Release);
        last_frame = Instant::now();
        let frame = match next {
            None => return server_reason(conn, close::ABNORMAL),
            Some(Err(e)) => return read_error(conn, e),
            Some(Ok(frame)) => frame,
        };
        let msg = match frame {
            Incoming::Text(text) => {
                listener.metrics.received(text.len());
                Message::Text(text)
            }
            Incoming::Binary(bytes) => {
                listener.metrics.received(bytes.len());
                Message::Binary(bytes.into())
            }
            Incoming::Close(client) => {
                let client = client.unwrap_or((close::NO_STATUS, String::new()));
                return conn.close_reason().unwrap_or(client);
            }
            Incoming::Control => continue,
        };
        if conn.is_closing() {
            // Data after the server started closing is discarded (RFC 6455 §5.5.1).
            continue;
        }
        if let Some(rate) = rate.as_mut()
            && !rate.allow(last_frame)
        {
            let _ = conn.close(close::POLICY, "message rate limit exceeded");
            continue;
        }
        match listener.on_message(conn.id, msg).await {
            Ok(Some(reply)) => {
                let _ = conn.send(to_ws(reply));
            }
            Ok(None) => {}
            Err(_) => {
                // Details are logged by the hook call; the client learns
                // only that the server failed.
                let _ = conn.close(close::INTERNAL_ERROR, "internal error");
            }
        }
    }
}

fn server_reason(conn: &Connection, default: u16) -> (u16, String) {
    conn.close_reason().unwrap_or((default, String::new()))
}

fn read_error(conn: &Connection, e: ReadError) -> (u16, String) {
    match e {
        ReadError::TooBig => {
            conn.abort(close::TOO_BIG, "message too big");
            (close::TOO_BIG, "message too big".into())
        }
        ReadError::Invalid { code, reason } => {
            tracing::debug!(conn = conn.id, "invalid message from client: {reason}");
            conn.abort(code, reason);
            (code, reason.into())
        }
        ReadError::Library(e) => {
            if e.is_protocol_error() || e.is_data_error() {
                tracing::debug!(conn = conn.id, "protocol error from client: {e}");
            }
            server_reason(conn, close::ABNORMAL)
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<Socket, Frame>,
    mut queue: mpsc::Receiver<Outbound>,
    greeting: Option<WsMessage>,
    conn: Arc<Connection>,
    timeouts: Timeouts,
    metrics: Arc<PluginMetrics>,
    reader: Arc<Reader>,
) {
    if let Some(greeting) = greeting {
        metrics.sent(greeting.len());
        if sink.send(greeting.to_frame()).await.is_err() {
            return;
        }
    }
    let start = Instant::now() + timeouts.ping_interval;
    let mut ping = tokio::time::interval_at(start, timeouts.ping_interval);
    let mut close_sent = false;
    loop {
        tokio::select! {
            biased;
            _ = reader.finished.cancelled() => {
                // The reader ended first (e.g. an oversized message): the
                // client still deserves the server's close code.
                if !close_sent && conn.close_reason().is_some() {
                    send_close(&mut sink, &conn, &timeouts).await;
                }
                break;
            }
            _ = conn.shutdown.cancelled(), if !close_sent => {
                // An abort: close now, ahead of anything still queued.
                send_close(&mut sink, &conn, &timeouts).await;
                close_sent = true;
            }
            item = queue.recv(), if !close_sent => {
                let Some(item) = item else { break };
                match write_batch(&mut sink, &mut queue, item, &metrics, &reader).await {
                    Ok(Batch::Data) => {}
                    Ok(Batch::Closed) => {
                        close_sent = true;
                        conn.shutdown.cancel();
                    }
                    Err(_) => return,
                }
            }
            _ = ping.tick(), if !close_sent => {
                if sink.send(Frame::ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
    // Flushes a pending close reply to the client's close frame.
    let _ = tokio::time::timeout(timeouts.close, sink.close()).await;
}

async fn send_close(sink: &mut SplitSink<Socket, Frame>, conn: &Connection, timeouts: &Timeouts) {
    let (code, reason) = conn
        .close_reason()
        .unwrap_or((close::GOING_AWAY, String::new()));
    let frame = CloseFrame { code, reason }.to_frame();
    let _ = tokio::time::timeout(timeouts.close, sink.send(frame)).await;
}

enum Batch {
    Data,
    Closed,
}

/// Feeds `first` and whatever else is queued, then flushes once.
async fn write_batch(
    sink: &mut SplitSink<Socket, Frame>,
    queue: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
    metrics: &PluginMetrics,
    reader: &Reader,
) -> Result<Batch, WebSocketError> {
    let mut item = Some(first);
    let mut written = 0;
    let mut hold_until = None;
    while let Some(next) = item.take() {
        match next {
            Outbound::Data(msg) => {
                metrics.sent(msg.len());
                sink.feed(msg.to_frame()).await?
            }
            Outbound::Close(frame) => {
                sink.send(frame.to_frame()).await?;
                return Ok(Batch::Closed);
            }
        }
        written += 1;
        if written < MAX_BATCH {
            item = queue.try_recv().ok();
            // Replies to a pipelining client arrive one hook call apart:
            // while the reader still has frames in hand, wait for its next
            // reply (or for it to run dry) so they share a flush (a
            // syscall) instead of one each.
            if item.is_none() && reader.active.load(Ordering::Acquire) {
                let until = *hold_until.get_or_insert_with(|| Instant::now() + MAX_HOLD);
                tokio::select! {
                    biased;
                    next = queue.recv() => item = next,
                    _ = reader.idle.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }
    sink.flush().await?;
    Ok(Batch::Data)
}

/// The connection is over: tell the plugin, forget the connection, and
/// fire `on-last-close` if it was the route's last.
pub async fn end(conn: &Arc<Connection>, route: &Route, code: u16, reason: String) {
    conn.mark_closing();
    let _ = route.listener.on_close(conn.id, code, reason).await;
    forget(conn, route).await;
}

/// Drops a connection from its plugin's scope and its route's count; on
/// its own, for a connection refused before it ever opened (no `on-close`).
pub async fn forget(conn: &Connection, route: &Route) {
    conn.mark_closing();
    route.listener.env.scope.remove(conn.id);
    leave_route(route).await;
}

/// Counts a connection onto its route, calling `on-first-open` for the first.
pub async fn enter_route(route: &Route) {
    let mut open = route.open.lock().await;
    if *open == 0 {
        let _ = route
            .listener
            .on_first_open(route.pattern.to_string())
            .await;
    }
    *open += 1;
}

/// Counts a connection off its route, calling `on-last-close` for the last.
pub async fn leave_route(route: &Route) {
    let mut open = route.open.lock().await;
    *open = open.saturating_sub(1);
    if *open == 0 {
        let _ = route
            .listener
            .on_last_close(route.pattern.to_string())
            .await;
    }
}

/// How long a session may take to wind down after the server closes it.
pub fn wind_down(timeouts: &Timeouts) -> Duration {
    timeouts.close * 2
}
