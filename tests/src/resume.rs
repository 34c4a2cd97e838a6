//! A WebSocket client that follows a recorded channel across reconnects,
//! by the client resume rules of channel history (issue #16), as
//! `wsgate-client.js` does: it keeps the last `pos` it saw, comes back
//! with `?since=EPOCH:OFFSET`, drops what a replay repeats, and reconnects
//! at once when the offsets show that a message was lost on the way.
//!
//! The tests use it as an application would, so that "every message
//! exactly once, in order" is checked on what an application sees.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::Client;

/// A message's place in a channel's history, `EPOCH:OFFSET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl FromStr for Position {
    type Err = String;

    /// Split at the last `:`; the epoch is not empty, the offset a
    /// decimal u64.
    fn from_str(s: &str) -> Result<Position, String> {
        let (epoch, offset) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("no ':' in {s:?}"))?;
        let digits = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_digit());
        match offset.parse() {
            Ok(offset) if digits && !epoch.is_empty() => Ok(Position {
                epoch: epoch.to_owned(),
                offset,
            }),
            _ => Err(format!("not EPOCH:OFFSET: {s:?}")),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Why the client started afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// A live message came with another epoch: history was lost.
    Epoch,
    /// The server said the gap could not be filled.
    NotRecovered,
}

/// What the application sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A data message (a text one; JSON when it parses).
    Message(String),
    /// What came before is incomplete: the messages after this are a
    /// fresh start.
    Reset(ResetReason),
    /// A reconnect filled the whole gap.
    Recovered,
}

/// What the client did beyond handing on messages, for test reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub reconnects: u32,
    pub gaps: u32,
    pub duplicates: u32,
}

/// How long [`ResumingClient`] keeps trying to reconnect before it
/// panics: longer than any outage a test plays.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(30);
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// A client of one channel on any of several equivalent URLs (the nodes
/// of a cluster): it reconnects to the one it was on, else the next.
pub struct ResumingClient {
    urls: Vec<String>,
    current: usize,
    ws: Option<Client>,
    last: Option<Position>,
    /// A message that came with an epoch reset, handed on after it.
    pending: Option<String>,
    pub counters: Counters,
}

/// `url` with its `since` query parameter set to `since` (or removed).
fn with_since(url: &str, since: Option<&Position>) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("since="))
        .map(str::to_owned)
        .collect();
    if let Some(since) = since {
        params.push(format!("since={since}"));
    }
    if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

/// What one received text means to the resume rules.
enum Seen {
    Recovery(bool),
    Positioned(Position),
    Plain,
}

fn classify(text: &str) -> Seen {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return Seen::Plain;
    };
    if obj.get("type").and_then(Value::as_str) == Some("recovery")
        && let Some(recovered) = obj.get("recovered").and_then(Value::as_bool)
    {
        return Seen::Recovery(recovered);
    }
    match obj.get("pos").and_then(Value::as_str).map(str::parse) {
        Some(Ok(pos)) => Seen::Positioned(pos),
        _ => Seen::Plain,
    }
}

impl ResumingClient {
    /// Connects to the first of `urls` that accepts (each a full
    /// `ws://…/path?query` URL of the same channel).
    pub async fn connect(urls: Vec<String>) -> ResumingClient {
        ResumingClient::resume(urls, None).await
    }

    /// Like [`ResumingClient::connect`], for an application that kept the
    /// last position from before (`since`).
    pub async fn resume(urls: Vec<String>, since: Option<Position>) -> ResumingClient {
        assert!(!urls.is_empty());
        let mut client = ResumingClient {
            urls,
            current: 0,
            ws: None,
            last: since,
            pending: None,
            counters: Counters::default(),
        };
        client.reconnect().await;
        client.counters.reconnects = 0;
        client
    }

    /// The last position handed on, if any.
    pub fn position(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    /// The URL this client is connected to (with its `since`).
    pub fn url(&self) -> &str {
        &self.urls[self.current]
    }

    /// Closes the connection, as a client going away; the next
    /// [`ResumingClient::next`] comes back with `since`.
    pub async fn disconnect(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// (Re)connects with `since` = the last position: the URL it was on
    /// first, then the others in turn, until one accepts.
    async fn reconnect(&mut self) {
        self.ws = None;
        let deadline = Instant::now() + RECONNECT_PATIENCE;
        let mut i = self.current;
        loop {
            let url = with_since(&self.urls[i], self.last.as_ref());
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => {
                    self.current = i;
                    self.ws = Some(ws);
                    self.counters.reconnects += 1;
                    return;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no node took the client back within {RECONNECT_PATIENCE:?}: {url}: {e}"
                    );
                    i = (i + 1) % self.urls.len();
                    if i == self.current {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                }
            }
        }
    }

    /// The next event for the application, reconnecting (with `since`)
    /// whenever the connection ends or a message was lost on the way.
    /// Wrap in a timeout: it waits as long as the channel is quiet.
    pub async fn next(&mut self) -> Event {
        if let Some(text) = self.pending.take() {
            return Event::Message(text);
        }
        loop {
            if self.ws.is_none() {
                self.reconnect().await;
            }
            let ws = self.ws.as_mut().expect("connected");
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    self.ws = None;
                    continue;
                }
            };
            if let Some(event) = self.take(text) {
                return event;
            }
        }
    }

    /// Applies the resume rules to one received text: the event to hand
    /// on, or none (a duplicate, or a gap that makes it reconnect).
    fn take(&mut self, text: String) -> Option<Event> {
        match classify(&text) {
            Seen::Plain => Some(Event::Message(text)),
            Seen::Recovery(true) => Some(Event::Recovered),
            Seen::Recovery(false) => {
                self.last = None;
                Some(Event::Reset(ResetReason::NotRecovered))
            }
            Seen::Positioned(pos) => {
                let Some(last) = &self.last else {
                    self.last = Some(pos);
                    return Some(Event::Message(text));
                };
                if pos.epoch != last.epoch {
                    // A reset is handed on first; the message it came
                    // with is the first of the fresh start.
                    self.last = Some(pos);
                    self.pending = Some(text);
                    return Some(Event::Reset(ResetReason::Epoch));
                }
                if pos.offset <= last.offset {
                    self.counters.duplicates += 1;
                    return None;
                }
                if pos.offset > last.offset + 1 {
                    self.counters.gaps += 1;
                    self.ws = None;
                    return None;
                }
                self.last = Some(pos);
                Some(Event::Message(text))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: Option<&str>) -> ResumingClient {
        ResumingClient {
            urls: vec!["ws://h/ws/chat/lobby?username=a".into()],
            current: 0,
            ws: None,
            last: last.map(|p| p.parse().unwrap()),
            pending: None,
            counters: Counters::default(),
        }
    }

    fn msg(pos: &str) -> String {
        format!(r#"{{"from":"a","message":"m","pos":"{pos}"}}"#)
    }

    #[test]
    fn positions_parse_at_the_last_colon_and_strictly() {
        let p: Position = "a:b:12".parse().unwrap();
        assert_eq!((p.epoch.as_str(), p.offset), ("a:b", 12));
        assert_eq!(p.to_string(), "a:b:12");
        for bad in ["", "abc", ":1", "e:", "e:-1", "e:+1", "e:1.5", "e: 1"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn since_is_added_or_replaced_in_the_query() {
        let p: Position = "e:7".parse().unwrap();
        assert_eq!(with_since("ws://h/x", Some(&p)), "ws://h/x?since=e:7");
        assert_eq!(
            with_since("ws://h/x?u=a&since=e:1&v=b", Some(&p)),
            "ws://h/x?u=a&v=b&since=e:7"
        );
        assert_eq!(with_since("ws://h/x?since=e:1", None), "ws://h/x");
    }

    #[test]
    fn the_next_offset_is_handed_on_a_repeat_dropped_a_gap_reconnects() {
        let mut c = client(Some("e:5"));
        assert_eq!(c.take(msg("e:6")), Some(Event::Message(msg("e:6"))));
        assert_eq!(c.take(msg("e:6")), None);
        assert_eq!(c.take(msg("e:3")), None);
        assert_eq!(c.counters.duplicates, 2);
        assert_eq!(c.take(msg("e:8")), None, "7 is missing");
        assert_eq!(c.counters.gaps, 1);
        assert_eq!(c.position().unwrap().offset, 6, "it resumes after 6");
        // Messages without a position pass as they are.
        assert_eq!(c.take("plain".into()), Some(Event::Message("plain".into())));
    }

    #[test]
    fn a_new_epoch_or_a_failed_recovery_starts_afresh() {
        let mut c = client(Some("e:5"));
        assert_eq!(c.take(msg("f:1")), Some(Event::Reset(ResetReason::Epoch)));
        assert_eq!(
            c.pending.take(),
            Some(msg("f:1")),
            "handed on after the reset"
        );
        assert_eq!(c.position().unwrap().to_string(), "f:1");
        let notice = r#"{"type":"recovery","recovered":false,"latest":"f:9"}"#;
        assert_eq!(
            c.take(notice.into()),
            Some(Event::Reset(ResetReason::NotRecovered))
        );
        assert!(c.position().is_none());
        assert_eq!(c.take(msg("f:4")), Some(Event::Message(msg("f:4"))));
        let notice = r#"{"type":"recovery","recovered":true,"latest":"f:4"}"#;
        assert_eq!(c.take(notice.into()), Some(Event::Recovered));
    }
}
