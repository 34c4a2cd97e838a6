//! One open WebSocket connection as the rest of the server sees it: a queue
//! to write into and its session data. The socket itself is owned by the
//! protocol task; nobody else ever touches it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::GroupKind;
use super::queue::{Outbound, PushError, Queue, QueueLimits, QueueSender, queue};
use crate::protocol::{CloseCode, CloseFrame, Message};

pub type ConnId = u64;

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
    pub path: Box<str>,
    pub remote: SocketAddr,
    pub opened_at: SystemTime,
    tx: QueueSender,
    /// Set once the server has decided to close: nothing more is queued.
    closing: AtomicBool,
    /// Set while `on-open` runs: deliveries to the connection's groups
    /// wait in `parked` (counted in its queue's room), so that whatever
    /// `on-open` sends it (a replay of history) comes first.
    opening: AtomicBool,
    /// Boxed, like the fields below: most connections never park anything,
    /// and a connection's room is held for as long as it is open.
    #[expect(
        clippy::box_collection,
        reason = "the box is the point: nothing parked holds a pointer's room, not an empty Vec's 24 bytes"
    )]
    parked: Mutex<Option<Box<Vec<Outbound>>>>,
    /// The code and reason the server closed with, reported to `on-close`:
    /// the first one set stands.
    close_reason: OnceLock<Box<CloseFrame>>,
    pub(crate) attributes: Mutex<Attributes>,
    /// The channels and tags it is in, allocated with the first of them:
    /// most connections are in none, and then hold no room for them.
    groups: Mutex<Option<Box<Groups>>>,
}

/// A connection's attributes, allocated with the first of them: most
/// connections have none, and then hold no room for them.
#[derive(Debug, Default)]
#[expect(
    clippy::box_collection,
    reason = "the box is the point: no attributes hold a pointer's room, not an empty map's 48 bytes"
)]
pub struct Attributes(Option<Box<HashMap<String, String>>>);

impl Attributes {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.as_ref()?.get(key)
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().flat_map(|map| map.iter())
    }

    pub fn insert(&mut self, key: String, value: String) {
        self.0.get_or_insert_default().insert(key, value);
    }

    /// Removes `key`; the last one removed gives the room back.
    pub fn remove(&mut self, key: &str) {
        if let Some(map) = self.0.as_mut() {
            map.remove(key);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Groups {
    channels: HashSet<String>,
    tags: HashSet<String>,
}

impl Groups {
    fn of(&mut self, kind: GroupKind) -> &mut HashSet<String> {
        match kind {
            GroupKind::Channel => &mut self.channels,
            GroupKind::Tag => &mut self.tags,
        }
    }
}

impl Connection {
    pub fn new(
        id: ConnId,
        plugin: Arc<str>,
        route: Arc<str>,
        path: Box<str>,
        remote: SocketAddr,
        limits: QueueLimits,
    ) -> (Arc<Connection>, Queue) {
        let (tx, rx) = queue(limits);
        let conn = Connection {
            id,
            plugin,
            route,
            path,
            remote,
            opened_at: SystemTime::now(),
            tx,
            closing: AtomicBool::new(false),
            opening: AtomicBool::new(false),
            parked: Mutex::default(),
            close_reason: OnceLock::new(),
            attributes: Mutex::default(),
            groups: Mutex::default(),
        };
        (Arc::new(conn), rx)
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

    /// Queues a delivery to one of the connection's groups (or to it by
    /// id from outside its own hooks): as [`send`](Self::send), except that
    /// while `on-open` runs it waits until `on-open` returned.
    pub fn deliver(&self, msg: Message) -> Result<(), SendError> {
        if self.opening.load(Ordering::Acquire) {
            let mut parked = self.parked.lock().unwrap();
            if self.opening.load(Ordering::Acquire) {
                if self.is_closing() {
                    return Err(SendError::Closed);
                }
                let item = Outbound::Data(msg);
                if self.tx.reserve(&item).is_err() {
                    drop(parked);
                    self.abort(CloseCode::POLICY, "send queue full");
                    return Err(SendError::QueueFull);
                }
                parked.get_or_insert_default().push(item);
                return Ok(());
            }
        }
        self.send(msg)
    }

    /// Holds deliveries back until [`opened`](Self::opened): for a
    /// connection whose `on-open` is about to run.
    pub fn hold_until_opened(&self) {
        self.opening.store(true, Ordering::Release);
    }

    /// `on-open` returned: what waited for it is queued, after what it sent.
    pub fn opened(&self) {
        let mut parked = self.parked.lock().unwrap();
        for item in parked.take().into_iter().flat_map(|parked| *parked) {
            let _ = self.tx.push_reserved(item);
        }
        self.opening.store(false, Ordering::Release);
    }

    /// Queues an item if the queue has room for it, in items and bytes.
    fn push(&self, item: Outbound) -> Result<(), SendError> {
        self.tx.push(item).map_err(|e| match e {
            PushError::Full => SendError::QueueFull,
            PushError::Gone => SendError::Closed,
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
            self.tx.abort();
        }
        Ok(())
    }

    /// Closes now, dropping whatever is still queued (slow consumer, bad
    /// input, shutdown).
    pub fn abort(&self, code: CloseCode, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.set_close_reason(&CloseFrame::new(code, reason));
        self.tx.abort();
    }

    /// Whether the connection is to close now, ahead of its queue.
    pub fn is_aborted(&self) -> bool {
        self.tx.is_aborted()
    }

    /// Marks the connection closed from the client's side: no more sends.
    pub fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn set_close_reason(&self, frame: &CloseFrame) {
        if self.close_reason.get().is_none() {
            let _ = self.close_reason.set(Box::new(frame.clone()));
        }
    }

    /// The server-side close code and reason, if the server closed first.
    pub fn close_reason(&self) -> Option<CloseFrame> {
        self.close_reason.get().map(|frame| (**frame).clone())
    }

    pub fn attributes(&self) -> HashMap<String, String> {
        let attributes = self.attributes.lock().unwrap();
        attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether the connection may be in one more group of `kind` (it is in
    /// `name` already, or in fewer than `cap`).
    pub fn may_join(&self, kind: GroupKind, name: &str, cap: usize) -> bool {
        let mut groups = self.groups.lock().unwrap();
        let Some(groups) = groups.as_mut() else {
            return cap > 0;
        };
        let names = groups.of(kind);
        names.contains(name) || names.len() < cap
    }

    /// Notes that the connection joined a group (the registry holds the
    /// group's members).
    pub(super) fn joined(&self, kind: GroupKind, name: &str) {
        let mut groups = self.groups.lock().unwrap();
        groups
            .get_or_insert_default()
            .of(kind)
            .insert(name.to_owned());
    }

    /// Notes that the connection left a group; the room for its groups
    /// goes with the last.
    pub(super) fn left(&self, kind: GroupKind, name: &str) {
        let mut slot = self.groups.lock().unwrap();
        if let Some(groups) = slot.as_mut() {
            groups.of(kind).remove(name);
            if groups.channels.is_empty() && groups.tags.is_empty() {
                *slot = None;
            }
        }
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.group_names(GroupKind::Channel)
    }

    pub fn tag_names(&self) -> Vec<String> {
        self.group_names(GroupKind::Tag)
    }

    fn group_names(&self, kind: GroupKind) -> Vec<String> {
        let mut groups = self.groups.lock().unwrap();
        groups
            .as_mut()
            .map(|g| g.of(kind).iter().cloned().collect())
            .unwrap_or_default()
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
        let (c, queue) = conn_with(QueueLimits {
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
        let (c, queue) = conn(2);
        assert_eq!(c.send(Message::text("1")), Ok(()));
        assert_eq!(c.send(Message::text("2")), Ok(()));
        // Taking one out makes room for one more.
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(m)) if m == Message::text("1")));
        assert_eq!(c.send(Message::text("3")), Ok(()));
        assert!(!c.is_aborted());
        // A full queue closes the connection as a slow consumer.
        assert_eq!(c.send(Message::text("4")), Err(SendError::QueueFull));
        assert!(c.is_aborted());
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
    fn attributes_take_room_only_while_the_connection_has_one() {
        let (c, _queue) = conn(4);
        let mut attributes = c.attributes.lock().unwrap();
        assert!(attributes.0.is_none());
        attributes.insert("user".into(), "ann".into());
        attributes.insert("room".into(), "1".into());
        assert_eq!(attributes.get("user").map(String::as_str), Some("ann"));
        assert_eq!(attributes.len(), 2);
        attributes.remove("user");
        assert!(!attributes.contains_key("user"));
        assert!(attributes.0.is_some());
        attributes.remove("room");
        assert!(attributes.0.is_none());
        assert_eq!(attributes.len(), 0);
    }

    /// Every open connection holds one, in an `Arc` (16 bytes more), for
    /// as long as it is open: 184 bytes when this was written, down from
    /// 232, as what most connections never use (parked deliveries, a close
    /// reason, attributes, groups) is allocated only once used.
    #[test]
    fn a_connection_is_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 184, "a Connection is {size} bytes");
    }

    #[test]
    fn groups_take_room_only_while_the_connection_is_in_one() {
        let (c, _queue) = conn(4);
        assert!(c.may_join(GroupKind::Channel, "a", 1));
        assert!(!c.may_join(GroupKind::Channel, "a", 0));
        c.joined(GroupKind::Channel, "a");
        c.joined(GroupKind::Tag, "t");
        assert!(c.may_join(GroupKind::Channel, "a", 1));
        assert!(!c.may_join(GroupKind::Channel, "b", 1));
        assert!(c.may_join(GroupKind::Tag, "t", 1));
        assert_eq!(c.channel_names(), ["a"]);
        assert_eq!(c.tag_names(), ["t"]);
        c.left(GroupKind::Channel, "a");
        assert!(c.groups.lock().unwrap().is_some());
        c.left(GroupKind::Tag, "t");
        assert!(c.groups.lock().unwrap().is_none());
        assert!(c.channel_names().is_empty());
    }

    #[test]
    fn a_close_goes_after_the_queued_data() {
        let (c, queue) = conn(4);
        c.send(Message::text("bye")).unwrap();
        c.close(CloseCode::NORMAL, "done").unwrap();
        assert!(matches!(queue.try_recv(), Some(Outbound::Data(_))));
        assert!(
            matches!(queue.try_recv(), Some(Outbound::Close(f)) if f.code == CloseCode::NORMAL)
        );
        assert!(!c.is_aborted(), "an orderly close does not skip the queue");
    }
}
