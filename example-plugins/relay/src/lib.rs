//! A feed relay: one upstream WebSocket connection, shared by everyone
//! connected to `/ws/relay`. Every message the upstream sends goes to
//! every client, in order; what clients send is ignored (the feed is
//! read-only).
//!
//! The upstream is the URL in the `RELAY_UPSTREAM` environment variable
//! (granted by the sidecar, `relay.toml`). The relay connects when the
//! first client arrives and closes the upstream (1000) when the last one
//! leaves, so an idle relay holds no connection. If the upstream drops or
//! cannot be reached while clients are connected, it reconnects after a
//! delay that doubles with each failure in a row (250 ms up to 30 s) and
//! starts over once a connection opens. Without `RELAY_UPSTREAM`, clients
//! are refused with 503.
//!
//! What the relay remembers lives in plugin state, since any instance may
//! run any hook: the upstream's id, whether clients want it, the pending
//! reconnect timer and the failures in a row.

use wsgate_sdk::{
    ConnectionId, Listener, LogLevel, Message, OpenDecision, Request, UpstreamError, UpstreamId,
    export_listener, host, log,
};

/// Where the feed is.
const UPSTREAM_VAR: &str = "RELAY_UPSTREAM";
const FIRST_RETRY_MS: u32 = 250;
const MAX_RETRY_MS: u32 = 30_000;

/// State keys.
const UPSTREAM: &str = "upstream";
const WANTED: &str = "wanted";
const RETRY_TIMER: &str = "retry-timer";
const FAILURES: &str = "failures";

fn upstream_url() -> Option<String> {
    std::env::var(UPSTREAM_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

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

fn wanted() -> bool {
    read_u64(WANTED) == Some(1)
}

/// Whether `id` is the upstream the relay is using (not one it already
/// let go of, whose last events may still arrive).
fn is_current(id: UpstreamId) -> bool {
    read_u64(UPSTREAM) == Some(id)
}

/// The delay before reconnect attempt `failures` (counted from 1).
fn backoff(failures: u64) -> u32 {
    let doublings = failures.saturating_sub(1).min(16) as u32;
    FIRST_RETRY_MS
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_MS)
}

/// Opens the upstream unless one is open or opening.
fn connect() {
    if read_u64(UPSTREAM).is_some() {
        return;
    }
    let Some(url) = upstream_url() else {
        log(LogLevel::Error, format!("{UPSTREAM_VAR} is not set"));
        return;
    };
    match host::upstream_connect(&url, &[], &[]) {
        Ok(id) => write_u64(UPSTREAM, Some(id)),
        // Refused before any connection was tried: retrying would not help.
        Err(
            e
            @ (UpstreamError::Denied | UpstreamError::InvalidUrl | UpstreamError::InvalidArgument),
        ) => {
            log(
                LogLevel::Error,
                format!(
                    "cannot connect to {url}: {e:?} (check relay.toml and the server's [grants])"
                ),
            );
        }
        Err(e) => {
            log(
                LogLevel::Warn,
                format!("cannot connect to {url} now: {e:?}"),
            );
            retry_later();
        }
    }
}

/// Schedules the next attempt, further off after each failure in a row.
fn retry_later() {
    if read_u64(RETRY_TIMER).is_some() {
        return;
    }
    let failures = read_u64(FAILURES).unwrap_or(0) + 1;
    write_u64(FAILURES, Some(failures));
    let delay = backoff(failures);
    match host::set_timer(delay, false) {
        Ok(timer) => write_u64(RETRY_TIMER, Some(timer)),
        Err(e) => log(LogLevel::Error, format!("set_timer: {e:?}")),
    }
}

fn cancel_retry() {
    if let Some(timer) = read_u64(RETRY_TIMER) {
        host::cancel_timer(timer);
        write_u64(RETRY_TIMER, None);
    }
}

struct Relay;

impl Listener for Relay {
    fn on_open(_conn: ConnectionId, _req: Request) -> OpenDecision {
        if upstream_url().is_none() {
            return OpenDecision::reject(503, "the relay has no upstream configured");
        }
        OpenDecision::Accept
    }

    fn on_first_open(_route: String) {
        write_u64(WANTED, Some(1));
        cancel_retry();
        write_u64(FAILURES, None);
        connect();
    }

    fn on_last_close(_route: String) {
        write_u64(WANTED, None);
        cancel_retry();
        if let Some(id) = read_u64(UPSTREAM) {
            // Forgotten first: its close, when it comes, is not a drop.
            write_u64(UPSTREAM, None);
            let _ = host::upstream_close(id, 1000, "no clients");
        }
    }

    fn on_upstream_open(id: UpstreamId) {
        if is_current(id) {
            write_u64(FAILURES, None);
            log(LogLevel::Info, "upstream open");
        }
    }

    fn on_upstream_message(id: UpstreamId, msg: Message) {
        if is_current(id) {
            host::broadcast(&msg, None);
        }
    }

    fn on_upstream_close(id: UpstreamId, code: u16, reason: String) {
        if !is_current(id) {
            return;
        }
        write_u64(UPSTREAM, None);
        if wanted() {
            log(
                LogLevel::Warn,
                format!("upstream closed ({code} {reason}); reconnecting"),
            );
            retry_later();
        }
    }

    fn on_timer(id: u64) {
        if read_u64(RETRY_TIMER) != Some(id) {
            return;
        }
        write_u64(RETRY_TIMER, None);
        if wanted() {
            connect();
        }
    }
}

export_listener!(Relay);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Once;
    use wsgate_sdk::testing::{FakeHost, request};

    const FEED: &str = "wss://feed.example.com/prices";

    fn host() -> FakeHost<Relay> {
        static CONFIGURED: Once = Once::new();
        // SAFETY: set once, to the same value, before any test reads it:
        // every test gets its host here first.
        CONFIGURED.call_once(|| unsafe { std::env::set_var(UPSTREAM_VAR, FEED) });
        FakeHost::new()
    }

    fn join(host: &FakeHost<Relay>) -> ConnectionId {
        host.open(request("/ws/relay")).expect("accepted")
    }

    /// The one upstream the relay is connecting or connected to.
    fn current() -> UpstreamId {
        let ids = host::upstreams();
        assert_eq!(ids.len(), 1, "one upstream: {ids:?}");
        ids[0]
    }

    #[test]
    fn one_upstream_for_everyone_and_every_message_to_all() {
        let host = host();
        let a = join(&host);
        let b = join(&host);
        assert_eq!(host.upstream_connects().len(), 1, "connected once");
        let (id, url) = host.upstream_connects()[0].clone();
        assert_eq!(url, FEED);
        host.upstream_opened(id);
        for text in ["1", "2", "3"] {
            host.upstream_message(id, Message::text(text));
        }
        host.upstream_message(id, Message::binary([1u8, 2]));
        for conn in [a, b] {
            assert_eq!(
                host.received(conn),
                [
                    Message::text("1"),
                    Message::text("2"),
                    Message::text("3"),
                    Message::binary([1u8, 2])
                ]
            );
        }
        // Clients' messages go nowhere.
        assert_eq!(host.send_text(a, "hello?"), None);
        assert!(host.sent_upstream(id).is_empty());
        assert!(host.received(b).is_empty());
    }

    #[test]
    fn the_last_client_leaving_closes_the_upstream_and_the_next_reopens_it() {
        let host = host();
        let a = join(&host);
        let b = join(&host);
        let id = current();
        host.upstream_opened(id);
        host.close(a, 1000, "");
        assert_eq!(host.upstream_closed_by_plugin(id), None, "b is still there");
        host.close(b, 1000, "");
        assert_eq!(
            host.upstream_closed_by_plugin(id),
            Some((1000, "no clients".into()))
        );
        // Its close arrives: not a drop, so no reconnect.
        host.upstream_closed(id, 1000, "no clients");
        assert!(host.timers().is_empty());
        assert!(host::upstreams().is_empty());
        let c = join(&host);
        let again = current();
        assert_ne!(again, id);
        host.upstream_opened(again);
        host.upstream_message(again, Message::text("fresh"));
        assert_eq!(host.received(c), [Message::text("fresh")]);
    }

    #[test]
    fn a_dropped_upstream_is_reconnected_with_backoff_while_clients_stay() {
        let host = host();
        let a = join(&host);
        let first = current();
        host.upstream_opened(first);
        // It goes away: a reconnect after 250 ms.
        host.upstream_closed(first, 1006, "connection lost");
        assert!(host::upstreams().is_empty());
        assert_eq!(host.timers().len(), 1);
        assert_eq!(host.timers()[0].1, 250);
        host.fire_timers();
        let second = current();
        // It cannot be reached, twice: the delay doubles each time.
        host.upstream_closed(second, 1006, "connection refused");
        assert_eq!(host.timers()[0].1, 500);
        host.fire_timers();
        host.upstream_closed(current(), 1006, "timed out connecting");
        assert_eq!(host.timers()[0].1, 1000);
        host.fire_timers();
        // It opens: the next drop starts over at 250 ms.
        let back = current();
        host.upstream_opened(back);
        host.upstream_message(back, Message::text("back"));
        assert_eq!(host.received(a), [Message::text("back")]);
        host.upstream_closed(back, 1001, "restarting");
        assert_eq!(host.timers()[0].1, 250);
        // Nobody left: the pending reconnect is cancelled.
        host.close(a, 1000, "");
        assert!(host.timers().is_empty());
        assert_eq!(host.upstream_connects().len(), 4);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(1), 250);
        assert_eq!(backoff(2), 500);
        assert_eq!(backoff(8), 30_000);
        assert_eq!(backoff(u64::MAX), 30_000);
    }
}
