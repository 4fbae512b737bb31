//! How often and how long the client waits between tries of one call:
//! capped exponential backoff with jitter, a bounded number of tries.
//!
//! Which failures are worth another try is the transport's decision
//! (`client.rs`); this module only spaces the tries.

use std::time::Duration;

/// The retry policy of every call: up to `attempts` tries; before try
/// `n + 1` (counting from 1) it sleeps a random time between half and all
/// of `min(base · 2^(n-1), cap)`, so clients that failed together do not
/// come back together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    base: Duration,
    cap: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, 100 ms doubling up to 2 s: at most ~3.1 s of sleep.
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// `attempts` tries in all (at least 1), the first pause about `base`,
    /// no pause longer than `cap`.
    pub fn new(attempts: u32, base: Duration, cap: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            base,
            cap: cap.max(base),
        }
    }

    /// One try, no retry.
    pub fn never() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// How many tries in all.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The pause after failed try `failed` (1 for the first), jittered.
    pub(crate) fn pause(&self, failed: u32) -> Duration {
        let ceiling = self.ceiling(failed);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::random::<u64>() % spread.saturating_add(1))
    }

    /// `min(base · 2^(failed-1), cap)`.
    fn ceiling(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.base
            .checked_mul(1 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_stay_within_half_and_all_of_it() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u64> = (1..=6)
            .map(|n| policy.ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        for failed in 1..=40 {
            let ceiling = policy.ceiling(failed);
            for _ in 0..50 {
                let pause = policy.pause(failed);
                assert!(
                    pause >= ceiling / 2 && pause <= ceiling,
                    "{pause:?} vs {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn a_policy_always_tries_at_least_once() {
        assert_eq!(
            RetryPolicy::new(0, Duration::ZERO, Duration::ZERO).attempts(),
            1
        );
        assert_eq!(RetryPolicy::never().pause(1), Duration::ZERO);
    }
}
