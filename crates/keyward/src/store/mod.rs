//! The storage boundary: one async [`Store`] trait in domain types, and the
//! backends that implement it.
//!
//! - [`local::LocalStore`]: the core state machines in RAM, with no
//!   journal (`memory:`) or an SQLite journal with group commit
//!   ([`sqlite`], `sqlite:PATH`).
//! - [`redis::RedisStore`]: all state in Redis or Redis Cluster, one Lua
//!   script per operation, shared by any number of processes.
//!
//! Every backend passes the same conformance suite (`tests/conformance`).
//! Backend errors stay in here: callers see only [`StoreError`].
//!
//! What the backends share is defined here once: the reaper's step
//! (`REAP_STEP`), the retry schedule (`backoff`), the start-up refusal
//! [`DefaultKeyspaceChanged`], and [`ErrorChain`], the one way an error and
//! its causes are written to a log line.

pub(crate) mod backoff;
pub mod idempotency;
pub mod local;
pub mod redis;
pub mod sqlite;
pub(crate) mod waiters;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use self::idempotency::{Digest, Idem, IdemKey, Recorded, Render, Scope};
use crate::core::{
    BatchInfo, Expired, Fingerprint, Imported, Issued, IssuedMany, KeyLength, KeyState, KeyView,
    KeyspaceError, KeyspaceInfo, KeyspaceSpec, Labels, MaxActivations, MaxFailures, Name, Outcome,
    PoolError, PoolKey, PoolSettings, PoolStats, Reason, Recovery, TokenStatus, Ttl,
};

/// A change a client asks for: one for each `POST`, `PUT` and `DELETE`
/// under `/v1`. [`Store::apply`] runs it, at most once per idempotency key.
#[derive(Clone, Debug)]
pub enum Change {
    /// [`Store::put_pool`].
    PutPool { pool: Name, patch: PoolPatch },
    /// [`Store::delete_pool`].
    DeletePool { pool: Name },
    /// [`Store::add_keys`].
    AddKeys {
        pool: Name,
        keys: NewKeys,
        labels: Labels,
    },
    /// [`Store::lease_key_waiting`] (zero `wait`: [`Store::lease_key`]).
    Lease { pool: Name, wait: Duration },
    /// [`Store::report_key`].
    Report {
        pool: Name,
        key: String,
        lease_id: Option<u64>,
        outcome: Outcome,
        reason: Option<Reason>,
    },
    /// [`Store::disable_key`].
    Disable {
        pool: Name,
        key: String,
        reason: Option<Reason>,
    },
    /// [`Store::enable_key`].
    Enable { pool: Name, key: String },
    /// [`Store::keepalive_key`].
    Keepalive {
        pool: Name,
        key: String,
        lease_id: Option<u64>,
    },
    /// [`Store::delete_key`].
    DeleteKey { pool: Name, key: String },
    /// [`Store::put_keyspace`]; `max_activations` `None` keeps an
    /// existing keyspace's (a new one gets 1).
    PutKeyspace {
        keyspace: Name,
        spec: KeyspaceSpec,
        max_activations: Option<MaxActivations>,
    },
    /// [`Store::delete_keyspace`].
    DeleteKeyspace { keyspace: Name },
    /// [`Store::issue_token`].
    Issue { keyspace: Name, batch: Option<Name> },
    /// [`Store::issue_tokens`].
    IssueMany {
        keyspace: Name,
        count: u32,
        batch: Option<Name>,
    },
    /// [`Store::activate_token`].
    Activate {
        keyspace: Name,
        token: String,
        fingerprint: Option<Fingerprint>,
    },
    /// [`Store::deactivate_token`].
    Deactivate {
        keyspace: Name,
        token: String,
        fingerprint: Fingerprint,
    },
    /// [`Store::revoke_token`].
    Revoke {
        keyspace: Name,
        token: String,
        reason: Option<Reason>,
    },
}

impl Change {
    /// The pool or keyspace the change names: where its idempotency
    /// record lives. O(1).
    pub fn scope(&self) -> Scope {
        match self {
            Self::PutPool { pool, .. }
            | Self::DeletePool { pool }
            | Self::AddKeys { pool, .. }
            | Self::Lease { pool, .. }
            | Self::Report { pool, .. }
            | Self::Disable { pool, .. }
            | Self::Enable { pool, .. }
            | Self::Keepalive { pool, .. }
            | Self::DeleteKey { pool, .. } => Scope::Pool(pool.clone()),
            Self::PutKeyspace { keyspace, .. }
            | Self::DeleteKeyspace { keyspace }
            | Self::Issue { keyspace, .. }
            | Self::IssueMany { keyspace, .. }
            | Self::Activate { keyspace, .. }
            | Self::Deactivate { keyspace, .. }
            | Self::Revoke { keyspace, .. } => Scope::Keyspace(keyspace.clone()),
        }
    }
}

/// What a [`Change`] did: all an answer is rendered from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A pool was created or changed.
    Pool(PoolInfo, Upsert),
    /// Keys were added (and some found existing).
    Added(Imported),
    /// A key after the change.
    Key(KeyView),
    /// A pool, keyspace or key was deleted.
    Deleted,
    /// A keyspace was created or found.
    Keyspace(KeyspaceView, Upsert),
    /// A token was issued.
    Issued(Issued),
    /// Tokens were issued together.
    IssuedMany(IssuedMany),
    /// A token after activation or revocation.
    Token(TokenStatus),
}

/// How [`Store::apply`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The change ran; nothing was recorded (no idempotency key, or a
    /// backend that records the effect and lets the caller render it).
    Done(Effect),
    /// The answer kept for the idempotency key: just recorded with the
    /// change, or (`replayed`) recorded by an earlier request, in which
    /// case nothing changed now.
    Recorded {
        /// The answer.
        recorded: Recorded,
        /// Whether an earlier request recorded it.
        replayed: bool,
    },
}

impl Applied {
    /// The effect of a change run without an idempotency key.
    fn effect(self) -> Result<Effect, StoreError> {
        match self {
            Self::Done(effect) => Ok(effect),
            Self::Recorded { .. } => Err(unexpected()),
        }
    }
}

/// A backend answered a change with an effect of another kind: a bug,
/// reported as an unavailable store rather than a panic.
fn unexpected() -> StoreError {
    StoreError::Unavailable("the store answered a change with an effect of another kind".into())
}

/// Settings given to `PUT /v1/pools/{pool}`; absent fields keep their value
/// (or the server default for a new pool).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolPatch {
    /// New lease TTL.
    pub lease_ttl: Option<Ttl>,
    /// New keep-alive TTL: `Some(None)` is the API's `keepalive_ttl_ms:
    /// 0`, keys that never need a keep-alive.
    pub keepalive_ttl: Option<Option<Ttl>>,
    /// New length for keys generated from now on.
    pub key_length: Option<KeyLength>,
    /// New cooldown after `rate_limited` with no `retry_after`.
    pub cooldown: Option<Ttl>,
    /// New count of consecutive failures that quarantines a key.
    pub max_failures: Option<MaxFailures>,
    /// New length of a first quarantine.
    pub quarantine: Option<Ttl>,
}

impl PoolPatch {
    /// A patch that sets every field to its value in `settings`. O(1).
    pub fn all(settings: PoolSettings) -> Self {
        Self {
            lease_ttl: Some(settings.lease_ttl),
            keepalive_ttl: Some((!settings.no_keepalive).then_some(settings.keepalive_ttl)),
            key_length: Some(settings.key_length),
            cooldown: Some(settings.recovery.cooldown),
            max_failures: Some(settings.recovery.max_failures),
            quarantine: Some(settings.recovery.quarantine),
        }
    }

    /// `base` with the given fields replaced.
    pub fn apply(&self, base: PoolSettings) -> PoolSettings {
        let (keepalive_ttl, no_keepalive) = match self.keepalive_ttl {
            None => (base.keepalive_ttl, base.no_keepalive),
            Some(Some(ttl)) => (ttl, false),
            Some(None) => (base.keepalive_ttl, true),
        };
        let r = base.recovery;
        PoolSettings {
            lease_ttl: self.lease_ttl.unwrap_or(base.lease_ttl),
            keepalive_ttl,
            no_keepalive,
            key_length: self.key_length.unwrap_or(base.key_length),
            recovery: Recovery {
                cooldown: self.cooldown.unwrap_or(r.cooldown),
                max_failures: self.max_failures.unwrap_or(r.max_failures),
                quarantine: self.quarantine.unwrap_or(r.quarantine),
            },
        }
    }
}

/// A pool's settings and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: Name,
    /// Its settings.
    pub settings: PoolSettings,
    /// Its key counts.
    pub stats: PoolStats,
    /// Leases ended and keys purged by expiry so far (since this process
    /// started for the local store; since the pool was created on Redis).
    pub expired: Expired,
    /// Quarantines begun so far, counted as `expired` is.
    pub quarantines: u64,
}

/// The keys of an add: generated, or the caller's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewKeys {
    /// This many keys from the OS CSPRNG, of the pool's key length.
    Generate(usize),
    /// These keys, as given; those already in the pool are left as they
    /// are and reported in [`Imported::existing`].
    Import(Vec<PoolKey>),
}

impl NewKeys {
    /// How many keys at most the add creates. O(1).
    pub fn len(&self) -> usize {
        match self {
            Self::Generate(n) => *n,
            Self::Import(keys) => keys.len(),
        }
    }

    /// Whether the add creates nothing. O(1).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most due entries the reaper expires in one step (one lock hold on the
/// local stores, one script call on Redis), so a burst of deadlines cannot
/// stall requests for long.
pub(crate) const REAP_STEP: usize = 4096;

/// Longest a lease may wait for a key (`wait_ms` up to 30,000).
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How many pools and keyspaces a [`Snapshot`] names one by one: enough to
/// watch the pools that matter, few enough that a scrape stays a few KiB
/// whatever the number of pools.
pub const SNAPSHOT_NAMED: usize = 100;

/// Counts for `/metrics`, bounded in size whatever the number of pools.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// At most [`SNAPSHOT_NAMED`] pools: the first by name on the local
    /// stores, the first page of the registry's scan on Redis.
    pub pools: Vec<PoolInfo>,
    /// At most [`SNAPSHOT_NAMED`] keyspaces, chosen as the pools are.
    pub keyspaces: Vec<KeyspaceView>,
    /// Number of pools.
    pub pool_count: u64,
    /// Number of keyspaces.
    pub keyspace_count: u64,
    /// Key counts and expiry counters summed over every pool, where the
    /// backend keeps the sums (the local stores); `None` on Redis, where
    /// summing would cost one call per pool.
    pub totals: Option<PoolTotals>,
    /// Live idempotency records: all of them on the local stores; on
    /// Redis, those of the pools and keyspaces named above.
    pub idempotency_records: u64,
    /// Bytes of the answers those records keep, where the backend keeps
    /// the sum (the local stores).
    pub idempotency_bytes: Option<u64>,
}

/// Key counts and expiry counters summed over every pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolTotals {
    /// Keys by state, summed.
    pub stats: PoolStats,
    /// Leases ended and keys purged by expiry, summed (since start).
    pub expired: Expired,
}

/// Upper bounds on what clients can make, so memory stays bounded. Each is
/// checked before anything changes: an operation that would cross one is
/// refused whole with [`StoreError::LimitReached`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most pools, the `default` pool included.
    pub max_pools: u64,
    /// Most keyspaces, the `default` keyspace included.
    pub max_keyspaces: u64,
    /// Most live keys in one pool.
    pub max_keys_per_pool: u64,
}

impl Limits {
    /// The server's defaults (`--max-pools`, `--max-keyspaces`,
    /// `--max-keys-per-pool`): 10,000 pools, 1,000 keyspaces and 10^7 keys
    /// per pool, far above what one deployment needs, so a client with the
    /// token cannot make the server grow without end. Keyspaces get fewer:
    /// one with the largest alphabet holds ~0.6 MB.
    pub const DEFAULT: Self = Self {
        max_pools: 10_000,
        max_keyspaces: 1_000,
        max_keys_per_pool: 10_000_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which of the [`Limits`] an operation would cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_pools`].
    Pools,
    /// [`Limits::max_keyspaces`].
    Keyspaces,
    /// [`Limits::max_keys_per_pool`].
    KeysPerPool,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pools => "pools (--max-pools)",
            Self::Keyspaces => "keyspaces (--max-keyspaces)",
            Self::KeysPerPool => "keys per pool (--max-keys-per-pool)",
        })
    }
}

impl Limits {
    /// The error for crossing `limit`.
    pub fn reached(&self, limit: Limit) -> StoreError {
        let max = match limit {
            Limit::Pools => self.max_pools,
            Limit::Keyspaces => self.max_keyspaces,
            Limit::KeysPerPool => self.max_keys_per_pool,
        };
        StoreError::LimitReached { limit, max }
    }
}

/// A keyspace's definition and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceView {
    /// The keyspace's name.
    pub name: Name,
    /// Alphabet and length.
    pub spec: KeyspaceSpec,
    /// Capacity, issued, activated, remaining.
    pub info: KeyspaceInfo,
}

/// How many items one page may hold: 1 to [`PageLimit::MAX`], by default
/// [`PageLimit::DEFAULT`]. Parsed at the edge; cannot hold another value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// Most items per page.
    pub const MAX: usize = 1000;
    /// Items per page when the caller names no limit.
    pub const DEFAULT: Self = Self(100);

    /// `Some` for 1 to [`PageLimit::MAX`]. O(1).
    pub fn new(n: usize) -> Option<Self> {
        (1..=Self::MAX).contains(&n).then_some(Self(n))
    }

    /// The number. O(1).
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which page of a listing (pools and keyspaces by name, a pool's keys in
/// the store's own stable order): the items strictly after `after`, at
/// most `limit`. Paging by a position, not by an offset, is what keeps an
/// item that exists throughout from being skipped or repeated when others
/// are created or deleted between pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Where the previous page ended (its [`Page::next`]); `None` for the
    /// first page. For pools and keyspaces it is the last name listed;
    /// for keys the store defines it, and refuses one it did not give out
    /// with [`StoreError::InvalidCursor`].
    pub after: Option<String>,
    /// Most items.
    pub limit: PageLimit,
}

/// One page of a listing: the items in order, and where the next page
/// starts (`None` when this one reached the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts (for names, the last name of this page)
    /// when more may follow.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` read with `limit + 1` asked for: the extra one
    /// only says whether more follow and is dropped. O(1).
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: PageLimit,
        name: impl Fn(&T) -> String,
    ) -> Self {
        let more = items.len() > limit.get();
        items.truncate(limit.get());
        let next = if more { items.last().map(name) } else { None };
        Self { items, next }
    }
}

/// Whether a `PUT` made something new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// It did not exist before.
    Created,
    /// It existed (and may have changed).
    Existed,
}

/// Why a store operation did nothing. Domain variants are the caller's
/// mistake or the state of the data; `Unavailable` and `Internal` are ours.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A pool operation was refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A keyspace operation was refused.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// No key of the pool is free (or there is no such pool). When some
    /// key will become free by itself (a lease, cooldown or quarantine
    /// ends), `retry_after` says how soon.
    #[error("no free key in this pool")]
    NoFreeKey {
        /// Time until the earliest such end; `None` when none will come.
        retry_after: Option<Ttl>,
    },
    /// The server is shutting down: a waiting lease gave up.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The listing cursor is not one this listing gave out.
    #[error("the cursor is not one this listing gave out")]
    InvalidCursor,
    /// No pool has that name.
    #[error("no such pool")]
    PoolNotFound,
    /// No keyspace has that name.
    #[error("no such keyspace")]
    KeyspaceNotFound,
    /// The `default` pool or keyspace cannot be deleted.
    #[error("the default pool and keyspace cannot be deleted")]
    CannotDeleteDefault,
    /// A keyspace exists with another alphabet, length or format.
    #[error("the keyspace exists with another alphabet, length or format")]
    KeyspaceImmutable,
    /// The operation would cross one of the [`Limits`]; nothing changed.
    #[error("the limit of {max} {limit} is reached")]
    LimitReached {
        /// Which limit.
        limit: Limit,
        /// Its value.
        max: u64,
    },
    /// The idempotency key was used before for another request (another
    /// method, path or body) in this pool or keyspace.
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// The backend cannot answer now (I/O error, connection lost); the
    /// operation did not happen or its outcome is not acknowledged.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The operations every backend provides. Each states its complexity in
/// the backend's terms; all are O(1) or O(log n) in the pool or keyspace
/// size (generation is O(count)).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Runs `change`. With `idem`, at most once: the answer is recorded in
    /// the same atomic step as the change (same lock hold and journal
    /// batch, same Redis script), and a later request with the same key in
    /// the same pool or keyspace gets it back (`replayed`) if its digest
    /// matches, [`StoreError::IdempotencyKeyReused`] if not, changing
    /// nothing either way. Records live `idem.ttl`; failures are never
    /// recorded. Costs what the change costs, plus O(log r) for a record
    /// among r.
    async fn apply(&self, change: Change, idem: Option<&Idem>) -> Result<Applied, StoreError>;
    /// Creates a pool, or changes the given settings of an existing one;
    /// `LimitReached` if a new pool would cross `max_pools`.
    async fn put_pool(
        &self,
        pool: &Name,
        patch: PoolPatch,
    ) -> Result<(PoolInfo, Upsert), StoreError> {
        let change = Change::PutPool {
            pool: pool.clone(),
            patch,
        };
        match self.apply(change, None).await?.effect()? {
            Effect::Pool(info, upsert) => Ok((info, upsert)),
            _ => Err(unexpected()),
        }
    }
    /// A pool's settings and counts.
    async fn pool_info(&self, pool: &Name) -> Result<PoolInfo, StoreError>;
    /// Adds generated or imported keys, free and carrying `labels`,
    /// creating the pool with defaults if absent; imported keys already in
    /// the pool are left unchanged and reported as existing.
    /// `LimitReached`, with nothing created, if the pool could come to hold
    /// more than `max_keys_per_pool` live keys or a new pool would cross
    /// `max_pools`. O(keys).
    async fn add_keys(
        &self,
        pool: &Name,
        keys: NewKeys,
        labels: &Labels,
    ) -> Result<Imported, StoreError> {
        let change = Change::AddKeys {
            pool: pool.clone(),
            keys,
            labels: labels.clone(),
        };
        match self.apply(change, None).await?.effect()? {
            Effect::Added(added) => Ok(added),
            _ => Err(unexpected()),
        }
    }
    /// Generates `count` keys with no labels ([`Store::add_keys`]).
    async fn generate_keys(&self, pool: &Name, count: usize) -> Result<Vec<KeyView>, StoreError> {
        let added = self
            .add_keys(pool, NewKeys::Generate(count), &Labels::default())
            .await?;
        Ok(added.added)
    }
    /// Leases a uniformly random free key; [`StoreError::NoFreeKey`] when
    /// none is free.
    async fn lease_key(&self, pool: &Name) -> Result<KeyView, StoreError> {
        self.lease_key_waiting(pool, Duration::ZERO).await
    }
    /// Leases a free key, waiting up to `wait` (at most [`MAX_WAIT`]) for
    /// one when none is free: waiters of a pool are served first come,
    /// first served within a process, each handed the key by whatever
    /// freed it (release, cooldown or quarantine end, enable, new keys, an
    /// expired lease). A waiter dropped before it answers (its client went
    /// away) holds no key: one handed to it at that moment goes to the next
    /// waiter or back to free. After `wait`, [`StoreError::NoFreeKey`] as
    /// [`Store::lease_key`] answers it; during shutdown
    /// [`StoreError::ShuttingDown`]. O(log n + log w) per hand-over.
    async fn lease_key_waiting(&self, pool: &Name, wait: Duration) -> Result<KeyView, StoreError> {
        let change = Change::Lease {
            pool: pool.clone(),
            wait,
        };
        key_of(self.apply(change, None).await?)
    }
    /// Answers every waiting lease [`StoreError::ShuttingDown`] now and
    /// refuses new waits, so a shutdown does not sit out its grace period.
    fn stop_waiting(&self);
    /// Ends a key's lease now as an `ok` outcome (only the given lease, if
    /// `lease_id`).
    async fn release_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        self.report_key(pool, key, lease_id, Outcome::Ok, None)
            .await
    }
    /// Ends a key's lease now with its holder's `outcome`: free, cooling
    /// or quarantined, as [`crate::core::Pool::release_with`] says. O(log n).
    async fn report_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
        outcome: Outcome,
        reason: Option<Reason>,
    ) -> Result<KeyView, StoreError> {
        let change = Change::Report {
            pool: pool.clone(),
            key: key.to_owned(),
            lease_id,
            outcome,
            reason,
        };
        key_of(self.apply(change, None).await?)
    }
    /// Takes a key out of use until enabled; a lease on it ends. O(log n).
    async fn disable_key(
        &self,
        pool: &Name,
        key: &str,
        reason: Option<Reason>,
    ) -> Result<KeyView, StoreError> {
        let change = Change::Disable {
            pool: pool.clone(),
            key: key.to_owned(),
            reason,
        };
        key_of(self.apply(change, None).await?)
    }
    /// Frees a cooling, quarantined or disabled key now, failures reset; a
    /// free or leased key is returned unchanged. O(log n).
    async fn enable_key(&self, pool: &Name, key: &str) -> Result<KeyView, StoreError> {
        let change = Change::Enable {
            pool: pool.clone(),
            key: key.to_owned(),
        };
        key_of(self.apply(change, None).await?)
    }
    /// A page of a pool's keys (only those in `state`, if given), in an
    /// order that is stable between pages: a key that lives, and stays in
    /// `state`, through the whole listing is listed exactly once.
    /// `PoolNotFound`, `InvalidCursor`. O(limit · log n).
    async fn list_keys(
        &self,
        pool: &Name,
        state: Option<KeyState>,
        page: &PageRequest,
    ) -> Result<Page<KeyView>, StoreError>;
    /// Keeps a key alive; with its current `lease_id`, extends the lease.
    async fn keepalive_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        let change = Change::Keepalive {
            pool: pool.clone(),
            key: key.to_owned(),
            lease_id,
        };
        key_of(self.apply(change, None).await?)
    }
    /// A key's current state.
    async fn get_key(&self, pool: &Name, key: &str) -> Result<KeyView, StoreError>;
    /// Purges a key.
    async fn delete_key(&self, pool: &Name, key: &str) -> Result<(), StoreError> {
        let change = Change::DeleteKey {
            pool: pool.clone(),
            key: key.to_owned(),
        };
        deleted(self.apply(change, None).await?)
    }
    /// Creates a keyspace; `Existed` if an identical one exists,
    /// `KeyspaceImmutable` if it differs, `LimitReached` if a new one would
    /// cross `max_keyspaces`.
    async fn put_keyspace(
        &self,
        keyspace: &Name,
        spec: KeyspaceSpec,
    ) -> Result<(KeyspaceView, Upsert), StoreError> {
        let change = Change::PutKeyspace {
            keyspace: keyspace.clone(),
            spec,
            max_activations: None,
        };
        match self.apply(change, None).await?.effect()? {
            Effect::Keyspace(view, upsert) => Ok((view, upsert)),
            _ => Err(unexpected()),
        }
    }
    /// A keyspace's definition and counts.
    async fn keyspace_info(&self, keyspace: &Name) -> Result<KeyspaceView, StoreError>;
    /// Issues the next token.
    async fn issue_token(&self, keyspace: &Name) -> Result<Issued, StoreError> {
        let change = Change::Issue {
            keyspace: keyspace.clone(),
            batch: None,
        };
        match self.apply(change, None).await?.effect()? {
            Effect::Issued(issued) => Ok(issued),
            _ => Err(unexpected()),
        }
    }
    /// Issues the next `count` tokens (contiguous counters), all or
    /// nothing: `Exhausted` with nothing issued when fewer are left.
    /// O(count).
    async fn issue_tokens(&self, keyspace: &Name, count: u32) -> Result<IssuedMany, StoreError> {
        let change = Change::IssueMany {
            keyspace: keyspace.clone(),
            count,
            batch: None,
        };
        match self.apply(change, None).await?.effect()? {
            Effect::IssuedMany(issued) => Ok(issued),
            _ => Err(unexpected()),
        }
    }
    /// Whether a token was issued, its activations, revocation and batch.
    /// O(log b + m) besides the lookup, for b batch ranges and the
    /// token's m ≤ 1000 activations.
    async fn token_status(&self, keyspace: &Name, token: &str) -> Result<TokenStatus, StoreError>;
    /// Takes an activation slot of an issued token (no fingerprint: a slot
    /// of its own).
    async fn activate_token(
        &self,
        keyspace: &Name,
        token: &str,
    ) -> Result<TokenStatus, StoreError> {
        let change = Change::Activate {
            keyspace: keyspace.clone(),
            token: token.to_owned(),
            fingerprint: None,
        };
        token_of(self.apply(change, None).await?)
    }
    /// Revokes an issued token for good (again: no change).
    async fn revoke_token(
        &self,
        keyspace: &Name,
        token: &str,
        reason: Option<Reason>,
    ) -> Result<TokenStatus, StoreError> {
        let change = Change::Revoke {
            keyspace: keyspace.clone(),
            token: token.to_owned(),
            reason,
        };
        token_of(self.apply(change, None).await?)
    }
    /// A batch's counts: `BatchNotFound` when no token was issued under
    /// it. O(1) (a hash lookup).
    async fn batch_info(&self, keyspace: &Name, batch: &Name) -> Result<BatchInfo, StoreError>;
    /// A page of pools ordered by name, each as [`Store::pool_info`] gives
    /// it. O(limit · log n) (on Redis: one call per pool of the page).
    async fn list_pools(&self, page: &PageRequest) -> Result<Page<PoolInfo>, StoreError>;
    /// A page of keyspaces ordered by name, each as
    /// [`Store::keyspace_info`] gives it. O(limit · log n).
    async fn list_keyspaces(&self, page: &PageRequest) -> Result<Page<KeyspaceView>, StoreError>;
    /// Deletes a pool and its keys: from the answer on, every operation
    /// finds no such pool and a new one of that name starts empty. Its
    /// place under `max_pools` is free at once; its storage is reclaimed
    /// in bounded steps in the background. `CannotDeleteDefault` for the
    /// `default` pool. O(log n) on the request path.
    async fn delete_pool(&self, pool: &Name) -> Result<(), StoreError> {
        let change = Change::DeletePool { pool: pool.clone() };
        deleted(self.apply(change, None).await?)
    }
    /// Deletes a keyspace and its activations, as [`Store::delete_pool`]
    /// does a pool. O(log n) on the request path.
    async fn delete_keyspace(&self, keyspace: &Name) -> Result<(), StoreError> {
        let change = Change::DeleteKeyspace {
            keyspace: keyspace.clone(),
        };
        deleted(self.apply(change, None).await?)
    }
    /// Applies due expiry in every pool, in bounded steps. Called by the
    /// background reaper.
    async fn expire_due(&self) -> Result<Expired, StoreError>;
    /// Succeeds while the store can answer; drives `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Waits until every change made so far is durable (at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
    /// Counts for `/metrics`: at most [`SNAPSHOT_NAMED`] pools and
    /// keyspaces by name, plus totals. Each backend states its cost; none
    /// is O(keys) and the reply's size does not grow with the pools.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Adds the backend's own metrics (e.g. commit latency) to `registry`.
    /// Backends without any keep this default.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}

/// The key of a change answered with one. O(1).
fn key_of(applied: Applied) -> Result<KeyView, StoreError> {
    match applied.effect()? {
        Effect::Key(view) => Ok(view),
        _ => Err(unexpected()),
    }
}

fn token_of(applied: Applied) -> Result<TokenStatus, StoreError> {
    match applied.effect()? {
        Effect::Token(status) => Ok(status),
        _ => Err(unexpected()),
    }
}

/// `Ok` for a change answered with a deletion. O(1).
fn deleted(applied: Applied) -> Result<(), StoreError> {
    match applied.effect()? {
        Effect::Deleted => Ok(()),
        _ => Err(unexpected()),
    }
}

/// The `default` keyspace already issued tokens with another alphabet or
/// length than the settings ask for: start-up refuses, since its tokens
/// would change meaning. The message names only the values that differ and
/// the flags that reproduce the stored ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultKeyspaceChanged {
    /// Where the keyspace is kept, e.g. the database file or `Redis`.
    pub place: String,
    /// Tokens issued so far.
    pub issued: u128,
    /// The stored definition.
    pub have: KeyspaceSpec,
    /// The definition the settings ask for.
    pub want: KeyspaceSpec,
    /// The other way out, after "Start with the flags, or", e.g. `use
    /// another Redis database`.
    pub instead: &'static str,
}

impl fmt::Display for DefaultKeyspaceChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (have, want) = (&self.have, &self.want);
        let (mut had, mut wanted, mut flags) = (Vec::new(), Vec::new(), Vec::new());
        if have.alphabet() != want.alphabet() {
            had.push(format!("alphabet {:?}", have.alphabet().as_str()));
            wanted.push(format!("alphabet {:?}", want.alphabet().as_str()));
            flags.push(format!("--token-alphabet {:?}", have.alphabet().as_str()));
        }
        if have.length() != want.length() {
            had.push(format!("length {}", have.length()));
            wanted.push(format!("length {}", want.length()));
            flags.push(format!("--token-length {}", have.length()));
        }
        write!(
            f,
            "keyspace \"default\" in {} already issued {} tokens with {}, but the settings ask \
             for {}; its alphabet and length cannot change once a token is issued. Start with {}, \
             or {}",
            self.place,
            self.issued,
            had.join(" and "),
            wanted.join(" and "),
            flags.join(" "),
            self.instead,
        )
    }
}

impl std::error::Error for DefaultKeyspaceChanged {}

/// An error and its sources on one line, `: `-separated, for logs. A source
/// whose text the line already holds (an error that prints its source) is
/// said once. `format!("{}", ErrorChain(&e))`: O(length of the chain).
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let e = Outer(Middle(std::io::Error::other("disk full")));
        assert_eq!(ErrorChain(&e).to_string(), "outer: middle: disk full");
    }

    #[test]
    fn a_changed_default_keyspace_names_only_what_differs() {
        let e = DefaultKeyspaceChanged {
            place: "Redis".into(),
            issued: 3,
            have: KeyspaceSpec::new("abc", 4).expect("a valid spec"),
            want: KeyspaceSpec::new("abc", 5).expect("a valid spec"),
            instead: "use another Redis database",
        };
        assert_eq!(
            e.to_string(),
            "keyspace \"default\" in Redis already issued 3 tokens with length 4, but the \
             settings ask for length 5; its alphabet and length cannot change once a token is \
             issued. Start with --token-length 4, or use another Redis database"
        );
    }
}
