//! A response body as the plugin reads it: no more than
//! `outbound.http.max_response_bytes`, no longer a wait between two pieces
//! than `outbound.http.timeout`, and nothing past the hook's deadline. The
//! body is pulled only as the plugin reads, so a byte cap here is a cap on
//! what the server holds for it too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use wasmtime_wasi_http::Error;

use super::exchange::{Exchange, Outcome};
use super::send::Steps;

pub struct CappedBody {
    inner: hyper::body::Incoming,
    read: u64,
    cap: u64,
    steps: Steps,
    /// When the next piece must have come.
    timer: Pin<Box<Sleep>>,
    exchange: Arc<Exchange>,
    /// Ended (at its end, or failed): nothing more is read.
    done: bool,
}

impl CappedBody {
    pub fn new(
        inner: hyper::body::Incoming,
        cap: u64,
        steps: Steps,
        exchange: Arc<Exchange>,
    ) -> CappedBody {
        CappedBody {
            inner,
            read: 0,
            cap,
            timer: Box::pin(tokio::time::sleep_until(steps.between_bytes())),
            steps,
            exchange,
            done: false,
        }
    }

    fn fail(
        &mut self,
        outcome: Outcome,
        error: Error,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.done = true;
        self.exchange.finish(outcome, &error.to_string());
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.read > self.cap {
                        let cap = self.cap;
                        return self
                            .fail(Outcome::TooLarge, Error::HttpResponseBodySize(Some(cap)));
                    }
                }
                let next = self.steps.between_bytes();
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let (outcome, code) = super::send::response_error(&e);
                self.fail(outcome, code.into())
            }
            Poll::Ready(None) => {
                self.done = true;
                self.exchange.finish(Outcome::Ok, "");
                Poll::Ready(None)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => self.fail(Outcome::Timeout, Error::ConnectionReadTimeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CappedBody {
    /// The plugin let go of the body: a response it had, however much of
    /// it it read.
    fn drop(&mut self) {
        self.exchange.finish(Outcome::Ok, "");
    }
}
