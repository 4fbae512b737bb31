//! Black-box HTTP tests of keyward: each test starts its own server on
//! `127.0.0.1:0` through the test kit's `spawn_app` (or, in `process` and
//! `ops`, the real binary) and speaks to it over real HTTP, as any client
//! would.
//!
//! - `pools`: `/v1/pools` (generation, leases, fencing, keep-alive, expiry);
//! - `credentials`: credential pools (DESIGN P2.1): import with labels,
//!   release outcomes and the five key states, disable and enable, the
//!   key listing, `Retry-After`, keys kept out of logs and `/metrics`;
//! - `keyspaces`: `/v1/keyspaces` (issuance, activation, immutability);
//! - `listing`: paged listings of pools and keyspaces, and deleting them;
//! - `names`: the name rule on every `/v1` route;
//! - `compat`: the compat routes under `/api`, bodies compared as JSON values;
//! - `limits`: malformed input, size limits, unknown routes, ops routes;
//! - `limits_resources`: pool, keyspace and key limits, `/metrics` size;
//! - `process`: the real binary, started and stopped with SIGTERM;
//! - `ops`: `/openapi.json` against the router both ways, the admin token
//!   (config and `KEYWARD_ADMIN_TOKEN`), `x-request-id`, trailing slashes;
//! - `slowloris`: clients trickling headers or bodies are cut at the
//!   header and body deadlines and cannot stall the server;
//! - `openapi`: `/openapi.json` checked in Rust and, with
//!   `KEYWARD_OPENAPI_VALIDATOR`, by `openapi-spec-validator`;
//! - `strict`: bodies read exactly (repeated keys, `null`, bad chunks,
//!   the issue route's body), the keyspace route's 1 MiB limit, exact
//!   decimal strings for big counts, the 401 challenge;
//! - `waiting`: waiting leases (DESIGN P2.2): `wait_ms` validation, a
//!   waiter served by a release, timeout, clients gone mid-wait, SIGTERM
//!   answering waiters, the wait metrics, the release→waiter latency;
//! - `idempotency`: `Idempotency-Key` (DESIGN P2.3): replays of every
//!   mutating route, 422 for a reused key, 409 while the first runs, 400
//!   for a bad key, refusals not recorded, expiry, the record metrics;
//! - `fuzz`: random HTTP requests and proptest-driven parsing and body
//!   fuzzing (`scripts/fuzz` runs them long).

mod compat;
mod credentials;
mod fuzz;
mod idempotency;
mod keyspaces;
mod limits;
mod limits_resources;
mod listing;
mod names;
mod openapi;
mod ops;
mod pools;
mod process;
mod shop;
mod slowloris;
mod strict;
mod waiting;

/// The real binary on `memory:`, for the process-level tests.
fn keyward() -> keyward_testkit::process::Launch {
    keyward_testkit::process::Launch::new(env!("CARGO_BIN_EXE_keyward"), "memory:")
}
