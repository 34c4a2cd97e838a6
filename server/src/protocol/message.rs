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
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// A close frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

impl CloseFrame {
    pub(crate) fn to_frame(&self) -> yawc::Frame {
        yawc::Frame::close(self.code.into(), self.reason.as_bytes())
    }
}
