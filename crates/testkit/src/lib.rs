//! The one test kit of keyward's integration tests (a library only tests
//! use), as zero2prod's `tests/api/helpers.rs`:
//!
//! - [`client`]: one HTTP client, one method per endpoint (`/v1` pools and
//!   keyspaces, the compat routes, the ops routes), and its [`client::Reply`];
//! - [`app`]: [`app::spawn_app`], a server in the test's own process on
//!   `127.0.0.1:0` with a manual clock;
//! - [`process`]: the real `keyward` binary as a child process (the path is
//!   the caller's `env!("CARGO_BIN_EXE_keyward")`), killed by PID on drop;
//! - [`redis`]: private `redis-server`s and a 3-master cluster on free
//!   loopback ports, never the machine's own Redis;
//! - [`backends`]: the store factories the conformance suite runs on.
//!
//! Everything here may panic or return `anyhow` errors: a failed helper
//! is a failed test.

pub mod app;
pub mod backends;
pub mod client;
pub mod process;
pub mod redis;
