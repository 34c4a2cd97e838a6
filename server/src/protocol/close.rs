//! Close codes: which ones a plugin may send, and the ones the host uses.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// Server going away (shutdown) or idle timeout.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the protocol (a malformed message).
pub const PROTOCOL_ERROR: u16 = 1002;
/// No status code was present in the client's close frame.
pub const NO_STATUS: u16 = 1005;
/// The connection dropped without a close frame.
pub const ABNORMAL: u16 = 1006;
/// A text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// The client broke a policy (message rate).
pub const POLICY: u16 = 1008;
/// The client sent a message over the size limit.
pub const TOO_BIG: u16 = 1009;
/// The plugin failed (trap or deadline) while handling this connection.
pub const INTERNAL_ERROR: u16 = 1011;
/// A close reason must fit a control frame: 125 bytes minus the code.
pub const MAX_REASON_BYTES: usize = 123;

/// Whether an endpoint may put `code` on the wire (RFC 6455 §7.4, plus the
/// registered 1012-1014 and the 3000-4999 application range).
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a plugin-supplied close code and reason.
pub fn validate(code: u16, reason: &str) -> Result<(), &'static str> {
    if !is_sendable(code) {
        return Err("close code not allowed");
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err("close reason longer than 123 bytes");
    }
    Ok(())
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
    }
}
