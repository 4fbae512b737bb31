//! The Redis backend (`redis://HOST:PORT/DB`, `redis+cluster://…`): all
//! state in Redis, one Lua script per operation, so any number of keyward
//! processes can serve the same pools and keyspaces.
//!
//! Each operation is one `EVALSHA` of a script in `lua/` (`redis::Script`
//! reloads it after `NOSCRIPT`, e.g. when Redis restarted). A script runs
//! atomically, so no key is leased twice and no token issued twice
//! whichever process serves the request.
//!
//! - this file: the [`Store`] impl, and `Inner::call`, the one path of
//!   every pool and keyspace operation (ensure ready, build the prefix,
//!   run the script on the slot, read the reply code);
//! - `scripts`: the script table, the reply codes and the typed arguments,
//!   and the constants handed to Lua;
//! - `reply`: reading replies into domain types;
//! - `connection`: the connection, start-up and the retry while Redis is
//!   down;
//! - `registry`: the name sets and the limits they count;
//! - `reaper`: the due index and the reaper's pass;
//! - `waiting`: waiting leases, woken through Redis pub/sub.
//!
//! # Key layout
//!
//! Every key of a pool carries the hash tag `{kw:p:NAME}`, every key of a
//! keyspace `{kw:ks:NAME}`, so each script touches one cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{kw:p:N}:meta` | hash | `lease_ttl_ms`, `keepalive_ttl_ms`, `key_length`, `cooldown_ms`, `max_failures`, `quarantine_ms`, `no_keepalive` (`1`: keys get no keep-alive deadline), `purged_keys`, `expired_leases`, `recovered`, `quarantines` (begun), `due_at`, `layout` |
//! | `{kw:p:N}:leases` | zset | leased keys by lease end, cooling and quarantined keys by the end of it (ms): every end that frees a key by itself |
//! | `{kw:p:N}:alive` | zset | every key with a keep-alive deadline, by it (ms) |
//! | `{kw:p:N}:keys` | zset | every live key by its listing number: the unfiltered listing, the total (`ZCARD`) |
//! | `{kw:p:N}:in:STATE` | zset | the keys in STATE (`free`, `leased`, `cooling`, `quarantined`, `disabled`) by listing number: the filtered listing, the counts; `ZRANDMEMBER` of `in:free` is the uniform lease pick (the set `{kw:p:N}:free` of older keywards is dropped on adoption) |
//! | `{kw:p:N}:kseq` | string | last listing number (`INCR`) |
//! | `{kw:p:N}:k:KEY` | hash | `created_at`, `alive_until` (0 = no keep-alive), `lease_id` (0 = not leased), `leased_until`, `n` (listing number); only when set: `state` (`cooling`, `quarantined`, `disabled`; absent = free or leased by `lease_id`), `available_at`, `reason`, `failures`, `quarantines` (in a row), `labels` (JSON) |
//! | `{kw:p:N}:seq` | string | last lease id (`INCR`): the fencing counter |
//! | `{kw:p:N}:gen` | string | times a pool of this name was deleted; key hashes of generation G > 0 are `{kw:p:N}:gG:k:KEY` |
//! | `{kw:p:N}:gone:G` | zset | keys of deleted generation G whose hashes are still to be deleted |
//! | `{kw:p:N}:gones` | set | the generations with a `gone` zset |
//! | `{kw:p:N}:waiting` | string | set (`PX` 15 s, renewed every 5 s) while some process has waiting leases for the pool: the scripts that free a key `PUBLISH` to the channel `{kw:p:N}:wake` only while it exists (see `waiting.rs`) |
//! | `kw:pool-names` | zset | names of all pools, score 0: `--max-pools` counts them (`ZCARD`), listings page them (`ZRANGEBYLEX`) |
//! | `kw:graves` | set | deleted pools with keys still to reclaim, for the reaper |
//! | `kw:due` | zset | pools by earliest deadline (ms), for the reaper (its own slot) |
//! | `kw:keyspace-names` | zset | names of all keyspaces, as `kw:pool-names` |
//! | `kw:layout` | string | `2` once start-up brought every pool to the current key layout |
//! | `{kw:ks:N}:def` | hash | `alphabet`, `length`, `secret` (hex) |
//! | `{kw:ks:N}:issued` | string | tokens issued (`INCR`) |
//! | `{kw:ks:N}:act` | hash | token → activation time (ms) |
//!
//! Scripts build the per-key names from the tag themselves (a generated
//! key's name is not known before the call); Redis Cluster accepts this
//! because every such name hashes to the slot of the declared `KEYS[1]`.
//!
//! A key's state moves between the indexes in O(log n) (`move` in
//! `pool_common.lua`); the listing number never changes while the key
//! lives, so a page cursor (`k` and the number of the last key visited)
//! stays valid across processes and restarts. Pools of a keyward from
//! before the key states (no `layout`, key hashes with the first four
//! fields only) read with the defaults; start-up gives their keys listing
//! numbers in `REAP_STEP` steps, and a key an older process adds later
//! gets one when it is first touched (`adopt`).
//!
//! # Time and expiry
//!
//! Scripts read Redis `TIME` (one clock for every process), unless the
//! store was built with [`TimeSource::Clock`] (the conformance suite's
//! manual clock). Every pool script first expires at most
//! [`Pool::LAZY_STEP`] (256) due entries of its pool (purges first, then
//! lease, cooldown and quarantine ends) (`ZRANGEBYSCORE …
//! LIMIT`), the local engine's bound, and applies the deadlines of the key
//! it works on whatever that bound left, so answers are exact and only the
//! counts can lag for a moment when more than that fall due at once.
//! [`RedisStore::expire_due`] (the reaper, every 250 ms in every process)
//! visits only the pools the due index `kw:due` says have something due.
//!
//! # The due index
//!
//! `kw:due` scores each pool no later than its earliest deadline. It lives
//! in its own slot, so scripts cannot write it (on Cluster a script touches
//! one slot): a script that may bring a pool's earliest deadline forward
//! (add, lease, keep-alive, a release that cools or quarantines the key)
//! returns the new score when it is earlier than the one recorded in the
//! pool's `due_at`, and keyward then sends `ZADD kw:due LT`. `due_at` is
//! never later than any deadline of the pool, so a script compares it with
//! the one deadline it added, in O(1), without reading the indexes. A score that is too early only costs the reaper a
//! visit; after expiring a due pool the reaper sets its score to the next
//! deadline, then reads `due_at` once more and lowers the score if a
//! script brought it forward meanwhile, so no deadline is lost to that
//! race. Each tick also sweeps one pool of the registry (`SSCAN`), which
//! indexes pools made before the index existed and repairs an entry whose
//! `ZADD` never arrived (keyward stopped between the script and it). A
//! tick costs O(1) commands plus a few per due pool, whatever the number
//! of pools.
//!
//! # Keyspaces
//!
//! The definition and secret are written once, first creator wins; every
//! process reads them back and caches the [`TokenCodec`]. Tokens are encoded
//! and decoded here, in Rust, from the counter kept in Redis. Every token
//! script checks the caller's secret against the stored one, so a process
//! whose cache went stale (the `default` keyspace redefined while empty)
//! reloads instead of issuing from the wrong permutation.
//!
//! # Failures
//!
//! Redis unreachable: operations fail with [`StoreError::Unavailable`]
//! (503), `/readyz` fails, and the server keeps retrying: the store comes
//! up lazily, creating the `default` pool and keyspace once Redis answers
//! (a background task retries with backoff, logging each failed step).
//!
//! [`Pool::LAZY_STEP`]: crate::core::Pool::LAZY_STEP

mod batch;
mod connection;
mod reaper;
mod registry;
mod reply;
mod scripts;
mod waiting;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use redis::RedisError;
use tokio::task::JoinHandle;

use super::{
    Applied, Change, DefaultKeyspaceChanged, Effect, ErrorChain, Idem, KeyspaceView, Limit, Limits,
    NewKeys, Page, PageRequest, PoolInfo, PoolPatch, Snapshot, Store, StoreError, Upsert,
};
use crate::clock::Clock;
use crate::core::{
    BatchInfo, Expired, Fingerprint, Imported, Issued, IssuedMany, KeyState, KeyView, KeyspaceInfo,
    KeyspaceSpec, Labels, MaxActivations, Name, OsRandom, Outcome, PoolKey, PoolSettings, Reason,
    TokenCodec, TokenStatus, Ttl, random_chars,
};
use connection::{Connector, InitError};
use reaper::Sweep;
use reply::Reply;
use scripts::{AddKeys, CANDIDATE_LEN, Call, Code, Family, Scripts};

/// The pool names, a sorted set of score 0 (ordered by name);
/// `--max-pools` counts it, listings page it, the sweep walks it.
const REGISTRY: &str = "kw:pool-names";
/// The keyspace names, as [`REGISTRY`] (its own slot).
const KEYSPACES: &str = "kw:keyspace-names";
/// The plain-set registries of earlier versions, migrated at start-up.
const OLD_REGISTRY: &str = "kw:pools";
const OLD_KEYSPACES: &str = "kw:keyspaces";
/// Deleted pools whose keys' hashes are still to be reclaimed (a set).
const GRAVES: &str = "kw:graves";
/// [`SNAPSHOT_NAMED`](crate::store::SNAPSHOT_NAMED) as a Redis count.
const SNAPSHOT_NAMED_U64: u64 = crate::store::SNAPSHOT_NAMED as u64;
/// Pools by earliest deadline (ms): what the reaper visits.
const DUE_INDEX: &str = "kw:due";
/// Issue counters stop here: Lua numbers are doubles, exact below 2^53.
const MAX_ISSUED: u128 = 1 << 53;

/// Where scripts take the current time from.
#[derive(Clone, Debug)]
pub enum TimeSource {
    /// Redis `TIME`, read inside each script: one clock for every process.
    Redis,
    /// This clock, passed to each script (tests drive a manual clock).
    Clock(Arc<dyn Clock>),
}

/// Which Redis to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`.
    Single(String),
    /// A cluster, through these `HOST:PORT` seed nodes.
    Cluster(Vec<String>),
}

/// What the Redis store starts with.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Settings of the `default` pool (applied on every start) and of pools
    /// created implicitly.
    pub pool_defaults: PoolSettings,
    /// Alphabet and length of the `default` keyspace.
    pub default_keyspace: KeyspaceSpec,
    /// Most pools, keyspaces and keys per pool clients may make.
    pub limits: Limits,
    /// Where "now" comes from.
    pub time: TimeSource,
}

/// The Redis store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisOpenError {
    /// The address is not a usable Redis URL.
    #[error("invalid Redis address {target}: {source}")]
    Address {
        /// The address as given.
        target: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// The default keyspace has tokens and the settings define another one.
    #[error(transparent)]
    DefaultKeyspaceChanged(#[from] Box<DefaultKeyspaceChanged>),
}

/// The state every operation shares; the store and the start-up retry task
/// hold it.
struct Inner {
    connector: Connector,
    scripts: Scripts,
    pool_defaults: PoolSettings,
    default_keyspace: KeyspaceSpec,
    time: TimeSource,
    /// The `default` pool and keyspace are known to exist. Cleared on any
    /// Redis error: after an outage Redis may come back empty.
    ready: AtomicBool,
    /// This process's flags were applied to the `default` pool and
    /// keyspace once. Later re-inits (after an outage) only make sure they
    /// exist, so they never undo a runtime `PUT /v1/pools/default` or
    /// replace another process's keyspace definition.
    flags_applied: AtomicBool,
    /// Serialises (re)initialisation; a tokio mutex because it is held
    /// across the initialising round trips.
    init: tokio::sync::Mutex<()>,
    /// Codecs of keyspaces read so far; checked against Redis by secret on
    /// every token operation.
    codecs: Mutex<HashMap<Name, TokenCodec>>,
    /// Where the reaper's sweep of the registry stands.
    sweep: Mutex<Sweep>,
    limits: Limits,
    /// The start-up retry task is running (and logging): the reaper stays
    /// quiet meanwhile.
    retrying: AtomicBool,
    /// This process's waiting leases and their pools' watchers.
    waiting: Mutex<waiting::WaitState>,
    /// Leases for waiters and give-backs still running (`flush` waits).
    inflight: waiting::Inflight,
    /// Leases and releases waiting for their pool's next batch.
    batches: Arc<batch::Batches>,
}

/// The Redis store. All operations are one script call, O(1) or O(log n)
/// in the pool or keyspace (generation O(count)), plus the bounded lazy
/// expiry of at most `Pool::LAZY_STEP` due entries, O(log n) each.
pub struct RedisStore {
    inner: Arc<Inner>,
    retry: Option<JoinHandle<()>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.connector.kind())
            .field("time", &self.inner.time)
            .field("ready", &self.inner.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(retry) = &self.retry {
            retry.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a map insert or lookup that cannot
    // leave the map half-changed; carry on after a panic elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(reason: impl Into<String>) -> StoreError {
    StoreError::Unavailable(reason.into().into())
}

/// `n` random key candidates of [`CANDIDATE_LEN`] characters each, back to
/// back, from the OS CSPRNG. O(n).
fn candidates(n: usize) -> String {
    random_chars(&mut OsRandom::default())
        .take(n * CANDIDATE_LEN)
        .collect()
}

/// A listing cursor as given out: `k` and the listing number, so a
/// cursor of another listing (a pool name) is refused, not misread.
fn cursor_text(n: u64) -> String {
    format!("k{n}")
}

/// The listing number of a cursor [`cursor_text`] wrote.
fn parse_cursor(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('k')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn keyspace_view(name: &Name, codec: &TokenCodec, info: KeyspaceInfo) -> KeyspaceView {
    KeyspaceView {
        name: name.clone(),
        spec: codec.spec().clone(),
        info,
    }
}

/// A token script's reply as the token's status.
fn token_status_of(
    codec: &TokenCodec,
    token: &str,
    reply: &mut Reply,
) -> Result<TokenStatus, StoreError> {
    let (marks, batch) = reply.token_marks()?;
    Ok(TokenStatus {
        token: codec.read_input(token)?.1,
        marks,
        batch,
    })
}

impl RedisStore {
    /// Sets up the store without needing Redis to be up: if Redis answers,
    /// the `default` pool (with `pool_defaults`) and keyspace are ensured
    /// now; if not, a background task retries with backoff (100 ms doubling
    /// to 2 s, one warning per failed attempt) and operations answer
    /// [`StoreError::Unavailable`] until Redis is reachable.
    ///
    /// Fails on an unusable address, or when Redis answers and its `default`
    /// keyspace has issued tokens with another alphabet or length.
    pub async fn connect(settings: RedisSettings) -> Result<Self, RedisOpenError> {
        let inner = Arc::new(Inner {
            connector: Connector::new(&settings.target)?,
            scripts: Scripts::new(),
            pool_defaults: settings.pool_defaults,
            default_keyspace: settings.default_keyspace,
            time: settings.time,
            ready: AtomicBool::new(false),
            flags_applied: AtomicBool::new(false),
            init: tokio::sync::Mutex::new(()),
            codecs: Mutex::new(HashMap::new()),
            sweep: Mutex::new(Sweep::default()),
            limits: settings.limits,
            retrying: AtomicBool::new(false),
            waiting: Mutex::new(waiting::WaitState::default()),
            inflight: waiting::Inflight::default(),
            batches: Arc::default(),
        });
        let retry = match inner.ensure_ready_typed().await {
            Ok(()) => None,
            Err(InitError::Open(e)) => return Err(e),
            Err(e) => {
                let (first, backoff) = connection::start_retry();
                tracing::warn!(
                    error = %ErrorChain(&e),
                    retry_in = ?first,
                    "Redis store not ready; serving 503 until it is"
                );
                inner.retrying.store(true, Ordering::Release);
                Some(tokio::spawn(connection::retry_until_ready(
                    Arc::downgrade(&inner),
                    first,
                    backoff,
                )))
            }
        };
        Ok(Self { inner, retry })
    }
}

impl Inner {
    /// The current time argument of a script: "" for Redis `TIME`.
    fn now_arg(&self) -> String {
        match &self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Clock(clock) => clock.now().as_millis().to_string(),
        }
    }

    /// The one path of every pool and keyspace operation: makes sure the
    /// `default` pool and keyspace exist, runs the script of `args` on
    /// `name`'s slot (its prefix and the time first), and reads the reply
    /// code. A refusal code becomes its error; the other codes the script
    /// may answer come back with the rest of the reply. One round trip.
    async fn call<A: Call>(&self, name: &Name, args: &A) -> Result<(Code, Reply), StoreError> {
        self.call_in(name, args, None).await
    }

    /// [`Inner::call`] as part of a change: with `ctx`'s idempotency key,
    /// a reply recorded for it comes back in place of the script's own
    /// (decoded, and noted in `ctx`), and a successful reply is recorded
    /// by the script. One round trip.
    async fn call_in<A: Call>(
        &self,
        name: &Name,
        args: &A,
        ctx: Option<&Ctx<'_>>,
    ) -> Result<(Code, Reply), StoreError> {
        self.ensure_ready().await?;
        let prefix = A::FAMILY.prefix(name);
        let idem = ctx.and_then(|c| c.idem);
        let value = self
            .invoke(&A::FAMILY.routing(&prefix), prefix, args, idem)
            .await
            .map_err(|e| self.failed(e))?;
        let mut reply = Reply::new(value)?;
        let mut code = reply.code()?;
        if code == Code::Replayed {
            reply = Reply::new(reply::decode_record(&reply.bytes()?)?)?;
            code = reply.code()?;
            if let Some(ctx) = ctx {
                ctx.replayed.store(true, Ordering::Release);
            }
            // The script that recorded it answered it.
            return Ok((code, reply));
        }
        if code == Code::NoFreeKey && reply.has_more() {
            let ms = reply.u64()?;
            return Err(StoreError::NoFreeKey {
                retry_after: Ttl::from_millis(ms.clamp(1, Ttl::MAX_MILLIS)),
            });
        }
        if let Some(refused) = code.refusal(&self.limits) {
            return Err(refused);
        }
        if !A::ANSWERS.contains(&code) {
            return Err(unavailable(format!("{code:?} from {}", A::OPERATION)));
        }
        Ok((code, reply))
    }

    /// With an idempotency key, the reply recorded for it in `name`'s pool
    /// (`P` is [`scripts::PeekPool`]) or keyspace ([`scripts::PeekKeyspace`]),
    /// if any: for changes with steps outside their script, which a replay
    /// must not run again. One round trip.
    async fn peek<P: Call>(
        &self,
        name: &Name,
        peek: &P,
        ctx: &Ctx<'_>,
    ) -> Result<Option<(Code, Reply)>, StoreError> {
        if ctx.idem.is_none() {
            return Ok(None);
        }
        let (code, reply) = self.call_in(name, peek, Some(ctx)).await?;
        Ok((code != Code::NoRecord).then_some((code, reply)))
    }

    /// Runs a key script (`release`, `keepalive`, `get`), reads its key and
    /// applies the due index entry it may return.
    async fn key_op<A: Call>(&self, pool: &Name, args: &A) -> Result<KeyView, StoreError> {
        self.key_op_in(pool, args, None).await
    }

    /// [`Inner::key_op`] as part of a change (see [`Inner::call_in`]).
    async fn key_op_in<A: Call>(
        &self,
        pool: &Name,
        args: &A,
        ctx: Option<&Ctx<'_>>,
    ) -> Result<KeyView, StoreError> {
        let (_, mut reply) = self.call_in(pool, args, ctx).await?;
        let view = reply.key_view()?;
        self.index_from(pool, &mut reply).await?;
        Ok(view)
    }

    /// The codec of `keyspace`, from the cache or Redis.
    async fn codec(&self, keyspace: &Name) -> Result<TokenCodec, StoreError> {
        if let Some(codec) = lock(&self.codecs).get(keyspace) {
            return Ok(codec.clone());
        }
        Ok(self.keyspace_info(keyspace).await?.0)
    }

    /// The definition and counts of `keyspace`, refreshing the cache.
    async fn keyspace_info(
        &self,
        keyspace: &Name,
    ) -> Result<(TokenCodec, KeyspaceInfo), StoreError> {
        let (_, mut reply) = self.call(keyspace, &scripts::ReadKeyspace {}).await?;
        let (codec, info) = reply.keyspace_def()?;
        lock(&self.codecs).insert(keyspace.clone(), codec.clone());
        Ok((codec, info))
    }

    /// Runs a token script with the cached codec's secret; on `STALE` (or
    /// a token the cached codec refuses) the cache is refreshed and the
    /// call made once more. `args` builds the call from the codec, `f`
    /// maps an `OK` reply.
    async fn token_op<A: Call, T>(
        &self,
        keyspace: &Name,
        ctx: Option<&Ctx<'_>>,
        args: impl Fn(&TokenCodec) -> Result<A, StoreError>,
        f: impl Fn(&TokenCodec, &mut Reply) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        for attempt in 0..2 {
            let codec = self.codec(keyspace).await?;
            let args = match args(&codec) {
                Ok(args) => args,
                // A stale cached codec could misjudge the token: judge it
                // again by the stored definition.
                Err(_) if attempt == 0 => {
                    lock(&self.codecs).remove(keyspace);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.call_in(keyspace, &args, ctx).await {
                Ok((Code::Stale, _)) => {
                    lock(&self.codecs).remove(keyspace);
                }
                Ok((_, mut reply)) => return f(&codec, &mut reply),
                Err(StoreError::KeyspaceNotFound) => {
                    lock(&self.codecs).remove(keyspace);
                    return Err(StoreError::KeyspaceNotFound);
                }
                Err(e) => return Err(e),
            }
        }
        Err(unavailable(
            "the keyspace definition changed during the call; retry",
        ))
    }

    /// The arguments of one `add` call: this server's defaults for a new
    /// pool, then the keys.
    fn add_args(
        &self,
        mode: &'static str,
        keys: String,
        count: usize,
        want: usize,
        labels: String,
    ) -> AddKeys {
        let d = self.pool_defaults;
        AddKeys {
            default_lease_ttl_ms: d.lease_ttl,
            default_keepalive_ttl_ms: d.keepalive_ttl,
            default_key_length: d.key_length,
            default_cooldown_ms: d.recovery.cooldown,
            default_max_failures: d.recovery.max_failures.get(),
            default_quarantine_ms: d.recovery.quarantine,
            default_no_keepalive: d.no_keepalive,
            max_keys: self.limits.max_keys_per_pool,
            mode,
            keys,
            count: count as u64,
            want: want as u64,
            labels,
        }
    }

    /// Runs one `add` call: the keys added (as views carrying `labels`)
    /// and the existing ones.
    async fn add(
        &self,
        pool: &Name,
        args: &AddKeys,
        labels: &Labels,
        ctx: Option<&Ctx<'_>>,
    ) -> Result<Imported, StoreError> {
        let (_, mut reply) = self.call_in(pool, args, ctx).await?;
        let score = reply.text()?;
        self.index_due(pool, &score).await?;
        reply::added(&mut reply, labels)
    }
}

/// Suffix of a pool's or keyspace's idempotency record index
/// (`idempotency.lua`): its ZCARD is the number of records.
const IDEM_INDEX: &str = ":idem:at";

/// Spare generate candidates per add call: 16 more than asked, so
/// a call falls short only if 17 random keys of at least 8 characters are
/// all taken.
const SPARE_CANDIDATES: usize = 16;

/// One change's share of its script calls: its idempotency key, and
/// whether a recorded reply answered (an atomic only so the change's
/// future stays `Send`).
struct Ctx<'a> {
    idem: Option<&'a Idem>,
    replayed: AtomicBool,
}

/// The wire name of an outcome, and its `retry_after`.
fn outcome_args(outcome: Outcome) -> (&'static str, Option<Ttl>) {
    match outcome {
        Outcome::Ok => ("ok", None),
        Outcome::RateLimited { retry_after } => ("rate_limited", retry_after),
        Outcome::Failed => ("failed", None),
    }
}

/// The changes, each with its idempotency context (see [`Store::apply`]).
impl RedisStore {
    /// One lease script when a key is free. Else the request joins this
    /// process's FIFO of the pool and the pool's watcher (one task and one
    /// subscription per pool with waiters, per process) hands it a key,
    /// leased by the same script, when Redis announces one (release,
    /// enable, add, the reaper's expiry) or the pool's next lease,
    /// cooldown or quarantine end comes (see `waiting.rs`); a key handed
    /// over is then claimed for the request's idempotency key (one script
    /// more). O(log n) in Redis and O(log w) here per hand-over. Nobody
    /// waiting costs the freeing scripts one `EXISTS`.
    async fn lease(
        &self,
        pool: &Name,
        wait: std::time::Duration,
        ctx: &Ctx<'_>,
    ) -> Result<KeyView, StoreError> {
        waiting::lease_waiting(&self.inner, pool, wait, ctx).await
    }

    /// One script per call: O(count log n) plus the bounded lazy expiry.
    /// Generated candidates come from the OS CSPRNG, with
    /// [`SPARE_CANDIDATES`] spares so one call is enough even when some
    /// are live keys already (without an idempotency key, a call that
    /// still falls short is followed by another). The script refuses the
    /// whole call if the pool could come to hold more than
    /// `--max-keys-per-pool` keys; a count over the limit is refused
    /// before the pool is registered, so it creates nothing.
    async fn add_keys(
        &self,
        pool: &Name,
        keys: NewKeys,
        labels: &Labels,
        ctx: &Ctx<'_>,
    ) -> Result<Imported, StoreError> {
        let inner = &self.inner;
        let count = keys.len();
        // What a new pool would get: an import's distinct keys.
        let most = match &keys {
            NewKeys::Import(keys) => keys
                .iter()
                .map(PoolKey::as_str)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            NewKeys::Generate(n) => *n,
        };
        if u64::try_from(most).map_or(true, |n| n > inner.limits.max_keys_per_pool) {
            return Err(inner.limits.reached(Limit::KeysPerPool));
        }
        inner.ensure_ready().await?;
        if let Some((_, mut reply)) = inner.peek(pool, &scripts::PeekPool {}, ctx).await? {
            let _due_score = reply.text()?;
            return reply::added(&mut reply, labels);
        }
        inner.register(pool).await?;
        let labels_text = reply::labels_text(labels);
        let keys = match keys {
            NewKeys::Import(keys) => {
                let text = keys
                    .iter()
                    .map(PoolKey::as_str)
                    .collect::<Vec<_>>()
                    .join(" ");
                let args = inner.add_args("import", text, count, count, labels_text);
                return inner.add(pool, &args, labels, Some(ctx)).await;
            }
            NewKeys::Generate(n) => n,
        };
        let mut added = Vec::with_capacity(keys);
        for _ in 0..8 {
            if added.len() == keys {
                break;
            }
            let want = keys - added.len();
            let spares = want + SPARE_CANDIDATES;
            let args = inner.add_args(
                "generate",
                candidates(spares),
                spares,
                want,
                labels_text.clone(),
            );
            added.extend(inner.add(pool, &args, labels, Some(ctx)).await?.added);
            if ctx.idem.is_some() {
                // One call, recorded as it is.
                break;
            }
        }
        if added.len() == keys || ctx.idem.is_some() {
            Ok(Imported {
                added,
                existing: Vec::new(),
            })
        } else {
            Err(unavailable("could not generate unique keys"))
        }
    }

    /// One script: O(1) plus the bounded lazy expiry (O(`Pool::LAZY_STEP`
    /// log n)); registers a new pool name first (one `SADD`, once per
    /// process).
    async fn put_pool(
        &self,
        pool: &Name,
        patch: PoolPatch,
        ctx: &Ctx<'_>,
    ) -> Result<(PoolInfo, Upsert), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let (code, mut reply) = match inner.peek(pool, &scripts::PeekPool {}, ctx).await? {
            Some(replay) => replay,
            None => {
                inner.register(pool).await?;
                inner
                    .call_in(pool, &inner.put_pool_args(patch), Some(ctx))
                    .await?
            }
        };
        let upsert = if code == Code::Created {
            Upsert::Created
        } else {
            Upsert::Existed
        };
        let (settings, stats, expired, quarantines) = reply.pool_state()?;
        Ok((
            PoolInfo {
                name: pool.clone(),
                settings,
                stats,
                expired,
                quarantines,
            },
            upsert,
        ))
    }

    /// One script: O(1); the first creator's definition and secret win.
    async fn put_keyspace(
        &self,
        keyspace: &Name,
        spec: KeyspaceSpec,
        max_activations: Option<MaxActivations>,
        ctx: &Ctx<'_>,
    ) -> Result<(KeyspaceView, Upsert), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let peeked = inner.peek(keyspace, &scripts::PeekKeyspace {}, ctx).await?;
        let (code, mut reply) = match peeked {
            Some(replay) => replay,
            None => {
                inner.register_keyspace(keyspace).await?;
                let mut args = connection::put_keyspace_args(&spec, false);
                args.max_activations = max_activations.map(|m| u64::from(m.get()));
                inner.call_in(keyspace, &args, Some(ctx)).await?
            }
        };
        let (codec, info) = reply.keyspace_def()?;
        let upsert = match code {
            Code::Created => Upsert::Created,
            Code::Existed => Upsert::Existed,
            _ => return Err(StoreError::KeyspaceImmutable),
        };
        let view = keyspace_view(keyspace, &codec, info);
        lock(&inner.codecs).insert(keyspace.clone(), codec);
        Ok((view, upsert))
    }

    /// [`RedisStore::issue_tokens`] of one: one script, O(1), then one
    /// keyed permutation here. On Redis a keyspace issues at most 2^53
    /// tokens, where Lua's doubles stop counting exactly.
    async fn issue_token(
        &self,
        keyspace: &Name,
        batch: Option<&Name>,
        ctx: &Ctx<'_>,
    ) -> Result<Issued, StoreError> {
        let mut many = self.issue_tokens(keyspace, 1, batch, ctx).await?;
        let token = many
            .tokens
            .pop()
            .ok_or_else(|| unavailable("an issue of one token answered none"))?;
        Ok(Issued {
            token,
            index: many.first,
            remaining: many.remaining,
        })
    }

    /// One script (`INCRBY` below the capacity, and under a batch one
    /// range and count, O(log b)), then `count` keyed permutations here.
    async fn issue_tokens(
        &self,
        keyspace: &Name,
        count: u32,
        batch: Option<&Name>,
        ctx: &Ctx<'_>,
    ) -> Result<IssuedMany, StoreError> {
        self.inner
            .token_op(
                keyspace,
                Some(ctx),
                |codec| {
                    Ok(scripts::IssueToken {
                        secret: scripts::secret_hex(codec.secret()),
                        limit: codec.spec().capacity().min(MAX_ISSUED),
                        count,
                        batch: batch.map(Name::to_string),
                    })
                },
                |codec, reply| {
                    let first = u128::from(reply.u64()?);
                    let end = first + u128::from(count);
                    Ok(IssuedMany {
                        tokens: (first..end).map(|i| codec.show(i)).collect(),
                        first,
                        remaining: codec.spec().capacity() - end,
                    })
                },
            )
            .await
    }

    /// One token script, after decoding the token here: `args` builds the
    /// call from the stored secret (hex), the token's index and its shown
    /// form; the reply is the token as it now stands. O(log b + m) for b
    /// batch ranges and the token's m ≤ 1000 slots (its marks are one JSON
    /// field).
    async fn token_script<A: Call>(
        &self,
        keyspace: &Name,
        token: &str,
        ctx: Option<&Ctx<'_>>,
        args: impl Fn(String, u128, String) -> A,
    ) -> Result<TokenStatus, StoreError> {
        self.inner
            .token_op(
                keyspace,
                ctx,
                |codec| {
                    let (index, shown) = codec.read_input(token)?;
                    Ok(args(scripts::secret_hex(codec.secret()), index, shown))
                },
                |codec, reply| token_status_of(codec, token, reply),
            )
            .await
    }

    /// One token script.
    async fn activate_token(
        &self,
        keyspace: &Name,
        token: &str,
        fingerprint: Option<&Fingerprint>,
        ctx: &Ctx<'_>,
    ) -> Result<TokenStatus, StoreError> {
        let fingerprint = fingerprint.map(|f| f.as_str().to_owned());
        self.token_script(keyspace, token, Some(ctx), |secret, index, token| {
            scripts::ActivateToken {
                secret,
                index,
                token,
                fingerprint: fingerprint.clone(),
            }
        })
        .await
    }

    /// One token script.
    async fn deactivate_token(
        &self,
        keyspace: &Name,
        token: &str,
        fingerprint: &Fingerprint,
        ctx: &Ctx<'_>,
    ) -> Result<TokenStatus, StoreError> {
        self.token_script(keyspace, token, Some(ctx), |secret, index, token| {
            scripts::DeactivateToken {
                secret,
                index,
                token,
                fingerprint: fingerprint.as_str().to_owned(),
            }
        })
        .await
    }

    /// One token script.
    async fn revoke_token(
        &self,
        keyspace: &Name,
        token: &str,
        reason: Option<&Reason>,
        ctx: &Ctx<'_>,
    ) -> Result<TokenStatus, StoreError> {
        let reason = reason.map(|r| r.as_str().to_owned());
        self.token_script(keyspace, token, Some(ctx), |secret, index, token| {
            scripts::RevokeToken {
                secret,
                index,
                token,
                reason: reason.clone(),
            }
        })
        .await
    }

    /// O(log pools) and O(1) commands: the name leaves the registry and
    /// the due index, then one script unlinks the pool's index keys and
    /// moves its generation on (see `drop_pool.lua`); the reaper deletes
    /// the old keys' hashes later, `REAP_STEP` at a time (`kw:graves`).
    async fn delete_pool(&self, pool: &Name, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        if *pool == Name::default_name() {
            return Err(StoreError::CannotDeleteDefault);
        }
        let inner = &self.inner;
        inner.ensure_ready().await?;
        if inner
            .peek(pool, &scripts::PeekPool {}, ctx)
            .await?
            .is_some()
        {
            return Ok(());
        }
        // The registry first: if this stops half-way, a pool may be left
        // out of the listing, but the count never holds a place for a
        // pool that is gone; a retry finishes the deletion.
        inner
            .query(redis::cmd("ZREM").arg(REGISTRY).arg(pool.as_str()))
            .await?;
        // Into `kw:graves` before the script, so a process stopped right
        // after it leaves no graveyard unlisted, and again after it, so a
        // reaper that emptied the entry meanwhile sees this one (see
        // `reclaim_some`). O(1) each.
        let grave = redis::cmd("SADD").arg(GRAVES).arg(pool.as_str()).clone();
        inner.query(&grave).await?;
        inner
            .call_in(pool, &scripts::DropPool {}, Some(ctx))
            .await?;
        inner.query(&grave).await?;
        inner
            .query(redis::cmd("ZREM").arg(DUE_INDEX).arg(pool.as_str()))
            .await?;
        // This process's waiters of the pool answer `no_free_key` now.
        lock(&inner.waiting).forget(pool);
        Ok(())
    }

    /// O(log keyspaces) and one script: `UNLINK` of the keyspace's keys,
    /// whose memory Redis frees in its background thread.
    async fn delete_keyspace(&self, keyspace: &Name, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        if *keyspace == Name::default_name() {
            return Err(StoreError::CannotDeleteDefault);
        }
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let peek = scripts::PeekKeyspace {};
        if inner.peek(keyspace, &peek, ctx).await?.is_some() {
            return Ok(());
        }
        inner
            .query(redis::cmd("ZREM").arg(KEYSPACES).arg(keyspace.as_str()))
            .await?;
        lock(&inner.codecs).remove(keyspace);
        inner
            .call_in(keyspace, &scripts::DropKeyspace {}, Some(ctx))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    /// Each change is one script (see its method on [`RedisStore`]), the
    /// idempotency record written by that script; changes with steps
    /// outside their script (registering or dropping a name) first peek at
    /// the record, one round trip more.
    async fn apply(&self, change: Change, idem: Option<&Idem>) -> Result<Applied, StoreError> {
        let ctx = Ctx {
            idem,
            replayed: AtomicBool::new(false),
        };
        let effect = match change {
            Change::PutPool { pool, patch } => {
                let (info, upsert) = self.put_pool(&pool, patch, &ctx).await?;
                Effect::Pool(info, upsert)
            }
            Change::DeletePool { pool } => {
                self.delete_pool(&pool, &ctx).await?;
                Effect::Deleted
            }
            Change::AddKeys { pool, keys, labels } => {
                Effect::Added(self.add_keys(&pool, keys, &labels, &ctx).await?)
            }
            Change::Lease { pool, wait } => Effect::Key(self.lease(&pool, wait, &ctx).await?),
            Change::Report {
                pool,
                key,
                lease_id,
                outcome,
                reason,
            } => {
                let (outcome, retry_after_ms) = outcome_args(outcome);
                let args = scripts::ReportKey {
                    key,
                    lease_id,
                    outcome,
                    retry_after_ms,
                    reason: reason.map(|r| r.as_str().to_owned()),
                    forget: None,
                };
                Effect::Key(self.inner.key_op_in(&pool, &args, Some(&ctx)).await?)
            }
            Change::Disable { pool, key, reason } => {
                let args = scripts::DisableKey {
                    key,
                    reason: reason.map(|r| r.as_str().to_owned()),
                };
                Effect::Key(self.inner.key_op_in(&pool, &args, Some(&ctx)).await?)
            }
            Change::Enable { pool, key } => {
                let args = scripts::EnableKey { key };
                Effect::Key(self.inner.key_op_in(&pool, &args, Some(&ctx)).await?)
            }
            Change::Keepalive {
                pool,
                key,
                lease_id,
            } => {
                let args = scripts::KeepaliveKey { key, lease_id };
                Effect::Key(self.inner.key_op_in(&pool, &args, Some(&ctx)).await?)
            }
            Change::DeleteKey { pool, key } => {
                let args = scripts::DeleteKey { key };
                self.inner.call_in(&pool, &args, Some(&ctx)).await?;
                Effect::Deleted
            }
            Change::PutKeyspace {
                keyspace,
                spec,
                max_activations,
            } => {
                let (view, upsert) = self
                    .put_keyspace(&keyspace, spec, max_activations, &ctx)
                    .await?;
                Effect::Keyspace(view, upsert)
            }
            Change::DeleteKeyspace { keyspace } => {
                self.delete_keyspace(&keyspace, &ctx).await?;
                Effect::Deleted
            }
            Change::Issue { keyspace, batch } => {
                Effect::Issued(self.issue_token(&keyspace, batch.as_ref(), &ctx).await?)
            }
            Change::IssueMany {
                keyspace,
                count,
                batch,
            } => Effect::IssuedMany(
                self.issue_tokens(&keyspace, count, batch.as_ref(), &ctx)
                    .await?,
            ),
            Change::Activate {
                keyspace,
                token,
                fingerprint,
            } => Effect::Token(
                self.activate_token(&keyspace, &token, fingerprint.as_ref(), &ctx)
                    .await?,
            ),
            Change::Deactivate {
                keyspace,
                token,
                fingerprint,
            } => {
                self.deactivate_token(&keyspace, &token, &fingerprint, &ctx)
                    .await?;
                Effect::Deleted
            }
            Change::Revoke {
                keyspace,
                token,
                reason,
            } => Effect::Token(
                self.revoke_token(&keyspace, &token, reason.as_ref(), &ctx)
                    .await?,
            ),
        };
        Ok(match idem {
            Some(idem) if ctx.replayed.load(Ordering::Acquire) => Applied::Recorded {
                recorded: (idem.render)(&effect),
                replayed: true,
            },
            _ => Applied::Done(effect),
        })
    }

    fn stop_waiting(&self) {
        lock(&self.inner.waiting).close();
    }

    /// One script: `ZRANGEBYSCORE` of the state's index (or of all keys)
    /// by listing number, O(limit · log n) plus the bounded lazy expiry
    /// and the due keys it settles. The cursor is the listing number of
    /// the last key visited, which never changes while the key lives, so
    /// it stays valid across processes and restarts.
    async fn list_keys(
        &self,
        pool: &Name,
        state: Option<KeyState>,
        page: &PageRequest,
    ) -> Result<Page<KeyView>, StoreError> {
        let after = match &page.after {
            None => None,
            Some(text) => Some(parse_cursor(text).ok_or(StoreError::InvalidCursor)?),
        };
        let args = scripts::ListKeys {
            state: state.map_or("", KeyState::as_str),
            after,
            limit: page.limit.get() as u64,
        };
        let (_, mut reply) = self.inner.call(pool, &args).await?;
        let next = reply.optional_u64()?.map(cursor_text);
        let mut items = Vec::with_capacity(page.limit.get());
        while reply.has_more() {
            items.push(reply.key_view()?);
        }
        Ok(Page { items, next })
    }

    /// One script: O(1) (`ZCARD`s, `SCARD`) plus the bounded lazy expiry.
    async fn pool_info(&self, pool: &Name) -> Result<PoolInfo, StoreError> {
        let (_, mut reply) = self.inner.call(pool, &scripts::ReadPool {}).await?;
        let (settings, stats, expired, quarantines) = reply.pool_state()?;
        Ok(PoolInfo {
            name: pool.clone(),
            settings,
            stats,
            expired,
            quarantines,
        })
    }

    /// One script: O(1) plus the bounded lazy expiry.
    async fn get_key(&self, pool: &Name, key: &str) -> Result<KeyView, StoreError> {
        let args = scripts::GetKey {
            key: key.to_owned(),
        };
        self.inner.key_op(pool, &args).await
    }

    /// One script: O(1) (`GET`, `HLEN`, `HMGET`).
    async fn keyspace_info(&self, keyspace: &Name) -> Result<KeyspaceView, StoreError> {
        let (codec, info) = self.inner.keyspace_info(keyspace).await?;
        Ok(keyspace_view(keyspace, &codec, info))
    }

    /// One script: O(1) (`HMGET` of the batch counts).
    async fn batch_info(&self, keyspace: &Name, batch: &Name) -> Result<BatchInfo, StoreError> {
        let args = scripts::ReadBatch {
            batch: batch.to_string(),
        };
        let (_, mut reply) = self.inner.call(keyspace, &args).await?;
        Ok(BatchInfo {
            name: batch.clone(),
            issued: u128::from(reply.u64()?),
            activated: u128::from(reply.u64()?),
            revoked: u128::from(reply.u64()?),
        })
    }

    /// One token script.
    async fn token_status(&self, keyspace: &Name, token: &str) -> Result<TokenStatus, StoreError> {
        self.token_script(keyspace, token, None, |secret, index, token| {
            scripts::ReadToken {
                secret,
                index,
                token,
            }
        })
        .await
    }

    /// For each pool the due index says is due (at most 1000 per call) and
    /// one pool of the registry sweep, scripts of at most `REAP_STEP`
    /// (4096) due entries each (O(m log n) for m entries), at most 16 per
    /// pool per call, and three commands to re-index the pool: O(1)
    /// commands when nothing is due, whatever the number of pools. Does
    /// nothing while the start-up retry task runs (it reports); lazy
    /// expiry keeps answers exact meanwhile. After a failure the caller
    /// (the reaper) backs off.
    async fn expire_due(&self) -> Result<Expired, StoreError> {
        let inner = &self.inner;
        if inner.retrying.load(Ordering::Acquire) {
            return Ok(Expired::default());
        }
        inner.expire_all().await
    }

    /// `ZCARD` of both registries, one `ZRANGEBYLEX`, then one script
    /// and one `ZCARD` (its idempotency records) per named pool and
    /// keyspace: O(`SNAPSHOT_NAMED`) calls whatever the number of pools.
    /// No key totals: they would take a call per pool.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let mut snapshot = Snapshot {
            pool_count: inner.count(REGISTRY).await?,
            keyspace_count: inner.count(KEYSPACES).await?,
            ..Snapshot::default()
        };
        for pool in inner.first_names(REGISTRY).await? {
            match self.pool_info(&pool).await {
                Ok(info) => snapshot.pools.push(info),
                Err(StoreError::PoolNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        for keyspace in inner.first_names(KEYSPACES).await? {
            match self.keyspace_info(&keyspace).await {
                Ok(view) => snapshot.keyspaces.push(view),
                Err(StoreError::KeyspaceNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // Idempotency records of the named pools and keyspaces: one ZCARD
        // of each one's record index.
        let pools = snapshot.pools.iter().map(|p| Family::Pool.prefix(&p.name));
        let keyspaces = snapshot
            .keyspaces
            .iter()
            .map(|k| Family::Keyspace.prefix(&k.name));
        for prefix in pools.chain(keyspaces).collect::<Vec<_>>() {
            snapshot.idempotency_records += inner.count(&format!("{prefix}{IDEM_INDEX}")).await?;
        }
        Ok(snapshot)
    }
    /// `ZRANGEBYLEX` of the registry (O(log pools + limit)), then one
    /// `pool_info` script per name: O(limit) calls. A name whose pool is
    /// gone meanwhile is left out.
    async fn list_pools(&self, page: &PageRequest) -> Result<Page<PoolInfo>, StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let (names, next) = inner.page_names(REGISTRY, page).await?;
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            match self.pool_info(&name).await {
                Ok(info) => items.push(info),
                Err(StoreError::PoolNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page { items, next })
    }

    /// As [`RedisStore::list_pools`], with `keyspace_info`.
    async fn list_keyspaces(&self, page: &PageRequest) -> Result<Page<KeyspaceView>, StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let (names, next) = inner.page_names(KEYSPACES, page).await?;
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            match self.keyspace_info(&name).await {
                Ok(view) => items.push(view),
                Err(StoreError::KeyspaceNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page { items, next })
    }

    /// A real `PING` (after ensuring the defaults exist): O(1).
    async fn ping(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let mut handle = inner.handle().await.map_err(|e| inner.failed(e))?;
        handle
            .query(&redis::cmd("PING"))
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(())
    }

    /// Redis applied each change before answering (how durable it is
    /// then is Redis's persistence setting, `appendfsync`); waits only for
    /// this process's leases for waiters and give-backs of keys a dropped
    /// waiter left (at most a few seconds), so a read after dropping a
    /// waiter sees the key settled. O(1) when none runs.
    async fn flush(&self) -> Result<(), StoreError> {
        waiting::settle(&self.inner, std::time::Duration::from_secs(5)).await;
        Ok(())
    }
}
