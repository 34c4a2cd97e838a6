//! Close codes and close frames: the one place they are defined. Codes come
//! from three directions (the client's close frame, the plugin's `close`,
//! the server's own reasons), and only some may go on the wire, so a code
//! is a type rather than a bare `u16`.

use std::fmt;

/// A WebSocket close code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CloseCode(u16);

impl CloseCode {
    /// Normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// Server going away (shutdown, plugin stopped) or idle timeout.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// The client broke the protocol (a malformed frame or message).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// No status code was present in the client's close frame.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// The connection dropped without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// The client broke a policy: message rate, or it stopped reading (a
    /// slow consumer whose send queue filled up).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// The client sent a message over the size limit.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The plugin failed (trap or deadline) while handling this connection.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// The plugin was replaced and its sidecar asks open connections to
    /// reconnect to the new version.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// The server is short of a shared resource (the budget for partly
    /// received messages); the client may try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Any code, as a client's close frame carries it.
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// A code a plugin asked for, if an endpoint may put it on the wire.
    pub fn sendable(code: u16) -> Option<CloseCode> {
        is_sendable(code).then_some(CloseCode(code))
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A close reason must fit a control frame: 125 bytes minus the code.
pub const MAX_REASON_BYTES: usize = 123;

/// Whether an endpoint may put `code` on the wire (RFC 6455 §7.4, plus the
/// registered 1012-1014 and the 3000-4999 application range).
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a plugin-supplied close code and reason.
pub fn validate(code: u16, reason: &str) -> Result<CloseCode, &'static str> {
    let code = CloseCode::sendable(code).ok_or("close code not allowed")?;
    if reason.len() > MAX_REASON_BYTES {
        return Err("close reason longer than 123 bytes");
    }
    Ok(code)
}

/// How a connection ended, or is to end: the code and reason a close frame
/// carries and `on-close` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: CloseCode,
    pub reason: String,
}

impl CloseFrame {
    pub fn new(code: CloseCode, reason: impl Into<String>) -> CloseFrame {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// The peer vanished: no close frame, no reason.
    pub fn abnormal() -> CloseFrame {
        CloseFrame::new(CloseCode::ABNORMAL, String::new())
    }

    pub(crate) fn to_frame(&self) -> yawc::Frame {
        yawc::Frame::close(self.code.get().into(), self.reason.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for ok in [1000, 1001, 1003, 1008, 1011, 1014, 3000, 4999] {
            assert!(is_sendable(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!is_sendable(bad), "{bad}");
        }
        assert!(validate(1000, &"x".repeat(123)).is_ok());
        assert!(validate(1000, &"x".repeat(124)).is_err());
        assert_eq!(validate(4000, ""), Ok(CloseCode::new(4000)));
        assert_eq!(CloseCode::sendable(1006), None);
    }
}
