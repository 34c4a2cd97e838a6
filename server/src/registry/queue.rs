//! What waits to be written to one WebSocket peer: a queue bounded in items
//! and payload bytes, with a close frame as its last word, and the signal
//! to close now, ahead of it. A client connection has one, and so has each
//! upstream a plugin opened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::metrics::Traffic;
use crate::protocol::direct::{self, PlainSocket, Sent};
use crate::protocol::{CloseFrame, Message};

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

/// A new queue: the end that queues and the end the writer reads.
pub fn queue(limits: QueueLimits) -> (QueueSender, Queue) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        writer: AtomicWaker::new(),
        aborted: AtomicBool::new(false),
        limits,
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        Queue { shared },
    )
}

/// Both ends' one allocation: an idle connection's queue is this and
/// nothing else. The items are in a deque that is given back whenever the
/// writer empties it, so a queue holds no buffer while it is empty.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The writer's task, woken by an item or by an abort.
    writer: AtomicWaker,
    /// Set when the writer must close now, ahead of what is queued.
    aborted: AtomicBool,
    limits: QueueLimits,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// Items counted in: those queued and those reserved to be.
    count: usize,
    /// Their bytes.
    bytes: usize,
    /// The writer is gone: nothing more is queued.
    gone: bool,
    /// Where deliveries may be written straight into the socket, for a
    /// connection whose socket allows it ([`direct`]).
    direct: Option<Direct>,
}

/// A socket deliveries may be written into directly, and its gate.
#[derive(Debug)]
struct Direct {
    socket: PlainSocket,
    /// The writer is parked with nothing queued, buffered or owed: a
    /// delivery may be written now. Shut by the writer before it touches
    /// the socket, and by a delivery that could not go out whole.
    open: bool,
    /// The rest of a frame the socket took only part of: the writer
    /// writes it before anything else.
    rest: Option<Bytes>,
    /// Counts what is written here, as the writer counts what it writes.
    sent: Traffic,
}

impl State {
    fn count_out(&mut self, item: &Outbound) {
        self.count -= 1;
        self.bytes -= item.weight();
    }
}

/// The receiving end of a queue, read by its writer only (it is not
/// `Clone`). Dropping it drops what is still queued, and later items are
/// refused.
#[derive(Debug)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// The next item. Cancel-safe: an item is counted out in the same poll
    /// that takes it.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Outbound> {
        // Registered before looking, so an item queued in between wakes us.
        self.shared.writer.register(cx.waker());
        match self.try_recv() {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next item.
    pub async fn recv(&self) -> Outbound {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut state = self.shared.state.lock().unwrap();
        let item = state.items.pop_front()?;
        state.count_out(&item);
        // An emptied deque's buffer is given back (outside the lock).
        let spare = (state.items.is_empty() && state.items.capacity() > 0)
            .then(|| std::mem::take(&mut state.items));
        drop(state);
        drop(spare);
        Some(item)
    }

    /// The writer's hold on the gate deliveries are written through (its
    /// socket holds one; see [`Gate`]).
    pub fn gate(&self) -> Gate {
        Gate {
            shared: self.shared.clone(),
        }
    }

    /// Ready once the writer must close now, ahead of what is queued.
    pub fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.shared.writer.register(cx.waker());
        if self.shared.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap();
        state.gone = true;
        let items = std::mem::take(&mut state.items);
        for item in &items {
            state.count_out(item);
        }
        drop(state);
        drop(items);
    }
}

/// The writer's side of the gate deliveries go through into its socket.
///
/// The gate is open only while the writer is parked with nothing queued,
/// buffered or owed ([`open`](Self::open)). The writer shuts it before it
/// touches the socket again ([`shut`](Self::shut)), so a delivery and the
/// writer never write at the same time (a delivery writes under the queue's
/// lock) and frames never interleave.
#[derive(Debug)]
pub struct Gate {
    shared: Arc<Shared>,
}

impl Gate {
    /// Deliveries may be written into `socket` from now on, whenever the
    /// gate is open; what is written there counts in `sent`.
    pub fn enable(&self, socket: PlainSocket, sent: Traffic) {
        self.shared.state.lock().unwrap().direct = Some(Direct {
            socket,
            open: false,
            rest: None,
            sent,
        });
    }

    /// Opens the gate, unless something is queued or owed (it would have
    /// to go first), or the writer must close.
    pub fn open(&self) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        let empty = state.items.is_empty();
        let Some(direct) = state.direct.as_mut() else {
            return false;
        };
        direct.open =
            empty && direct.rest.is_none() && !self.shared.aborted.load(Ordering::Acquire);
        direct.open
    }

    /// Shuts the gate; the rest of a frame a delivery left half written,
    /// which must be written next.
    pub fn shut(&self) -> Option<Bytes> {
        let mut state = self.shared.state.lock().unwrap();
        let direct = state.direct.as_mut()?;
        direct.open = false;
        direct.rest.take()
    }

    /// Shuts the gate for good: the socket is about to close.
    pub fn disable(&self) {
        self.shared.state.lock().unwrap().direct = None;
    }
}

/// Who writes a message: the deliverer, straight into the socket when the
/// gate is open, or the connection's task, from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Queue,
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// It would go past the queue's items or bytes.
    Full,
    /// The writer is gone.
    Gone,
}

/// The queuing end of a queue. Clones queue into the same queue.
#[derive(Debug, Clone)]
pub struct QueueSender {
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Queues an item if the queue has room for it, in items and bytes;
    /// writes a message straight into the socket instead where the gate is
    /// open.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        self.push_via(item, Via::Socket)
    }

    /// As [`push`](Self::push), but `via` says whether the message may go
    /// straight into the socket.
    pub fn push_via(&self, item: Outbound, via: Via) -> Result<(), PushError> {
        let mut state = self.shared.state.lock().unwrap();
        if via == Via::Socket
            && let Outbound::Data(msg) = &item
            && self.write_directly(&mut state, msg)
        {
            return Ok(());
        }
        self.count_in(&mut state, &item)?;
        self.queue(state, item)
    }

    /// Writes `msg` into the socket if the gate is open and nothing is
    /// queued before it (an item queued while the gate was shut goes
    /// first). A socket that takes only part of the frame shuts the gate
    /// and leaves the rest to the writer; one that takes none shuts it too,
    /// and the message is queued.
    fn write_directly(&self, state: &mut State, msg: &Message) -> bool {
        let Some(direct) = state.direct.as_mut().filter(|d| d.open) else {
            return false;
        };
        if !state.items.is_empty() || self.shared.aborted.load(Ordering::Acquire) {
            direct.open = false;
            return false;
        }
        match direct::send(direct.socket, msg) {
            Sent::All => {
                direct.sent.count(msg.len());
                true
            }
            Sent::Part(rest) => {
                direct.sent.count(msg.len());
                direct.open = false;
                direct.rest = Some(rest);
                self.shared.writer.wake();
                true
            }
            Sent::Nothing => {
                direct.open = false;
                false
            }
        }
    }

    /// Counts an item in, as if it were queued, if there is room: what is
    /// held back to be queued later ([`push_reserved`]) takes its room now.
    ///
    /// [`push_reserved`]: Self::push_reserved
    pub fn reserve(&self, item: &Outbound) -> Result<(), PushError> {
        self.count_in(&mut self.shared.state.lock().unwrap(), item)
    }

    /// Queues an item [`reserve`](Self::reserve) counted in.
    pub fn push_reserved(&self, item: Outbound) -> Result<(), PushError> {
        self.queue(self.shared.state.lock().unwrap(), item)
    }

    fn count_in(&self, state: &mut State, item: &Outbound) -> Result<(), PushError> {
        let weight = item.weight();
        let limits = self.shared.limits;
        if state.count >= limits.items || state.bytes + weight > limits.bytes {
            return Err(PushError::Full);
        }
        state.count += 1;
        state.bytes += weight;
        Ok(())
    }

    /// Queues an item already counted in, and wakes the writer.
    fn queue(&self, mut state: MutexGuard<'_, State>, item: Outbound) -> Result<(), PushError> {
        if state.gone {
            state.count_out(&item);
            return Err(PushError::Gone);
        }
        if let Some(direct) = state.direct.as_mut() {
            direct.open = false;
        }
        state.items.push_back(item);
        drop(state);
        self.shared.writer.wake();
        Ok(())
    }

    /// Tells the writer to close now, ahead of what is queued.
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::Release);
        self.shared.writer.wake();
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use super::*;

    fn limits(items: usize) -> QueueLimits {
        QueueLimits {
            items,
            bytes: 1 << 20,
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer() {
        let (tx, rx) = queue(limits(100));
        for i in 0..20 {
            tx.push(Outbound::Data(Message::text(i.to_string())))
                .unwrap();
        }
        assert!(rx.shared.state.lock().unwrap().items.capacity() >= 20);
        while rx.try_recv().is_some() {}
        let state = rx.shared.state.lock().unwrap();
        assert_eq!(state.items.capacity(), 0);
        assert_eq!((state.count, state.bytes), (0, 0));
    }

    #[test]
    fn the_writer_is_woken_by_an_item_and_by_an_abort() {
        let (tx, rx) = queue(limits(4));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(rx.poll_aborted(&mut cx).is_pending());
        tx.push(Outbound::Data(Message::text("a"))).unwrap();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(matches!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Outbound::Data(_))
        ));
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.abort();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        assert!(rx.poll_aborted(&mut cx).is_ready());
        assert!(tx.is_aborted());
    }

    fn traffic() -> Traffic {
        let counter = |name| prometheus::IntCounter::new(name, "test").unwrap();
        Traffic::new(&counter("messages"), &counter("bytes"))
    }

    /// What the socket's far end has received so far.
    fn received(far: &mut UnixStream) -> Vec<u8> {
        let mut got = vec![0u8; 64];
        let n = far.read(&mut got).unwrap();
        got.truncate(n);
        got
    }

    #[test]
    fn a_delivery_goes_through_an_open_gate_unless_something_must_go_first() {
        let (tx, rx) = queue(limits(100));
        let (ours, mut far) = UnixStream::pair().unwrap();
        let gate = rx.gate();
        gate.enable(PlainSocket(ours.as_raw_fd()), traffic());
        // Shut until the writer opens it: queued.
        tx.push(Outbound::Data(Message::text("a"))).unwrap();
        assert!(!gate.open(), "opened with an item queued");
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // Open: written, nothing queued.
        assert!(gate.open());
        tx.push(Outbound::Data(Message::text("b"))).unwrap();
        assert!(rx.try_recv().is_none());
        assert_eq!(received(&mut far), b"\x81\x01b");
        // A close is queued, and shuts the gate.
        tx.push(Outbound::Close(CloseFrame::new(
            crate::protocol::CloseCode::NORMAL,
            String::new(),
        )))
        .unwrap();
        tx.push(Outbound::Data(Message::text("c"))).unwrap();
        assert!(matches!(rx.try_recv(), Some(Outbound::Close(_))));
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // Shut by the writer: queued again.
        assert!(gate.open());
        assert!(gate.shut().is_none());
        tx.push(Outbound::Data(Message::text("d"))).unwrap();
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // Aborted: never written past the close to come.
        assert!(gate.open());
        tx.abort();
        tx.push(Outbound::Data(Message::text("e"))).unwrap();
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        assert!(!gate.open());
    }

    #[test]
    fn a_frame_the_socket_takes_part_of_leaves_its_rest_first_in_line() {
        let (tx, rx) = queue(QueueLimits {
            items: 100,
            bytes: 64 << 20,
        });
        let (ours, _far) = UnixStream::pair().unwrap();
        let gate = rx.gate();
        gate.enable(PlainSocket(ours.as_raw_fd()), traffic());
        assert!(gate.open());
        let big = Message::Binary(bytes::Bytes::from(vec![1u8; 4 << 20]));
        tx.push(Outbound::Data(big)).unwrap();
        // Taken in part: nothing queued, the gate shut, the writer woken.
        assert!(rx.try_recv().is_none());
        assert!(!gate.open(), "opened with a frame half written");
        tx.push(Outbound::Data(Message::text("next"))).unwrap();
        let rest = gate.shut().expect("the rest of the frame");
        assert!(!rest.is_empty() && rest.len() < 4 << 20);
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // Disabled (the socket closes): nothing more goes through.
        gate.disable();
        assert!(!gate.open());
    }

    #[test]
    fn a_gone_writer_refuses_items_and_gives_back_their_room() {
        let (tx, rx) = queue(limits(2));
        tx.push(Outbound::Data(Message::text("a"))).unwrap();
        let reserved = Outbound::Data(Message::text("b"));
        tx.reserve(&reserved).unwrap();
        drop(rx);
        assert_eq!(tx.push_reserved(reserved), Err(PushError::Gone));
        assert_eq!(
            tx.push(Outbound::Data(Message::text("c"))),
            Err(PushError::Gone)
        );
        let state = tx.shared.state.lock().unwrap();
        assert_eq!((state.count, state.bytes, state.items.len()), (0, 0, 0));
    }
}
