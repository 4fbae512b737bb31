//! The Redis backend (`redis://HOST:PORT/DB`, `redis+cluster://…`): all
//! state in Redis, one Lua script per operation, so any number of keyward
//! processes can serve the same pools and keyspaces.
//!
//! Each operation is one `EVALSHA` of a script in `src/store/redis/*.lua`
//! (`redis::Script` reloads it after `NOSCRIPT`, e.g. when Redis restarted).
//! A script runs atomically, so no key is leased twice and no token issued
//! twice whichever process serves the request.
//!
//! # Key layout
//!
//! Every key of a pool carries the hash tag `{kw:p:NAME}`, every key of a
//! keyspace `{kw:ks:NAME}`, so each script touches one cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{kw:p:N}:meta` | hash | `lease_ttl_ms`, `keepalive_ttl_ms`, `key_length` |
//! | `{kw:p:N}:free` | set | free keys (`SRANDMEMBER`: the uniform pick) |
//! | `{kw:p:N}:leases` | zset | leased keys by lease end (ms) |
//! | `{kw:p:N}:alive` | zset | every live key by purge deadline (ms) |
//! | `{kw:p:N}:k:KEY` | hash | `created_at`, `alive_until`, `lease_id` (0 = free), `leased_until` |
//! | `{kw:p:N}:seq` | string | last lease id (`INCR`): the fencing counter |
//! | `kw:pools` | set | names of all pools: `--max-pools` counts them (`SCARD`) |
//! | `kw:due` | zset | pools by earliest deadline (ms), for the reaper (its own slot) |
//! | `kw:keyspaces` | set | names of all keyspaces: `--max-keyspaces` counts them |
//! | `{kw:ks:N}:def` | hash | `alphabet`, `length`, `secret` (hex) |
//! | `{kw:ks:N}:issued` | string | tokens issued (`INCR`) |
//! | `{kw:ks:N}:act` | hash | token → activation time (ms) |
//!
//! Scripts build the per-key names from the tag themselves (a generated
//! key's name is not known before the call); Redis Cluster accepts this
//! because every such name hashes to the slot of the declared `KEYS[1]`.
//!
//! # Time and expiry
//!
//! Scripts read Redis `TIME` (one clock for every process), unless the
//! store was built with [`TimeSource::Clock`] (the conformance suite's
//! manual clock). Every pool script first expires at most 100 due entries
//! of its pool (`ZRANGEBYSCORE … LIMIT`), and applies the deadlines of the
//! key it works on whatever that bound left, so answers are exact and only
//! the counts can lag for a moment when more than 100 fall due at once.
//! [`RedisStore::expire_due`] (the reaper, every 250 ms in every process)
//! visits only the pools the due index `kw:due` says have something due.
//!
//! # The due index
//!
//! `kw:due` scores each pool no later than its earliest deadline. It lives
//! in its own slot, so scripts cannot write it (on Cluster a script touches
//! one slot): a script that may bring a pool's earliest deadline forward
//! (generate, lease, keep-alive) returns the new score when it is earlier
//! than the one recorded in the pool's `due_at`, and keyward then sends
//! `ZADD kw:due LT`. A score that is too early only costs the reaper a
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::TryRng;
use redis::aio::ConnectionManager;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script, Value};
use tokio::task::JoinHandle;

use super::{
    KeyspaceView, Limit, Limits, PoolInfo, PoolPatch, SNAPSHOT_NAMED, Snapshot, Store, StoreError,
    Upsert,
};
use crate::clock::Clock;
use crate::core::{
    Expired, Issued, KeyLength, KeyView, KeyspaceError, KeyspaceInfo, KeyspaceSpec, Lease, Name,
    PoolError, PoolSettings, PoolStats, Secret, Timestamp, TokenCodec, TokenStatus, Ttl,
};

/// The set of pool names; `--max-pools` counts it, the sweep walks it.
const REGISTRY: &str = "kw:pools";
/// Pools by earliest deadline (ms): what the reaper visits.
const DUE_INDEX: &str = "kw:due";
/// Most due pools one reaper call visits; the rest wait for the next call.
const REAP_POOLS: u64 = 1000;
/// Names read from the registry per `SSCAN` for the sweep and `/metrics`.
const SCAN_COUNT: u64 = 100;
/// Names of all keyspaces, for `/metrics` (its own slot).
const KEYSPACES: &str = "kw:keyspaces";
/// Most due entries one reaper step expires in one pool (one script call).
const REAP_STEP: u64 = 1000;
/// Most reaper steps per pool per [`RedisStore::expire_due`] call; what is
/// left waits for the next call (and lazy expiry keeps answers exact).
const REAP_STEPS_PER_POOL: usize = 64;
/// Length of the random key candidates sent to the generate script, which
/// cuts them to the pool's key length (at most 128).
const CANDIDATE_LEN: usize = 128;
/// Issue counters stop here: Lua numbers are doubles, exact below 2^53.
const MAX_ISSUED: u128 = 1 << 53;
/// Per-command limits, so a stuck Redis fails requests instead of hanging
/// them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Start-up retry backoff: from the first to the longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

const KEY_CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

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
    #[error(
        "keyspace \"default\" in Redis already issued {issued} tokens with {have}, but the settings ask for {want}; \
         its alphabet and length cannot change once a token is issued. Start with {have_flags}, or use another Redis database"
    )]
    DefaultKeyspaceChanged {
        /// Tokens issued.
        issued: u128,
        /// The differing values in Redis, e.g. `length 4`.
        have: String,
        /// The differing values asked for.
        want: String,
        /// Flags that reproduce the values in Redis.
        have_flags: String,
    },
}

/// The compiled scripts, one per operation (common head + body).
struct Scripts {
    pool_put: Script,
    pool_info: Script,
    generate: Script,
    lease: Script,
    release: Script,
    keepalive: Script,
    get: Script,
    delete: Script,
    expire: Script,
    keyspace_put: Script,
    keyspace_info: Script,
    issue: Script,
    token_status: Script,
    activate: Script,
    reserve: Script,
    due: Script,
}

impl Scripts {
    fn new() -> Self {
        let pool =
            |body: &str| Script::new(&format!("{}{body}", include_str!("redis/pool_common.lua")));
        let keyspace = |body: &str| {
            Script::new(&format!(
                "{}{body}",
                include_str!("redis/keyspace_common.lua")
            ))
        };
        Self {
            pool_put: pool(include_str!("redis/pool_put.lua")),
            pool_info: pool(include_str!("redis/pool_info.lua")),
            generate: pool(include_str!("redis/generate.lua")),
            lease: pool(include_str!("redis/lease.lua")),
            release: pool(include_str!("redis/release.lua")),
            keepalive: pool(include_str!("redis/keepalive.lua")),
            get: pool(include_str!("redis/get.lua")),
            delete: pool(include_str!("redis/delete.lua")),
            expire: pool(include_str!("redis/expire.lua")),
            keyspace_put: keyspace(include_str!("redis/keyspace_put.lua")),
            keyspace_info: keyspace(include_str!("redis/keyspace_info.lua")),
            issue: keyspace(include_str!("redis/issue.lua")),
            token_status: keyspace(include_str!("redis/token_status.lua")),
            activate: keyspace(include_str!("redis/activate.lua")),
            reserve: Script::new(include_str!("redis/reserve.lua")),
            due: Script::new(include_str!("redis/due.lua")),
        }
    }
}

/// Pool script reply codes (`pool_common.lua`).
mod pool_code {
    pub const OK: i64 = 0;
    pub const KEY_NOT_FOUND: i64 = 1;
    pub const NOT_LEASED: i64 = 2;
    pub const LEASE_MISMATCH: i64 = 3;
    pub const NO_FREE_KEY: i64 = 4;
    pub const POOL_NOT_FOUND: i64 = 5;
    pub const KEY_LIMIT: i64 = 6;
}

/// Keyspace script reply codes (`keyspace_common.lua`).
mod keyspace_code {
    pub const OK: i64 = 0;
    pub const NOT_FOUND: i64 = 1;
    pub const STALE: i64 = 2;
    pub const EXHAUSTED: i64 = 3;
    pub const NOT_ISSUED: i64 = 4;
    pub const ALREADY: i64 = 5;
}

/// A connection of either kind; both multiplex and are cheap to clone.
#[derive(Clone)]
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Handle {
    async fn eval(
        &mut self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, RedisError> {
        match self {
            Self::Single(c) => invocation.invoke_async(c).await,
            Self::Cluster(c) => invocation.invoke_async(c).await,
        }
    }

    async fn query(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

enum Connector {
    /// Reconnects by itself; created without connecting.
    Single(ConnectionManager),
    /// Connected on first use (the cluster must answer to learn its slots).
    Cluster(Box<ClusterConnector>),
}

struct ClusterConnector {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

/// Why the store is not ready.
#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("Redis is unreachable")]
    Redis(#[source] RedisError),
    #[error(transparent)]
    Open(#[from] RedisOpenError),
    #[error("Redis sent an unexpected reply: {0}")]
    Reply(String),
}

/// The reaper's walk over the registry, one pool per call: the names of
/// the last `SSCAN` page not yet visited, and the cursor of the next page.
#[derive(Debug, Default)]
struct Sweep {
    pending: Vec<Name>,
    cursor: u64,
}

/// Skips reaper steps after a failure, doubling the pause each time, so a
/// Redis outage is reported once per backoff step and not every 250 ms.
#[derive(Debug, Default)]
struct ReapBackoff {
    paused_until: Option<Instant>,
    pause: Duration,
}

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
    /// Pools this process has put in the registry since the last error.
    registered: Mutex<HashSet<Name>>,
    reap_backoff: Mutex<ReapBackoff>,
    /// Where the reaper's sweep of the registry stands.
    sweep: Mutex<Sweep>,
    limits: Limits,
    /// The start-up retry task is running (and logging): the reaper stays
    /// quiet meanwhile.
    retrying: AtomicBool,
}

/// The Redis store. All operations are one script call, O(1) or O(log n)
/// in the pool or keyspace (generation O(count)), plus the bounded lazy
/// expiry of at most 100 due entries, O(log n) each.
pub struct RedisStore {
    inner: Arc<Inner>,
    retry: Option<JoinHandle<()>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.inner.connector {
            Connector::Single(_) => "single",
            Connector::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("target", &target)
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

fn pool_prefix(pool: &Name) -> String {
    format!("{{kw:p:{pool}}}")
}

fn keyspace_prefix(keyspace: &Name) -> String {
    format!("{{kw:ks:{keyspace}}}")
}

fn unavailable(reason: impl Into<String>) -> StoreError {
    StoreError::Unavailable(reason.into().into())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_from_hex(hex: &str) -> Option<Secret> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Secret::from_bytes(bytes))
}

/// `n` random candidates of [`CANDIDATE_LEN`] characters of `A-Za-z0-9`
/// from the OS CSPRNG, by rejection sampling (no modulo bias).
fn candidates(n: usize) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let mut pos = buf.len();
    (0..n)
        .map(|_| {
            let mut key = String::with_capacity(CANDIDATE_LEN);
            while key.len() < CANDIDATE_LEN {
                if pos == buf.len() {
                    rand::rngs::SysRng
                        .try_fill_bytes(&mut buf)
                        .expect("the OS random source does not fail on supported systems");
                    pos = 0;
                }
                let b = buf[pos];
                pos += 1;
                // 248 = 4 * 62: only bytes below it keep characters uniform.
                if b < 248 {
                    key.push(char::from(KEY_CHARS[usize::from(b % 62)]));
                }
            }
            key
        })
        .collect()
}

/// Reads a script's array reply field by field.
struct Reply(std::vec::IntoIter<Value>);

impl Reply {
    fn new(value: Value) -> Result<Self, StoreError> {
        match value {
            Value::Array(items) => Ok(Self(items.into_iter())),
            other => Err(unavailable(format!("unexpected script reply {other:?}"))),
        }
    }

    fn next(&mut self) -> Result<Value, StoreError> {
        self.0
            .next()
            .ok_or_else(|| unavailable("script reply too short"))
    }

    fn has_more(&self) -> bool {
        self.0.len() > 0
    }

    fn int(&mut self) -> Result<i64, StoreError> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unavailable("script reply: not an integer")),
            other => Err(unavailable(format!(
                "script reply: {other:?} is not an integer"
            ))),
        }
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        u64::try_from(self.int()?).map_err(|_| unavailable("script reply: negative number"))
    }

    fn text(&mut self) -> Result<String, StoreError> {
        match self.next()? {
            Value::BulkString(b) => {
                String::from_utf8(b).map_err(|_| unavailable("script reply: not UTF-8"))
            }
            Value::SimpleString(s) => Ok(s),
            Value::Int(n) => Ok(n.to_string()),
            other => Err(unavailable(format!("script reply: {other:?} is not text"))),
        }
    }

    fn ttl(&mut self) -> Result<Ttl, StoreError> {
        Ttl::from_millis(self.u64()?).ok_or_else(|| unavailable("stored TTL out of range"))
    }

    /// `{lease_ttl, keepalive_ttl, key_length, total, free}`.
    fn pool_state(&mut self) -> Result<(PoolSettings, PoolStats, Expired), StoreError> {
        let settings = PoolSettings {
            lease_ttl: self.ttl()?,
            keepalive_ttl: self.ttl()?,
            key_length: KeyLength::new(self.u64()?)
                .ok_or_else(|| unavailable("stored key length out of range"))?,
        };
        let total = self.u64()?;
        let free = self.u64()?;
        let stats = PoolStats {
            total,
            free,
            leased: total.saturating_sub(free),
        };
        let expired = Expired {
            keys: self.u64()?,
            leases: self.u64()?,
        };
        Ok((settings, stats, expired))
    }

    /// `{key, created_at, alive_until, lease_id, leased_until}`.
    fn key_view(&mut self) -> Result<KeyView, StoreError> {
        let key = self.text()?;
        let created_at = Timestamp::from_millis(self.u64()?);
        let alive_until = Timestamp::from_millis(self.u64()?);
        let id = self.u64()?;
        let until = Timestamp::from_millis(self.u64()?);
        Ok(KeyView {
            key,
            created_at,
            alive_until,
            lease: (id != 0).then_some(Lease { id, until }),
        })
    }

    /// `{alphabet, length, secret, issued, activated}` as a codec and
    /// counts.
    fn keyspace_def(&mut self) -> Result<(TokenCodec, u128, u128), StoreError> {
        let alphabet = self.text()?;
        let length: u32 = self
            .text()?
            .parse()
            .map_err(|_| unavailable("stored keyspace length is not a number"))?;
        let secret = secret_from_hex(&self.text()?)
            .ok_or_else(|| unavailable("stored keyspace secret is not 64 hex digits"))?;
        let issued = u128::from(self.u64()?);
        let activated = u128::from(self.u64()?);
        let spec = KeyspaceSpec::new(&alphabet, length)
            .map_err(|e| unavailable(format!("stored keyspace definition: {e}")))?;
        Ok((TokenCodec::new(spec, secret), issued, activated))
    }
}

/// The pool or keyspace names of an array reply; anything that is not a
/// valid name (written by hand into Redis) is skipped.
fn names_of(value: Value) -> Result<Vec<Name>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items
            .into_iter()
            .filter_map(|v| match v {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                _ => None,
            })
            .filter_map(|n| Name::parse(&n).ok())
            .collect()),
        other => Err(unavailable(format!("unexpected name list {other:?}"))),
    }
}

fn pool_error(code: i64) -> StoreError {
    match code {
        pool_code::KEY_NOT_FOUND => PoolError::KeyNotFound.into(),
        pool_code::NOT_LEASED => PoolError::NotLeased.into(),
        pool_code::LEASE_MISMATCH => PoolError::LeaseMismatch.into(),
        pool_code::NO_FREE_KEY => PoolError::NoFreeKey.into(),
        pool_code::POOL_NOT_FOUND => StoreError::PoolNotFound,
        other => unavailable(format!("unknown pool script code {other}")),
    }
}

fn keyspace_view(name: &Name, codec: &TokenCodec, issued: u128, activated: u128) -> KeyspaceView {
    let capacity = codec.spec().capacity();
    KeyspaceView {
        name: name.clone(),
        spec: codec.spec().clone(),
        info: KeyspaceInfo {
            capacity,
            issued,
            activated,
            remaining: capacity.saturating_sub(issued),
        },
    }
}

/// The start-up error naming only the values that differ.
fn keyspace_changed(have: &KeyspaceSpec, want: &KeyspaceSpec, issued: u128) -> RedisOpenError {
    let (mut have_text, mut want_text, mut flags) = (Vec::new(), Vec::new(), Vec::new());
    if have.alphabet() != want.alphabet() {
        have_text.push(format!("alphabet {:?}", have.alphabet().as_str()));
        want_text.push(format!("alphabet {:?}", want.alphabet().as_str()));
        flags.push(format!("--token-alphabet {:?}", have.alphabet().as_str()));
    }
    if have.length() != want.length() {
        have_text.push(format!("length {}", have.length()));
        want_text.push(format!("length {}", want.length()));
        flags.push(format!("--token-length {}", have.length()));
    }
    RedisOpenError::DefaultKeyspaceChanged {
        issued,
        have: have_text.join(" and "),
        want: want_text.join(" and "),
        have_flags: flags.join(" "),
    }
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
        let connector = match &settings.target {
            RedisTarget::Single(url) => {
                let address = |source| RedisOpenError::Address {
                    target: url.clone(),
                    source,
                };
                let client = redis::Client::open(url.as_str()).map_err(address)?;
                // One attempt per request: while Redis is down requests
                // fail fast (503) rather than queue behind reconnect waits;
                // each failed request starts the next attempt.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Connector::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(address)?,
                )
            }
            RedisTarget::Cluster(nodes) => {
                let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
                let client = ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()
                    .map_err(|source| RedisOpenError::Address {
                        target: nodes.join(","),
                        source,
                    })?;
                Connector::Cluster(Box::new(ClusterConnector {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                }))
            }
        };
        let inner = Arc::new(Inner {
            connector,
            scripts: Scripts::new(),
            pool_defaults: settings.pool_defaults,
            default_keyspace: settings.default_keyspace,
            time: settings.time,
            ready: AtomicBool::new(false),
            flags_applied: AtomicBool::new(false),
            init: tokio::sync::Mutex::new(()),
            codecs: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
            reap_backoff: Mutex::new(ReapBackoff::default()),
            sweep: Mutex::new(Sweep::default()),
            limits: settings.limits,
            retrying: AtomicBool::new(false),
        });
        let retry = match inner.ensure_ready_typed().await {
            Ok(()) => None,
            Err(InitError::Open(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %error_chain(&e),
                    retry_in = ?BACKOFF_MIN,
                    "Redis store not ready; serving 503 until it is"
                );
                inner.retrying.store(true, Ordering::Release);
                Some(tokio::spawn(retry_until_ready(Arc::downgrade(&inner))))
            }
        };
        Ok(Self { inner, retry })
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some errors already print their source; say it once.
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Retries initialisation with backoff until it succeeds or the store is
/// dropped (the store aborts this task on drop, and the weak reference
/// ends it too).
async fn retry_until_ready(inner: Weak<Inner>) {
    let mut pause = BACKOFF_MIN;
    loop {
        tokio::time::sleep(pause).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        pause = (pause * 2).min(BACKOFF_MAX);
        match inner.ensure_ready_typed().await {
            Ok(()) => {
                inner.retrying.store(false, Ordering::Release);
                tracing::info!("Redis store ready");
                return;
            }
            Err(InitError::Open(e)) => {
                tracing::error!(error = %e, retry_in = ?pause, "Redis store refuses to serve");
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), retry_in = ?pause, "Redis store not ready");
            }
        }
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

    async fn handle(&self) -> Result<Handle, RedisError> {
        match &self.connector {
            Connector::Single(manager) => Ok(Handle::Single(manager.clone())),
            Connector::Cluster(cluster) => {
                let conn = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                Ok(Handle::Cluster(conn.clone()))
            }
        }
    }

    /// Maps a Redis error, and forgets what Redis may have lost meanwhile.
    fn failed(&self, e: RedisError) -> StoreError {
        self.ready.store(false, Ordering::Release);
        lock(&self.registered).clear();
        StoreError::Unavailable(Box::new(e))
    }

    async fn eval_raw(
        &self,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<Value, RedisError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg.as_str());
        }
        self.handle().await?.eval(&invocation).await
    }

    /// Runs `script` with `KEYS[1] = key` (the routing key) and `args`.
    async fn eval(&self, script: &Script, key: &str, args: &[String]) -> Result<Reply, StoreError> {
        let value = self
            .eval_raw(script, key, args)
            .await
            .map_err(|e| self.failed(e))?;
        Reply::new(value)
    }

    async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.ensure_ready_typed()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    async fn ensure_ready_typed(&self) -> Result<(), InitError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _init = self.init.lock().await;
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.init().await?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Ensures the `default` pool and keyspace exist. The first time, the
    /// pool takes this server's settings and the keyspace is redefined if
    /// nothing was issued; afterwards both are only created if missing.
    async fn init(&self) -> Result<(), InitError> {
        let first = !self.flags_applied.load(Ordering::Acquire);
        let default = Name::default_name();
        let mut handle = self.handle().await.map_err(InitError::Redis)?;
        handle
            .query(redis::cmd("SADD").arg(REGISTRY).arg(default.as_str()))
            .await
            .map_err(InitError::Redis)?;
        let patch = if first {
            PoolPatch {
                lease_ttl: Some(self.pool_defaults.lease_ttl),
                keepalive_ttl: Some(self.pool_defaults.keepalive_ttl),
                key_length: Some(self.pool_defaults.key_length),
            }
        } else {
            PoolPatch::default()
        };
        self.eval_raw(
            &self.scripts.pool_put,
            &format!("{}:meta", pool_prefix(&default)),
            &self.pool_put_args(&default, patch),
        )
        .await
        .map_err(InitError::Redis)?;

        let want = &self.default_keyspace;
        let value = self
            .eval_raw(
                &self.scripts.keyspace_put,
                &format!("{}:def", keyspace_prefix(&default)),
                &keyspace_put_args(&default, want, first),
            )
            .await
            .map_err(InitError::Redis)?;
        let reply = (|| {
            let mut reply = Reply::new(value)?;
            let code = reply.int()?;
            let (codec, issued, _) = reply.keyspace_def()?;
            Ok::<_, StoreError>((code, codec, issued))
        })();
        let (code, codec, issued) = reply.map_err(|e| InitError::Reply(e.to_string()))?;
        if code == 2 && first {
            return Err(keyspace_changed(codec.spec(), want, issued).into());
        }
        lock(&self.codecs).insert(default.clone(), codec);
        let mut handle = self.handle().await.map_err(InitError::Redis)?;
        handle
            .query(redis::cmd("SADD").arg(KEYSPACES).arg(default.as_str()))
            .await
            .map_err(InitError::Redis)?;
        self.flags_applied.store(true, Ordering::Release);
        Ok(())
    }

    fn pool_put_args(&self, pool: &Name, patch: PoolPatch) -> Vec<String> {
        let d = self.pool_defaults;
        vec![
            pool_prefix(pool),
            self.now_arg(),
            d.lease_ttl.as_millis().to_string(),
            d.keepalive_ttl.as_millis().to_string(),
            d.key_length.get().to_string(),
            patch
                .lease_ttl
                .map_or_else(String::new, |t| t.as_millis().to_string()),
            patch
                .keepalive_ttl
                .map_or_else(String::new, |t| t.as_millis().to_string()),
            patch
                .key_length
                .map_or_else(String::new, |l| l.get().to_string()),
        ]
    }

    /// Adds `pool` to the registry, once per process (and again after an
    /// error), refused past `--max-pools`. Done before the pool can exist,
    /// so a pool is never missing from it and the count is never over.
    async fn register(&self, pool: &Name) -> Result<(), StoreError> {
        if lock(&self.registered).contains(pool) {
            return Ok(());
        }
        self.reserve(REGISTRY, pool, Limit::Pools).await?;
        lock(&self.registered).insert(pool.clone());
        Ok(())
    }

    /// Adds a keyspace to its registry before it is created, refused past
    /// `--max-keyspaces`.
    async fn register_keyspace(&self, keyspace: &Name) -> Result<(), StoreError> {
        self.reserve(KEYSPACES, keyspace, Limit::Keyspaces).await
    }

    /// `name` into the name set `set` unless it is full: one script,
    /// O(1) (`SISMEMBER`, `SCARD`, `SADD`).
    async fn reserve(&self, set: &str, name: &Name, limit: Limit) -> Result<(), StoreError> {
        let max = match limit {
            Limit::Pools => self.limits.max_pools,
            _ => self.limits.max_keyspaces,
        };
        let mut invocation = self.scripts.reserve.key(set);
        invocation.arg(name.as_str()).arg(max);
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        match handle.eval(&invocation).await.map_err(|e| self.failed(e))? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(self.limits.reached(limit)),
            other => Err(unavailable(format!("unexpected reserve reply {other:?}"))),
        }
    }

    /// Brings `pool` forward in the due index to `score` (ms), when a
    /// script said its earliest deadline moved before the recorded one:
    /// `ZADD LT`, O(log pools). `score` empty: nothing to do.
    async fn index_due(&self, pool: &Name, score: &str) -> Result<(), StoreError> {
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
    /// view, and applies it.
    async fn index_from(&self, pool: &Name, reply: &mut Reply) -> Result<(), StoreError> {
        if reply.has_more() {
            let score = reply.text()?;
            self.index_due(pool, &score).await?;
        }
        Ok(())
    }

    /// Runs a key script (`release`, `keepalive`, `get`) and reads its key.
    async fn key_op(
        &self,
        script: &Script,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        self.ensure_ready().await?;
        let prefix = pool_prefix(pool);
        let args = [
            prefix.clone(),
            self.now_arg(),
            key.to_owned(),
            lease_id.map_or_else(String::new, |id| id.to_string()),
        ];
        let mut reply = self.eval(script, &format!("{prefix}:meta"), &args).await?;
        match reply.int()? {
            pool_code::OK => {
                let view = reply.key_view()?;
                self.index_from(pool, &mut reply).await?;
                Ok(view)
            }
            code => Err(pool_error(code)),
        }
    }

    /// The codec of `keyspace`, from the cache or Redis.
    async fn codec(&self, keyspace: &Name) -> Result<TokenCodec, StoreError> {
        if let Some(codec) = lock(&self.codecs).get(keyspace) {
            return Ok(codec.clone());
        }
        Ok(self.keyspace_info(keyspace).await?.0)
    }

    /// The definition and counts of `keyspace`, refreshing the cache.
    async fn keyspace_info(&self, keyspace: &Name) -> Result<(TokenCodec, u128, u128), StoreError> {
        self.ensure_ready().await?;
        let prefix = keyspace_prefix(keyspace);
        let mut reply = self
            .eval(
                &self.scripts.keyspace_info,
                &format!("{prefix}:def"),
                &[prefix],
            )
            .await?;
        match reply.int()? {
            keyspace_code::OK => {
                let (codec, issued, activated) = reply.keyspace_def()?;
                lock(&self.codecs).insert(keyspace.clone(), codec.clone());
                Ok((codec, issued, activated))
            }
            keyspace_code::NOT_FOUND => Err(StoreError::KeyspaceNotFound),
            other => Err(unavailable(format!("unknown keyspace script code {other}"))),
        }
    }

    /// Runs a token script with the cached codec's secret; on `STALE` (or
    /// a token the cached codec refuses) the cache is refreshed and the
    /// call made once more. `extra` gives the script's further arguments,
    /// `f` maps an `OK` reply.
    async fn token_op<T>(
        &self,
        keyspace: &Name,
        script: &Script,
        extra: impl Fn(&TokenCodec) -> Result<Vec<String>, StoreError>,
        f: impl Fn(&TokenCodec, &mut Reply) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.ensure_ready().await?;
        let prefix = keyspace_prefix(keyspace);
        let routing = format!("{prefix}:def");
        for attempt in 0..2 {
            let codec = self.codec(keyspace).await?;
            let mut args = vec![prefix.clone(), to_hex(codec.secret().as_bytes())];
            match extra(&codec) {
                Ok(more) => args.extend(more),
                // A stale cached codec could misjudge the token: judge it
                // again by the stored definition.
                Err(_) if attempt == 0 => {
                    lock(&self.codecs).remove(keyspace);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut reply = self.eval(script, &routing, &args).await?;
            match reply.int()? {
                keyspace_code::OK => return f(&codec, &mut reply),
                keyspace_code::STALE => {
                    lock(&self.codecs).remove(keyspace);
                }
                keyspace_code::NOT_FOUND => {
                    lock(&self.codecs).remove(keyspace);
                    return Err(StoreError::KeyspaceNotFound);
                }
                keyspace_code::EXHAUSTED => return Err(KeyspaceError::Exhausted.into()),
                keyspace_code::NOT_ISSUED => return Err(KeyspaceError::NotIssued.into()),
                keyspace_code::ALREADY => return Err(KeyspaceError::AlreadyActivated.into()),
                other => return Err(unavailable(format!("unknown keyspace script code {other}"))),
            }
        }
        Err(unavailable(
            "the keyspace definition changed during the call; retry",
        ))
    }

    /// One reaper pass: the pools the due index says are due (at most
    /// [`REAP_POOLS`]), plus one pool of the registry sweep. O(1) commands
    /// when nothing is due, whatever the number of pools.
    async fn expire_all(&self) -> Result<Expired, StoreError> {
        self.ensure_ready().await?;
        let mut invocation = self.scripts.due.key(DUE_INDEX);
        invocation.arg(self.now_arg()).arg(REAP_POOLS);
        let mut handle = self.handle().await.map_err(|e| self.failed(e))?;
        let due = names_of(handle.eval(&invocation).await.map_err(|e| self.failed(e))?)?;
        let mut total = Expired::default();
        for name in due {
            total.add(self.expire_pool(&name).await?);
        }
        if let Some(name) = self.next_swept().await? {
            total.add(self.expire_pool(&name).await?);
        }
        Ok(total)
    }

    /// Expires one pool's due entries (scripts of at most [`REAP_STEP`]
    /// entries, at most [`REAP_STEPS_PER_POOL`] of them), then sets its due
    /// index score to its next deadline, and lowers it again if a script
    /// brought the deadline forward in between (see the module docs).
    async fn expire_pool(&self, name: &Name) -> Result<Expired, StoreError> {
        let prefix = pool_prefix(name);
        let routing = format!("{prefix}:meta");
        let mut total = Expired::default();
        let mut next = String::new();
        for _ in 0..REAP_STEPS_PER_POOL {
            let args = [prefix.clone(), self.now_arg(), REAP_STEP.to_string()];
            let mut reply = self.eval(&self.scripts.expire, &routing, &args).await?;
            let step = Expired {
                keys: reply.u64()?,
                leases: reply.u64()?,
            };
            next = reply.text()?;
            total.add(step);
            if step.keys + step.leases < REAP_STEP {
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
        let recorded = handle
            .query(redis::cmd("HGET").arg(&routing).arg("due_at"))
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
    /// `SSCAN` page, reading the next page when they are used up (one
    /// `SSCAN` of [`SCAN_COUNT`] every so many calls).
    async fn next_swept(&self) -> Result<Option<Name>, StoreError> {
        let cursor = {
            let mut sweep = lock(&self.sweep);
            if let Some(name) = sweep.pending.pop() {
                return Ok(Some(name));
            }
            sweep.cursor
        };
        let (cursor, mut names) = self.scan(REGISTRY, cursor).await?;
        let first = names.pop();
        let mut sweep = lock(&self.sweep);
        sweep.cursor = cursor;
        sweep.pending = names;
        Ok(first)
    }

    /// One `SSCAN` page of a name set: the next cursor and the names.
    async fn scan(&self, set: &str, cursor: u64) -> Result<(u64, Vec<Name>), StoreError> {
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
    async fn first_names(&self, set: &str) -> Result<Vec<Name>, StoreError> {
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
    async fn count(&self, set: &str) -> Result<u64, StoreError> {
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

fn keyspace_put_args(
    keyspace: &Name,
    spec: &KeyspaceSpec,
    replace_if_unissued: bool,
) -> Vec<String> {
    vec![
        keyspace_prefix(keyspace),
        spec.alphabet().as_str().to_owned(),
        spec.length().to_string(),
        to_hex(Secret::generate().as_bytes()),
        if replace_if_unissued { "1" } else { "0" }.to_owned(),
    ]
}

#[async_trait]
impl Store for RedisStore {
    /// One script: O(1) plus the bounded lazy expiry; registers a new pool
    /// name first (one `SADD`, once per process).
    async fn put_pool(
        &self,
        pool: &Name,
        patch: PoolPatch,
    ) -> Result<(PoolInfo, Upsert), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        inner.register(pool).await?;
        let prefix = pool_prefix(pool);
        let mut reply = inner
            .eval(
                &inner.scripts.pool_put,
                &format!("{prefix}:meta"),
                &inner.pool_put_args(pool, patch),
            )
            .await?;
        let upsert = if reply.int()? == 1 {
            Upsert::Created
        } else {
            Upsert::Existed
        };
        let (settings, stats, expired) = reply.pool_state()?;
        Ok((
            PoolInfo {
                name: pool.clone(),
                settings,
                stats,
                expired,
            },
            upsert,
        ))
    }

    /// One script: O(1) (`ZCARD`, `SCARD`) plus the bounded lazy expiry.
    async fn pool_info(&self, pool: &Name) -> Result<PoolInfo, StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let prefix = pool_prefix(pool);
        let mut reply = inner
            .eval(
                &inner.scripts.pool_info,
                &format!("{prefix}:meta"),
                &[prefix.clone(), inner.now_arg()],
            )
            .await?;
        match reply.int()? {
            pool_code::OK => {
                let (settings, stats, expired) = reply.pool_state()?;
                Ok(PoolInfo {
                    name: pool.clone(),
                    settings,
                    stats,
                    expired,
                })
            }
            code => Err(pool_error(code)),
        }
    }

    /// One script: O(count log n). Candidates come from the OS CSPRNG; the
    /// astronomically rare one that is already a live key is replaced by
    /// another call. The script refuses the whole call if the pool would
    /// hold more than `--max-keys-per-pool` keys; a count over the limit
    /// is refused before the pool is registered, so it creates nothing.
    async fn generate_keys(&self, pool: &Name, count: usize) -> Result<Vec<KeyView>, StoreError> {
        let inner = &self.inner;
        let max = inner.limits.max_keys_per_pool;
        if u64::try_from(count).map_or(true, |n| n > max) {
            return Err(inner.limits.reached(Limit::KeysPerPool));
        }
        inner.ensure_ready().await?;
        inner.register(pool).await?;
        let prefix = pool_prefix(pool);
        let routing = format!("{prefix}:meta");
        let d = inner.pool_defaults;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..8 {
            if keys.len() == count {
                return Ok(keys);
            }
            let mut args = vec![
                prefix.clone(),
                inner.now_arg(),
                d.lease_ttl.as_millis().to_string(),
                d.keepalive_ttl.as_millis().to_string(),
                d.key_length.get().to_string(),
                max.to_string(),
            ];
            args.extend(candidates(count - keys.len()));
            let mut reply = inner.eval(&inner.scripts.generate, &routing, &args).await?;
            match reply.int()? {
                pool_code::OK => {}
                pool_code::KEY_LIMIT => return Err(inner.limits.reached(Limit::KeysPerPool)),
                code => return Err(pool_error(code)),
            }
            let score = reply.text()?;
            inner.index_due(pool, &score).await?;
            let created_at = Timestamp::from_millis(reply.u64()?);
            let alive_until = Timestamp::from_millis(reply.u64()?);
            while reply.has_more() {
                keys.push(KeyView {
                    key: reply.text()?,
                    created_at,
                    alive_until,
                    lease: None,
                });
            }
        }
        if keys.len() == count {
            Ok(keys)
        } else {
            Err(unavailable("could not generate unique keys"))
        }
    }

    /// One script: O(log n) (`SRANDMEMBER`, `ZADD`), plus O(log n) for each
    /// due entry met on the way.
    async fn lease_key(&self, pool: &Name) -> Result<KeyView, StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let prefix = pool_prefix(pool);
        let mut reply = inner
            .eval(
                &inner.scripts.lease,
                &format!("{prefix}:meta"),
                &[prefix.clone(), inner.now_arg()],
            )
            .await?;
        match reply.int()? {
            pool_code::OK => {
                let view = reply.key_view()?;
                inner.index_from(pool, &mut reply).await?;
                Ok(view)
            }
            code => Err(pool_error(code)),
        }
    }

    /// One script: O(log n).
    async fn release_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        let inner = &self.inner;
        inner
            .key_op(&inner.scripts.release, pool, key, lease_id)
            .await
    }

    /// One script: O(log n).
    async fn keepalive_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError> {
        let inner = &self.inner;
        inner
            .key_op(&inner.scripts.keepalive, pool, key, lease_id)
            .await
    }

    /// One script: O(1) plus the bounded lazy expiry.
    async fn get_key(&self, pool: &Name, key: &str) -> Result<KeyView, StoreError> {
        let inner = &self.inner;
        inner.key_op(&inner.scripts.get, pool, key, None).await
    }

    /// One script: O(log n).
    async fn delete_key(&self, pool: &Name, key: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        let prefix = pool_prefix(pool);
        let args = [prefix.clone(), inner.now_arg(), key.to_owned()];
        let mut reply = inner
            .eval(&inner.scripts.delete, &format!("{prefix}:meta"), &args)
            .await?;
        match reply.int()? {
            pool_code::OK => Ok(()),
            code => Err(pool_error(code)),
        }
    }

    /// One script: O(1); the first creator's definition and secret win.
    async fn put_keyspace(
        &self,
        keyspace: &Name,
        spec: KeyspaceSpec,
    ) -> Result<(KeyspaceView, Upsert), StoreError> {
        let inner = &self.inner;
        inner.ensure_ready().await?;
        inner.register_keyspace(keyspace).await?;
        let prefix = keyspace_prefix(keyspace);
        let mut reply = inner
            .eval(
                &inner.scripts.keyspace_put,
                &format!("{prefix}:def"),
                &keyspace_put_args(keyspace, &spec, false),
            )
            .await?;
        let code = reply.int()?;
        let (codec, issued, activated) = reply.keyspace_def()?;
        let upsert = match code {
            0 => Upsert::Created,
            1 => Upsert::Existed,
            _ => return Err(StoreError::KeyspaceImmutable),
        };
        let view = keyspace_view(keyspace, &codec, issued, activated);
        lock(&inner.codecs).insert(keyspace.clone(), codec);
        Ok((view, upsert))
    }

    /// One script: O(1) (`GET`, `HLEN`).
    async fn keyspace_info(&self, keyspace: &Name) -> Result<KeyspaceView, StoreError> {
        let (codec, issued, activated) = self.inner.keyspace_info(keyspace).await?;
        Ok(keyspace_view(keyspace, &codec, issued, activated))
    }

    /// One script (`INCR` below the capacity): O(1), then one keyed
    /// permutation here. On Redis a keyspace issues at most 2^53 tokens,
    /// where Lua's doubles stop counting exactly.
    async fn issue_token(&self, keyspace: &Name) -> Result<Issued, StoreError> {
        self.inner
            .token_op(
                keyspace,
                &self.inner.scripts.issue,
                |codec| Ok(vec![codec.spec().capacity().min(MAX_ISSUED).to_string()]),
                |codec, reply| {
                    let index = u128::from(reply.u64()?);
                    let capacity = codec.spec().capacity();
                    Ok(Issued {
                        token: codec.encode(index),
                        index,
                        remaining: capacity - index - 1,
                    })
                },
            )
            .await
    }

    /// One script: O(1) after decoding the token here.
    async fn token_status(&self, keyspace: &Name, token: &str) -> Result<TokenStatus, StoreError> {
        self.inner
            .token_op(
                keyspace,
                &self.inner.scripts.token_status,
                |codec| Ok(vec![codec.decode(token)?.to_string(), token.to_owned()]),
                |_, reply| {
                    let activated_at = if reply.has_more() {
                        Some(Timestamp::from_millis(reply.u64()?))
                    } else {
                        None
                    };
                    Ok(TokenStatus {
                        token: token.to_owned(),
                        activated_at,
                    })
                },
            )
            .await
    }

    /// One script (`HSETNX`): O(1) after decoding the token here.
    async fn activate_token(
        &self,
        keyspace: &Name,
        token: &str,
    ) -> Result<TokenStatus, StoreError> {
        let now = self.inner.now_arg();
        self.inner
            .token_op(
                keyspace,
                &self.inner.scripts.activate,
                |codec| {
                    Ok(vec![
                        codec.decode(token)?.to_string(),
                        token.to_owned(),
                        now.clone(),
                    ])
                },
                |_, reply| {
                    Ok(TokenStatus {
                        token: token.to_owned(),
                        activated_at: Some(Timestamp::from_millis(reply.u64()?)),
                    })
                },
            )
            .await
    }

    /// For each pool the due index says is due (at most 1000 per call) and
    /// one pool of the registry sweep, scripts of at most 1000 due entries
    /// each (O(m log n) for m entries), at most 64 per pool per call, and
    /// three commands to re-index the pool. After
    /// a failure, calls are skipped for a pause doubling from 250 ms to 8 s,
    /// so an outage is reported once per step, and while the start-up retry
    /// task runs (it reports); lazy expiry keeps answers exact meanwhile.
    async fn expire_due(&self) -> Result<Expired, StoreError> {
        let inner = &self.inner;
        let paused = lock(&inner.reap_backoff)
            .paused_until
            .is_some_and(|t| Instant::now() < t);
        if paused || inner.retrying.load(Ordering::Acquire) {
            return Ok(Expired::default());
        }
        let result = inner.expire_all().await;
        let mut backoff = lock(&inner.reap_backoff);
        match &result {
            Ok(_) => *backoff = ReapBackoff::default(),
            Err(_) => {
                backoff.pause =
                    (backoff.pause * 2).clamp(Duration::from_millis(250), Duration::from_secs(8));
                backoff.paused_until = Some(Instant::now() + backoff.pause);
            }
        }
        result
    }

    /// `SCARD` of both registries, a few `SSCAN` pages, then one script
    /// per named pool and keyspace: O(`SNAPSHOT_NAMED`) calls whatever the
    /// number of pools. No key totals: they would take a call per pool.
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
        Ok(snapshot)
    }

    /// A real `PING` (after ensuring the defaults exist).
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

    /// Nothing to wait for: Redis applied each change before answering;
    /// how durable it is then is Redis's persistence setting
    /// (`appendfsync`).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
