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

use super::idempotency::{Answer, Entry, Records};
use super::sqlite::{self, Durability, Journal, OpenError, Record};
use super::waiters::{Ticket, Waiters};
use super::{
    Applied, Change, DefaultKeyspaceChanged, Effect, Idem, KeyspaceView, Limit, Limits, MAX_WAIT,
    NewKeys, Page, PageRequest, PoolInfo, PoolTotals, REAP_STEP, SNAPSHOT_NAMED, Scope, Snapshot,
    Store, StoreError, Upsert,
};
use crate::clock::Clock;
use crate::core::{
    BatchInfo, Expired, Imported, KeyCursor, KeyState, KeyView, Keyspace, KeyspaceSpec, Labels,
    Name, Pool, PoolError, PoolKey, PoolSettings, PoolStats, Secret, Timestamp, TokenCodec,
    TokenStatus, Ttl,
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
    /// Idempotency records, expired by the reaper in bounded steps.
    idem: Records,
    clock: Arc<dyn Clock>,
}

impl Engine {
    fn new(
        pools: HashMap<Name, Pool>,
        keyspaces: HashMap<Name, Keyspace>,
        idem: Records,
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
            idem,
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
            let handed = Handing {
                waiters: &mut self.waiters,
                records: &mut self.idem,
                journaled: self.journal.is_some(),
                out: &mut self.pending,
            };
            serve_waiters(name, pool, handed, &mut self.rng, now);
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

    /// The answer recorded for `idem` in `scope`, as a replay; `None` when
    /// there is no idempotency key or no live record of it. O(log r) for
    /// r records.
    fn recorded(
        &self,
        scope: &Scope,
        idem: Option<&Idem>,
        now: Timestamp,
    ) -> Result<Option<Answered>, StoreError> {
        let Some(idem) = idem else {
            return Ok(None);
        };
        Ok(self.idem.lookup(scope, idem, now)?.map(|recorded| {
            Answered::Done(Applied::Recorded {
                recorded,
                replayed: true,
            })
        }))
    }

    /// The answer to a change that took `effect`: with `idem`, recorded
    /// (and journaled in `records`, the change's own batch), to be
    /// rendered once the lock is let go. O(log r).
    fn answer(
        &mut self,
        scope: &Scope,
        idem: Option<&Idem>,
        effect: Effect,
        now: Timestamp,
        records: &mut Vec<Record>,
    ) -> Answered {
        match idem {
            None => Answered::Done(Applied::Done(effect)),
            Some(idem) => Answered::Record(record(
                &mut self.idem,
                self.journal.is_some(),
                records,
                scope,
                idem,
                effect,
                now,
            )),
        }
    }

    /// Forgets the record of `idem` (its change was undone). O(log r).
    fn forget(&mut self, scope: &Scope, idem: &Idem, records: &mut Vec<Record>) {
        if let Some(id) = self.idem.remove(scope, &idem.key)
            && self.journal.is_some()
        {
            records.push(Record::IdemGone { id });
        }
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

/// What a hand-over to waiters changes besides the pool: the queues, and
/// the idempotency records of the waiters served (journaled with the
/// change, in `out`).
struct Handing<'a> {
    waiters: &'a mut Waiters,
    records: &'a mut Records,
    journaled: bool,
    out: &'a mut Vec<Record>,
}

/// Hands free keys of `pool` to its waiters, oldest first, each leased
/// for it in this same change (and its answer recorded, for a waiter with
/// an idempotency key), until no key or no waiter is left. A key whose
/// every waiter has gone is released again. O(log n + log w + log r) per
/// key handed.
fn serve_waiters(name: &Name, pool: &mut Pool, h: Handing<'_>, rng: &mut StdRng, now: Timestamp) {
    let scope = Scope::Pool(name.clone());
    while h.waiters.waiting(name) {
        let Ok(view) = pool.lease(now, rng) else {
            return;
        };
        match h.waiters.hand(name, view.clone()) {
            Ok(Some(idem)) => {
                let effect = Effect::Key(view);
                record(h.records, h.journaled, h.out, &scope, &idem, effect, now);
            }
            Ok(None) => {}
            Err(view) => {
                let _ = pool.release(&view.key, view.lease.map(|l| l.id), now);
                return;
            }
        }
    }
}

/// Renders `effect` for `idem`, keeps it in `records` until `now + ttl`,
/// and (`journaled`) queues its row in `out`. O(log r).
fn record(
    records: &mut Records,
    journaled: bool,
    out: &mut Vec<Record>,
    scope: &Scope,
    idem: &Idem,
    effect: Effect,
    now: Timestamp,
) -> Arc<Answer> {
    let answer = records.pending(effect, idem.render);
    let entry = Entry {
        id: records.next_id(),
        digest: idem.digest,
        answer: Arc::clone(&answer),
        expires_at: now.after(idem.ttl),
    };
    if journaled {
        out.push(Record::Idem {
            scope: scope.clone(),
            key: idem.key.clone(),
            entry: entry.clone(),
        });
    }
    let replaced = records.insert(scope.clone(), idem.key.clone(), entry);
    if let (Some(id), true) = (replaced, journaled) {
        out.push(Record::IdemGone { id });
    }
    answer
}

/// A change's answer as it leaves the lock: final, or recorded and still
/// to be rendered (outside the lock, by [`Answered::applied`]).
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per request; boxing would allocate on every lease"
)]
enum Answered {
    Done(Applied),
    Record(Arc<Answer>),
}

impl Answered {
    /// The answer, rendering a recorded one. O(answer).
    fn applied(self) -> Applied {
        match self {
            Self::Done(applied) => applied,
            Self::Record(answer) => Applied::Recorded {
                recorded: answer.get().clone(),
                replayed: false,
            },
        }
    }
}

/// Runs `f` on the existing pool `name` (which applies due expiry first)
/// and queues the rows it changed; `key_not_found` without the pool.
/// O(log n) besides `f`.
fn pool_op<T>(
    engine: &mut Engine,
    name: &Name,
    records: &mut Vec<Record>,
    f: impl FnOnce(&mut Pool, &mut StdRng) -> Result<T, PoolError>,
) -> Result<T, StoreError> {
    let result = engine
        .with_pool(name, |pool, rng| {
            let result = f(pool, rng);
            pool_records(name, pool, false, records);
            result
        })
        .ok_or(PoolError::KeyNotFound)?;
    Ok(result?)
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
        max_activations: ks.max_activations(),
    }
}

fn keyspace_mut<'e>(engine: &'e mut Engine, name: &Name) -> Result<&'e mut Keyspace, StoreError> {
    engine
        .keyspaces
        .get_mut(name)
        .ok_or(StoreError::KeyspaceNotFound)
}

/// Rows after an issue whose first counter is `first`: the counter, and
/// the batch range it extended or opened. O(log b).
fn issue_records(name: &Name, ks: &Keyspace, first: u128, batch: bool, out: &mut Vec<Record>) {
    out.push(Record::Issued {
        name: name.clone(),
        issued: ks.info().issued,
    });
    if let Some(range) = batch.then(|| ks.range_of(first)).flatten() {
        out.push(Record::Batch {
            keyspace: name.clone(),
            range,
        });
    }
}

/// A token's row after a change (its marks as they now stand), and the
/// token as the answer.
fn token_effect(name: Name, status: TokenStatus, out: &mut Vec<Record>) -> Effect {
    out.push(Record::Marks {
        keyspace: name,
        token: status.token.clone(),
        marks: status.marks.clone(),
    });
    Effect::Token(status)
}

/// A queued lease. Dropped before it took its key (timed out, or its
/// client went away and the request future was dropped), it leaves the
/// queue; a key handed to it in that instant goes to the next waiter or
/// back to free, so a waiter that does not answer never holds a key.
struct WaitGuard<'a> {
    store: &'a LocalStore,
    pool: &'a Name,
    scope: &'a Scope,
    /// The waiter's idempotency key: a key given back takes its record
    /// with it, so a retry leases anew.
    idem: Option<&'a Idem>,
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
        if let Some(idem) = self.idem {
            engine.forget(self.scope, idem, &mut records);
        }
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
            engine: Mutex::new(Engine::new(
                pools,
                keyspaces,
                Records::default(),
                None,
                clock.clone(),
            )),
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
        let mut engine = Engine::new(
            loaded.pools,
            loaded.keyspaces,
            loaded.idem,
            Some(journal),
            clock.clone(),
        );
        let mut records: Vec<Record> = (loaded.idem_replaced.into_iter())
            .map(|id| Record::IdemGone { id })
            .collect();

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

    /// Runs one change under the lock: the answer recorded for `idem`, if
    /// any, else `f` and (with `idem`) its answer recorded in the same
    /// lock hold and journal batch; then waits for durability as
    /// [`LocalStore::run`] does.
    async fn change(
        &self,
        scope: &Scope,
        idem: Option<&Idem>,
        f: impl FnOnce(&mut Engine, &mut Vec<Record>, Timestamp) -> Result<Effect, StoreError>,
    ) -> Result<Applied, StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| {
            if let Some(recorded) = engine.recorded(scope, idem, now)? {
                return Ok(recorded);
            }
            let effect = f(engine, records, now)?;
            Ok(engine.answer(scope, idem, effect, now, records))
        })
        .await
        .map(Answered::applied)
    }

    /// The effect of every change but leases and adds, under the lock.
    /// O(log n) for key changes (plus due expiry), O(1) for pool and
    /// keyspace settings and tokens (one keyed permutation), O(log pools)
    /// for deletions.
    fn effect(
        &self,
        engine: &mut Engine,
        records: &mut Vec<Record>,
        change: Change,
        now: Timestamp,
    ) -> Result<Effect, StoreError> {
        let key_change =
            |engine: &mut Engine,
             records: &mut Vec<Record>,
             name: &Name,
             f: &mut dyn FnMut(&mut Pool) -> Result<KeyView, PoolError>| {
                pool_op(engine, name, records, |pool, _| f(pool)).map(Effect::Key)
            };
        match change {
            Change::PutPool { pool: name, patch } => {
                let upsert = engine.ensure_pool(&name, self.pool_defaults, &self.limits)?;
                let info = engine
                    .with_pool(&name, |pool, _| {
                        pool.set_settings(patch.apply(pool.settings()));
                        pool.expire_lazily(now);
                        pool_records(&name, pool, true, records);
                        Self::pool_info(&name, pool)
                    })
                    .expect("the pool was just found or inserted");
                Ok(Effect::Pool(info, upsert))
            }
            Change::Report {
                pool,
                key,
                lease_id,
                outcome,
                reason,
            } => key_change(engine, records, &pool, &mut |p| {
                p.release_with(&key, lease_id, outcome, reason.clone(), now)
            }),
            Change::Disable { pool, key, reason } => key_change(engine, records, &pool, &mut |p| {
                p.disable(&key, reason.clone(), now)
            }),
            Change::Enable { pool, key } => {
                key_change(engine, records, &pool, &mut |p| p.enable(&key, now))
            }
            Change::Keepalive {
                pool,
                key,
                lease_id,
            } => key_change(engine, records, &pool, &mut |p| {
                p.keepalive(&key, lease_id, now)
            }),
            Change::DeleteKey { pool, key } => {
                pool_op(engine, &pool, records, |p, _| p.delete(&key, now))?;
                Ok(Effect::Deleted)
            }
            Change::DeletePool { pool: name } => {
                let pool = engine.remove_pool(&name).ok_or(StoreError::PoolNotFound)?;
                records.push(Record::DropPool { name });
                drop_off_path(pool);
                Ok(Effect::Deleted)
            }
            Change::PutKeyspace {
                keyspace: name,
                spec,
                max_activations,
            } => {
                if let Some(ks) = engine.keyspaces.get_mut(&name) {
                    if *ks.codec().spec() != spec {
                        return Err(StoreError::KeyspaceImmutable);
                    }
                    if let Some(max) = max_activations.filter(|m| *m != ks.max_activations()) {
                        ks.set_max_activations(max);
                        records.push(keyspace_record(&name, ks));
                    }
                    return Ok(Effect::Keyspace(
                        Self::keyspace_view(&name, ks),
                        Upsert::Existed,
                    ));
                }
                if engine.keyspaces.len() as u64 >= self.limits.max_keyspaces {
                    return Err(self.limits.reached(Limit::Keyspaces));
                }
                let mut ks = Keyspace::new(TokenCodec::new(spec, Secret::generate()));
                ks.set_max_activations(max_activations.unwrap_or_default());
                records.push(keyspace_record(&name, &ks));
                let view = Self::keyspace_view(&name, &ks);
                engine.keyspaces.insert(name.clone(), ks);
                engine.keyspace_names.insert(name);
                Ok(Effect::Keyspace(view, Upsert::Created))
            }
            Change::DeleteKeyspace { keyspace: name } => {
                let ks = engine
                    .keyspaces
                    .remove(&name)
                    .ok_or(StoreError::KeyspaceNotFound)?;
                engine.keyspace_names.remove(&name);
                records.push(Record::DropKeyspace { name });
                drop_off_path(ks);
                Ok(Effect::Deleted)
            }
            Change::Issue {
                keyspace: name,
                batch,
            } => {
                let ks = keyspace_mut(engine, &name)?;
                let issued = ks.issue_in(batch.as_ref())?;
                issue_records(&name, ks, issued.index, batch.is_some(), records);
                Ok(Effect::Issued(issued))
            }
            Change::IssueMany {
                keyspace: name,
                count,
                batch,
            } => {
                let ks = keyspace_mut(engine, &name)?;
                let issued = ks.issue_many_in(u128::from(count), batch.as_ref())?;
                issue_records(&name, ks, issued.first, batch.is_some(), records);
                Ok(Effect::IssuedMany(issued))
            }
            Change::Activate {
                keyspace: name,
                token,
                fingerprint,
            } => {
                let ks = keyspace_mut(engine, &name)?;
                let status = ks.activate(&token, fingerprint.as_ref(), now)?;
                Ok(token_effect(name, status, records))
            }
            Change::Deactivate {
                keyspace: name,
                token,
                fingerprint,
            } => {
                let ks = keyspace_mut(engine, &name)?;
                let status = ks.deactivate(&token, &fingerprint)?;
                token_effect(name, status, records);
                Ok(Effect::Deleted)
            }
            Change::Revoke {
                keyspace: name,
                token,
                reason,
            } => {
                let ks = keyspace_mut(engine, &name)?;
                let status = ks.revoke(&token, reason, now)?;
                Ok(token_effect(name, status, records))
            }
            Change::Lease { .. } | Change::AddKeys { .. } => {
                unreachable!("leases and adds have their own path in apply")
            }
        }
    }

    /// Adds keys under the lock. O(keys). Refused whole, creating
    /// nothing, when the pool could come to hold more than
    /// `--max-keys-per-pool` live keys (imported keys count before
    /// duplicates are known; `count` is what a new pool would get) or a
    /// new pool would cross `--max-pools`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one change's parts, taken apart by apply"
    )]
    fn add_keys(
        &self,
        engine: &mut Engine,
        records: &mut Vec<Record>,
        name: &Name,
        keys: NewKeys,
        labels: &Labels,
        count: u64,
        now: Timestamp,
    ) -> Result<Effect, StoreError> {
        let limits = &self.limits;
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
                    NewKeys::Import(keys) => pool.count_new(keys.iter().map(PoolKey::as_str), now),
                };
                let result = if pool.stats().total.saturating_add(count) > limits.max_keys_per_pool
                {
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
                    .map(Effect::Added)
                    .map_err(StoreError::from)
                };
                pool_records(name, pool, true, records);
                result
            })
            .expect("the pool was just found or inserted")
    }

    /// Leases at once if a key is free; else (with a `wait`) queues behind
    /// the pool's other waiters, in the same lock hold so no key freed in
    /// between is missed, and waits to be handed one: the hand-over, under
    /// the lock of the change that freed the key, records the answer for
    /// `idem` too. Besides hand-overs, it wakes only when its wait ends or
    /// when the pool's first lease, cooldown or quarantine is due (to apply
    /// that expiry at once, not at the reaper's next tick): no polling.
    /// O(log n) to lease, O(log w) to queue.
    async fn lease(
        &self,
        name: &Name,
        wait: Duration,
        scope: &Scope,
        idem: Option<&Idem>,
    ) -> Result<Applied, StoreError> {
        let until = Instant::now() + wait.min(MAX_WAIT);
        let now = self.clock.now();
        let first = self
            .run(|engine, records| {
                if let Some(recorded) = engine.recorded(scope, idem, now)? {
                    return Ok(Ok(recorded));
                }
                match lease_now(engine, name, now, records) {
                    Ok(view) => Ok(Ok(engine.answer(
                        scope,
                        idem,
                        Effect::Key(view),
                        now,
                        records,
                    ))),
                    Err(StoreError::NoFreeKey { .. }) if !wait.is_zero() => engine
                        .waiters
                        .push(name, idem.cloned())
                        .map(Err)
                        .ok_or(StoreError::ShuttingDown),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let (ticket, rx) = match first {
            Ok(answered) => return Ok(answered.applied()),
            Err(queued) => queued,
        };
        let mut guard = WaitGuard {
            store: self,
            pool: name,
            scope,
            idem,
            ticket,
            rx,
            handed: None,
        };
        let view = loop {
            let wake = self.next_wake(name, until);
            tokio::select! {
                handed = &mut guard.rx => {
                    match handed {
                        Ok(view) => {
                            // Handed over under the lock; its rows are
                            // queued: answer once they are durable. The
                            // guard keeps the key meanwhile, so a client
                            // gone during the flush does not leave it
                            // leased to nobody.
                            guard.handed = Some(view);
                            self.flush().await?;
                            break guard.handed.take().expect("set just above");
                        }
                        Err(_) if self.lock().waiters.is_closed() => {
                            return Err(StoreError::ShuttingDown)
                        }
                        // The pool was deleted while we waited.
                        Err(_) => return Err(StoreError::NoFreeKey { retry_after: None }),
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= until {
                        break guard.give_up()?;
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
        };
        // The hand-over recorded this very answer.
        let effect = Effect::Key(view);
        Ok(match idem {
            Some(idem) => Applied::Recorded {
                recorded: (idem.render)(&effect),
                replayed: false,
            },
            None => Applied::Done(effect),
        })
    }
}

#[async_trait]
impl Store for LocalStore {
    /// One lock hold: the record's lookup (O(log r)), the change, and the
    /// record with it (O(log r)); see each change's cost in
    /// [`LocalStore::effect`].
    async fn apply(&self, change: Change, idem: Option<&Idem>) -> Result<Applied, StoreError> {
        let scope = change.scope();
        match change {
            Change::Lease { pool, wait } => self.lease(&pool, wait, &scope, idem).await,
            Change::AddKeys { pool, keys, labels } => {
                // For a pool that does not exist yet: the keys it would
                // get, counted off the lock.
                let count = match &keys {
                    NewKeys::Generate(n) => u64::try_from(*n).unwrap_or(u64::MAX),
                    NewKeys::Import(keys) => {
                        let distinct: std::collections::HashSet<&str> =
                            keys.iter().map(PoolKey::as_str).collect();
                        distinct.len() as u64
                    }
                };
                self.change(&scope, idem, |engine, records, now| {
                    self.add_keys(engine, records, &pool, keys, &labels, count, now)
                })
                .await
            }
            Change::DeletePool { pool } | Change::DeleteKeyspace { keyspace: pool }
                if pool == Name::default_name() =>
            {
                Err(StoreError::CannotDeleteDefault)
            }
            change => {
                self.change(&scope, idem, |engine, records, now| {
                    self.effect(engine, records, change, now)
                })
                .await
            }
        }
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

    fn stop_waiting(&self) {
        self.lock().waiters.close();
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

    /// O(1) (plus due expiry).
    async fn get_key(&self, name: &Name, key: &str) -> Result<KeyView, StoreError> {
        let now = self.clock.now();
        self.run(|engine, records| pool_op(engine, name, records, |pool, _| pool.get(key, now)))
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

    /// O(log b + m) under the lock (see [`Keyspace::status`]).
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

    /// O(1) under the lock.
    async fn batch_info(&self, name: &Name, batch: &Name) -> Result<BatchInfo, StoreError> {
        self.run(|engine, _| {
            let ks = engine
                .keyspaces
                .get(name)
                .ok_or(StoreError::KeyspaceNotFound)?;
            Ok(ks.batch(batch)?)
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
        // Idempotency records, `REAP_STEP` at a time.
        loop {
            let mut engine = self.lock();
            let gone = engine.idem.pop_expired(now, REAP_STEP);
            let done = gone.len() < REAP_STEP;
            if engine.journal.is_some() {
                let records = gone.into_iter().map(|id| Record::IdemGone { id }).collect();
                engine.commit(records);
            }
            if done {
                break;
            }
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
            idempotency_records: engine.idem.len(),
            idempotency_bytes: Some(engine.idem.bytes()),
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
