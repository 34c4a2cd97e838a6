//! A feed pushed every second while anyone is connected: the canonical
//! push loop, with no thread of its own. The timer starts with the first
//! connection and stops after the last one closes.
//!
//! Each tick is `{"tick":N,"timestamp":MS}` to every connection; any message
//! from a client is answered with `{"ticks":N}`, the count so far.

use std::time::{SystemTime, UNIX_EPOCH};
use wsgate_sdk::{ConnectionId, Listener, LogLevel, Message, export_listener, host, log};

const PERIOD_MS: u32 = 1000;

fn read_u64(key: &str) -> Option<u64> {
    let bytes = host::state_get(key)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn write_u64(key: &str, value: Option<u64>) {
    let bytes = value.map(|v| v.to_le_bytes().to_vec());
    if let Err(e) = host::state_set(key, bytes.as_deref()) {
        log(LogLevel::Error, format!("state_set {key}: {e:?}"));
    }
}

struct Ticker;

impl Listener for Ticker {
    fn on_first_open(_route: String) {
        match host::set_timer(PERIOD_MS, true) {
            Ok(id) => write_u64("timer", Some(id)),
            Err(e) => log(LogLevel::Error, format!("set_timer: {e:?}")),
        }
    }

    fn on_timer(_id: u64) {
        let tick = read_u64("ticks").unwrap_or(0) + 1;
        write_u64("ticks", Some(tick));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        host::broadcast(
            &Message::text(format!("{{\"tick\":{tick},\"timestamp\":{now}}}")),
            None,
        );
    }

    fn on_message(_conn: ConnectionId, _msg: Message) -> Option<Message> {
        let ticks = read_u64("ticks").unwrap_or(0);
        Some(Message::text(format!("{{\"ticks\":{ticks}}}")))
    }

    fn on_last_close(_route: String) {
        if let Some(id) = read_u64("timer") {
            host::cancel_timer(id);
            write_u64("timer", None);
        }
    }
}

export_listener!(Ticker);
