//! `Idempotency-Key` over HTTP (DESIGN P2.3): a retried request answers
//! its first answer byte for byte with `Idempotent-Replayed: true` and
//! changes nothing; the key reused for another request is 422
//! `idempotency_key_reused`; a duplicate while the first still runs is
//! 409 `idempotency_in_flight`; a bad key is 400 and changes nothing; a
//! refused request is not recorded; records expire after
//! `--idempotency-ttl`; the metrics count records and their bytes.

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use keyward::config::Config;
use keyward_testkit::app::{spawn_app, spawn_app_with};
use keyward_testkit::client::{Api, Reply};

/// Sends `method path body` with `key`, expecting a first run with
/// `status`, then again, expecting the same answer replayed.
pub(crate) async fn twice(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: &str,
) -> Reply {
    let first = api
        .request_with_key(method.clone(), path, body.clone(), key)
        .await
        .expect("the server answers");
    assert!(
        (200..300).contains(&first.status),
        "{method} {path}: {first:?}"
    );
    assert_eq!(first.header("idempotent-replayed"), None, "{first:?}");
    let again = api
        .request_with_key(method.clone(), path, body, key)
        .await
        .expect("the server answers");
    assert_eq!(again.status, first.status, "{method} {path}");
    assert_eq!(again.text, first.text, "{method} {path}: the same body");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    first
}

#[tokio::test]
async fn every_mutating_route_replays_its_first_answer_and_changes_nothing_more() -> Result<()> {
    let app = spawn_app().await;
    let put = twice(&app, Method::PUT, "/v1/pools/p", Some(json!({})), "put").await;
    assert_eq!(put.status, 201, "the replay says created too");
    let generated = twice(
        &app,
        Method::POST,
        "/v1/pools/p/keys",
        Some(json!({"count": 3})),
        "gen",
    )
    .await;
    assert_eq!(generated.status, 201);
    twice(
        &app,
        Method::POST,
        "/v1/pools/p/keys",
        Some(json!({"keys": ["imported-1"]})),
        "imp",
    )
    .await;
    assert_eq!(app.get_pool("p").await?.expect(200)["total"], 4);
    let lease = twice(&app, Method::POST, "/v1/pools/p/lease", None, "lease").await;
    assert_eq!(app.get_pool("p").await?.expect(200)["leased"], 1);
    let key = lease.str("key");
    let id = lease.u64("lease_id");
    let key_path = format!("/v1/pools/p/keys/{key}");
    let body = json!({"lease_id": id});
    twice(
        &app,
        Method::POST,
        &format!("{key_path}/keepalive"),
        Some(body.clone()),
        "ka",
    )
    .await;
    let released = twice(
        &app,
        Method::POST,
        &format!("{key_path}/release"),
        Some(json!({"lease_id": id, "outcome": "failed"})),
        "rel",
    )
    .await;
    assert_eq!(released.body["failures"], 1, "one failure, not two");
    twice(
        &app,
        Method::POST,
        &format!("{key_path}/disable"),
        None,
        "dis",
    )
    .await;
    twice(
        &app,
        Method::POST,
        &format!("{key_path}/enable"),
        None,
        "en",
    )
    .await;
    let deleted = twice(&app, Method::DELETE, &key_path, None, "del").await;
    assert_eq!(deleted.status, 204);
    twice(&app, Method::DELETE, "/v1/pools/p", None, "drop").await;
    app.get_pool("p").await?.expect_error(404, "pool_not_found");

    let ks = json!({"alphabet": "abcdefghij", "length": 6});
    twice(&app, Method::PUT, "/v1/keyspaces/k", Some(ks), "put").await;
    let issued = twice(&app, Method::POST, "/v1/keyspaces/k/tokens", None, "issue").await;
    assert_eq!(app.get_keyspace("k").await?.expect(200)["issued"], 1);
    let token = issued.str("token");
    let path = format!("/v1/keyspaces/k/tokens/{token}/activate");
    twice(&app, Method::POST, &path, None, "act").await;
    twice(&app, Method::DELETE, "/v1/keyspaces/k", None, "drop").await;
    app.stop().await
}

#[tokio::test]
async fn the_key_used_for_another_request_is_422_and_changes_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.generate_keys("p", 3).await?.expect(201);
    let lease = "/v1/pools/p/lease";
    app.request_with_key(Method::POST, lease, None, "k")
        .await?
        .expect(200);
    let other_body = app
        .request_with_key(Method::POST, lease, Some(json!({"wait_ms": 0})), "k")
        .await?;
    other_body.expect_error(422, "idempotency_key_reused");
    let other_route = app
        .request_with_key(Method::POST, "/v1/pools/p/keys", Some(json!({})), "k")
        .await?;
    other_route.expect_error(422, "idempotency_key_reused");
    let pool = app.get_pool("p").await?.expect(200).clone();
    assert_eq!(
        (pool["total"].clone(), pool["leased"].clone()),
        (json!(3), json!(1))
    );
    // Another pool is another scope: the key runs there.
    app.generate_keys("q", 1).await?.expect(201);
    app.request_with_key(Method::POST, "/v1/pools/q/lease", None, "k")
        .await?
        .expect(200);
    app.stop().await
}

#[tokio::test]
async fn a_bad_key_is_400_and_changes_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.generate_keys("p", 1).await?.expect(201);
    for bad in ["", &"x".repeat(256), "a b", "caf\u{e9}"] {
        let reply = app
            .request_with_key(Method::POST, "/v1/pools/p/lease", None, bad)
            .await;
        // reqwest refuses some header values itself; the server is asked
        // with the rest.
        if let Ok(reply) = reply {
            reply.expect_error(400, "invalid_idempotency_key");
        }
    }
    assert_eq!(app.get_pool("p").await?.expect(200)["leased"], 0);
    let longest = "x".repeat(255);
    app.request_with_key(Method::POST, "/v1/pools/p/lease", None, &longest)
        .await?
        .expect(200);
    app.stop().await
}

#[tokio::test]
async fn a_refused_request_is_not_recorded_and_its_retry_runs() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("p", json!({})).await?.expect(201);
    let lease = "/v1/pools/p/lease";
    app.request_with_key(Method::POST, lease, None, "k")
        .await?
        .expect_error(404, "no_free_key");
    app.generate_keys("p", 1).await?.expect(201);
    let reply = app.request_with_key(Method::POST, lease, None, "k").await?;
    reply.expect(200);
    assert_eq!(reply.header("idempotent-replayed"), None);
    app.stop().await
}

#[tokio::test]
async fn a_duplicate_while_the_first_still_runs_is_409_in_flight() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("p", json!({})).await?.expect(201);
    let wait = json!({"wait_ms": 2000});
    let first = {
        let api: Api = (*app).clone();
        let wait = wait.clone();
        tokio::spawn(async move {
            api.request_with_key(Method::POST, "/v1/pools/p/lease", Some(wait), "k")
                .await
        })
    };
    // Until the first is queued (`/metrics` shows its wait; the
    // exposition is cached up to 1 s), the duplicate is not sent.
    let queued = "keyward_lease_waiters{pool=\"p\"} 1";
    for _ in 0..300 {
        if app.metrics().await?.text.lines().any(|l| l == queued) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.request_with_key(Method::POST, "/v1/pools/p/lease", Some(wait.clone()), "k")
        .await?
        .expect_error(409, "idempotency_in_flight");
    let key = app.generate_keys("p", 1).await?;
    let handed = first.await??;
    assert_eq!(handed.status, 200, "{handed:?}");
    assert_eq!(
        handed.str("key"),
        keyward_testkit::client::keys_of(&key.body)[0]
    );
    let again = app
        .request_with_key(Method::POST, "/v1/pools/p/lease", Some(wait), "k")
        .await?;
    assert_eq!((again.status, &again.text), (200, &handed.text));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.stop().await
}

#[tokio::test]
async fn records_expire_after_the_idempotency_ttl() -> Result<()> {
    let config = Config {
        idempotency_ttl: keyward::core::Ttl::from_millis(5_000).expect("a ttl"),
        ..Config::default()
    };
    let app = spawn_app_with(config).await;
    app.put_pool(
        "p",
        json!({"keepalive_ttl_ms": 0, "lease_ttl_ms": 3_600_000}),
    )
    .await?
    .expect(201);
    app.generate_keys("p", 2).await?.expect(201);
    let lease = "/v1/pools/p/lease";
    app.request_with_key(Method::POST, lease, None, "k")
        .await?
        .expect(200);
    app.advance_ms(4_999);
    let replay = app.request_with_key(Method::POST, lease, None, "k").await?;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    app.advance_ms(1);
    let fresh = app.request_with_key(Method::POST, lease, None, "k").await?;
    fresh.expect(200);
    assert_eq!(
        fresh.header("idempotent-replayed"),
        None,
        "expired: runs anew"
    );
    assert_eq!(app.get_pool("p").await?.expect(200)["leased"], 2);
    app.stop().await
}

#[tokio::test]
async fn metrics_count_records_and_their_bytes_stored_once() -> Result<()> {
    let app = spawn_app().await;
    let body = json!({"count": 10_000});
    let big = twice(&app, Method::POST, "/v1/pools/p/keys", Some(body), "big").await;
    let text = app.metrics().await?.text;
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(sample("keyward_idempotency_records"), 1);
    assert_eq!(
        sample("keyward_idempotency_recorded_total"),
        1,
        "the replay records nothing"
    );
    let bytes = big.text.len() as u64;
    assert_eq!(sample("keyward_idempotency_recorded_bytes_total"), bytes);
    assert_eq!(
        sample("keyward_idempotency_record_bytes"),
        bytes,
        "stored once"
    );
    app.stop().await
}

#[tokio::test]
async fn reads_and_other_methods_ignore_the_header() -> Result<()> {
    let app = spawn_app().await;
    app.generate_keys("p", 1).await?.expect(201);
    for _ in 0..2 {
        let reply = app
            .request_with_key(Method::GET, "/v1/pools/p", None, "k")
            .await?;
        reply.expect(200);
        assert_eq!(reply.header("idempotent-replayed"), None);
    }
    let bad = app
        .request_with_key(Method::GET, "/v1/pools/p", None, "a b")
        .await?;
    bad.expect(200);
    app.stop().await
}
