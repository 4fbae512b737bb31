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
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
        store.register_metrics(&mut registry);
        Self {
            registry,
            requests,
            latency,
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

/// Pool and keyspace counts in OpenMetrics text. Names are
/// `[A-Za-z0-9._-]`, so label values need no escaping.
fn render_snapshot(out: &mut String, s: &Snapshot) {
    let _ = writeln!(out, "# HELP keyward_pools Pools in the store.");
    let _ = writeln!(out, "# TYPE keyward_pools gauge");
    let _ = writeln!(out, "keyward_pools {}", s.pool_count);
    let _ = writeln!(out, "# HELP keyward_keyspaces Keyspaces in the store.");
    let _ = writeln!(out, "# TYPE keyward_keyspaces gauge");
    let _ = writeln!(out, "keyward_keyspaces {}", s.keyspace_count);
    if let Some(t) = &s.totals {
        let _ = writeln!(
            out,
            "# HELP keyward_all_pools_keys Keys of every pool together, by state."
        );
        let _ = writeln!(out, "# TYPE keyward_all_pools_keys gauge");
        for (state, n) in [
            ("total", t.stats.total),
            ("free", t.stats.free),
            ("leased", t.stats.leased),
        ] {
            let _ = writeln!(out, "keyward_all_pools_keys{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP keyward_all_pools_expired_leases Leases ended by expiry in every pool (since start)."
        );
        let _ = writeln!(out, "# TYPE keyward_all_pools_expired_leases counter");
        let _ = writeln!(
            out,
            "keyward_all_pools_expired_leases_total {}",
            t.expired.leases
        );
        let _ = writeln!(
            out,
            "# HELP keyward_all_pools_purged_keys Keys purged for want of a keep-alive in every pool (since start)."
        );
        let _ = writeln!(out, "# TYPE keyward_all_pools_purged_keys counter");
        let _ = writeln!(
            out,
            "keyward_all_pools_purged_keys_total {}",
            t.expired.keys
        );
    }
    let _ = writeln!(
        out,
        "# HELP keyward_pool_keys Keys per pool and state (the first {SNAPSHOT_NAMED} pools by name)."
    );
    let _ = writeln!(out, "# TYPE keyward_pool_keys gauge");
    for p in &s.pools {
        for (state, n) in [
            ("total", p.stats.total),
            ("free", p.stats.free),
            ("leased", p.stats.leased),
        ] {
            let _ = writeln!(
                out,
                "keyward_pool_keys{{pool=\"{}\",state=\"{state}\"}} {n}",
                p.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP keyward_expired_leases Leases ended by expiry (since start for local stores)."
    );
    let _ = writeln!(out, "# TYPE keyward_expired_leases counter");
    for p in &s.pools {
        let _ = writeln!(
            out,
            "keyward_expired_leases_total{{pool=\"{}\"}} {}",
            p.name, p.expired.leases
        );
    }
    let _ = writeln!(
        out,
        "# HELP keyward_purged_keys Keys purged for want of a keep-alive."
    );
    let _ = writeln!(out, "# TYPE keyward_purged_keys counter");
    for p in &s.pools {
        let _ = writeln!(
            out,
            "keyward_purged_keys_total{{pool=\"{}\"}} {}",
            p.name, p.expired.keys
        );
    }
    let _ = writeln!(
        out,
        "# HELP keyward_keyspace_tokens Tokens per keyspace: capacity, issued, activated, remaining."
    );
    let _ = writeln!(out, "# TYPE keyward_keyspace_tokens gauge");
    for k in &s.keyspaces {
        for (state, n) in [
            ("capacity", k.info.capacity),
            ("issued", k.info.issued),
            ("activated", k.info.activated),
            ("remaining", k.info.remaining),
        ] {
            let _ = writeln!(
                out,
                "keyward_keyspace_tokens{{keyspace=\"{}\",state=\"{state}\"}} {n}",
                k.name
            );
        }
    }
}
