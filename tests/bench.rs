//! `keyward bench` end to end: a real server on `127.0.0.1:0` (memory
//! store) and every workload for ~300 ms through the library entry point.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use keyward::config::{AdminToken, Config};
use keyward_bench::{
    BearerToken, BenchError, BenchOptions, Kind, Report, Target, Workload, measure,
};
use keyward_testkit::app::{TestApp, spawn_app_with};

/// A memory server (the test kit's, on a manual clock) that stops when
/// dropped.
async fn spawn_server(admin_token: Option<&str>) -> TestApp {
    spawn_app_with(Config {
        admin_token: admin_token.map(|t| AdminToken::new(t.to_owned())),
        ..Config::default()
    })
    .await
}

/// `workload` for 300 ms on 2 connections, with small preparations so a
/// debug build prepares quickly.
fn options(addr: SocketAddr, workload: Workload) -> BenchOptions {
    let target = Target::parse(&format!("http://{addr}"), false).expect("a loopback URL");
    BenchOptions {
        connections: NonZeroUsize::new(2).expect("not zero"),
        duration: Duration::from_millis(300),
        keys: 200,
        tokens: 100,
        ..BenchOptions::new(target, workload)
    }
}

fn assert_clean(report: &Report) {
    assert!(report.requests > 0, "no requests: {report}");
    assert!(report.operations > 0, "no operations: {report}");
    assert_eq!(report.errors(), 0, "errors: {report}");
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_without_errors_against_a_memory_server() {
    let app = spawn_server(None).await;
    let addr = app.addr;
    for workload in [
        Workload::Healthz,
        Workload::LeaseRelease,
        Workload::Issue,
        Workload::Status,
        Workload::Activate,
        Workload::Keepalive,
        Workload::Mixed,
    ] {
        let report = measure(&options(addr, workload))
            .await
            .unwrap_or_else(|e| panic!("{workload:?}: {e}"));
        assert_clean(&report);
        assert_eq!(report.workload, workload);
        assert_eq!(report.connections, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_release_counts_two_requests_per_operation() {
    let app = spawn_server(None).await;
    let addr = app.addr;
    let report = measure(&options(addr, Workload::LeaseRelease))
        .await
        .expect("the run completes");
    assert_clean(&report);
    let leases = report.requests_by_kind[Kind::Lease.as_str()];
    let releases = report.requests_by_kind[Kind::Release.as_str()];
    assert_eq!(releases, report.operations);
    // A worker may stop between its lease and its release.
    assert!(leases >= releases && leases - releases <= 2, "{report}");
    assert!((report.duration_secs - 0.3).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_hands_keys_over_to_waiters_and_measures_the_hand_over() {
    let app = spawn_server(None).await;
    let report = measure(&BenchOptions {
        keys: 1,
        connections: std::num::NonZeroUsize::new(3).expect("3 is not zero"),
        ..options(app.addr, Workload::Wait)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    let hand_over = report
        .hand_over
        .as_ref()
        .expect("a wait run reports hand-overs");
    assert!(hand_over.count > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_keeps_going_after_the_prepared_tokens_run_out() {
    let app = spawn_server(None).await;
    let addr = app.addr;
    let report = measure(&BenchOptions {
        tokens: 4,
        ..options(addr, Workload::Activate)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    assert!(report.operations > 4, "{report}");
    assert!(report.requests_by_kind.contains_key("issue"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_sends_every_kind_of_request() {
    let app = spawn_server(None).await;
    let addr = app.addr;
    let report = measure(&options(addr, Workload::Mixed))
        .await
        .expect("the run completes");
    assert_clean(&report);
    for kind in ["lease", "release", "status", "keepalive", "issue"] {
        assert!(
            report.requests_by_kind.contains_key(kind),
            "no {kind}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_sent_and_a_missing_one_fails_preparation() {
    let app = spawn_server(Some("s3cret")).await;
    let addr = app.addr;
    let err = measure(&options(addr, Workload::Issue))
        .await
        .expect_err("401 while preparing");
    assert!(
        matches!(err, BenchError::Refused { ref status, .. } if status.as_u16() == 401),
        "{err}"
    );
    assert!(err.to_string().contains("--admin-token"), "{err}");
    let report = measure(&BenchOptions {
        admin_token: Some(BearerToken("s3cret".into())),
        ..options(addr, Workload::Issue)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
}

#[tokio::test]
async fn a_server_that_is_not_there_is_reported_before_any_load() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    let addr = free.local_addr().expect("bound");
    drop(free);
    let err = measure(&options(addr, Workload::Healthz))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, BenchError::Unreachable { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_mid_run_shows_transport_errors_and_the_run_still_ends() {
    let app = spawn_server(None).await;
    let addr = app.addr;
    let opts = BenchOptions {
        duration: Duration::from_millis(600),
        ..options(addr, Workload::Healthz)
    };
    let run = tokio::spawn(async move { measure(&opts).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(app);
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run is bounded by its duration")
        .expect("no panic")
        .expect("the run completes");
    assert!(report.requests > 0);
    assert!(report.transport_errors > 0, "{report}");
}
