//! The name sets `kw:pools` and `kw:keyspaces`: every pool and keyspace is
//! added before it can exist, refused past its limit, so the counts
//! `--max-pools`/`--max-keyspaces` check and `/metrics` reports are exact;
//! and read back page by page (`SSCAN`) for the reaper's sweep and the
//! snapshot.

use redis::Value;

use super::reply::{Reply, names_of};
use super::scripts::{self, Call, Code, Reserve};
use super::{Inner, KEYSPACES, REGISTRY, lock, unavailable};
use crate::core::Name;
use crate::store::{Limit, SNAPSHOT_NAMED, StoreError};

/// Names read from a name set per `SSCAN`, for the sweep and `/metrics`.
const SCAN_COUNT: u64 = 100;

impl Inner {
    /// Adds `pool` to the registry, once per process (and again after an
    /// error), refused past `--max-pools`. Done before the pool can exist,
    /// so a pool is never missing from it and the count is never over.
    /// O(1).
    pub(super) async fn register(&self, pool: &Name) -> Result<(), StoreError> {
        if lock(&self.registered).contains(pool) {
            return Ok(());
        }
        self.reserve(REGISTRY, pool, Limit::Pools).await?;
        lock(&self.registered).insert(pool.clone());
        Ok(())
    }

    /// Adds a keyspace to its registry before it is created, refused past
    /// `--max-keyspaces`. O(1).
    pub(super) async fn register_keyspace(&self, keyspace: &Name) -> Result<(), StoreError> {
        self.reserve(KEYSPACES, keyspace, Limit::Keyspaces).await
    }

    /// `name` into the name set `set` unless it is full: one script,
    /// O(1) (`SISMEMBER`, `SCARD`, `SADD`).
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
        self.invoke(key, String::new(), args)
            .await
            .map_err(|e| self.failed(e))
    }

    /// One `SSCAN` page of a name set: the next cursor and the names.
    /// O(SCAN_COUNT).
    pub(super) async fn scan(
        &self,
        set: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<Name>), StoreError> {
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        let reply = handle
            .query(
                redis::cmd("SSCAN")
                    .arg(set)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut reply = Reply::new(reply)?;
        let cursor = reply
            .text()?
            .parse()
            .map_err(|_| unavailable("SSCAN cursor is not a number"))?;
        let names = names_of(reply.next()?)?;
        Ok((cursor, names))
    }

    /// The first names of a name set in `SSCAN` order, at most
    /// [`SNAPSHOT_NAMED`], sorted: O(SNAPSHOT_NAMED) for Redis, a few
    /// pages.
    pub(super) async fn first_names(&self, set: &str) -> Result<Vec<Name>, StoreError> {
        let mut names = Vec::new();
        let mut cursor = 0;
        // Bounded: a page may come back empty while the cursor moves on.
        for _ in 0..8 {
            let (next, page) = self.scan(set, cursor).await?;
            names.extend(page);
            cursor = next;
            if cursor == 0 || names.len() >= SNAPSHOT_NAMED {
                break;
            }
        }
        names.sort();
        names.dedup();
        names.truncate(SNAPSHOT_NAMED);
        Ok(names)
    }

    /// `SCARD` of a name set: O(1).
    pub(super) async fn count(&self, set: &str) -> Result<u64, StoreError> {
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        let reply = handle
            .query(redis::cmd("SCARD").arg(set))
            .await
            .map_err(|e| self.failed(e))?;
        match reply {
            Value::Int(n) => u64::try_from(n).map_err(|_| unavailable("negative SCARD")),
            other => Err(unavailable(format!("unexpected SCARD reply {other:?}"))),
        }
    }
}
