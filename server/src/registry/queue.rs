//! What waits to be written to one WebSocket peer: a queue bounded in items
//! and payload bytes, with a close frame as its last word, and the signal
//! to close now, ahead of it. A client connection has one, and so has each
//! upstream a plugin opened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use std::io;

use futures_util::task::AtomicWaker;

use super::alarm::{self, AlarmTime};
use super::cork::Corked;
use crate::protocol::direct::{self, MAX_FRAMES, PlainSocket};
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
        rung: AtomicBool::new(false),
        alarm: AtomicU64::new(0),
        filed_at: AtomicU64::new(0),
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
pub(super) struct Shared {
    state: Mutex<State>,
    /// The writer's task, woken by an item, by an abort or by its alarm.
    pub(super) writer: AtomicWaker,
    /// Set when the writer must close now, ahead of what is queued.
    aborted: AtomicBool,
    /// Set by the alarm wheel when the alarm is due.
    pub(super) rung: AtomicBool,
    /// When the writer wants to be woken ([`AlarmTime`]'s raw value; 0
    /// for never).
    pub(super) alarm: AtomicU64,
    /// When the alarm wheel looks at this queue next (0: it does not),
    /// which may be before the alarm: changed under the wheel's lock only.
    pub(super) filed_at: AtomicU64,
    limits: QueueLimits,
}

/// Packed into the 64 bytes a `State` had room for: every connection
/// holds one for as long as it is open.
#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// Their bytes (and those of items reserved).
    bytes: usize,
    /// Where corked deliveries to the socket go: a plain-TCP client's
    /// queue only ([`Gate::enable`]).
    corked: Option<Arc<Corked>>,
    /// Items counted in: those queued and those reserved to be.
    count: u32,
    /// Bytes of the first item's frame a flusher wrote, where the socket
    /// took only part of it: the writer writes the rest before anything
    /// else.
    front_sent: u32,
    /// The socket corked deliveries are written into, where `corked` is set.
    socket: PlainSocket,
    /// The writer is gone: nothing more is queued.
    gone: bool,
    /// The gate: the writer is parked with nothing buffered or owed, so a
    /// flusher may write what is queued. Shut by the writer before it
    /// touches the socket, and by a flusher that could not write all.
    open: bool,
    /// In its flusher's list.
    listed: bool,
}

impl State {
    /// Whether an item waits for the writer: not one a flusher wrote in
    /// part, which the writer finishes when it takes the socket back
    /// (before it writes anything else, so nothing overtakes it).
    fn has_next(&self) -> bool {
        !self.items.is_empty() && self.front_sent == 0
    }

    /// Takes the first item, counted out.
    fn pop(&mut self) -> Option<Outbound> {
        let item = self.items.pop_front()?;
        self.count_out(&item);
        Some(item)
    }

    /// An emptied deque's buffer, to be given back outside the lock
    /// ([`spares::give`]): a queue holds no buffer while it is empty.
    fn spare(&mut self) -> Option<VecDeque<Outbound>> {
        (self.items.is_empty() && self.items.capacity() > 0)
            .then(|| std::mem::take(&mut self.items))
    }

    /// Queues an item at the back, in a spare buffer if it has none.
    fn push_back(&mut self, item: Outbound) {
        if self.items.capacity() == 0 {
            self.items = spares::take();
        }
        self.items.push_back(item);
    }

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

    /// Ready once something is queued, which stays queued for
    /// [`try_recv`](Self::try_recv).
    pub fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking, so an item queued in between wakes us.
        self.shared.writer.register(cx.waker());
        if self.shared.state.lock().unwrap().has_next() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The writer's hold on the gate corked deliveries go through (its
    /// socket holds it; see [`Gate`]).
    pub fn gate(&self) -> Gate {
        Gate {
            shared: self.shared.clone(),
        }
    }

    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut state = self.shared.state.lock().unwrap();
        if !state.has_next() {
            return None;
        }
        let item = state.pop()?;
        let spare = state.spare();
        drop(state);
        spares::give(spare);
        Some(item)
    }

    /// Wakes the writer at `at` ([`poll_alarm`](Self::poll_alarm) is
    /// ready then), instead of when an alarm set before was due.
    pub fn set_alarm(&self, at: AlarmTime) {
        // Cleared first: a ring from here on is for this alarm.
        self.shared.rung.store(false, Ordering::Relaxed);
        self.shared.alarm.store(at.raw(), Ordering::Release);
        alarm::file(&self.shared, at);
    }

    /// Ready once, when the alarm is due (within a few milliseconds).
    pub fn poll_alarm(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_signal(cx, || self.shared.rung.swap(false, Ordering::Acquire))
    }

    /// Ready once the writer must close now, ahead of what is queued.
    pub fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_signal(cx, || self.shared.aborted.load(Ordering::Acquire))
    }

    /// Ready when `signalled`; otherwise the writer's waker is registered
    /// and it is asked again, so a signal raised in between is not missed.
    fn poll_signal(&self, cx: &mut Context<'_>, mut signalled: impl FnMut() -> bool) -> Poll<()> {
        if signalled() {
            return Poll::Ready(());
        }
        self.shared.writer.register(cx.waker());
        if signalled() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The writer's side of the gate corked deliveries go through into its
/// socket ([`super::cork`]).
///
/// Open only while the writer is parked with nothing queued, buffered or
/// owed ([`open`](Self::open)); the writer shuts it before it touches the
/// socket again ([`poll_take_back`](Self::poll_take_back)). A flusher
/// writes under the queue's lock and only through an open gate, so it and
/// the writer never write at once and frames never interleave.
#[derive(Debug)]
pub struct Gate {
    shared: Arc<Shared>,
}

impl Gate {
    /// Deliveries may be written into `socket` whenever the gate is open,
    /// by one of `corked`'s flushers.
    pub fn enable(&self, socket: PlainSocket, corked: Arc<Corked>) {
        let mut state = self.shared.state.lock().unwrap();
        state.socket = socket;
        state.corked = Some(corked);
    }

    /// Opens the gate, unless something is queued (it would have to go
    /// first) or the writer must close. Says whether it is open.
    pub fn open(&self) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        state.open = state.corked.is_some()
            && state.items.is_empty()
            && !self.shared.aborted.load(Ordering::Acquire);
        state.open
    }

    /// Shuts the gate, then writes through `write` the rest of a frame a
    /// flusher left half written: pending while the socket has no room
    /// for it.
    pub fn poll_take_back(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.shared.state.lock().unwrap();
        state.open = false;
        while state.front_sent > 0 {
            let Some(Outbound::Data(msg)) = state.items.front() else {
                unreachable!("only a message is ever written in part");
            };
            let mut header = direct::Header::default();
            let head = header.encode(msg);
            let frame = head + msg.len();
            let done = state.front_sent as usize;
            let rest = if done < head {
                &header.as_bytes()[done..]
            } else {
                &msg.payload().1[done - head..]
            };
            let done = done
                + match ready!(write(cx, rest)) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(written) => written,
                    Err(e) => return Poll::Ready(Err(e)),
                };
            if done < frame {
                state.front_sent = done as u32;
                continue;
            }
            state.pop();
            state.front_sent = 0;
        }
        let spare = state.spare();
        drop(state);
        spares::give(spare);
        Poll::Ready(Ok(()))
    }

    /// Shuts the gate for good: the socket is about to close, and its
    /// number may be reused.
    pub fn disable(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.open = false;
        let corked = state.corked.take();
        drop(state);
        drop(corked);
    }
}

/// Writes what a corked queue holds into its socket, if its gate is still
/// open: whole frames from the front, up to anything that is not a message
/// (a close is the writer's). Whatever cannot go (the socket is full, a
/// close is next, the writer must close) shuts the gate and wakes the
/// writer, which writes it.
pub(super) fn flush(shared: &Shared) {
    let mut state = shared.state.lock().unwrap();
    state.listed = false;
    if !state.open {
        // The writer took the socket back, and sees what is queued.
        return;
    }
    // What is written here, counted once for the flush.
    let (mut messages_sent, mut bytes_sent) = (0, 0);
    while !shared.aborted.load(Ordering::Acquire) {
        let messages = state
            .items
            .iter()
            .take(MAX_FRAMES)
            .map_while(|item| match item {
                Outbound::Data(msg) if msg.len() < MAX_CORKED => Some(msg),
                _ => None,
            });
        if messages.clone().next().is_none() {
            break;
        }
        let sent = direct::send(state.socket, messages);
        for _ in 0..sent.whole {
            let item = state.pop().expect("a sent item is queued");
            messages_sent += 1;
            bytes_sent += item.weight();
        }
        if sent.part > 0 {
            // Counted as sent: its rest is the writer's to finish.
            let front = state.items.front().expect("the item written in part");
            messages_sent += 1;
            bytes_sent += front.weight();
            state.front_sent = sent.part;
            break;
        }
        if sent.fell_short() {
            break;
        }
    }
    if messages_sent > 0
        && let Some(corked) = &state.corked
    {
        corked.sent.count_all(messages_sent, bytes_sent);
    }
    let spare = state.spare();
    let left = !state.items.is_empty() || shared.aborted.load(Ordering::Acquire);
    if left {
        state.open = false;
    }
    drop(state);
    if left {
        shared.writer.wake();
    }
    spares::give(spare);
}

/// Messages this big or bigger are left to the writer: a frame written in
/// part keeps its progress in a `u32`.
const MAX_CORKED: usize = u32::MAX as usize - 16;

impl Drop for Queue {
    fn drop(&mut self) {
        alarm::unfile(&self.shared);
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
    /// Queues an item if the queue has room for it, in items and bytes.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        let mut state = self.shared.state.lock().unwrap();
        self.count_in(&mut state, &item)?;
        self.queue(state, item)
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
        if state.count as usize >= limits.items || state.bytes + weight > limits.bytes {
            return Err(PushError::Full);
        }
        state.count += 1;
        state.bytes += weight;
        Ok(())
    }

    /// Queues an item already counted in, and wakes the writer; or, for a
    /// message to a parked connection whose gate is open, lists the queue
    /// with its flusher instead ([`super::cork`]). Anything else shuts the
    /// gate: it, and whatever is queued after it, is the writer's.
    fn queue(&self, mut state: MutexGuard<'_, State>, item: Outbound) -> Result<(), PushError> {
        if state.gone {
            state.count_out(&item);
            return Err(PushError::Gone);
        }
        let message = matches!(item, Outbound::Data(_));
        state.push_back(item);
        if state.open {
            if message {
                if !state.listed {
                    state.listed = true;
                    if let Some(corked) = &state.corked {
                        corked.list(state.socket, self.shared.clone());
                    }
                }
                return Ok(());
            }
            state.open = false;
        }
        drop(state);
        self.shared.writer.wake();
        Ok(())
    }

    /// Tells the writer to close now, ahead of what is queued (a flusher
    /// writes nothing more).
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::Release);
        self.shared.writer.wake();
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::Acquire)
    }

    /// How many hold the queue: its ends, and the alarm wheel.
    #[cfg(test)]
    pub(super) fn holders(&self) -> usize {
        Arc::strong_count(&self.shared)
    }
}

/// Emptied queues' buffers, kept per thread for the next queue that gets
/// an item: a fan-out fills every recipient's empty queue with one message
/// and its flush empties it again: a buffer allocated and freed per
/// delivery cost 6% of the server's CPU in a fan-out to 10,000
/// (BENCHMARKS.md).
mod spares {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::Outbound;

    /// Buffers kept per thread; past that they are freed.
    const KEPT: usize = 256;
    /// Larger buffers are freed: a queue that grew is not the common case.
    const MAX_CAPACITY: usize = 8;

    thread_local! {
        static SPARE: RefCell<Vec<VecDeque<Outbound>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer: a spare one if this thread has one.
    pub(super) fn take() -> VecDeque<Outbound> {
        SPARE
            .with_borrow_mut(|spare| spare.pop())
            .unwrap_or_default()
    }

    /// Keeps an emptied buffer for [`take`], or frees it.
    pub(super) fn give(deque: Option<VecDeque<Outbound>>) {
        let Some(deque) = deque else { return };
        debug_assert!(deque.is_empty());
        if deque.capacity() <= MAX_CAPACITY {
            SPARE.with_borrow_mut(|spare| {
                if spare.len() < KEPT {
                    spare.push(deque);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use super::*;
    use crate::metrics::Traffic;
    use crate::protocol::CloseCode;
    use crate::registry::cork::Corks;

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

    /// Every open connection holds its queue: one allocation of the
    /// shared part, which with the allocator's 8-byte header must stay
    /// within glibc's 160-byte chunk (it was 144 bytes before the gate).
    #[test]
    fn a_queue_is_small() {
        let shared = std::mem::size_of::<Shared>() + 2 * std::mem::size_of::<usize>();
        assert!(shared <= 152, "{shared} bytes");
    }

    fn traffic() -> Traffic {
        let counter = |name| prometheus::IntCounter::new(name, "test").unwrap();
        Traffic::new(&counter("messages"), &counter("bytes"))
    }

    /// A queue whose gate opens onto one end of a socket pair; the other
    /// end. The flushers are never run (nothing here awaits): the tests
    /// flush by hand.
    fn gated(limits: QueueLimits) -> (QueueSender, Queue, Gate, UnixStream, UnixStream) {
        let (tx, rx) = queue(limits);
        let (ours, far) = UnixStream::pair().unwrap();
        let gate = rx.gate();
        gate.enable(
            PlainSocket(ours.as_raw_fd()),
            Corked::new(Corks::start(), traffic()),
        );
        (tx, rx, gate, ours, far)
    }

    fn text(s: &str) -> Outbound {
        Outbound::Data(Message::text(s.to_owned()))
    }

    fn received(far: &mut UnixStream) -> Vec<u8> {
        let mut got = vec![0u8; 64];
        let n = far.read(&mut got).unwrap();
        got.truncate(n);
        got
    }

    #[tokio::test]
    async fn messages_go_through_an_open_gate_in_order_and_nothing_else_does() {
        let (tx, rx, gate, _ours, mut far) = gated(limits(100));
        // Shut until the writer opens it: queued for the writer.
        tx.push(text("a")).unwrap();
        assert!(!gate.open(), "opened with an item queued");
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // Open: corked, listed once, and written together by a flush.
        assert!(gate.open());
        tx.push(text("b")).unwrap();
        tx.push(text("c")).unwrap();
        assert!(rx.shared.state.lock().unwrap().listed);
        flush(&rx.shared);
        assert_eq!(received(&mut far), b"\x81\x01b\x81\x01c");
        let state = rx.shared.state.lock().unwrap();
        assert_eq!((state.items.len(), state.count, state.bytes), (0, 0, 0));
        assert!(state.open && !state.listed);
        drop(state);
        // A close shuts it: the close, and what comes after, are the writer's.
        let close = CloseFrame::new(CloseCode::NORMAL, String::new());
        tx.push(Outbound::Close(close)).unwrap();
        tx.push(text("d")).unwrap();
        flush(&rx.shared);
        assert!(matches!(rx.try_recv(), Some(Outbound::Close(_))));
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        // An abort: nothing more is written past the close to come.
        assert!(gate.open());
        tx.push(text("e")).unwrap();
        tx.abort();
        flush(&rx.shared);
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(_))));
        assert!(!gate.open());
        // Shut for good (the socket closes): a delivery wakes the writer.
        gate.disable();
        assert!(!gate.open());
    }

    /// A frame the socket takes only part of stays first in line, hidden
    /// from the writer's reads, until the writer takes the socket back and
    /// writes its rest; the far end gets every frame whole.
    #[tokio::test]
    async fn a_frame_written_in_part_is_finished_first() {
        let (tx, rx, gate, mut ours, mut far) = gated(QueueLimits {
            items: 100,
            bytes: 64 << 20,
        });
        assert!(gate.open());
        let big = Message::Binary(bytes::Bytes::from(vec![1u8; 4 << 20]));
        tx.push(Outbound::Data(big.clone())).unwrap();
        flush(&rx.shared);
        assert!(rx.shared.state.lock().unwrap().front_sent > 0);
        assert!(!gate.open(), "opened with a frame half written");
        tx.push(text("next")).unwrap();
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_queued(&mut cx).is_pending());
        assert!(rx.try_recv().is_none());

        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            far.read_to_end(&mut all).unwrap();
            all
        });
        let taken = gate.poll_take_back(&mut cx, |_, rest| Poll::Ready(ours.write(rest)));
        assert!(matches!(taken, Poll::Ready(Ok(()))));
        assert!(matches!(rx.try_recv(), Some(Outbound::Data(m)) if m == Message::text("next")));
        assert_eq!(rx.shared.state.lock().unwrap().count, 0);
        gate.disable();
        drop(ours);
        let all = reader.join().unwrap();
        let mut frame = vec![0x82, 127, 0, 0, 0, 0, 0, 0x40, 0, 0];
        frame.extend_from_slice(big.payload().1);
        assert!(all == frame, "{} bytes arrived", all.len());
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
