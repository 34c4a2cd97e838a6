//! Text from clients and plugins on its way into the server's logs: cut
//! to a length and with control characters escaped, so nobody can forge a
//! log line (a newline and a fake timestamp) or flood one.

use std::borrow::Cow;
use std::fmt::Write;

/// The line as it is logged: cut to `max` bytes (at a character boundary,
/// marked with `…`) and with control characters escaped (`\n`, `\u{1b}`).
pub fn printable(line: &str, max: usize) -> Cow<'_, str> {
    let cut = if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        Some(end)
    } else {
        None
    };
    let kept = &line[..cut.unwrap_or(line.len())];
    if cut.is_none() && !kept.chars().any(char::is_control) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(kept.len() + 8);
    for c in kept.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut.is_some() {
        out.push('…');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_and_escaped() {
        assert_eq!(printable("plain line", 100), "plain line");
        assert_eq!(
            printable("evil\n2026-01-01 INFO forged", 100),
            "evil\\n2026-01-01 INFO forged"
        );
        assert_eq!(printable("\u{1b}[31mred", 100), "\\u{1b}[31mred");
        assert_eq!(printable("abcdef", 3), "abc…");
        // Never cut inside a character.
        assert_eq!(printable("aé", 2), "a…");
    }
}
