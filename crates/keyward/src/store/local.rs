//! The local engine: the core state machines in RAM behind one mutex,
//! with an optional SQLite journal ([`super::sqlite`]) for durability.
//!
//! Why a `std::sync::Mutex` and not an owner task: every operation is a
//! few microseconds of CPU with no `.await` inside, so a short critical
//! section beats a channel hop to another thread (measured ~0.9× vs ~0.7×
//! of `/healthz` throughput in lease+release). The lock is never held across
//! an `.await`; the reaper takes it in bounded steps. With a journal, the
//! rows an operation changed are queued under the same lock (so their
//! order is the order of changes) and the reply waits, outside the lock,
//! for the group commit that makes them durable.
//!
//! Beside the pools, the engine keeps what lets the rest cost O(what it
//! reports) instead of O(pools): the names in order (`/metrics` names the
//! first few), the sums of every pool's counts (`/metrics` totals), and a
//! due index of pools by earliest deadline (the reaper visits only pools
//! with something due). It also enforces the [`Limits`] before it changes
//! anything.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::sqlite::{self, Durability, Journal, OpenError, Record};
use super::waiters::{Ticket, Waiters};
use super::{
    DefaultKeyspaceChanged, KeyspaceView, Limit, Limits, MAX_WAIT, NewKeys, Page, PageRequest,
    PoolInfo, PoolPatch, PoolTotals, REAP_STEP, SNAPSHOT_NAMED, Snapshot, Store, StoreError,
    Upsert,
};
use crate::clock::Clock;
use crate::core::{
    Expired, Imported, Issued, KeyCursor, KeyState, KeyView, Keyspace, KeyspaceSpec, Labels, Name,
    Outcome, Pool, PoolError, PoolKey, PoolSettings, PoolStats, Reason, Secret, Timestamp,
    TokenCodec, TokenStatus, Ttl,
};

/// What the local engine starts with.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// Settings of the `default` pool (taken on every start) and of pools
    /// created implicitly.
    pub pool_defaults: PoolSettings,
    /// Alphabet and length of the `default` keyspace.
    pub default_keyspace: KeyspaceSpec,
    /// Most pools, keyspaces and keys per pool clients may make.
    pub limits: Limits,
}

#[derive(Debug)]
struct Engine {
    pools: HashMap<Name, Pool>,
    keyspaces: HashMap<Name, Keyspace>,
    /// The names of `pools` and `keyspaces` in order, so `/metrics` reads
    /// the first few and a listing reads a page in O(page · log n).
    pool_names: BTreeSet<Name>,
    keyspace_names: BTreeSet<Name>,
    /// Sums of every pool's counts, kept in step by [`Engine::with_pool`]
    /// so `/metrics` reads them in O(1).
    totals: PoolTotals,
    /// Pools by when the reaper should look at them: each no later than
    /// the pool's earliest deadline (an earlier entry costs one visit that
    /// finds nothing), so a reaper pass visits only pools with something
    /// due. `due_at` is each pool's entry in `due`.
    due: BTreeSet<(Timestamp, Name)>,
    due_at: HashMap<Name, Timestamp>,
    rng: StdRng,
    journal: Option<Journal>,
    /// Leases waiting for a key, per pool; served by [`Engine::with_pool`]
    /// inside the change that freed a key.
    waiters: Waiters,
    /// Records of keys handed to waiters, journaled with the next commit
    /// (always within the same lock hold).
    pending: Vec<Record>,
    clock: Arc<dyn Clock>,
}

impl Engine {
    fn new(
        pools: HashMap<Name, Pool>,
        keyspaces: HashMap<Name, Keyspace>,
        journal: Option<Journal>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut totals = PoolTotals::default();
        for pool in pools.values() {
            add_counts(&mut totals, pool);
        }
        let due_at: HashMap<Name, Timestamp> = pools
            .iter()
            .filter_map(|(name, pool)| Some((name.clone(), pool.next_deadline()?)))
            .collect();
        Self {
            pool_names: pools.keys().cloned().collect(),
            keyspace_names: keyspaces.keys().cloned().collect(),
            due: due_at.iter().map(|(n, &at)| (at, n.clone())).collect(),
            due_at,
            pools,
            keyspaces,
            totals,
            rng: rand::make_rng(),
            journal,
            waiters: Waiters::default(),
            pending: Vec::new(),
            clock,
        }
    }

    /// Runs `f` on an existing pool, moves the totals by the change in its
    /// counts, and brings its due entry forward if `f` brought its earliest
    /// deadline forward. O(log n) besides `f` (O(log pools) more when the
    /// entry moves).
    fn with_pool<T>(
        &mut self,
        name: &Name,
        f: impl FnOnce(&mut Pool, &mut StdRng) -> T,
    ) -> Option<T> {
        let pool = self.pools.get_mut(name)?;
        let (stats, expired) = (pool.stats(), pool.expired_total());
        let out = f(pool, &mut self.rng);
        if self.waiters.waiting(name) {
            let now = self.clock.now();
            serve_waiters(name, pool, &mut self.waiters, &mut self.rng, now);
            pool_records(name, pool, false, &mut self.pending);
        }
        let t = &mut self.totals;
        move_counts(&mut t.stats, stats, pool.stats());
        let after = pool.expired_total();
        t.expired.keys = t.expired.keys - expired.keys + after.keys;
        t.expired.leases = t.expired.leases - expired.leases + after.leases;
        t.expired.recovered = t.expired.recovered - expired.recovered + after.recovered;
        if let Some(next) = pool.next_deadline() {
            let indexed = self.due_at.get(name).copied();
            if indexed.is_none_or(|at| next < at) {
                if let Some(at) = indexed {
                    self.due.remove(&(at, name.clone()));
                }
                self.due.insert((next, name.clone()));
                self.due_at.insert(name.clone(), next);
            }
        }
        Some(out)
    }

    /// Takes the first pool whose due entry is at or before `now` out of
    /// the index. O(log pools).
    fn pop_due(&mut self, now: Timestamp) -> Option<Name> {
        let (at, _) = self.due.first()?;
        if *at > now {
            return None;
        }
        let (_, name) = self.due.pop_first()?;
        self.due_at.remove(&name);
        Some(name)
    }

    /// Creates an empty pool unless it exists; refused if it would cross
    /// `--max-pools`. O(log pools).
    fn ensure_pool(
        &mut self,
        name: &Name,
        settings: PoolSettings,
        limits: &Limits,
    ) -> Result<Upsert, StoreError> {
        if self.pools.contains_key(name) {
            return Ok(Upsert::Existed);
        }
        if self.pools.len() as u64 >= limits.max_pools {
            return Err(limits.reached(Limit::Pools));
        }
        let pool = Pool::new(settings, self.journal.is_some());
        self.pools.insert(name.clone(), pool);
        self.pool_names.insert(name.clone());
        Ok(Upsert::Created)
    }

    /// Takes a pool out of every index (names, totals, due index), so from
    /// now on nothing finds it and its place under `--max-pools` is free.
    /// Returns it, to be dropped off the lock. O(log pools).
    fn remove_pool(&mut self, name: &Name) -> Option<Pool> {
        let pool = self.pools.remove(name)?;
        self.pool_names.remove(name);
        self.waiters.forget(name);
        if let Some(at) = self.due_at.remove(name) {
            self.due.remove(&(at, name.clone()));
        }
        let (stats, expired) = (pool.stats(), pool.expired_total());
        let t = &mut self.totals;
        move_counts(&mut t.stats, stats, PoolStats::default());
        t.expired.keys -= expired.keys;
        t.expired.leases -= expired.leases;
        t.expired.recovered -= expired.recovered;
        Some(pool)
    }

    /// Queues the records (if journaling) and returns the sequence number
    /// the reply must wait for.
    fn commit(&mut self, mut records: Vec<Record>) -> u64 {
        match &mut self.journal {
            Some(j) => {
                if !self.pending.is_empty() {
                    records.append(&mut self.pending);
                }
                j.append(records)
            }
            None => {
                // Nothing is journaled in RAM (pools record no changes).
                self.pending.clear();
                0
            }
        }
    }
}

/// The names of `names` strictly after `page.after`, at most `limit + 1`
/// of them (the extra one tells whether more follow). O(limit · log n).
fn page_names(names: &BTreeSet<Name>, page: &PageRequest) -> Vec<Name> {
    let start = match &page.after {
        Some(after) => Bound::Excluded(after.as_str()),
        None => Bound::Unbounded,
    };
    names
        .range::<str, _>((start, Bound::Unbounded))
        .take(page.limit.get() + 1)
        .cloned()
        .collect()
}

/// Drops something big (a pool of 10^6 keys, a keyspace of as many
/// activations) on the blocking pool, so the request that deleted it
/// answers at once and no async worker stalls on freeing memory.
fn drop_off_path<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// Time from `now` until `at`, at least 1 ms; `None` without `at`.
fn retry_after(at: Option<Timestamp>, now: Timestamp) -> Option<Ttl> {
    at.and_then(|at| Ttl::from_millis(at.as_millis().saturating_sub(now.as_millis()).max(1)))
}

/// Leases a key of `name` now, unless the pool's waiters come first: with
/// waiters queued, due expiry is applied (handing what it frees to them)
/// and this request gets a key only if one is still free after they are
/// all served. O(log n).
fn lease_now(
    engine: &mut Engine,
    name: &Name,
    now: Timestamp,
    records: &mut Vec<Record>,
) -> Result<KeyView, StoreError> {
    let queued = engine.waiters.waiting(name);
    let result = engine.with_pool(name, |pool, rng| {
        let result = if queued {
            pool.expire_lazily(now);
            Err(PoolError::NoFreeKey)
        } else {
            pool.lease(now, rng)
        };
        pool_records(name, pool, false, records);
        result.map_err(|e| match e {
            PoolError::NoFreeKey => StoreError::NoFreeKey {
                retry_after: retry_after(pool.next_free_at(), now),
            },
            e => e.into(),
        })
    });
    match result {
        // The waiters took every key expiry freed; try once more in case
        // one is left (only when none of them is still waiting).
        Some(Err(StoreError::NoFreeKey { .. })) if queued && !engine.waiters.waiting(name) => {
            lease_now(engine, name, now, records)
        }
        Some(result) => result,
        None => Err(StoreError::NoFreeKey { retry_after: None }),
    }
}

/// Hands free keys of `pool` to its waiters, oldest first, each leased
/// for it in this same change, until no key or no waiter is left. A key
/// whose every waiter has gone is released again. O(log n + log w) per key
/// handed.
fn serve_waiters(
    name: &Name,
    pool: &mut Pool,
    waiters: &mut Waiters,
    rng: &mut StdRng,
    now: Timestamp,
) {
    while waiters.waiting(name) {
        let Ok(view) = pool.lease(now, rng) else {
            return;
        };
        if let Err(view) = waiters.hand(name, view) {
            let _ = pool.release(&view.key, view.lease.map(|l| l.id), now);
            return;
        }
    }
}

fn add_counts(totals: &mut PoolTotals, pool: &Pool) {
    move_counts(&mut totals.stats, PoolStats::default(), pool.stats());
    totals.expired.add(pool.expired_total());
}

/// Moves `sums` by one pool's change of counts from `before` to `after`.
/// O(1).
fn move_counts(sums: &mut PoolStats, before: PoolStats, after: PoolStats) {
    sums.total = sums.total - before.total + after.total;
    sums.free = sums.free - before.free + after.free;
    sums.leased = sums.leased - before.leased + after.leased;
    sums.cooling = sums.cooling - before.cooling + after.cooling;
    sums.quarantined = sums.quarantined - before.quarantined + after.quarantined;
    sums.disabled = sums.disabled - before.disabled + after.disabled;
}

/// Rows for a pool's recorded changes, plus its own row when anything
/// changed (or `force`, after a settings change).
fn pool_records(name: &Name, pool: &mut Pool, force: bool, out: &mut Vec<Record>) {
    let changes = pool.drain_changes();
    if changes.is_empty() && !force {
        return;
    }
    out.push(Record::Pool {
        name: name.clone(),
        settings: pool.settings(),
        last_lease_id: pool.last_lease_id(),
    });
    out.extend(changes.into_iter().map(|change| Record::Key {
        pool: name.clone(),
        change,
    }));
}

fn keyspace_record(name: &Name, ks: &Keyspace) -> Record {
    Record::Keyspace {
        name: name.clone(),
        spec: ks.codec().spec().clone(),
        secret: ks.codec().secret().clone(),
        issued: ks.info().issued,
    }
}

/// A queued lease. Dropped before it took its key (timed out, or its
/// client went away and the request future was dropped), it leaves the
/// queue; a key handed to it in that instant goes to the next waiter or
/// back to free, so a waiter that does not answer never holds a key.
struct WaitGuard<'a> {
    store: &'a LocalStore,
    pool: &'a Name,
    ticket: Ticket,
    rx: oneshot::Receiver<KeyView>,
    /// The key handed over, until the answer is durable and taken.
    handed: Option<KeyView>,
}

impl WaitGuard<'_> {
    /// The wait ended: take a key handed at the last moment, else leave
    /// the queue and answer `no_free_key` with the pool's next deadline.
    fn give_up(mut self) -> Result<KeyView, StoreError> {
        if let Ok(view) = self.rx.try_recv() {
            return Ok(view);
        }
        let now = self.store.clock.now();
        let mut engine = self.store.lock();
        engine.waiters.remove(self.pool, self.ticket);
        if let Ok(view) = self.rx.try_recv() {
            return Ok(view);
        }
        let next = engine.pools.get(self.pool).and_then(Pool::next_free_at);
        Err(StoreError::NoFreeKey {
            retry_after: retry_after(next, now),
        })
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut engine = self.store.lock();
        let view = match self.handed.take() {
            Some(view) => view,
            None => {
                if engine.waiters.remove(self.pool, self.ticket) {
                    return;
                }
                // Handed a key it will not answer with: the hand-over
                // happened under this lock, so the key is in the channel.
                self.rx.close();
                let Ok(view) = self.rx.try_recv() else {
                    return;
                };
                view
            }
        };
        let now = self.store.clock.now();
        let name = self.pool;
        let mut records = Vec::new();
        engine.with_pool(name, |pool, _| {
            let _ = pool.release(&view.key, view.lease.map(|l| l.id), now);
            pool_records(name, pool, false, &mut records);
        });
        engine.commit(records);
    }
}

/// The local store: `memory:` (no journal) or `sqlite:PATH`. All
/// operations are O(1) or O(log n) under a short lock.
#[derive(Debug)]
pub struct LocalStore {
    engine: Mutex<Engine>,
    durability: Option<Durability>,
    pool_defaults: PoolSettings,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl LocalStore {
    /// An empty in-RAM store holding the `default` pool and keyspace.
    pub fn new(settings: LocalSettings, clock: Arc<dyn Clock>) -> Self {
        let mut pools = HashMap::new();
        pools.insert(
            Name::default_name(),
            Pool::new(settings.pool_defaults, false),
        );
        let mut keyspaces = HashMap::new();
        keyspaces.insert(
            Name::default_name(),
            Keyspace::new(TokenCodec::new(
                settings.default_keyspace,
                Secret::generate(),
            )),
        );
        Self {
            engine: Mutex::new(Engine::new(pools, keyspaces, None, clock.clone())),
            durability: None,
            pool_defaults: settings.pool_defaults,
            limits: settings.limits,
            clock,
        }
    }

    /// Opens the SQLite database at `path` (creating it if absent), reloads
    /// every pool, key, lease, keyspace and activation, applies the `default`
    /// pool's settings and keyspace, and expires what fell due while the
    /// server was down. O(rows).
    pub async fn open_sqlite(
        path: &Path,
        settings: LocalSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        let path = path.to_owned();
        let (conn, loaded) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || sqlite::open(&path)
        })
        .await
        .map_err(|e| OpenError::Thread(std::io::Error::other(e)))??;
        let (journal, durability) = sqlite::start_writer(conn)?;
        let mut engine = Engine::new(loaded.pools, loaded.keyspaces, Some(journal), clock.clone());
        let mut records = Vec::new();

        let default = Name::default_name();
        // The `default` pool and keyspace always exist, whatever the limits.
        let unlimited = Limits {
            max_pools: u64::MAX,
            ..settings.limits
        };
        engine
            .ensure_pool(&default, settings.pool_defaults, &unlimited)
            .expect("no pool limit applies here");
        engine.with_pool(&default, |pool, _| {
            pool.set_settings(settings.pool_defaults);
            pool_records(&default, pool, true, &mut records);
        });

        let want = settings.default_keyspace;
        match engine.keyspaces.get(&default) {
            Some(ks) if *ks.codec().spec() == want => {}
            Some(ks) if ks.info().issued > 0 => {
                return Err(Box::new(DefaultKeyspaceChanged {
                    place: path.display().to_string(),
                    issued: ks.info().issued,
                    have: ks.codec().spec().clone(),
                    want,
                    instead: "use a new --store sqlite:PATH",
                })
                .into());
            }
            _ => {
                // Nothing issued yet: the flags may still change it.
                let ks = Keyspace::new(TokenCodec::new(want, Secret::generate()));
                records.push(keyspace_record(&default, &ks));
                engine.keyspaces.insert(default.clone(), ks);
                engine.keyspace_names.insert(default);
            }
        }

        let now = clock.now();
        let names: Vec<Name> = engine.pool_names.iter().cloned().collect();
        for name in names {
            engine.with_pool(&name, |pool, _| {
                pool.expire(now);
                pool_records(&name, pool, false, &mut records);
            });
        }
        let seq = engine.commit(records);
        durability
            .wait(seq)
            .await
            .map_err(|e| OpenError::Thread(std::io::Error::other(e)))?;
        Ok(Self {
            engine: Mutex::new(engine),
            durability: Some(durability),
            pool_defaults: settings.pool_defaults,
            limits: settings.limits,
            clock,
        })
    }

    /// When a waiter of `name` should look again: at `until`, or earlier
    /// when the pool's first lease, cooldown or quarantine ends (on the
    /// store's clock, translated to the runtime's). O(log n).
    fn next_wake(&self, name: &Name, until: Instant) -> Instant {
        let engine = self.lock();
        let Some(at) = engine.pools.get(name).and_then(Pool::next_free_at) else {
            return until;
        };
        let now = self.clock.now();
        let ms = at.as_millis().saturating_sub(now.as_millis());
        until.min(Instant::now() + Duration::from_millis(ms))
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock would be a bug in the core; the
        // state machines keep their invariants between calls, so carry on.
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, queues the records it produced, then waits
    /// (outside the lock) until everything the answer depends on is
    /// durable. Errors answer only after that wait too: a "not found" may
    /// rest on an expiry that is not yet on disk.
    async fn run<T>(
        &self,
        f: impl FnOnce(&mut Engine, &mut Vec<Record>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // While the disk refuses writes, refuse new work up front: the
        // answer would be a 503 anyway, and this way a 503 mostly means
        // "did not happen" and the retry queue stops growing.
        if let Some(refusal) = self.durability.as_ref().and_then(Durability::refusal) {
            return Err(refusal);
        }
        let (result, seq) = {
            let mut engine = self.lock();
            let mut records = Vec::new();
            let result = f(&mut engine, &mut records);
            (result, engine.commit(records))
        };
        if let Some(d) = &self.durability {
            d.wait(seq).await?;
        }
        result
    }

    /// Runs `f` on an existing pool (which applies due expiry first).
    async fn with_pool<T>(
        &self,
        name: &Name,
        missing: PoolError,
        f: impl FnOnce(&mut Pool, &mut StdRng) -> Result<T, PoolError>,
    ) -> Result<T, StoreError> {
        self.run(|engine, records| {
            let result = engine
                .with_pool(name, |pool, rng| {
                    let result = f(pool, rng);
                    pool_records(name, pool, false, records);
                    result
                })
                .ok_or(missing)?;
            Ok(result?)
        })
        .await
    }

    fn pool_info(name: &Name, pool: &Pool) -> PoolInfo {
        PoolInfo {
            name: name.clone(),
            settings: pool.settings(),
            stats: pool.stats(),
            expired: pool.expired_total(),
            quarantines: pool.quarantines_total(),
        }
    }

    fn keyspace_view(name: &Name, ks: &Keyspace) -> KeyspaceView {
        KeyspaceView {
            name: name.clone(),
            spec: ks.codec().spec().clone(),
            info: ks.info(),
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    /// O(1) (plus due expiry).
    async fn put_pool(
        &self,
        name: &Name,
        patch: PoolPatch,
    ) -> Result<(PoolInfo, Upsert), StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| {
            let upsert = engine.ensure_pool(name, self.pool_defaults, &self.limits)?;
            let info = engine
                .with_pool(name, |pool, _| {
                    pool.set_settings(patch.apply(pool.settings()));
                    pool.expire_lazily(now);
                    pool_records(name, pool, true, records);
                    Self::pool_info(name, pool)
                })
                .expect("the pool was just found or inserted");
            Ok((info, upsert))
        })
        .await
    }

    /// O(1) (plus due expiry).
    async fn pool_info(&self, name: &Name) -> Result<PoolInfo, StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| {
            engine
                .with_pool(name, |pool, _| {
                    pool.expire_lazily(now);
                    pool_records(name, pool, false, records);
                    Self::pool_info(name, pool)
                })
                .ok_or(StoreError::PoolNotFound)
        })
        .await
    }

    /// O(keys). Refused whole, creating nothing, when the pool could
    /// come to hold more than `--max-keys-per-pool` live keys (imported
    /// keys count before duplicates are known) or a new pool would cross
    /// `--max-pools`.
    async fn add_keys(
        &self,
        name: &Name,
        keys: NewKeys,
        labels: &Labels,
    ) -> Result<Imported, StoreError> {
        let now = self.clock.now();
        let limits = &self.limits;
        // For a pool that does not exist yet: the keys it would get.
        let count = match &keys {
            NewKeys::Generate(n) => u64::try_from(*n).unwrap_or(u64::MAX),
            NewKeys::Import(keys) => {
                let distinct: std::collections::HashSet<&str> =
                    keys.iter().map(PoolKey::as_str).collect();
                distinct.len() as u64
            }
        };
        self.run(|engine, records| {
            if !engine.pools.contains_key(name) && count > limits.max_keys_per_pool {
                return Err(limits.reached(Limit::KeysPerPool));
            }
            engine.ensure_pool(name, self.pool_defaults, limits)?;
            engine
                .with_pool(name, |pool, _| {
                    // Due keys leave first, so they do not count.
                    pool.expire_lazily(now);
                    // An import counts only the keys it would add.
                    let count = match &keys {
                        NewKeys::Generate(_) => count,
                        NewKeys::Import(keys) => {
                            pool.count_new(keys.iter().map(PoolKey::as_str), now)
                        }
                    };
                    let result =
                        if pool.stats().total.saturating_add(count) > limits.max_keys_per_pool {
                            Err(limits.reached(Limit::KeysPerPool))
                        } else {
                            match keys {
                                NewKeys::Generate(n) => {
                                    pool.generate_labelled(n, labels, now)
                                        .map(|added| Imported {
                                            added,
                                            existing: Vec::new(),
                                        })
                                }
                                NewKeys::Import(keys) => pool.import(keys, labels, now),
                            }
                            .map_err(StoreError::from)
                        };
                    pool_records(name, pool, true, records);
                    result
                })
                .expect("the pool was just found or inserted")
        })
        .await
    }

    /// O(log n). With no free key, says when the first lease, cooldown or
    /// quarantine ends (O(log n) more). Never takes a key before a waiter
    /// of the pool.
    async fn lease_key(&self, name: &Name) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| lease_now(engine, name, now, records))
            .await
    }

    /// Leases at once if a key is free; else queues behind the pool's
    /// other waiters (in the same lock hold, so no key freed in between is
    /// missed) and waits to be handed one. Besides hand-overs, it wakes only
    /// when its wait ends or when the pool's first lease, cooldown or
    /// quarantine is due (to apply that expiry at once, not at the
    /// reaper's next tick): no polling.
    async fn lease_key_waiting(&self, name: &Name, wait: Duration) -> Result<KeyView, StoreError> {
        if wait.is_zero() {
            return self.lease_key(name).await;
        }
        let until = Instant::now() + wait.min(MAX_WAIT);
        let now = self.clock.now();
        let first = self
            .run(
                |engine, records| match lease_now(engine, name, now, records) {
                    Err(StoreError::NoFreeKey { .. }) => engine
                        .waiters
                        .push(name)
                        .map(Err)
                        .ok_or(StoreError::ShuttingDown),
                    other => other.map(Ok),
                },
            )
            .await?;
        let (ticket, rx) = match first {
            Ok(view) => return Ok(view),
            Err(queued) => queued,
        };
        let mut guard = WaitGuard {
            store: self,
            pool: name,
            ticket,
            rx,
            handed: None,
        };
        loop {
            let wake = self.next_wake(name, until);
            tokio::select! {
                handed = &mut guard.rx => {
                    return match handed {
                        Ok(view) => {
                            // Handed over under the lock; its rows are
                            // queued: answer once they are durable. The
                            // guard keeps the key meanwhile, so a client
                            // gone during the flush does not leave it
                            // leased to nobody.
                            guard.handed = Some(view);
                            self.flush().await?;
                            Ok(guard.handed.take().expect("set just above"))
                        }
                        Err(_) if self.lock().waiters.is_closed() => Err(StoreError::ShuttingDown),
                        // The pool was deleted while we waited.
                        Err(_) => Err(StoreError::NoFreeKey { retry_after: None }),
                    };
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= until {
                        return guard.give_up();
                    }
                    // A deadline of the pool is due: expire it now, which
                    // hands what it frees to the oldest waiters.
                    let now = self.clock.now();
                    self.run(|engine, records| {
                        engine.with_pool(name, |pool, _| {
                            pool.expire_lazily(now);
                            pool_records(name, pool, false, records);
                        });
                        Ok(())
                    })
                    .await?;
                }
            }
        }
    }

    fn stop_waiting(&self) {
        self.lock().waiters.close();
    }

    /// O(log n).
    async fn report_key(
        &self,
        name: &Name,
        key: &str,
        lease_id: Option<u64>,
        outcome: Outcome,
        reason: Option<Reason>,
    ) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| {
            pool.release_with(key, lease_id, outcome, reason, now)
        })
        .await
    }

    /// O(log n).
    async fn disable_key(
        &self,
        name: &Name,
        key: &str,
        reason: Option<Reason>,
    ) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| {
            pool.disable(key, reason, now)
        })
        .await
    }

    /// O(log n).
    async fn enable_key(&self, name: &Name, key: &str) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| {
            pool.enable(key, now)
        })
        .await
    }

    /// O(limit · log n) under the lock: the pool's per-state bitsets from
    /// the cursor on. The cursor is a slot number, valid while this
    /// process runs (a restart renumbers the keys, so a listing started
    /// before it may repeat or miss keys).
    async fn list_keys(
        &self,
        name: &Name,
        state: Option<KeyState>,
        page: &PageRequest,
    ) -> Result<Page<KeyView>, StoreError> {
        let from = match &page.after {
            None => KeyCursor::START,
            Some(text) => KeyCursor::new(text.parse().map_err(|_| StoreError::InvalidCursor)?),
        };
        let now = self.clock.now();
        self.run(|engine, records| {
            engine
                .with_pool(name, |pool, _| {
                    let listed = pool.list(state, from, page.limit.get(), now);
                    pool_records(name, pool, false, records);
                    Page {
                        items: listed.keys,
                        next: listed.next.map(|c| c.get().to_string()),
                    }
                })
                .ok_or(StoreError::PoolNotFound)
        })
        .await
    }

    /// O(log n).
    async fn keepalive_key(
        &self,
        name: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| {
            pool.keepalive(key, lease_id, now)
        })
        .await
    }

    /// O(1) (plus due expiry).
    async fn get_key(&self, name: &Name, key: &str) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| pool.get(key, now))
            .await
    }

    /// O(log n).
    async fn delete_key(&self, name: &Name, key: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.with_pool(name, PoolError::KeyNotFound, |pool, _| {
            pool.delete(key, now)
        })
        .await
    }

    /// O(1); a new keyspace's permutation is O(1) to set up too. A new
    /// one past `--max-keyspaces` is refused.
    async fn put_keyspace(
        &self,
        name: &Name,
        spec: KeyspaceSpec,
    ) -> Result<(KeyspaceView, Upsert), StoreError> {
        self.run(|engine, records| {
            if let Some(ks) = engine.keyspaces.get(name) {
                return if *ks.codec().spec() == spec {
                    Ok((Self::keyspace_view(name, ks), Upsert::Existed))
                } else {
                    Err(StoreError::KeyspaceImmutable)
                };
            }
            if engine.keyspaces.len() as u64 >= self.limits.max_keyspaces {
                return Err(self.limits.reached(Limit::Keyspaces));
            }
            let ks = Keyspace::new(TokenCodec::new(spec, Secret::generate()));
            records.push(keyspace_record(name, &ks));
            let view = Self::keyspace_view(name, &ks);
            engine.keyspaces.insert(name.clone(), ks);
            engine.keyspace_names.insert(name.clone());
            Ok((view, Upsert::Created))
        })
        .await
    }

    /// O(1).
    async fn keyspace_info(&self, name: &Name) -> Result<KeyspaceView, StoreError> {
        self.run(|engine, _| {
            let ks = engine
                .keyspaces
                .get(name)
                .ok_or(StoreError::KeyspaceNotFound)?;
            Ok(Self::keyspace_view(name, ks))
        })
        .await
    }

    /// O(1): one keyed permutation of the counter.
    async fn issue_token(&self, name: &Name) -> Result<Issued, StoreError> {
        self.run(|engine, records| {
            let ks = engine
                .keyspaces
                .get_mut(name)
                .ok_or(StoreError::KeyspaceNotFound)?;
            let issued = ks.issue()?;
            records.push(Record::Issued {
                name: name.clone(),
                issued: ks.info().issued,
            });
            Ok(issued)
        })
        .await
    }

    /// O(1).
    async fn token_status(&self, name: &Name, token: &str) -> Result<TokenStatus, StoreError> {
        self.run(|engine, _| {
            let ks = engine
                .keyspaces
                .get(name)
                .ok_or(StoreError::KeyspaceNotFound)?;
            Ok(ks.status(token)?)
        })
        .await
    }

    /// O(1).
    async fn activate_token(&self, name: &Name, token: &str) -> Result<TokenStatus, StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| {
            let ks = engine
                .keyspaces
                .get_mut(name)
                .ok_or(StoreError::KeyspaceNotFound)?;
            let status = ks.activate(token, now)?;
            records.push(Record::Activation {
                keyspace: name.clone(),
                token: status.token.clone(),
                at: now,
            });
            Ok(status)
        })
        .await
    }

    /// O(limit · log pools) under the lock: a range of the ordered names.
    async fn list_pools(&self, page: &PageRequest) -> Result<Page<PoolInfo>, StoreError> {
        self.run(|engine, _| {
            let items = page_names(&engine.pool_names, page)
                .into_iter()
                .filter_map(|name| Some(Self::pool_info(&name, engine.pools.get(&name)?)))
                .collect();
            Ok(Page::from_overfetch(items, page.limit, |p: &PoolInfo| {
                p.name.as_str().to_owned()
            }))
        })
        .await
    }

    /// O(limit · log keyspaces) under the lock.
    async fn list_keyspaces(&self, page: &PageRequest) -> Result<Page<KeyspaceView>, StoreError> {
        self.run(|engine, _| {
            let items = page_names(&engine.keyspace_names, page)
                .into_iter()
                .filter_map(|name| Some(Self::keyspace_view(&name, engine.keyspaces.get(&name)?)))
                .collect();
            Ok(Page::from_overfetch(
                items,
                page.limit,
                |k: &KeyspaceView| k.name.as_str().to_owned(),
            ))
        })
        .await
    }

    /// O(log pools) under the lock: the pool leaves every index, one
    /// journal record marks it deleted (the writer reclaims its rows in
    /// bounded batches), and its keys are freed on the blocking pool.
    async fn delete_pool(&self, name: &Name) -> Result<(), StoreError> {
        if *name == Name::default_name() {
            return Err(StoreError::CannotDeleteDefault);
        }
        let pool = self
            .run(|engine, records| {
                let pool = engine.remove_pool(name).ok_or(StoreError::PoolNotFound)?;
                records.push(Record::DropPool { name: name.clone() });
                Ok(pool)
            })
            .await?;
        drop_off_path(pool);
        Ok(())
    }

    /// O(log keyspaces) under the lock, as [`LocalStore::delete_pool`].
    async fn delete_keyspace(&self, name: &Name) -> Result<(), StoreError> {
        if *name == Name::default_name() {
            return Err(StoreError::CannotDeleteDefault);
        }
        let keyspace = self
            .run(|engine, records| {
                let ks = engine
                    .keyspaces
                    .remove(name)
                    .ok_or(StoreError::KeyspaceNotFound)?;
                engine.keyspace_names.remove(name);
                records.push(Record::DropKeyspace { name: name.clone() });
                Ok(ks)
            })
            .await?;
        drop_off_path(keyspace);
        Ok(())
    }

    /// Visits only the pools the due index says are due: O(m log n) for
    /// the m due entries plus O(log pools) per visited pool, nothing for
    /// idle pools. Entries are taken `REAP_STEP` at a time, the lock
    /// released between steps; a pool left with due entries goes back into
    /// the index at once and is visited again in this pass. Does not wait
    /// for durability: no client sees this answer, and later readers wait
    /// for these rows.
    async fn expire_due(&self) -> Result<Expired, StoreError> {
        let now = self.clock.now();
        let mut total = Expired::default();
        loop {
            let mut engine = self.lock();
            let Some(name) = engine.pop_due(now) else {
                break;
            };
            let mut records = Vec::new();
            // Re-indexed by `with_pool` at the pool's next deadline. Each
            // turn expires something or moves an early entry past `now`,
            // so the loop ends.
            let step = engine.with_pool(&name, |pool, _| {
                let step = pool.expire_some(now, REAP_STEP);
                pool_records(&name, pool, false, &mut records);
                step
            });
            engine.commit(records);
            drop(engine);
            total.add(step.unwrap_or_default());
        }
        Ok(total)
    }

    /// In RAM: always ready. With a journal: ready while the last commit
    /// succeeded and the database files are the ones opened. O(1).
    async fn ping(&self) -> Result<(), StoreError> {
        match self.durability.as_ref().and_then(Durability::refusal) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// O(`SNAPSHOT_NAMED`) under the lock: the first pools and keyspaces
    /// by name, and the totals the engine keeps.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let engine = self.lock();
        Ok(Snapshot {
            pools: engine
                .pool_names
                .iter()
                .take(SNAPSHOT_NAMED)
                .filter_map(|name| Some(Self::pool_info(name, engine.pools.get(name)?)))
                .collect(),
            keyspaces: engine
                .keyspace_names
                .iter()
                .take(SNAPSHOT_NAMED)
                .filter_map(|name| Some(Self::keyspace_view(name, engine.keyspaces.get(name)?)))
                .collect(),
            pool_count: engine.pools.len() as u64,
            keyspace_count: engine.keyspaces.len() as u64,
            totals: Some(engine.totals),
        })
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let Some(d) = &self.durability {
            d.register_metrics(registry);
        }
    }

    /// Waits until every change queued so far is durable: O(1) here, plus
    /// the wait for the writer's commit.
    async fn flush(&self) -> Result<(), StoreError> {
        let seq = self.lock().commit(Vec::new());
        match &self.durability {
            Some(d) => d.wait(seq).await,
            None => Ok(()),
        }
    }
}
