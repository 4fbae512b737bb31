//! The Redis backend end to end: real `keyward` processes on private
//! `redis-server`s (never the machine's own Redis).
//!
//! - [`multi`]: two processes on one Redis share pools and keyspaces
//!   atomically, see each other's expiry, and keep state across restarts;
//! - [`faults`]: Redis down at start, and Redis killed mid-run;
//! - [`cluster`]: one process on a 3-master Redis Cluster;
//! - [`reaper`]: the reaper's cost follows due entries, not pools;
//! - [`delete`]: deleted pools reclaimed in bounded steps, registries
//!   migrated to sorted sets;
//! - [`states`]: cooldowns and quarantines ended by the reaper, key
//!   states shared by two processes, pools of an older keyward, keys
//!   without keep-alive;
//! - [`idempotency`]: where idempotency records live, their TTL and
//!   their expiry in bounded steps;
//! - [`waiting`]: waiting leases served first come first served, woken
//!   through Redis by releases, deadlines, new and enabled keys, across
//!   processes and on a cluster; dropped waiters hold no key.
//!
//! Without `redis-server`/`redis-cli` on PATH every test skips with a loud
//! note, or fails when `KEYWARD_REQUIRE_ALL_BACKENDS=1` (as CI sets it).
//! Every wait is bounded; only processes started here are stopped, by PID.

mod cluster;
mod delete;
mod faults;
mod idempotency;
mod multi;
mod reaper;
mod states;
mod waiting;

/// The real binary on the store URL `store` (a private Redis).
fn keyward(store: &str) -> keyward_testkit::process::Launch {
    keyward_testkit::process::Launch::new(env!("CARGO_BIN_EXE_keyward"), store)
}
