//! A client for the keyward key server's `/v1` API.
//!
//! - [`Client`] (`client.rs`): base URL and bearer token (given, or from
//!   `KEYWARD_URL` / `KEYWARD_TOKEN`), and the one place requests are
//!   sent: every mutating call carries a random `Idempotency-Key` kept
//!   across its retries, and connection errors, timeouts and 503 are
//!   retried under a [`RetryPolicy`] (`backoff.rs`: capped exponential
//!   backoff with jitter, bounded tries).
//! - [`Pool`] (`pool.rs`): lease, release with an [`Outcome`], keep-alive,
//!   generate, import, disable, enable, one key, the pool object, pages
//!   of keys, settings.
//! - [`LeaseGuard`] (`lease.rs`): a leased key kept alive from a tokio
//!   task every `lease_ttl / 3`, marked lost when a keep-alive is
//!   refused or none succeeded for a whole `lease_ttl`, released
//!   explicitly or on drop.
//! - [`Keyspace`] (`keyspace.rs`): issue (one or many, in batches),
//!   status, activate (with fingerprints), deactivate, revoke, batch
//!   counts.
//! - [`Error`] (`error.rs`): a variant per server error code a caller acts
//!   on, [`Error::Other`] for the rest, [`Error::Transport`] for no answer.
//!
//! Keys and tokens are secrets: no `Debug` output or error of this crate
//! contains one.
//!
//! ```no_run
//! # async fn run() -> keyward_client::Result<()> {
//! use keyward_client::{Client, Outcome};
//! use std::time::Duration;
//!
//! let client = Client::from_env()?;
//! let mut lease = client.pool("llm").lease_guard(Some(Duration::from_secs(10))).await?;
//! // ... call the upstream with lease.key() ...
//! lease.report(Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) });
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod error;
mod keyspace;
mod lease;
mod pool;

pub use backoff::RetryPolicy;
pub use client::{Client, ClientBuilder, DEFAULT_URL};
pub use error::{Error, Result};
pub use keyspace::{
    Activation, BatchInfo, Format, Issued, IssuedMany, Keyspace, KeyspaceInfo, KeyspaceSpec, Token,
    TokenState,
};
pub use lease::LeaseGuard;
pub use pool::{
    Added, Key, KeyPages, KeyState, Labels, Outcome, Pool, PoolInfo, PoolSettings, Report,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
