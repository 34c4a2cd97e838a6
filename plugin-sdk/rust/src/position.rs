//! A channel history position as text, `EPOCH:OFFSET`: the form a client
//! keeps and sends back (`?since=...`) and a message carries (`"pos"`).

use std::fmt;
use std::str::FromStr;

use crate::Position;

impl Position {
    pub fn new(epoch: impl Into<String>, offset: u64) -> Self {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }
}

/// `EPOCH:OFFSET`, e.g. `3f2a9c0d1e4b5a6f:42`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Text that is not `EPOCH:OFFSET`: no `:`, an empty epoch, or an offset
/// that is not a decimal u64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePositionError;

impl fmt::Display for ParsePositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a position is EPOCH:OFFSET, with a decimal offset")
    }
}

impl std::error::Error for ParsePositionError {}

/// Split at the last `:`: the host's epochs have none, but the offset is
/// the one part whose form is fixed, so the last `:` is the unambiguous
/// end of whatever epoch a client sends back.
impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, offset) = text.rsplit_once(':').ok_or(ParsePositionError)?;
        // u64's FromStr takes a leading '+'; a position never has one.
        if epoch.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParsePositionError);
        }
        let offset = offset.parse().map_err(|_| ParsePositionError)?;
        Ok(Position::new(epoch, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_splits_at_the_last_colon() {
        let pos: Position = "3f2a9c0d1e4b5a6f:42".parse().unwrap();
        assert_eq!(pos, Position::new("3f2a9c0d1e4b5a6f", 42));
        assert_eq!(pos.to_string(), "3f2a9c0d1e4b5a6f:42");
        assert_eq!("a:b:7".parse(), Ok(Position::new("a:b", 7)));
        assert_eq!("e:0".parse(), Ok(Position::new("e", 0)));
        assert_eq!(
            format!("e:{}", u64::MAX).parse(),
            Ok(Position::new("e", u64::MAX))
        );
    }

    #[test]
    fn rejects_what_is_not_a_position() {
        let too_big = format!("e:{}0", u64::MAX);
        for bad in [
            "", "e", ":5", "e:", "e:+5", "e:-1", "e: 5", "e:5 ", "e:x", "e:5:", &too_big,
        ] {
            assert_eq!(bad.parse::<Position>(), Err(ParsePositionError), "{bad:?}");
        }
    }
}
