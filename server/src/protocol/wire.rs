//! One side of a WebSocket conversation, whoever the peer is: the socket,
//! what is queued for it, pings, the idle deadline and the close
//! handshake. A client's session and a plugin's upstream both run on it;
//! they differ only in what they do with the messages they read.
//!
//! A peer that stops reading blocks writes, never the rest of the server:
//! a blocked write gives way to an abort (the peer's `shutdown`) and to the
//! idle and close deadlines.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, ready};
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use yawc::{Frame, HttpStream, WebSocketError};

use super::socket::{Incoming, ReadError, Socket};
use super::{CloseCode, CloseFrame, Message};
use crate::config::Timeouts;
use crate::metrics::Traffic;
use crate::registry::{AlarmTime, Outbound, Queue};

/// Frames read, or queued frames written, before the next flush, so one
/// busy connection cannot hold back what it already produced.
pub const MAX_BATCH: usize = 256;

/// What the host keeps about the far end of a conversation besides the
/// socket: how and whether it is closing. Implemented by a client
/// [`Connection`](crate::registry::Connection) and by an upstream.
pub trait Peer {
    /// Its id, for logs.
    fn id(&self) -> u64;
    /// The code and reason the host closed with, if it closed first.
    fn close_reason(&self) -> Option<CloseFrame>;
    fn is_closing(&self) -> bool;
    /// Nothing more may be queued: the conversation is ending.
    fn mark_closing(&self);
    /// Queues a close after what is already queued (the idle timeout).
    fn close(&self, code: CloseCode, reason: &str);
    /// Closes now, ahead of the queue (the peer broke the protocol).
    fn abort(&self, code: CloseCode, reason: &str);
    /// Our close frame is being written: whatever waits to force the
    /// close may stop.
    fn close_started(&self) {}
}

/// What woke the conversation up.
pub enum Event {
    /// A frame from the peer, or the end of its stream: the caller's.
    Frame(Option<Result<Incoming, ReadError>>),
    /// Anything else: the wire's own, for [`Wire::on_wake`].
    Wake(Wake),
}

/// What the wire handles itself. No payload (what is queued stays in the
/// queue until it is written): its handling is in every connection's
/// task, and holds no copy of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Abort,
    Queued,
    Ping,
    Deadline,
}

/// The socket and everything that decides what is written to it and when.
pub struct Wire<P: Peer, S = HttpStream> {
    pub socket: Socket<S>,
    /// What is queued for the peer, and the signal to close now, ahead of
    /// it (slow consumer, bad input, shutdown).
    queue: Queue,
    /// When the queue's alarm is set for: the next ping or the deadline,
    /// whichever comes first (one alarm, not an interval and a sleep).
    alarm: AlarmTime,
    /// The idle deadline until a close frame of ours is out, then the
    /// deadline for the peer's reply to it.
    deadline: AlarmTime,
    /// When the next ping is due; none is sent once our close is out.
    next_ping: AlarmTime,
    /// We have started our close: nothing else will be written, and only
    /// the peer's reply (or the deadline) is awaited.
    close_sent: bool,
    /// Our close frame is in the socket. Until it is, closing the socket
    /// would make yawc write a 1000 of its own in its place.
    close_written: bool,
    /// Frames were written since the last flush.
    unflushed: bool,
    /// When the current burst of frames arrived (one clock read per
    /// burst, not per frame), rounded up as the idle deadline is.
    pub last_frame: AlarmTime,
    pub peer: Arc<P>,
    /// Of these, the ping interval, how long the peer may send nothing
    /// (`idle`) and how long it has to answer our close (`close`): shared,
    /// as every connection holds its wire.
    timeouts: Arc<Timeouts>,
    /// Counts what is written.
    sent: Traffic,
}

impl<P: Peer, S: AsyncRead + AsyncWrite + Unpin> Wire<P, S> {
    /// The first ping goes out after `first_ping`, then one every
    /// `timeouts.ping_interval`; of `timeouts`, the idle and close
    /// timeouts are kept too.
    pub fn new(
        socket: Socket<S>,
        queue: Queue,
        peer: Arc<P>,
        first_ping: Duration,
        timeouts: Arc<Timeouts>,
        sent: Traffic,
    ) -> Self {
        let now = AlarmTime::from_std(Instant::now());
        let alarm = now + timeouts.idle.min(first_ping);
        queue.set_alarm(alarm);
        Wire {
            socket,
            queue,
            alarm,
            deadline: now + timeouts.idle,
            next_ping: now + first_ping,
            close_sent: false,
            close_written: false,
            unflushed: false,
            last_frame: now,
            peer,
            timeouts,
            sent,
        }
    }

    /// Flushes what the last step wrote, then waits for the next event.
    pub async fn next_event(&mut self) -> Result<Event, CloseFrame> {
        if self.unflushed {
            self.flush().await?;
        }
        self.arm();
        let closing = self.close_sent;
        let (socket, queue) = (&mut self.socket, &self.queue);
        // `None`: the alarm rang.
        let woken = poll_fn(|cx| {
            if !closing && queue.poll_aborted(cx).is_ready() {
                return Poll::Ready(Some(Event::Wake(Wake::Abort)));
            }
            if let Poll::Ready(next) = socket.poll_next_unpin(cx) {
                return Poll::Ready(Some(Event::Frame(next)));
            }
            if !closing && queue.poll_queued(cx).is_ready() {
                return Poll::Ready(Some(Event::Wake(Wake::Queued)));
            }
            if queue.poll_alarm(cx).is_ready() {
                return Poll::Ready(None);
            }
            // Parked with nothing to do: corked deliveries may be written
            // into the socket until it is polled again (which shuts the
            // gate first). Last, so that nothing found queued above can be
            // overtaken by what a flusher writes.
            if !closing {
                socket.open_gate();
            }
            Poll::Pending
        })
        .await;
        Ok(woken.unwrap_or_else(|| Event::Wake(self.ping_or_deadline())))
    }

    /// Sets the alarm to the next ping or the deadline, whichever comes
    /// first; to the deadline alone once our close is out.
    fn arm(&mut self) {
        let at = if self.close_sent {
            self.deadline
        } else {
            self.deadline.min(self.next_ping)
        };
        self.set_alarm(at);
    }

    fn set_alarm(&mut self, at: AlarmTime) {
        if self.alarm != at {
            self.alarm = at;
            self.queue.set_alarm(at);
        }
    }

    /// What the alarm rang for: a ping if one is due (the next one an
    /// interval later; one missed by a stalled task is sent late, not
    /// again), else the deadline.
    fn ping_or_deadline(&mut self) -> Wake {
        let now = AlarmTime::now();
        if self.close_sent || self.next_ping > now {
            return Wake::Deadline;
        }
        self.next_ping = self.next_ping + self.timeouts.ping_interval;
        if self.next_ping <= now {
            self.next_ping = now + self.timeouts.ping_interval;
        }
        Wake::Ping
    }

    /// Moves the deadline, and the alarm with it (the next wait for an
    /// event sets the alarm to the next ping instead if that comes first).
    fn set_deadline(&mut self, at: AlarmTime) {
        self.deadline = at;
        self.set_alarm(at);
    }

    /// Handles what woke the conversation, unless it was a frame.
    ///
    /// Returns an `async` block rather than being an `async fn`: an `async
    /// fn` keeps its arguments twice across an await (as given and as
    /// bound), in every connection's task.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn on_wake(&mut self, wake: Wake) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        async move {
            match wake {
                Wake::Abort => {
                    let frame = self.over(CloseCode::GOING_AWAY);
                    self.write(Outbound::Close(frame)).await
                }
                Wake::Queued => self.write_queued().await,
                Wake::Ping => {
                    self.ready().await?;
                    self.start_send(Frame::ping(Bytes::new()))
                }
                Wake::Deadline => self.on_deadline(),
            }
        }
    }

    /// Writes one queued item (or a reply) for the next flush. A close
    /// frame ends what is written: nothing is read from the queue after
    /// it, and the deadline becomes the wait for the peer's reply.
    ///
    /// Done before it returns when the socket has room, as it nearly
    /// always has; only a wait for room is a future of its own, and boxed.
    /// What the caller awaits is then no bigger than the result, and the
    /// callers' state is in every connection's task.
    pub fn write(&mut self, item: Outbound) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        self.write_counting(item, true)
    }

    /// [`write`](Self::write) for a caller that counts the message as sent
    /// itself: a session counts a burst's replies at once ([`Tally`]).
    ///
    /// [`Tally`]: crate::metrics::Tally
    pub fn write_uncounted(
        &mut self,
        msg: Message,
    ) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        self.write_counting(Outbound::Data(msg), false)
    }

    fn write_counting(
        &mut self,
        item: Outbound,
        count: bool,
    ) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        if matches!(item, Outbound::Close(_)) {
            self.close_sent = true;
            self.set_deadline(AlarmTime::now() + self.timeouts.close);
            self.peer.close_started();
        }
        match self.room_now() {
            Some(Ok(())) => Either::Left(ready(self.put(item, count))),
            Some(Err(over)) => Either::Left(ready(Err(over))),
            None => Either::Right(Box::pin(async move {
                self.blocked(|socket, cx| socket.poll_ready(cx)).await?;
                self.put(item, count)
            })),
        }
    }

    /// Puts an item in the socket's write buffer, which has room for it;
    /// a message is counted as sent if `count`.
    fn put(&mut self, item: Outbound, count: bool) -> Result<(), CloseFrame> {
        match item {
            Outbound::Data(msg) => {
                if count {
                    self.sent.count(msg.len());
                }
                self.start_send(msg.into_frame())
            }
            Outbound::Close(frame) => {
                self.start_send(frame.to_frame())?;
                self.close_written = true;
                Ok(())
            }
        }
    }

    /// Writes what is queued now, up to a batch, unless a close is out.
    ///
    /// An `async` block, as [`on_wake`](Self::on_wake) is.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn write_queued(&mut self) -> impl Future<Output = Result<(), CloseFrame>> + '_ {
        async move {
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
    }

    /// Waits for room in the socket's write buffer.
    async fn ready(&mut self) -> Result<(), CloseFrame> {
        self.wait(|socket, cx| socket.poll_ready(cx)).await
    }

    /// Whether the socket's write buffer has room now; `None` if the wait
    /// for it has to be a future.
    fn room_now(&mut self) -> Option<Result<(), CloseFrame>> {
        let room = poll_now(&mut self.socket, |socket, cx| socket.poll_ready(cx))?;
        Some(room.map_err(|()| self.over(CloseCode::ABNORMAL)))
    }

    /// Puts a frame in the socket's write buffer, which [`ready`](Self::ready) found room in.
    fn start_send(&mut self, frame: Frame) -> Result<(), CloseFrame> {
        if Pin::new(&mut self.socket).start_send(frame).is_err() {
            return Err(self.over(CloseCode::ABNORMAL));
        }
        self.unflushed = true;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), CloseFrame> {
        self.wait(|socket, cx| socket.poll_flush(cx)).await?;
        self.unflushed = false;
        Ok(())
    }

    /// Waits for the socket to be ready for `poll`, as it is at once
    /// nearly always. The wait is boxed, and the first try leaves a byte
    /// behind, not the error: what is held across the wait is in every
    /// connection's task.
    async fn wait(
        &mut self,
        poll: impl FnMut(Pin<&mut Socket<S>>, &mut Context<'_>) -> Poll<Result<(), WebSocketError>>
        + Copy,
    ) -> Result<(), CloseFrame> {
        match poll_now(&mut self.socket, poll) {
            Some(Ok(())) => Ok(()),
            Some(Err(())) => Err(self.over(CloseCode::ABNORMAL)),
            None => Box::pin(self.blocked(poll)).await,
        }
    }

    /// Waits for the socket, e.g. for room in its write buffer. A peer
    /// that does not read can keep this waiting, so an abort ends the
    /// conversation (`finish` still tries to send the close frame) and the
    /// deadlines still apply.
    ///
    /// Only once the socket was found not ready: `ready` and `flush` try
    /// first, and box this.
    async fn blocked(
        &mut self,
        mut poll: impl FnMut(Pin<&mut Socket<S>>, &mut Context<'_>) -> Poll<Result<(), WebSocketError>>,
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
                if !self.close_sent && self.queue.poll_aborted(cx).is_ready() {
                    return Poll::Ready(Woken::Abort);
                }
                if self.queue.poll_alarm(cx).is_ready() {
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
    /// or past the wait for the peer's close reply, the conversation ends.
    fn on_deadline(&mut self) -> Result<(), CloseFrame> {
        let now = AlarmTime::now();
        if now < self.deadline {
            // The alarm rang for a ping, which a blocked write holds up:
            // it goes once the write is done.
            self.set_alarm(self.deadline);
            return Ok(());
        }
        if self.close_sent || self.peer.is_closing() {
            return Err(self.over(CloseCode::ABNORMAL));
        }
        let due = self.last_frame + self.timeouts.idle;
        if due <= now {
            // Queues the close frame; the deadline becomes the wait for
            // the reply once it is out, or ends a socket too stuck to take it.
            self.peer.close(CloseCode::GOING_AWAY, "idle timeout");
            self.set_deadline(now + self.timeouts.close);
        } else {
            self.set_deadline(due);
        }
        Ok(())
    }

    /// Runs a hook call. A slow one (it yielded) does not hold up what
    /// others queue for this peer: that is written meanwhile.
    pub async fn while_running<R>(
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

    /// The close code and reason the host chose, else `default`.
    pub fn over(&self, default: CloseCode) -> CloseFrame {
        self.peer
            .close_reason()
            .unwrap_or_else(|| CloseFrame::new(default, String::new()))
    }

    /// Closes for a peer that broke the protocol, with the code the
    /// failure calls for (the one yawc has sent, for its own errors): that
    /// is what the plugin hears. A connection that simply broke is 1006.
    pub fn read_error(&self, e: ReadError) -> CloseFrame {
        let Some(code) = e.close_code() else {
            return self.over(CloseCode::ABNORMAL);
        };
        let reason = e.reason();
        tracing::debug!(peer = self.peer.id(), "peer broke the protocol: {reason}");
        self.peer.abort(code, &reason);
        self.over(code)
    }

    /// Ends the close handshake: the host's close frame if it chose to
    /// close but could not send it yet (bad input, a stuck socket), then
    /// the echo of the peer's close that yawc queued.
    pub async fn finish(&mut self) {
        self.socket.stop_holding_closes();
        self.peer.mark_closing();
        let close = self.timeouts.close;
        if !self.close_written
            && let Some(frame) = self.peer.close_reason()
        {
            let sent = tokio::time::timeout(close, self.socket.send(frame.to_frame())).await;
            if !matches!(sent, Ok(Ok(()))) {
                // A socket too stuck to take our close frame in time is
                // dropped: closing it would send yawc's 1000 instead, and
                // tell the peer all was well.
                return;
            }
        }
        let _ = tokio::time::timeout(close, self.socket.close()).await;
    }
}

/// Polls the socket once: `None` if it is not ready, else whether it
/// worked (the error itself only ever ends the conversation).
fn poll_now<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<S>,
    mut poll: impl FnMut(Pin<&mut Socket<S>>, &mut Context<'_>) -> Poll<Result<(), WebSocketError>>,
) -> Option<Result<(), ()>> {
    let done = poll(
        Pin::new(socket),
        &mut Context::from_waker(std::task::Waker::noop()),
    );
    match done {
        Poll::Ready(done) => Some(done.map_err(|_| ())),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Connection;

    /// An open connection's task holds its wire for as long as the
    /// connection lives, idle or not (384 bytes when this was written,
    /// down from 560): growing it past this bound should be a decision.
    #[test]
    fn a_wire_is_small() {
        let size = std::mem::size_of::<Wire<Connection>>();
        assert!(size <= 400, "Wire<Connection> is {size} bytes");
    }
}
