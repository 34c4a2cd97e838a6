//! The host imports a plugin calls: every one is scoped to the calling
//! plugin and answers bad input with a typed error instead of a trap. What
//! a plugin can make the server hold is bounded here: message sizes,
//! channels, tags and attribute bytes per connection, deliveries per hook
//! call, log lines; state is bounded by its store (`crate::state`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::wsgate::plugin::types::HistoryEntry;
use super::bindings::wsgate::plugin::{host, types};
use super::bindings::{
    Error, HistoryError, HistoryPage, LogLevel, Message, Position, Publication, Published,
    StateError as HostStateError, UpstreamError,
};
use super::env::PluginEnv;
use super::limits::InstanceLimits;
use super::plugin_log::Gate;
use crate::history::{self, Body};
use crate::outbound::http::HttpHooks;
use crate::outbound::upstream::CallError;
use crate::protocol::{Message as WsMessage, close};
use crate::registry::{ConnId, Connection, GroupKind, Listening, Scope, SendError, Target};
use crate::state::StateError;
use crate::text::printable;

/// The data of one instance's store.
pub struct HostState {
    pub env: Arc<PluginEnv>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Sends the plugin's `wasi:http` requests, within its grants.
    http_hooks: HttpHooks,
    table: ResourceTable,
    /// What the instance may hold, and how far its memory has grown.
    pub limits: InstanceLimits,
    /// When the running hook must stop; checked at every epoch tick.
    pub deadline: Instant,
    /// Deliveries the running hook call may still queue.
    deliveries_left: usize,
    /// The running call was told its delivery budget is spent (logged once).
    budget_warned: bool,
    /// The plugin exports the upstream hooks: it may open upstreams.
    pub(super) upstream_hooks: bool,
}

impl HostState {
    pub fn new(env: Arc<PluginEnv>) -> HostState {
        let limits = InstanceLimits::new(env.limits.instance_memory);
        HostState {
            wasi: env.wasi_ctx(),
            http: WasiHttpCtx::new(),
            http_hooks: HttpHooks::new(env.clone()),
            deliveries_left: env.limits.deliveries_per_hook,
            env,
            table: ResourceTable::new(),
            limits,
            deadline: Instant::now(),
            budget_warned: false,
            upstream_hooks: false,
        }
    }

    /// A hook call starts: its deadline, and a fresh delivery budget.
    pub(super) fn begin_call(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.deliveries_left = self.env.limits.deliveries_per_hook;
        self.budget_warned = false;
    }

    fn conn(&self, id: ConnId) -> Result<Arc<Connection>, Error> {
        self.env.scope.get(id).ok_or(Error::UnknownConnection)
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.len() > self.env.limits.max_name_len {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// A message a plugin sends: no bigger than a client may send.
    fn check_message(&self, msg: &Message) -> Result<(), Error> {
        let len = match msg {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        if len > self.env.limits.max_message_size {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// Queues `msg` through `deliver` if it is within the size limit and
    /// the call's delivery budget is not spent; the recipients count
    /// against the budget (so one call can go past it by one delivery's
    /// recipients, never further).
    fn deliver(
        &mut self,
        msg: Message,
        deliver: impl FnOnce(&Scope, WsMessage) -> u32,
    ) -> Result<u32, Error> {
        self.check_message(&msg)?;
        self.budget_left()?;
        let sent = deliver(&self.env.scope, msg.into());
        self.spend(sent);
        Ok(sent)
    }

    /// Whether the call may still deliver (a refusal is logged once).
    fn budget_left(&mut self) -> Result<(), Error> {
        if self.deliveries_left > 0 {
            return Ok(());
        }
        if !std::mem::replace(&mut self.budget_warned, true) {
            tracing::warn!(plugin = %self.env.name,
                "a hook call queued more than limits.deliveries_per_hook ({}) messages; further sends in this call fail",
                self.env.limits.deliveries_per_hook);
        }
        Err(Error::LimitReached)
    }

    fn spend(&mut self, sent: u32) {
        self.deliveries_left = self.deliveries_left.saturating_sub(sent as usize);
    }

    /// Records `body` on a recorded channel and has it delivered, within
    /// the size limit and the call's delivery budget.
    async fn record(
        &mut self,
        channel: String,
        body: Body,
        except: Option<ConnId>,
    ) -> Result<history::Published, HistoryError> {
        if self.check_name(&channel).is_err() || body.max_len() > self.env.limits.max_message_size {
            return Err(HistoryError::InvalidArgument);
        }
        self.budget_left().map_err(|_| HistoryError::LimitReached)?;
        let env = self.env.clone();
        let publish = history::Publish {
            scope: &env.scope,
            recording: &env.recording,
            channel: &channel,
            body,
            except,
            idempotency: None,
        };
        let published = env.history.publish(publish).await.map_err(history_error)?;
        self.spend(published.delivered);
        Ok(published)
    }

    /// Adds `conn` to a channel or tag, within the per-connection cap.
    /// Returns, in a cluster, what to wait on until the node hears the
    /// group's deliveries from other nodes (the first member of a group's
    /// partition only, a bounded wait): the host call returns after it, so
    /// what another node sends right after the plugin announced the member
    /// is not lost.
    fn join(
        &self,
        kind: GroupKind,
        conn: ConnId,
        name: String,
    ) -> Result<Option<Listening>, Error> {
        self.check_name(&name)?;
        let conn = self.conn(conn)?;
        if conn.is_closing() {
            return Err(Error::Closed);
        }
        let cap = match kind {
            GroupKind::Channel => self.env.limits.channels_per_connection,
            GroupKind::Tag => self.env.limits.tags_per_connection,
        };
        if !conn.may_join(kind, &name, cap) {
            return Err(Error::LimitReached);
        }
        Ok(match kind {
            GroupKind::Channel => self.env.scope.subscribe(&conn, &name),
            GroupKind::Tag => self.env.scope.tag(&conn, &name),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // A request made now must end by the running hook's deadline.
        self.http_hooks.deadline = self.deadline;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// A join's answer once the node hears the group.
async fn joined(join: Result<Option<Listening>, Error>) -> Result<(), Error> {
    if let Some(listening) = join? {
        listening.await;
    }
    Ok(())
}

/// A state error as the WIT has it; why a backend failed stays in the log.
fn state_error(e: StateError) -> HostStateError {
    match e {
        StateError::LimitReached => HostStateError::LimitReached,
        StateError::InvalidArgument => HostStateError::InvalidArgument,
        StateError::NotANumber => HostStateError::NotANumber,
        StateError::Unavailable(_) => HostStateError::Unavailable,
    }
}

fn upstream_error(e: CallError) -> UpstreamError {
    match e {
        CallError::InvalidUrl => UpstreamError::InvalidUrl,
        CallError::Denied => UpstreamError::Denied,
        CallError::LimitReached => UpstreamError::LimitReached,
        CallError::UnknownUpstream => UpstreamError::UnknownUpstream,
        CallError::Closed => UpstreamError::Closed,
        CallError::QueueFull => UpstreamError::QueueFull,
        CallError::InvalidArgument => UpstreamError::InvalidArgument,
    }
}

/// A history error as the WIT has it; why a backend failed stays in the log.
fn history_error(e: history::HistoryError) -> HistoryError {
    match e {
        history::HistoryError::NotRecorded => HistoryError::NotRecorded,
        history::HistoryError::InvalidArgument => HistoryError::InvalidArgument,
        history::HistoryError::Unavailable(_) => HistoryError::Unavailable,
    }
}

fn position(p: history::Position) -> Position {
    Position {
        epoch: p.epoch,
        offset: p.offset,
    }
}

fn send_error(e: SendError) -> Error {
    match e {
        SendError::Closed => Error::Closed,
        SendError::QueueFull => Error::QueueFull,
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn send(&mut self, conn: ConnId, msg: Message) -> Result<(), Error> {
        let local = self.env.scope.get(conn);
        if local.is_none() && !self.env.scope.is_remote(conn) {
            return Err(Error::UnknownConnection);
        }
        let mut result = Ok(());
        self.deliver(msg, |scope, msg| match &local {
            Some(local) => {
                result = local.send(msg).map_err(send_error);
                u32::from(result.is_ok())
            }
            // Another node's connection: relayed there, where it is
            // delivered only if it is this plugin's and still open.
            None => {
                scope.send(Target::Connections(&[conn]), &msg, None);
                1
            }
        })?;
        result
    }

    /// A message over the size limit, or past the call's delivery budget,
    /// reaches nobody: the WIT gives `broadcast` no error to return.
    fn broadcast(&mut self, msg: Message, except: Option<ConnId>) -> u32 {
        self.deliver(msg, |scope, msg| scope.broadcast(&msg, except))
            .unwrap_or(0)
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: String) -> Result<(), Error> {
        let code = close::validate(code, &reason).map_err(|_| Error::InvalidArgument)?;
        self.conn(conn)?.close(code, &reason).map_err(send_error)
    }

    async fn subscribe(&mut self, conn: ConnId, channel: String) -> Result<(), Error> {
        joined(self.join(GroupKind::Channel, conn, channel)).await
    }

    fn unsubscribe(&mut self, conn: ConnId, channel: String) -> Result<(), Error> {
        let conn = self.conn(conn)?;
        self.env.scope.unsubscribe(&conn, &channel);
        Ok(())
    }

    /// On a recorded channel, the message is recorded too; the WIT gives
    /// this call no `unavailable`, so a history backend that fails answers
    /// `limit-reached` (and nothing was delivered, or may not have been).
    async fn publish(
        &mut self,
        channel: String,
        msg: Message,
        except: Option<ConnId>,
    ) -> Result<u32, Error> {
        self.check_name(&channel)?;
        if self.env.recording.records(&channel) {
            let body = Body::Plain(msg.into());
            return match self.record(channel, body, except).await {
                Ok(published) => Ok(published.delivered),
                Err(HistoryError::InvalidArgument) => Err(Error::InvalidArgument),
                Err(_) => Err(Error::LimitReached),
            };
        }
        self.deliver(msg, |scope, msg| scope.publish(&channel, &msg, except))
    }

    async fn publish_recorded(
        &mut self,
        channel: String,
        msg: Publication,
        except: Option<ConnId>,
    ) -> Result<Published, HistoryError> {
        let body = match msg {
            Publication::Plain(msg) => Body::Plain(msg.into()),
            Publication::Positioned(text) => Body::Positioned {
                before: text.before,
                after: text.after,
            },
        };
        let published = self.record(channel, body, except).await?;
        Ok(Published {
            delivered: published.delivered,
            position: position(published.position),
        })
    }

    async fn history(
        &mut self,
        channel: String,
        since: Option<Position>,
        limit: u32,
    ) -> Result<HistoryPage, HistoryError> {
        if self.check_name(&channel).is_err()
            || since
                .as_ref()
                .is_some_and(|s| !history::Position::valid_epoch(&s.epoch))
        {
            return Err(HistoryError::InvalidArgument);
        }
        let since = since.map(|s| history::Position::new(s.epoch, s.offset));
        let env = &self.env;
        let page = env
            .history
            .read(&env.name, &env.recording, &channel, since.as_ref(), limit)
            .await
            .map_err(history_error)?;
        // A page goes into the plugin's memory at once: at most
        // `max_message_size` bytes of it past the first entry (the rest
        // is the next page).
        let mut bytes = 0;
        let entries = page
            .entries
            .into_iter()
            .take_while(|e| {
                let first = bytes == 0;
                bytes += e.msg.len() + 1;
                first || bytes <= env.limits.max_message_size
            })
            .map(|e| HistoryEntry {
                position: position(e.position),
                msg: e.msg.into(),
            })
            .collect();
        Ok(HistoryPage {
            entries,
            latest: position(page.latest),
            recovered: page.recovered,
        })
    }

    fn channels(&mut self) -> Vec<String> {
        self.env.scope.cluster_channel_names()
    }

    async fn subscribers(&mut self, channel: String) -> Vec<ConnId> {
        let scope = self.env.scope.clone();
        scope.cluster_members(GroupKind::Channel, &channel).await
    }

    fn connections(&mut self) -> Vec<ConnId> {
        self.env.scope.connection_ids()
    }

    fn connection_count(&mut self) -> u32 {
        self.env.scope.cluster_connection_count() as u32
    }

    fn node_channels(&mut self) -> Vec<String> {
        self.env.scope.channel_names()
    }

    fn node_subscribers(&mut self, channel: String) -> Vec<ConnId> {
        self.env.scope.subscribers(&channel)
    }

    fn node_tagged(&mut self, tag: String) -> Vec<ConnId> {
        self.env.scope.tagged(&tag)
    }

    fn node_connection_count(&mut self) -> u32 {
        self.env.scope.connection_count() as u32
    }

    fn get_attribute(&mut self, conn: ConnId, key: String) -> Result<Option<String>, Error> {
        let conn = self.conn(conn)?;
        let attrs = conn.attributes.lock().unwrap();
        Ok(attrs.get(&key).cloned())
    }

    fn set_attribute(
        &mut self,
        conn: ConnId,
        key: String,
        value: Option<String>,
    ) -> Result<(), Error> {
        self.check_name(&key)?;
        let conn = self.conn(conn)?;
        let mut attrs = conn.attributes.lock().unwrap();
        let limits = &self.env.limits;
        match value {
            Some(value) => {
                if value.len() > limits.attribute_bytes {
                    return Err(Error::InvalidArgument);
                }
                let full = attrs.len() >= limits.attributes_per_connection;
                if full && !attrs.contains_key(&key) {
                    return Err(Error::LimitReached);
                }
                let held: usize = attrs
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                if held + key.len() + value.len() > limits.attribute_bytes {
                    return Err(Error::LimitReached);
                }
                attrs.insert(key, value);
            }
            None => {
                attrs.remove(&key);
            }
        }
        Ok(())
    }

    async fn tag(&mut self, conn: ConnId, tag: String) -> Result<(), Error> {
        joined(self.join(GroupKind::Tag, conn, tag)).await
    }

    fn untag(&mut self, conn: ConnId, tag: String) -> Result<(), Error> {
        let conn = self.conn(conn)?;
        self.env.scope.untag(&conn, &tag);
        Ok(())
    }

    async fn tagged(&mut self, tag: String) -> Vec<ConnId> {
        let scope = self.env.scope.clone();
        scope.cluster_members(GroupKind::Tag, &tag).await
    }

    fn send_to_tag(
        &mut self,
        tag: String,
        msg: Message,
        except: Option<ConnId>,
    ) -> Result<u32, Error> {
        self.check_name(&tag)?;
        self.deliver(msg, |scope, msg| scope.send_to_tag(&tag, &msg, except))
    }

    /// A key that is not valid, or a backend that fails, answers `none`:
    /// the WIT gives `state-get` no error to return (the store logs the
    /// backend failing). `state-increment` and the other newer calls say
    /// `unavailable` instead.
    async fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.env.scope.state.get(&key).await.ok().flatten()
    }

    /// Its WIT error cannot say `unavailable`: a backend that fails
    /// answers `limit-reached` (the write did not happen, or may not have).
    async fn state_set(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), Error> {
        self.env
            .scope
            .state
            .set(&key, value)
            .await
            .map_err(|e| match e {
                StateError::InvalidArgument => Error::InvalidArgument,
                _ => Error::LimitReached,
            })
    }

    async fn state_increment(&mut self, key: String, delta: i64) -> Result<i64, HostStateError> {
        let state = &self.env.scope.state;
        state.increment(&key, delta).await.map_err(state_error)
    }

    async fn state_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, HostStateError> {
        let state = &self.env.scope.state;
        let swapped = state.compare_and_swap(&key, expected, new).await;
        swapped.map_err(state_error)
    }

    async fn state_set_expiring(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), HostStateError> {
        let state = &self.env.scope.state;
        let set = state.set_expiring(&key, value, ttl_ms).await;
        set.map_err(state_error)
    }

    async fn state_keys(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<String>, HostStateError> {
        let state = &self.env.scope.state;
        state.keys(&prefix, limit).await.map_err(state_error)
    }

    /// `denied` for a plugin without the `upstream-listener` export: it
    /// could never hear what became of the upstream.
    fn upstream_connect(
        &mut self,
        url: String,
        protocols: Vec<String>,
        headers: Vec<(String, String)>,
    ) -> Result<u64, UpstreamError> {
        if !self.upstream_hooks {
            tracing::debug!(plugin = %self.env.name,
                "upstream-connect denied: the plugin does not export upstream-listener");
            return Err(UpstreamError::Denied);
        }
        let env = &self.env;
        env.upstreams
            .connect(&env.grants.outbound, &url, protocols, headers)
            .map_err(upstream_error)
    }

    fn upstream_send(&mut self, id: u64, msg: Message) -> Result<(), UpstreamError> {
        self.env
            .upstreams
            .send(id, msg.into())
            .map_err(upstream_error)
    }

    fn upstream_close(&mut self, id: u64, code: u16, reason: String) -> Result<(), UpstreamError> {
        self.env
            .upstreams
            .close(id, code, &reason)
            .map_err(upstream_error)
    }

    fn upstreams(&mut self) -> Vec<u64> {
        self.env.upstreams.ids()
    }

    fn set_timer(&mut self, delay_ms: u32, repeat: bool) -> Result<u64, Error> {
        if delay_ms < self.env.limits.min_timer_ms {
            return Err(Error::InvalidArgument);
        }
        self.env
            .timers
            .schedule(delay_ms, repeat, self.env.limits.timers_per_plugin)
            .ok_or(Error::LimitReached)
    }

    fn cancel_timer(&mut self, id: u64) -> bool {
        self.env.timers.cancel(id)
    }

    fn log(&mut self, level: LogLevel, msg: String) {
        let plugin = &*self.env.name;
        match self.env.log_gate.admit() {
            Gate::Drop => return,
            Gate::Write { dropped_before: 0 } => {}
            Gate::Write { dropped_before } => tracing::warn!(target: "wsgate::plugin", plugin,
                "{dropped_before} log lines dropped (over limits.log_lines_per_second)"),
        }
        let msg = printable(&msg, self.env.limits.log_line_bytes);
        match level {
            LogLevel::Trace => tracing::trace!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Debug => tracing::debug!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Info => tracing::info!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Warn => tracing::warn!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Error => tracing::error!(target: "wsgate::plugin", plugin, "{msg}"),
        }
    }
}
