//! Counting during a run ([`Tally`], one per worker, merged at the end) and
//! the result ([`Report`]): printed as text or serialized as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::Serialize;

use super::conn::ConnError;
use super::workload::{HandOver, Kind, Workload};

/// Highest latency the histograms track, in microseconds; longer ones are
/// recorded as this (a run is bounded anyway).
const MAX_TRACKED_US: u64 = 60_000_000;

/// One worker's counts. Nothing in it is shared, so recording costs no
/// synchronisation.
#[derive(Debug)]
pub(crate) struct Tally {
    latency_us: Histogram<u64>,
    requests: u64,
    operations: u64,
    by_kind: [u64; Kind::ALL.len()],
    unexpected: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_transport_error: Option<String>,
    bad_responses: u64,
    first_bad_response: Option<String>,
    /// `wait` only, made on the first hand-over (a histogram is ~130 KB
    /// and other workloads never need it).
    hand_over_us: Option<Histogram<u64>>,
    /// Hand-overs whose lease was sent after the release.
    lease_after_release: u64,
}

/// A histogram of 1 µs .. [`MAX_TRACKED_US`] at three significant digits:
/// exact up to 2 ms, within 0.1 % above.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
        .expect("1 µs .. 60 s at 3 digits is a valid histogram")
}

/// `d` in whole microseconds, at least 1 (the histogram's floor).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Tally {
    /// An empty tally.
    pub(crate) fn new() -> Self {
        Self {
            latency_us: histogram(),
            requests: 0,
            operations: 0,
            by_kind: [0; Kind::ALL.len()],
            unexpected: BTreeMap::new(),
            transport_errors: 0,
            first_transport_error: None,
            bad_responses: 0,
            first_bad_response: None,
            hand_over_us: None,
            lease_after_release: 0,
        }
    }

    /// A response to a `kind` request arrived after `elapsed`; returns
    /// whether its status was the expected one.
    pub(crate) fn response(&mut self, kind: Kind, status: StatusCode, elapsed: Duration) -> bool {
        self.requests += 1;
        self.by_kind[kind.index()] += 1;
        self.latency_us.saturating_record(micros(elapsed));
        let ok = status == kind.expected();
        if !ok {
            *self.unexpected.entry(status.as_u16()).or_insert(0) += 1;
        }
        ok
    }

    /// A `wait` lease completed a hand-over.
    pub(crate) fn hand_over(&mut self, h: HandOver) {
        self.hand_over_us
            .get_or_insert_with(histogram)
            .saturating_record(micros(h.latency));
        self.lease_after_release += u64::from(h.lease_after_release);
    }

    /// An operation completed.
    pub(crate) fn operation(&mut self) {
        self.operations += 1;
    }

    /// A connect or exchange failed below HTTP.
    pub(crate) fn transport_error(&mut self, e: &ConnError) {
        self.transport_errors += 1;
        self.first_transport_error
            .get_or_insert_with(|| super::conn::chain(e));
    }

    /// A response with the expected status lacked what the workload needed.
    pub(crate) fn bad_response(&mut self, e: &dyn fmt::Display) {
        self.bad_responses += 1;
        self.first_bad_response.get_or_insert_with(|| e.to_string());
    }

    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("tallies share their bounds");
        self.requests += other.requests;
        self.operations += other.operations;
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            *mine += theirs;
        }
        for (status, n) in other.unexpected {
            *self.unexpected.entry(status).or_insert(0) += n;
        }
        self.transport_errors += other.transport_errors;
        self.bad_responses += other.bad_responses;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error;
        }
        if self.first_bad_response.is_none() {
            self.first_bad_response = other.first_bad_response;
        }
        if let Some(theirs) = other.hand_over_us {
            match &mut self.hand_over_us {
                Some(mine) => mine.add(&theirs).expect("tallies share their bounds"),
                None => self.hand_over_us = Some(theirs),
            }
        }
        self.lease_after_release += other.lease_after_release;
    }
}

/// Latency percentiles of every request of a run, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Hand-overs of a `wait` run: from sending a release to the answer of
/// the lease that got that key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandOverReport {
    /// Leases answered with a key whose release this run had sent.
    pub count: u64,
    /// Of those, leases sent after the release (the key may have been
    /// free, not waited for, when the lease arrived).
    pub lease_after_release: u64,
    /// Their latency, in microseconds.
    pub latency_us: Latency,
}

/// The outcome of one run.
///
/// Requests are HTTP exchanges that got a response (of any status) before
/// the deadline; requests still in flight at the deadline are not counted.
/// It is a closed loop (one request in flight per connection, like `wrk`
/// without a rate), so latencies are service times under that concurrency.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The workload.
    pub workload: Workload,
    /// What one operation is.
    pub operation: &'static str,
    /// The server.
    pub url: String,
    /// Concurrent connections, one request in flight on each.
    pub connections: usize,
    /// Length of the timed part, in seconds.
    pub duration_secs: f64,
    /// Time spent preparing pools, keys, keyspaces and tokens, in seconds.
    pub prepare_secs: f64,
    /// Responses received.
    pub requests: u64,
    /// `requests / duration_secs`.
    pub requests_per_sec: f64,
    /// Completed operations (a lease+release counts once).
    pub operations: u64,
    /// `operations / duration_secs`.
    pub operations_per_sec: f64,
    /// Responses per request kind (only kinds that were sent).
    pub requests_by_kind: BTreeMap<&'static str, u64>,
    /// Responses whose status was not the expected one.
    pub status_errors: u64,
    /// Those responses by status code.
    pub unexpected_statuses: BTreeMap<u16, u64>,
    /// Connects or exchanges that failed below HTTP (refused, reset, …).
    pub transport_errors: u64,
    /// The first transport error's message.
    pub first_transport_error: Option<String>,
    /// Expected-status responses lacking what the workload needed.
    pub bad_responses: u64,
    /// The first of those, explained.
    pub first_bad_response: Option<String>,
    /// Latency of all responses, in microseconds.
    pub latency_us: Latency,
    /// `wait` only: release→waiter hand-overs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hand_over: Option<HandOverReport>,
}

impl Report {
    /// The report of a run of `duration` from its merged tally.
    pub(crate) fn new(
        workload: Workload,
        url: String,
        connections: usize,
        duration: Duration,
        prepare: Duration,
        tally: Tally,
    ) -> Self {
        let secs = duration.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Self {
            workload,
            operation: workload.operation(),
            url,
            connections,
            duration_secs: secs,
            prepare_secs: prepare.as_secs_f64(),
            requests: tally.requests,
            requests_per_sec: rate(tally.requests),
            operations: tally.operations,
            operations_per_sec: rate(tally.operations),
            requests_by_kind: Kind::ALL
                .iter()
                .filter(|k| tally.by_kind[k.index()] > 0)
                .map(|k| (k.as_str(), tally.by_kind[k.index()]))
                .collect(),
            status_errors: tally.unexpected.values().sum(),
            unexpected_statuses: tally.unexpected,
            transport_errors: tally.transport_errors,
            first_transport_error: tally.first_transport_error,
            bad_responses: tally.bad_responses,
            first_bad_response: tally.first_bad_response,
            latency_us: Latency::of(&tally.latency_us),
            hand_over: (workload == Workload::Wait).then(|| {
                let h = tally.hand_over_us.unwrap_or_else(histogram);
                HandOverReport {
                    count: h.len(),
                    lease_after_release: tally.lease_after_release,
                    latency_us: Latency::of(&h),
                }
            }),
        }
    }

    /// Every kind of error together.
    pub fn errors(&self) -> u64 {
        self.status_errors + self.transport_errors + self.bad_responses
    }
}

/// Microseconds as milliseconds with three decimals: `1234` → `1.234`.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "workload    {} (operation: {})",
            self.workload.as_str(),
            self.operation
        )?;
        writeln!(
            f,
            "target      {}, {} connections, {:.3} s (prepared in {:.3} s)",
            self.url, self.connections, self.duration_secs, self.prepare_secs
        )?;
        write!(
            f,
            "requests    {} ({:.0} req/s)",
            self.requests, self.requests_per_sec
        )?;
        if self.requests_by_kind.len() > 1 {
            let parts: Vec<String> = self
                .requests_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            write!(f, ": {}", parts.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "operations  {} ({:.0} op/s)",
            self.operations, self.operations_per_sec
        )?;
        write!(
            f,
            "errors      {} (unexpected status {}",
            self.errors(),
            self.status_errors
        )?;
        if !self.unexpected_statuses.is_empty() {
            let parts: Vec<String> = self
                .unexpected_statuses
                .iter()
                .map(|(s, n)| format!("{s}×{n}"))
                .collect();
            write!(f, ": {}", parts.join(" "))?;
        }
        write!(f, ", transport {}", self.transport_errors)?;
        if self.bad_responses > 0 {
            write!(f, ", bad body {}", self.bad_responses)?;
        }
        writeln!(f, ")")?;
        if let Some(e) = &self.first_transport_error {
            writeln!(f, "            first transport error: {e}")?;
        }
        if let Some(e) = &self.first_bad_response {
            writeln!(f, "            first bad body: {e}")?;
        }
        write!(f, "latency ms  ")?;
        percentiles(f, &self.latency_us)?;
        if let Some(h) = &self.hand_over {
            write!(f, "handover ms ")?;
            percentiles(f, &h.latency_us)?;
            writeln!(
                f,
                "            {} hand-overs, {} of them leased after the release was sent",
                h.count, h.lease_after_release
            )?;
        }
        Ok(())
    }
}

/// `p50 … max … mean …` in milliseconds, and a newline.
fn percentiles(f: &mut fmt::Formatter<'_>, l: &Latency) -> fmt::Result {
    writeln!(
        f,
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.3}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        l.mean / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally_of(latencies_us: &[u64], kind: Kind) -> Tally {
        let mut t = Tally::new();
        for &us in latencies_us {
            t.response(kind, kind.expected(), Duration::from_micros(us));
        }
        t
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(7), "0.007");
        assert_eq!(ms(1234), "1.234");
        assert_eq!(ms(60_000_000), "60000.000");
    }

    #[test]
    fn percentiles_come_from_every_worker() {
        // 1..=1000 µs split over two workers: exact below 2048 µs.
        let evens: Vec<u64> = (1..=1000).filter(|n| n % 2 == 0).collect();
        let odds: Vec<u64> = (1..=1000).filter(|n| n % 2 == 1).collect();
        let mut total = tally_of(&evens, Kind::Healthz);
        total.merge(tally_of(&odds, Kind::Healthz));
        let r = Report::new(
            Workload::Healthz,
            "http://127.0.0.1:1".into(),
            2,
            Duration::from_secs(2),
            Duration::ZERO,
            total,
        );
        assert_eq!(r.requests, 1000);
        assert_eq!(r.requests_per_sec, 500.0);
        assert_eq!(
            (r.latency_us.p50, r.latency_us.p90, r.latency_us.p99),
            (500, 900, 990)
        );
        assert_eq!((r.latency_us.p999, r.latency_us.max), (999, 1000));
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn text_report_shows_rates_errors_and_percentiles_in_ms() {
        let mut t = tally_of(&[400, 500, 600], Kind::Lease);
        t.merge(tally_of(&[450, 1500], Kind::Release));
        t.operation();
        t.operation();
        t.response(
            Kind::Lease,
            StatusCode::NOT_FOUND,
            Duration::from_micros(300),
        );
        t.transport_error(&ConnError::Connect {
            addr: ([127, 0, 0, 1], 9).into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        let r = Report::new(
            Workload::LeaseRelease,
            "http://127.0.0.1:9".into(),
            2,
            Duration::from_secs(1),
            Duration::from_millis(250),
            t,
        );
        let text = r.to_string();
        assert!(text.contains("workload    lease-release (operation: lease+release)"));
        assert!(text.contains("2 connections, 1.000 s (prepared in 0.250 s)"));
        assert!(
            text.contains("requests    6 (6 req/s): lease 4, release 2"),
            "{text}"
        );
        assert!(text.contains("operations  2 (2 op/s)"), "{text}");
        assert!(
            text.contains("errors      2 (unexpected status 1: 404×1, transport 1)"),
            "{text}"
        );
        assert!(
            text.contains(
                "first transport error: cannot connect to 127.0.0.1:9: connection refused"
            ),
            "{text}"
        );
        assert!(
            text.contains("latency ms  p50 0.450  p90 1.500  p99 1.500  p99.9 1.500  max 1.500"),
            "{text}"
        );
    }

    fn hand_overs(us: &[u64], after_release: u64) -> Tally {
        let mut t = Tally::new();
        for (i, &us) in us.iter().enumerate() {
            t.hand_over(HandOver {
                latency: Duration::from_micros(us),
                lease_after_release: (i as u64) < after_release,
            });
        }
        t
    }

    fn wait_report(tally: Tally) -> Report {
        Report::new(
            Workload::Wait,
            "http://127.0.0.1:9".into(),
            16,
            Duration::from_secs(1),
            Duration::ZERO,
            tally,
        )
    }

    #[test]
    fn hand_overs_are_merged_and_reported_for_wait_only() {
        let mut t = hand_overs(&[100, 200], 1);
        t.merge(Tally::new());
        t.merge(hand_overs(&[300, 400], 0));
        let mut empty = Tally::new();
        empty.merge(t);
        let r = wait_report(empty);
        let h = r.hand_over.as_ref().expect("a wait report has hand-overs");
        assert_eq!((h.count, h.lease_after_release), (4, 1));
        assert_eq!((h.latency_us.p50, h.latency_us.max), (200, 400));
        let text = r.to_string();
        assert!(
            text.contains("handover ms p50 0.200  p90 0.400  p99 0.400  p99.9 0.400  max 0.400"),
            "{text}"
        );
        assert!(
            text.contains("4 hand-overs, 1 of them leased after the release was sent"),
            "{text}"
        );
        let v = serde_json::to_value(&r).expect("a report serializes");
        assert_eq!(v["workload"], "wait");
        assert_eq!(v["hand_over"]["count"], 4);
        assert_eq!(v["hand_over"]["latency_us"]["p50"], 200);
        // Other workloads have no hand-over, even from a tally with some.
        let other = Report::new(
            Workload::LeaseRelease,
            "http://127.0.0.1:9".into(),
            1,
            Duration::from_secs(1),
            Duration::ZERO,
            hand_overs(&[1], 0),
        );
        assert_eq!(other.hand_over, None);
        assert!(!other.to_string().contains("handover"));
        let v = serde_json::to_value(&other).expect("a report serializes");
        assert!(v.get("hand_over").is_none());
    }

    #[test]
    fn a_wait_run_without_hand_overs_reports_zeros() {
        let h = wait_report(Tally::new())
            .hand_over
            .expect("a wait report has hand-overs");
        assert_eq!((h.count, h.latency_us.p99, h.latency_us.max), (0, 0, 0));
    }

    #[test]
    fn json_report_names_percentiles_and_kinds() {
        let r = Report::new(
            Workload::Issue,
            "http://127.0.0.1:9".into(),
            1,
            Duration::from_secs(1),
            Duration::ZERO,
            tally_of(&[100], Kind::Issue),
        );
        let v = serde_json::to_value(&r).expect("a report serializes");
        assert_eq!(v["workload"], "issue");
        assert_eq!(v["requests_by_kind"]["issue"], 1);
        assert_eq!(v["latency_us"]["p99.9"], 100);
        assert_eq!(v["status_errors"], 0);
    }
}
