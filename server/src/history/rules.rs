//! Where a page of history starts, and whether it recovers everything a
//! client missed: the same rule for every backend (the memory backend
//! calls it; Redis runs it as Lua in `redis.rs`; tests/tests/history_rules.rs
//! holds both to the same cases through a real plugin).

use super::Position;

/// A channel's history as it stands: its epoch, its newest offset (0 when
/// nothing was published in this epoch), and the oldest offset still kept
/// (`latest + 1` when nothing is kept).
#[derive(Debug, Clone, Copy)]
pub struct Kept<'a> {
    pub epoch: &'a str,
    pub latest: u64,
    pub first: u64,
}

/// The first offset to return, and whether nothing after `since` is lost.
///
/// A client that comes back with a position of this epoch, no newer than
/// the latest, and no older than the oldest kept message's predecessor,
/// gets exactly what it missed. Otherwise (another epoch, a position from
/// the future, or a gap that was trimmed by size or age) it gets the kept
/// messages from the oldest, and `recovered: false` tells it to start
/// over. Without `since`, it gets everything kept, recovered only if
/// nothing of the epoch was ever dropped.
pub fn plan(since: Option<&Position>, kept: Kept<'_>) -> (u64, bool) {
    let from_oldest = (kept.first, false);
    match since {
        None => (kept.first, kept.first <= 1),
        Some(s) if s.epoch != kept.epoch || s.offset > kept.latest => from_oldest,
        Some(s) if s.offset + 1 >= kept.first => (s.offset + 1, true),
        Some(_) => from_oldest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's `since` as (epoch, offset).
    type Since = Option<(&'static str, u64)>;

    /// (since, latest, first) -> (from, recovered).
    const CASES: &[(Since, u64, u64, u64, bool)] = &[
        // Nothing published yet.
        (None, 0, 1, 1, true),
        (Some(("e", 0)), 0, 1, 1, true),
        // All kept.
        (None, 5, 1, 1, true),
        (Some(("e", 3)), 5, 1, 4, true),
        (Some(("e", 5)), 5, 1, 6, true),
        (Some(("e", 0)), 5, 1, 1, true),
        // Trimmed to 4..=9.
        (None, 9, 4, 4, false),
        (Some(("e", 3)), 9, 4, 4, true),
        (Some(("e", 2)), 9, 4, 4, false),
        // Another epoch, or from the future.
        (Some(("x", 3)), 9, 4, 4, false),
        (Some(("e", 10)), 9, 4, 4, false),
        // Everything expired.
        (Some(("e", 9)), 9, 10, 10, true),
        (Some(("e", 8)), 9, 10, 10, false),
    ];

    #[test]
    fn plan_cases() {
        for (since, latest, first, from, recovered) in CASES {
            let since = since.map(|(e, o)| Position::new(e, o));
            let kept = Kept {
                epoch: "e",
                latest: *latest,
                first: *first,
            };
            assert_eq!(
                plan(since.as_ref(), kept),
                (*from, *recovered),
                "{since:?} {latest} {first}"
            );
        }
    }
}
