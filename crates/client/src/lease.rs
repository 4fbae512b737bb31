//! [`LeaseGuard`]: a leased key that keeps itself alive and is always
//! given back.
//!
//! A tokio task sends a keep-alive with the lease's `lease_id` every
//! `lease_ttl / 3` (or `keepalive_ttl / 3` if the pool's is shorter, so
//! the key itself cannot expire while held). The guard is lost, and the
//! task ends, when a keep-alive is refused in a way that says the lease
//! is over (expired, released, disabled or deleted from outside), or when
//! no keep-alive has succeeded for a whole `lease_ttl` (the server has
//! ended the lease by then, answer or not). A keep-alive that gets no
//! answer (after the client's retries) is otherwise tried again on the
//! next tick. The guard releases the key with the reported outcome when it
//! is released explicitly or dropped.

use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::pool::{Key, Outcome, Pool, PoolInfo, Report};

/// A leased key, kept alive by a background task until released.
///
/// **Drop.** Dropping the guard stops the keep-alive task at once and, if
/// the lease is not lost, spawns its release (with the reported outcome)
/// onto the tokio runtime that was current when the key was leased. That
/// release runs only while the runtime does: a guard dropped as its
/// runtime shuts down (say, at the end of `#[tokio::test]`) may leave the
/// key to its lease TTL. Drop during a panic reports
/// [`Outcome::Failed`] unless an outcome was reported. To see the
/// release's answer, call [`LeaseGuard::release`] instead.
#[must_use = "dropping the guard releases the key at once"]
pub struct LeaseGuard {
    pool: Pool,
    key: Key,
    lease_id: u64,
    report: Option<Report>,
    lost: watch::Receiver<bool>,
    /// `None` once released: the drop has nothing left to do.
    keeper: Option<JoinHandle<()>>,
    runtime: Handle,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("pool", &self.pool.name())
            .field("key", &self.key)
            .field("lease_id", &self.lease_id)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LeaseGuard {
    /// Guards the just-leased `key` of a pool with `settings`; `asked` is
    /// when the lease was asked for (the lease cannot end before `asked +
    /// lease_ttl`). Must run inside a tokio runtime.
    pub(crate) fn start(pool: Pool, key: Key, settings: &PoolInfo, asked: Instant) -> Result<Self> {
        let Some(lease_id) = key.lease_id else {
            return Err(Error::Protocol {
                status: 200,
                detail: "the lease answered a key object without a lease_id".to_owned(),
            });
        };
        let ttl = settings
            .keepalive_ttl
            .map_or(settings.lease_ttl, |k| k.min(settings.lease_ttl));
        let timing = Timing {
            every: (ttl / 3).max(Duration::from_millis(1)),
            lease_ttl: settings.lease_ttl,
            asked,
        };
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(
            pool.clone(),
            key.key.clone(),
            lease_id,
            timing,
            lost_tx,
        ));
        Ok(Self {
            pool,
            key,
            lease_id,
            report: None,
            lost,
            keeper: Some(keeper),
            runtime: Handle::current(),
        })
    }

    /// The leased key.
    pub fn key(&self) -> &str {
        &self.key.key
    }

    /// The key object as the lease answered it.
    pub fn leased(&self) -> &Key {
        &self.key
    }

    /// The lease's fencing token.
    pub fn lease_id(&self) -> u64 {
        self.lease_id
    }

    /// Whether the lease is lost (a keep-alive was refused, or none
    /// succeeded for a whole `lease_ttl`): the key may be someone else's
    /// now, so stop using it.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// A channel whose value turns `true` when the lease is lost
    /// (`wait_for(|lost| *lost)` awaits that). It closes once the
    /// keep-alive task has ended: lost, released or dropped.
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Sets how the key did, sent when it is released (default
    /// [`Outcome::Ok`]); the last report wins.
    pub fn report(&mut self, report: impl Into<Report>) {
        self.report = Some(report.into());
    }

    /// Stops the keep-alives and releases the key with the reported
    /// outcome, with the lease's `lease_id`. A lost lease answers as the
    /// server does (`LeaseMismatch`, `NotLeased`, `KeyNotFound`).
    pub async fn release(mut self) -> Result<Key> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            // Cancelled is the expected end; a panic in the task is
            // impossible to act on here.
            let _ = keeper.await;
        }
        let report = self.report.take().unwrap_or_default();
        self.pool
            .release(&self.key.key, Some(self.lease_id), report)
            .await
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        keeper.abort();
        if self.is_lost() {
            return;
        }
        let report = self.report.take().unwrap_or_else(|| {
            Report::new(if std::thread::panicking() {
                Outcome::Failed
            } else {
                Outcome::Ok
            })
        });
        let (pool, key, lease_id) = (self.pool.clone(), self.key.key.clone(), self.lease_id);
        // Nobody awaits this answer: a refusal means the lease was over
        // anyway, and a transport failure leaves the key to its TTL.
        self.runtime.spawn(async move {
            let _ = pool.release(&key, Some(lease_id), report).await;
        });
    }
}

/// When the keep-alives go, and how long the lease lasts without one.
struct Timing {
    every: Duration,
    lease_ttl: Duration,
    /// When the lease was asked for.
    asked: Instant,
}

/// Keeps `key`'s lease `lease_id` alive until the lease is over (then
/// marks `lost`) or the task is aborted.
async fn keep_alive(
    pool: Pool,
    key: String,
    lease_id: u64,
    timing: Timing,
    lost: watch::Sender<bool>,
) {
    let Timing {
        every,
        lease_ttl,
        asked,
    } = timing;
    // The server's deadline is at least this late: it was set after the
    // request left.
    let mut expires = asked + lease_ttl;
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    // After a slow keep-alive, the next one comes a full period later,
    // not in a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        let over = match pool.keepalive(&key, Some(lease_id)).await {
            Ok(kept) if kept.lease_id == Some(lease_id) => {
                expires = sent + lease_ttl;
                false
            }
            Ok(_) => true,
            Err(e) => e.ends_lease() || Instant::now() >= expires,
        };
        if over {
            lost.send_replace(true);
            return;
        }
    }
}
