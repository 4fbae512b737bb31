//! Pure state machines: no I/O, no clock reads, no async.
//!
//! Every operation takes `now`; the stores above decide where time and
//! persistence come from. This is where the O(1)/O(log n) structures live.

pub mod deadlines;
pub mod keyspace;
pub mod names;
pub mod pool;
pub mod time;

pub use keyspace::{
    Alphabet, Issued, Keyspace, KeyspaceError, KeyspaceInfo, KeyspaceSpec, Secret, TokenCodec,
    TokenStatus,
};
pub use names::{InvalidName, Name};
pub use pool::{
    Expired, KeyChange, KeyLength, KeyView, Lease, Pool, PoolError, PoolSettings, PoolStats,
};
pub use time::{Timestamp, Ttl};
