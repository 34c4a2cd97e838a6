//! The layout of the WIT's `packed-messages`: messages laid end to end in
//! one payload, each described by a head (its length times two, plus one
//! for text; `u32::MAX` for a message without a reply).

use crate::Message;
use crate::bindings::exports::wsgate::plugin::packed_batch_listener::PackedMessages;

/// A result's head when the message had no reply.
const NO_REPLY: u32 = u32::MAX;

/// The burst's messages, each copied out of the payload only when the loop
/// gets to it (it may stop early).
pub(crate) fn unpack(burst: &PackedMessages) -> impl Iterator<Item = Message> + '_ {
    let mut rest = &burst.payload[..];
    burst
        .heads
        .iter()
        .map(move |&head| message(head, &mut rest))
}

/// The message `head` describes, taken from the front of `rest`.
fn message(head: u32, rest: &mut &[u8]) -> Message {
    let (bytes, after) = rest.split_at((head >> 1) as usize);
    *rest = after;
    if head & 1 == 1 {
        // The host checked the text; a host that did not broke the
        // contract, and this traps.
        Message::Text(String::from_utf8(bytes.to_vec()).expect("the host sends UTF-8 text"))
    } else {
        Message::Binary(bytes.to_vec())
    }
}

/// The results of a burst, packed as they come.
pub(crate) struct Results(PackedMessages);

impl Results {
    /// Room for a burst whose replies are about as long as its messages
    /// (an echo's, a transform's).
    pub(crate) fn for_burst(burst: &PackedMessages) -> Results {
        Results(PackedMessages {
            heads: Vec::with_capacity(burst.heads.len()),
            payload: Vec::with_capacity(burst.payload.len()),
        })
    }

    pub(crate) fn push(&mut self, result: Option<Message>) {
        let (head, bytes) = match &result {
            None => (NO_REPLY, &[][..]),
            Some(Message::Text(text)) => (head(text.len(), true), text.as_bytes()),
            Some(Message::Binary(bytes)) => (head(bytes.len(), false), &bytes[..]),
        };
        self.0.heads.push(head);
        self.0.payload.extend_from_slice(bytes);
    }

    pub(crate) fn into_packed(self) -> PackedMessages {
        self.0
    }
}

/// A message's head. A reply too long for one (2 GiB) traps: no host would
/// send it anyway.
fn head(len: usize, text: bool) -> u32 {
    u32::try_from(len)
        .ok()
        .and_then(|len| len.checked_mul(2))
        .map(|head| head + u32::from(text))
        .filter(|&head| head != NO_REPLY)
        .expect("a reply shorter than 2 GiB")
}

/// Packs messages as the host does, for tests.
#[cfg(test)]
pub(crate) fn pack(msgs: Vec<Message>) -> PackedMessages {
    let mut results = Results(PackedMessages {
        heads: Vec::new(),
        payload: Vec::new(),
    });
    for msg in msgs {
        results.push(Some(msg));
    }
    results.into_packed()
}

/// Unpacks results as the host does, for tests.
#[cfg(test)]
pub(crate) fn unpack_results(results: &PackedMessages) -> Vec<Option<Message>> {
    let mut rest = &results.payload[..];
    results
        .heads
        .iter()
        .map(|&head| (head != NO_REPLY).then(|| message(head, &mut rest)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_results_round_trip() {
        let msgs = vec![
            Message::Text("héllo".into()),
            Message::Binary(vec![0, 255]),
            Message::Text(String::new()),
        ];
        let burst = pack(msgs.clone());
        assert_eq!(burst.heads, [13, 4, 1]);
        assert_eq!(unpack(&burst).collect::<Vec<_>>(), msgs);
        let mut results = Results::for_burst(&burst);
        results.push(None);
        results.push(Some(Message::Binary(vec![1])));
        let results = results.into_packed();
        assert_eq!(results.heads, [NO_REPLY, 2]);
        assert_eq!(
            unpack_results(&results),
            [None, Some(Message::Binary(vec![1]))]
        );
    }
}
