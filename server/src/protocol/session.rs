//! One upgraded connection, served by a single task: it reads the client's
//! frames, calls the plugin, writes replies and whatever the connection's
//! queue holds, and runs the close handshake.
//!
//! One task rather than a reader and a writer: a reply goes straight into
//! the socket's write buffer instead of through a queue and a task wake-up,
//! and every frame already read is answered before one flush, so a
//! pipelining client costs one write syscall per burst. Frames the host can
//! answer itself (ping, pong, close) never reach the plugin.
//!
//! A client that stops reading blocks writes, never the rest of the server:
//! others' messages pile up in its queue until it is full and the connection
//! is aborted (1008), and a blocked write gives way to that abort and to the
//! idle and close deadlines.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::time::{Instant, Interval, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use yawc::{Frame, HttpWebSocket, WebSocketError};

use super::socket::{Incoming, ReadError, Socket};
use super::{CloseCode, CloseFrame, Message, ReassemblyBudget};
use crate::config::Timeouts;
use crate::metrics::PluginMetrics;
use crate::rate::RateLimit;
use crate::registry::{ConnId, Connection, Outbound, Queue};
use crate::runtime::Listener;

/// Frames read, or queued frames written, before the next flush, so one
/// busy connection cannot hold back what it already produced.
const MAX_BATCH: usize = 256;

pub struct Session {
    pub conn: Arc<Connection>,
    pub queue: Queue,
    pub greeting: Option<Message>,
    pub listener: Arc<Listener>,
    pub timeouts: Timeouts,
    /// Messages per second a client may send; 0 for no limit.
    pub message_rate: u32,
    pub max_message_size: usize,
    /// Shared by every connection: bytes of partly received messages.
    pub reassembly: Arc<ReassemblyBudget>,
}

impl Session {
    /// Runs the conversation to its end and says how it ended.
    ///
    /// Not an `async fn`: the conversation is set up before the future
    /// exists, so the future (held for as long as the connection is open)
    /// does not also keep room for the upgraded socket it was built from.
    pub fn run(self, socket: HttpWebSocket) -> impl Future<Output = CloseFrame> + Send {
        let metrics = self.listener.metrics.clone();
        let now = Instant::now();
        let mut talk = Conversation {
            wire: Wire {
                socket: Socket::new(socket, self.max_message_size, self.reassembly),
                queue: self.queue,
                shutdown: Box::pin(self.conn.shutdown.clone().cancelled_owned()),
                deadline: Box::pin(tokio::time::sleep(self.timeouts.idle)),
                ping: tokio::time::interval_at(
                    now + first_ping(self.timeouts.ping_interval, self.conn.id),
                    self.timeouts.ping_interval,
                ),
                close_sent: false,
                close_written: false,
                unflushed: false,
                last_frame: now,
                conn: self.conn.clone(),
                timeouts: self.timeouts,
                metrics,
                max_message_size: self.max_message_size,
            },
            rate: RateLimit::new(self.message_rate),
            listener: self.listener,
        };
        let greeting = self.greeting;
        async move {
            let over = talk.run(greeting).await;
            // Boxed: it runs once, and inline it would add to the size of
            // every connection's task for as long as the connection lives.
            Box::pin(talk.wire.finish()).await;
            over
        }
    }
}

/// What woke the conversation up.
enum Event {
    Abort,
    Frame(Option<Result<Incoming, ReadError>>),
    Queued(Option<Outbound>),
    Ping,
    Deadline,
}

struct Conversation {
    wire: Wire,
    listener: Arc<Listener>,
    rate: Option<RateLimit>,
}

/// The socket and everything that decides what is written to it and when.
struct Wire {
    socket: Socket,
    queue: Queue,
    /// Fires when the connection must close now, ahead of its queue
    /// (slow consumer, bad input, shutdown).
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The idle deadline until a close frame of ours is out, then the
    /// deadline for the client's reply to it.
    deadline: Pin<Box<Sleep>>,
    ping: Interval,
    /// We have started our close: nothing else will be written, and only
    /// the client's reply (or the deadline) is awaited.
    close_sent: bool,
    /// Our close frame is in the socket. Until it is, closing the socket
    /// would make yawc write a 1000 of its own in its place.
    close_written: bool,
    /// Frames were written since the last flush.
    unflushed: bool,
    /// When the current burst of client frames arrived (one clock read per
    /// burst, not per frame).
    last_frame: Instant,
    conn: Arc<Connection>,
    timeouts: Timeouts,
    metrics: Arc<PluginMetrics>,
    /// What a reply may weigh: no more than a client may send.
    max_message_size: usize,
}

impl Conversation {
    async fn run(&mut self, greeting: Option<Message>) -> CloseFrame {
        if let Some(greeting) = greeting
            && let Err(over) = self.wire.write(Outbound::Data(greeting)).await
        {
            return over;
        }
        loop {
            if let Err(over) = self.step().await {
                return over;
            }
        }
    }

    /// Flushes what the last step wrote, then waits for and handles one event.
    async fn step(&mut self) -> Result<(), CloseFrame> {
        let wire = &mut self.wire;
        if wire.unflushed {
            wire.flush().await?;
        }
        let event = tokio::select! {
            biased;
            _ = wire.shutdown.as_mut(), if !wire.close_sent => Event::Abort,
            next = wire.socket.next() => Event::Frame(next),
            item = wire.queue.recv(), if !wire.close_sent => Event::Queued(item),
            _ = wire.ping.tick(), if !wire.close_sent => Event::Ping,
            _ = wire.deadline.as_mut() => Event::Deadline,
        };
        match event {
            Event::Abort => self.wire.abort().await,
            Event::Frame(next) => {
                self.wire.last_frame = Instant::now();
                self.on_frame(next).await?;
                // Everything that has already arrived is answered before
                // the flush.
                for _ in 1..MAX_BATCH {
                    let Some(next) = self.wire.socket.next().now_or_never() else {
                        break;
                    };
                    self.on_frame(next).await?;
                }
                self.wire.write_queued().await
            }
            Event::Queued(Some(item)) => {
                self.wire.write(item).await?;
                self.wire.write_queued().await
            }
            Event::Queued(None) => Err(self.wire.over(CloseCode::ABNORMAL)),
            Event::Ping => self.wire.feed(Frame::ping(Bytes::new())).await,
            Event::Deadline => self.wire.on_deadline(),
        }
    }

    async fn on_frame(
        &mut self,
        next: Option<Result<Incoming, ReadError>>,
    ) -> Result<(), CloseFrame> {
        let msg = match next {
            None => return Err(self.wire.over(CloseCode::ABNORMAL)),
            Some(Err(e)) => return Err(self.wire.read_error(e)),
            Some(Ok(Incoming::Data(msg))) => {
                self.wire.metrics.received(msg.len());
                msg
            }
            Some(Ok(Incoming::Close(client))) => {
                let client =
                    client.unwrap_or_else(|| CloseFrame::new(CloseCode::NO_STATUS, String::new()));
                return Err(self.wire.conn.close_reason().unwrap_or(client));
            }
            Some(Ok(Incoming::Control)) => return Ok(()),
        };
        let conn = &self.wire.conn;
        if conn.is_closing() {
            // Data after the server started closing is discarded (RFC 6455 §5.5.1).
            return Ok(());
        }
        if let Some(rate) = self.rate.as_mut()
            && !rate.allow(self.wire.last_frame)
        {
            let _ = conn.close(CloseCode::POLICY, "message rate limit exceeded");
            return Ok(());
        }
        let id = conn.id;
        // Boxed, so the call's state takes room only while a call runs,
        // not in every idle connection's task.
        let mut hook = Box::pin(self.listener.on_message(id, msg));
        match self.wire.while_running(hook.as_mut()).await? {
            Ok(Some(reply)) if reply.len() > self.wire.max_message_size => {
                tracing::warn!(plugin = %self.listener.name,
                    "on-message replied with {} bytes, over limits.max_message_size; closing", reply.len());
                let _ = self
                    .wire
                    .conn
                    .close(CloseCode::INTERNAL_ERROR, "internal error");
            }
            Ok(Some(reply)) => {
                // What the hook queued for this connection goes first, in order.
                self.wire.write_queued().await?;
                if !self.wire.conn.is_closing() {
                    self.wire.write(Outbound::Data(reply)).await?;
                }
            }
            Ok(None) => {}
            Err(failure) => {
                // Details are logged by the hook call; the client learns
                // only that the server failed. The plugin learns the rest.
                let _ = self
                    .wire
                    .conn
                    .close(CloseCode::INTERNAL_ERROR, "internal error");
                drop(hook);
                Box::pin(self.listener.on_error(id, &failure)).await;
            }
        }
        Ok(())
    }
}

impl Wire {
    /// Writes one queued item (or a reply) for the next flush.
    async fn write(&mut self, item: Outbound) -> Result<(), CloseFrame> {
        match item {
            Outbound::Data(msg) => {
                self.metrics.sent(msg.len());
                self.feed(msg.into_frame()).await
            }
            Outbound::Close(frame) => self.send_close(frame).await,
        }
    }

    /// Writes what is queued now, up to a batch, unless a close is out.
    async fn write_queued(&mut self) -> Result<(), CloseFrame> {
        for _ in 0..MAX_BATCH {
            if self.close_sent {
                break;
            }
            let Some(item) = self.queue.try_recv() else {
                break;
            };
            self.write(item).await?;
        }
        Ok(())
    }

    /// Closes now, ahead of anything still queued.
    async fn abort(&mut self) -> Result<(), CloseFrame> {
        let frame = self.over(CloseCode::GOING_AWAY);
        self.send_close(frame).await
    }

    async fn send_close(&mut self, frame: CloseFrame) -> Result<(), CloseFrame> {
        self.close_sent = true;
        self.deadline
            .as_mut()
            .reset(Instant::now() + self.timeouts.close);
        self.conn.shutdown.cancel();
        self.feed(frame.to_frame()).await?;
        self.close_written = true;
        Ok(())
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), CloseFrame> {
        self.blocked(|socket, cx| socket.poll_ready(cx)).await?;
        if Pin::new(&mut self.socket).start_send(frame).is_err() {
            return Err(self.over(CloseCode::ABNORMAL));
        }
        self.unflushed = true;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CloseFrame> {
        self.blocked(|socket, cx| socket.poll_flush(cx)).await?;
        self.unflushed = false;
        Ok(())
    }

    /// Waits for the socket, e.g. for room in its write buffer. A client
    /// that does not read can keep this waiting, so an abort ends the
    /// conversation (`finish` still tries to send the close frame) and the
    /// deadlines still apply.
    async fn blocked(
        &mut self,
        mut poll: impl FnMut(Pin<&mut Socket>, &mut Context<'_>) -> Poll<Result<(), WebSocketError>>,
    ) -> Result<(), CloseFrame> {
        enum Woken {
            Done(Result<(), WebSocketError>),
            Abort,
            Deadline,
        }
        loop {
            let woken = poll_fn(|cx| {
                if let Poll::Ready(done) = poll(Pin::new(&mut self.socket), cx) {
                    return Poll::Ready(Woken::Done(done));
                }
                if !self.close_sent && self.shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woken::Abort);
                }
                if self.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woken::Deadline);
                }
                Poll::Pending
            })
            .await;
            match woken {
                Woken::Done(Ok(())) => return Ok(()),
                Woken::Done(Err(_)) => return Err(self.over(CloseCode::ABNORMAL)),
                Woken::Abort => return Err(self.over(CloseCode::GOING_AWAY)),
                Woken::Deadline => self.on_deadline()?,
            }
        }
    }

    /// The idle deadline re-arms itself while frames keep coming; past it,
    /// or past the wait for the client's close reply, the conversation ends.
    fn on_deadline(&mut self) -> Result<(), CloseFrame> {
        if self.close_sent || self.conn.is_closing() {
            return Err(self.over(CloseCode::ABNORMAL));
        }
        let now = Instant::now();
        let due = self.last_frame + self.timeouts.idle;
        if due <= now {
            // Queues the close frame; the deadline becomes the wait for
            // the reply once it is out, or ends a socket too stuck to take it.
            let _ = self.conn.close(CloseCode::GOING_AWAY, "idle timeout");
            self.deadline.as_mut().reset(now + self.timeouts.close);
        } else {
            self.deadline.as_mut().reset(due);
        }
        Ok(())
    }

    /// Runs a hook call. A slow one (it yielded) does not hold up what
    /// others queue for this connection: that is written meanwhile.
    async fn while_running<R>(
        &mut self,
        mut hook: Pin<&mut impl Future<Output = R>>,
    ) -> Result<R, CloseFrame> {
        // Most hook calls finish without ever yielding.
        if let Some(result) = hook.as_mut().now_or_never() {
            return Ok(result);
        }
        // Boxed: this is the rare case, and inline its state would add to
        // every connection's task.
        Box::pin(self.write_alongside(hook)).await
    }

    async fn write_alongside<R>(
        &mut self,
        mut hook: Pin<&mut impl Future<Output = R>>,
    ) -> Result<R, CloseFrame> {
        // A failed write ends the conversation, but only once the hook is
        // done: dropping a call midway would waste its instance.
        let mut over = None;
        loop {
            tokio::select! {
                biased;
                result = hook.as_mut() => return over.map_or(Ok(result), Err),
                item = self.queue.recv(), if !self.close_sent && over.is_none() => {
                    let Some(item) = item else { continue };
                    let written = async {
                        self.write(item).await?;
                        self.write_queued().await?;
                        self.flush().await
                    };
                    over = written.await.err();
                }
            }
        }
    }

    /// The close code and reason the server chose, else `default`.
    fn over(&self, default: CloseCode) -> CloseFrame {
        self.conn
            .close_reason()
            .unwrap_or_else(|| CloseFrame::new(default, String::new()))
    }

    /// Closes for a client that broke the protocol, with the code the
    /// failure calls for (the one yawc has sent, for its own errors): that
    /// is what `on-close` hears. A connection that simply broke is 1006.
    fn read_error(&self, e: ReadError) -> CloseFrame {
        let Some(code) = e.close_code() else {
            return self.over(CloseCode::ABNORMAL);
        };
        let reason = e.reason();
        tracing::debug!(conn = self.conn.id, "client broke the protocol: {reason}");
        self.conn.abort(code, &reason);
        self.over(code)
    }

    /// Ends the close handshake: the server's close frame if it chose to
    /// close but could not send it yet (bad input, a stuck socket), then
    /// the echo of the client's close that yawc queued.
    async fn finish(&mut self) {
        self.conn.mark_closing();
        let close = self.timeouts.close;
        if !self.close_written
            && let Some(frame) = self.conn.close_reason()
        {
            let sent = tokio::time::timeout(close, self.socket.send(frame.to_frame())).await;
            if !matches!(sent, Ok(Ok(()))) {
                // A socket too stuck to take our close frame in time is
                // dropped: closing it would send yawc's 1000 instead, and
                // tell the client all was well.
                return;
            }
        }
        let _ = tokio::time::timeout(close, self.socket.close()).await;
    }
}

/// How long a session may take to wind down after the server closes it.
pub fn wind_down(timeouts: &Timeouts) -> Duration {
    timeouts.close * 2
}

/// When a connection's first ping is due: somewhere in the second half of
/// the interval, spread by its id. Clients that reconnect together (a node
/// restarted, a network back) would otherwise be pinged together, every
/// interval, for as long as they stay.
fn first_ping(interval: Duration, id: ConnId) -> Duration {
    let spread = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(0.5 + spread / 2.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_pings_spread_over_the_second_half_of_the_interval() {
        let interval = std::time::Duration::from_secs(30);
        let firsts: Vec<_> = (1..=1000)
            .map(|id| super::first_ping(interval, id))
            .collect();
        assert!(firsts.iter().all(|d| *d >= interval / 2 && *d <= interval));
        let early = firsts.iter().filter(|d| **d < interval * 3 / 4).count();
        assert!(
            (400..=600).contains(&early),
            "{early} of 1000 in the first half of the spread"
        );
    }
}
