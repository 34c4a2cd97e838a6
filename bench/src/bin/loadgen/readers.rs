//! The subscribers' reads: one thread waiting on all their sockets in one
//! epoll set.
//!
//! With a tokio task per subscriber, each delivery also cost a task
//! wake-up and the runtime's bookkeeping around the epoll wait and the
//! read; here it costs its share of an `epoll_wait` and one `read`, into
//! one buffer shared by all subscribers.
//!
//! And the thread reads in batches: once something came, it sleeps for an
//! interval (`--read-interval-us`) before it looks again. Woken for every
//! delivery (one every ~10 us from a server sending to 10k), it spent
//! about a quarter of its time going to sleep and waking up; a batch costs
//! one wake-up (10k subscribers, bare-echo: 60 ms of CPU per round without
//! the interval, 43 ms with 50 us). The price: an arrival is stamped up to
//! the interval (and the batch's reading) late.

use anyhow::{Result, bail};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::subscriber::{Shared, Subscriber};

/// Bytes read at a time: a read takes whatever a subscriber has waiting,
/// so a round's message and a ping, or many join notices, come in one.
const READ_BUF: usize = 64 * 1024;

/// The epoll key of the stop signal (subscribers' keys are their indices).
const STOP: u64 = u64::MAX;

/// The reader thread; stops when dropped.
pub struct Readers {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// A subscriber's socket and protocol state.
struct Sub {
    stream: TcpStream,
    proto: Subscriber,
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        bail!("{what}: {}", io::Error::last_os_error());
    }
    Ok(r)
}

fn add(ep: RawFd, fd: RawFd, key: u64) -> Result<()> {
    let mut ev = libc::epoll_event {
        // Edge-triggered: a read shorter than the buffer emptied the socket.
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: key,
    };
    check(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) },
        "epoll_ctl",
    )?;
    Ok(())
}

impl Readers {
    /// Starts reading `streams` (non-blocking, each right after its
    /// handshake); subscriber `i` is `streams[i]`. Once something came,
    /// the thread looks again only after `interval`.
    pub fn start(streams: Vec<TcpStream>, shared: Arc<Shared>, interval: Duration) -> Result<Self> {
        let ep = unsafe {
            OwnedFd::from_raw_fd(check(
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                "epoll_create1",
            )?)
        };
        let stop = unsafe {
            OwnedFd::from_raw_fd(check(
                libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK),
                "eventfd",
            )?)
        };
        add(ep.as_raw_fd(), stop.as_raw_fd(), STOP)?;
        let mut subs = Vec::with_capacity(streams.len());
        for (i, stream) in streams.into_iter().enumerate() {
            stream.set_nonblocking(true)?;
            add(ep.as_raw_fd(), stream.as_raw_fd(), i as u64)?;
            let proto = Subscriber::new(i, &shared);
            subs.push(Some(Sub { stream, proto }));
        }
        let thread = std::thread::Builder::new()
            .name("subscribers".into())
            .spawn(move || run(ep, subs, &shared, interval))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        let one = 1u64;
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread: until stopped, reads whichever subscribers have
/// something, then sleeps for `interval`; a subscriber whose connection
/// is over is dropped (closed).
fn run(ep: OwnedFd, mut subs: Vec<Option<Sub>>, shared: &Shared, interval: Duration) {
    // Sleep for the interval, not up to 50 us (the default slack) longer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; READ_BUF];
    let mut replies = Vec::new();
    loop {
        let n = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                -1,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("loadgen: epoll_wait: {e}");
            return;
        }
        for ev in &events[..n as usize] {
            let key = ev.u64;
            if key == STOP {
                return;
            }
            let slot = &mut subs[key as usize];
            let Some(sub) = slot else { continue };
            if let Err(why) = read(sub, &mut buf, &mut replies, shared) {
                *slot = None;
                shared.close(why);
            }
        }
        // Unless the batch was full (then more is waiting: read it now).
        if !interval.is_zero() && (n as usize) < events.len() {
            std::thread::sleep(interval);
        }
    }
}

/// Reads what `sub` has waiting; an error is why its connection is over.
fn read(
    sub: &mut Sub,
    buf: &mut [u8],
    replies: &mut Vec<u8>,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let n = match sub.stream.read(buf) {
            Ok(0) => return Err("the server ended the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        let now = shared.arrivals.now_ns();
        let r = sub.proto.on_read(&buf[..n], now, shared, replies);
        if !replies.is_empty() {
            // A few bytes into an idle send buffer: a write that would
            // block means the server stopped reading.
            let w = sub.stream.write_all(replies);
            replies.clear();
            w.map_err(|e| format!("write: {e}"))?;
        }
        r?;
        if n < buf.len() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let readers = Readers::start(
            vec![stream.into_std().unwrap()],
            shared.clone(),
            Duration::from_micros(50),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(shared.arrivals.wait_all(0, deadline).await);
        let (pong, close) = server.await.unwrap();
        assert_eq!(pong, Message::Pong(b"p".to_vec().into()));
        assert!(matches!(close, Message::Close(_)), "{close:?}");
        while shared.closed.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(readers);
        assert_eq!(shared.received.load(Ordering::Relaxed), 2);
        assert_eq!(shared.closed.load(Ordering::Relaxed), 1);
        assert_eq!(
            shared.first_close.get().unwrap(),
            "the server closed the connection"
        );
    }
}
