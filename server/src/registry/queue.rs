//! What waits to be written to one WebSocket peer: a queue bounded in items
//! and payload bytes, with a close frame as its last word. A client
//! connection has one, and so has each upstream a plugin opened.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::protocol::{CloseFrame, Message};
use futures_channel::mpsc;
use futures_util::StreamExt;

/// What the writer task takes from a queue.
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

/// How much one queue may hold: items and payload bytes. A shared message
/// (a broadcast) counts in full against every queue it is in, although its
/// bytes exist once.
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

/// A new queue: the end that queues and the end the writer reads.
pub fn queue(limits: QueueLimits) -> (QueueSender, Queue) {
    let (tx, rx) = mpsc::unbounded();
    let fill = Arc::new(Fill::default());
    let sender = QueueSender {
        tx,
        fill: fill.clone(),
        capacity: limits,
    };
    (sender, Queue { rx, fill })
}

/// The receiving end of a queue, read by its writer only.
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

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// It would go past the queue's items or bytes.
    Full,
    /// The writer is gone.
    Gone,
}

/// The queuing end of a queue.
#[derive(Debug)]
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Outbound>,
    /// What the queue holds now, and the most it may hold.
    fill: Arc<Fill>,
    capacity: QueueLimits,
}

impl QueueSender {
    /// Queues an item if the queue has room for it, in items and bytes.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        self.reserve(&item)?;
        self.push_reserved(item)
    }

    /// Counts an item in, as if it were queued, if there is room: what is
    /// held back to be queued later ([`push_reserved`]) takes its room now.
    ///
    /// [`push_reserved`]: Self::push_reserved
    pub fn reserve(&self, item: &Outbound) -> Result<(), PushError> {
        let weight = item.weight();
        let items = self.fill.items.fetch_add(1, Ordering::AcqRel);
        let bytes = self.fill.bytes.fetch_add(weight, Ordering::AcqRel);
        if items >= self.capacity.items || bytes + weight > self.capacity.bytes {
            self.fill.take(item);
            return Err(PushError::Full);
        }
        Ok(())
    }

    /// Queues an item [`reserve`](Self::reserve) counted in.
    pub fn push_reserved(&self, item: Outbound) -> Result<(), PushError> {
        self.tx.unbounded_send(item).map_err(|e| {
            self.fill.take(&e.into_inner());
            PushError::Gone
        })
    }
}
