//! keyward: a key server with two jobs.
//!
//! - **Keyspaces**: unique activation tokens from `alphabet^length`, issued
//!   by a keyed permutation of a counter, activated once.
//! - **Pools**: API keys leased at random, released, kept alive, expired.
//!
//! A request flows `http` → `store` → `core`:
//! - [`core`]: pure state machines (`Pool`, `Keyspace`), time passed in;
//! - [`store`]: the async `Store` trait and its backends;
//! - [`http`]: the `/v1`, compat and ops routes;
//! - [`config`], [`app`], [`clock`]: wiring.
//!
//! The `keyward` command (flags, logs, signals) and the load generator
//! `keyward bench` are crates of their own that depend on this one.

pub mod app;
pub mod clock;
pub mod config;
pub mod core;
pub mod http;
pub mod store;
