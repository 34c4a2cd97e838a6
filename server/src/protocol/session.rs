//! One upgraded connection, served by a single task: it reads the client's
//! frames, calls the plugin, writes replies and whatever the connection's
//! queue holds, and runs the close handshake (the [`Wire`] it shares with
//! upstreams).
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

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use yawc::HttpWebSocket;

use super::socket::{Incoming, ReadError, Socket};
use super::wire::{Event, MAX_BATCH, Peer, Wire};
use super::{CloseCode, CloseFrame, Message, ReassemblyBudget};
use crate::config::Timeouts;
use crate::metrics::Traffic;
use crate::rate::RateLimit;
use crate::registry::{ConnId, Connection, Outbound, Queue};
use crate::runtime::Listener;

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
        let metrics = &self.listener.metrics;
        let sent = Traffic::new(&metrics.messages_out, &metrics.bytes_out);
        let mut talk = Conversation {
            wire: Wire::new(
                Socket::new(socket, self.max_message_size, self.reassembly),
                self.queue,
                self.conn.clone(),
                self.timeouts.clone(),
                first_ping(self.timeouts.ping_interval, self.conn.id),
                sent,
                self.max_message_size,
            ),
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

/// A client connection is a [`Peer`] through its registry entry.
impl Peer for Connection {
    fn id(&self) -> u64 {
        self.id
    }

    fn close_reason(&self) -> Option<CloseFrame> {
        Connection::close_reason(self)
    }

    fn is_closing(&self) -> bool {
        Connection::is_closing(self)
    }

    fn mark_closing(&self) {
        Connection::mark_closing(self)
    }

    fn close(&self, code: CloseCode, reason: &str) {
        let _ = Connection::close(self, code, reason);
    }

    fn abort(&self, code: CloseCode, reason: &str) {
        Connection::abort(self, code, reason)
    }
}

struct Conversation {
    wire: Wire<Connection>,
    listener: Arc<Listener>,
    rate: Option<RateLimit>,
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

    /// Waits for and handles one event.
    async fn step(&mut self) -> Result<(), CloseFrame> {
        match self.wire.next_event().await? {
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
            event => self.wire.on_event(event).await,
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
                self.listener.metrics.received(msg.len());
                msg
            }
            Some(Ok(Incoming::Close(client))) => {
                let client =
                    client.unwrap_or_else(|| CloseFrame::new(CloseCode::NO_STATUS, String::new()));
                return Err(self.wire.peer.close_reason().unwrap_or(client));
            }
            Some(Ok(Incoming::Control)) => return Ok(()),
        };
        let conn = &self.wire.peer;
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
                    .peer
                    .close(CloseCode::INTERNAL_ERROR, "internal error");
            }
            Ok(Some(reply)) => {
                // What the hook queued for this connection goes first, in order.
                self.wire.write_queued().await?;
                if !self.wire.peer.is_closing() {
                    self.wire.write(Outbound::Data(reply)).await?;
                }
            }
            Ok(None) => {}
            Err(failure) => {
                // Details are logged by the hook call; the client learns
                // only that the server failed. The plugin learns the rest.
                let _ = self
                    .wire
                    .peer
                    .close(CloseCode::INTERNAL_ERROR, "internal error");
                drop(hook);
                Box::pin(self.listener.on_error(id, &failure)).await;
            }
        }
        Ok(())
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
pub fn first_ping(interval: Duration, id: ConnId) -> Duration {
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
