//! Pure state machines: no I/O, no clock reads, no async.
//!
//! Every operation takes `now`; the stores above decide where time and
//! persistence come from. This is where the O(1)/O(log n) structures live.
//! The one outside source it reads is the OS random source, for new keys
//! and secrets.
//!
//! - [`pool`]: a pool of API keys — generate or import, lease, release
//!   with an outcome (cooldown, quarantine), disable, keep alive, list,
//!   expire — over a slab, a hash index, a free vector and per-state
//!   bitsets;
//! - [`deadlines`]: the ordered deadline queue a pool expires from;
//! - [`chunked`]: the vector in fixed chunks a pool's slab and lists grow
//!   in, so no insert copies them whole;
//! - [`keygen`]: the pool-key alphabet and the sampler every store uses;
//! - [`keyspace`]: token spaces that issue each token once, through a keyed
//!   permutation ([`TokenCodec`]);
//! - [`names`], [`time`]: the validated names and instants the rest take.

pub mod chunked;
pub mod deadlines;
pub mod keygen;
pub mod keyspace;
pub mod names;
pub mod pool;
pub mod time;

pub use keygen::{KEY_ALPHABET, OsRandom, random_chars, random_key};
pub use keyspace::{
    Activation, Alphabet, BatchInfo, BatchRange, Fingerprint, InvalidFingerprint, Issued,
    IssuedMany, Keyspace, KeyspaceError, KeyspaceInfo, KeyspaceSpec, Marks, MaxActivations,
    Revocation, Secret, TokenCodec, TokenState, TokenStatus,
};
pub use names::{InvalidName, Name};
pub use pool::{
    Expired, Imported, InvalidLabels, InvalidPoolKey, InvalidReason, KeyChange, KeyCursor,
    KeyLength, KeyPage, KeyState, KeyView, Labels, Lease, MaxFailures, Outcome, Pool, PoolError,
    PoolKey, PoolSettings, PoolStats, Reason, Recovery,
};
pub use time::{Timestamp, Ttl};
