//! Which partitions this node must listen to, how far the subscriber has
//! caught up with that, and the announcements that wait for it.
//!
//! Members come and go from inside hooks, which cannot wait for Redis; the
//! subscriber task can. So the wanted set carries a version, bumped when a
//! partition gains its first member or loses its last; the subscriber reads
//! it, brings the Redis subscriptions in line, and reports the version it
//! reached. A member whose partition is not heard yet waits for that
//! version ([`Interests::wait`]), and so do presence announcements (held in
//! order, released by [`Interests::caught_up`]): another node learns of a
//! member only once this node hears what it sends to the member.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use crate::registry::Listening;

/// The longest a member waits to be heard: past it, the join goes on, and
/// until the subscriber catches up nobody waits any more (a Redis that
/// hangs must not hold hooks up, nor add up over a connection's several
/// joins). Only the first member of a partition on a node ever waits, for
/// one Redis round trip.
pub const LISTEN_WAIT: Duration = Duration::from_secs(1);

/// Announcements held at most; past it they are dropped and counted, and
/// the next periodic snapshot repairs what the other nodes know.
const HELD_MAX: usize = 16_384;

pub struct Interests {
    state: Mutex<State>,
    /// The version the subscriber has caught up with.
    acked: watch::Sender<u64>,
    /// Wakes the subscriber when the wanted set changed.
    changed: Notify,
    /// Whether the subscriber is connected and keeping up: otherwise
    /// nobody waits (there is nothing to wait for, or no telling how long)
    /// and nothing new is held.
    live: Arc<AtomicBool>,
}

struct State {
    /// Per partition: members with an interest that hashes to it.
    refs: Vec<u32>,
    /// Per partition: the version at which it was last wanted anew.
    since: Vec<u64>,
    version: u64,
    /// Announcements with the version they wait for, in order.
    held: VecDeque<(u64, Bytes)>,
}

/// What [`Interests::announce`] did with a frame.
#[derive(Debug, PartialEq)]
pub enum Announce {
    /// Nothing is pending: send it now.
    Now(Bytes),
    Held,
    Dropped,
}

impl Interests {
    pub fn new(partitions: u16) -> Interests {
        let n = usize::from(partitions);
        Interests {
            state: Mutex::new(State {
                refs: vec![0; n],
                since: vec![0; n],
                version: 0,
                held: VecDeque::new(),
            }),
            acked: watch::Sender::new(0),
            changed: Notify::new(),
            live: Arc::new(AtomicBool::new(false)),
        }
    }

    /// One more member in partition `p`. Returns the version to wait for
    /// while the partition is not heard yet.
    pub fn add(&self, p: u16) -> Option<u64> {
        let mut st = self.state.lock().unwrap();
        let i = usize::from(p);
        st.refs[i] += 1;
        if st.refs[i] == 1 {
            st.version += 1;
            st.since[i] = st.version;
            self.changed.notify_one();
        }
        let since = st.since[i];
        (self.live.load(Ordering::Acquire) && since > *self.acked.borrow()).then_some(since)
    }

    /// One member fewer in partition `p`.
    pub fn remove(&self, p: u16) {
        let mut st = self.state.lock().unwrap();
        let i = usize::from(p);
        st.refs[i] = st.refs[i].saturating_sub(1);
        if st.refs[i] == 0 {
            st.version += 1;
            self.changed.notify_one();
        }
    }

    /// Resolves once the subscriber reached `version`, or after
    /// [`LISTEN_WAIT`] (and then the subscriber counts as not keeping up).
    pub fn wait(&self, version: u64) -> Listening {
        let mut acked = self.acked.subscribe();
        let live = self.live.clone();
        Box::pin(async move {
            if !live.load(Ordering::Acquire) {
                return;
            }
            let caught_up = acked.wait_for(|v| *v >= version);
            if tokio::time::timeout(LISTEN_WAIT, caught_up).await.is_err() {
                live.store(false, Ordering::Release);
            }
        })
    }

    /// A frame that must not overtake the subscriptions wanted so far, nor
    /// the frames held before it.
    pub fn announce(&self, frame: Bytes) -> Announce {
        let mut st = self.state.lock().unwrap();
        let pending = st.version > *self.acked.borrow();
        if st.held.is_empty() && (!pending || !self.live.load(Ordering::Acquire)) {
            return Announce::Now(frame);
        }
        if st.held.len() >= HELD_MAX {
            return Announce::Dropped;
        }
        let version = st.version;
        st.held.push_back((version, frame));
        Announce::Held
    }

    /// The partitions wanted now, and the version that is.
    pub fn wanted(&self) -> (u64, BTreeSet<u16>) {
        let st = self.state.lock().unwrap();
        let wanted = (0..st.refs.len())
            .filter(|i| st.refs[*i] > 0)
            .map(|i| i as u16)
            .collect();
        (st.version, wanted)
    }

    /// Waits until the wanted set may have changed.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The subscriber's subscriptions match `version`: wakes the members
    /// waiting for it, and returns the announcements now free to go, in
    /// order.
    pub fn caught_up(&self, version: u64) -> Vec<Bytes> {
        let mut st = self.state.lock().unwrap();
        self.live.store(true, Ordering::Release);
        self.acked.send_if_modified(|acked| {
            let newer = version > *acked;
            *acked = (*acked).max(version);
            newer
        });
        let mut free = Vec::new();
        while st.held.front().is_some_and(|(v, _)| *v <= version) {
            free.extend(st.held.pop_front().map(|(_, frame)| frame));
        }
        free
    }

    /// The subscription is lost: nobody waits for it any more, and the held
    /// announcements are returned to go out as they can.
    pub fn lost(&self) -> Vec<Bytes> {
        let mut st = self.state.lock().unwrap();
        self.live.store(false, Ordering::Release);
        let version = st.version;
        self.acked
            .send_modify(|acked| *acked = (*acked).max(version));
        st.held.drain(..).map(|(_, frame)| frame).collect()
    }

    /// Partitions with members.
    pub fn listening(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .refs
            .iter()
            .filter(|r| **r > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn members_wait_only_for_partitions_not_yet_heard() {
        let i = Interests::new(8);
        // Not live (no subscription yet): nobody waits, nothing is held.
        assert_eq!(i.add(3), None);
        assert_eq!(i.announce(frame("a")), Announce::Now(frame("a")));
        let (v, wanted) = i.wanted();
        assert_eq!(wanted, BTreeSet::from([3]));
        assert!(i.caught_up(v).is_empty());
        // Live and caught up: a second member of a heard partition goes on.
        assert_eq!(i.add(3), None);
        // A new partition: its first member, and anyone after, waits.
        let pending = i.add(5).expect("partition 5 is not heard yet");
        assert_eq!(i.add(5), Some(pending));
        assert_eq!(i.announce(frame("b")), Announce::Held);
        assert_eq!(i.announce(frame("c")), Announce::Held);
        let (v, wanted) = i.wanted();
        assert_eq!(wanted, BTreeSet::from([3, 5]));
        assert_eq!(i.caught_up(v), vec![frame("b"), frame("c")]);
        assert_eq!(i.add(5), None);
        assert_eq!(i.announce(frame("d")), Announce::Now(frame("d")));
    }

    #[test]
    fn last_members_leaving_unwant_and_a_lost_subscription_frees_everything() {
        let i = Interests::new(4);
        let (v, _) = i.wanted();
        i.caught_up(v);
        i.add(1);
        i.add(1);
        i.remove(1);
        assert_eq!(i.wanted().1, BTreeSet::from([1]));
        i.remove(1);
        assert!(i.wanted().1.is_empty());
        assert_eq!(i.listening(), 0);
        assert_eq!(i.announce(frame("x")), Announce::Held);
        assert_eq!(i.lost(), vec![frame("x")]);
        assert_eq!(i.add(2), None, "nobody waits without a subscription");
        assert_eq!(i.announce(frame("y")), Announce::Now(frame("y")));
    }

    #[test]
    fn held_announcements_are_bounded() {
        let i = Interests::new(2);
        i.caught_up(0);
        i.add(0);
        for _ in 0..HELD_MAX {
            assert_eq!(i.announce(frame("a")), Announce::Held);
        }
        assert_eq!(i.announce(frame("b")), Announce::Dropped);
        assert_eq!(i.caught_up(i.wanted().0).len(), HELD_MAX);
        assert_eq!(i.announce(frame("c")), Announce::Now(frame("c")));
    }

    #[tokio::test]
    async fn a_wait_ends_when_caught_up_or_after_the_bound() {
        let i = std::sync::Arc::new(Interests::new(2));
        i.caught_up(0);
        let v = i.add(0).unwrap();
        let waiting = i.wait(v);
        let catch_up = {
            let i = i.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                i.caught_up(v);
            }
        };
        let started = std::time::Instant::now();
        tokio::join!(waiting, catch_up);
        assert!(started.elapsed() < LISTEN_WAIT / 2);
        // Never caught up: the wait is bounded, and the next one does not
        // wait at all, until the subscriber catches up again.
        let v = i.add(1).unwrap();
        let started = tokio::time::Instant::now();
        i.wait(v).await;
        assert!(started.elapsed() >= LISTEN_WAIT);
        let started = tokio::time::Instant::now();
        i.wait(v).await;
        assert!(started.elapsed() < LISTEN_WAIT / 2);
        assert_eq!(i.add(1), None);
        // Held announcements keep their order even then.
        let v = i.wanted().0;
        i.live.store(true, Ordering::Release);
        i.add(0);
        i.remove(0);
        assert_eq!(i.announce(frame("first")), Announce::Held);
        i.live.store(false, Ordering::Release);
        assert_eq!(i.announce(frame("second")), Announce::Held);
        let free = i.caught_up(i.wanted().0.max(v));
        assert_eq!(free, vec![frame("first"), frame("second")]);
    }
}
