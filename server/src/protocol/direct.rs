//! Deliveries written straight into an idle client's socket by whoever
//! delivers them, as uWebSockets writes a publish from its own loop.
//!
//! Otherwise a fan-out to N connections wakes N tasks, and each polls its
//! socket, queue and timer to write one frame: at 10,000 subscribers that
//! cost about as much CPU as the sends themselves (perf, BENCHMARKS.md).
//!
//! Only where nothing else can be writing to the socket at the same time:
//! - a plain TCP connection without permessage-deflate (TLS and deflate
//!   keep state only the connection's task may touch);
//! - while the connection's task is parked with nothing queued, buffered
//!   or owed: the queue's gate (`registry::queue`) is open only then, and
//!   the task shuts it before it touches the socket again;
//! - one whole frame at a time. A socket that takes part of a frame leaves
//!   the rest to the task, which writes it before anything else.

use std::io;
use std::os::fd::RawFd;

use bytes::{BufMut, Bytes, BytesMut};

use super::Message;

/// The socket of a plain (not TLS) connection, as it was accepted: where a
/// delivery may be written when the gate is open. Only ever used while
/// the connection's task holds the socket open (the gate is shut for good
/// before the socket is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainSocket(pub RawFd);

/// What became of a frame offered to a socket.
#[derive(Debug)]
pub enum Sent {
    /// All of it is in the socket.
    All,
    /// Part of it is; this is the rest, which must go next.
    Part(Bytes),
    /// None of it: the socket is full (a slow reader) or failed. The
    /// connection's task writes it instead, and finds out which.
    Nothing,
}

/// Writes `msg` as one unmasked frame (a server's) without waiting.
pub fn send(socket: PlainSocket, msg: &Message) -> Sent {
    let (binary, payload) = msg.payload();
    let mut header = [0u8; MAX_HEADER];
    let head = encode_header(&mut header, binary, payload.len());
    let iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: head,
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = iov.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = iov.len() as _;
    let written = loop {
        // SAFETY: the iovecs point into `header` and `payload`, both alive
        // for the call; the socket is open (see `PlainSocket`).
        let n =
            unsafe { libc::sendmsg(socket.0, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Sent::Nothing;
        }
    };
    let total = head + payload.len();
    if written == total {
        Sent::All
    } else if written == 0 {
        Sent::Nothing
    } else if written >= head {
        Sent::Part(msg.bytes().slice(written - head..))
    } else {
        let mut rest = BytesMut::with_capacity(total - written);
        rest.put_slice(&header[written..head]);
        rest.put_slice(payload);
        Sent::Part(rest.freeze())
    }
}

/// The longest header a server frame has: 2 bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// A final, unmasked text or binary frame's header (RFC 6455 §5.2); its
/// length.
fn encode_header(header: &mut [u8; MAX_HEADER], binary: bool, len: usize) -> usize {
    header[0] = 0x80 | if binary { 0x2 } else { 0x1 };
    if len < 126 {
        header[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn header(binary: bool, len: usize) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER];
        let n = encode_header(&mut header, binary, len);
        header[..n].to_vec()
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
    fn a_frame_goes_out_whole() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let sent = send(PlainSocket(ours.as_raw_fd()), &Message::text("hello"));
        assert!(matches!(sent, Sent::All));
        let mut got = [0u8; 7];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x81\x05hello");
    }

    /// A socket that is full takes part of a frame, then nothing: the rest
    /// is handed back, and what went out plus the rest is the frame.
    #[test]
    fn a_full_socket_hands_back_the_rest() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let payload = Bytes::from(vec![7u8; 4 << 20]);
        let msg = Message::Binary(payload.clone());
        let rest = match send(PlainSocket(ours.as_raw_fd()), &msg) {
            Sent::Part(rest) => rest,
            other => panic!("a 4 MiB frame fitted a socket pair's buffer: {other:?}"),
        };
        assert!(matches!(
            send(PlainSocket(ours.as_raw_fd()), &msg),
            Sent::Nothing
        ));
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        let mut ours = ours;
        std::io::Write::write_all(&mut ours, &rest).unwrap();
        drop(ours);
        let all = reader.join().unwrap();
        let mut frame = header(true, payload.len());
        frame.extend_from_slice(&payload);
        assert_eq!(all.len(), frame.len());
        assert!(all == frame);
    }
}
