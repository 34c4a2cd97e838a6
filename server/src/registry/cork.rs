//! Corked deliveries: what is delivered to a parked plain-TCP connection
//! stays in its queue without waking its task, and a flusher writes every
//! such queue into its socket later, one `sendmsg` per connection, as
//! uWebSockets collects a loop turn's publishes per socket and drains them
//! at the turn's end.
//!
//! Otherwise a fan-out to N connections wakes N tasks, and each polls its
//! socket, queue and alarm to write one frame: at 10,000 subscribers that
//! cost as much CPU as the sends themselves (BENCHMARKS.md). Writing from
//! the deliverer itself (the `h21-direct` branch) saved that but wrote
//! every message with a `send` of its own; here messages delivered while
//! the flusher is behind leave together.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::queue::{self, Shared};
use crate::metrics::Traffic;
use crate::protocol::direct::PlainSocket;

/// Queues between yields of a flusher, so that one large fan-out does not
/// hold its worker for the whole of it.
const FLUSHES_PER_TURN: usize = 32;

/// The flushers: one per runtime worker, each with its own list of queues
/// to flush, so that a fan-out's writes spread over the workers.
#[derive(Debug)]
pub struct Corks {
    shards: Box<[Shard]>,
}

#[derive(Debug)]
struct Shard {
    /// Queues with deliveries to write; each at most once (its `listed`).
    listed: Mutex<Vec<Arc<Shared>>>,
    /// Rung when the list stops being empty.
    ready: Notify,
}

impl Corks {
    /// Starts one flusher per worker of the current runtime.
    pub fn start() -> Arc<Corks> {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let corks = Arc::new(Corks {
            shards: (0..workers.max(1))
                .map(|_| Shard {
                    listed: Mutex::new(Vec::new()),
                    ready: Notify::new(),
                })
                .collect(),
        });
        for shard in 0..corks.shards.len() {
            tokio::spawn(flusher(corks.clone(), shard));
        }
        corks
    }

    /// Lists a queue to be flushed, by the shard its socket falls in.
    fn list(&self, socket: PlainSocket, queue: Arc<Shared>) {
        let shard = &self.shards[socket.0.unsigned_abs() as usize % self.shards.len()];
        let mut listed = shard.listed.lock().unwrap();
        let was_empty = listed.is_empty();
        listed.push(queue);
        drop(listed);
        if was_empty {
            shard.ready.notify_one();
        }
    }
}

/// Where one plugin's corked deliveries go: the flushers, and the counter
/// of what is sent. One per plugin version, so that a connection holds a
/// pointer, not its own copy of both.
#[derive(Debug)]
pub struct Corked {
    corks: Arc<Corks>,
    pub(super) sent: Traffic,
}

impl Corked {
    pub fn new(corks: Arc<Corks>, sent: Traffic) -> Arc<Corked> {
        Arc::new(Corked { corks, sent })
    }

    /// Lists a queue with deliveries to write into `socket`.
    pub(super) fn list(&self, socket: PlainSocket, queue: Arc<Shared>) {
        self.corks.list(socket, queue);
    }
}

/// Flushes what its shard lists, whenever the list stops being empty.
async fn flusher(corks: Arc<Corks>, shard: usize) {
    let shard = &corks.shards[shard];
    let mut batch = Vec::new();
    loop {
        shard.ready.notified().await;
        // Whatever else is ready to run goes first: a publish under way
        // may deliver more to the same connections, which then leave in
        // the same write.
        tokio::task::yield_now().await;
        std::mem::swap(&mut batch, &mut *shard.listed.lock().unwrap());
        for (i, listed) in batch.drain(..).enumerate() {
            if i > 0 && i % FLUSHES_PER_TURN == 0 {
                tokio::task::yield_now().await;
            }
            queue::flush(&listed);
        }
        // A large fan-out's list is not kept for the next one.
        if batch.capacity() > 4 * FLUSHES_PER_TURN {
            batch = Vec::new();
        }
    }
}
