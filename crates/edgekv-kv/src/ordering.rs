//! How the origin orders writes, by their hybrid-logical-clock stamps.
//!
//! A write taken synchronously wins: it gets `max(its stamp, current stamp + 1)`,
//! so it lands after what it replaces, in commit order. An outbox replay competes
//! on its original stamp: if the key already carries a newer stamp, the replay is
//! superseded and not applied. Stamps too far ahead of the origin's clock are
//! refused, so one fast clock cannot win every race for good.

use crate::clock::Hlc;

/// How far ahead of the origin's clock a stamp may be, in milliseconds.
pub const MAX_CLOCK_SKEW_MS: u64 = 5_000;

/// What the origin does with one key of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store it with this stamp.
    Apply(u64),
    /// A newer write of the key stands; record the replay as superseded.
    Superseded,
}

/// Decides a key's write given the stamp the key carries now, if any.
pub fn decide(stamp: u64, current: Option<u64>, replay: bool) -> Decision {
    match current {
        None => Decision::Apply(stamp),
        Some(current) if replay => {
            if current > stamp {
                Decision::Superseded
            } else {
                Decision::Apply(stamp)
            }
        }
        Some(current) => Decision::Apply(stamp.max(current.saturating_add(1))),
    }
}

/// Whether a stamp is within [`MAX_CLOCK_SKEW_MS`] of the origin's clock.
pub fn within_skew(stamp: u64, origin_now_ms: u64) -> bool {
    Hlc::physical_ms(stamp) <= origin_now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_writes_win_in_commit_order() {
        assert_eq!(decide(10, None, false), Decision::Apply(10));
        assert_eq!(decide(10, Some(5), false), Decision::Apply(10));
        // An older stamp (a slow clock) still lands after what it replaces.
        assert_eq!(decide(10, Some(50), false), Decision::Apply(51));
    }

    #[test]
    fn replays_compete_on_their_stamp() {
        assert_eq!(decide(10, Some(50), true), Decision::Superseded);
        assert_eq!(decide(60, Some(50), true), Decision::Apply(60));
        assert_eq!(decide(10, None, true), Decision::Apply(10));
    }

    #[test]
    fn skew() {
        let now = 1_000_000;
        assert!(within_skew((now + 5_000) << 16, now));
        assert!(!within_skew((now + 5_001) << 16, now));
    }
}
