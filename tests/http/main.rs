//! Black-box HTTP tests of keyward: each test starts its own server on
//! `127.0.0.1:0` through [`helpers::spawn_app`] and speaks to it over real
//! HTTP, as a client of `DESIGN.md` would.
//!
//! - `pools`: `/v1/pools` (generation, leases, fencing, keep-alive, expiry);
//! - `keyspaces`: `/v1/keyspaces` (issuance, activation, immutability);
//! - `names`: the name rule on every `/v1` route;
//! - `compat`: both seeds' routes, bodies compared as JSON values;
//! - `limits`: malformed input, size limits, unknown routes, ops routes;
//! - `process`: the real binary, started and stopped with SIGTERM;
//! - `ops`: `/openapi.json` against the router both ways, the admin token
//!   (config and `KEYWARD_ADMIN_TOKEN`), `x-request-id`, trailing slashes;
//! - `fuzz`: random HTTP requests and proptest-driven parsing and body
//!   fuzzing (`scripts/fuzz` runs them long).

mod compat;
mod fuzz;
mod helpers;
mod keyspaces;
mod limits;
mod names;
mod ops;
mod pools;
mod process;
