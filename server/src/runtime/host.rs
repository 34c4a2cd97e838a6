//! The host imports a plugin calls: every one is scoped to the calling
//! plugin and answers bad input with a typed error instead of a trap.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::Message as WsMessage;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::bindings::wsgate::plugin::{host, types};
use super::bindings::{Error, LogLevel, Message};
use super::timers::Timers;
use crate::config::Limits;
use crate::protocol::close;
use crate::registry::{ConnId, Connection, Scope, SendError, StateError, Target};

/// What every instance of one plugin version shares.
pub struct PluginEnv {
    pub name: Arc<str>,
    pub scope: Arc<Scope>,
    pub limits: Limits,
    /// Shared by every version of the plugin, so timers survive a reload.
    pub timers: Arc<Timers>,
    /// Subprotocols the plugin speaks, from its sidecar.
    pub subprotocols: Vec<String>,
    /// What the sidecar grants beyond the empty sandbox.
    pub grants: Grants,
}

/// Capabilities a sidecar granted, resolved at load time.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    /// Environment variables with their values.
    pub env: Vec<(String, String)>,
    /// Read-only preopened directories: host path and guest path.
    pub dirs: Vec<(std::path::PathBuf, String)>,
}

/// The WASI context for one instance: nothing but what was granted. With
/// no grants: no preopened directories, no environment, no arguments,
/// stdio discarded, every socket address denied, no name lookups.
fn wasi_ctx(grants: &Grants) -> WasiCtx {
    let mut builder = WasiCtx::builder();
    builder.envs(&grants.env);
    for (host, guest) in &grants.dirs {
        // Checked at load time; a directory that vanished since is skipped.
        if let Err(e) = builder.preopened_dir(host, guest, FsPerms::ReadOnly) {
            tracing::warn!(dir = %host.display(), "granted directory unavailable: {e:#}");
        }
    }
    builder.build()
}

/// The data of one instance's store.
pub struct HostState {
    pub env: Arc<PluginEnv>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    /// When the running hook must stop; checked at every epoch tick.
    pub deadline: Instant,
}

impl HostState {
    pub fn new(env: Arc<PluginEnv>) -> HostState {
        let limits = StoreLimitsBuilder::new()
            .memory_size(env.limits.instance_memory)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        HostState {
            wasi: wasi_ctx(&env.grants),
            env,
            table: ResourceTable::new(),
            limits,
            deadline: Instant::now(),
        }
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
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Converts a guest message into a frame payload without copying its bytes.
pub fn to_ws(msg: Message) -> WsMessage {
    match msg {
        Message::Text(text) => WsMessage::Text(text.into()),
        Message::Binary(bytes) => WsMessage::Binary(bytes.into()),
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
        let scope = &self.env.scope;
        match scope.get(conn) {
            Some(local) => local.send(to_ws(msg)).map_err(send_error),
            // Another node's connection: relayed there, where it is
            // delivered only if it is this plugin's and still open.
            None if scope.is_remote(conn) => {
                scope.send(Target::Connections(&[conn]), &to_ws(msg), None);
                Ok(())
            }
            None => Err(Error::UnknownConnection),
        }
    }

    fn broadcast(&mut self, msg: Message, except: Option<ConnId>) -> u32 {
        self.env.scope.broadcast(&to_ws(msg), except)
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: String) -> Result<(), Error> {
        close::validate(code, &reason).map_err(|_| Error::InvalidArgument)?;
        self.conn(conn)?.close(code, &reason).map_err(send_error)
    }

    fn subscribe(&mut self, conn: ConnId, channel: String) -> Result<(), Error> {
        self.check_name(&channel)?;
        let conn = self.conn(conn)?;
        if conn.is_closing() {
            return Err(Error::Closed);
        }
        self.env.scope.subscribe(&conn, &channel);
        Ok(())
    }

    fn unsubscribe(&mut self, conn: ConnId, channel: String) -> Result<(), Error> {
        let conn = self.conn(conn)?;
        self.env.scope.unsubscribe(&conn, &channel);
        Ok(())
    }

    fn publish(
        &mut self,
        channel: String,
        msg: Message,
        except: Option<ConnId>,
    ) -> Result<u32, Error> {
        self.check_name(&channel)?;
        Ok(self.env.scope.publish(&channel, &to_ws(msg), except))
    }

    fn channels(&mut self) -> Vec<String> {
        self.env.scope.channel_names()
    }

    fn subscribers(&mut self, channel: String) -> Vec<ConnId> {
        self.env.scope.subscribers(&channel)
    }

    fn connections(&mut self) -> Vec<ConnId> {
        self.env.scope.connection_ids()
    }

    fn connection_count(&mut self) -> u32 {
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
        match value {
            Some(value) => {
                let full = attrs.len() >= self.env.limits.attributes_per_connection;
                if full && !attrs.contains_key(&key) {
                    return Err(Error::LimitReached);
                }
                if value.len() > self.env.limits.max_message_size {
                    return Err(Error::InvalidArgument);
                }
                attrs.insert(key, value);
            }
            None => {
                attrs.remove(&key);
            }
        }
        Ok(())
    }

    fn tag(&mut self, conn: ConnId, tag: String) -> Result<(), Error> {
        self.check_name(&tag)?;
        let conn = self.conn(conn)?;
        if conn.is_closing() {
            return Err(Error::Closed);
        }
        self.env.scope.tag(&conn, &tag);
        Ok(())
    }

    fn untag(&mut self, conn: ConnId, tag: String) -> Result<(), Error> {
        let conn = self.conn(conn)?;
        self.env.scope.untag(&conn, &tag);
        Ok(())
    }

    fn tagged(&mut self, tag: String) -> Vec<ConnId> {
        self.env.scope.tagged(&tag)
    }

    fn send_to_tag(
        &mut self,
        tag: String,
        msg: Message,
        except: Option<ConnId>,
    ) -> Result<u32, Error> {
        self.check_name(&tag)?;
        Ok(self.env.scope.send_to_tag(&tag, &to_ws(msg), except))
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.env.scope.state.get(&key)
    }

    fn state_set(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), Error> {
        self.check_name(&key)?;
        self.env
            .scope
            .state
            .set(&key, value)
            .map_err(|StateError::LimitReached| Error::LimitReached)
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
        match level {
            LogLevel::Trace => tracing::trace!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Debug => tracing::debug!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Info => tracing::info!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Warn => tracing::warn!(target: "wsgate::plugin", plugin, "{msg}"),
            LogLevel::Error => tracing::error!(target: "wsgate::plugin", plugin, "{msg}"),
        }
    }
}
