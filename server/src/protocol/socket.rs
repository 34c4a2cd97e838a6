//! yawc's frame layer with the message layer wsgate needs on top.
//!
//! yawc's own message layer checks UTF-8 only once a message is complete and
//! answers its errors with no close frame, so the server would close a bad
//! stream late and with the wrong code. Here fragments are reassembled and
//! checked as they arrive, and every failure ends in the close code RFC 6455
//! asks for. yawc's frame layer still answers pings, echoes the client's
//! close, inflates permessage-deflate and closes on framing errors itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use yawc::streaming::Streaming;
use yawc::{Frame, HttpStream, OpCode, WebSocket, WebSocketError};

use super::direct::PlainSocket;
use super::{CloseCode, CloseFrame, Message, Utf8Bytes};
use crate::registry::{Corked, Gate};

/// A whole message, or a sign of life.
pub enum Incoming {
    Data(Message),
    /// The client's close code and reason, if it gave any.
    Close(Option<CloseFrame>),
    /// A ping or a pong: the client is alive, nothing more.
    Control,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A message over the size limit.
    TooBig,
    /// yawc failed the connection and has queued its close frame.
    Library(WebSocketError),
    /// A broken message, and the close it calls for.
    Invalid {
        code: CloseCode,
        reason: &'static str,
    },
}

/// The connection, read and written by one task (the vendored yawc wakes
/// only the task that polled it last): a client's upgraded HTTP stream, or
/// an upstream's TCP or TLS stream.
///
/// yawc does not stop anything being sent after a close frame; this drops
/// whatever would follow one (RFC 6455 §5.5.1).
pub struct Socket<S = HttpStream> {
    ws: Streaming<S>,
    max_message_size: usize,
    budget: Arc<ReassemblyBudget>,
    /// The message being reassembled, if one is under way: boxed, as most
    /// messages come in one frame and a connection is mostly idle.
    partial: Option<Box<Partial>>,
    /// A close frame has been sent or queued.
    closed: bool,
    /// The close was ours, so yawc's echo of the peer's reply to it must
    /// never go out.
    own_close: bool,
    /// Where set ([`Socket::hold_closes`]), the close yawc queued in answer
    /// to a frame read waits here until [`Socket::release_close`], so that
    /// replies to the messages read before that frame go out before it.
    held_close: Option<Box<Frame>>,
    holds_closes: bool,
    /// We opened the gate corked deliveries are written through while the
    /// connection is parked ([`Gate`]), and have not taken the socket back.
    gate_open: bool,
    /// That gate, where deliveries may be written past this socket.
    gate: Option<Gate>,
}

/// Bytes of partly received messages held for every client together: the
/// fragments of messages under way, and (through yawc) the frames still
/// arriving. Each client is bounded by the message size limit; this bounds
/// them all, so many clients that never finish a message cannot pin
/// `max_message_size` each.
#[derive(Debug)]
pub struct ReassemblyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl ReassemblyBudget {
    pub fn new(limit: usize) -> Arc<ReassemblyBudget> {
        Arc::new(ReassemblyBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    fn take(&self, n: usize) -> bool {
        let held = self.held.fetch_add(n, Ordering::AcqRel);
        if held + n > self.limit {
            self.held.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

impl yawc::ReadBudget for ReassemblyBudget {
    fn take(&self, n: usize) -> bool {
        ReassemblyBudget::take(self, n)
    }

    fn give(&self, n: usize) {
        ReassemblyBudget::give(self, n)
    }
}

struct Partial {
    text: bool,
    buf: BytesMut,
    /// How much of `buf` is known to be valid UTF-8; the rest is at most the
    /// start of one character split across fragments.
    checked: usize,
    /// What `buf` holds of the budget, given back when this is dropped.
    budget: Arc<ReassemblyBudget>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.budget.give(self.buf.len());
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// From now on, a close yawc queues in answer to a frame read waits for
    /// [`Socket::release_close`]: a session answers a burst's messages
    /// after reading the whole burst, and a close read within it must not
    /// overtake those answers.
    pub fn hold_closes(&mut self) {
        self.holds_closes = true;
    }

    /// The conversation is winding down: nothing more is held back.
    pub fn stop_holding_closes(&mut self) {
        self.holds_closes = false;
        self.release_close();
    }

    /// Queues the close held back since the frame that caused it was read.
    pub fn release_close(&mut self) {
        if let Some(frame) = self.held_close.take() {
            self.ws.queue_close(*frame);
            self.closed = true;
        }
    }

    /// yawc queued a close in answer to the frame just read.
    fn on_close_queued(&mut self) {
        if self.holds_closes
            && let Some(frame) = self.ws.take_queued_close()
        {
            self.held_close = Some(Box::new(frame));
            return;
        }
        self.closed = true;
    }

    /// What a message may weigh, read or written: the limit a client's
    /// messages are held to holds for what it is sent too.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub fn new(ws: WebSocket<S>, max_message_size: usize, budget: Arc<ReassemblyBudget>) -> Self {
        Socket {
            ws: ws.into_streaming(),
            max_message_size,
            budget,
            partial: None,
            closed: false,
            own_close: false,
            held_close: None,
            holds_closes: false,
            gate_open: false,
            gate: None,
        }
    }

    /// Lets corked deliveries be written straight into the socket, through
    /// `gate`, whenever the connection is parked: unless permessage-deflate
    /// was negotiated, as a frame written past yawc would miss its
    /// compression context.
    pub fn deliver_directly(&mut self, gate: Gate, socket: PlainSocket, corked: Arc<Corked>) {
        if self.ws.is_compressed() {
            return;
        }
        gate.enable(socket, corked);
        self.gate = Some(gate);
    }

    /// The connection is parked: opens the gate if nothing is buffered,
    /// owed or half written (a rest still being taken back keeps it shut
    /// and the take-back going) and no close is out or held.
    pub fn open_gate(&mut self) {
        if let Some(gate) = &self.gate
            && !self.gate_open
            && !self.closed
            && self.held_close.is_none()
            && self.ws.is_drained()
        {
            self.gate_open = gate.open();
        }
    }

    /// Takes the socket back from the flushers before anything else
    /// touches it: shuts the gate, then writes the rest of a frame one left
    /// half written.
    fn poll_take_back(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WebSocketError>> {
        if !self.gate_open {
            return Poll::Ready(Ok(()));
        }
        let (Some(gate), ws) = (&self.gate, &mut self.ws) else {
            return Poll::Ready(Ok(()));
        };
        ready!(gate.poll_take_back(cx, |cx, rest| Pin::new(ws.get_mut()).poll_write(cx, rest)))?;
        self.gate_open = false;
        Poll::Ready(Ok(()))
    }

    /// Adds one data frame to the message under way; a whole message once
    /// its last fragment is in.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        let fin = frame.is_fin();
        let (opcode, _, payload) = frame.into_parts();
        let mut partial = match (opcode, self.partial.take()) {
            (OpCode::Continuation, Some(partial)) => partial,
            (OpCode::Continuation, None) => return Err(protocol_error("unexpected continuation")),
            (_, Some(_)) => return Err(protocol_error("message interrupted")),
            (OpCode::Text, None) if fin => return whole_text(payload).map(Some),
            (OpCode::Binary, None) if fin => {
                return Ok(Some(Incoming::Data(Message::Binary(payload))));
            }
            (opcode, None) => Box::new(Partial {
                text: opcode == OpCode::Text,
                buf: BytesMut::new(),
                checked: 0,
                budget: self.budget.clone(),
            }),
        };
        if partial.buf.len() + payload.len() > self.max_message_size {
            return Err(ReadError::TooBig);
        }
        if !self.budget.take(payload.len()) {
            return Err(ReadError::Invalid {
                code: CloseCode::TRY_AGAIN_LATER,
                reason: "server busy",
            });
        }
        partial.buf.extend_from_slice(&payload);
        if partial.text {
            partial.check_utf8(fin)?;
        }
        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        let held = partial.buf.len();
        let bytes = std::mem::take(&mut partial.buf).freeze();
        self.budget.give(held);
        Ok(Some(if partial.text {
            whole_text(bytes)?
        } else {
            Incoming::Data(Message::Binary(bytes))
        }))
    }
}

impl Partial {
    /// Fails a text message at the first bad byte rather than at its end.
    fn check_utf8(&mut self, fin: bool) -> Result<(), ReadError> {
        match std::str::from_utf8(&self.buf[self.checked..]) {
            Ok(_) => self.checked = self.buf.len(),
            Err(e) if e.error_len().is_none() && !fin => self.checked += e.valid_up_to(),
            Err(_) => return Err(invalid_utf8()),
        }
        Ok(())
    }
}

impl ReadError {
    /// The close code the failure calls for (the one yawc has sent, for
    /// its own errors); `None` when the connection simply broke.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ReadError::TooBig => Some(CloseCode::TOO_BIG),
            ReadError::Invalid { code, .. } => Some(*code),
            ReadError::Library(e) => match e {
                WebSocketError::FrameTooLarge => Some(CloseCode::TOO_BIG),
                WebSocketError::ReadBudgetExceeded => Some(CloseCode::TRY_AGAIN_LATER),
                WebSocketError::InvalidUTF8 => Some(CloseCode::INVALID_DATA),
                e if e.is_protocol_error() => Some(CloseCode::PROTOCOL_ERROR),
                _ => None,
            },
        }
    }

    /// A reason safe to tell the client.
    pub fn reason(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ReadError::TooBig => "message too big".into(),
            ReadError::Invalid { reason, .. } => (*reason).into(),
            ReadError::Library(e) => e.to_string().into(),
        }
    }
}

fn whole_text(bytes: Bytes) -> Result<Incoming, ReadError> {
    Utf8Bytes::from_utf8(bytes)
        .map(|text| Incoming::Data(Message::Text(text)))
        .map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> ReadError {
    ReadError::Invalid {
        code: CloseCode::INVALID_DATA,
        reason: "invalid UTF-8",
    }
}

fn protocol_error(reason: &'static str) -> ReadError {
    ReadError::Invalid {
        code: CloseCode::PROTOCOL_ERROR,
        reason,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Socket<S> {
    type Item = Result<Incoming, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Reading may write (yawc answers pings and closes).
        if let Err(e) = ready!(this.poll_take_back(cx)) {
            return Poll::Ready(Some(Err(ReadError::Library(e))));
        }
        loop {
            let frame = match ready!(this.ws.poll_next_frame(cx)) {
                Ok(frame) => frame,
                Err(WebSocketError::ConnectionClosed) => return Poll::Ready(None),
                Err(WebSocketError::FrameTooLarge) => {
                    this.on_close_queued();
                    return Poll::Ready(Some(Err(ReadError::TooBig)));
                }
                Err(e) => {
                    this.on_close_queued();
                    return Poll::Ready(Some(Err(ReadError::Library(e))));
                }
            };
            let incoming = match frame.opcode() {
                OpCode::Close => {
                    // yawc has queued the echo.
                    this.on_close_queued();
                    let reason = frame.close_reason().ok().flatten().unwrap_or("");
                    let close = frame
                        .close_code()
                        .map(|code| CloseFrame::new(CloseCode::new(code.into()), reason));
                    Incoming::Close(close)
                }
                OpCode::Ping | OpCode::Pong => Incoming::Control,
                _ => match this.assemble(frame) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            };
            return Poll::Ready(Some(Ok(incoming)));
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for Socket<S> {
    type Error = WebSocketError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_take_back(cx))?;
        Pin::new(&mut this.ws).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        let this = self.get_mut();
        if this.closed {
            return Ok(());
        }
        if frame.opcode() == OpCode::Close {
            this.closed = true;
            this.own_close = true;
        }
        Pin::new(&mut this.ws).start_send(frame)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_take_back(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_take_back(cx))?;
        if this.closed && !this.own_close {
            // Readiness writes out the close yawc queued; closing alone
            // would send a 1000 in its place.
            ready!(Pin::new(&mut this.ws).poll_ready(cx))?;
        }
        Pin::new(&mut this.ws).poll_close(cx)
    }
}

/// The socket closes when this is dropped: nothing may be written into it
/// from then on (its number may be reused).
impl<S> Drop for Socket<S> {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.disable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fragments: &[&[u8]]) -> Result<(), ReadError> {
        let mut partial = Partial {
            text: true,
            buf: BytesMut::new(),
            checked: 0,
            budget: ReassemblyBudget::new(usize::MAX),
        };
        for (i, fragment) in fragments.iter().enumerate() {
            partial.buf.extend_from_slice(fragment);
            partial.check_utf8(i + 1 == fragments.len())?;
        }
        Ok(())
    }

    #[test]
    fn utf8_is_checked_across_fragments() {
        let euro = "€".as_bytes();
        assert!(check(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]).is_ok());
        // A character cut off by the last fragment is an error.
        assert!(check(&[b"a", &euro[..2]]).is_err());
        // A bad byte fails the fragment it arrives in, not the message's end.
        assert!(check(&[b"a", b"\xff"]).is_err());
        assert!(check(&[b"\xc0\xaf", b"ok"]).is_err());
    }
}
