//! What waits to be written to one WebSocket peer: a queue bounded in items
//! and payload bytes, with a close frame as its last word, and the signal
//! to close now, ahead of it. A client connection has one, and so has each
//! upstream a plugin opened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::alarm::{self, AlarmTime};
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

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// Items counted in: those queued and those reserved to be.
    count: usize,
    /// Their bytes.
    bytes: usize,
    /// The writer is gone: nothing more is queued.
    gone: bool,
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

    /// Ready once something is queued, which stays queued for
    /// [`try_recv`](Self::try_recv).
    pub fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking, so an item queued in between wakes us.
        self.shared.writer.register(cx.waker());
        if self.shared.state.lock().unwrap().items.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
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

    /// How many hold the queue: its ends, and the alarm wheel.
    #[cfg(test)]
    pub(super) fn holders(&self) -> usize {
        Arc::strong_count(&self.shared)
    }
}

#[cfg(test)]
mod tests {
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
