//! `on-messages`: a burst of a connection's messages in one guest call,
//! handled by a loop over the listener's own `on_message`, so every
//! listener gets it by being rebuilt.
//!
//! The loop stops after a message whose handling delivered to connections
//! or closed one: the host then writes what that message queued for the
//! sender before its reply, and the sender sees exactly what one
//! `on-message` call per message would have shown it (see the WIT's
//! `batch-listener`). Every host call that delivers or closes goes through
//! [`delivered`]: the SDK's `host` module wraps them.
//!
//! `on-packed-messages` is the same loop over a burst packed into one
//! buffer (see `packed`), which the host prefers: it costs the host two
//! copies per burst where a list of messages costs two per message.

use std::cell::Cell;

use crate::Message;
use crate::bindings::exports::wsgate::plugin::packed_batch_listener::PackedMessages;
use crate::packed;

thread_local! {
    /// Set by a delivering host call during the current message.
    static DELIVERED: Cell<bool> = const { Cell::new(false) };
}

/// A host call delivered to connections or closed one.
pub(crate) fn delivered() {
    DELIVERED.with(|d| d.set(true));
}

/// The results of the messages handled, in order: all of them, or up to
/// and including the first whose handling delivered.
pub(crate) fn handle(
    msgs: Vec<Message>,
    on_message: impl FnMut(Message) -> Option<Message>,
) -> Vec<Option<Message>> {
    let mut results = Vec::with_capacity(msgs.len());
    each(msgs, on_message, |result| results.push(result));
    results
}

/// [`handle`] for a packed burst: the results packed the same way.
pub(crate) fn handle_packed(
    burst: PackedMessages,
    on_message: impl FnMut(Message) -> Option<Message>,
) -> PackedMessages {
    let mut results = packed::Results::for_burst(&burst);
    each(packed::unpack(&burst), on_message, |result| {
        results.push(result)
    });
    results.into_packed()
}

/// Hands each message to `on_message` and its result to `result`, up to
/// and including the first message whose handling delivered.
fn each(
    msgs: impl IntoIterator<Item = Message>,
    mut on_message: impl FnMut(Message) -> Option<Message>,
    mut result: impl FnMut(Option<Message>),
) {
    for msg in msgs {
        DELIVERED.with(|d| d.set(false));
        result(on_message(msg));
        if DELIVERED.with(|d| d.get()) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(n: usize) -> Vec<Message> {
        (0..n).map(|i| Message::text(i.to_string())).collect()
    }

    #[test]
    fn a_batch_without_deliveries_is_handled_whole() {
        let results = handle(texts(5), Some);
        assert_eq!(results, texts(5).into_iter().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_stops_after_the_first_delivering_message() {
        let results = handle(texts(5), |msg| {
            if msg.as_text() == Some("2") {
                delivered();
            }
            Some(msg)
        });
        assert_eq!(results.len(), 3, "stops after the third message");
        // The next call starts afresh: a delivery in an earlier call does
        // not end it at once.
        let results = handle(texts(2), Some);
        assert_eq!(results.len(), 2);
    }

    #[test]
    fn a_packed_batch_stops_where_a_listed_one_does() {
        let burst = packed::pack(texts(5));
        let results = handle_packed(burst, |msg| {
            if msg.as_text() == Some("1") {
                delivered();
            }
            Some(msg)
        });
        assert_eq!(
            packed::unpack_results(&results),
            texts(2).into_iter().map(Some).collect::<Vec<_>>()
        );
    }
}
