//! One subscriber of the `broadcast` mode: reads the server's frames
//! straight from its TCP stream and records the rounds' arrivals.
//!
//! At 10k subscribers on one core the load generator, not the server, was
//! the limit when every delivery went through tungstenite (a `Message`
//! allocated), a clock read, a window search and a channel send. Here a
//! delivery costs one read, one clock read per read (not per frame), a
//! scan for the marker (at the payload's start unless the server wraps it)
//! and a store into the subscriber's slot.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::arrivals::Arrivals;
use crate::frames::{self, Event, FrameReader};
use crate::marker::Marker;

/// Bytes read at a time: a round's message and then some (a read may take
/// the round and a ping, or the join notices before the rounds).
const READ_BUF: usize = 4096;

/// What the subscribers share with the main task.
pub struct Shared {
    pub arrivals: Arrivals,
    /// Messages received, all rounds' included.
    pub received: AtomicU64,
    /// When the last message came, ns on `arrivals`' clock.
    pub last_msg_ns: AtomicU64,
    /// Subscribers disconnected, and the first one's reason.
    pub closed: AtomicUsize,
    pub first_close: OnceLock<String>,
}

impl Shared {
    pub fn new(subscribers: usize) -> Self {
        Self {
            arrivals: Arrivals::new(subscribers),
            received: AtomicU64::new(0),
            last_msg_ns: AtomicU64::new(0),
            closed: AtomicUsize::new(0),
            first_close: OnceLock::new(),
        }
    }
}

/// Subscriber `i` on `stream` (right after its handshake), until the
/// connection ends.
pub async fn run(i: usize, mut stream: TcpStream, shared: &Shared) {
    let why = read(i, &mut stream, shared).await;
    let _ = shared.first_close.set(why);
    shared.closed.fetch_add(1, Ordering::Relaxed);
}

/// Reads until the connection ends; returns why it did.
async fn read(i: usize, stream: &mut TcpStream, shared: &Shared) -> String {
    // Client frames are masked; any key will do for a load generator.
    let mask =
        (shared.arrivals.now_ns() as u32 ^ (i as u32).wrapping_mul(0x9E37_79B9)).to_le_bytes();
    let mut frames = FrameReader::default();
    let mut marker = Marker::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut replies = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return "the server ended the connection".into(),
            Ok(n) => n,
            Err(e) => return format!("read: {e}"),
        };
        let now = shared.arrivals.now_ns();
        let mut messages = 0u64;
        let mut closed = false;
        let fed = frames.feed(&buf[..n], |e| match e {
            Event::Data(d) => marker.feed(d),
            Event::End => {
                messages += 1;
                if let Some(round) = marker.finish() {
                    shared.arrivals.record(i, round, now);
                }
            }
            Event::Ping(p) => frames::pong(p, mask, &mut replies),
            Event::Close => {
                frames::close(mask, &mut replies);
                closed = true;
            }
        });
        if messages > 0 {
            shared.received.fetch_add(messages, Ordering::Relaxed);
            shared.last_msg_ns.store(now, Ordering::Relaxed);
        }
        if let Err(e) = fed {
            return e.to_string();
        }
        if !replies.is_empty() {
            if let Err(e) = stream.write_all(&replies).await {
                return format!("write: {e}");
            }
            replies.clear();
        }
        if closed {
            return "the server closed the connection".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Through tungstenite's client handshake, with the server's first
    /// frames in the same write as its response: a message sent right
    /// after the response is not lost, a ping is answered, the round is
    /// recorded, and a close ends the subscriber.
    #[tokio::test]
    async fn after_a_real_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/x?u={{i}}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                request.push(s.read_u8().await.unwrap());
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(b"\x81\x0cu0 connected"); // text
            out.extend_from_slice(b"\x89\x01p"); // ping
            out.extend_from_slice(b"\x81\x0aBCAST#0#xx"); // text
            s.write_all(&out).await.unwrap();
            let mut ws = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
            let pong = ws.next().await.unwrap().unwrap();
            ws.close(None).await.unwrap();
            // The client's close reply.
            let close = ws.next().await.unwrap().unwrap();
            (pong, close)
        });
        let target = Target::new(&url, 1).await.unwrap();
        let stream = target.connect_raw(0).await.unwrap();
        let shared = Arc::new(Shared::new(1));
        shared.arrivals.open(0);
        let reader = tokio::spawn({
            let shared = shared.clone();
            async move { run(0, stream, &shared).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(shared.arrivals.wait_all(0, deadline).await);
        let (pong, close) = server.await.unwrap();
        assert_eq!(pong, Message::Pong(b"p".to_vec().into()));
        assert!(matches!(close, Message::Close(_)), "{close:?}");
        reader.await.unwrap();
        assert_eq!(shared.received.load(Ordering::Relaxed), 2);
        assert_eq!(shared.closed.load(Ordering::Relaxed), 1);
        assert_eq!(
            shared.first_close.get().unwrap(),
            "the server closed the connection"
        );
    }
}
