//! The reaper's side of the store: the due index `kw:due` (pools by
//! earliest deadline, kept by keyward after the scripts that move a
//! deadline forward) and the pass that expires what it says is due, plus
//! one pool of the registry sweep per pass, plus a few bounded steps of
//! reclaiming the keys of deleted pools (`kw:graves`).

use redis::Value;

use super::reply::{Reply, names_of};
use super::scripts::{DUE_AT, Due, ExpireStep, Family, Reclaim};
use super::{DUE_INDEX, GRAVES, Inner, REGISTRY, lock};
use crate::core::{Expired, Name};
use crate::store::{REAP_STEP, StoreError};

/// Most due pools one reaper call visits; the rest wait for the next call.
const REAP_POOLS: u64 = 1000;
/// Most reaper steps ([`REAP_STEP`] entries each) per pool per call; what
/// is left waits for the next call (and lazy expiry keeps answers exact).
pub(super) const REAP_STEPS_PER_POOL: usize = 16;

/// Most reclaim steps ([`REAP_STEP`] keys each) per reaper call: a pool
/// of 10^6 keys is reclaimed in a minute of 250 ms ticks, and no tick
/// does much.
const RECLAIM_STEPS: usize = 16;
/// Names read from the registry per sweep page.
const SWEEP_PAGE: u64 = 100;

/// The reaper's walk over the registry, one pool per call: the names of
/// the last page not yet visited (last first), and the name the next page
/// starts after (`None`: from the start).
#[derive(Debug, Default)]
pub(super) struct Sweep {
    pending: Vec<Name>,
    after: Option<Name>,
}

impl Inner {
    /// Brings `pool` forward in the due index to `score` (ms), when a
    /// script said its earliest deadline moved before the recorded one:
    /// `ZADD LT`, O(log pools). `score` empty: nothing to do.
    pub(super) async fn index_due(&self, pool: &Name, score: &str) -> Result<(), StoreError> {
        if score.is_empty() {
            return Ok(());
        }
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        handle
            .query(
                redis::cmd("ZADD")
                    .arg(DUE_INDEX)
                    .arg("LT")
                    .arg(score)
                    .arg(pool.as_str()),
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Reads the due index entry a script may have returned after a key
    /// view, and applies it. O(log pools).
    pub(super) async fn index_from(
        &self,
        pool: &Name,
        reply: &mut Reply,
    ) -> Result<(), StoreError> {
        if reply.has_more() {
            let score = reply.text()?;
            self.index_due(pool, &score).await?;
        }
        Ok(())
    }

    /// One reaper pass: the pools the due index says are due (at most
    /// [`REAP_POOLS`]), plus one pool of the registry sweep. O(1) commands
    /// when nothing is due, whatever the number of pools.
    pub(super) async fn expire_all(&self) -> Result<Expired, StoreError> {
        self.ensure_ready().await?;
        let args = Due {
            now: self.now_arg(),
            limit: REAP_POOLS,
        };
        let due = names_of(self.call_bare(DUE_INDEX, &args).await?)?;
        let mut total = Expired::default();
        for name in due {
            total.add(self.expire_pool(&name).await?);
        }
        if let Some(name) = self.next_swept().await? {
            total.add(self.expire_pool(&name).await?);
        }
        self.reclaim_some().await?;
        Ok(total)
    }

    /// Up to [`RECLAIM_STEPS`] steps of deleting the key hashes of one
    /// deleted pool of `kw:graves`. When its graveyards are empty the name
    /// leaves `kw:graves`, and is checked once more afterwards: a deletion
    /// whose script ran in between adds it back after its script, so none
    /// is forgotten. O(RECLAIM_STEPS · REAP_STEP log n).
    async fn reclaim_some(&self) -> Result<(), StoreError> {
        let Value::BulkString(name) = self.query(redis::cmd("SRANDMEMBER").arg(GRAVES)).await?
        else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&name).into_owned();
        let Ok(pool) = Name::parse(&text) else {
            self.query(redis::cmd("SREM").arg(GRAVES).arg(&name))
                .await?;
            return Ok(());
        };
        for _ in 0..RECLAIM_STEPS {
            let (_, mut reply) = self.call(&pool, &Reclaim {}).await?;
            if reply.u64()? == 0 {
                self.query(redis::cmd("SREM").arg(GRAVES).arg(pool.as_str()))
                    .await?;
                let (_, mut again) = self.call(&pool, &Reclaim {}).await?;
                if again.u64()? != 0 {
                    self.query(redis::cmd("SADD").arg(GRAVES).arg(pool.as_str()))
                        .await?;
                }
                break;
            }
        }
        Ok(())
    }

    /// Expires one pool's due entries (scripts of at most [`REAP_STEP`]
    /// entries, at most [`REAP_STEPS_PER_POOL`] of them), then sets its due
    /// index score to its next deadline, and lowers it again if a script
    /// brought the deadline forward in between (see the module docs).
    async fn expire_pool(&self, name: &Name) -> Result<Expired, StoreError> {
        let mut total = Expired::default();
        let mut next = String::new();
        for _ in 0..REAP_STEPS_PER_POOL {
            let (_, mut reply) = self.call(name, &ExpireStep {}).await?;
            let step = reply.expired()?;
            next = reply.text()?;
            total.add(step);
            if step.keys + step.leases + step.recovered < REAP_STEP as u64 {
                break;
            }
        }
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        let set = if next.is_empty() {
            redis::cmd("ZREM").arg(DUE_INDEX).arg(name.as_str()).clone()
        } else {
            redis::cmd("ZADD")
                .arg(DUE_INDEX)
                .arg(&next)
                .arg(name.as_str())
                .clone()
        };
        handle.query(&set).await.map_err(|e| self.failed(e))?;
        let meta = Family::Pool.routing(&Family::Pool.prefix(name));
        let recorded = handle
            .query(redis::cmd("HGET").arg(&meta).arg(DUE_AT))
            .await
            .map_err(|e| self.failed(e))?;
        if let Value::BulkString(b) = recorded {
            let recorded = String::from_utf8(b).unwrap_or_default();
            let earlier = match (recorded.parse::<u64>(), next.parse::<u64>()) {
                (Ok(r), Ok(n)) => r < n,
                (Ok(_), Err(_)) => true,
                _ => false,
            };
            if earlier {
                self.index_due(name, &recorded).await?;
            }
        }
        Ok(total)
    }

    /// The next pool of the registry sweep: from the names of the last
    /// page, reading the next page (`ZRANGEBYLEX`, O(log pools +
    /// SWEEP_PAGE)) when they are used up, and starting over at the end.
    async fn next_swept(&self) -> Result<Option<Name>, StoreError> {
        let after = {
            let mut sweep = lock(&self.sweep);
            if let Some(name) = sweep.pending.pop() {
                return Ok(Some(name));
            }
            sweep.after.clone()
        };
        let mut names = self
            .names_after(REGISTRY, after.as_ref().map(Name::as_str), SWEEP_PAGE)
            .await?;
        let mut sweep = lock(&self.sweep);
        sweep.after = if (names.len() as u64) < SWEEP_PAGE {
            None
        } else {
            names.last().cloned()
        };
        names.reverse();
        let first = names.pop();
        sweep.pending = names;
        Ok(first)
    }
}
