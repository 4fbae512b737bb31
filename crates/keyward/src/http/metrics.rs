//! `GET /metrics` in Prometheus/OpenMetrics text.
//!
//! Request counts and latencies are recorded by the HTTP middleware;
//! store-side histograms (commit latency, batch size) are registered by the
//! backend itself; pool and keyspace counts are read at scrape time from
//! [`Store::snapshot`]: the first [`SNAPSHOT_NAMED`] pools and keyspaces by
//! name, plus totals over all of them, so a reply stays a few KiB however
//! many pools there are. The rendered text is kept for [`CACHE_FOR`]:
//! scrapers, however many and however often, cost the store at most one
//! snapshot per second. No global registry: each router owns its own, so
//! tests and several servers in one process stay apart.

use std::fmt::Write;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::{Expired, Outcome, PoolStats};
use crate::store::{SNAPSHOT_NAMED, Snapshot, Store, StoreError};

/// How long a rendered reply is served again: short next to any scrape
/// interval, long enough that a crowd of scrapers costs one snapshot.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_histogram() -> Histogram {
    // 25 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_025, 2.0, 17))
}

/// The router's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    outcomes: Family<OutcomeLabels, Counter>,
    waiters: Family<PoolLabels, Gauge>,
    /// Waiters per pool behind `waiters`, under a lock so a series is
    /// removed exactly when its pool has none left.
    waiting: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    wait_seconds: Histogram,
    wait_timeouts: Counter,
    idem_answers: Counter,
    idem_bytes: Counter,
    /// The last reply and when it was rendered. A tokio mutex, held across
    /// the snapshot on purpose: concurrent scrapes wait for one render
    /// instead of each taking a snapshot.
    cache: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Metrics {
    /// A registry with the HTTP metrics and the store's own.
    pub fn new(store: &dyn Store) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "keyward_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "keyward_http_request_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "keyward_release_outcomes",
            "Releases by the outcome their holder reported (ok, rate_limited, failed)",
            outcomes.clone(),
        );
        let waiters = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "keyward_lease_waiters",
            "Leases waiting for a key, by pool (only pools with waiters)",
            waiters.clone(),
        );
        // 1 ms .. ~33 s: a wait may last up to 30 s.
        let wait_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "keyward_lease_wait_seconds",
            "How long waiting leases waited, whether they got a key or not",
            wait_seconds.clone(),
        );
        let wait_timeouts = Counter::default();
        registry.register(
            "keyward_lease_wait_timeouts",
            "Waiting leases that got no key within their wait_ms",
            wait_timeouts.clone(),
        );
        let idem_answers = Counter::default();
        registry.register(
            "keyward_idempotency_recorded",
            "Answers recorded for an Idempotency-Key by this process",
            idem_answers.clone(),
        );
        let idem_bytes = Counter::default();
        registry.register(
            "keyward_idempotency_recorded_bytes",
            "Bytes of the answer bodies recorded for an Idempotency-Key by this process (each stored once)",
            idem_bytes.clone(),
        );
        store.register_metrics(&mut registry);
        Self {
            idem_answers,
            idem_bytes,
            waiters,
            waiting: Default::default(),
            wait_seconds,
            wait_timeouts,
            registry,
            requests,
            latency,
            outcomes,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Counts one answered request. O(1) (a hash lookup).
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a lease that starts waiting, until the returned guard is
    /// done or dropped (its client went away). A pool's series exists
    /// only while it has waiters, so the family stays as small as the set
    /// of pools being waited on. O(1).
    pub fn start_wait(&self, pool: &crate::core::Name) -> Waiting<'_> {
        self.move_waiters(pool.as_str(), true);
        Waiting {
            metrics: self,
            pool: pool.to_string(),
            started: Instant::now(),
        }
    }

    fn move_waiters(&self, pool: &str, up: bool) {
        let mut counts = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        let n = counts.entry(pool.to_owned()).or_insert(0);
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        if *n == 0 {
            counts.remove(pool);
            self.waiters.remove(&labels);
        } else {
            self.waiters.get_or_create(&labels).set(*n);
        }
    }

    /// Counts one answer recorded for an idempotency key, of `bytes`
    /// bytes. O(1).
    pub fn idempotency_recorded(&self, bytes: u64) {
        self.idem_answers.inc();
        self.idem_bytes.inc_by(bytes);
    }

    /// Counts one release by its outcome. O(1).
    pub fn outcome(&self, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Ok => "ok",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::Failed => "failed",
        };
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The exposition, rendered at most once per [`CACHE_FOR`]: O(1) from
    /// the cache, else one [`Store::snapshot`] and O(`SNAPSHOT_NAMED`).
    pub async fn scrape(&self, store: &dyn Store) -> Result<Bytes, StoreError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, text)) = &*cache
            && at.elapsed() < CACHE_FOR
        {
            return Ok(text.clone());
        }
        let text = Bytes::from(self.render(&store.snapshot().await?));
        *cache = Some((Instant::now(), text.clone()));
        Ok(text)
    }

    /// The whole exposition: registry metrics, then the store's counts.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        render_snapshot(&mut out, snapshot);
        out.push_str("# EOF\n");
        out
    }
}

/// One waiting lease, counted in `keyward_lease_waiters` while it lives.
pub(crate) struct Waiting<'a> {
    metrics: &'a Metrics,
    pool: String,
    started: Instant,
}

impl Waiting<'_> {
    /// The wait ended, with a key or `timed_out` without one. O(1).
    pub fn done(self, timed_out: bool) {
        self.metrics
            .wait_seconds
            .observe(self.started.elapsed().as_secs_f64());
        if timed_out {
            self.metrics.wait_timeouts.inc();
        }
    }

    /// How long it has waited.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.metrics.move_waiters(&self.pool, false);
    }
}

/// Pool and keyspace counts in OpenMetrics text. Names are
/// `[A-Za-z0-9._-]`, so label values need no escaping.
fn render_snapshot(out: &mut String, s: &Snapshot) {
    family(out, "keyward_pools", "gauge", "Pools in the store.");
    let _ = writeln!(out, "keyward_pools {}", s.pool_count);
    family(out, "keyward_keyspaces", "gauge", "Keyspaces in the store.");
    let _ = writeln!(out, "keyward_keyspaces {}", s.keyspace_count);
    if let Some(t) = &s.totals {
        let name = "keyward_all_pools_keys";
        family(out, name, "gauge", "Keys of every pool together, by state.");
        by_state(out, name, "", &key_states(&t.stats));
        let name = "keyward_all_pools_expired_leases";
        let help = "Leases ended by expiry in every pool (since start).";
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}_total {}", t.expired.leases);
        let name = "keyward_all_pools_purged_keys";
        let help = "Keys purged for want of a keep-alive in every pool (since start).";
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}_total {}", t.expired.keys);
        let name = "keyward_all_pools_recovered_keys";
        let help = "Cooldowns and quarantines ended by time in every pool (since start).";
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}_total {}", t.expired.recovered);
    }
    let name = "keyward_pool_keys";
    let help = format!("Keys per pool and state (the first {SNAPSHOT_NAMED} pools by name).");
    family(out, name, "gauge", &help);
    for p in &s.pools {
        by_state(
            out,
            name,
            &format!("pool=\"{}\",", p.name),
            &key_states(&p.stats),
        );
    }
    // Expiry counters, one sample per named pool.
    for (name, help, count) in [
        (
            "keyward_expired_leases",
            "Leases ended by expiry (since start for local stores).",
            (|e| e.leases) as fn(&Expired) -> u64,
        ),
        (
            "keyward_purged_keys",
            "Keys purged for want of a keep-alive.",
            |e| e.keys,
        ),
        (
            "keyward_recovered_keys",
            "Cooldowns and quarantines ended by time (the key is free again).",
            |e| e.recovered,
        ),
    ] {
        family(out, name, "counter", help);
        for p in &s.pools {
            let n = count(&p.expired);
            let _ = writeln!(out, "{name}_total{{pool=\"{}\"}} {n}", p.name);
        }
    }
    let name = "keyward_quarantines";
    let help = "Quarantines begun (since start for local stores).";
    family(out, name, "counter", help);
    for p in &s.pools {
        let _ = writeln!(out, "{name}_total{{pool=\"{}\"}} {}", p.name, p.quarantines);
    }
    let name = "keyward_idempotency_records";
    let help = "Live idempotency records (on Redis: those of the pools and keyspaces named here).";
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {}", s.idempotency_records);
    if let Some(bytes) = s.idempotency_bytes {
        let name = "keyward_idempotency_record_bytes";
        let help = "Bytes of the answers the live idempotency records keep (local stores).";
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {bytes}");
    }
    let name = "keyward_keyspace_tokens";
    let help = "Tokens per keyspace: capacity, issued, activated, revoked, remaining.";
    family(out, name, "gauge", help);
    for k in &s.keyspaces {
        let states = [
            ("capacity", k.info.capacity),
            ("issued", k.info.issued),
            ("activated", k.info.activated),
            ("revoked", k.info.revoked),
            ("remaining", k.info.remaining),
        ];
        by_state(out, name, &format!("keyspace=\"{}\",", k.name), &states);
    }
}

/// Writes the `# HELP` and `# TYPE` lines that open metric family `name`.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample of `name` per state, labelled `{labels}state="…"`;
/// `labels` is empty or ends with a comma.
fn by_state<N: std::fmt::Display>(
    out: &mut String,
    name: &str,
    labels: &str,
    states: &[(&str, N)],
) {
    for (state, n) in states {
        let _ = writeln!(out, "{name}{{{labels}state=\"{state}\"}} {n}");
    }
}

/// A pool's (or all pools') key counts, by state.
fn key_states(stats: &PoolStats) -> [(&'static str, u64); 6] {
    [
        ("total", stats.total),
        ("free", stats.free),
        ("leased", stats.leased),
        ("cooling", stats.cooling),
        ("quarantined", stats.quarantined),
        ("disabled", stats.disabled),
    ]
}
