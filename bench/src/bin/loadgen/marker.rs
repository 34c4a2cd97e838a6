//! The round marker `BCAST#<round>#` of the `broadcast` mode, found in a
//! message whose payload arrives in pieces.
//!
//! The marker is usually at the start (bare servers, the fan-out plugin
//! send the published text as it is), but not always: the chat plugin wraps
//! it in JSON (`{"from":"pub","message":"BCAST#3#...",...}`). So the first
//! `BCAST#` anywhere in the message counts, as when whole messages were
//! searched, and the search stops there.

const TAG: &[u8] = b"BCAST#";

#[derive(Clone, Copy)]
enum State {
    /// Looking for the tag; this many of its bytes matched so far.
    Seeking(usize),
    /// After the tag: the round's digits so far (`digits` of them).
    Digits { round: u64, digits: u32 },
    /// The marker is complete.
    Found(u64),
    /// The first tag was not followed by a round and `#`.
    Failed,
}

/// Scans one message at a time for its round.
pub struct Marker {
    state: State,
}

impl Default for Marker {
    fn default() -> Self {
        Self {
            state: State::Seeking(0),
        }
    }
}

impl Marker {
    /// Scans the next piece of the current message.
    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            match self.state {
                State::Found(_) | State::Failed => return,
                State::Seeking(0) => {
                    // Skip to the next possible start of the tag.
                    let Some(at) = data.iter().position(|&b| b == TAG[0]) else {
                        return;
                    };
                    data = &data[at + 1..];
                    self.state = State::Seeking(1);
                    continue;
                }
                _ => {}
            }
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            data = rest;
            self.state = match self.state {
                State::Seeking(k) if b == TAG[k] && k + 1 == TAG.len() => State::Digits {
                    round: 0,
                    digits: 0,
                },
                State::Seeking(k) if b == TAG[k] => State::Seeking(k + 1),
                // No proper prefix of the tag is also its suffix: a mismatch
                // can only restart the tag here.
                State::Seeking(_) => State::Seeking(usize::from(b == TAG[0])),
                State::Digits { round, digits } if b == b'#' && digits > 0 => State::Found(round),
                State::Digits { round, digits } if b.is_ascii_digit() => round
                    .checked_mul(10)
                    .and_then(|r| r.checked_add(u64::from(b - b'0')))
                    .map_or(State::Failed, |round| State::Digits {
                        round,
                        digits: digits + 1,
                    }),
                State::Digits { .. } => State::Failed,
                done @ (State::Found(_) | State::Failed) => done,
            };
        }
    }

    /// The current message ended: its round, if it had a marker. Ready for
    /// the next message.
    pub fn finish(&mut self) -> Option<u64> {
        let state = std::mem::take(self).state;
        match state {
            State::Found(round) => Some(round),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_of(pieces: &[&[u8]]) -> Option<u64> {
        let mut m = Marker::default();
        for p in pieces {
            m.feed(p);
        }
        m.finish()
    }

    #[test]
    fn at_the_start_inside_json_and_in_pieces() {
        assert_eq!(round_of(&[b"BCAST#0#xxxxxxxx"]), Some(0));
        assert_eq!(round_of(&[b"BCAST#123#"]), Some(123));
        assert_eq!(
            round_of(&[br#"{"from":"pub","message":"BCAST#17#xx","pos":3}"#]),
            Some(17)
        );
        assert_eq!(round_of(&[b"BC", b"AST", b"#4", b"2", b"#x"]), Some(42));
        assert_eq!(round_of(&[b"BBCAST#5#"]), Some(5));
        assert_eq!(round_of(&[b"BCABCAST#6#"]), Some(6));
    }

    #[test]
    fn no_marker() {
        assert_eq!(round_of(&[]), None);
        assert_eq!(round_of(&[b"u7 connected"]), None);
        assert_eq!(round_of(&[b"BCAST#"]), None);
        assert_eq!(round_of(&[b"BCAST##"]), None);
        assert_eq!(round_of(&[b"BCAST#12"]), None);
        // The first tag decides, as when whole messages were searched.
        assert_eq!(round_of(&[b"BCAST#x BCAST#3#"]), None);
        assert_eq!(round_of(&[b"BCAST#99999999999999999999#"]), None);
    }

    #[test]
    fn finish_resets_for_the_next_message() {
        let mut m = Marker::default();
        m.feed(b"BCAST#1#");
        assert_eq!(m.finish(), Some(1));
        m.feed(b"BCAST#");
        assert_eq!(m.finish(), None);
        m.feed(b"#2#");
        assert_eq!(m.finish(), None);
    }
}
