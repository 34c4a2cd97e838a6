//! A TCP stream for a WebSocket client handshake after which the client
//! takes the stream back and reads the frames itself.
//!
//! tungstenite keeps whatever it read past the handshake response in its
//! own buffer, and `WebSocketStream::into_inner` drops that buffer: a frame
//! the server sent right after its response (a join notice, say) would be
//! lost, or worse, cut in half. So during the handshake this stream never
//! hands tungstenite a byte past the end of the response headers (it peeks
//! first); the frames stay in the socket for the new reader.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The end of the response headers (a 101 response has no body).
const END: &[u8; 4] = b"\r\n\r\n";

pub struct HeadersOnly {
    stream: TcpStream,
    /// How many bytes of [`END`] the bytes read so far end with.
    matched: usize,
}

impl HeadersOnly {
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, matched: 0 }
    }

    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

/// Moves the [`END`] matcher over `bytes`: the number of them up to and
/// including the end of the headers (all if it is not among them), and the
/// new match state.
fn scan(mut matched: usize, bytes: &[u8]) -> (usize, usize) {
    for (k, &b) in bytes.iter().enumerate() {
        matched = if b == END[matched] {
            matched + 1
        } else {
            // "\r\n\r\n" only restarts on a '\r'.
            usize::from(b == b'\r')
        };
        if matched == END.len() {
            return (k + 1, matched);
        }
    }
    (bytes.len(), matched)
}

impl AsyncRead for HeadersOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.matched == END.len() {
            // The handshake is over: whoever reads now reads frames.
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let mut space = [0u8; 1024];
        let want = buf.remaining().min(space.len());
        let mut peeked = ReadBuf::new(&mut space[..want]);
        ready!(self.stream.poll_peek(cx, &mut peeked))?;
        let (take, _) = scan(self.matched, peeked.filled());
        if take == 0 {
            return Poll::Ready(Ok(())); // end of stream
        }
        // The peeked bytes are in the socket: reading no more than them
        // takes exactly what was scanned.
        let mut got = ReadBuf::new(&mut space[..take]);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut got))?;
        let (_, matched) = scan(self.matched, got.filled());
        self.matched = matched;
        buf.put_slice(got.filled());
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadersOnly {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn scan_stops_at_the_end_of_the_headers() {
        assert_eq!(scan(0, b"HTTP/1.1 101\r\nA: b\r\n\r\nFRAME"), (22, 4));
        assert_eq!(scan(0, b"HTTP/1.1 101\r\n"), (14, 2));
        assert_eq!(scan(2, b"\r\nX"), (2, 4));
        assert_eq!(scan(3, b"\r\n"), (2, 2));
        assert_eq!(scan(1, b"\r\r\n\r\n!"), (5, 4));
    }

    /// Headers and a frame arriving together, in dribs: the reader gets the
    /// headers and nothing more; the frame stays in the stream.
    #[tokio::test]
    async fn never_reads_past_the_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b"\n\r\n\x81\x02hi").await.unwrap();
            s
        });
        let mut h = HeadersOnly::new(TcpStream::connect(addr).await.unwrap());
        let mut headers = Vec::new();
        let mut buf = [0u8; 4096];
        while !headers.ends_with(b"\r\n\r\n") {
            let n = h.read(&mut buf).await.unwrap();
            assert!(n > 0);
            headers.extend_from_slice(&buf[..n]);
        }
        assert_eq!(headers, b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n");
        let _server = server.await.unwrap();
        let mut rest = [0u8; 4];
        h.into_inner().read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x81\x02hi");
    }
}
