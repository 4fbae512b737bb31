//! What a key's holders report and what the pool does about it: the key
//! states, release outcomes, reasons, and the cooldown and quarantine
//! settings with the doubling rule.

use std::fmt;

use crate::core::names::is_short_text;
use crate::core::time::{Timestamp, Ttl};

/// Where a key stands. Only `Free` keys are leased.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    /// Can be leased.
    #[default]
    Free,
    /// Under a lease.
    Leased,
    /// Rate limited: free again at `available_at`.
    Cooling,
    /// Failed too often: free again (on probation) at `available_at`.
    Quarantined,
    /// Out of use until enabled.
    Disabled,
}

impl KeyState {
    /// Every state, in the order [`PoolStats`](super::PoolStats) lists them.
    pub const ALL: [KeyState; 5] = [
        Self::Free,
        Self::Leased,
        Self::Cooling,
        Self::Quarantined,
        Self::Disabled,
    ];

    /// The lower-case name the API uses. O(1).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Leased => "leased",
            Self::Cooling => "cooling",
            Self::Quarantined => "quarantined",
            Self::Disabled => "disabled",
        }
    }

    /// The state named `s` (as [`KeyState::as_str`] writes it). O(1).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a lease ended, as its holder reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// The key worked: free, failures reset, quarantine doubling reset.
    #[default]
    Ok,
    /// The upstream rate limited the key: cooling until `now +
    /// retry_after`, or the pool's `cooldown` when none is given.
    RateLimited {
        /// How long the upstream asked to wait.
        retry_after: Option<Ttl>,
    },
    /// The key failed: one more consecutive failure, and quarantine once
    /// they reach `max_failures`.
    Failed,
}

/// Longest reason kept, in characters.
pub const MAX_REASON: usize = 256;

/// Why a key is cooling, quarantined or disabled: 1–256 characters, none a
/// control character.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reason(Box<str>);

/// A reason that is empty, too long or holds a control character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a reason must be 1 to {MAX_REASON} characters, none a control character")]
pub struct InvalidReason;

impl Reason {
    /// Validates `s`. O(len).
    pub fn parse(s: &str) -> Result<Self, InvalidReason> {
        if is_short_text(s, MAX_REASON) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidReason)
        }
    }

    /// The text. O(1).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Most consecutive failures before quarantine, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxFailures(u32);

impl MaxFailures {
    /// The default, 3.
    pub const DEFAULT: Self = Self(3);

    /// `None` unless `1 <= n <= 1000`. O(1).
    pub fn new(n: u64) -> Option<Self> {
        (1..=1000).contains(&n).then_some(Self(n as u32))
    }

    /// The count. O(1).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How a pool treats keys whose holders report trouble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// How long a rate-limited key cools when no `retry_after` is given.
    pub cooldown: Ttl,
    /// Consecutive failures that quarantine a key.
    pub max_failures: MaxFailures,
    /// The first quarantine's length; each quarantine in a row doubles it,
    /// up to [`Recovery::MAX_QUARANTINE_MS`].
    pub quarantine: Ttl,
}

impl Recovery {
    /// The doubling stops here: 24 hours (unless `quarantine` itself is
    /// longer, which is then used as it is).
    pub const MAX_QUARANTINE_MS: u64 = 24 * 3600 * 1000;

    /// When the `n`-th quarantine in a row (n ≥ 1) that starts at `now`
    /// ends: `quarantine × 2^(n−1)`, capped. O(1).
    pub fn quarantine_end(&self, n: u32, now: Timestamp) -> Timestamp {
        let base = self.quarantine.as_millis();
        let factor = 1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
        let ms = base
            .saturating_mul(factor)
            .min(Self::MAX_QUARANTINE_MS.max(base));
        Timestamp::from_millis(now.as_millis().saturating_add(ms))
    }
}

impl Default for Recovery {
    /// Cooldown 60 s, 3 failures, quarantine 300 s.
    fn default() -> Self {
        Self {
            cooldown: Ttl::from_millis(60_000).expect("60 s is a valid TTL"),
            max_failures: MaxFailures::DEFAULT,
            quarantine: Ttl::from_millis(300_000).expect("300 s is a valid TTL"),
        }
    }
}
