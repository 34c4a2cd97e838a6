//! What the server queues for a client, in wsgate's own types so the
//! registry, the host API and the publish API never depend on the WebSocket
//! library underneath.

use bytes::Bytes;

/// A data message. Payloads are reference-counted: fanning one message out
/// to many connections clones a pointer per recipient, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Message {
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// The payload size, for the byte counters.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.0.len(),
            Message::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is binary, and its payload.
    pub fn payload(&self) -> (bool, &[u8]) {
        match self {
            Message::Text(text) => (false, &text.0),
            Message::Binary(bytes) => (true, bytes),
        }
    }

    /// The frame that carries it. It takes the payload over: even a
    /// refcount clone costs, since cloning a `Bytes` made from a `Vec` (a
    /// plugin's reply) first allocates a shared header for it.
    pub(crate) fn into_frame(self) -> yawc::Frame {
        match self {
            Message::Text(text) => yawc::Frame::text(text.0),
            Message::Binary(bytes) => yawc::Frame::binary(bytes),
        }
    }
}

/// Bytes that are valid UTF-8: only built from strings, so a text frame
/// never needs validating again on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utf8Bytes(Bytes);

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(text.into())
    }
}

/// Bytes from elsewhere (another node) are checked once, here.
impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        Utf8Bytes::from_utf8(bytes)
    }
}

impl Utf8Bytes {
    /// Checks bytes received from a client (or another node) once.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: only ever built from a `str`, a `String` or checked bytes.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The text as a `String`, without copying when these bytes are the
    /// only reference to a buffer that came from a `Vec` (a plugin's reply).
    pub fn into_string(self) -> String {
        // SAFETY: as for `as_str`.
        unsafe { String::from_utf8_unchecked(Vec::from(self.0)) }
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}
