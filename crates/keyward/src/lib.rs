//! keyward: a key server with two jobs.
//!
//! - **Keyspaces**: unique activation tokens from `alphabet^length`, issued
//!   by a keyed permutation of a counter, activated once.
//! - **Pools**: API keys leased at random, released, kept alive, expired.
//!
//! A request flows `http` → `store` → `core`; dependencies point the same
//! way, and `docs/ARCHITECTURE.md` walks through each layer.
//!
//! - [`core`]: pure state machines (`Pool`, `Keyspace`), time passed in,
//!   no I/O: the domain types every other layer speaks.
//! - [`store`]: the async [`store::Store`] trait and its backends (RAM,
//!   RAM + SQLite journal, Redis), each passing one conformance suite.
//! - [`http`]: [`http::router`] (the `/v1`, compat and ops routes) and
//!   [`http::openapi`]; handlers, extractors and the serve loop stay inside.
//! - [`config`] (typed settings and their defaults), [`app`] (build, bind,
//!   serve, stop) and [`clock`] (the one place that reads the system time).
//!
//! That is the public surface: what the `keyward` command, the load
//! generator and the tests use. The command (flags, logs, signals) is the
//! workspace's root package; this library never parses a command line or
//! reads the environment.

pub mod app;
pub mod clock;
pub mod config;
pub mod core;
pub mod http;
pub mod store;
