//! One open WebSocket connection as the rest of the server sees it: a queue
//! to write into and its session data. The socket itself is owned by the
//! protocol task; nobody else ever touches it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::protocol::{CloseCode, CloseFrame, Message};
use futures_channel::mpsc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

pub type ConnId = u64;

/// What the writer task takes from a connection's queue.
#[derive(Debug)]
pub enum Outbound {
    Data(Message),
    /// Send a close frame after everything queued before it.
    Close(CloseFrame),
}

impl Outbound {
    /// The bytes it holds, as the queue's byte bound counts them.
    fn weight(&self) -> usize {
        match self {
            Outbound::Data(msg) => msg.len(),
            Outbound::Close(frame) => frame.reason.len() + 2,
        }
    }
}

/// How much one connection's queue may hold: items and payload bytes. A
/// shared message (a broadcast) counts in full against every queue it is
/// in, although its bytes exist once.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub items: usize,
    pub bytes: usize,
}

/// What a queue holds now.
#[derive(Debug, Default)]
struct Fill {
    items: AtomicUsize,
    bytes: AtomicUsize,
}

impl Fill {
    fn take(&self, item: &Outbound) {
        self.items.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(item.weight(), Ordering::AcqRel);
    }
}

/// The receiving end of a connection's queue, read by its session only.
///
/// Counts bound the queue, over a channel that allocates per item and
/// holds no buffer while empty: a bounded channel would keep a block of
/// slots per connection, the largest thing an idle connection owned.
#[derive(Debug)]
pub struct Queue {
    rx: mpsc::UnboundedReceiver<Outbound>,
    fill: Arc<Fill>,
}

impl Queue {
    /// The next item; `None` once every sender is gone. Cancel-safe: an
    /// item is counted out in the same poll that takes it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.next().await;
        if let Some(item) = &item {
            self.fill.take(item);
        }
        item
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok()?;
        self.fill.take(&item);
        Some(item)
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing or closed.
    Closed,
    /// The queue was full; the connection is being closed as a slow consumer.
    QueueFull,
}

#[derive(Debug)]
pub struct Connection {
    pub id: ConnId,
    /// The plugin that owns this connection; no other plugin can reach it.
    pub plugin: Arc<str>,
    /// The route pattern the connection came in on.
    pub route: Arc<str>,
    pub path: String,
    pub remote: SocketAddr,
    pub opened_at: SystemTime,
    tx: mpsc::UnboundedSender<Outbound>,
    /// What the queue holds now, and the most it may hold.
    fill: Arc<Fill>,
    capacity: QueueLimits,
    /// Set once the server has decided to close: nothing more is queued.
    closing: AtomicBool,
    /// Cancelled when the close must happen now, ahead of queued data
    /// (slow consumer, shutdown), or once the close frame has gone out.
    pub shutdown: CancellationToken,
    /// The code and reason the server closed with, reported to `on-close`.
    close_reason: Mutex<Option<CloseFrame>>,
    pub(crate) attributes: Mutex<HashMap<String, String>>,
    pub(crate) channels: Mutex<HashSet<String>>,
    pub(crate) tags: Mutex<HashSet<String>>,
}

impl Connection {
    pub fn new(
        id: ConnId,
        plugin: Arc<str>,
        route: Arc<str>,
        path: String,
        remote: SocketAddr,
        queue: QueueLimits,
    ) -> (Arc<Connection>, Queue) {
        let (tx, rx) = mpsc::unbounded();
        let fill = Arc::new(Fill::default());
        let conn = Connection {
            id,
            plugin,
            route,
            path,
            remote,
            opened_at: SystemTime::now(),
            tx,
            fill: fill.clone(),
            capacity: queue,
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            close_reason: Mutex::new(None),
            attributes: Mutex::default(),
            channels: Mutex::default(),
            tags: Mutex::default(),
        };
        (Arc::new(conn), Queue { rx, fill })
    }

    /// Queues a message without waiting. A full queue means the client has
    /// stopped reading: it is closed rather than allowed to hold up senders.
    pub fn send(&self, msg: Message) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        let queued = self.push(Outbound::Data(msg));
        if queued == Err(SendError::QueueFull) {
            self.abort(CloseCode::POLICY, "send queue full");
        }
        queued
    }

    /// Queues an item if the queue has room for it, in items and bytes.
    fn push(&self, item: Outbound) -> Result<(), SendError> {
        let weight = item.weight();
        let items = self.fill.items.fetch_add(1, Ordering::AcqRel);
        let bytes = self.fill.bytes.fetch_add(weight, Ordering::AcqRel);
        if items >= self.capacity.items || bytes + weight > self.capacity.bytes {
            self.fill.take(&item);
            return Err(SendError::QueueFull);
        }
        self.tx.unbounded_send(item).map_err(|e| {
            self.fill.take(&e.into_inner());
            SendError::Closed
        })
    }

    /// Starts an orderly close: messages already queued go out first.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Err(SendError::Closed);
        }
        let frame = CloseFrame::new(code, reason);
        self.set_close_reason(&frame);
        if self.push(Outbound::Close(frame)).is_err() {
            self.shutdown.cancel();
        }
        Ok(())
    }

    /// Closes now, dropping whatever is still queued.
    pub fn abort(&self, code: CloseCode, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.set_close_reason(&CloseFrame::new(code, reason));
        self.shutdown.cancel();
    }

    /// Marks the connection closed from the client's side: no more sends.
    pub fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn set_close_reason(&self, frame: &CloseFrame) {
        let mut slot = self.close_reason.lock().unwrap();
        if slot.is_none() {
            *slot = Some(frame.clone());
        }
    }

    /// The server-side close code and reason, if the server closed first.
    pub fn close_reason(&self) -> Option<CloseFrame> {
        self.close_reason.lock().unwrap().clone()
    }

    pub fn attributes(&self) -> HashMap<String, String> {
        self.attributes.lock().unwrap().clone()
    }

    /// Whether the connection may be in one more group of `kind` (it is in
    /// `name` already, or in fewer than `cap`).
    pub fn may_join(&self, kind: super::GroupKind, name: &str, cap: usize) -> bool {
        let groups = match kind {
            super::GroupKind::Channel => self.channels.lock().unwrap(),
            super::GroupKind::Tag => self.tags.lock().unwrap(),
        };
        groups.contains(name) || groups.len() < cap
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.channels.lock().unwrap().iter().cloned().collect()
    }

    pub fn tag_names(&self) -> Vec<String> {
        self.tags.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(items: usize) -> (Arc<Connection>, Queue) {
        let limits = QueueLimits {
            items,
            bytes: 1 << 20,
        };
        conn_with(limits)
    }

    fn conn_with(limits: QueueLimits) -> (Arc<Connection>, Queue) {
        let remote = "127.0.0.1:1".parse().unwrap();
        Connection::new(1, "p".into(), "/ws".into(), "/ws".into(), remote, limits)
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let (c, mut queue) = conn_with(QueueLimits {
            items: 100,
            bytes: 10,
        });
        assert_eq!(c.send(Message::text("12345")), Ok(()));
        assert_eq!(c.send(Message::text("12345")), Ok(()));
        assert!(queue.try_recv().is_some());
        assert_eq!(c.send(Message::text("1234")), Ok(()));
        // 5 + 4 queued: two more bytes do not fit.
        assert_eq!(c.send(Message::text("12")), Err(SendError::QueueFull));
        assert_eq!(
            c.close_reason(),
            Some(CloseFrame::new(CloseCode::POLICY, "send queue full"))
        );
    }

    #[test]
    fn the_queue_is_bounded_by_what_is_in_it_now() {
        let (c, mut queue) = conn(2);
        assert_eq!(c.send(Message::text("1")), Ok(()));
        assert_eq!(c.send(Message::text("2")), Ok(()));
        // Taking one out makes room for one more.
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(m)) if m == Message::text("1")));
        assert_eq!(c.send(Message::text("3")), Ok(()));
        assert!(!c.shutdown.is_cancelled());
        // A full queue closes the connection as a slow consumer.
        assert_eq!(c.send(Message::text("4")), Err(SendError::QueueFull));
        assert!(c.shutdown.is_cancelled());
        assert_eq!(
            c.close_reason(),
            Some(CloseFrame::new(CloseCode::POLICY, "send queue full"))
        );
        assert_eq!(c.send(Message::text("5")), Err(SendError::Closed));
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(m)) if m == Message::text("2")));
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(m)) if m == Message::text("3")));
        assert!(queue.try_recv().is_none());
    }

    #[test]
    fn a_close_goes_after_the_queued_data() {
        let (c, mut queue) = conn(4);
        c.send(Message::text("bye")).unwrap();
        c.close(CloseCode::NORMAL, "done").unwrap();
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(_))));
        assert!(
            matches!(queue.try_recv(), Some(Outbound::Close(f)) if f.code == CloseCode::NORMAL)
        );
        assert!(
            !c.shutdown.is_cancelled(),
            "an orderly close does not skip the queue"
        );
    }
}
