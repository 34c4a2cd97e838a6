//! Unit tests for listeners, without a server: with the `testing` feature,
//! [`host`](crate::host) is an in-memory host that behaves like wsgate's
//! for one plugin (connections, channels, tags, attributes, state, channel
//! history, timers, upstreams, logs), and [`FakeHost`] drives a listener's hooks the way the
//! server does and shows what the plugin asked for; the plugin's
//! [`http`](crate::http) requests go to a handler the test gives
//! ([`FakeHost::on_http`]). Upstreams connect to nothing: the test plays
//! the upstream, opening it, delivering its messages and closing it
//! ([`FakeHost::upstream_opened`] and the like), and sees what the plugin
//! sent it. [`serve`] starts a real
//! `wsgate` with a built plugin, for an integration test, and
//! [`Server::connect`] is a WebSocket client for it.
//!
//! ```toml
//! [dev-dependencies]
//! wsgate-sdk = { path = "...", features = ["testing"] }
//! ```
//!
//! ```ignore
//! use wsgate_sdk::testing::{FakeHost, request};
//!
//! #[test]
//! fn greets_by_name() {
//!     let host = FakeHost::<Hello>::new();
//!     let conn = host.open(request("/ws/hello").with_query("name", "ann")).unwrap();
//!     assert_eq!(host.received(conn), [Message::text("hello, ann")]);
//! }
//! ```
//!
//! Channel history is off until the test configures it as the plugin's
//! sidecar would ([`FakeHost::record_history`]); [`FakeHost::lose_history`]
//! plays a server restart, [`FakeHost::history_unavailable`] a failing
//! Redis. The fake is one node: the `node-*` calls answer as the
//! cluster-wide ones.
//!
//! The fake lives in a thread-local, so tests running in parallel (each on
//! its own thread) never see each other's connections. A test that uses two
//! plugins at once is beyond it: use [`serve`].

mod history;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{self, HttpError};
use crate::{
    ConnectionId, Error, HistoryError, HistoryPage, Listener, LogLevel, Message, OpenDecision,
    Position, Publication, Published, Rejection, Request, StateError, UpstreamError, UpstreamId,
};
pub use history::{HistoryConfig, MAX_HISTORY_SIZE};

/// Answers a plugin's HTTP requests in a test.
type HttpHandler = Box<dyn FnMut(&http::Request) -> Result<http::Response, HttpError>>;

/// Upstreams a plugin may hold at once, as the server's default
/// `limits.upstreams_per_plugin`.
pub const MAX_UPSTREAMS: usize = 16;

/// The in-memory host's state for this thread.
#[derive(Default)]
struct Fake {
    next_id: ConnectionId,
    connections: BTreeMap<ConnectionId, Conn>,
    channels: BTreeMap<String, BTreeSet<ConnectionId>>,
    tags: BTreeMap<String, BTreeSet<ConnectionId>>,
    state: BTreeMap<String, StateEntry>,
    /// The fake clock state deadlines and history ages are read against,
    /// in milliseconds; [`FakeHost::advance_clock`] moves it.
    clock_ms: u64,
    history: history::Histories,
    /// The connection whose `on-open` is running, and what was published
    /// to it meanwhile: the server delivers that after what `on-open`
    /// sends it.
    opening: Option<ConnectionId>,
    held: Vec<Message>,
    next_timer: u64,
    timers: BTreeMap<u64, (u32, bool)>,
    published: Vec<(String, Message)>,
    logs: Vec<(LogLevel, String)>,
    open_routes: HashMap<String, usize>,
    http_handler: Option<HttpHandler>,
    http_requests: Vec<http::Request>,
    next_upstream: UpstreamId,
    upstreams: BTreeMap<UpstreamId, Upstream>,
    /// Every `upstream-connect` that returned an id, in order.
    upstream_connects: Vec<(UpstreamId, String)>,
}

/// One upstream the plugin opened, until the test closes it.
#[derive(Default)]
struct Upstream {
    /// What the plugin sent it since the test last looked.
    sent: Vec<Message>,
    /// Set once the plugin closed it: it accepts nothing more.
    closed: Option<(u16, String)>,
}

#[derive(Default)]
struct Conn {
    route: String,
    attributes: HashMap<String, String>,
    received: Vec<Message>,
    /// Set once the plugin (or the test) closed it: it accepts nothing more.
    closed: Option<(u16, String)>,
}

/// A state entry and when it expires on the fake clock.
struct StateEntry {
    value: Vec<u8>,
    expires_ms: Option<u64>,
}

/// The server's defaults: `limits.state_bytes`, what each entry costs
/// beyond its key and value, and `limits.state_keys_listed`.
const STATE_BYTES: usize = 16 << 20;
const STATE_ENTRY_OVERHEAD: usize = 64;
const STATE_KEYS_LISTED: usize = 1000;

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// Takes `conn` out of the group `name` (a channel or a tag); an empty
/// group is forgotten, as the host forgets it.
fn leave(groups: &mut BTreeMap<String, BTreeSet<ConnectionId>>, conn: ConnectionId, name: &str) {
    if let Some(members) = groups.get_mut(name) {
        members.remove(&conn);
        if members.is_empty() {
            groups.remove(name);
        }
    }
}

fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

impl Fake {
    fn open_conn(&mut self, id: ConnectionId) -> Result<&mut Conn, Error> {
        match self.connections.get_mut(&id) {
            Some(conn) if conn.closed.is_some() => Err(Error::Closed),
            Some(conn) => Ok(conn),
            None => Err(Error::UnknownConnection),
        }
    }

    /// Queues `msg` for every open member but `except`; how many got it.
    fn deliver(
        &mut self,
        ids: Vec<ConnectionId>,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> u32 {
        let mut sent = 0;
        for id in ids {
            if Some(id) == except {
                continue;
            }
            if let Ok(conn) = self.open_conn(id) {
                conn.received.push(msg.clone());
                sent += 1;
            }
        }
        sent
    }

    /// [`Fake::deliver`] for what is published to channels and tags: the
    /// connection whose `on-open` is running gets it after `on-open`.
    fn deliver_published(
        &mut self,
        ids: Vec<ConnectionId>,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> u32 {
        let held = self
            .opening
            .filter(|id| ids.contains(id) && except != Some(*id));
        let others = ids.into_iter().filter(|id| Some(*id) != held).collect();
        let sent = self.deliver(others, msg, except);
        match held {
            Some(_) => {
                self.held.push(msg.clone());
                sent + 1
            }
            None => sent,
        }
    }

    fn subscribers_of(&self, channel: &str) -> Vec<ConnectionId> {
        self.channels
            .get(channel)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Publishes to a recorded channel: recorded, then delivered.
    fn publish_recorded(
        &mut self,
        channel: &str,
        publication: &Publication,
        except: Option<ConnectionId>,
    ) -> Result<Published, HistoryError> {
        if self.history.unavailable {
            return Err(HistoryError::Unavailable);
        }
        let (position, msg) = self.history.record(channel, publication, self.clock_ms);
        self.published.push((channel.to_owned(), msg.clone()));
        let ids = self.subscribers_of(channel);
        let delivered = self.deliver_published(ids, &msg, except);
        Ok(Published {
            delivered,
            position,
        })
    }

    /// The live value at `key`: an expired one is absent.
    fn state_entry(&self, key: &str) -> Option<&StateEntry> {
        let now = self.clock_ms;
        self.state
            .get(key)
            .filter(|e| e.expires_ms.is_none_or(|at| at > now))
    }

    /// Sets or (with `None`) deletes `key`, within the server's default
    /// quota: keys, values and 64 bytes per entry.
    fn put_state(
        &mut self,
        key: &str,
        new: Option<(Vec<u8>, Option<u64>)>,
    ) -> Result<(), StateError> {
        let now = self.clock_ms;
        self.state
            .retain(|_, e| e.expires_ms.is_none_or(|at| at > now));
        let Some((value, expires_ms)) = new else {
            self.state.remove(key);
            return Ok(());
        };
        let cost = |k: &str, v: &[u8]| k.len() + v.len() + STATE_ENTRY_OVERHEAD;
        let others: usize = self
            .state
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(k, e)| cost(k, &e.value))
            .sum();
        if others + cost(key, &value) > STATE_BYTES {
            return Err(StateError::LimitReached);
        }
        let entry = StateEntry { value, expires_ms };
        self.state.insert(key.to_owned(), entry);
        Ok(())
    }

    fn forget(&mut self, id: ConnectionId) {
        for members in self.channels.values_mut().chain(self.tags.values_mut()) {
            members.remove(&id);
        }
        self.channels.retain(|_, m| !m.is_empty());
        self.tags.retain(|_, m| !m.is_empty());
    }
}

/// What a name (channel, tag, key) may be: as the server checks it.
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 256 {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// A state key as the server checks it.
fn check_state_key(key: &str) -> Result<(), StateError> {
    check_name(key).map_err(|_| StateError::InvalidArgument)
}

/// A counter as the server (and Redis) keeps one: the canonical decimal
/// text of an i64.
fn parse_counter(value: &[u8]) -> Result<i64, StateError> {
    let n: Option<i64> = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
    n.filter(|n| n.to_string().as_bytes() == value)
        .ok_or(StateError::NotANumber)
}

/// The fake host calls, with the generated bindings' signatures: what
/// [`host`](crate::host) is with the `testing` feature.
pub mod fake_host {
    use super::*;

    pub fn send(conn: ConnectionId, msg: &Message) -> Result<(), Error> {
        crate::batch::delivered();
        with(|f| {
            f.open_conn(conn)?.received.push(msg.clone());
            Ok(())
        })
    }

    pub fn broadcast(msg: &Message, except: Option<ConnectionId>) -> u32 {
        crate::batch::delivered();
        with(|f| {
            let ids = f.connections.keys().copied().collect();
            f.deliver(ids, msg, except)
        })
    }

    pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), Error> {
        crate::batch::delivered();
        let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
        if !sendable || reason.len() > 123 {
            return Err(Error::InvalidArgument);
        }
        with(|f| {
            f.open_conn(conn)?.closed = Some((code, reason.to_owned()));
            Ok(())
        })
    }

    pub fn subscribe(conn: ConnectionId, channel: &str) -> Result<(), Error> {
        check_name(channel)?;
        with(|f| {
            f.open_conn(conn)?;
            f.channels
                .entry(channel.to_owned())
                .or_default()
                .insert(conn);
            Ok(())
        })
    }

    pub fn unsubscribe(conn: ConnectionId, channel: &str) -> Result<(), Error> {
        with(|f| {
            if !f.connections.contains_key(&conn) {
                return Err(Error::UnknownConnection);
            }
            leave(&mut f.channels, conn, channel);
            Ok(())
        })
    }

    /// To a recorded channel, as [`publish_recorded`] with a plain
    /// message; if the history backend is unavailable, nothing is sent and
    /// the answer is [`Error::LimitReached`], as the server answers.
    pub fn publish(
        channel: &str,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> Result<u32, Error> {
        crate::batch::delivered();
        check_name(channel)?;
        with(|f| {
            if f.history.records(channel) {
                let plain = Publication::Plain(msg.clone());
                return match f.publish_recorded(channel, &plain, except) {
                    Ok(published) => Ok(published.delivered),
                    Err(_) => Err(Error::LimitReached),
                };
            }
            f.published.push((channel.to_owned(), msg.clone()));
            let ids = f.subscribers_of(channel);
            Ok(f.deliver_published(ids, msg, except))
        })
    }

    pub fn publish_recorded(
        channel: &str,
        publication: &Publication,
        except: Option<ConnectionId>,
    ) -> Result<Published, HistoryError> {
        crate::batch::delivered();
        check_name(channel).map_err(|_| HistoryError::InvalidArgument)?;
        with(|f| {
            if !f.history.records(channel) {
                return Err(HistoryError::NotRecorded);
            }
            f.publish_recorded(channel, publication, except)
        })
    }

    pub fn history(
        channel: &str,
        since: Option<&Position>,
        limit: u32,
    ) -> Result<HistoryPage, HistoryError> {
        check_name(channel).map_err(|_| HistoryError::InvalidArgument)?;
        if limit == 0 {
            return Err(HistoryError::InvalidArgument);
        }
        with(|f| {
            if !f.history.records(channel) {
                return Err(HistoryError::NotRecorded);
            }
            if f.history.unavailable {
                return Err(HistoryError::Unavailable);
            }
            Ok(f.history.page(channel, since, limit, f.clock_ms))
        })
    }

    pub fn channels() -> Vec<String> {
        with(|f| f.channels.keys().cloned().collect())
    }

    pub fn subscribers(channel: &str) -> Vec<ConnectionId> {
        with(|f| f.subscribers_of(channel))
    }

    /// The fake is one node: as [`channels`].
    pub fn node_channels() -> Vec<String> {
        channels()
    }

    /// The fake is one node: as [`subscribers`].
    pub fn node_subscribers(channel: &str) -> Vec<ConnectionId> {
        subscribers(channel)
    }

    pub fn connections() -> Vec<ConnectionId> {
        with(|f| f.connections.keys().copied().collect())
    }

    pub fn connection_count() -> u32 {
        with(|f| f.connections.len() as u32)
    }

    /// The fake is one node: as [`connection_count`].
    pub fn node_connection_count() -> u32 {
        connection_count()
    }

    pub fn get_attribute(conn: ConnectionId, key: &str) -> Result<Option<String>, Error> {
        with(|f| {
            let conn = f.connections.get(&conn).ok_or(Error::UnknownConnection)?;
            Ok(conn.attributes.get(key).cloned())
        })
    }

    pub fn set_attribute(conn: ConnectionId, key: &str, value: Option<&str>) -> Result<(), Error> {
        check_name(key)?;
        with(|f| {
            let conn = f
                .connections
                .get_mut(&conn)
                .ok_or(Error::UnknownConnection)?;
            match value {
                Some(value) => conn.attributes.insert(key.to_owned(), value.to_owned()),
                None => conn.attributes.remove(key),
            };
            Ok(())
        })
    }

    pub fn tag(conn: ConnectionId, tag: &str) -> Result<(), Error> {
        check_name(tag)?;
        with(|f| {
            f.open_conn(conn)?;
            f.tags.entry(tag.to_owned()).or_default().insert(conn);
            Ok(())
        })
    }

    pub fn untag(conn: ConnectionId, tag: &str) -> Result<(), Error> {
        with(|f| {
            if !f.connections.contains_key(&conn) {
                return Err(Error::UnknownConnection);
            }
            leave(&mut f.tags, conn, tag);
            Ok(())
        })
    }

    pub fn tagged(tag: &str) -> Vec<ConnectionId> {
        with(|f| {
            f.tags
                .get(tag)
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    /// The fake is one node: as [`tagged`].
    pub fn node_tagged(tag: &str) -> Vec<ConnectionId> {
        tagged(tag)
    }

    pub fn send_to_tag(
        tag: &str,
        msg: &Message,
        except: Option<ConnectionId>,
    ) -> Result<u32, Error> {
        crate::batch::delivered();
        check_name(tag)?;
        with(|f| {
            let ids = f.tags.get(tag).map(|m| m.iter().copied().collect());
            Ok(f.deliver_published(ids.unwrap_or_default(), msg, except))
        })
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with(|f| f.state_entry(key).map(|e| e.value.clone()))
    }

    pub fn state_set(key: &str, value: Option<&[u8]>) -> Result<(), Error> {
        check_name(key)?;
        with(|f| f.put_state(key, value.map(|v| (v.to_vec(), None))))
            .map_err(|_| Error::LimitReached)
    }

    pub fn state_increment(key: &str, delta: i64) -> Result<i64, StateError> {
        check_state_key(key)?;
        with(|f| {
            let (current, expires) = match f.state_entry(key) {
                Some(e) => (parse_counter(&e.value)?, e.expires_ms),
                None => (0, None),
            };
            let next = current.checked_add(delta).ok_or(StateError::NotANumber)?;
            f.put_state(key, Some((next.to_string().into_bytes(), expires)))?;
            Ok(next)
        })
    }

    pub fn state_compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_state_key(key)?;
        with(|f| {
            if f.state_entry(key).map(|e| &e.value[..]) != expected {
                return Ok(false);
            }
            f.put_state(key, new.map(|v| (v.to_vec(), None)))?;
            Ok(true)
        })
    }

    pub fn state_set_expiring(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        check_state_key(key)?;
        if ttl_ms == 0 {
            return Err(StateError::InvalidArgument);
        }
        with(|f| {
            let at = f.clock_ms.saturating_add(ttl_ms);
            f.put_state(key, Some((value.to_vec(), Some(at))))
        })
    }

    pub fn state_keys(prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        let limit = (limit as usize).min(STATE_KEYS_LISTED);
        with(|f| {
            let now = f.clock_ms;
            Ok(f.state
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.expires_ms.is_none_or(|at| at > now))
                .map(|(k, _)| k.clone())
                .take(limit)
                .collect())
        })
    }

    pub fn set_timer(delay_ms: u32, repeat: bool) -> Result<u64, Error> {
        if delay_ms < 10 {
            return Err(Error::InvalidArgument);
        }
        with(|f| {
            f.next_timer += 1;
            f.timers.insert(f.next_timer, (delay_ms, repeat));
            Ok(f.next_timer)
        })
    }

    pub fn cancel_timer(id: u64) -> bool {
        with(|f| f.timers.remove(&id).is_some())
    }

    /// Records the upstream; the test opens it with
    /// [`FakeHost::upstream_opened`]. Only `ws://` and `wss://` URLs, and
    /// [`MAX_UPSTREAMS`] at once, as the server allows; the sidecar's
    /// `allowed_outbound_hosts` is not checked here.
    pub fn upstream_connect(
        url: &str,
        _protocols: &[String],
        _headers: &[(String, String)],
    ) -> Result<UpstreamId, UpstreamError> {
        let scheme_ok = url.starts_with("ws://") || url.starts_with("wss://");
        if !scheme_ok || url.len() <= "wss://".len() {
            return Err(UpstreamError::InvalidUrl);
        }
        with(|f| {
            if f.upstreams.len() >= MAX_UPSTREAMS {
                return Err(UpstreamError::LimitReached);
            }
            f.next_upstream += 1;
            let id = f.next_upstream;
            f.upstreams.insert(id, Upstream::default());
            f.upstream_connects.push((id, url.to_owned()));
            Ok(id)
        })
    }

    pub fn upstream_send(id: UpstreamId, msg: &Message) -> Result<(), UpstreamError> {
        with(|f| match f.upstreams.get_mut(&id) {
            None => Err(UpstreamError::UnknownUpstream),
            Some(up) if up.closed.is_some() => Err(UpstreamError::Closed),
            Some(up) => {
                up.sent.push(msg.clone());
                Ok(())
            }
        })
    }

    pub fn upstream_close(id: UpstreamId, code: u16, reason: &str) -> Result<(), UpstreamError> {
        let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
        if !sendable || reason.len() > 123 {
            return Err(UpstreamError::InvalidArgument);
        }
        with(|f| match f.upstreams.get_mut(&id) {
            None => Err(UpstreamError::UnknownUpstream),
            Some(up) if up.closed.is_some() => Err(UpstreamError::Closed),
            Some(up) => {
                up.closed = Some((code, reason.to_owned()));
                Ok(())
            }
        })
    }

    /// Connecting or open: not closed by the plugin, not closed by the test.
    pub fn upstreams() -> Vec<UpstreamId> {
        with(|f| {
            f.upstreams
                .iter()
                .filter(|(_, up)| up.closed.is_none())
                .map(|(id, _)| *id)
                .collect()
        })
    }

    pub fn log(level: LogLevel, msg: &str) {
        with(|f| f.logs.push((level, msg.to_owned())));
    }
}

/// [`http::request`] with the `testing` feature: recorded, then answered
/// by the test's handler; without one, denied, as by a server that granted
/// the plugin nothing.
pub(crate) fn fake_http(req: http::Request) -> Result<http::Response, HttpError> {
    http::split_url(&req.url)?;
    let handler = with(|f| {
        f.http_requests.push(req.clone());
        f.http_handler.take()
    });
    let Some(mut handler) = handler else {
        return Err(HttpError::Denied);
    };
    // Called outside the fake's borrow: the handler may use the host too.
    let answer = handler(&req);
    // Unless the handler set another meanwhile.
    with(|f| {
        f.http_handler.get_or_insert(handler);
    });
    answer
}

/// A handshake request for [`FakeHost::open`], built up from its path.
pub fn request(path: &str) -> Request {
    Request {
        path: path.to_owned(),
        route: path.to_owned(),
        params: Vec::new(),
        query: Vec::new(),
        headers: Vec::new(),
        cookies: Vec::new(),
        remote_addr: "127.0.0.1:40000".to_owned(),
        subprotocols: Vec::new(),
        protocol: None,
    }
}

impl Request {
    /// The route pattern the request matched (default: its path).
    pub fn with_route(mut self, route: &str) -> Self {
        self.route = route.to_owned();
        self
    }
    /// A route parameter; `channel` subscribes the connection, as the
    /// server does.
    pub fn with_param(mut self, key: &str, value: &str) -> Self {
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }
    pub fn with_query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }
    /// A header (names are lower-cased, as the server hands them over).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }
}

/// Drives listener `L` against this thread's in-memory host, as the server
/// would, and shows what it did.
pub struct FakeHost<L: Listener> {
    listener: PhantomData<fn() -> L>,
}

impl<L: Listener> Default for FakeHost<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Listener> FakeHost<L> {
    /// A fresh host: this thread's connections, channels, state and
    /// timers start empty.
    pub fn new() -> Self {
        with(|f| *f = Fake::default());
        FakeHost {
            listener: PhantomData,
        }
    }

    /// Opens a connection: `on-first-open` for its route's first, the
    /// `channel` route parameter subscribed, then `on-open`. A greeting is
    /// the first message received, and what was published to the
    /// connection's channels and tags while `on-open` ran follows what
    /// `on-open` sent it, as the server delivers it; a rejection leaves
    /// nothing behind.
    pub fn open(&self, req: Request) -> Result<ConnectionId, Rejection> {
        let route = req.route.clone();
        let channel = req
            .params
            .iter()
            .find(|(k, _)| k == "channel")
            .map(|(_, v)| v.clone());
        let id = with(|f| {
            f.next_id += 1;
            let id = f.next_id;
            let conn = Conn {
                route: route.clone(),
                ..Conn::default()
            };
            f.connections.insert(id, conn);
            id
        });
        let first = with(|f| {
            let open = f.open_routes.entry(route.clone()).or_default();
            *open += 1;
            *open == 1
        });
        if first {
            L::on_first_open(route.clone());
        }
        if let Some(channel) = channel {
            let _ = fake_host::subscribe(id, &channel);
        }
        with(|f| f.opening = Some(id));
        let decision = L::on_open(id, req);
        let held = with(|f| {
            f.opening = None;
            std::mem::take(&mut f.held)
        });
        let accepted = |greeting: Option<Message>| {
            with(|f| {
                if let Some(conn) = f.connections.get_mut(&id) {
                    conn.received.splice(0..0, greeting);
                    conn.received.extend(held);
                }
            })
        };
        match decision {
            OpenDecision::Accept => {
                accepted(None);
                Ok(id)
            }
            OpenDecision::Greet(msg) => {
                accepted(Some(msg));
                Ok(id)
            }
            OpenDecision::Reject(rejection) => {
                self.unregister(id, &route);
                Err(rejection)
            }
        }
    }

    /// A message from the client; the hook's reply, if any.
    pub fn message(&self, conn: ConnectionId, msg: Message) -> Option<Message> {
        L::on_message(conn, msg)
    }

    /// A burst of messages from the client in one `on-messages` call, as
    /// the server makes it: the results of the messages it handled, in
    /// order, which stop after the first whose handling delivered to
    /// connections or closed one (the server hands the rest to the next
    /// call).
    pub fn messages(&self, conn: ConnectionId, msgs: Vec<Message>) -> Vec<Option<Message>> {
        crate::batch::handle(msgs, |msg| L::on_message(conn, msg))
    }

    /// A text message from the client; the hook's reply, if any.
    pub fn send_text(&self, conn: ConnectionId, text: &str) -> Option<Message> {
        self.message(conn, Message::text(text))
    }

    /// The client goes away with `code`: `on-close`, then `on-last-close`
    /// for its route's last connection.
    pub fn close(&self, conn: ConnectionId, code: u16, reason: &str) {
        let Some(route) = with(|f| f.connections.get(&conn).map(|c| c.route.clone())) else {
            return;
        };
        L::on_close(conn, code, reason.to_owned());
        self.unregister(conn, &route);
    }

    fn unregister(&self, conn: ConnectionId, route: &str) {
        let last = with(|f| {
            f.connections.remove(&conn);
            f.forget(conn);
            let open = f.open_routes.entry(route.to_owned()).or_default();
            *open = open.saturating_sub(1);
            *open == 0
        });
        if last {
            L::on_last_close(route.to_owned());
        }
    }

    /// A push through the publish API (`on-push`).
    pub fn push(&self, payload: Message) {
        L::on_push(payload);
    }

    /// Fires every pending timer once, as if its delay had passed; one-shot
    /// timers are then gone. Returns the ids fired.
    pub fn fire_timers(&self) -> Vec<u64> {
        let due: Vec<(u64, bool)> = with(|f| {
            f.timers
                .iter()
                .map(|(id, (_, repeat))| (*id, *repeat))
                .collect()
        });
        for (id, repeat) in &due {
            if !repeat {
                with(|f| f.timers.remove(id));
            }
            L::on_timer(*id);
        }
        due.into_iter().map(|(id, _)| id).collect()
    }

    /// What was sent to `conn` since the last look (greeting, replies are
    /// not included: `message` returns those).
    pub fn received(&self, conn: ConnectionId) -> Vec<Message> {
        with(|f| {
            f.connections
                .get_mut(&conn)
                .map(|c| std::mem::take(&mut c.received))
                .unwrap_or_default()
        })
    }

    /// The texts sent to `conn` since the last look.
    pub fn received_texts(&self, conn: ConnectionId) -> Vec<String> {
        self.received(conn)
            .into_iter()
            .filter_map(|m| m.as_text().map(str::to_owned))
            .collect()
    }

    /// How the plugin closed `conn`, if it did.
    pub fn closed(&self, conn: ConnectionId) -> Option<(u16, String)> {
        with(|f| f.connections.get(&conn).and_then(|c| c.closed.clone()))
    }

    /// Every publish so far: channel and message.
    pub fn published(&self) -> Vec<(String, Message)> {
        with(|f| f.published.clone())
    }

    /// Pending timers: id, delay and whether they repeat.
    pub fn timers(&self) -> Vec<(u64, u32, bool)> {
        with(|f| f.timers.iter().map(|(id, (d, r))| (*id, *d, *r)).collect())
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        with(|f| f.logs.clone())
    }

    /// Records channel history as a sidecar's `[history]` table would,
    /// from now on (what is kept stays, within the new bounds).
    pub fn record_history(&self, config: HistoryConfig) {
        with(|f| f.history.configure(config));
    }

    /// Every channel's history is lost, as when a server without Redis
    /// restarts: the next message starts a new epoch, so a client's old
    /// position is not recovered.
    pub fn lose_history(&self) {
        with(|f| f.history.lose());
    }

    /// While `failing`, history calls and `publish-recorded` fail with
    /// [`HistoryError::Unavailable`], and `publish` to a recorded channel
    /// with [`Error::LimitReached`], as when Redis does not answer. (The
    /// server's per-hook delivery budget, `limit-reached`, is not
    /// modelled.)
    pub fn history_unavailable(&self, failing: bool) {
        with(|f| f.history.unavailable = failing);
    }

    /// Moves the clock that state deadlines (`state_set_expiring`) and
    /// history ages (`[history] ttl`) are read against, so a test sees
    /// keys and messages expire without waiting. Timers are not affected:
    /// [`FakeHost::fire_timers`] fires them.
    pub fn advance_clock(&self, by: Duration) {
        with(|f| f.clock_ms = f.clock_ms.saturating_add(by.as_millis() as u64));
    }

    /// Answers the plugin's HTTP requests from now on, e.g. with canned
    /// responses by URL or an error such as [`HttpError::Timeout`]. Until
    /// a handler is set, every request fails with [`HttpError::Denied`].
    ///
    /// ```ignore
    /// host.on_http(|req| match req.url.as_str() {
    ///     "https://auth.example.com/check" => Ok(http::Response::new(200, "ok")),
    ///     _ => Err(HttpError::Denied),
    /// });
    /// ```
    pub fn on_http(
        &self,
        handler: impl FnMut(&http::Request) -> Result<http::Response, HttpError> + 'static,
    ) {
        with(|f| f.http_handler = Some(Box::new(handler)));
    }

    /// Every HTTP request the plugin made so far, answered or not.
    pub fn http_requests(&self) -> Vec<http::Request> {
        with(|f| f.http_requests.clone())
    }

    /// Every `upstream-connect` that returned an id so far, with its URL.
    pub fn upstream_connects(&self) -> Vec<(UpstreamId, String)> {
        with(|f| f.upstream_connects.clone())
    }

    /// The upstream's handshake succeeded: `on-upstream-open`.
    pub fn upstream_opened(&self, id: UpstreamId) {
        L::on_upstream_open(id);
    }

    /// A message from the upstream: `on-upstream-message`.
    pub fn upstream_message(&self, id: UpstreamId, msg: Message) {
        L::on_upstream_message(id, msg);
    }

    /// The upstream closed (or never opened: 1006 and a reason, as the
    /// server reports a failed connect): it is gone, then
    /// `on-upstream-close`.
    pub fn upstream_closed(&self, id: UpstreamId, code: u16, reason: &str) {
        with(|f| f.upstreams.remove(&id));
        L::on_upstream_close(id, code, reason.to_owned());
    }

    /// What the plugin sent the upstream since the last look.
    pub fn sent_upstream(&self, id: UpstreamId) -> Vec<Message> {
        with(|f| {
            f.upstreams
                .get_mut(&id)
                .map(|up| std::mem::take(&mut up.sent))
                .unwrap_or_default()
        })
    }

    /// How the plugin closed the upstream, if it did (and the test has not
    /// closed it since).
    pub fn upstream_closed_by_plugin(&self, id: UpstreamId) -> Option<(u16, String)> {
        with(|f| f.upstreams.get(&id).and_then(|up| up.closed.clone()))
    }
}

/// The WebSocket client crate [`Server::connect`] uses, for its `Message`.
pub use tungstenite;

/// A blocking WebSocket client, from the tungstenite crate.
pub type Client = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// A `wsgate` serving one built plugin, for an integration test; stopped
/// when dropped.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// `ws://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A WebSocket client connected to `path` (with its query); the upgrade's
    /// refusal, if any, is the error (its HTTP status in
    /// `tungstenite::Error::Http`).
    pub fn connect(&self, path: &str) -> tungstenite::Result<Client> {
        let (client, _response) = tungstenite::connect(self.url(path))?;
        Ok(client)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop (the SDK takes no dependencies for tests).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `wsgate` (the `WSGATE_BIN` environment variable, else `wsgate` on
/// the PATH; `wsgate test` sets it) serving the plugin at `wasm` (and its sidecar `NAME.toml`
/// beside it, if any) on a free port, and waits until it is ready.
pub fn serve(wasm: &Path) -> std::io::Result<Server> {
    let name = wasm
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file", wasm.display())))?;
    let dir = std::env::temp_dir().join(format!(
        "wsgate-serve-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir)?;
    let dir = TempDir(dir);
    std::fs::copy(wasm, dir.0.join(name))?;
    let sidecar = wasm.with_extension("toml");
    if sidecar.exists() {
        std::fs::copy(&sidecar, dir.0.join(name).with_extension("toml"))?;
    }
    let bin = match std::env::var_os("WSGATE_BIN") {
        // Absolute: the server runs in the temporary directory.
        Some(bin) => std::path::absolute(bin)?.into_os_string(),
        None => "wsgate".into(),
    };
    let port = free_port()?;
    let log = dir.0.join("wsgate.log");
    let out = std::fs::File::create(&log)?;
    let mut command = Command::new(&bin);
    // The test's settings only: no wsgate.toml (the temporary directory has
    // none) and no inherited WSGATE_* variables.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSGATE_") {
            command.env_remove(key);
        }
    }
    let child = command
        .current_dir(&dir.0)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins")
        .arg(&dir.0)
        .args(["--no-admin", "--no-watch"])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot run {} ({e}): set WSGATE_BIN or put wsgate on the PATH",
                Path::new(&bin).display()
            ))
        })?;
    let mut server = Server {
        child,
        port,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(port) {
        if let Some(status) = server.child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "wsgate exited with {status}:\n{}",
                server.logs()
            )));
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "wsgate not ready after 120 s:\n{}",
                server.logs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// Whether `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;
    use crate::http::{Response, get};

    struct Nothing;
    impl Listener for Nothing {}

    /// Echoes, and sends `pub` to the sender as well before echoing it.
    struct Sender;
    impl Listener for Sender {
        fn on_message(conn: ConnectionId, msg: Message) -> Option<Message> {
            if msg.as_text() == Some("pub") {
                host::send(conn, &Message::text("sent")).unwrap();
            }
            Some(msg)
        }
    }

    #[test]
    fn a_batch_stops_after_a_message_that_delivered() {
        let fake = FakeHost::<Sender>::new();
        let conn = fake.open(request("/ws/x")).unwrap();
        let msgs = ["a", "b", "pub", "c"].map(Message::text).to_vec();
        let results = fake.messages(conn, msgs);
        assert_eq!(
            results,
            ["a", "b", "pub"].map(|t| Some(Message::text(t))).to_vec()
        );
        assert_eq!(fake.received_texts(conn), ["sent"]);
        let rest = fake.messages(conn, vec![Message::text("c"), Message::text("d")]);
        assert_eq!(rest.len(), 2, "a fresh call starts afresh");
    }

    #[test]
    fn state_calls_behave_as_the_servers() {
        let fake = FakeHost::<Nothing>::new();
        assert_eq!(host::state_increment("n", 5), Ok(5));
        assert_eq!(host::state_increment("n", -7), Ok(-2));
        assert_eq!(host::state_get("n"), Some(b"-2".to_vec()));
        host::state_set("s", Some(b"07")).unwrap();
        assert_eq!(host::state_increment("s", 1), Err(StateError::NotANumber));
        host::state_set("max", Some(i64::MAX.to_string().as_bytes())).unwrap();
        assert_eq!(host::state_increment("max", 1), Err(StateError::NotANumber));
        assert_eq!(
            host::state_increment("", 1),
            Err(StateError::InvalidArgument)
        );

        assert_eq!(
            host::state_compare_and_swap("c", Some(b"x"), Some(b"y")),
            Ok(false)
        );
        assert_eq!(
            host::state_compare_and_swap("c", None, Some(b"x")),
            Ok(true)
        );
        assert_eq!(
            host::state_compare_and_swap("c", None, Some(b"y")),
            Ok(false)
        );
        assert_eq!(
            host::state_compare_and_swap("c", Some(b"x"), None),
            Ok(true)
        );
        assert_eq!(host::state_get("c"), None);

        for key in ["user:b", "user:a", "users", "room"] {
            host::state_set(key, Some(b"1")).unwrap();
        }
        assert_eq!(
            host::state_keys("user:", 10),
            Ok(vec!["user:a".into(), "user:b".into()])
        );
        assert_eq!(host::state_keys("", 2), Ok(vec!["max".into(), "n".into()]));

        assert_eq!(
            host::state_set_expiring("t", b"v", 0),
            Err(StateError::InvalidArgument)
        );
        host::state_set_expiring("t", b"v", 100).unwrap();
        host::state_set_expiring("kept", b"v", 100).unwrap();
        host::state_set("kept", Some(b"w")).unwrap();
        host::state_set_expiring("counter", b"1", 100).unwrap();
        assert_eq!(host::state_increment("counter", 1), Ok(2));
        fake.advance_clock(Duration::from_millis(99));
        assert_eq!(host::state_get("t"), Some(b"v".to_vec()));
        fake.advance_clock(Duration::from_millis(1));
        assert_eq!(host::state_get("t"), None);
        assert_eq!(
            host::state_get("counter"),
            None,
            "an increment keeps the deadline"
        );
        assert_eq!(host::state_get("kept"), Some(b"w".to_vec()));
        assert_eq!(host::state_keys("t", 10), Ok(vec![]));
    }

    #[test]
    fn state_is_bounded_like_the_servers() {
        let _fake = FakeHost::<Nothing>::new();
        let big = vec![0u8; 1 << 20];
        let stored = (0..20)
            .take_while(|i| host::state_set(&format!("k{i}"), Some(&big)).is_ok())
            .count();
        assert_eq!(
            stored, 15,
            "16 MiB, entries counted with their keys and overhead"
        );
        assert_eq!(
            host::state_set_expiring("more", &big, 1000),
            Err(StateError::LimitReached)
        );
        host::state_set("k0", None).unwrap();
        host::state_set_expiring("more", &big, 1000).unwrap();
    }

    fn texts(page: &HistoryPage) -> Vec<String> {
        let text = |e: &crate::HistoryEntry| e.msg.as_text().unwrap().to_owned();
        page.entries.iter().map(text).collect()
    }

    fn offsets(page: &HistoryPage) -> Vec<u64> {
        page.entries.iter().map(|e| e.position.offset).collect()
    }

    fn publish(channel: &str, text: &str) -> Position {
        let plain = Publication::plain(Message::text(text));
        host::publish_recorded(channel, &plain, None)
            .unwrap()
            .position
    }

    #[test]
    fn history_is_kept_only_where_the_sidecar_asks() {
        let fake = FakeHost::<Nothing>::new();
        let plain = Publication::plain(Message::text("x"));
        assert_eq!(
            host::publish_recorded("lobby", &plain, None),
            Err(HistoryError::NotRecorded),
            "nothing is recorded by default"
        );
        fake.record_history(HistoryConfig::channels(&["room:*", "lobby"]));
        assert_eq!(
            host::publish_recorded("lobby2", &plain, None),
            Err(HistoryError::NotRecorded)
        );
        assert_eq!(
            host::history("room", None, 10),
            Err(HistoryError::NotRecorded)
        );
        assert_eq!(
            host::publish_recorded("", &plain, None),
            Err(HistoryError::InvalidArgument)
        );
        assert_eq!(
            host::history("lobby", None, 0),
            Err(HistoryError::InvalidArgument)
        );
        assert!(host::publish_recorded("room:1", &plain, None).is_ok());
        assert!(host::publish_recorded("lobby", &plain, None).is_ok());
        host::publish("elsewhere", &Message::text("y"), None).unwrap();
        let published: Vec<String> = fake.published().into_iter().map(|(c, _)| c).collect();
        assert_eq!(published, ["room:1", "lobby", "elsewhere"]);
    }

    #[test]
    fn positions_count_from_one_and_fill_in_positioned_texts() {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["*"]));
        let a = fake
            .open(request("/ws/c").with_param("channel", "lobby"))
            .unwrap();
        let b = fake
            .open(request("/ws/c").with_param("channel", "lobby"))
            .unwrap();
        let empty = host::history("lobby", None, 10).unwrap();
        assert_eq!(empty.latest.offset, 0);
        assert!(empty.recovered && empty.entries.is_empty());
        let epoch = empty.latest.epoch;
        assert_eq!(epoch.len(), 16);

        let first = host::publish_recorded(
            "lobby",
            &Publication::positioned(r#"{"pos":""#, r#""}"#),
            Some(a),
        )
        .unwrap();
        assert_eq!(first.position, Position::new(&epoch, 1));
        assert_eq!(first.delivered, 1, "all subscribers but `except`");
        let expected = format!(r#"{{"pos":"{epoch}:1"}}"#);
        assert_eq!(fake.received_texts(b), [expected.as_str()]);
        assert!(fake.received(a).is_empty());
        // The old call records too, as plain messages.
        assert_eq!(host::publish("lobby", &Message::text("two"), None), Ok(2));
        assert_eq!(publish("lobby", "three"), Position::new(&epoch, 3));

        let all = host::history("lobby", None, 10).unwrap();
        assert_eq!(texts(&all), [expected.as_str(), "two", "three"]);
        assert_eq!(all.latest, Position::new(&epoch, 3));
        assert!(all.recovered);
        let since_one = host::history("lobby", Some(&Position::new(&epoch, 1)), 1).unwrap();
        assert_eq!(
            (texts(&since_one), since_one.recovered),
            (vec!["two".into()], true)
        );
        assert_eq!(since_one.latest.offset, 3, "more follow");
        let at_end = host::history("lobby", Some(&Position::new(&epoch, 3)), 10).unwrap();
        assert!(at_end.recovered && at_end.entries.is_empty());
        // Another channel has its own epoch and offsets.
        assert_eq!(publish("garden", "g").offset, 1);
        assert_ne!(
            host::history("garden", None, 1).unwrap().latest.epoch,
            epoch
        );
    }

    #[test]
    fn history_is_bounded_by_size_and_a_gap_past_it_is_not_recovered() {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["*"]).size(3));
        let positions: Vec<Position> = (1..=5).map(|i| publish("c", &i.to_string())).collect();
        let at = |offset: u64| positions[offset as usize - 1].clone();

        let all = host::history("c", None, 100).unwrap();
        assert_eq!(offsets(&all), [3, 4, 5]);
        assert!(!all.recovered, "1 and 2 were dropped");
        let page = host::history("c", Some(&at(2)), 100).unwrap();
        assert_eq!((offsets(&page), page.recovered), (vec![3, 4, 5], true));
        let page = host::history("c", Some(&at(1)), 2).unwrap();
        assert_eq!(
            (offsets(&page), page.recovered),
            (vec![3, 4], false),
            "2 is gone: from the oldest kept, as for no `since`"
        );
        let page = host::history("c", Some(&at(4)), 100).unwrap();
        assert_eq!((offsets(&page), page.recovered), (vec![5], true));

        let ahead = Position::new(at(5).epoch, 6);
        let page = host::history("c", Some(&ahead), 100).unwrap();
        assert_eq!((offsets(&page), page.recovered), (vec![3, 4, 5], false));
        let elsewhere = Position::new("0000000000000000", 4);
        let page = host::history("c", Some(&elsewhere), 100).unwrap();
        assert_eq!((offsets(&page), page.recovered), (vec![3, 4, 5], false));
        assert_eq!(page.latest, at(5));
    }

    #[test]
    fn history_ages_out_on_the_fake_clock() {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["*"]).ttl(Duration::from_secs(60)));
        let first = publish("c", "old");
        fake.advance_clock(Duration::from_secs(30));
        publish("c", "newer");
        fake.advance_clock(Duration::from_millis(29_999));
        let page = host::history("c", Some(&first), 10).unwrap();
        assert_eq!((texts(&page), page.recovered), (vec!["newer".into()], true));
        fake.advance_clock(Duration::from_millis(1));
        let page = host::history("c", None, 10).unwrap();
        assert_eq!(
            (texts(&page), page.recovered),
            (vec!["newer".into()], false)
        );
        let page = host::history("c", Some(&Position::new(&first.epoch, 0)), 10).unwrap();
        assert!(!page.recovered, "\"old\" aged out");
        assert!(host::history("c", Some(&first), 10).unwrap().recovered);
        fake.advance_clock(Duration::from_secs(30));
        let page = host::history("c", Some(&first), 10).unwrap();
        assert!(page.entries.is_empty() && !page.recovered);
        assert_eq!(page.latest.offset, 2, "positions go on");
        assert_eq!(publish("c", "next").offset, 3);
    }

    #[test]
    fn lost_history_starts_a_new_epoch() {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["*"]));
        publish("c", "a");
        let before = publish("c", "b");
        fake.lose_history();
        let after = publish("c", "c");
        assert_ne!(after.epoch, before.epoch);
        assert_eq!(after.offset, 1);
        let page = host::history("c", Some(&before), 10).unwrap();
        assert_eq!((texts(&page), page.recovered), (vec!["c".into()], false));
        assert!(host::history("c", None, 10).unwrap().recovered);
    }

    #[test]
    fn an_unavailable_history_fails_publishes_to_recorded_channels() {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["c"]));
        let conn = fake
            .open(request("/ws/c").with_param("channel", "c"))
            .unwrap();
        host::subscribe(conn, "other").unwrap();
        publish("c", "kept");
        fake.history_unavailable(true);
        let plain = Publication::plain(Message::text("x"));
        assert_eq!(
            host::publish_recorded("c", &plain, None),
            Err(HistoryError::Unavailable)
        );
        assert_eq!(host::history("c", None, 1), Err(HistoryError::Unavailable));
        assert_eq!(
            host::publish("c", &Message::text("lost"), None),
            Err(Error::LimitReached),
            "nothing sent, as the server"
        );
        assert_eq!(host::publish("other", &Message::text("live"), None), Ok(1));
        fake.history_unavailable(false);
        assert_eq!(fake.received_texts(conn), ["kept", "live"]);
        assert_eq!(texts(&host::history("c", None, 10).unwrap()), ["kept"]);
    }

    /// Publishes to its own channel, then sends to the connection itself.
    struct Announcer;

    impl Listener for Announcer {
        fn on_open(conn: ConnectionId, _req: Request) -> OpenDecision {
            host::publish("c", &Message::text("published"), None).unwrap();
            host::send(conn, &Message::text("sent")).unwrap();
            OpenDecision::Greet(Message::text("greeting"))
        }
    }

    #[test]
    fn what_is_published_during_on_open_follows_what_it_sends() {
        let fake = FakeHost::<Announcer>::new();
        let first = fake
            .open(request("/ws/c").with_param("channel", "c"))
            .unwrap();
        assert_eq!(
            fake.received_texts(first),
            ["greeting", "sent", "published"]
        );
        let second = fake
            .open(request("/ws/c").with_param("channel", "c"))
            .unwrap();
        assert_eq!(fake.received_texts(first), ["published"]);
        assert_eq!(
            fake.received_texts(second),
            ["greeting", "sent", "published"]
        );
    }

    #[test]
    fn node_local_presence_is_the_whole_fake() {
        let fake = FakeHost::<Nothing>::new();
        let conn = fake
            .open(request("/ws/c").with_param("channel", "c"))
            .unwrap();
        host::tag(conn, "t").unwrap();
        assert_eq!(host::node_channels(), host::channels());
        assert_eq!(host::node_subscribers("c"), [conn]);
        assert_eq!(host::node_tagged("t"), [conn]);
        assert_eq!(host::node_connection_count(), 1);
    }

    /// Fetches `?url=` on open and greets with the status or the error.
    struct Fetcher;

    impl Listener for Fetcher {
        fn on_open(_conn: ConnectionId, req: Request) -> OpenDecision {
            let url = req.query_param("url").unwrap_or_default();
            let greeting = match get(url, &[]) {
                Ok(resp) => format!("{} {}", resp.status, resp.text().unwrap_or("")),
                Err(e) => e.name().to_owned(),
            };
            OpenDecision::Greet(Message::text(greeting))
        }
    }

    #[test]
    fn http_requests_are_answered_by_the_tests_handler() {
        let host = FakeHost::<Fetcher>::new();
        let open = |url: &str| {
            let conn = host.open(request("/ws/f").with_query("url", url)).unwrap();
            host.received_texts(conn)
        };
        // No handler: denied, as by a server that granted nothing.
        assert_eq!(open("https://api.example.com/x"), ["denied"]);
        host.on_http(|req| match req.url.as_str() {
            "https://api.example.com/x" => Ok(Response::new(200, "hi").with_header("X-A", "1")),
            _ => Err(HttpError::Timeout),
        });
        assert_eq!(open("https://api.example.com/x"), ["200 hi"]);
        assert_eq!(open("https://slow.example.com/"), ["timeout"]);
        assert_eq!(open("ftp://example.com/"), ["invalid-url"]);
        let urls: Vec<String> = host.http_requests().into_iter().map(|r| r.url).collect();
        assert_eq!(
            urls,
            [
                "https://api.example.com/x",
                "https://api.example.com/x",
                "https://slow.example.com/"
            ]
        );
    }
}
