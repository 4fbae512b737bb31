//! The name registries `kw:pool-names` and `kw:keyspace-names`: every
//! pool and keyspace is added before it can exist, refused past its limit,
//! so the counts `--max-pools`/`--max-keyspaces` check and `/metrics`
//! reports are exact. Each is a sorted set with every score 0, so it is
//! ordered by name: `ZRANGEBYLEX` reads a page after any name in
//! O(log n + page) (listings, the reaper's sweep, the snapshot).
//!
//! Registries written by earlier versions were plain sets (`kw:pools`,
//! `kw:keyspaces`); [`Inner::migrate_registries`] copies them over at
//! start-up in `SSCAN` steps. Pools written by keyward versions before
//! the credential-pool states (no listing indexes, no `layout` in the
//! meta hash) are brought to the current layout once, at start-up, by
//! [`Inner::migrate_pools`].

use redis::Value;

use super::reply::{Reply, names_of};
use super::scripts::{self, Call, Code, ExpireStep, Family, Reserve};
use super::{
    DUE_INDEX, Inner, KEYSPACES, OLD_KEYSPACES, OLD_REGISTRY, REGISTRY, SNAPSHOT_NAMED_U64,
    unavailable,
};
use crate::core::Name;
use crate::store::{Limit, PageRequest, StoreError};

/// Names copied per `SSCAN` step of the migration.
const MIGRATE_COUNT: u64 = 1000;

/// Set once every pool of the registry has the current key layout, so
/// later start-ups skip the walk (one `GET`).
const POOLS_MIGRATED: &str = "kw:layout";

impl Inner {
    /// Adds `pool` to the registry, refused past `--max-pools`. Done
    /// before every call that may create the pool, so a pool is never
    /// missing from it and the count is never over. O(log pools).
    pub(super) async fn register(&self, pool: &Name) -> Result<(), StoreError> {
        self.reserve(REGISTRY, pool, Limit::Pools).await
    }

    /// Adds a keyspace to its registry before it is created, refused past
    /// `--max-keyspaces`. O(log keyspaces).
    pub(super) async fn register_keyspace(&self, keyspace: &Name) -> Result<(), StoreError> {
        self.reserve(KEYSPACES, keyspace, Limit::Keyspaces).await
    }

    /// `name` into the registry `set` unless it is full: one script,
    /// O(log n) (`ZSCORE`, `ZCARD`, `ZADD`).
    async fn reserve(&self, set: &str, name: &Name, limit: Limit) -> Result<(), StoreError> {
        let max = match limit {
            Limit::Pools => self.limits.max_pools,
            _ => self.limits.max_keyspaces,
        };
        let args = Reserve {
            name: name.as_str().to_owned(),
            max,
        };
        let value = self.call_bare(set, &args).await?;
        match Reply::new(value)?.code()? {
            Code::Ok => Ok(()),
            Code::Full => Err(self.limits.reached(limit)),
            other => Err(unavailable(format!(
                "{other:?} from {}",
                <Reserve as Call>::OPERATION
            ))),
        }
    }

    /// Runs a bare script (no pool or keyspace head) with `KEYS[1] = key`.
    pub(super) async fn call_bare<A: Call>(
        &self,
        key: &str,
        args: &A,
    ) -> Result<Value, StoreError> {
        debug_assert_eq!(A::FAMILY, scripts::Family::Bare);
        self.invoke(key, String::new(), args, None)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Runs one command, mapping its error.
    pub(super) async fn query(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        handle.query(cmd).await.map_err(|e| self.failed(e))
    }

    /// At most `count` names of the registry `set` strictly after `after`
    /// (from the first without), in order: `ZRANGEBYLEX`, O(log n +
    /// count).
    pub(super) async fn names_after(
        &self,
        set: &str,
        after: Option<&str>,
        count: u64,
    ) -> Result<Vec<Name>, StoreError> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let reply = self
            .query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(set)
                    .arg(start)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(count),
            )
            .await?;
        names_of(reply)
    }

    /// The names of one page of a registry, and the cursor of the next
    /// page: `limit + 1` names asked for, the extra one only saying that
    /// more follow. O(log n + limit).
    pub(super) async fn page_names(
        &self,
        set: &str,
        page: &PageRequest,
    ) -> Result<(Vec<Name>, Option<String>), StoreError> {
        let limit = page.limit.get();
        let mut names = self
            .names_after(set, page.after.as_deref(), limit as u64 + 1)
            .await?;
        let more = names.len() > limit;
        names.truncate(limit);
        let next = if more {
            names.last().map(|n| n.as_str().to_owned())
        } else {
            None
        };
        Ok((names, next))
    }

    /// The first names of a registry, at most [`SNAPSHOT_NAMED`]:
    /// O(log n + SNAPSHOT_NAMED).
    ///
    /// [`SNAPSHOT_NAMED`]: crate::store::SNAPSHOT_NAMED
    pub(super) async fn first_names(&self, set: &str) -> Result<Vec<Name>, StoreError> {
        self.names_after(set, None, SNAPSHOT_NAMED_U64).await
    }

    /// `ZCARD` of a registry: O(1).
    pub(super) async fn count(&self, set: &str) -> Result<u64, StoreError> {
        match self.query(redis::cmd("ZCARD").arg(set)).await? {
            Value::Int(n) => u64::try_from(n).map_err(|_| unavailable("negative ZCARD")),
            other => Err(unavailable(format!("unexpected ZCARD reply {other:?}"))),
        }
    }

    /// Copies the plain-set registries of earlier versions into the sorted
    /// ones, `MIGRATE_COUNT` names per `SSCAN` step, then deletes them.
    /// Idempotent (`ZADD` of a name present is a no-op), so processes
    /// starting together, or one stopped half-way, do no harm. O(1) once
    /// migrated (`EXISTS`).
    pub(super) async fn migrate_registries(&self) -> Result<(), StoreError> {
        for (old, new) in [(OLD_REGISTRY, REGISTRY), (OLD_KEYSPACES, KEYSPACES)] {
            if self.query(redis::cmd("EXISTS").arg(old)).await? == Value::Int(0) {
                continue;
            }
            let mut cursor = "0".to_owned();
            loop {
                let mut reply = Reply::new(
                    self.query(
                        redis::cmd("SSCAN")
                            .arg(old)
                            .arg(&cursor)
                            .arg("COUNT")
                            .arg(MIGRATE_COUNT),
                    )
                    .await?,
                )?;
                cursor = reply.text()?;
                let names = names_of(reply.next()?)?;
                if !names.is_empty() {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(new);
                    for name in &names {
                        zadd.arg(0).arg(name.as_str());
                    }
                    self.query(&zadd).await?;
                }
                if cursor == "0" {
                    break;
                }
            }
            self.query(redis::cmd("DEL").arg(old)).await?;
            tracing::info!(
                from = old,
                to = new,
                "moved the name registry to a sorted set"
            );
        }
        Ok(())
    }

    /// Brings every pool an older keyward made to the current key layout
    /// (listing numbers and per-state indexes: see `expire.lua`), one
    /// `expire` step of `REAP_STEP` keys at a time, then marks the
    /// database done. O(1) once done; otherwise O(pools + keys / REAP_STEP)
    /// calls, once. A pool or key an older process adds later is
    /// adopted by the reaper's sweep or when it is touched.
    pub(super) async fn migrate_pools(&self) -> Result<(), StoreError> {
        let done = self.query(redis::cmd("GET").arg(POOLS_MIGRATED)).await?;
        if done == Value::BulkString(b"2".to_vec()) {
            return Ok(());
        }
        let mut after: Option<Name> = None;
        loop {
            let names = self
                .names_after(REGISTRY, after.as_ref().map(Name::as_str), MIGRATE_COUNT)
                .await?;
            for name in &names {
                self.migrate_pool(name).await?;
            }
            if (names.len() as u64) < MIGRATE_COUNT {
                break;
            }
            after = names.last().cloned();
        }
        self.query(redis::cmd("SET").arg(POOLS_MIGRATED).arg("2"))
            .await?;
        Ok(())
    }

    /// `expire` steps on `pool` until its meta hash says the current
    /// layout (or the pool is gone), then the due index entry the last
    /// step computed. At most `keys / REAP_STEP + 2` steps.
    async fn migrate_pool(&self, pool: &Name) -> Result<(), StoreError> {
        let prefix = Family::Pool.prefix(pool);
        let meta = Family::Pool.routing(&prefix);
        let alive = format!("{prefix}:alive");
        let Value::Int(keys) = self.query(redis::cmd("ZCARD").arg(&alive)).await? else {
            return Err(unavailable("ZCARD did not answer a number"));
        };
        let steps = u64::try_from(keys).unwrap_or(0) / crate::store::REAP_STEP as u64 + 2;
        for _ in 0..steps {
            let layout = self
                .query(redis::cmd("HGET").arg(&meta).arg("layout"))
                .await?;
            match layout {
                Value::Nil => {}
                _ => return Ok(()),
            }
            if self.query(redis::cmd("EXISTS").arg(&meta)).await? == Value::Int(0) {
                return Ok(());
            }
            let value = self
                .invoke(&meta, prefix.clone(), &ExpireStep {}, None)
                .await
                .map_err(|e| self.failed(e))?;
            let mut reply = Reply::new(value)?;
            reply.code()?;
            reply.expired()?;
            let next = reply.text()?;
            if !next.is_empty() {
                self.query(
                    redis::cmd("ZADD")
                        .arg(DUE_INDEX)
                        .arg("LT")
                        .arg(&next)
                        .arg(pool.as_str()),
                )
                .await?;
            }
        }
        Ok(())
    }
}
