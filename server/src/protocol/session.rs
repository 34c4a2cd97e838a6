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

use super::direct::PlainSocket;
use super::socket::{Incoming, ReadError, Socket};
use super::wire::{Event, MAX_BATCH, Peer, Wire};
use super::{CloseCode, CloseFrame, Message, ReassemblyBudget};
use crate::config::Timeouts;
use crate::metrics::Tally;
use crate::rate::RateLimit;
use crate::registry::{AlarmTime, ConnId, Connection, Corked, Corks, Outbound, Queue};
use crate::runtime::{HookError, Listener};

/// Payload bytes a burst gathers before it goes to the plugin: a burst is
/// lowered into the guest's memory as one list, and a guest's memory never
/// shrinks, so a client pipelining large messages would otherwise grow every
/// instance it reaches by up to `MAX_BATCH` of them. Small messages, where
/// one call per burst pays off, fit by the hundred.
const MAX_BURST_BYTES: usize = 64 << 10;

/// Messages a burst has room for before its list grows: a list grown
/// from empty is reallocated at 4, 8 and 16 messages, three times per
/// burst for a client with 16 in flight (the benchmarks' echo).
const BURST_ROOM: usize = 16;

pub struct Session {
    pub conn: Arc<Connection>,
    pub queue: Queue,
    pub greeting: Option<Message>,
    pub listener: Arc<Listener>,
    pub timeouts: Arc<Timeouts>,
    /// Messages per second a client may send; 0 for no limit.
    pub message_rate: u32,
    pub max_message_size: usize,
    /// Shared by every connection: bytes of partly received messages.
    pub reassembly: Arc<ReassemblyBudget>,
    /// The socket, where it is plain TCP, and the flushers that write
    /// corked deliveries into it while the session is parked
    /// ([`crate::registry::Corks`]).
    pub direct: Option<(PlainSocket, Arc<Corks>)>,
}

impl Session {
    /// Runs the conversation to its end and says how it ended.
    ///
    /// Not an `async fn`: the conversation is set up before the future
    /// exists, so the future (held for as long as the connection is open)
    /// does not also keep room for the upgraded socket it was built from.
    pub fn run(self, socket: HttpWebSocket) -> impl Future<Output = CloseFrame> + Send {
        let sent = self.listener.metrics.sent.clone();
        let talk = Conversation {
            wire: Wire::new(
                {
                    let mut socket = Socket::new(socket, self.max_message_size, self.reassembly);
                    socket.hold_closes();
                    if let Some((plain, corks)) = self.direct {
                        let corked = self
                            .listener
                            .corked
                            .get_or_init(|| Corked::new(corks, sent.clone()));
                        socket.deliver_directly(self.queue.gate(), plain, corked.clone());
                    }
                    socket
                },
                self.queue,
                self.conn.clone(),
                first_ping(self.timeouts.ping_interval, self.conn.id),
                self.timeouts,
                sent,
            ),
            rate: RateLimit::new(self.message_rate).map(Box::new),
            listener: self.listener,
        };
        talk.run(self.greeting)
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
    /// Boxed: most servers set no limit, and then every connection holds
    /// a pointer's room for it, not a limit's.
    rate: Option<Box<RateLimit>>,
}

/// What a burst read and wrote, added to the plugin's counters once it is
/// answered: per message, the shared counters' atomics cost 2.4% of
/// echo's server CPU (`bench/ab.sh`, BENCHMARKS.md).
#[derive(Default)]
struct Counts {
    received: Tally,
    sent: Tally,
}

/// What a frame read in a burst is to the conversation.
enum Read {
    /// A data message for the plugin.
    Message(Message),
    /// Nothing for the plugin: a control frame, or data after our close.
    Nothing,
    /// A message over the client's rate: the connection closes after the
    /// messages before it.
    OverRate,
    /// The conversation ends here, once the messages before it are
    /// handled: the socket ended or failed, or the client closed.
    End(Option<Result<Incoming, ReadError>>),
}

impl Conversation {
    /// The conversation, from the greeting to the end of the close
    /// handshake.
    ///
    /// Owns the conversation and is not an `async fn`: either way the task
    /// would keep a second copy of what it is given, for as long as the
    /// connection lives.
    fn run(mut self, greeting: Option<Message>) -> impl Future<Output = CloseFrame> + Send {
        // Boxed until it is written, at the start: the task keeps room for
        // what the future was given for as long as the connection lives.
        let greeting = greeting.map(Box::new);
        async move {
            let greeted = match greeting {
                Some(greeting) => self.wire.write(Outbound::Data(*greeting)).await,
                None => Ok(()),
            };
            let over = match greeted {
                Ok(()) => loop {
                    if let Err(over) = self.step().await {
                        break over;
                    }
                },
                Err(over) => over,
            };
            // Boxed: it runs once, and inline it would add to the size of
            // every connection's task for as long as the connection lives.
            Box::pin(self.wire.finish()).await;
            over
        }
    }

    /// Waits for and handles one event.
    ///
    /// An `async` block, as [`run`](Self::run) is.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn step(&mut self) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        async move {
            // The event is matched in a statement of its own, so that it is
            // gone (rather than kept beside the handling) once handled below.
            let wake = match self.wire.next_event().await? {
                Event::Frame(first) => {
                    // Boxed: a burst's state (the messages, the hook call, the
                    // replies) is most of a conversation's, and inline it would
                    // take room in every connection's task for as long as the
                    // connection lives, idle or not; one allocation per burst
                    // is the price.
                    return Box::pin(async {
                        self.on_burst(first).await?;
                        self.wire.write_queued().await
                    })
                    .await;
                }
                Event::Wake(wake) => wake,
            };
            self.wire.on_wake(wake).await
        }
    }

    /// Everything that has already arrived, from `first` on, is read and
    /// answered before the flush; its messages go to the plugin together.
    async fn on_burst(
        &mut self,
        first: Option<Result<Incoming, ReadError>>,
    ) -> Result<(), CloseFrame> {
        let mut counts = Counts::default();
        let answered = self.answer_burst(first, &mut counts).await;
        let metrics = &self.listener.metrics;
        metrics.received.settle(&mut counts.received);
        metrics.sent.settle(&mut counts.sent);
        answered
    }

    /// [`on_burst`](Self::on_burst), counting what it reads and answers.
    async fn answer_burst(
        &mut self,
        first: Option<Result<Incoming, ReadError>>,
        counts: &mut Counts,
    ) -> Result<(), CloseFrame> {
        let arrived = Instant::now();
        self.wire.last_frame = AlarmTime::from_std(arrived.into_std());
        let mut burst = Vec::with_capacity(BURST_ROOM);
        let mut bytes = 0;
        let mut next = Some(first);
        for _ in 0..MAX_BATCH {
            if bytes >= MAX_BURST_BYTES {
                break;
            }
            let frame = match next.take() {
                Some(frame) => frame,
                None => match self.wire.socket.next().now_or_never() {
                    Some(frame) => frame,
                    None => break,
                },
            };
            match self.read(frame, arrived, &mut counts.received) {
                Read::Message(msg) => {
                    bytes += msg.len();
                    burst.push(msg);
                }
                Read::Nothing => {}
                Read::OverRate => {
                    self.on_messages(std::mem::take(&mut burst), &mut counts.sent)
                        .await?;
                    let _ = self
                        .wire
                        .peer
                        .close(CloseCode::POLICY, "message rate limit exceeded");
                }
                Read::End(frame) => {
                    // The close yawc queued for this frame goes after the
                    // answers to the messages before it.
                    let answered = self.on_messages(burst, &mut counts.sent).await;
                    self.wire.socket.release_close();
                    answered?;
                    return Err(self.end(frame));
                }
            }
        }
        self.on_messages(burst, &mut counts.sent).await
    }

    /// `arrived`: when the burst holding `next` came, for the rate limit.
    fn read(
        &mut self,
        next: Option<Result<Incoming, ReadError>>,
        arrived: Instant,
        received: &mut Tally,
    ) -> Read {
        let msg = match next {
            Some(Ok(Incoming::Data(msg))) => msg,
            Some(Ok(Incoming::Control)) => return Read::Nothing,
            end => return Read::End(end),
        };
        self.listener
            .metrics
            .received
            .count_later(received, msg.len());
        if self.wire.peer.is_closing() {
            // Data after the server started closing is discarded (RFC 6455 §5.5.1).
            return Read::Nothing;
        }
        if let Some(rate) = self.rate.as_mut()
            && !rate.allow(arrived)
        {
            return Read::OverRate;
        }
        Read::Message(msg)
    }

    /// How the conversation ends on `frame`, which [`Read::End`] holds.
    fn end(&mut self, frame: Option<Result<Incoming, ReadError>>) -> CloseFrame {
        match frame {
            Some(Err(e)) => self.wire.read_error(e),
            Some(Ok(Incoming::Close(client))) => {
                let client =
                    client.unwrap_or_else(|| CloseFrame::new(CloseCode::NO_STATUS, String::new()));
                self.wire.peer.close_reason().unwrap_or(client)
            }
            _ => self.wire.over(CloseCode::ABNORMAL),
        }
    }

    /// A burst's messages, in as few calls as the plugin allows: one
    /// `on-messages` call for the burst where it is exported (more if the
    /// plugin stops early, after a message that delivered), else one
    /// `on-message` call each.
    ///
    /// `sent` tallies the replies written.
    async fn on_messages(
        &mut self,
        mut msgs: Vec<Message>,
        sent: &mut Tally,
    ) -> Result<(), CloseFrame> {
        while !msgs.is_empty() {
            if self.wire.peer.is_closing() {
                return Ok(());
            }
            if msgs.len() == 1 || !self.listener.has_batch() {
                for msg in msgs {
                    if self.wire.peer.is_closing() {
                        break;
                    }
                    self.on_message(msg, sent).await?;
                }
                return Ok(());
            }
            let id = self.wire.peer.id;
            let given = msgs.len();
            // Boxed, so the call's state takes room only while a call runs,
            // not in every idle connection's task.
            let mut hook = Box::pin(self.listener.on_messages(id, &msgs));
            let results = match self.wire.while_running(hook.as_mut()).await? {
                Ok(results) => results,
                Err(failure) => {
                    drop(hook);
                    return self.failed(failure).await;
                }
            };
            drop(hook);
            let handled = results.len();
            msgs.drain(..handled);
            let mut results = results.into_iter();
            let last = results.next_back().flatten();
            // Only the last message handled may have queued anything for
            // the sender (the plugin stops after one that delivered): what
            // it queued goes after the replies before it, and before its own.
            for reply in results.flatten() {
                self.reply(reply, sent).await?;
            }
            if let Some(last) = last {
                self.wire.write_queued().await?;
                self.reply(last, sent).await?;
            }
            if handled == 1 && handled < given {
                // The plugin delivers on every message (a chat): one call
                // each for the rest, rather than lowering the rest again
                // for every message.
                for msg in msgs {
                    if self.wire.peer.is_closing() {
                        break;
                    }
                    self.on_message(msg, sent).await?;
                }
                return Ok(());
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message, sent: &mut Tally) -> Result<(), CloseFrame> {
        let id = self.wire.peer.id;
        // Boxed, so the call's state takes room only while a call runs,
        // not in every idle connection's task.
        let mut hook = Box::pin(self.listener.on_message(id, msg));
        match self.wire.while_running(hook.as_mut()).await? {
            Ok(Some(reply)) => {
                drop(hook);
                // What the hook queued for this connection goes first, in order.
                self.wire.write_queued().await?;
                self.reply(reply, sent).await
            }
            Ok(None) => Ok(()),
            Err(failure) => {
                drop(hook);
                self.failed(failure).await
            }
        }
    }

    /// Writes a plugin's reply to the sender, unless the connection is
    /// closing or the reply is over the size a client may send.
    async fn reply(&mut self, reply: Message, sent: &mut Tally) -> Result<(), CloseFrame> {
        if reply.len() > self.wire.socket.max_message_size() {
            tracing::warn!(plugin = %self.listener.name,
                "on-message replied with {} bytes, over limits.max_message_size; closing", reply.len());
            let _ = self
                .wire
                .peer
                .close(CloseCode::INTERNAL_ERROR, "internal error");
            return Ok(());
        }
        if self.wire.peer.is_closing() {
            return Ok(());
        }
        let len = reply.len();
        self.wire.write_uncounted(reply).await?;
        self.listener.metrics.sent.count_later(sent, len);
        Ok(())
    }

    /// A hook call for this connection failed. Details are logged by the
    /// call; the client learns only that the server failed, and the plugin
    /// learns the rest.
    async fn failed(&mut self, failure: HookError) -> Result<(), CloseFrame> {
        let _ = self
            .wire
            .peer
            .close(CloseCode::INTERNAL_ERROR, "internal error");
        Box::pin(self.listener.on_error(self.wire.peer.id, &failure)).await;
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
    /// An open connection's task holds this future for as long as the
    /// connection lives, idle or not (552 bytes when this was written, down
    /// from 1,784). tokio rounds a task up to 128 bytes, and past this
    /// bound every connection's task grows from 768 bytes to 896: that
    /// should be a decision.
    #[test]
    fn a_conversation_is_small() {
        fn future_size<A, B, R>(_: fn(A, B) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = future_size(super::Session::run);
        assert!(size <= 560, "a conversation's future is {size} bytes");
    }

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
