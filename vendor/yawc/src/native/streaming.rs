//! Low-level streaming WebSocket layer for manual fragment control.
//!
//! This module provides the [`Streaming`] type, which gives users direct control over
//! WebSocket frame fragmentation without automatic reassembly or fragmentation.
//!
//! # When to Use Streaming
//!
//! Use `Streaming` when you need:
//! - **Manual fragment control**: Send and receive individual fragments without automatic reassembly
//! - **Memory-efficient streaming**: Process large messages incrementally without buffering
//! - **Custom fragmentation logic**: Implement application-specific fragmentation strategies
//! - **Real-time processing**: Handle fragments as they arrive for low-latency applications
//!
//! # Comparison with WebSocket
//!
//! | Feature | `WebSocket` | `Streaming` |
//! |---------|------------|------------|
//! | Fragment reassembly | Automatic | Manual |
//! | Auto-fragmentation | Optional | Manual |
//! | Compression | Yes | Yes |
//! | Memory usage | Higher | Lower |
//! | Control | Limited | Full |
//!
//! # Example
//!
//! ```rust,no_run
//! use yawc::{WebSocket, Frame, OpCode};
//! use futures::SinkExt;
//!
//! # async fn example() -> yawc::Result<()> {
//! // Convert WebSocket to Streaming for manual fragment control
//! let ws = WebSocket::connect("ws://example.com".parse()?).await?;
//! let mut streaming = ws.into_streaming();
//!
//! // Send a message as multiple fragments manually
//! streaming.send(Frame::text("Hello").with_fin(false)).await?;
//! streaming.send(Frame::continuation(" ").with_fin(false)).await?;
//! streaming.send(Frame::continuation("World!")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Safety
//!
//! When using `Streaming`, you are responsible for:
//! - **Fragment ordering**: Continuation frames must follow a non-FIN data frame
//! - **OpCode rules**: Only the first fragment carries the message opcode
//! - **Control frames**: Cannot be fragmented and can be sent between data fragments
//! - **Compression**: RSV1 bit is managed automatically based on compression state

use std::{
    future::poll_fn,
    pin::Pin,
    task::{ready, Context, Poll},
};

use crate::{close::CloseCode, codec, Negotiation, OpCode, Result, Role};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, FramedParts};

/// The buffer size tokio-util starts `Framed` with, used when none is configured.
const DEFAULT_BUFFER_CAPACITY: usize = 8 * 1024;

use crate::{
    codec::Codec,
    compression::{Compressor, Decompressor},
    Frame, ReadHalf, WebSocketError, WriteHalf,
};

/// Low-level streaming WebSocket connection with manual fragment control.
///
/// `Streaming` provides direct access to WebSocket frames without automatic
/// fragmentation or reassembly. This allows for:
/// - Streaming large files directly from/to disk without loading them in memory
/// - Implementing custom fragmentation strategies
/// - Processing data incrementally as fragments arrive
/// - Fine-grained control over frame boundaries
///
/// # Conversion
///
/// You can convert a [`WebSocket`](super::WebSocket) into a [`Streaming`] connection:
///
/// ```rust,no_run
/// # use yawc::WebSocket;
/// # async fn example() -> yawc::Result<()> {
/// let ws = WebSocket::connect("ws://example.com".parse()?).await?;
/// let streaming = ws.into_streaming();
/// # Ok(())
/// # }
/// ```
///
/// # Fragmentation Protocol
///
/// When manually fragmenting messages:
/// 1. Send first fragment with desired OpCode (Text/Binary) and `FIN=false`
/// 2. Send continuation fragments with OpCode::Continuation and `FIN=false`
/// 3. Send final fragment with OpCode::Continuation and `FIN=true`
///
/// # Example: Streaming File Upload
///
/// ```rust,no_run
/// use yawc::{WebSocket, Frame, OpCode};
/// use futures::SinkExt;
/// use std::io::Read;
///
/// # async fn upload_file() -> yawc::Result<()> {
/// let ws = WebSocket::connect("ws://example.com/upload".parse()?).await?;
/// let mut streaming = ws.into_streaming();
///
/// let mut file = std::fs::File::open("large_file.bin")?;
/// let mut buffer = vec![0u8; 64 * 1024]; // 64 KiB chunks
/// let mut first = true;
///
/// loop {
///     let bytes_read = file.read(&mut buffer)?;
///     if bytes_read == 0 {
///         break;
///     }
///
///     let chunk = buffer[..bytes_read].to_vec();
///     let frame = if first {
///         first = false;
///         Frame::binary(chunk).with_fin(false)
///     } else {
///         Frame::continuation(chunk).with_fin(false)
///     };
///
///     streaming.send(frame).await?;
/// }
///
/// // Send final empty fragment to close the message
/// streaming.send(Frame::continuation(vec![])).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Compression Behavior
///
/// Unlike [`WebSocket`](super::WebSocket) which compresses complete messages,
/// `Streaming` performs **streaming compression**:
/// - Compression state is maintained across fragments
/// - RSV1 bit is automatically managed (set only on first fragment)
/// - Decompression happens per-fragment with context preservation
///
/// This allows compressed data to be processed incrementally without waiting
/// for the complete message.
pub struct Streaming<S> {
    stream: Framed<S, Codec>,
    // Reading state
    read_half: ReadHalf,
    // Writing state
    write_half: WriteHalf,
    // frames we must send (control..)
    // (wsgate: a Vec, not a VecDeque: it holds a pong and a close at most,
    // and is 8 bytes smaller in every connection)
    obligated_sends: Vec<Frame>,
    // flag to indicate the writer to flush sends
    flush_sends: bool,
    // compressor (wsgate: boxed, so a connection without compression holds
    // no room for it)
    deflate: Option<Box<Compressor>>,
    // decompressor (wsgate: boxed, likewise)
    inflate: Option<Box<Decompressor>>,
    // (wsgate: these four are u32s, saturated, to keep every connection's
    // state small: past 4 GiB they would not bound anything anyway)
    max_payload_read: u32,
    // messages sent as one frame below this size are not compressed
    compression_threshold: u32,
    // size the read buffer returns to after a larger frame
    read_buffer_capacity: u32,
    // size of the write buffer taken when there is something to write
    write_buffer_capacity: u32,
    // the write buffer grew past its usual size and is freed once flushed
    write_buffer_grown: bool,
}

impl<S> Streaming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(role: Role, stream: S, read_buf: Bytes, negotiated: &Negotiation) -> Self {
        let decoder = codec::Decoder::new(role, negotiated.max_payload_read)
            .with_budget(negotiated.read_budget.clone());
        let encoder = codec::Encoder::new(role);
        let codec = Codec::from((decoder, encoder));

        // wsgate: no buffers at all until there is something to read or
        // write (each is taken then, and given back once empty). Without
        // leftover handshake bytes, `Framed::with_capacity(.., 0)` allocates
        // none; `from_parts` reserves 8 KiB for each buffer, and the
        // configured read buffer replaced one of them, so every handshake
        // allocated and freed 20 KiB for nothing.
        let mut framed = if read_buf.is_empty() {
            let mut framed = Framed::with_capacity(stream, codec, 0);
            framed.set_backpressure_boundary(DEFAULT_BUFFER_CAPACITY);
            framed
        } else {
            // `from_parts` marks leftover handshake bytes as readable, which
            // `Framed::with_capacity` cannot, but it also raises both buffers to 8 KiB.
            // Swap in buffers of the configured size afterwards.
            let mut parts = FramedParts::new(stream, codec);
            parts.read_buf = read_buf.into();
            let mut framed = Framed::from_parts(parts);
            if let Some(capacity) = negotiated.read_buffer_capacity {
                set_capacity(framed.read_buffer_mut(), capacity);
            }
            *framed.write_buffer_mut() = BytesMut::new();
            framed
        };
        if let Some(boundary) = negotiated.max_backpressure_write_boundary {
            framed.set_backpressure_boundary(boundary);
        }

        Self {
            stream: framed,
            read_half: ReadHalf::new(),
            write_half: WriteHalf::new(),
            obligated_sends: Vec::new(),
            flush_sends: false,
            deflate: negotiated.compressor().map(Box::new),
            inflate: negotiated.decompressor().map(Box::new),
            max_payload_read: saturate(negotiated.max_payload_read),
            compression_threshold: saturate(negotiated.compression_threshold),
            read_buffer_capacity: saturate(
                negotiated
                    .read_buffer_capacity
                    .unwrap_or(DEFAULT_BUFFER_CAPACITY),
            ),
            write_buffer_capacity: saturate(
                negotiated
                    .write_buffer_capacity
                    .unwrap_or(DEFAULT_BUFFER_CAPACITY),
            ),
            write_buffer_grown: false,
        }
    }

    /// Asynchronously retrieves the next frame from the WebSocket stream.
    pub async fn next_frame(&mut self) -> Result<Frame> {
        poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// Splits the `Streaming` connection into its low-level components for advanced usage.
    ///
    /// This method provides access to the underlying framed stream and read/write halves,
    /// allowing for direct manipulation of the WebSocket protocol layer.
    ///
    /// # Safety
    ///
    /// This function is unsafe because it splits ownership of shared state. The caller
    /// must ensure that:
    /// - Only one component performs reads at a time
    /// - Only one component performs writes at a time
    /// - Protocol invariants are maintained (control frames, fragment ordering, etc.)
    ///
    /// # Example
    ///
    /// See [`examples/streaming.rs`](https://github.com/infinitefield/yawc/blob/master/examples/streaming.rs)
    /// for a complete example of using `split_stream()` for low-level frame processing.
    pub unsafe fn split_stream(self) -> (Framed<S, Codec>, ReadHalf, WriteHalf) {
        (self.stream, self.read_half, self.write_half)
    }

    /// Polls for the next frame in the WebSocket stream.
    ///
    /// This method returns individual frames without reassembling fragments. Applications
    /// using this method must handle fragmentation manually by checking the `FIN` flag
    /// and `OpCode` of each frame.
    ///
    /// # Returns
    ///
    /// - `Poll::Ready(Ok(frame))` - A complete frame is available
    /// - `Poll::Ready(Err(e))` - A protocol error occurred
    /// - `Poll::Pending` - No frame is available yet
    ///
    /// # Fragment Handling
    ///
    /// Frames may arrive as:
    /// - Complete messages: `OpCode::{Text,Binary}` with `FIN=true`
    /// - First fragment: `OpCode::{Text,Binary}` with `FIN=false`
    /// - Middle fragments: `OpCode::Continuation` with `FIN=false`
    /// - Final fragment: `OpCode::Continuation` with `FIN=true`
    pub fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame>> {
        self.poll_next_frame_with_limit(cx, self.max_payload_read as usize)
    }

    pub(crate) fn poll_next_frame_with_limit(
        &mut self,
        cx: &mut Context<'_>,
        max_read_buffer: usize,
    ) -> Poll<Result<Frame>> {
        // wsgate: a peer that does not read the pongs it asked for is not
        // read from either, so what it makes us queue stays bounded.
        if !self.obligated_sends.is_empty() || self.flush_sends {
            ready!(self.poll_flush_obligated(cx))?;
        }
        // wsgate: the read buffer is given back while the connection is
        // idle (below) and taken again when there is something to read.
        if self.stream.read_buffer().capacity() == 0 {
            let capacity = self.read_buffer_capacity as usize;
            take_read_buffer(self.stream.read_buffer_mut(), capacity);
        }
        let res = self.read_half.poll_frame(&mut self.stream, cx);
        let res = res.map(|res| {
            res.and_then(|frame| {
                self.release_read_buffer(frame.payload.len());
                self.on_frame(frame, max_read_buffer)
            })
        });
        match res {
            Poll::Ready(Ok(frame)) => Poll::Ready(Ok(frame)),
            Poll::Ready(Err(WebSocketError::ConnectionClosed)) => {
                ready!(self.poll_flush_obligated(cx))?;
                Poll::Ready(Err(WebSocketError::ConnectionClosed))
            }
            Poll::Ready(Err(err)) => {
                let code = match err {
                    WebSocketError::FrameTooLarge => CloseCode::Size,
                    WebSocketError::ReadBudgetExceeded => CloseCode::Again,
                    WebSocketError::InvalidUTF8 => CloseCode::Invalid,
                    // wsgate: a reserved opcode breaks the protocol (1002), it
                    // is not an unsupported data type (1003).
                    WebSocketError::InvalidOpCode(_)
                    | WebSocketError::ReservedBitsNotZero
                    | WebSocketError::ControlFrameFragmented
                    | WebSocketError::PingFrameTooLarge
                    | WebSocketError::InvalidFragment
                    | WebSocketError::InvalidCloseFrame
                    | WebSocketError::InvalidCloseCode
                    | WebSocketError::FragmentTimeout
                    | WebSocketError::InvalidContinuationFrame
                    | WebSocketError::CompressionNotSupported => CloseCode::Protocol,
                    _ => CloseCode::Error,
                };
                self.emit_close(Frame::close(code, err.to_string()));
                Poll::Ready(Err(err))
            }
            Poll::Pending => {
                self.release_idle_read_buffer();
                ready!(self.poll_flush_obligated(cx))?;
                Poll::Pending
            }
        }
    }

    /// wsgate: a connection with nothing left to read holds no read buffer,
    /// so that thousands of idle connections do not each keep one (uWS keeps
    /// one per event loop). Only an empty buffer goes: a partly read frame
    /// keeps its bytes.
    fn release_idle_read_buffer(&mut self) {
        let buffer = self.stream.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > 0 {
            give_back_read_buffer(std::mem::take(buffer));
        }
    }

    /// Gives back the memory a frame larger than the read buffer made it grow to.
    ///
    /// The frame's payload shares the buffer's allocation, so the buffer keeps all of
    /// it until replaced. Bytes of the next frame already read are kept, unless there
    /// are more than fit, in which case the next frame shrinks it instead.
    fn release_read_buffer(&mut self, frame_len: usize) {
        let capacity = self.read_buffer_capacity as usize;
        let buffer = self.stream.read_buffer_mut();
        if frame_len > capacity && buffer.len() <= capacity {
            set_capacity(buffer, capacity);
        }
    }

    /// Gives back the write buffer once it has been written out.
    fn release_write_buffer(&mut self) {
        release_write_buffer(&mut self.stream, &mut self.write_buffer_grown);
    }

    fn on_frame(&mut self, mut frame: Frame, max_read_buffer: usize) -> Result<Frame> {
        #[cfg(test)]
        println!(
            "<<Compression<< OpCode={:?} Fin={} Payload={}",
            frame.opcode,
            frame.fin,
            frame.payload.len()
        );

        // Handle protocol control frames first
        match frame.opcode {
            OpCode::Ping => {
                self.on_ping(&frame);
                return Ok(frame);
            }
            OpCode::Close => {
                self.on_close(&frame)?;
                return Ok(frame);
            }
            OpCode::Pong => return Ok(frame),
            _ => {}
        }

        let max_output_size = if !frame.is_fin() || frame.opcode == OpCode::Continuation {
            (self.max_payload_read as usize).min(max_read_buffer)
        } else {
            self.max_payload_read as usize
        };

        if frame.is_compressed {
            let inflate = self
                .inflate
                .as_mut()
                .ok_or(WebSocketError::CompressionNotSupported)?;
            frame.payload = inflate.decompress(&frame.payload, frame.is_fin(), max_output_size)?;
            frame.is_compressed = false;
        }

        if frame.payload.len() >= max_output_size {
            return Err(WebSocketError::FrameTooLarge);
        }

        Ok(frame)
    }

    fn on_ping(&mut self, frame: &Frame) {
        // wsgate: only the latest unanswered ping is answered (RFC 6455
        // §5.5.3), and its payload is copied, so a queued pong never holds
        // on to the read buffer.
        self.obligated_sends.retain(|f| f.opcode != OpCode::Pong);
        self.obligated_sends
            .push(Frame::pong(Bytes::copy_from_slice(&frame.payload)));
    }

    fn on_close(&mut self, frame: &Frame) -> Result<()> {
        match frame.payload.len() {
            0 => {}
            1 => return Err(WebSocketError::InvalidCloseFrame),
            _ => {
                let code = frame.close_code().expect("close code");
                let _ = frame.close_reason()?;

                if !code.is_allowed() {
                    return Err(WebSocketError::InvalidCloseCode);
                }
            }
        }

        let frame = Frame::close_raw(frame.payload.clone());
        self.emit_close(frame);

        Ok(())
    }

    /// wsgate: takes back the close frame queued in answer to the frame
    /// just read (the peer's close, or a frame that broke the protocol), so
    /// that replies to the messages read before it can go out first; give
    /// it back with [`Streaming::queue_close`].
    pub fn take_queued_close(&mut self) -> Option<Frame> {
        let i = self
            .obligated_sends
            .iter()
            .rposition(|f| f.opcode == OpCode::Close)?;
        Some(self.obligated_sends.remove(i))
    }

    /// wsgate: whether permessage-deflate compresses what is written: a
    /// frame written past this stream would then miss its context.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// wsgate: nothing is buffered, owed or half sent, so bytes written
    /// straight into the stream now cannot land inside a frame of ours.
    pub fn is_drained(&self) -> bool {
        self.obligated_sends.is_empty()
            && !self.flush_sends
            && !self.write_half.streaming
            && self.stream.write_buffer().is_empty()
    }

    /// wsgate: the stream underneath, for bytes written past the codec
    /// while [`is_drained`](Self::is_drained).
    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// wsgate: queues a close frame taken with [`Streaming::take_queued_close`].
    pub fn queue_close(&mut self, frame: Frame) {
        self.obligated_sends.push(frame);
    }

    fn emit_close(&mut self, frame: Frame) {
        self.obligated_sends.push(frame);
        self.read_half.is_closed = true;
    }

    fn poll_flush_obligated(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while !self.obligated_sends.is_empty() {
            ready!(self.write_half.poll_ready(&mut self.stream, cx))?;

            let next = self.obligated_sends.remove(0);
            ensure_write_buffer(&mut self.stream, self.write_buffer_capacity as usize);
            self.write_half.start_send(&mut self.stream, next)?;
            self.flush_sends = true;
        }

        if self.flush_sends {
            ready!(self.write_half.poll_flush(&mut self.stream, cx))?;
            self.flush_sends = false;
            release_write_buffer(&mut self.stream, &mut self.write_buffer_grown);
        }

        Poll::Ready(Ok(()))
    }
}

impl<S> futures::Stream for Streaming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match ready!(this.poll_next_frame(cx)) {
            Ok(ok) => Poll::Ready(Some(ok)),
            Err(_) => Poll::Ready(None),
        }
    }
}

impl<S> futures::Sink<Frame> for Streaming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = WebSocketError;

    fn poll_ready(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.obligated_sends.is_empty()
            && !this.flush_sends
            && this.stream.write_buffer().len() < this.stream.backpressure_boundary()
        {
            // Framed can accept another frame without polling the transport.
            return this.write_half.poll_ready(&mut this.stream, cx);
        }
        ready!(this.poll_flush_obligated(cx))?;
        this.write_half.poll_ready(&mut this.stream, cx)
    }

    fn start_send(self: Pin<&mut Self>, mut item: Frame) -> std::result::Result<(), Self::Error> {
        let this = self.get_mut();

        #[cfg(test)]
        println!(
            ">>Compression>> OpCode={:?} Fin={} Payload={}",
            item.opcode,
            item.fin,
            item.payload.len()
        );

        // A whole message in one frame may skip compression. A fragmented message
        // cannot, since RSV1 on its first frame covers every fragment.
        let small_message = item.opcode != OpCode::Continuation
            && item.is_fin()
            && item.payload.len() < this.compression_threshold as usize;
        let should_compress = !item.opcode.is_control() && !small_message;
        if should_compress {
            if let Some(deflate) = this.deflate.as_mut() {
                let output = deflate.compress(&item.payload, item.is_fin())?;
                // Set the RSV1 bit only when we are not streaming
                item.is_compressed = !this.write_half.streaming;
                item.payload = output;
            }
        }

        ensure_write_buffer(&mut this.stream, this.write_buffer_capacity as usize);
        this.write_half.start_send(&mut this.stream, item)?;

        // Frames up to the backpressure boundary collect in the buffer between
        // flushes, so only growth past both limits is given back.
        let usual = (this.write_buffer_capacity as usize).max(this.stream.backpressure_boundary());
        if this.stream.write_buffer().len() > usual {
            this.write_buffer_grown = true;
        }
        Ok(())
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.write_half.poll_flush(&mut this.stream, cx))?;
        this.release_write_buffer();
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), Self::Error>> {
        let this = self.get_mut();
        this.write_half.poll_close(&mut this.stream, cx)
    }
}

/// Replaces `buffer` with one of `capacity` bytes, keeping its contents.
///
/// The new buffer is never smaller than the bytes already in it.
/// wsgate: read buffers of idle connections, kept per thread for the next
/// connection that has something to read, so that going idle and back
/// costs no allocation. Bounded: past it a buffer is freed. Write buffers
/// of connections with nothing left to write are kept the same way.
const SPARE_READ_BUFFERS: usize = 64;
const SPARE_WRITE_BUFFERS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE_WRITE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// wsgate: a size setting as the u32 `Streaming` keeps.
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// wsgate: takes a write buffer for a frame about to be written, if the
/// connection holds none.
fn ensure_write_buffer<S>(stream: &mut Framed<S, Codec>, capacity: usize) {
    let buffer = stream.write_buffer_mut();
    if buffer.capacity() > 0 {
        return;
    }
    if let Some(spare) = SPARE_WRITE.with(|spare| spare.borrow_mut().pop()) {
        *buffer = spare;
    }
    // A spare whose earlier frames are all written is reclaimed in place.
    buffer.reserve(capacity);
}

/// wsgate: a connection with nothing left to write holds no write buffer,
/// as it holds no read buffer while idle: once flushed, the buffer goes to
/// the per-thread spare list, or is freed if it grew past its usual size.
fn release_write_buffer<S>(stream: &mut Framed<S, Codec>, grown: &mut bool) {
    let buffer = stream.write_buffer_mut();
    if !buffer.is_empty() || buffer.capacity() == 0 {
        return;
    }
    let buffer = std::mem::take(buffer);
    if std::mem::take(grown) {
        return;
    }
    SPARE_WRITE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_WRITE_BUFFERS {
            spare.push(buffer);
        }
    });
}

fn take_read_buffer(buffer: &mut BytesMut, capacity: usize) {
    if let Some(spare) = SPARE.with(|spare| spare.borrow_mut().pop()) {
        *buffer = spare;
    }
    // A spare whose earlier frames are all gone is reclaimed in place.
    buffer.reserve(capacity);
}

fn give_back_read_buffer(buffer: BytesMut) {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_READ_BUFFERS {
            spare.push(buffer);
        }
    });
}

fn set_capacity(buffer: &mut BytesMut, capacity: usize) {
    let mut resized = BytesMut::with_capacity(capacity.max(buffer.len()));
    resized.extend_from_slice(buffer);
    *buffer = resized;
}

#[cfg(test)]
mod wake_tests {
    use super::*;
    use crate::Options;
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::{Wake, Waker},
    };
    use tokio::io::{duplex, AsyncWriteExt};

    #[derive(Default)]
    struct WakeCount(AtomicUsize);

    impl Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn two_buffered_header_bytes_register_a_waker_when_payload_is_missing() {
        let negotiated = Negotiation::new(None, &Options::default(), Role::Client).unwrap();
        let (io, mut peer) = duplex(16);
        let mut stream = Streaming::new(
            Role::Client,
            io,
            Bytes::from_static(b"\x82\x03"),
            &negotiated,
        );
        let count = Arc::new(WakeCount::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);

        assert_eq!(stream.stream.read_buffer().len(), 2);
        assert!(stream.poll_next_frame(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);

        peer.write_all(b"abc").await.unwrap();
        assert!(count.0.load(Ordering::Relaxed) > 0);
        let Poll::Ready(Ok(frame)) = stream.poll_next_frame(&mut cx) else {
            panic!("the completed frame must be ready after its payload arrives");
        };
        assert_eq!(frame.opcode(), OpCode::Binary);
        assert_eq!(frame.payload().as_ref(), b"abc");
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;
    use crate::Options;
    use tokio::io::duplex;

    #[tokio::test]
    async fn reservation_preserves_bytes_received_with_the_upgrade() {
        let options = Options::default().with_read_buffer_capacity(64 * 1024);
        let negotiated = Negotiation::new(None, &options, Role::Client).unwrap();
        let (io, _peer) = duplex(1);
        let mut stream = Streaming::new(
            Role::Client,
            io,
            Bytes::from_static(b"\x82\x03abc"),
            &negotiated,
        );
        assert!(stream.stream.read_buffer().capacity() >= 64 * 1024);
        assert_eq!(
            stream.next_frame().await.unwrap().payload().as_ref(),
            b"abc"
        );
    }

    #[tokio::test]
    async fn small_capacities_are_exact_and_keep_upgrade_bytes() {
        let options = Options::default()
            .with_read_buffer_capacity(512)
            .with_write_buffer_capacity(256);
        let negotiated = Negotiation::new(None, &options, Role::Client).unwrap();
        let (io, _peer) = duplex(1);
        let mut stream = Streaming::new(
            Role::Client,
            io,
            Bytes::from_static(b"\x82\x03abc"),
            &negotiated,
        );
        assert_eq!(stream.stream.read_buffer().capacity(), 512);
        // wsgate: the write buffer is taken with the first frame written.
        assert_eq!(stream.stream.write_buffer().capacity(), 0);
        // The flush threshold stays at tokio-util's default, not the buffer size.
        let default = Negotiation::new(None, &Options::default(), Role::Client).unwrap();
        let (io, _peer) = duplex(1);
        let default = Streaming::new(Role::Client, io, Bytes::new(), &default);
        assert_eq!(
            stream.stream.backpressure_boundary(),
            default.stream.backpressure_boundary()
        );
        assert_eq!(
            stream.next_frame().await.unwrap().payload().as_ref(),
            b"abc"
        );
    }

    #[tokio::test]
    async fn capacity_does_not_relax_the_payload_limit() {
        let options = Options::default()
            .with_read_buffer_capacity(64 * 1024)
            .with_max_payload_read(2);
        let negotiated = Negotiation::new(None, &options, Role::Client).unwrap();
        let (io, _peer) = duplex(1);
        let mut stream = Streaming::new(
            Role::Client,
            io,
            Bytes::from_static(b"\x82\x03abc"),
            &negotiated,
        );
        assert!(matches!(
            stream.next_frame().await,
            Err(WebSocketError::FrameTooLarge)
        ));
    }
}
