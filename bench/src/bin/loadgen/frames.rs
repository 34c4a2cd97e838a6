//! A streaming reader of the frames a WebSocket server sends, for clients
//! that take their TCP stream back after the handshake.
//!
//! Thousands of subscribers each get a small message per round: decoding
//! them through tungstenite (a `Message` allocated per delivery) made the
//! load generator, not the server, the limit. This reader keeps no payload:
//! it hands a message's bytes on as they arrive (in pieces, across frames
//! and reads), buffers only control frames (at most 125 bytes), and accepts
//! any split of frames over reads.

use std::fmt;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What the server sent, as a subscriber needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The next bytes of a text or binary message's payload, in order (a
    /// message can come in several pieces; an empty one in none).
    Data(&'a [u8]),
    /// The end of a text or binary message (after its last `Data`).
    End,
    /// A ping, with its payload (to be answered with a pong carrying it).
    Ping(&'a [u8]),
    /// A close frame: the server is done with the connection.
    Close,
}

/// The server broke the protocol (a masked frame, a reserved bit or
/// opcode, a bad control frame or continuation).
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError(&'static str);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebSocket protocol error: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// Where the reader is within the current frame.
enum State {
    /// Collecting the header: `got` of its bytes so far.
    Header { got: usize },
    /// In the payload: this many bytes of it still to come.
    Payload { left: u64 },
}

/// Turns the bytes a server sent, in whatever pieces they were read, into
/// [`Event`]s.
pub struct FrameReader {
    state: State,
    header: [u8; 10],
    /// Opcode and FIN bit of the frame being read.
    opcode: u8,
    fin: bool,
    /// Inside a fragmented text or binary message (its first frame had no FIN).
    in_message: bool,
    /// The payload of the control frame being read.
    control: [u8; 125],
    control_len: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            state: State::Header { got: 0 },
            header: [0; 10],
            opcode: 0,
            fin: false,
            in_message: false,
            control: [0; 125],
            control_len: 0,
        }
    }
}

impl FrameReader {
    /// Reads `data`, the next bytes from the server, calling `on` for every
    /// event they complete. An error leaves the reader unusable (the
    /// connection should be dropped).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on: impl FnMut(Event<'_>),
    ) -> Result<(), FrameError> {
        loop {
            match self.state {
                State::Header { got } => {
                    let need = header_len(&self.header[..got]);
                    if got == need {
                        self.start_frame()?;
                        continue;
                    }
                    let Some((&b, rest)) = data.split_first() else {
                        return Ok(());
                    };
                    // Byte by byte: a header is 2 to 10 bytes, and its length
                    // is known only after the second.
                    self.header[got] = b;
                    data = rest;
                    self.state = State::Header { got: got + 1 };
                }
                State::Payload { left } => {
                    if left == 0 {
                        self.end_frame(&mut on);
                        continue;
                    }
                    if data.is_empty() {
                        return Ok(());
                    }
                    let n = left.min(data.len() as u64) as usize;
                    let (chunk, rest) = data.split_at(n);
                    if self.opcode & 0x8 == 0 {
                        on(Event::Data(chunk));
                    } else {
                        self.control[self.control_len..self.control_len + n].copy_from_slice(chunk);
                        self.control_len += n;
                    }
                    data = rest;
                    self.state = State::Payload {
                        left: left - n as u64,
                    };
                }
            }
        }
    }

    /// The header is complete: checks it and moves on to the payload.
    fn start_frame(&mut self) -> Result<(), FrameError> {
        let h = &self.header;
        if h[0] & 0x70 != 0 {
            return Err(FrameError("reserved bits set (no extension was agreed)"));
        }
        if h[1] & 0x80 != 0 {
            return Err(FrameError("masked frame from the server"));
        }
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 if h[2] & 0x80 != 0 => {
                return Err(FrameError("64-bit length with the top bit set"));
            }
            127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
            n => n as u64,
        };
        self.fin = h[0] & 0x80 != 0;
        self.opcode = h[0] & 0x0f;
        match self.opcode {
            OP_CONTINUATION if !self.in_message => {
                return Err(FrameError("continuation frame outside a message"));
            }
            OP_TEXT | OP_BINARY if self.in_message => {
                return Err(FrameError("new message inside a fragmented one"));
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => self.in_message = true,
            OP_CLOSE | OP_PING | OP_PONG => {
                if !self.fin || len > 125 {
                    return Err(FrameError("fragmented or oversized control frame"));
                }
                self.control_len = 0;
            }
            _ => return Err(FrameError("reserved opcode")),
        }
        // A zero-length payload ends the frame at once (in `feed`).
        self.state = State::Payload { left: len };
        Ok(())
    }

    /// The payload is complete: reports what the frame finished.
    fn end_frame(&mut self, on: &mut impl FnMut(Event<'_>)) {
        match self.opcode {
            OP_PING => on(Event::Ping(&self.control[..self.control_len])),
            OP_CLOSE => on(Event::Close),
            OP_PONG => {}
            _ if self.fin => {
                self.in_message = false;
                on(Event::End);
            }
            _ => {}
        }
        self.state = State::Header { got: 0 };
    }
}

/// The length of a frame header that starts with `h` (2 until its second
/// byte is known).
fn header_len(h: &[u8]) -> usize {
    match h.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Appends to `out` the client's pong answering a ping with `payload`.
pub fn pong(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    client_frame(OP_PONG, payload, mask, out);
}

/// Appends to `out` the client's reply to a close frame (no status).
pub fn close(mask: [u8; 4], out: &mut Vec<u8>) {
    client_frame(OP_CLOSE, &[], mask, out);
}

/// A control frame from the client (at most 125 bytes of payload), masked
/// with `mask` as every client frame must be.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= 125);
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// What the reader makes of `bytes` fed in pieces of `piece` bytes:
    /// messages (their pieces joined), pings and closes, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Message(Vec<u8>),
        Ping(Vec<u8>),
        Close,
    }

    fn read(bytes: &[u8], piece: usize) -> Result<Vec<Got>, FrameError> {
        let mut r = FrameReader::default();
        let mut out = Vec::new();
        let mut msg = Vec::new();
        for chunk in bytes.chunks(piece) {
            r.feed(chunk, |e| match e {
                Event::Data(d) => msg.extend_from_slice(d),
                Event::End => out.push(Got::Message(std::mem::take(&mut msg))),
                Event::Ping(p) => out.push(Got::Ping(p.to_vec())),
                Event::Close => out.push(Got::Close),
            })?;
        }
        Ok(out)
    }

    #[test]
    fn several_frames_in_one_read_and_split_at_every_byte() {
        let mut bytes = frame(true, OP_TEXT, b"BCAST#1#xx");
        bytes.extend(frame(true, OP_BINARY, b"bin"));
        bytes.extend(frame(true, OP_TEXT, b""));
        bytes.extend(frame(true, OP_CLOSE, &[3, 232]));
        let want = vec![
            Got::Message(b"BCAST#1#xx".to_vec()),
            Got::Message(b"bin".to_vec()),
            Got::Message(vec![]),
            Got::Close,
        ];
        for piece in [bytes.len(), 1, 2, 3, 5, 7] {
            assert_eq!(read(&bytes, piece).unwrap(), want, "pieces of {piece}");
        }
    }

    #[test]
    fn lengths_of_16_and_64_bits() {
        let mid: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut bytes = frame(true, OP_BINARY, &mid);
        assert_eq!(bytes[1], 126);
        let long = frame(true, OP_BINARY, &big);
        assert_eq!(long[1], 127);
        bytes.extend(long);
        for piece in [bytes.len(), 1000, 4096, 9] {
            assert_eq!(
                read(&bytes, piece).unwrap(),
                vec![Got::Message(mid.clone()), Got::Message(big.clone())]
            );
        }
    }

    #[test]
    fn fragmented_message_with_a_ping_between() {
        let mut bytes = frame(false, OP_TEXT, b"BCA");
        bytes.extend(frame(true, OP_PING, b"hi"));
        bytes.extend(frame(false, OP_CONTINUATION, b"ST#4"));
        bytes.extend(frame(true, OP_CONTINUATION, b"#x"));
        bytes.extend(frame(true, OP_PONG, b"ignored"));
        for piece in [bytes.len(), 1, 4] {
            assert_eq!(
                read(&bytes, piece).unwrap(),
                vec![
                    Got::Ping(b"hi".to_vec()),
                    Got::Message(b"BCAST#4#x".to_vec())
                ]
            );
        }
    }

    #[test]
    fn ping_is_answered_with_a_masked_pong() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut p = Vec::new();
        pong(b"abcde", mask, &mut p);
        assert_eq!(p[0], 0x8A, "FIN + pong");
        assert_eq!(p[1], 0x80 | 5, "masked, 5 bytes");
        assert_eq!(&p[2..6], &mask);
        let unmasked: Vec<u8> = p[6..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(unmasked, b"abcde");
        let mut p = Vec::new();
        pong(b"", mask, &mut p);
        close(mask, &mut p);
        assert_eq!(
            p,
            vec![
                0x8A, 0x80, 0x12, 0x34, 0x56, 0x78, 0x88, 0x80, 0x12, 0x34, 0x56, 0x78
            ]
        );
    }

    #[test]
    fn protocol_errors() {
        let masked = vec![0x81, 0x81, 1, 2, 3, 4, 0];
        assert!(read(&masked, 100).is_err());
        let reserved = vec![0xC1, 0];
        assert!(read(&reserved, 100).is_err());
        let lone_continuation = frame(true, OP_CONTINUATION, b"x");
        assert!(read(&lone_continuation, 100).is_err());
        let big_ping = frame(true, OP_PING, &[0; 126]);
        assert!(read(&big_ping, 100).is_err());
        let mut nested = frame(false, OP_TEXT, b"a");
        nested.extend(frame(true, OP_TEXT, b"b"));
        assert!(read(&nested, 100).is_err());
        assert!(read(&frame(true, 0x3, b""), 100).is_err());
    }
}
