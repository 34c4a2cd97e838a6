//! Channel history: messages that carry their own position, and catching
//! a returning client up on what it missed.
//!
//! A channel is recorded when a pattern in the plugin's sidecar matches it:
//!
//! ```toml
//! # plugins/NAME.toml
//! [history]
//! channels = ["*"]   # `*` matches any run of characters; otherwise exact
//! size = 100         # messages kept per channel (at most 10000)
//! ttl = "5m"         # older messages are dropped
//! ```
//!
//! Every message published to a recorded channel gets a [`Position`],
//! `EPOCH:OFFSET`. A client that keeps the last position it saw can come
//! back with it (`?since=EPOCH:OFFSET`), and the plugin replays the gap in
//! `on-open`:
//!
//! ```ignore
//! use wsgate_sdk::history;
//!
//! // Publishing: the message names its own position, `{"text":"hi","pos":"…:7"}`.
//! history::publish_positioned("lobby", |pos| format!(r#"{{"text":"hi","pos":"{pos}"}}"#), None)?;
//!
//! // In on_open: everything after `since`, in order.
//! let page = history::catch_up("lobby", &since)?;
//! if !page.recovered { /* tell the client to start afresh */ }
//! for entry in &page.entries { host::send(conn, &entry.msg)?; }
//! ```
//!
//! What is published to the connection's channels while `on-open` runs
//! reaches it after everything `on-open` sent it, so the replay comes
//! before the live messages.

use std::fmt;

use crate::{
    ConnectionId, HistoryError, HistoryPage, Message, Position, PositionedText, Publication,
    Published, host,
};

/// Entries asked for per `history` call: each page is copied into the
/// plugin's memory at once, so a long history comes in moderate steps.
const PAGE: u32 = 100;

impl Publication {
    /// Recorded and delivered as it is.
    pub fn plain(msg: Message) -> Self {
        Publication::Plain(msg)
    }
    /// A text message delivered as `before` + `EPOCH:OFFSET` + `after`.
    pub fn positioned(before: impl Into<String>, after: impl Into<String>) -> Self {
        Publication::Positioned(PositionedText {
            before: before.into(),
            after: after.into(),
        })
    }
}

/// Why [`publish_positioned`] published nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The host refused it (the channel is not recorded, an argument is
    /// out of range) or its history backend failed.
    History(HistoryError),
    /// The rendered text held the placeholder `count` times, not once: the
    /// renderer dropped it, or the message's content repeated it.
    Placeholder { count: usize },
    /// No random placeholder could be made (the host gave no randomness).
    NoRandomness,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::History(e) => write!(f, "history: {e:?}"),
            PublishError::Placeholder { count } => write!(
                f,
                "the rendered message holds the position placeholder {count} times, not once"
            ),
            PublishError::NoRandomness => f.write_str("no randomness for the position placeholder"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<HistoryError> for PublishError {
    fn from(e: HistoryError) -> Self {
        PublishError::History(e)
    }
}

/// Publishes to a recorded `channel` a text that contains its own
/// position: `render` gets a placeholder and returns the message with the
/// placeholder where the position goes (for JSON, inside a string: the
/// placeholder is 32 hex digits, and so needs no escaping in any format);
/// the host fills in `EPOCH:OFFSET`. The placeholder is random for each
/// call, so a message's content cannot forge it; if the rendered text
/// holds it other than once, nothing is published.
pub fn publish_positioned(
    channel: &str,
    render: impl FnOnce(&str) -> String,
    except: Option<ConnectionId>,
) -> Result<Published, PublishError> {
    let placeholder = placeholder()?;
    let text = render(&placeholder);
    let publication = split_at(&text, &placeholder)?;
    Ok(host::publish_recorded(channel, &publication, except)?)
}

/// 128 random bits as 32 lowercase hex digits.
fn placeholder() -> Result<String, PublishError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| PublishError::NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `text` around its one `placeholder`.
fn split_at(text: &str, placeholder: &str) -> Result<Publication, PublishError> {
    let count = text.matches(placeholder).count();
    match text.split_once(placeholder) {
        Some((before, after)) if count == 1 => Ok(Publication::positioned(before, after)),
        _ => Err(PublishError::Placeholder { count }),
    }
}

/// Everything in `channel`'s history after `since`, oldest first, asked
/// for page by page until the newest: one page, with `recovered` from the
/// first (whether the whole gap was still there; if not, `entries` start
/// from the oldest message kept) and `latest` from the last.
///
/// If history is lost while the pages are read (a later page is not
/// recovered), the pages read so far are returned: the client sees the
/// new epoch on the next live message and starts afresh then.
pub fn catch_up(channel: &str, since: &Position) -> Result<HistoryPage, HistoryError> {
    let mut all = host::history(channel, Some(since), PAGE)?;
    loop {
        let Some(last) = all.entries.last() else {
            return Ok(all);
        };
        if last.position.epoch != all.latest.epoch || last.position.offset >= all.latest.offset {
            return Ok(all);
        }
        let since = last.position.clone();
        let next = host::history(channel, Some(&since), PAGE)?;
        if !next.recovered || next.entries.is_empty() {
            return Ok(all);
        }
        all.entries.extend(next.entries);
        all.latest = next.latest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Listener;
    use crate::testing::{FakeHost, HistoryConfig};

    struct Nothing;
    impl Listener for Nothing {}

    fn recording(size: u32) -> FakeHost<Nothing> {
        let fake = FakeHost::<Nothing>::new();
        fake.record_history(HistoryConfig::channels(&["*"]).size(size));
        fake
    }

    #[test]
    fn a_positioned_message_carries_its_position() {
        let fake = recording(100);
        host::publish("c", &Message::text("first"), None).unwrap();
        let published =
            publish_positioned("c", |pos| format!(r#"{{"text":"hi","pos":"{pos}"}}"#), None)
                .unwrap();
        assert_eq!(published.position.offset, 2);
        let expected = format!(r#"{{"text":"hi","pos":"{}"}}"#, published.position);
        let (_, msg) = fake.published().pop().unwrap();
        assert_eq!(msg, Message::text(&expected));
        let page = host::history("c", Some(&Position::new(&published.position.epoch, 1)), 10);
        assert_eq!(page.unwrap().entries[0].msg, Message::text(expected));
    }

    #[test]
    fn nothing_is_published_without_exactly_one_placeholder() {
        let fake = recording(100);
        let dropped = publish_positioned("c", |_| "no position".into(), None);
        assert_eq!(dropped, Err(PublishError::Placeholder { count: 0 }));
        let twice = publish_positioned("c", |pos| format!("{pos}{pos}"), None);
        assert_eq!(twice, Err(PublishError::Placeholder { count: 2 }));
        assert!(fake.published().is_empty());
        let unrecorded = FakeHost::<Nothing>::new();
        let refused = publish_positioned("c", |pos| pos.to_owned(), None);
        assert_eq!(
            refused,
            Err(PublishError::History(HistoryError::NotRecorded))
        );
        assert!(unrecorded.published().is_empty());
    }

    #[test]
    fn catching_up_reads_every_page_in_order() {
        let _fake = recording(1000);
        let positions: Vec<Position> = (1..=250)
            .map(|i| {
                let msg = Publication::plain(Message::text(i.to_string()));
                host::publish_recorded("c", &msg, None).unwrap().position
            })
            .collect();
        let page = catch_up("c", &positions[9]).unwrap();
        assert!(page.recovered);
        assert_eq!(page.latest, positions[249]);
        let got: Vec<String> = page
            .entries
            .iter()
            .map(|e| e.msg.as_text().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (11..=250).map(|i: u32| i.to_string()).collect();
        assert_eq!(got, expected);
        assert!(catch_up("c", &positions[249]).unwrap().entries.is_empty());
    }

    #[test]
    fn catching_up_past_a_lost_gap_starts_from_the_oldest_kept() {
        let _fake = recording(150);
        let positions: Vec<Position> = (1..=400)
            .map(|_| {
                let msg = Publication::plain(Message::text("m"));
                host::publish_recorded("c", &msg, None).unwrap().position
            })
            .collect();
        let page = catch_up("c", &positions[0]).unwrap();
        assert!(!page.recovered);
        let offsets: Vec<u64> = page.entries.iter().map(|e| e.position.offset).collect();
        assert_eq!(offsets, (251..=400).collect::<Vec<u64>>());
    }

    #[test]
    fn placeholders_are_json_safe_and_differ() {
        let a = placeholder().unwrap();
        let b = placeholder().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn the_text_is_split_at_its_one_placeholder() {
        assert_eq!(
            split_at(r#"{"pos":"PH","x":1}"#, "PH"),
            Ok(Publication::positioned(r#"{"pos":""#, r#"","x":1}"#))
        );
        assert_eq!(split_at("PH", "PH"), Ok(Publication::positioned("", "")));
        assert_eq!(
            split_at("no position", "PH"),
            Err(PublishError::Placeholder { count: 0 })
        );
        assert_eq!(
            split_at("PH and PH", "PH"),
            Err(PublishError::Placeholder { count: 2 })
        );
    }
}
