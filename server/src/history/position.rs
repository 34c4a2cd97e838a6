//! A place in a channel's history, and its text form `EPOCH:OFFSET`, which
//! travels in query strings and inside messages.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// Names one unbroken history of the channel: a new one whenever
    /// history was lost, so offsets of two epochs are never compared.
    pub epoch: String,
    /// The channel's recorded messages within the epoch, from 1.
    pub offset: u64,
}

impl Position {
    /// The longest epoch accepted from outside (ours are 16 characters).
    pub const MAX_EPOCH: usize = 32;
    /// The longest text form: an epoch, a colon and a u64.
    pub const MAX_TEXT: usize = Self::MAX_EPOCH + 1 + 20;

    /// A fresh epoch: 16 random hex digits, so that an epoch lost with
    /// its history is never made again.
    pub fn new_epoch() -> String {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random number generator");
        crate::runtime::hex(&bytes)
    }

    pub fn new(epoch: impl Into<String>, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    /// Whether an epoch is one a node could have made or accepted: what a
    /// frame from the bus is checked against.
    pub fn valid_epoch(epoch: &str) -> bool {
        !epoch.is_empty()
            && epoch.len() <= Self::MAX_EPOCH
            && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is EPOCH:OFFSET (letters and digits, a colon, a number)")]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Position, BadPosition> {
        let (epoch, offset) = text.rsplit_once(':').ok_or(BadPosition)?;
        if !Position::valid_epoch(epoch) || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadPosition);
        }
        let offset = offset.parse().map_err(|_| BadPosition)?;
        Ok(Position::new(epoch, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_junk_is_refused() {
        let p: Position = "a1b2:42".parse().unwrap();
        assert_eq!(p, Position::new("a1b2", 42));
        assert_eq!(p.to_string(), "a1b2:42");
        for bad in [
            "",
            ":1",
            "a:",
            "a:-1",
            "a:+1",
            "a:b",
            "a b:1",
            "a:1:2",
            "a:99999999999999999999999",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
        let epoch = Position::new_epoch();
        assert_eq!(epoch.len(), 16);
        assert_ne!(epoch, Position::new_epoch());
        assert!(Position::new(epoch, u64::MAX).to_string().len() <= Position::MAX_TEXT);
    }
}
