//! One open WebSocket connection as the rest of the server sees it: a queue
//! to write into and its session data. The socket itself is owned by the
//! protocol task; nobody else ever touches it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::protocol::{CloseFrame, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub type ConnId = u64;

/// What the writer task takes from a connection's queue.
#[derive(Debug)]
pub enum Outbound {
    Data(Message),
    /// Send a close frame after everything queued before it.
    Close(CloseFrame),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing or closed.
    Closed,
    /// The queue was full; the connection is being closed as a slow consumer.
    QueueFull,
}

/// The close code used for a client that stops reading (policy violation).
pub const SLOW_CONSUMER: u16 = 1008;

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
    tx: mpsc::Sender<Outbound>,
    /// Set once the server has decided to close: nothing more is queued.
    closing: AtomicBool,
    /// Cancelled when the close must happen now, ahead of queued data
    /// (slow consumer, shutdown), or once the close frame has gone out.
    pub shutdown: CancellationToken,
    /// The code and reason the server closed with, reported to `on-close`.
    close_reason: Mutex<Option<(u16, String)>>,
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
        queue: usize,
    ) -> (Arc<Connection>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue);
        let conn = Connection {
            id,
            plugin,
            route,
            path,
            remote,
            opened_at: SystemTime::now(),
            tx,
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            close_reason: Mutex::new(None),
            attributes: Mutex::default(),
            channels: Mutex::default(),
            tags: Mutex::default(),
        };
        (Arc::new(conn), rx)
    }

    /// Queues a message without waiting. A full queue means the client has
    /// stopped reading: it is closed rather than allowed to hold up senders.
    pub fn send(&self, msg: Message) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        match self.tx.try_send(Outbound::Data(msg)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.abort(SLOW_CONSUMER, "send queue full");
                Err(SendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Starts an orderly close: messages already queued go out first.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Err(SendError::Closed);
        }
        self.set_close_reason(code, reason);
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if self.tx.try_send(Outbound::Close(frame)).is_err() {
            self.shutdown.cancel();
        }
        Ok(())
    }

    /// Closes now, dropping whatever is still queued.
    pub fn abort(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.set_close_reason(code, reason);
        self.shutdown.cancel();
    }

    /// Marks the connection closed from the client's side: no more sends.
    pub fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn set_close_reason(&self, code: u16, reason: &str) {
        let mut slot = self.close_reason.lock().unwrap();
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
    }

    /// The server-side close code and reason, if the server closed first.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.lock().unwrap().clone()
    }

    pub fn attributes(&self) -> HashMap<String, String> {
        self.attributes.lock().unwrap().clone()
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.channels.lock().unwrap().iter().cloned().collect()
    }

    pub fn tag_names(&self) -> Vec<String> {
        self.tags.lock().unwrap().iter().cloned().collect()
    }
}
