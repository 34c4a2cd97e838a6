//! A WebSocket client that speaks frames byte by byte, for attacks a real
//! client library would never send: floods of pings it never reads the
//! pongs of, messages it never finishes, reserved bits, oversized control
//! frames.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

/// One client frame: FIN, RSV1, opcode, masked payload.
pub fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x17, 0xc3, 0x81];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A text frame's opcode and payload, for [`RawWs::pipeline`].
pub fn text(s: &str) -> (u8, Vec<u8>) {
    (TEXT, s.as_bytes().to_vec())
}

/// Payloads as text, to compare with what was sent.
pub fn texts(frames: &[(u8, Vec<u8>)]) -> Vec<String> {
    frames
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// A server frame as read back: FIN, opcode, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub struct RawWs {
    pub stream: TcpStream,
}

impl RawWs {
    /// Connects to `path` on `port` and completes the handshake with
    /// `extra` headers (each a full `Name: value` line).
    pub async fn connect(port: u16, path: &str, extra: &[&str]) -> std::io::Result<RawWs> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        RawWs::upgrade(stream, port, path, extra).await
    }

    /// Like [`RawWs::connect`], with a receive buffer of `recv` bytes: a
    /// client that never reads fills it at once.
    pub async fn connect_small(port: u16, path: &str, recv: u32) -> std::io::Result<RawWs> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(recv)?;
        let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
        RawWs::upgrade(stream, port, path, &[]).await
    }

    async fn upgrade(
        mut stream: TcpStream,
        port: u16,
        path: &str,
        extra: &[&str],
    ) -> std::io::Result<RawWs> {
        stream
            .write_all(handshake(port, path, extra).as_bytes())
            .await?;
        let head = read_head(&mut stream).await?;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(std::io::Error::other(format!("no upgrade: {head}")));
        }
        Ok(RawWs { stream })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Every frame of `frames` (opcode, payload) in one write, so that they
    /// arrive as one burst.
    pub async fn pipeline(&mut self, frames: &[(u8, Vec<u8>)]) {
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|(opcode, payload)| frame(true, false, *opcode, payload))
            .collect();
        self.send(&bytes).await.unwrap();
    }

    /// The next `n` frames (opcode, payload) but the server's pings, each
    /// within `wait`: a slow run may reach the ping interval mid-burst.
    pub async fn read_frames(&mut self, n: usize, wait: Duration) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            let frame = self
                .read_frame(wait)
                .await
                .unwrap_or_else(|| panic!("reply {} of {n}", frames.len()));
            if frame.opcode != PING {
                frames.push((frame.opcode, frame.payload));
            }
        }
        frames
    }

    /// The next frame from the server, or `None` at end of stream or after
    /// `wait` without one.
    pub async fn read_frame(&mut self, wait: Duration) -> Option<ServerFrame> {
        tokio::time::timeout(wait, read_frame(&mut self.stream))
            .await
            .ok()?
            .ok()
    }

    /// Whether the server closed the connection within `wait`: its close
    /// code (`Some(None)` when it just dropped it), or `None` while it
    /// stays open.
    pub async fn closed(&mut self, wait: Duration) -> Option<Option<u16>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, read_frame(&mut self.stream)).await {
                Err(_) => return None,
                Ok(Err(_)) => return Some(None),
                Ok(Ok(frame)) if frame.opcode == CLOSE => return Some(frame.close_code()),
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Reads frames until a close frame arrives (its code) or the stream
    /// ends (`None`), for at most `wait`.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.read_frame(left).await?;
            if frame.opcode == CLOSE {
                return frame.close_code();
            }
        }
    }
}

/// An upgrade request for `path`.
pub fn handshake(port: u16, path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// The response head, up to the blank line.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<ServerFrame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).await?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).await?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(ServerFrame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
    })
}
