//! The Lua scripts, one per operation, and everything Rust and Lua share:
//! the reply codes, the bounds, the names of each script's arguments.
//!
//! A script's source is built once, at start-up, from four parts:
//!
//! 1. the prelude, generated here: `local NAME = value` for every constant
//!    in [`constants`] and [`NAMES`] and every [`Code`], then the one clock head
//!    (`lua/clock.lua`, `clock(arg)`: the passed time or Redis `TIME`);
//! 2. `local ARG = { name = ARGV[i], … }`, generated from the fields of the
//!    script's argument struct below, so a body reads `ARG.lease_id`, never
//!    `ARGV[4]`;
//! 3. the head of its family (`lua/pool_common.lua` or
//!    `lua/keyspace_common.lua`), whose own arguments are `ARG.prefix` and
//!    `ARG.now`, then the idempotency helpers (`lua/idempotency.lua`,
//!    arguments `ARG.idem_key`, `ARG.idem_digest`, `ARG.idem_ttl_ms`);
//! 4. the body, `lua/OPERATION.lua`, wrapped in a function: a recorded
//!    reply for the idempotency key answers instead of it, and its own
//!    reply, on success, is recorded in the same script.
//!
//! Leases and releases have no script of their own: their bodies are
//! functions of the batch script (`batch_source`, `lua/batch.lua`), which
//! runs the calls `batch.rs` gathers for one pool.
//!
//! The argument structs are the only place a call's ARGV is built: one
//! struct per script, one field per argument, in ARGV order.

use std::fmt::Write;
use std::sync::Arc;

use redis::Script;

use super::unavailable;
use crate::core::{KeyLength, KeyspaceError, Name, Pool, PoolError, Recovery, Secret, Ttl};
use crate::store::{Idem, Limit, Limits, REAP_STEP, StoreError};

/// Length of the random key candidates sent to the generate script, which
/// cuts them to the pool's key length (at most 128).
pub(super) const CANDIDATE_LEN: usize = 128;

/// The numbers both sides use, handed to every script as `local NAME =
/// value`.
fn constants() -> [(&'static str, u64); 8] {
    let defaults = Recovery::default();
    [
        // Most due entries a pool script expires before its own work: the
        // local engine's bound, so a burst of deadlines never lands on one call.
        // `touch` keeps the key a script works on exact whatever it leaves.
        ("LAZY_EXPIRY_BOUND", Pool::LAZY_STEP as u64),
        // Most due entries one reaper step (one `expire` call) handles.
        ("REAP_STEP", REAP_STEP as u64),
        ("CANDIDATE_LEN", CANDIDATE_LEN as u64),
        // The recovery settings of a pool an older keyward made, which has
        // none stored: the core's defaults.
        ("DEFAULT_COOLDOWN_MS", defaults.cooldown.as_millis()),
        (
            "DEFAULT_MAX_FAILURES",
            u64::from(defaults.max_failures.get()),
        ),
        ("DEFAULT_QUARANTINE_MS", defaults.quarantine.as_millis()),
        // Where quarantine doubling stops (the core's cap).
        ("MAX_QUARANTINE_MS", Recovery::MAX_QUARANTINE_MS),
        // Most expired idempotency records one call removes.
        ("IDEM_POP", 16),
    ]
}

/// Suffix of a pool's meta hash, `{kw:p:NAME}:meta`: the key pool calls
/// are routed by.
const POOL_META: &str = ":meta";
/// Suffix of a keyspace's definition hash, `{kw:ks:NAME}:def`.
const KEYSPACE_DEF: &str = ":def";
/// Field of a pool's meta hash holding the due index score keyward was
/// last asked to set (see the module docs of `redis`).
pub(super) const DUE_AT: &str = "due_at";

/// Suffix of a pool's generation counter, `{kw:p:NAME}:gen`: how many
/// times a pool of this name was deleted (absent: never).
const POOL_GEN: &str = ":gen";
/// Suffix of a deleted generation's graveyard, `{kw:p:NAME}:gone:GEN`:
/// its live keys, whose hashes are still to be deleted.
const POOL_GONE: &str = ":gone:";
/// Suffix of the set of a pool's generations with a graveyard.
pub(super) const POOL_GONES: &str = ":gones";

/// Suffix of a pool's waiting marker, `{kw:p:NAME}:waiting`: set (with
/// a TTL, refreshed) by every process with waiting leases for the pool;
/// the scripts that free a key publish a wake-up only while it exists.
pub(super) const POOL_WAITING: &str = ":waiting";
/// Suffix of a pool's wake-up channel, `{kw:p:NAME}:wake` (plain
/// `PUBLISH`: see `waiting.rs` for why not sharded).
pub(super) const POOL_WAKE: &str = ":wake";

/// The layout of a pool's keys this keyward writes, in its meta hash
/// (`layout`): pools without it were made by an older keyward and are
/// brought to it in bounded steps by the reaper (`expire.lua`).
const LAYOUT: &str = "2";

/// The names both sides use, handed to every script as `local NAME =
/// 'value'`.
const NAMES: [(&str, &str); 9] = [
    ("LAYOUT", LAYOUT),
    ("POOL_META", POOL_META),
    ("KEYSPACE_DEF", KEYSPACE_DEF),
    ("DUE_AT", DUE_AT),
    ("POOL_GEN", POOL_GEN),
    ("POOL_GONE", POOL_GONE),
    ("POOL_GONES", POOL_GONES),
    ("POOL_WAITING", POOL_WAITING),
    ("POOL_WAKE", POOL_WAKE),
];

/// The first element of every script reply that has one: how the call
/// went. The discriminants are the numbers on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Code {
    /// Done.
    Ok = 0,
    /// No live key by that name.
    KeyNotFound = 1,
    /// The key is not leased.
    NotLeased = 2,
    /// Another lease holds the key.
    LeaseMismatch = 3,
    /// No key can be leased.
    NoFreeKey = 4,
    /// No pool by that name.
    PoolNotFound = 5,
    /// The pool would hold more than `--max-keys-per-pool` keys.
    KeyLimit = 6,
    /// No keyspace by that name.
    KeyspaceNotFound = 7,
    /// The caller's keyspace secret is not the stored one: reload it.
    Stale = 8,
    /// Every token of the keyspace was issued.
    Exhausted = 9,
    /// The token was never issued.
    NotIssued = 10,
    /// The token was activated before.
    AlreadyActivated = 11,
    /// A put made the pool or keyspace.
    Created = 12,
    /// A put found the pool, or an identical keyspace.
    Existed = 13,
    /// A put found the keyspace with another definition.
    Differs = 14,
    /// A name set is at its limit.
    Full = 15,
    /// The idempotency key's recorded reply follows, encoded.
    Replayed = 16,
    /// The idempotency key was recorded for another request.
    IdemReused = 17,
    /// No record of the idempotency key (a peek).
    NoRecord = 18,
    /// The token was revoked.
    Revoked = 19,
    /// The token holds no activation with that fingerprint.
    ActivationNotFound = 20,
    /// No token was issued under that batch.
    BatchNotFound = 21,
}

impl Code {
    const ALL: [Self; 22] = [
        Self::Ok,
        Self::KeyNotFound,
        Self::NotLeased,
        Self::LeaseMismatch,
        Self::NoFreeKey,
        Self::PoolNotFound,
        Self::KeyLimit,
        Self::KeyspaceNotFound,
        Self::Stale,
        Self::Exhausted,
        Self::NotIssued,
        Self::AlreadyActivated,
        Self::Created,
        Self::Existed,
        Self::Differs,
        Self::Full,
        Self::Replayed,
        Self::IdemReused,
        Self::NoRecord,
        Self::Revoked,
        Self::ActivationNotFound,
        Self::BatchNotFound,
    ];

    /// The code sent as `n`, if any.
    pub(super) fn from_wire(n: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i64 == n)
    }

    /// Its name in Lua.
    fn lua_name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::KeyNotFound => "KEY_NOT_FOUND",
            Self::NotLeased => "NOT_LEASED",
            Self::LeaseMismatch => "LEASE_MISMATCH",
            Self::NoFreeKey => "NO_FREE_KEY",
            Self::PoolNotFound => "POOL_NOT_FOUND",
            Self::KeyLimit => "KEY_LIMIT",
            Self::KeyspaceNotFound => "KEYSPACE_NOT_FOUND",
            Self::Stale => "STALE",
            Self::Exhausted => "EXHAUSTED",
            Self::NotIssued => "NOT_ISSUED",
            Self::AlreadyActivated => "ALREADY_ACTIVATED",
            Self::Created => "CREATED",
            Self::Existed => "EXISTED",
            Self::Differs => "DIFFERS",
            Self::Full => "FULL",
            Self::Replayed => "REPLAYED",
            Self::IdemReused => "IDEM_REUSED",
            Self::NoRecord => "NO_RECORD",
            Self::Revoked => "REVOKED",
            Self::ActivationNotFound => "ACTIVATION_NOT_FOUND",
            Self::BatchNotFound => "BATCH_NOT_FOUND",
        }
    }

    /// The error a refusal stands for, or `None` for an answer the caller
    /// reads on (`Ok`, `Created`, `Stale`, …).
    pub(super) fn refusal(self, limits: &Limits) -> Option<StoreError> {
        Some(match self {
            Self::KeyNotFound => PoolError::KeyNotFound.into(),
            Self::NotLeased => PoolError::NotLeased.into(),
            Self::LeaseMismatch => PoolError::LeaseMismatch.into(),
            Self::NoFreeKey => StoreError::NoFreeKey { retry_after: None },
            Self::PoolNotFound => StoreError::PoolNotFound,
            Self::KeyLimit => limits.reached(Limit::KeysPerPool),
            Self::KeyspaceNotFound => StoreError::KeyspaceNotFound,
            Self::Exhausted => KeyspaceError::Exhausted.into(),
            Self::NotIssued => KeyspaceError::NotIssued.into(),
            Self::AlreadyActivated => KeyspaceError::AlreadyActivated.into(),
            Self::Revoked => KeyspaceError::Revoked.into(),
            Self::ActivationNotFound => KeyspaceError::ActivationNotFound.into(),
            Self::BatchNotFound => KeyspaceError::BatchNotFound.into(),
            Self::IdemReused => StoreError::IdempotencyKeyReused,
            Self::Ok
            | Self::Stale
            | Self::Created
            | Self::Existed
            | Self::Differs
            | Self::Full
            | Self::Replayed
            | Self::NoRecord => {
                return None;
            }
        })
    }
}

/// Which head a script has, and so which arguments come before its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// `pool_common.lua`; `prefix` and `now` first, routed to the pool.
    Pool,
    /// `keyspace_common.lua`; `prefix` and `now` first, routed to the
    /// keyspace.
    Keyspace,
    /// No head, no arguments before its own; the caller names `KEYS[1]`.
    Bare,
}

impl Family {
    /// The arguments the head reads, before the script's own.
    const HEAD_ARGS: [&'static str; 5] =
        ["prefix", "now", "idem_key", "idem_digest", "idem_ttl_ms"];

    /// The hash-tagged key prefix of `name`: every key of a pool or
    /// keyspace starts with it, so a script touches one cluster slot.
    pub(super) fn prefix(self, name: &Name) -> String {
        match self {
            Self::Pool => format!("{{kw:p:{name}}}"),
            Self::Keyspace => format!("{{kw:ks:{name}}}"),
            Self::Bare => String::new(),
        }
    }

    /// The key a call is routed by (`KEYS[1]`): the pool's meta hash or
    /// the keyspace's definition.
    pub(super) fn routing(self, prefix: &str) -> String {
        match self {
            Self::Pool => format!("{prefix}{POOL_META}"),
            Self::Keyspace => format!("{prefix}{KEYSPACE_DEF}"),
            Self::Bare => String::new(),
        }
    }
}

/// A value as one ARGV string.
trait Arg {
    fn arg(&self) -> String;
}

impl Arg for String {
    fn arg(&self) -> String {
        self.clone()
    }
}

impl Arg for &'static str {
    fn arg(&self) -> String {
        (*self).to_owned()
    }
}

impl Arg for u64 {
    fn arg(&self) -> String {
        self.to_string()
    }
}

impl Arg for u128 {
    fn arg(&self) -> String {
        self.to_string()
    }
}

impl Arg for u32 {
    fn arg(&self) -> String {
        self.to_string()
    }
}

impl Arg for bool {
    fn arg(&self) -> String {
        if *self { "1" } else { "0" }.to_owned()
    }
}

impl Arg for Ttl {
    /// Milliseconds.
    fn arg(&self) -> String {
        self.as_millis().to_string()
    }
}

impl Arg for KeyLength {
    fn arg(&self) -> String {
        self.get().to_string()
    }
}

impl<T: Arg> Arg for Option<T> {
    /// `""` for none.
    fn arg(&self) -> String {
        self.as_ref().map_or_else(String::new, Arg::arg)
    }
}

/// A script's arguments: which script, and how they become ARGV.
pub(super) trait Call {
    /// The script's head.
    const FAMILY: Family;
    /// The script's own argument names, in ARGV order (after the head's).
    const NAMES: &'static [&'static str];
    /// The operation, for error messages.
    const OPERATION: &'static str;
    /// The codes besides refusals the caller reads on.
    const ANSWERS: &'static [Code];
    /// The operation's name in the batch script, if it runs there (see
    /// `batch.rs`) instead of in a script of its own.
    const BATCH: Option<&'static str>;
    /// The compiled script.
    fn script(scripts: &Scripts) -> &Script;
    /// Appends the arguments to `argv`, in [`Call::NAMES`] order.
    fn push_args(&self, argv: &mut Vec<String>);
}

/// One argument struct and its [`Call`] impl, for the two macros below:
/// the field list is both the ARGV order and the names the Lua body reads;
/// `$script` is the field of [`Scripts`] the call runs.
macro_rules! call_struct {
    (
        $(#[$doc:meta])*
        $name:ident => $field:ident ($family:ident, [$($answer:ident),*], $batch:expr, $script:ident) {
            $( $(#[$fdoc:meta])* $arg:ident : $ty:ty ),*
        }
    ) => {
        $(#[$doc])*
        pub(super) struct $name {
            $( $(#[$fdoc])* pub(super) $arg: $ty, )*
        }

        impl Call for $name {
            const FAMILY: Family = Family::$family;
            const NAMES: &'static [&'static str] = &[$(stringify!($arg)),*];
            const OPERATION: &'static str = stringify!($field);
            const ANSWERS: &'static [Code] = &[$(Code::$answer),*];
            const BATCH: Option<&'static str> = $batch;

            fn script(scripts: &Scripts) -> &Script {
                &scripts.$script
            }

            #[allow(unused_variables, reason = "a script may take no arguments of its own")]
            fn push_args(&self, argv: &mut Vec<String>) {
                $( argv.push(Arg::arg(&self.$arg)); )*
            }
        }
    };
}

/// Declares one script's argument struct and its [`Call`] impl: the field
/// list is both the ARGV order and the names the Lua body reads.
macro_rules! script_args {
    ($(
        $(#[$doc:meta])*
        $name:ident => $field:ident ($family:ident, answers [$($answer:ident),*]) {
            $( $(#[$fdoc:meta])* $arg:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            call_struct! {
                $(#[$doc])*
                $name => $field ($family, [$($answer),*], None, $field) {
                    $( $(#[$fdoc])* $arg: $ty ),*
                }
            }
        )*

        /// The compiled scripts, one per operation, and the batch script
        /// of leases and releases.
        pub(super) struct Scripts {
            $( $field: Script, )*
            pub(super) batch: Arc<Script>,
        }

        impl Scripts {
            /// Builds every script's source (see the module docs).
            pub(super) fn new() -> Self {
                let prelude = prelude();
                Self {
                    $( $field: build::<$name>(
                        &prelude,
                        include_str!(concat!("lua/", stringify!($field), ".lua")),
                    ), )*
                    batch: Arc::new(Script::new(&batch_source(&prelude))),
                }
            }
        }
    };
}

script_args! {
    /// An idempotency peek on a pool: a recorded reply, or `NoRecord`.
    PeekPool => peek_pool (Pool, answers [NoRecord]) {}

    /// An idempotency peek on a keyspace: a recorded reply, or `NoRecord`.
    PeekKeyspace => peek_keyspace (Keyspace, answers [NoRecord]) {}

    /// Records a key leased for a waiting request under its idempotency
    /// key (the wrapper does the recording).
    ClaimKey => claim (Pool, answers [Ok]) {
        /// The key.
        key: String,
        /// Its lease.
        lease_id: u64,
    }

    /// `put_pool`: creates the pool with the defaults if absent, then sets
    /// the given settings.
    PutPool => pool_put (Pool, answers [Created, Existed]) {
        /// Lease TTL of a new pool.
        default_lease_ttl_ms: Ttl,
        /// Keep-alive TTL of a new pool.
        default_keepalive_ttl_ms: Ttl,
        /// Key length of a new pool.
        default_key_length: KeyLength,
        /// Cooldown of a new pool.
        default_cooldown_ms: Ttl,
        /// Failures before quarantine of a new pool.
        default_max_failures: u32,
        /// First quarantine of a new pool.
        default_quarantine_ms: Ttl,
        /// A new pool's keys need no keep-alive.
        default_no_keepalive: bool,
        /// New lease TTL, none to keep.
        lease_ttl_ms: Option<Ttl>,
        /// New keep-alive TTL, none to keep.
        keepalive_ttl_ms: Option<Ttl>,
        /// New key length, none to keep.
        key_length: Option<KeyLength>,
        /// New cooldown, none to keep.
        cooldown_ms: Option<Ttl>,
        /// New failures before quarantine, none to keep.
        max_failures: Option<u32>,
        /// New first quarantine, none to keep.
        quarantine_ms: Option<Ttl>,
        /// Keys without a keep-alive from now on (or again with one), none
        /// to keep.
        no_keepalive: Option<bool>,
    }

    /// `pool_info`: settings and counts.
    ReadPool => pool_info (Pool, answers [Ok]) {}

    /// `add_keys`: stores the generated candidates that are not live
    /// keys, or imports the given keys.
    AddKeys => add (Pool, answers [Ok]) {
        /// Lease TTL of a new pool.
        default_lease_ttl_ms: Ttl,
        /// Keep-alive TTL of a new pool.
        default_keepalive_ttl_ms: Ttl,
        /// Key length of a new pool.
        default_key_length: KeyLength,
        /// Cooldown of a new pool.
        default_cooldown_ms: Ttl,
        /// Failures before quarantine of a new pool.
        default_max_failures: u32,
        /// First quarantine of a new pool.
        default_quarantine_ms: Ttl,
        /// A new pool's keys need no keep-alive.
        default_no_keepalive: bool,
        /// Most live keys the pool may hold.
        max_keys: u64,
        /// `generate` or `import`.
        mode: &'static str,
        /// Generate: candidates of [`CANDIDATE_LEN`] characters, back to
        /// back; import: the keys, separated by single spaces.
        keys: String,
        /// How many keys `keys` holds.
        count: u64,
        /// Generate: how many keys to add (`keys` holds spares).
        want: u64,
        /// The labels of the new keys as [`super::reply::labels_text`]
        /// writes them, "" for none.
        labels: String,
    }

    /// `disable_key`.
    DisableKey => disable (Pool, answers [Ok]) {
        /// The key.
        key: String,
        /// Why, none for no reason.
        reason: Option<String>,
    }

    /// `enable_key`.
    EnableKey => enable (Pool, answers [Ok]) {
        /// The key.
        key: String,
    }

    /// `list_keys`: one page.
    ListKeys => list (Pool, answers [Ok]) {
        /// The state to list, "" for all.
        state: &'static str,
        /// The listing number the page starts after, none for the first.
        after: Option<u64>,
        /// Most keys.
        limit: u64,
    }

    /// `keepalive_key`.
    KeepaliveKey => keepalive (Pool, answers [Ok]) {
        /// The key.
        key: String,
        /// The current lease, to extend it too; none to leave leases alone.
        lease_id: Option<u64>,
    }

    /// `get_key`.
    GetKey => get (Pool, answers [Ok]) {
        /// The key.
        key: String,
    }

    /// `delete_key`.
    DeleteKey => delete (Pool, answers [Ok]) {
        /// The key.
        key: String,
    }

    /// One reaper step in one pool: at most `REAP_STEP` due entries.
    ExpireStep => expire (Pool, answers [Ok]) {}

    /// `delete_pool`: the name is free at once, the keys go to a graveyard.
    DropPool => drop_pool (Pool, answers [Ok]) {}

    /// One step of reclaiming a deleted pool's graveyards.
    Reclaim => reclaim (Pool, answers [Ok]) {}

    /// `put_keyspace`, first creator wins.
    PutKeyspace => keyspace_put (Keyspace, answers [Created, Existed, Differs]) {
        /// The alphabet.
        alphabet: String,
        /// Token length.
        length: u32,
        /// A fresh secret (hex), kept only if this call creates the keyspace.
        secret: String,
        /// Replace another definition while nothing is issued (the
        /// `default` keyspace at start-up).
        replace_if_unissued: bool,
        /// The preset and format (`KeyspaceSpec::shape_text`), none for
        /// bare tokens.
        shape: Option<String>,
        /// Slots per token; none keeps an existing keyspace's.
        max_activations: Option<u64>,
    }

    /// `keyspace_info`: definition and counts.
    ReadKeyspace => keyspace_info (Keyspace, answers [Ok]) {}

    /// `delete_keyspace`.
    DropKeyspace => drop_keyspace (Keyspace, answers [Ok]) {}

    /// `issue_token`: the next index.
    IssueToken => issue (Keyspace, answers [Ok, Stale]) {
        /// The caller's secret (hex).
        secret: String,
        /// Issue only below this: min(capacity, 2^53).
        limit: u128,
        /// How many tokens, all or nothing.
        count: u32,
        /// The batch they are filed under, if any.
        batch: Option<String>,
    }

    /// `token_status`.
    ReadToken => token_status (Keyspace, answers [Ok, Stale]) {
        /// The caller's secret (hex).
        secret: String,
        /// The token's index.
        index: u128,
        /// The token.
        token: String,
    }

    /// `activate_token`.
    ActivateToken => activate (Keyspace, answers [Ok, Stale]) {
        /// The caller's secret (hex).
        secret: String,
        /// The token's index.
        index: u128,
        /// The token.
        token: String,
        /// Who activates; none: a slot of its own.
        fingerprint: Option<String>,
    }

    /// `deactivate_token`.
    DeactivateToken => deactivate (Keyspace, answers [Ok, Stale]) {
        /// The caller's secret (hex).
        secret: String,
        /// The token's index.
        index: u128,
        /// The token.
        token: String,
        /// The slot to free.
        fingerprint: String,
    }

    /// `revoke_token`.
    RevokeToken => revoke (Keyspace, answers [Ok, Stale]) {
        /// The caller's secret (hex).
        secret: String,
        /// The token's index.
        index: u128,
        /// The token.
        token: String,
        /// Why, if given.
        reason: Option<String>,
    }

    /// `batch_info`.
    ReadBatch => batch_info (Keyspace, answers [Ok]) {
        /// The batch.
        batch: String,
    }

    /// Adds a name to a name set (`KEYS[1]`) unless it is full.
    Reserve => reserve (Bare, answers [Ok, Full]) {
        /// The name.
        name: String,
        /// Most names the set may hold.
        max: u64,
    }

    /// The pools of the due index (`KEYS[1]`) due by now; a bare list of
    /// names, no code.
    Due => due (Bare, answers []) {
        /// Now in ms, or "" for Redis `TIME`.
        now: String,
        /// Most names to return.
        limit: u64,
    }
}

/// Declares the argument struct and [`Call`] impl of an operation of the
/// batch script: its body is `lua/$field.lua`, one branch of that script.
macro_rules! batched_args {
    ($(
        $(#[$doc:meta])*
        $name:ident => $field:ident {
            $( $(#[$fdoc:meta])* $arg:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            call_struct! {
                $(#[$doc])*
                $name => $field (Pool, [Ok], Some(stringify!($field)), batch) {
                    $( $(#[$fdoc])* $arg: $ty ),*
                }
            }
        )*

        /// The operations of the batch script: name and body.
        const BATCHED: &[(&str, &str)] = &[
            $( (stringify!($field), include_str!(concat!("lua/", stringify!($field), ".lua"))), )*
        ];
    };
}

batched_args! {
    /// `lease_key`: a uniformly random free key.
    LeaseKey => lease {}

    /// `report_key` (and `release_key`).
    ReportKey => release {
        /// The key.
        key: String,
        /// The lease to end, none for any.
        lease_id: Option<u64>,
        /// `ok`, `rate_limited` or `failed`.
        outcome: &'static str,
        /// How long a rate-limited key cools, none for the pool's cooldown.
        retry_after_ms: Option<Ttl>,
        /// Why, none for no reason.
        reason: Option<String>,
        /// The idempotency key whose record this release undoes, if any.
        forget: Option<String>,
    }
}

/// The arguments of one operation in a batch, after the batch's `prefix`
/// and `now`: its name, the idempotency key, digest and TTL, then its own
/// arguments, padded with "" to the widest operation's.
const BATCH_OP_HEAD: [&str; 4] = ["op", "idem_key", "idem_digest", "idem_ttl_ms"];

/// The widest batched operation's own arguments.
const BATCH_OWN: &[&str] = ReportKey::NAMES;

/// How many ARGV entries one batched operation takes.
const BATCH_OP_WIDTH: usize = BATCH_OP_HEAD.len() + BATCH_OWN.len();

/// The ARGV entries of `args` as one operation of a batch.
pub(super) fn batch_argv<A: Call>(args: &A, idem: Option<&Idem>) -> Vec<String> {
    let mut argv = Vec::with_capacity(BATCH_OP_WIDTH);
    argv.push(A::BATCH.unwrap_or_default().to_owned());
    push_idem(idem, &mut argv);
    args.push_args(&mut argv);
    debug_assert!(
        argv.len() <= BATCH_OP_WIDTH,
        "{} is wider than BATCH_OWN",
        A::OPERATION
    );
    argv.resize(BATCH_OP_WIDTH, String::new());
    argv
}

/// The batch script: the pool head and the idempotency helpers once, each
/// batched body as a function, then `lua/batch.lua`, which runs the
/// operations in ARGV order. `read_op(o)` (generated) sets `ARG` to the
/// operation at ARGV position `o`; `op_at(o)` and `idem_key_at(o)`
/// (generated) are just its name and idempotency key, for the first pass
/// that counts leases and reads the batch's records.
fn batch_source(prelude: &str) -> String {
    let mut lua = format!(
        "{prelude}local ARG = {{ prefix = ARGV[1], now = ARGV[2], idem_key = '' }}\n{}{}",
        include_str!("lua/pool_common.lua"),
        include_str!("lua/idempotency.lua"),
    );
    for (name, body) in BATCHED {
        write!(lua, "local function {name}_op()\n{body}\nend\n")
            .expect("writing to a String cannot fail");
    }
    let names: Vec<&str> = BATCH_OP_HEAD.iter().chain(BATCH_OWN).copied().collect();
    let fields: Vec<String> = names.iter().map(|n| format!("ARG.{n}")).collect();
    let values: Vec<String> = (0..names.len()).map(|i| format!("ARGV[o + {i}]")).collect();
    let at = |field: &str| {
        names
            .iter()
            .position(|n| *n == field)
            .expect("BATCH_OP_HEAD names it")
    };
    let (op, idem_key) = (at("op"), at("idem_key"));
    writeln!(
        lua,
        "local OP_FIRST = 3\nlocal OP_WIDTH = {BATCH_OP_WIDTH}\nlocal OPS = {{ {} }}\n\
         local function read_op(o)\n  {} = {}\nend\n\
         local function op_at(o)\n  return ARGV[o + {op}]\nend\n\
         local function idem_key_at(o)\n  return ARGV[o + {idem_key}]\nend",
        BATCHED
            .iter()
            .map(|(name, _)| format!("{name} = {name}_op"))
            .collect::<Vec<_>>()
            .join(", "),
        fields.join(", "),
        values.join(", "),
    )
    .expect("writing to a String cannot fail");
    lua.push_str(include_str!("lua/batch.lua"));
    lua
}

/// The generated constants and codes, then the clock head.
fn prelude() -> String {
    let mut lua = String::from("-- Generated by keyward from its Rust constants.\n");
    for (name, value) in constants() {
        writeln!(lua, "local {name} = {value}").expect("writing to a String cannot fail");
    }
    for (name, value) in NAMES {
        writeln!(lua, "local {name} = '{value}'").expect("writing to a String cannot fail");
    }
    for code in Code::ALL {
        writeln!(lua, "local {} = {}", code.lua_name(), code as i64)
            .expect("writing to a String cannot fail");
    }
    lua.push_str(include_str!("lua/clock.lua"));
    lua
}

/// The source of `A`'s script: prelude, `ARG` table, family head, body.
fn source<A: Call>(prelude: &str, body: &str) -> String {
    let head_args: &[&str] = match A::FAMILY {
        Family::Bare => &[],
        Family::Pool | Family::Keyspace => &Family::HEAD_ARGS,
    };
    let fields: Vec<String> = head_args
        .iter()
        .chain(A::NAMES)
        .enumerate()
        .map(|(i, name)| format!("{name} = ARGV[{}]", i + 1))
        .collect();
    let head = match A::FAMILY {
        Family::Pool => include_str!("lua/pool_common.lua"),
        Family::Keyspace => include_str!("lua/keyspace_common.lua"),
        Family::Bare => "",
    };
    if A::FAMILY == Family::Bare {
        return format!("{prelude}local ARG = {{ {} }}\n{body}", fields.join(", "));
    }
    format!(
        "{prelude}local ARG = {{ {} }}\n{head}{}\n\
         local IDEM_REPLY = idem_replay()\n\
         if IDEM_REPLY then\n  return IDEM_REPLY\nend\n\
         return idem_record((function()\n{body}\nend)())\n",
        fields.join(", "),
        include_str!("lua/idempotency.lua"),
    )
}

fn build<A: Call>(prelude: &str, body: &str) -> Script {
    Script::new(&source::<A>(prelude, body))
}

/// The ARGV of a call of `A` on `prefix` at `now`, with `idem`'s key,
/// digest and TTL (all ignored for bare scripts).
pub(super) fn argv<A: Call>(
    args: &A,
    prefix: String,
    now: String,
    idem: Option<&Idem>,
) -> Vec<String> {
    let mut argv = Vec::with_capacity(Family::HEAD_ARGS.len() + A::NAMES.len());
    if A::FAMILY != Family::Bare {
        argv.push(prefix);
        argv.push(now);
        push_idem(idem, &mut argv);
    }
    args.push_args(&mut argv);
    argv
}

/// The idempotency key, digest and TTL of `idem`, or three "".
fn push_idem(idem: Option<&Idem>, argv: &mut Vec<String>) {
    match idem {
        Some(idem) => {
            argv.push(idem.key.as_str().to_owned());
            argv.push(idem.digest.to_hex());
            argv.push(idem.ttl.as_millis().to_string());
        }
        None => argv.extend([String::new(), String::new(), String::new()]),
    }
}

/// A secret as the 64 hex digits the keyspace scripts store.
pub(super) fn secret_hex(secret: &Secret) -> String {
    secret
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A reply's first element as a code, `Unavailable` if it is none.
pub(super) fn code_of(n: i64) -> Result<Code, StoreError> {
    Code::from_wire(n).ok_or_else(|| unavailable(format!("unknown script reply code {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_number_and_name() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(Code::from_wire(code as i64), Some(code));
            for other in &Code::ALL[i + 1..] {
                assert_ne!(code as i64, *other as i64);
                assert_ne!(code.lua_name(), other.lua_name());
            }
        }
        assert_eq!(Code::from_wire(99), None);
    }

    #[test]
    fn a_script_reads_its_arguments_by_the_field_names_in_argv_order() {
        let lua = source::<EnableKey>("", "return 1");
        assert!(
            lua.starts_with(
                "local ARG = { prefix = ARGV[1], now = ARGV[2], idem_key = ARGV[3], \
                 idem_digest = ARGV[4], idem_ttl_ms = ARGV[5], key = ARGV[6] }\n"
            ),
            "{lua}"
        );
        assert!(lua.ends_with("return idem_record((function()\nreturn 1\nend)())\n"));
        let args = DisableKey {
            key: "k".into(),
            reason: None,
        };
        assert_eq!(
            argv(&args, "{kw:p:a}".into(), "7".into(), None),
            ["{kw:p:a}", "7", "", "", "", "k", ""]
        );
        let bare = Reserve {
            name: "a".into(),
            max: 3,
        };
        assert_eq!(argv(&bare, "ignored".into(), "".into(), None), ["a", "3"]);
    }

    #[test]
    fn a_batched_call_takes_its_name_the_idempotency_triple_and_its_own_padded_arguments() {
        let mut argv = batch_argv(&LeaseKey {}, None);
        let release = ReportKey {
            key: "k".into(),
            lease_id: Some(7),
            outcome: "ok",
            retry_after_ms: None,
            reason: None,
            forget: None,
        };
        argv.extend(batch_argv(&release, None));
        assert_eq!(argv.len(), 2 * BATCH_OP_WIDTH);
        assert_eq!(argv[0], "lease");
        assert!(argv[1..BATCH_OP_WIDTH].iter().all(String::is_empty));
        assert_eq!(
            argv[BATCH_OP_WIDTH..],
            ["release", "", "", "", "k", "7", "ok", "", "", ""]
        );
        let lua = batch_source("");
        assert!(lua.contains(
            "ARG.op, ARG.idem_key, ARG.idem_digest, ARG.idem_ttl_ms, ARG.key, ARG.lease_id, \
             ARG.outcome, ARG.retry_after_ms, ARG.reason, ARG.forget = ARGV[o + 0]"
        ));
        assert!(lua.contains("local OPS = { lease = lease_op, release = release_op }"));
        assert!(lua.contains("local OP_WIDTH = 10\n"));
    }

    #[test]
    fn the_prelude_hands_the_rust_constants_and_codes_to_lua() {
        let lua = prelude();
        assert!(lua.contains(&format!("local LAZY_EXPIRY_BOUND = {}\n", Pool::LAZY_STEP)));
        assert!(lua.contains(&format!("local REAP_STEP = {REAP_STEP}\n")));
        assert!(lua.contains("local KEY_LIMIT = 6\n"));
        assert!(lua.contains("local DUE_AT = 'due_at'\n"));
        assert_eq!(lua.matches("local function clock(").count(), 1);
    }

    #[test]
    fn no_script_reads_argv_by_position_or_defines_its_own_clock() {
        for body in [
            include_str!("lua/pool_common.lua"),
            include_str!("lua/keyspace_common.lua"),
            include_str!("lua/pool_put.lua"),
            include_str!("lua/pool_info.lua"),
            include_str!("lua/add.lua"),
            include_str!("lua/disable.lua"),
            include_str!("lua/enable.lua"),
            include_str!("lua/list.lua"),
            include_str!("lua/lease.lua"),
            include_str!("lua/release.lua"),
            include_str!("lua/batch.lua"),
            include_str!("lua/keepalive.lua"),
            include_str!("lua/get.lua"),
            include_str!("lua/delete.lua"),
            include_str!("lua/expire.lua"),
            include_str!("lua/drop_pool.lua"),
            include_str!("lua/reclaim.lua"),
            include_str!("lua/drop_keyspace.lua"),
            include_str!("lua/keyspace_put.lua"),
            include_str!("lua/keyspace_info.lua"),
            include_str!("lua/issue.lua"),
            include_str!("lua/token_status.lua"),
            include_str!("lua/activate.lua"),
            include_str!("lua/deactivate.lua"),
            include_str!("lua/revoke.lua"),
            include_str!("lua/batch_info.lua"),
            include_str!("lua/reserve.lua"),
            include_str!("lua/due.lua"),
        ] {
            assert!(!body.contains("ARGV["), "{body}");
            assert!(!body.contains("'TIME'"), "{body}");
        }
    }
}
