//! Presence questions this node asked the others (`subscribers`, `tagged`
//! for the whole cluster), waiting for their answers. An answer that does
//! not come in time is given up on: the caller gets what did come.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::registry::ConnId;

#[derive(Default)]
pub struct Queries {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    /// Nodes that have not answered yet.
    waiting: HashSet<u64>,
    members: Vec<ConnId>,
    done: oneshot::Sender<Vec<ConnId>>,
}

impl Queries {
    /// A new question to `nodes`: its id, and where the whole answer comes.
    pub fn ask(&self, nodes: HashSet<u64>) -> (u64, oneshot::Receiver<Vec<ConnId>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            waiting: nodes,
            members: Vec::new(),
            done,
        };
        self.pending.lock().unwrap().insert(id, pending);
        (id, answer)
    }

    /// `node`'s answer to question `id`; the last one completes it. Late
    /// or unasked-for answers are ignored.
    pub fn answer(&self, id: u64, node: u64, members: Vec<ConnId>) {
        let mut pending = self.pending.lock().unwrap();
        let Some(p) = pending.get_mut(&id) else {
            return;
        };
        if !p.waiting.remove(&node) {
            return;
        }
        p.members.extend(members);
        if p.waiting.is_empty() {
            let p = pending.remove(&id).expect("found above");
            let _ = p.done.send(p.members);
        }
    }

    /// Stops waiting for question `id`: what came so far, and the nodes
    /// that did not answer.
    pub fn give_up(&self, id: u64) -> (Vec<ConnId>, Vec<u64>) {
        match self.pending.lock().unwrap().remove(&id) {
            Some(p) => (p.members, p.waiting.into_iter().collect()),
            None => (Vec::new(), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_add_up_and_late_ones_are_ignored() {
        let q = Queries::default();
        let (id, mut answer) = q.ask(HashSet::from([1, 2]));
        q.answer(id, 1, vec![10, 11]);
        q.answer(id, 1, vec![99]);
        q.answer(id, 7, vec![99]);
        assert!(answer.try_recv().is_err());
        q.answer(id, 2, vec![20]);
        assert_eq!(answer.try_recv().unwrap(), vec![10, 11, 20]);
        let (id, _answer) = q.ask(HashSet::from([1, 2]));
        q.answer(id, 2, vec![20]);
        assert_eq!(q.give_up(id), (vec![20], vec![1]));
        q.answer(id, 1, vec![10]);
        assert!(q.pending.lock().unwrap().is_empty());
    }
}
