//! How long to wait before the next retry: one doubling schedule shared by
//! every retry loop of the server (the SQLite writer's commit retry, the
//! Redis start-up retry, the reaper's pause after a failed pass).
//!
//! It only computes waits; each caller sleeps (a thread or a task) or
//! skips work until the wait is over, and calls [`Backoff::reset`] after a
//! success. No jitter: each retry loop is one per process, and the Redis
//! command timeouts already spread processes that retry together.

use std::time::Duration;

/// A wait that starts at `min` and doubles after each use, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A schedule from `min` to `max` (`max` below `min` counts as `min`).
    pub(crate) const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next retry, and doubles the one after (capped at
    /// `max`). O(1).
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next.saturating_mul(2)).min(self.max).max(self.min);
        wait
    }

    /// Starts again from `min`, after a success. O(1).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_from_min_and_stop_at_max() {
        let mut backoff = Backoff::new(ms(100), ms(1_000));
        let waits: Vec<_> = (0..7).map(|_| backoff.next_wait()).collect();
        assert_eq!(
            waits,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_000),
                ms(1_000),
                ms(1_000)
            ]
        );
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut backoff = Backoff::new(ms(50), ms(2_000));
        for _ in 0..5 {
            backoff.next_wait();
        }
        backoff.reset();
        assert_eq!(backoff.next_wait(), ms(50));
        assert_eq!(backoff.next_wait(), ms(100));
    }

    #[test]
    fn a_max_below_min_keeps_the_wait_at_min() {
        let mut backoff = Backoff::new(ms(300), ms(100));
        assert_eq!(backoff.next_wait(), ms(300));
        assert_eq!(backoff.next_wait(), ms(300));
    }

    #[test]
    fn doubling_a_huge_wait_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        backoff.next_wait();
        assert_eq!(backoff.next_wait(), Duration::MAX);
    }
}
