//! Time arithmetic on numbers tenants write (deadlines, TTLs, grace periods), saturating
//! instead of overflowing: upstream accepts any non-negative `int64` for many of them, and a
//! moment beyond the range of time is simply one that never comes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `t` plus `seconds` (which may be negative), or `None` when that is beyond the range of
/// timestamps: a deadline that never comes (or, going back, a moment before all time).
pub fn add_seconds(t: Timestamp, seconds: i64) -> Option<Timestamp> {
    t.checked_add(SignedDuration::from_secs(seconds)).ok()
}

/// `t` plus `seconds`, clamped to the range of timestamps.
pub fn saturating_add_seconds(t: Timestamp, seconds: i64) -> Timestamp {
    add_seconds(t, seconds).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Whether `seconds` after `start` has passed at `now` (never, when beyond the range of time).
pub fn passed(start: Timestamp, seconds: i64, now: Timestamp) -> bool {
    add_seconds(start, seconds).is_some_and(|at| now >= at)
}

/// How long from `now` until `at`; zero if it has passed.
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    if at <= now {
        Duration::ZERO
    } else {
        at.duration_since(now).unsigned_abs()
    }
}

/// How long from `now` until `seconds` after `start`: `None` when that never comes.
pub fn until_after(start: Timestamp, seconds: i64, now: Timestamp) -> Option<Duration> {
    add_seconds(start, seconds).map(|at| until(at, now))
}

/// A tenant's number of seconds as a wait: negative counts as zero.
pub fn seconds(n: i64) -> Duration {
    Duration::from_secs(n.max(0).unsigned_abs())
}

/// The whole seconds from `since` to `now` (negative when `since` is ahead of `now`).
pub fn elapsed_seconds(since: Timestamp, now: Timestamp) -> i64 {
    now.duration_since(since).as_secs()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Numbers a tenant can write into an `int32` or `int64` field, and the ones around them.
    pub(crate) const EXTREMES: &[i64] = &[
        0,
        1,
        -1,
        59,
        600,
        i32::MAX as i64,
        i32::MIN as i64,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
        253_402_300_799, // seconds from 1970 to the end of year 9999
        -377_705_116_800,
    ];

    fn moments() -> Vec<Timestamp> {
        vec![
            Timestamp::UNIX_EPOCH,
            "2025-01-01T00:00:00Z".parse().unwrap(),
            Timestamp::MIN,
            Timestamp::MAX,
        ]
    }

    #[test]
    fn arithmetic_on_extreme_seconds_saturates_instead_of_panicking() {
        for t in moments() {
            for &s in EXTREMES {
                for now in moments() {
                    let at = add_seconds(t, s);
                    // Far deadlines never pass; ones in range behave as plain arithmetic.
                    assert_eq!(
                        passed(t, s, now),
                        at.is_some_and(|at| now >= at),
                        "{t} {s} {now}"
                    );
                    let left = until_after(t, s, now);
                    assert_eq!(left.is_none(), at.is_none());
                    if let (Some(at), Some(left)) = (at, left) {
                        assert_eq!(left.is_zero(), at <= now);
                    }
                    let _ = elapsed_seconds(t, now);
                }
                let sat = saturating_add_seconds(t, s);
                assert!((Timestamp::MIN..=Timestamp::MAX).contains(&sat));
                if s > 0 {
                    assert!(sat >= t);
                }
                let _ = seconds(s);
            }
        }
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert!(!passed(now, i64::MAX, now));
        assert!(passed(now, 0, now));
        assert!(passed(now, -1, now));
        assert_eq!(until_after(now, 30, now), Some(Duration::from_secs(30)));
        assert_eq!(until_after(now, i64::MAX, now), None);
        assert_eq!(saturating_add_seconds(now, i64::MAX), Timestamp::MAX);
        assert_eq!(saturating_add_seconds(now, i64::MIN), Timestamp::MIN);
        assert_eq!(seconds(-5), Duration::ZERO);
        assert_eq!(seconds(i64::MAX), Duration::from_secs(i64::MAX as u64));
    }
}
