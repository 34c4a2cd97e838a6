//! One subscriber of the `broadcast` mode: the server's frames, read
//! straight from its TCP stream (by `readers.rs`), and the rounds'
//! arrivals they bring.
//!
//! At 10k subscribers on one core the load generator, not the server, was
//! (close to) the limit when every delivery went through tungstenite (a
//! `Message` allocated), a clock read, a window search and a channel send.
//! Here a delivery costs one read, one clock read per read (not per
//! frame), a scan for the marker (at the payload's start unless the server
//! wraps it) and a store into the subscriber's slot.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::arrivals::Arrivals;
use crate::frames::{self, Event, FrameReader};
use crate::marker::Marker;

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

    /// A subscriber was disconnected, for `why`.
    pub fn close(&self, why: String) {
        let _ = self.first_close.set(why);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One subscriber's side of the protocol: what it makes of the bytes it
/// reads.
pub struct Subscriber {
    i: usize,
    frames: FrameReader,
    marker: Marker,
    /// Client frames are masked; any key will do for a load generator.
    mask: [u8; 4],
}

impl Subscriber {
    pub fn new(i: usize, shared: &Shared) -> Self {
        let mask = shared.arrivals.now_ns() as u32 ^ (i as u32).wrapping_mul(0x9E37_79B9);
        Self {
            i,
            frames: FrameReader::default(),
            marker: Marker::default(),
            mask: mask.to_le_bytes(),
        }
    }

    /// Takes `data`, read at `now_ns` (on `shared.arrivals`' clock), and
    /// appends to `replies` what must be sent back (pongs, a close reply).
    /// An error is why the connection is over (the server closed it or
    /// broke the protocol); `replies` should still be sent.
    pub fn on_read(
        &mut self,
        data: &[u8],
        now_ns: u64,
        shared: &Shared,
        replies: &mut Vec<u8>,
    ) -> Result<(), String> {
        let (i, mask, marker) = (self.i, self.mask, &mut self.marker);
        let mut messages = 0u64;
        let mut closed = false;
        let fed = self.frames.feed(data, |e| match e {
            Event::Data(d) => marker.feed(d),
            Event::End => {
                messages += 1;
                if let Some(round) = marker.finish() {
                    shared.arrivals.record(i, round, now_ns);
                }
            }
            Event::Ping(p) => frames::pong(p, mask, replies),
            Event::Close => {
                frames::close(mask, replies);
                closed = true;
            }
        });
        if messages > 0 {
            shared.received.fetch_add(messages, Ordering::Relaxed);
            shared.last_msg_ns.store(now_ns, Ordering::Relaxed);
        }
        fed.map_err(|e| e.to_string())?;
        if closed {
            return Err("the server closed the connection".into());
        }
        Ok(())
    }
}
