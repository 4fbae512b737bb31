//! Wall-clock instants and durations as the core sees them.
//!
//! The core never reads a clock: callers pass a [`Timestamp`] in. Deadlines
//! are wall-clock instants (milliseconds since the Unix epoch) so that a
//! restart neither extends nor shortens them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch. O(1).
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch. O(1).
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ttl`, saturating at the far future instead of overflowing.
    /// O(1).
    pub fn after(self, ttl: Ttl) -> Self {
        Self(self.0.saturating_add(ttl.as_millis()))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T10:00:00.250Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

/// A positive time-to-live in whole milliseconds (≥ 1 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    /// Largest TTL accepted: 100 years, so deadlines never overflow.
    pub const MAX_MILLIS: u64 = 100 * 365 * 24 * 3600 * 1000;

    /// `None` unless `1 <= ms <= MAX_MILLIS`. O(1).
    pub fn from_millis(ms: u64) -> Option<Self> {
        (1..=Self::MAX_MILLIS).contains(&ms).then_some(Self(ms))
    }

    /// `None` for durations outside `1 ms ..= MAX_MILLIS`. O(1).
    pub fn from_duration(d: Duration) -> Option<Self> {
        u64::try_from(d.as_millis())
            .ok()
            .and_then(Self::from_millis)
    }

    /// The TTL in milliseconds. O(1).
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_with_milliseconds() {
        let t = Timestamp::from_millis(1_700_000_000_250);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.250Z");
    }

    #[test]
    fn ttl_rejects_zero_and_absurd_values() {
        assert!(Ttl::from_millis(0).is_none());
        assert!(Ttl::from_millis(Ttl::MAX_MILLIS + 1).is_none());
        assert_eq!(Ttl::from_millis(1).map(Ttl::as_millis), Some(1));
    }
}
