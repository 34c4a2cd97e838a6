//! Frames written straight into a plain-TCP client's socket, past its
//! task, as uWebSockets writes what was published to a socket from its
//! loop: this is how corked deliveries leave (`registry::cork`).
//!
//! Only where nothing else can be writing to the socket at the same time:
//! a plain TCP connection without permessage-deflate (TLS and deflate keep
//! state only the connection's task may touch), and only while the queue's
//! gate is open (`registry::queue`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use super::Message;

/// The socket of a plain (not TLS) connection, as it was accepted. Only
/// written while its connection's task holds the socket open: the gate is
/// shut for good before the socket is dropped, so the number cannot have
/// been reused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlainSocket(pub RawFd);

/// The most frames one `sendmsg` carries: at most two iovecs each, well
/// under `IOV_MAX` (1024).
pub const MAX_FRAMES: usize = 64;

/// Bytes of frames copied together, so that small messages (the usual)
/// leave as one iovec rather than two tiny ones each, which the kernel
/// walks one by one. Larger payloads are pointed to, not copied.
const COPY_BUFFER: usize = 8 << 10;
const COPY_AT_MOST: usize = 1 << 10;

/// What a socket took of the frames offered to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Sent {
    /// The frames taken from those offered, from the first: as many as
    /// fitted one `sendmsg`.
    pub taken: usize,
    /// Of those, the frames that went out whole.
    pub whole: usize,
    /// Bytes of the frame after them that went out, where the socket took
    /// part of it: its rest must go before anything else.
    pub part: u32,
}

impl Sent {
    /// The socket took less than it was given: it is full (a slow
    /// reader) or failed.
    pub fn fell_short(&self) -> bool {
        self.whole < self.taken
    }
}

/// Writes `msgs` (as many as fit: at most [`MAX_FRAMES`]) as unmasked
/// frames, a server's, in one `sendmsg` that does not wait. A full socket
/// or a failed one takes nothing: the connection's task then writes them
/// and finds out which.
pub fn send<'a>(socket: PlainSocket, msgs: impl Iterator<Item = &'a Message>) -> Sent {
    let mut frames = Frames::new();
    for msg in msgs.take(MAX_FRAMES) {
        if !frames.add(msg) {
            break;
        }
    }
    let taken = frames.count;
    // A failed socket takes nothing here; its task finds out why.
    let mut written = frames.send(socket).unwrap_or(0);
    for (i, frame) in frames.lens().enumerate() {
        if written < frame {
            return Sent {
                taken,
                whole: i,
                part: written as u32,
            };
        }
        written -= frame;
    }
    Sent {
        taken,
        whole: taken,
        part: 0,
    }
}

/// Frames gathered for one `sendmsg`: headers and small payloads copied
/// into one buffer, larger payloads pointed to.
struct Frames<'a> {
    /// Initialised up to `used`. Not zeroed first: it is on the stack of
    /// every flush.
    buffer: MaybeUninit<[u8; COPY_BUFFER]>,
    used: usize,
    /// What the `sendmsg` sends, in order: initialised up to
    /// `segment_count`, and likewise `lens` (each frame's length) up to
    /// `count`. None of these arrays is zeroed first.
    segments: [MaybeUninit<Segment<'a>>; 2 * MAX_FRAMES],
    segment_count: usize,
    lens: [MaybeUninit<usize>; MAX_FRAMES],
    count: usize,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    /// Bytes of the buffer, from and to.
    Copied(usize, usize),
    Payload(&'a [u8]),
}

impl<'a> Frames<'a> {
    fn new() -> Self {
        Frames {
            buffer: MaybeUninit::uninit(),
            used: 0,
            segments: [const { MaybeUninit::uninit() }; 2 * MAX_FRAMES],
            segment_count: 0,
            lens: [const { MaybeUninit::uninit() }; MAX_FRAMES],
            count: 0,
        }
    }

    /// Adds a frame, unless the buffer has no room for its header.
    fn add(&mut self, msg: &'a Message) -> bool {
        let mut header = Header::default();
        let head = header.encode(msg);
        let payload = msg.payload().1;
        if self.used + head > COPY_BUFFER {
            return false;
        }
        self.copy(header.as_bytes());
        if payload.len() <= COPY_AT_MOST && self.used + payload.len() <= COPY_BUFFER {
            self.copy(payload);
        } else {
            self.push(Segment::Payload(payload));
        }
        self.lens[self.count].write(head + payload.len());
        self.count += 1;
        true
    }

    /// Appends bytes to the buffer, and to its last segment if that ends
    /// where they start.
    fn copy(&mut self, bytes: &[u8]) {
        let start = self.used;
        assert!(start + bytes.len() <= COPY_BUFFER);
        // SAFETY: within the buffer (checked above); the bytes are not in it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buffer.as_mut_ptr().cast::<u8>().add(start),
                bytes.len(),
            );
        }
        self.used += bytes.len();
        let last = self.segment_count.checked_sub(1).map(|i| {
            // SAFETY: below `segment_count`, so initialised.
            unsafe { self.segments[i].assume_init_mut() }
        });
        match last {
            Some(Segment::Copied(_, end)) if *end == start => *end = self.used,
            _ => self.push(Segment::Copied(start, self.used)),
        }
    }

    fn push(&mut self, segment: Segment<'a>) {
        self.segments[self.segment_count].write(segment);
        self.segment_count += 1;
    }

    /// Each frame's length.
    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.lens[..self.count].iter().map(|len| {
            // SAFETY: below `count`, so initialised.
            unsafe { len.assume_init() }
        })
    }

    /// One `sendmsg` of every segment, or one `send` of the buffer where
    /// that is all there is (a fan-out's one small frame per connection):
    /// the kernel's `sendmsg` first copies in and checks the message
    /// header and its iovecs, and a fan-out to 10,000 cost about 4% more
    /// server CPU with it (BENCHMARKS.md). The bytes it took.
    fn send(&self, socket: PlainSocket) -> io::Result<usize> {
        let base = self.buffer.as_ptr().cast::<u8>();
        if let [segment] = &self.segments[..self.segment_count]
            // SAFETY: below `segment_count`, so initialised.
            && let Segment::Copied(from, to) = unsafe { segment.assume_init() }
        {
            return retry_interrupted(|| {
                // SAFETY: within the buffer's initialised part; the socket
                // is open (see `PlainSocket`).
                unsafe {
                    libc::send(
                        socket.0,
                        base.add(from).cast(),
                        to - from,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                }
            });
        }
        let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; 2 * MAX_FRAMES];
        for (slot, segment) in iov.iter_mut().zip(&self.segments[..self.segment_count]) {
            // SAFETY: below `segment_count`, so initialised.
            slot.write(match unsafe { segment.assume_init() } {
                Segment::Copied(from, to) => libc::iovec {
                    // SAFETY: within the buffer's initialised part.
                    iov_base: unsafe { base.add(from) } as *mut libc::c_void,
                    iov_len: to - from,
                },
                Segment::Payload(payload) => libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                },
            });
        }
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = iov.as_mut_ptr().cast();
        message.msg_iovlen = self.segment_count as _;
        retry_interrupted(|| {
            // SAFETY: the first `segment_count` iovecs are initialised and
            // point into the buffer's initialised part
            // and the messages' payloads, all alive for the call; the
            // socket is open (see `PlainSocket`).
            unsafe { libc::sendmsg(socket.0, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }
        })
    }
}

/// A send call's bytes taken, tried again if a signal interrupted it.
fn retry_interrupted(mut send: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let sent = send();
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A final, unmasked text or binary frame's header (RFC 6455 §5.2): at
/// most 2 bytes and a 64-bit length.
#[derive(Debug, Default)]
pub struct Header {
    bytes: [u8; 10],
    len: usize,
}

impl Header {
    /// Encodes the header of `msg`'s frame; its length.
    pub fn encode(&mut self, msg: &Message) -> usize {
        let (binary, payload) = msg.payload();
        let len = payload.len();
        self.bytes[0] = 0x80 | if binary { 0x2 } else { 0x1 };
        self.len = if len < 126 {
            self.bytes[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            self.bytes[1] = 126;
            self.bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            self.bytes[1] = 127;
            self.bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        self.len
    }

    /// The header as encoded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use bytes::Bytes;

    use super::*;

    fn header(binary: bool, len: usize) -> Vec<u8> {
        let payload = Bytes::from(vec![0u8; len]);
        let msg = if binary {
            Message::Binary(payload)
        } else {
            Message::text(String::from_utf8(payload.to_vec()).unwrap())
        };
        let mut header = Header::default();
        header.encode(&msg);
        header.as_bytes().to_vec()
    }

    fn frame(msg: &Message) -> Vec<u8> {
        let mut header = Header::default();
        header.encode(msg);
        let mut frame = header.as_bytes().to_vec();
        frame.extend_from_slice(msg.payload().1);
        frame
    }

    #[test]
    fn headers_take_the_shortest_length_that_fits() {
        assert_eq!(header(false, 0), [0x81, 0]);
        assert_eq!(header(true, 125), [0x82, 125]);
        assert_eq!(header(false, 126), [0x81, 126, 0, 126]);
        assert_eq!(header(false, 65535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(header(true, 65536), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn frames_go_out_whole_in_one_write() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let msgs = [
            Message::text("hello"),
            Message::Binary(Bytes::from_static(b"\x01")),
        ];
        let sent = send(PlainSocket(ours.as_raw_fd()), msgs.iter());
        assert_eq!(
            sent,
            Sent {
                taken: 2,
                whole: 2,
                part: 0
            }
        );
        let mut got = [0u8; 10];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x81\x05hello\x82\x01\x01");
    }

    /// Small frames are copied together, larger payloads pointed to, and
    /// what arrives is every frame, in order, up to `MAX_FRAMES` of them.
    #[test]
    fn small_and_large_frames_leave_together_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let msgs: Vec<Message> = (0..MAX_FRAMES + 1)
            .map(|i| match i % 3 {
                0 => Message::text(format!("m{i}")),
                1 => Message::Binary(Bytes::from(vec![i as u8; COPY_AT_MOST + 1])),
                _ => Message::Binary(Bytes::from(vec![i as u8; 300])),
            })
            .collect();
        let sent = send(PlainSocket(ours.as_raw_fd()), msgs.iter());
        assert_eq!(
            sent,
            Sent {
                taken: MAX_FRAMES,
                whole: MAX_FRAMES,
                part: 0
            }
        );
        drop(ours);
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).unwrap();
        let expected: Vec<u8> = msgs[..MAX_FRAMES].iter().flat_map(frame).collect();
        assert!(all == expected);
    }

    /// Frames stop being taken where their headers no longer fit the copy
    /// buffer, and the rest are left for the next write.
    #[test]
    fn frames_are_taken_while_the_buffer_has_room() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let msgs: Vec<Message> = (0..10)
            .map(|_| Message::Binary(Bytes::from(vec![1u8; 1020])))
            .collect();
        let sent = send(PlainSocket(ours.as_raw_fd()), msgs.iter());
        // Each frame is 1,024 bytes (a 4-byte header), copied: eight fill
        // the 8 KiB, and the ninth's header has no room.
        assert_eq!(sent.taken, 8);
        assert!(!sent.fell_short());
    }

    /// A socket that is full takes part of the frames, then nothing: it
    /// says how much of the frame it stopped in went, and what went out
    /// plus that frame's rest is the frames it took.
    #[test]
    fn a_full_socket_says_how_much_of_a_frame_went() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let small = Message::text("first");
        let big = Message::Binary(Bytes::from(vec![7u8; 4 << 20]));
        let msgs = [small.clone(), big.clone(), Message::text("never")];
        let sent = send(PlainSocket(ours.as_raw_fd()), msgs.iter());
        assert_eq!(
            sent.whole, 1,
            "the first frame went whole, the 4 MiB one not"
        );
        assert!(sent.part > 0, "part of the big frame went");
        assert_eq!(
            send(PlainSocket(ours.as_raw_fd()), msgs[2..].iter()),
            Sent {
                taken: 1,
                whole: 0,
                part: 0
            }
        );
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        let mut ours = ours;
        std::io::Write::write_all(&mut ours, &frame(&big)[sent.part as usize..]).unwrap();
        drop(ours);
        let all = reader.join().unwrap();
        let mut expected = frame(&small);
        expected.extend_from_slice(&frame(&big));
        assert_eq!(all.len(), expected.len());
        assert!(all == expected);
    }
}
