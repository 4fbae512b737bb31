//! [`Pool`]: the calls on one pool of keys, and the objects they answer
//! with ([`Key`], [`PoolInfo`], [`Added`]).
//!
//! Holding a key for a while is [`Pool::lease_guard`]'s job (see
//! `lease.rs`); this module makes single calls.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize};

use crate::client::{Client, Request};
use crate::error::Result;
use crate::lease::LeaseGuard;

/// Labels of a key: name → value.
pub type Labels = BTreeMap<String, String>;

/// Where a key stands. Only `Free` keys are leased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Can be leased.
    Free,
    /// Leased until `leased_until`, under `lease_id`.
    Leased,
    /// Reported `rate_limited`: free again at `available_at`.
    Cooling,
    /// Failed `max_failures` times in a row: free again, on probation, at
    /// `available_at`.
    Quarantined,
    /// Out of use until enabled.
    Disabled,
}

impl KeyState {
    /// The name the API uses (`free`, `leased`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Free => "free",
            KeyState::Leased => "leased",
            KeyState::Cooling => "cooling",
            KeyState::Quarantined => "quarantined",
            KeyState::Disabled => "disabled",
        }
    }
}

/// The key object. Times are RFC 3339 UTC strings as the server sent
/// them. `Debug` leaves the key itself out: it is a secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Key {
    /// The key.
    pub key: String,
    /// Its state.
    pub state: KeyState,
    /// When it was created or imported.
    pub created_at: String,
    /// When it is purged unless kept alive; `None` in a pool without
    /// keep-alive.
    pub alive_until: Option<String>,
    /// The fencing token of the current lease, if leased.
    pub lease_id: Option<u64>,
    /// When the current lease ends unless kept alive, if leased.
    pub leased_until: Option<String>,
    /// Labels given when the key was added.
    #[serde(default)]
    pub labels: Labels,
    /// When a cooling or quarantined key becomes free by itself.
    #[serde(default)]
    pub available_at: Option<String>,
    /// Why it is cooling, quarantined or disabled.
    #[serde(default)]
    pub reason: Option<String>,
    /// Consecutive `failed` outcomes.
    #[serde(default)]
    pub failures: u32,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("key", &format_args!("<{} characters>", self.key.len()))
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("alive_until", &self.alive_until)
            .field("lease_id", &self.lease_id)
            .field("leased_until", &self.leased_until)
            .field("labels", &self.labels)
            .field("available_at", &self.available_at)
            .field("reason", &self.reason)
            .field("failures", &self.failures)
            .finish()
    }
}

/// A pool's settings and counts. The five state counts add up to `total`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PoolInfo {
    /// The pool's name.
    pub name: String,
    /// How long a lease lasts unless kept alive.
    #[serde(rename = "lease_ttl_ms", deserialize_with = "millis")]
    pub lease_ttl: Duration,
    /// How long a key lives unless kept alive; `None`: forever.
    #[serde(rename = "keepalive_ttl_ms", deserialize_with = "millis_or_never")]
    pub keepalive_ttl: Option<Duration>,
    /// Length of generated keys.
    pub key_length: usize,
    /// How long a `rate_limited` key cools without a `retry_after`.
    #[serde(rename = "cooldown_ms", deserialize_with = "millis")]
    pub cooldown: Duration,
    /// Consecutive `failed` outcomes that quarantine a key.
    pub max_failures: u32,
    /// The first quarantine's length (doubled for each further one).
    #[serde(rename = "quarantine_ms", deserialize_with = "millis")]
    pub quarantine: Duration,
    /// Keys in the pool.
    pub total: u64,
    /// Keys that can be leased.
    pub free: u64,
    /// Keys leased now.
    pub leased: u64,
    /// Keys cooling after a `rate_limited` outcome.
    pub cooling: u64,
    /// Keys quarantined after failures.
    pub quarantined: u64,
    /// Keys disabled until enabled.
    pub disabled: u64,
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn millis_or_never<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    u64::deserialize(d).map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
}

/// Whole milliseconds, at most `u64::MAX`.
pub(crate) fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Pool settings to create a pool with or to change; unset fields keep
/// their value (or the server's default on creation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cooldown_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine_ms: Option<u64>,
}

impl PoolSettings {
    /// No change.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a lease lasts unless kept alive (≥ 1 ms).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl_ms = Some(as_millis(ttl));
        self
    }

    /// How long a key lives unless kept alive (≥ 1 ms).
    pub fn keepalive_ttl(mut self, ttl: Duration) -> Self {
        self.keepalive_ttl_ms = Some(as_millis(ttl));
        self
    }

    /// Keys never need a keep-alive (for upstream credentials).
    pub fn no_keepalive(mut self) -> Self {
        self.keepalive_ttl_ms = Some(0);
        self
    }

    /// Length of generated keys (8–128).
    pub fn key_length(mut self, length: u64) -> Self {
        self.key_length = Some(length);
        self
    }

    /// How long a `rate_limited` key cools without a `retry_after`.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown_ms = Some(as_millis(cooldown));
        self
    }

    /// Consecutive `failed` outcomes that quarantine a key (1–1000).
    pub fn max_failures(mut self, max: u32) -> Self {
        self.max_failures = Some(max);
        self
    }

    /// The first quarantine's length.
    pub fn quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine_ms = Some(as_millis(quarantine));
        self
    }
}

/// How the holder's use of a key went, reported when it is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// It worked: the key is `free`, `failures` back to 0.
    #[default]
    Ok,
    /// The upstream answered 429: the key cools for `retry_after` (pass
    /// the upstream's `Retry-After`), else the pool's cooldown.
    RateLimited {
        /// How long the upstream asked to wait.
        retry_after: Option<Duration>,
    },
    /// It failed (401, 402, quota): `failures` + 1; at `max_failures`
    /// the key is quarantined.
    Failed,
}

/// An [`Outcome`] and, optionally, why (kept while the key cools or is
/// quarantined; 1–256 characters, never a secret).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    outcome: Outcome,
    reason: Option<String>,
}

impl Report {
    /// `outcome` with no reason.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            reason: None,
        }
    }

    /// The same report with a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Self {
        Self::new(outcome)
    }
}

/// The answer to adding keys: the new ones, and the imported ones that
/// were in the pool already (left unchanged). `Debug` shows no key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Added {
    /// The keys added, as key objects.
    pub keys: Vec<Key>,
    /// Imported keys that were already in the pool.
    #[serde(default)]
    pub existing: Vec<String>,
}

impl fmt::Debug for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Added")
            .field("keys", &self.keys)
            .field("existing", &format_args!("<{} keys>", self.existing.len()))
            .finish()
    }
}

#[derive(Serialize)]
struct LeaseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct ReleaseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_id: Option<u64>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct LeaseIdBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_id: Option<u64>,
}

#[derive(Serialize)]
struct AddBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: &'a Labels,
}

#[derive(Serialize)]
struct ReasonBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Deserialize)]
struct KeysPage {
    keys: Vec<Key>,
    next_cursor: Option<String>,
}

/// A handle on one pool: cheap to clone; every method is one request
/// (with the client's retries). Costs are the server's: O(1) or O(log n)
/// per call, O(limit · log n) per page of keys.
#[derive(Clone, Debug)]
pub struct Pool {
    client: Client,
    name: String,
}

impl Pool {
    pub(crate) fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `["v1", "pools", name, rest…]`.
    fn path<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        crate::client::scoped_path("pools", &self.name, rest)
    }

    /// Leases a uniformly random free key; with `wait`, waits up to that
    /// long (0–30 s, first come first served) for one to be free.
    /// Errors: [`Error::NoFreeKey`](crate::Error::NoFreeKey).
    ///
    /// The plain call leaves keep-alive and release to the caller;
    /// [`Pool::lease_guard`] does both.
    pub async fn lease(&self, wait: Option<Duration>) -> Result<Key> {
        let wait_ms = wait.map(as_millis);
        let request = Request::post(self.path(&["lease"]))
            .json(LeaseBody { wait_ms })
            .extra_time(wait.unwrap_or_default());
        self.client.call(request).await
    }

    /// Leases a key (as [`Pool::lease`]) and guards it: kept alive until
    /// released or dropped (see [`LeaseGuard`]). Reads the pool's
    /// settings first (one more request).
    pub async fn lease_guard(&self, wait: Option<Duration>) -> Result<LeaseGuard> {
        let settings = self.info().await?;
        let asked = tokio::time::Instant::now();
        let key = self.lease(wait).await?;
        LeaseGuard::start(self.clone(), key, &settings, asked)
    }

    /// Ends the lease on `key` now and reports how it went. With
    /// `lease_id`, only that lease is ended ([`Error::LeaseMismatch`]
    /// otherwise). Errors also: `NotLeased`, `KeyNotFound`.
    ///
    /// [`Error::LeaseMismatch`]: crate::Error::LeaseMismatch
    pub async fn release(
        &self,
        key: &str,
        lease_id: Option<u64>,
        report: impl Into<Report>,
    ) -> Result<Key> {
        let report = report.into();
        let (outcome, retry_after) = match report.outcome {
            Outcome::Ok => ("ok", None),
            Outcome::RateLimited { retry_after } => ("rate_limited", retry_after.map(as_millis)),
            Outcome::Failed => ("failed", None),
        };
        let body = ReleaseBody {
            lease_id,
            outcome,
            retry_after_ms: retry_after,
            reason: report.reason.as_deref(),
        };
        let request = Request::post(self.path(&["keys", key, "release"])).json(body);
        self.client.call(request).await
    }

    /// Keeps `key` alive for another `keepalive_ttl`; with the current
    /// `lease_id` also extends its lease by `lease_ttl`.
    pub async fn keepalive(&self, key: &str, lease_id: Option<u64>) -> Result<Key> {
        let request =
            Request::post(self.path(&["keys", key, "keepalive"])).json(LeaseIdBody { lease_id });
        self.client.call(request).await
    }

    /// Generates `count` new keys (1–10000); creates the pool with
    /// defaults if absent.
    pub async fn generate(&self, count: u32) -> Result<Vec<Key>> {
        self.generate_labeled(count, &Labels::new()).await
    }

    /// [`Pool::generate`] with `labels` on each new key.
    pub async fn generate_labeled(&self, count: u32, labels: &Labels) -> Result<Vec<Key>> {
        let body = AddBody {
            count: Some(count),
            keys: None,
            labels,
        };
        let request = Request::post(self.path(&["keys"])).json(body);
        Ok(self.client.call::<Added>(request).await?.keys)
    }

    /// Imports your own keys (1–10000, each 1–256 visible ASCII
    /// characters) with `labels` on each new one; keys already in the
    /// pool are listed in [`Added::existing`] and left unchanged.
    pub async fn import_keys(&self, keys: &[&str], labels: &Labels) -> Result<Added> {
        let body = AddBody {
            count: None,
            keys: Some(keys),
            labels,
        };
        let request = Request::post(self.path(&["keys"])).json(body);
        self.client.call(request).await
    }

    /// Takes `key` out of use until enabled; a lease on it ends now.
    pub async fn disable(&self, key: &str, reason: Option<&str>) -> Result<Key> {
        let request =
            Request::post(self.path(&["keys", key, "disable"])).json(ReasonBody { reason });
        self.client.call(request).await
    }

    /// Makes a cooling, quarantined or disabled key free now, `failures`
    /// 0; a free or leased key is unchanged.
    pub async fn enable(&self, key: &str) -> Result<Key> {
        let request = Request::post(self.path(&["keys", key, "enable"]));
        self.client.call(request).await
    }

    /// The key object of `key`.
    pub async fn key(&self, key: &str) -> Result<Key> {
        self.client
            .call(Request::get(self.path(&["keys", key])))
            .await
    }

    /// Purges `key`.
    pub async fn delete_key(&self, key: &str) -> Result<()> {
        let request = Request::new(Method::DELETE, self.path(&["keys", key]));
        self.client.call_empty(request).await
    }

    /// The pool object: settings and counts.
    pub async fn info(&self) -> Result<PoolInfo> {
        self.client.call(Request::get(self.path(&[]))).await
    }

    /// Creates the pool with `settings`, or changes the given ones.
    pub async fn configure(&self, settings: &PoolSettings) -> Result<PoolInfo> {
        let request = Request::new(Method::PUT, self.path(&[])).json(settings);
        self.client.call(request).await
    }

    /// The pool's keys (only those in `state`, if given), a page at a
    /// time: see [`KeyPages`].
    pub fn keys(&self, state: Option<KeyState>) -> KeyPages {
        KeyPages {
            pool: self.clone(),
            state,
            limit: None,
            cursor: None,
            done: false,
        }
    }
}

/// The pages of a pool's keys, fetched one request per
/// [`KeyPages::next_page`]. A key that lives (and stays in the state
/// asked for) through the whole listing is listed exactly once.
#[derive(Debug)]
pub struct KeyPages {
    pool: Pool,
    state: Option<KeyState>,
    limit: Option<u32>,
    cursor: Option<String>,
    done: bool,
}

impl KeyPages {
    /// Keys per page (1–1000; the server's default is 100).
    pub fn page_size(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Key>>> {
        if self.done {
            return Ok(None);
        }
        let mut request = Request::get(self.pool.path(&["keys"]));
        if let Some(state) = self.state {
            request = request.query("state", state.as_str().to_owned());
        }
        if let Some(limit) = self.limit {
            request = request.query("limit", limit.to_string());
        }
        if let Some(cursor) = &self.cursor {
            request = request.query("cursor", cursor.clone());
        }
        let page: KeysPage = self.pool.client.call(request).await?;
        self.done = page.next_cursor.is_none();
        self.cursor = page.next_cursor;
        Ok(Some(page.keys))
    }

    /// Every remaining key, page after page (O(n) memory).
    pub async fn all(mut self) -> Result<Vec<Key>> {
        let mut keys = Vec::new();
        while let Some(page) = self.next_page().await? {
            keys.extend(page);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_key() {
        let json = r#"{"keys": [{"key": "sk-secret-new", "state": "free",
            "created_at": "2026-01-01T00:00:00.000Z", "alive_until": null,
            "lease_id": null, "leased_until": null}],
            "existing": ["sk-secret-old"]}"#;
        let added: Added = serde_json::from_str(json).expect("a valid answer");
        let shown = format!("{added:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert_eq!(added.keys[0].key, "sk-secret-new");
    }
}
