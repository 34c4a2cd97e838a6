//! One upstream: the handle host calls queue into ([`Link`]) and the task
//! that owns its socket ([`run`]). The task connects within the connect
//! timeout, tells the plugin it is open, then runs the conversation on the
//! same [`Wire`] as a client connection: the same queue bounds, pings,
//! idle deadline and close handshake. Each message it reads is handed to
//! the plugin's hook before the next is read, so an upstream is read no
//! faster than the plugin takes its messages in, and they arrive in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use yawc::{Options, WebSocket};

use super::connect::{self, Failure, Stream};
use super::request::UpstreamRequest;
use super::{CallError, UpstreamEvent, UpstreamId, Upstreams};
use crate::outbound::{Destination, OutboundPolicy};
use crate::protocol::wire::{Event, Peer, Wire};
use crate::protocol::{CloseCode, CloseFrame, Incoming, Message, Socket};
use crate::registry::{AlarmTime, Outbound, PushError, Queue, QueueSender};

/// The host's side of one upstream, shared by host calls and its task.
pub(super) struct Link {
    pub id: UpstreamId,
    tx: QueueSender,
    /// How long an orderly close may wait behind what is queued.
    close_timeout: Duration,
    /// The handshake is done: a close now goes through the queue.
    opened: AtomicBool,
    /// Set once the plugin or the host decided to close: nothing more is
    /// queued.
    closing: AtomicBool,
    /// Cancelled when the upstream must stop connecting, close now (with
    /// its queue aborted), or once its close frame is going out.
    shutdown: CancellationToken,
    /// The code and reason the host (or the plugin) closed with.
    close_reason: Mutex<Option<CloseFrame>>,
}

impl Link {
    pub fn new(id: UpstreamId, tx: QueueSender, close_timeout: Duration) -> Link {
        Link {
            id,
            tx,
            close_timeout,
            opened: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            close_reason: Mutex::new(None),
        }
    }

    /// Queues a message. A full queue is the plugin's to handle: unlike a
    /// client that stops reading, an upstream is the plugin's own choice,
    /// so it is not closed for it.
    pub fn send(&self, msg: Message) -> Result<(), CallError> {
        if self.is_closing() {
            return Err(CallError::Closed);
        }
        self.tx.push(Outbound::Data(msg)).map_err(|e| match e {
            PushError::Full => CallError::QueueFull,
            PushError::Gone => CallError::Closed,
        })
    }

    /// Starts an orderly close: what is queued goes out first, within the
    /// close timeout; an upstream that has not taken it by then (it stopped
    /// reading) is closed at once. One still connecting stops connecting.
    pub fn close(&self, frame: CloseFrame) -> Result<(), CallError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Err(CallError::Closed);
        }
        self.set_close_reason(&frame);
        if !self.opened.load(Ordering::Acquire) || self.tx.push(Outbound::Close(frame)).is_err() {
            self.cut();
            return Ok(());
        }
        let shutdown = self.shutdown.clone();
        let tx = self.tx.clone();
        let wait = self.close_timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    shutdown.cancel();
                    tx.abort();
                }
            }
        });
        Ok(())
    }

    /// Closes now, ahead of the queue: the plugin went away, or the server.
    pub fn abort(&self, frame: CloseFrame) {
        self.closing.store(true, Ordering::Release);
        self.set_close_reason(&frame);
        self.cut();
    }

    /// Stops connecting, or closes now, ahead of the queue.
    fn cut(&self) {
        self.shutdown.cancel();
        self.tx.abort();
    }

    fn set_close_reason(&self, frame: &CloseFrame) {
        let mut slot = self.close_reason.lock().unwrap();
        if slot.is_none() {
            *slot = Some(frame.clone());
        }
    }
}

impl Peer for Link {
    fn id(&self) -> u64 {
        self.id
    }

    fn close_started(&self) {
        self.shutdown.cancel();
    }

    fn close_reason(&self) -> Option<CloseFrame> {
        self.close_reason.lock().unwrap().clone()
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn close(&self, code: CloseCode, reason: &str) {
        let _ = Link::close(self, CloseFrame::new(code, reason));
    }

    fn abort(&self, code: CloseCode, reason: &str) {
        Link::abort(self, CloseFrame::new(code, reason));
    }
}

/// What the task needs to open the upstream.
pub(super) struct Dial {
    pub request: UpstreamRequest,
    pub dest: Destination,
    pub policy: OutboundPolicy,
}

/// The upstream's whole life: connect, converse, close, and the plugin
/// told of each step.
pub(super) async fn run(upstreams: Arc<Upstreams>, link: Arc<Link>, queue: Queue, dial: Dial) {
    let id = link.id;
    let over = match connect(&upstreams, &link, &dial).await {
        Ok(ws) => {
            link.opened.store(true, Ordering::Release);
            converse(&upstreams, link.clone(), queue, ws).await
        }
        Err(None) => link
            .close_reason()
            .unwrap_or_else(|| CloseFrame::new(CloseCode::GOING_AWAY, "")),
        Err(Some(failure)) => {
            upstreams.metrics.connect_failed(failure.kind());
            tracing::debug!(plugin = %upstreams.plugin, upstream = id, dest = %dial.dest,
                "upstream did not open: {}", failure.reason());
            CloseFrame::new(CloseCode::ABNORMAL, failure.reason())
        }
    };
    upstreams.forget(id);
    upstreams.deliver(id, UpstreamEvent::Close(over)).await;
}

/// Opens the upstream within the connect timeout; `Err(None)` when it was
/// closed meanwhile.
async fn connect(
    upstreams: &Upstreams,
    link: &Link,
    dial: &Dial,
) -> Result<WebSocket<Stream>, Option<Failure>> {
    let settings = &upstreams.settings;
    // No compression: it costs CPU and memory per upstream, and mixing a
    // plugin's secrets with what others send leaks them (CRIME).
    let options = Options::default()
        .with_max_payload_read(settings.max_message_size.saturating_add(1))
        .with_read_buffer_capacity(4096)
        .with_write_buffer_capacity(4096)
        .with_no_delay();
    let dialing = connect::dial(
        &dial.request,
        &dial.dest,
        &dial.policy,
        &settings.tls,
        options,
    );
    tokio::select! {
        _ = link.shutdown.cancelled() => Err(None),
        dialed = tokio::time::timeout(settings.connect_timeout, dialing) => match dialed {
            Ok(result) => result.map_err(Some),
            Err(_) => Err(Some(Failure::Timeout)),
        },
    }
}

async fn converse(
    upstreams: &Upstreams,
    link: Arc<Link>,
    queue: Queue,
    ws: WebSocket<Stream>,
) -> CloseFrame {
    let settings = &upstreams.settings;
    let id = link.id;
    let socket = Socket::new(ws, settings.max_message_size, upstreams.reassembly.clone());
    let mut wire = Wire::new(
        socket,
        queue,
        link,
        settings.timeouts.ping_interval,
        settings.timeouts.clone(),
        upstreams.metrics.sent.clone(),
    );
    let over = talk(upstreams, id, &mut wire).await;
    Box::pin(wire.finish()).await;
    if over.code == CloseCode::ABNORMAL && over.reason.is_empty() {
        return CloseFrame::new(CloseCode::ABNORMAL, "connection lost");
    }
    over
}

async fn talk(upstreams: &Upstreams, id: UpstreamId, wire: &mut Wire<Link, Stream>) -> CloseFrame {
    let mut opened = Box::pin(upstreams.deliver(id, UpstreamEvent::Open));
    if let Err(over) = wire.while_running(opened.as_mut()).await {
        return over;
    }
    drop(opened);
    loop {
        let event = match wire.next_event().await {
            Ok(event) => event,
            Err(over) => return over,
        };
        let handled = match event {
            Event::Frame(next) => {
                wire.last_frame = AlarmTime::from_std(Instant::now());
                match next {
                    None => Err(wire.over(CloseCode::ABNORMAL)),
                    Some(Err(e)) => Err(wire.read_error(e)),
                    Some(Ok(Incoming::Close(peer))) => {
                        Err(wire.peer.close_reason().unwrap_or_else(|| {
                            peer.unwrap_or_else(|| CloseFrame::new(CloseCode::NO_STATUS, ""))
                        }))
                    }
                    Some(Ok(Incoming::Control)) => Ok(()),
                    // Data after the host started closing is discarded
                    // (RFC 6455 §5.5.1).
                    Some(Ok(Incoming::Data(_))) if wire.peer.is_closing() => Ok(()),
                    Some(Ok(Incoming::Data(msg))) => {
                        upstreams.metrics.received.count(msg.len());
                        let mut hook = Box::pin(upstreams.deliver(id, UpstreamEvent::Message(msg)));
                        match wire.while_running(hook.as_mut()).await {
                            Ok(()) => wire.write_queued().await,
                            Err(over) => Err(over),
                        }
                    }
                }
            }
            Event::Wake(wake) => wire.on_wake(wake).await,
        };
        if let Err(over) = handled {
            return over;
        }
    }
}
