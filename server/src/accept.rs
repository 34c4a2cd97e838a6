//! What the listeners accept, beyond what axum-server does by itself: a
//! cap on the connections a listener holds at once, HTTP/1.1 only, and
//! telling a plain-TCP connection's requests its socket.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Extension;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;

use crate::protocol::direct::PlainSocket;

/// A cap on connections: each accepted stream carries a permit until it
/// closes, and past the cap a new connection is closed at once, so idle or
/// trickling sockets can never pile up on a listener meant for a handful
/// of operators (the admin API).
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for ConnectionCap {
    type Stream = Capped;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Capped, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok((
                Capped {
                    stream,
                    _permit: permit,
                },
                service,
            )),
            // Dropping the stream closes it.
            Err(_) => Err(io::Error::other("connection cap reached")),
        })
    }
}

/// An accepted stream holding its place under the cap.
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// HTTP/1.1 only, WebSocket upgrades included: a connection that opens with
/// the HTTP/2 preface is closed. hyper's automatic protocol detection would
/// serve it (with prior knowledge, and over TLS whatever ALPN said), and
/// its `http1_only` setting is ignored where upgrades are on. HTTP/2 would
/// be one more protocol for clients to hold connections open with.
#[derive(Clone)]
pub struct Http1Only<A>(pub A);

impl<A, I, S> Accept<I, S> for Http1Only<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = NoPreface<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((NoPreface { stream, matched: 0 }, service))
        })
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first bytes must not be the HTTP/2 preface.
pub struct NoPreface<S> {
    stream: S,
    /// Bytes of the preface seen so far; past its length once a byte
    /// differed (nothing more to check).
    matched: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for NoPreface<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        for &byte in &buf.filled()[before..] {
            if this.matched >= H2_PREFACE.len() {
                break;
            }
            if byte != H2_PREFACE[this.matched] {
                this.matched = usize::MAX;
                break;
            }
            this.matched += 1;
            if this.matched == H2_PREFACE.len() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "HTTP/2 is not served here",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoPreface<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Tells a connection's requests its socket, where the listener is plain
/// TCP: a WebSocket on it may then be written to straight from a flusher
/// of corked deliveries ([`PlainSocket`]). Not for TLS, whose stream only
/// the connection's task may write.
#[derive(Clone)]
pub struct PlainSockets<A>(pub A);

impl<A, S> Accept<TcpStream, S> for PlainSockets<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Unpin,
{
    type Stream = A::Stream;
    type Service = <Extension<PlainSocket> as Layer<A::Service>>::Service;
    type Future = WithSocket<A::Future>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let socket = PlainSocket(stream.as_raw_fd());
        WithSocket {
            accepted: self.0.accept(stream, service),
            socket,
        }
    }
}

/// An accept under way, and the socket its service will tell requests.
/// Not boxed: every connection makes one, during its handshake.
pub struct WithSocket<F> {
    accepted: F,
    socket: PlainSocket,
}

impl<F, St, Sv> Future for WithSocket<F>
where
    F: Future<Output = io::Result<(St, Sv)>> + Unpin,
{
    type Output = io::Result<(St, <Extension<PlainSocket> as Layer<Sv>>::Service)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (stream, service) = ready!(Pin::new(&mut this.accepted).poll(cx))?;
        Poll::Ready(Ok((stream, Extension(this.socket).layer(service))))
    }
}
