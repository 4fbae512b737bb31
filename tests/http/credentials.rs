//! Credential pools (DESIGN P2.1) over HTTP: importing keys with labels,
//! release outcomes and the five key states on a manual clock, disable and
//! enable, the paged key listing, `Retry-After` on `no_free_key`, the new
//! pool settings and metrics, every new 400 changing nothing, keys that
//! need percent-encoding in a path, and keys never reaching logs or
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use keyward::config::Config;
use keyward::core::{PoolKey, Ttl};
use keyward::http::v1::MAX_GENERATE;
use keyward::store::Limits;
use keyward_testkit::app::{T0_MS, spawn_app, spawn_app_with};
use keyward_testkit::client::{Api, Reply, key_segment, keys_of, time_of};

/// Asserts the P2.1 key object: the Part 1 fields plus `labels`,
/// `available_at`, `reason` and `failures`, and which are null in which
/// state.
#[track_caller]
fn assert_key_object(body: &Value) {
    let obj = body.as_object().expect("a key object");
    let fields: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "alive_until",
            "available_at",
            "created_at",
            "failures",
            "key",
            "labels",
            "lease_id",
            "leased_until",
            "reason",
            "state",
        ]),
        "{body}"
    );
    time_of(body, "created_at");
    if !body["alive_until"].is_null() {
        time_of(body, "alive_until");
    }
    assert!(body["failures"].is_u64(), "{body}");
    let labels = body["labels"].as_object().expect("`labels` is an object");
    assert!(labels.values().all(Value::is_string), "{body}");
    let leased = body["state"] == "leased";
    assert_eq!(body["lease_id"].is_u64(), leased, "{body}");
    assert_eq!(!body["leased_until"].is_null(), leased, "{body}");
    match body["state"].as_str() {
        Some("free" | "leased") => {
            assert!(body["available_at"].is_null(), "{body}");
            assert!(body["reason"].is_null(), "{body}");
        }
        Some("cooling" | "quarantined") => {
            time_of(body, "available_at");
        }
        Some("disabled") => assert!(body["available_at"].is_null(), "{body}"),
        _ => panic!("`state` is not one of the five: {body}"),
    }
    if leased {
        time_of(body, "leased_until");
    }
}

/// The pool object and every key object of `pool` (or the 404 of an
/// absent pool): what a refused request must leave exactly as it was.
async fn snapshot(api: &Api, pool: &str) -> Result<Value> {
    let info = api.get_pool(pool).await?;
    if info.status == 404 {
        return Ok(json!({"absent": info.body}));
    }
    let keys = api.list_all_keys(pool, None, 1000).await?;
    Ok(json!({"pool": info.expect(200), "keys": keys}))
}

/// Leases from `pool` (asserting 200); the key and its lease id.
async fn lease(api: &Api, pool: &str) -> Result<(String, u64)> {
    let reply = api.lease(pool).await?;
    let body = reply.expect(200);
    assert_key_object(body);
    Ok((reply.str("key"), reply.u64("lease_id")))
}

/// Leases `key` of `pool` (one of `all`): the other free keys are
/// disabled for the lease, then enabled again. Returns the lease id.
async fn lease_this(api: &Api, pool: &str, key: &str, all: &[&str]) -> Result<u64> {
    let mut parked = Vec::new();
    for other in all.iter().filter(|k| **k != key) {
        if api.get_key(pool, other).await?.str("state") == "free" {
            api.disable_key(pool, other, None).await?.expect(200);
            parked.push(*other);
        }
    }
    let (leased, id) = lease(api, pool).await?;
    assert_eq!(leased, key);
    for other in parked {
        api.enable_key(pool, other).await?.expect(200);
    }
    Ok(id)
}

/// The value of the sample `series` (name and labels exactly as
/// rendered) in a `/metrics` text.
#[track_caller]
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().expect("an integer sample"))
    })
}

/// The five counts of a pool object, in the order free, leased, cooling,
/// quarantined, disabled, after checking they add up to `total`.
#[track_caller]
fn counts(pool: &Reply) -> [u64; 5] {
    let c = ["free", "leased", "cooling", "quarantined", "disabled"].map(|s| pool.u64(s));
    assert_eq!(c.iter().sum::<u64>(), pool.u64("total"), "{}", pool.text);
    c
}

// ---- import, generate, labels ----

#[tokio::test]
async fn an_import_adds_the_given_keys_with_their_labels_and_names_the_ones_already_there()
-> Result<()> {
    let app = spawn_app().await;
    let labels = json!({"provider": "openai", "tier/plan": "pro-1", "empty": ""});
    let reply = app
        .import_keys("creds", &["sk-one", "sk-two"], Some(labels.clone()))
        .await?;
    let body = reply.expect(201);
    assert_eq!(keys_of(body), ["sk-one", "sk-two"]);
    assert_eq!(body["existing"], json!([]), "{}", reply.text);
    for key in body["keys"].as_array().unwrap() {
        assert_key_object(key);
        assert_eq!(key["state"], "free");
        assert_eq!(key["labels"], labels);
        assert_eq!(key["failures"], 0);
        assert_eq!(time_of(key, "created_at"), T0_MS);
    }

    // Again with one new key: only it is added; the other keeps its labels.
    let again = app
        .import_keys(
            "creds",
            &["sk-two", "sk-three"],
            Some(json!({"provider": "x"})),
        )
        .await?;
    let body = again.expect(201);
    assert_eq!(keys_of(body), ["sk-three"]);
    assert_eq!(body["existing"], json!(["sk-two"]));
    assert_eq!(body["keys"][0]["labels"], json!({"provider": "x"}));
    assert_eq!(app.get_key("creds", "sk-two").await?.body["labels"], labels);

    // A key twice in one request is added once.
    let twice = app
        .import_keys("creds", &["sk-four", "sk-four"], None)
        .await?;
    let body = twice.expect(201);
    assert_eq!(keys_of(body), ["sk-four"], "{}", twice.text);
    assert_eq!(body["existing"], json!(["sk-four"]), "{}", twice.text);
    assert_eq!(body["keys"][0]["labels"], json!({}));

    let pool = app.get_pool("creds").await?;
    assert_eq!(pool.u64("total"), 4);
    assert_eq!(counts(&pool), [4, 0, 0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn an_import_past_max_keys_per_pool_is_409_but_keys_already_there_do_not_count() -> Result<()>
{
    let app = spawn_app_with(Config {
        limits: Limits {
            max_keys_per_pool: 3,
            ..Limits::DEFAULT
        },
        ..Config::default()
    })
    .await;
    app.import_keys("lim", &["a", "b"], None).await?.expect(201);
    let before = snapshot(&app, "lim").await?;
    app.import_keys("lim", &["c", "d"], None)
        .await?
        .expect_error(409, "key_limit_reached");
    assert_eq!(snapshot(&app, "lim").await?, before, "nothing added");
    // Two given, one new: the pool ends at its limit of 3.
    let reply = app.import_keys("lim", &["b", "c"], None).await?;
    assert_eq!(keys_of(reply.expect(201)), ["c"], "{}", reply.text);
    // A full pool takes a re-import of its own keys: nothing is added.
    let reply = app.import_keys("lim", &["a", "b", "c"], None).await?;
    let body = reply.expect(201);
    assert_eq!(keys_of(body), Vec::<String>::new());
    assert_eq!(body["existing"], json!(["a", "b", "c"]));
    Ok(())
}

#[tokio::test]
async fn generating_with_labels_gives_labelled_keys_and_an_empty_existing_list() -> Result<()> {
    let app = spawn_app().await;
    let reply = app
        .add_keys("gen", json!({"count": 3, "labels": {"team": "search"}}))
        .await?;
    let body = reply.expect(201);
    assert_eq!(body["existing"], json!([]));
    assert_eq!(keys_of(body).len(), 3);
    for key in body["keys"].as_array().unwrap() {
        assert_key_object(key);
        assert_eq!(key["labels"], json!({"team": "search"}));
        assert_eq!(key["key"].as_str().unwrap().len(), 20);
    }
    // No body at all is one unlabelled key, as in Part 1.
    let one = app
        .request(Method::POST, "/v1/pools/gen/keys", None)
        .await?;
    let body = one.expect(201);
    assert_eq!(keys_of(body).len(), 1);
    assert_eq!(body["existing"], json!([]));
    assert_eq!(body["keys"][0]["labels"], json!({}));
    Ok(())
}

#[tokio::test]
async fn an_import_of_10000_keys_of_256_characters_fits_the_body_limit() -> Result<()> {
    let app = spawn_app().await;
    let keys: Vec<String> = (0..MAX_GENERATE).map(|i| format!("{i:0>256}")).collect();
    assert_eq!(keys[0].len(), PoolKey::MAX_LEN);
    let reply = app.add_keys("bulk", json!({ "keys": keys })).await?;
    let body = reply.expect(201);
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(app.get_pool("bulk").await?.u64("total"), 10_000);
    Ok(())
}

#[tokio::test]
async fn an_import_of_10000_keys_that_json_must_escape_fits_the_body_limit() -> Result<()> {
    // `"` and `\` are visible ASCII, so valid in a key, and JSON writes
    // each as two bytes: the largest valid import is about 5.2 MB.
    let app = spawn_app().await;
    let keys: Vec<String> = (0..MAX_GENERATE)
        .map(|i| format!("{i:\\>256}").replace('0', "\""))
        .collect();
    let body = json!({ "keys": keys });
    let size = body.to_string().len();
    assert!(size > 5_000_000, "{size} bytes");
    let reply = app.add_keys("escaped", body).await?;
    assert_eq!(reply.status, 201, "{size} bytes: {}", reply.text);
    Ok(())
}

#[tokio::test]
async fn every_invalid_import_is_400_invalid_keys_and_changes_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.import_keys("imp", &["already"], None)
        .await?
        .expect(201);
    let too_many: Vec<String> = (0..=MAX_GENERATE).map(|i| format!("k{i}")).collect();
    let cases = [
        json!({"keys": "sk-one"}),
        json!({"keys": {"a": "b"}}),
        json!({"keys": []}),
        json!({ "keys": too_many }),
        json!({"keys": ["ok", ""]}),
        json!({"keys": ["ok", "x".repeat(PoolKey::MAX_LEN + 1)]}),
        json!({"keys": ["ok", "has space"]}),
        json!({"keys": ["ok", "tab\there"]}),
        json!({"keys": ["ok", "caf\u{e9}"]}),
        json!({"keys": ["ok", "del\u{7f}"]}),
        json!({"keys": ["ok", 42]}),
        json!({"keys": ["ok", ["nested"]]}),
        json!({"keys": ["ok"], "count": 1}),
    ];
    for pool in ["imp", "fresh"] {
        let before = snapshot(&app, pool).await?;
        for body in &cases {
            let reply = app.add_keys(pool, body.clone()).await?;
            reply.expect_error(400, "invalid_keys");
            // The message names a bad key by position, never by its text.
            for bad in ["has space", "tab\\there", "del"] {
                assert!(!reply.text.contains(bad), "{}", reply.text);
            }
            assert_eq!(snapshot(&app, pool).await?, before, "after {body}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn invalid_labels_are_400_invalid_labels_and_change_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.import_keys("lab", &["already"], None)
        .await?
        .expect(201);
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("l{i}"), json!("v"))).collect();
    let labels = [
        json!("team=search"),
        json!(["team", "search"]),
        json!(7),
        json!({"team": 1}),
        json!({"team": ["a"]}),
        json!({"": "v"}),
        json!({"has space": "v"}),
        json!({"caf\u{e9}": "v"}),
        json!({"n".repeat(65): "v"}),
        json!({"team": "v".repeat(257)}),
        json!({"team": "line\nbreak"}),
        Value::Object(many),
    ];
    for pool in ["lab", "fresh"] {
        let before = snapshot(&app, pool).await?;
        for label in &labels {
            for body in [
                json!({"keys": ["new-key"], "labels": label}),
                json!({"count": 2, "labels": label}),
            ] {
                app.add_keys(pool, body.clone())
                    .await?
                    .expect_error(400, "invalid_labels");
                assert_eq!(snapshot(&app, pool).await?, before, "after {body}");
            }
        }
    }
    // The bounds themselves are taken: 32 labels, 64-character names of
    // the whole alphabet, 256-character values.
    let most: serde_json::Map<String, Value> = (0..32)
        .map(|i| (format!("l{i}"), json!("v".repeat(256))))
        .collect();
    app.add_keys("lab", json!({"count": 1, "labels": most}))
        .await?
        .expect(201);
    let name = format!("Az09._/-{}", "n".repeat(56));
    app.add_keys(
        "lab",
        json!({"count": 1, "labels": {name: "\u{e9}t\u{e9}"}}),
    )
    .await?
    .expect(201);
    Ok(())
}

#[tokio::test]
async fn invalid_counts_are_400_invalid_count_and_change_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("cnt", 1).await?;
    for pool in ["cnt", "fresh"] {
        let before = snapshot(&app, pool).await?;
        for count in [
            json!(0),
            json!(MAX_GENERATE + 1),
            json!(-1),
            json!(1.5),
            json!("3"),
        ] {
            for body in [
                json!({ "count": count }),
                json!({"count": count, "labels": {"a": "b"}}),
            ] {
                app.add_keys(pool, body.clone())
                    .await?
                    .expect_error(400, "invalid_count");
                assert_eq!(snapshot(&app, pool).await?, before, "after {body}");
            }
        }
    }
    Ok(())
}

// ---- release outcomes ----

#[tokio::test]
async fn every_invalid_release_is_400_invalid_outcome_and_leaves_the_lease_as_it_was() -> Result<()>
{
    let app = spawn_app().await;
    app.import_keys("rel", &["only"], None).await?.expect(201);
    let (key, id) = lease(&app, "rel").await?;
    let before = snapshot(&app, "rel").await?;
    let cases = [
        json!({"outcome": "okay"}),
        json!({"outcome": "OK"}),
        json!({"outcome": 1}),
        json!({"outcome": ["ok"]}),
        json!({"lease_id": id, "outcome": "rate-limited"}),
        json!({"retry_after_ms": 1000}),
        json!({"outcome": "ok", "retry_after_ms": 1000}),
        json!({"outcome": "failed", "retry_after_ms": 1000}),
        json!({"outcome": "rate_limited", "retry_after_ms": 0}),
        json!({"outcome": "rate_limited", "retry_after_ms": -5}),
        json!({"outcome": "rate_limited", "retry_after_ms": 1.5}),
        json!({"outcome": "rate_limited", "retry_after_ms": "1000"}),
        json!({"outcome": "rate_limited", "retry_after_ms": Ttl::MAX_MILLIS + 1}),
        json!({"outcome": "failed", "reason": ""}),
        json!({"outcome": "failed", "reason": "r".repeat(257)}),
        json!({"outcome": "failed", "reason": "two\nlines"}),
        json!({"outcome": "failed", "reason": 401}),
        json!({"reason": "\u{0}"}),
    ];
    for body in cases {
        app.release_with("rel", &key, body.clone())
            .await?
            .expect_error(400, "invalid_outcome");
        assert_eq!(snapshot(&app, "rel").await?, before, "after {body}");
    }
    // The largest retry_after_ms and a 256-character reason are taken.
    let reply = app
        .release_with(
            "rel",
            &key,
            json!({"lease_id": id, "outcome": "rate_limited",
                   "retry_after_ms": Ttl::MAX_MILLIS, "reason": "r".repeat(256)}),
        )
        .await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "cooling");
    assert_eq!(time_of(body, "available_at"), T0_MS + Ttl::MAX_MILLIS);
    Ok(())
}

#[tokio::test]
async fn rate_limited_cools_the_key_for_retry_after_ms_or_the_pools_cooldown() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("rl", json!({"cooldown_ms": 10_000}))
        .await?
        .expect(201);
    app.import_keys("rl", &["k"], None).await?.expect(201);

    let (key, id) = lease(&app, "rl").await?;
    let reply = app
        .release_with(
            "rl",
            &key,
            json!({"lease_id": id, "outcome": "rate_limited", "retry_after_ms": 2500,
                   "reason": "upstream 429"}),
        )
        .await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "cooling");
    assert_eq!(time_of(body, "available_at"), T0_MS + 2500);
    assert_eq!(body["reason"], "upstream 429");
    assert_eq!(body["failures"], 0);
    assert_eq!(counts(&app.get_pool("rl").await?), [0, 0, 1, 0, 0]);
    assert_eq!(app.lease("rl").await?.expect_no_free_key(), Some(2500));

    app.advance_ms(2499);
    assert_eq!(app.get_key("rl", &key).await?.str("state"), "cooling");
    assert_eq!(app.lease("rl").await?.expect_no_free_key(), Some(1));
    app.advance_ms(1);
    let free = app.get_key("rl", &key).await?;
    assert_key_object(free.expect(200));
    assert_eq!(free.str("state"), "free");
    assert!(free.body["reason"].is_null() && free.body["available_at"].is_null());

    // Without retry_after_ms: the pool's cooldown_ms.
    let (key, _) = lease(&app, "rl").await?;
    let reply = app
        .release_with("rl", &key, json!({"outcome": "rate_limited"}))
        .await?;
    assert_eq!(
        time_of(reply.expect(200), "available_at"),
        T0_MS + 2500 + 10_000
    );
    assert!(reply.body["reason"].is_null(), "{}", reply.text);
    app.advance_ms(10_000);
    lease(&app, "rl").await?;
    Ok(())
}

#[tokio::test]
async fn failed_counts_up_quarantines_at_max_failures_and_doubles_each_quarantine_in_a_row()
-> Result<()> {
    let app = spawn_app().await;
    app.put_pool("q", json!({"max_failures": 2, "quarantine_ms": 1000}))
        .await?
        .expect(201);
    app.import_keys("q", &["k"], None).await?.expect(201);
    let fail = |reason: &'static str| {
        let app = &app;
        async move {
            let (key, id) = lease(app, "q").await?;
            let reply = app
                .release_with(
                    "q",
                    &key,
                    json!({"lease_id": id, "outcome": "failed", "reason": reason}),
                )
                .await?;
            assert_key_object(reply.expect(200));
            anyhow::Ok(reply)
        }
    };

    let first = fail("401").await?;
    assert_eq!(first.str("state"), "free");
    assert_eq!(first.u64("failures"), 1);
    assert!(first.body["reason"].is_null(), "a free key has no reason");

    let second = fail("401 again").await?;
    assert_eq!(second.str("state"), "quarantined");
    assert_eq!(second.u64("failures"), 2);
    assert_eq!(second.str("reason"), "401 again");
    assert_eq!(time_of(&second.body, "available_at"), T0_MS + 1000);
    assert_eq!(counts(&app.get_pool("q").await?), [0, 0, 0, 1, 0]);
    assert_eq!(app.lease("q").await?.expect_no_free_key(), Some(1000));

    // Out of quarantine on probation: one more failure quarantines it
    // again, for twice as long.
    app.advance_ms(1000);
    let back = app.get_key("q", "k").await?;
    assert_eq!(back.str("state"), "free");
    assert_eq!(back.u64("failures"), 2);
    let third = fail("402").await?;
    assert_eq!(third.str("state"), "quarantined");
    assert_eq!(time_of(&third.body, "available_at"), T0_MS + 1000 + 2000);
    app.advance_ms(1999);
    assert_eq!(app.lease("q").await?.expect_no_free_key(), Some(1));
    app.advance_ms(1);

    // `ok` resets failures and the doubling.
    let (key, id) = lease(&app, "q").await?;
    let ok = app
        .release_with("q", &key, json!({"lease_id": id, "outcome": "ok"}))
        .await?;
    assert_eq!(ok.expect(200)["failures"], 0);
    assert_eq!(ok.str("state"), "free");
    assert_eq!(fail("x").await?.str("state"), "free");
    let again = fail("y").await?;
    assert_eq!(again.str("state"), "quarantined");
    assert_eq!(
        time_of(&again.body, "available_at"),
        T0_MS + 3000 + 1000,
        "back to quarantine_ms after an ok"
    );

    let metrics = app.metrics().await?;
    let text = &metrics.text;
    assert_eq!(
        sample(text, "keyward_quarantines_total{pool=\"q\"}"),
        Some(3)
    );
    assert_eq!(
        sample(text, "keyward_recovered_keys_total{pool=\"q\"}"),
        Some(2)
    );
    Ok(())
}

#[tokio::test]
async fn a_pool_with_max_failures_1_quarantines_on_the_first_failure() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("one", json!({"max_failures": 1}))
        .await?
        .expect(201);
    app.import_keys("one", &["k"], None).await?.expect(201);
    let (key, _) = lease(&app, "one").await?;
    let reply = app
        .release_with("one", &key, json!({"outcome": "failed"}))
        .await?;
    assert_eq!(reply.expect(200)["state"], "quarantined");
    // The default quarantine_ms: 300 s.
    assert_eq!(time_of(&reply.body, "available_at"), T0_MS + 300_000);
    assert!(reply.body["reason"].is_null(), "{}", reply.text);
    Ok(())
}

// ---- disable and enable ----

#[tokio::test]
async fn disabling_a_leased_key_ends_the_lease_and_its_old_lease_id_is_refused_with_409()
-> Result<()> {
    let app = spawn_app().await;
    app.import_keys("d", &["k"], None).await?.expect(201);
    let (key, id) = lease(&app, "d").await?;
    let reply = app.disable_key("d", &key, Some("leaked in a log")).await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "disabled");
    assert_eq!(body["reason"], "leaked in a log");
    assert_eq!(counts(&app.get_pool("d").await?), [0, 0, 0, 0, 1]);

    let stale = app.release("d", &key, Some(id)).await?;
    assert_eq!(stale.status, 409, "{}", stale.text);
    stale.expect_error_shape(409);
    app.keepalive("d", &key, Some(id))
        .await?
        .expect_error(409, "lease_mismatch");
    for outcome in ["ok", "failed", "rate_limited"] {
        app.release_with("d", &key, json!({"lease_id": id, "outcome": outcome}))
            .await?
            .expect_error_shape(409);
    }
    // Nothing will free it by itself: no Retry-After.
    assert_eq!(app.lease("d").await?.expect_no_free_key(), None);
    assert_eq!(app.get_key("d", &key).await?.str("state"), "disabled");

    let enabled = app.enable_key("d", &key).await?;
    assert_key_object(enabled.expect(200));
    assert_eq!(enabled.str("state"), "free");
    assert!(enabled.body["reason"].is_null(), "{}", enabled.text);
    app.release("d", &key, Some(id))
        .await?
        .expect_error(409, "not_leased");
    let (_, new_id) = lease(&app, "d").await?;
    assert!(new_id > id, "lease ids only grow: {new_id} after {id}");
    Ok(())
}

#[tokio::test]
async fn a_disabled_or_deleted_key_stays_out_of_use_when_its_old_cooldown_would_end() -> Result<()>
{
    let app = spawn_app().await;
    app.import_keys("stale", &["cool", "gone"], None)
        .await?
        .expect(201);
    for key in ["cool", "gone"] {
        let id = lease_this(&app, "stale", key, &["cool", "gone"]).await?;
        let reply = app
            .release_with(
                "stale",
                key,
                json!({"lease_id": id, "outcome": "rate_limited", "retry_after_ms": 1000,
                       "reason": "429"}),
            )
            .await?;
        assert_eq!(reply.expect(200)["state"], "cooling");
    }
    let disabled = app.disable_key("stale", "cool", Some("revoked")).await?;
    let body = disabled.expect(200);
    assert_key_object(body);
    assert!(body["available_at"].is_null(), "{body}");
    assert_eq!(body["reason"], "revoked");
    // Disabled again: the new reason replaces the old.
    let again = app
        .disable_key("stale", "cool", Some("revoked twice"))
        .await?;
    assert_eq!(again.expect(200)["reason"], "revoked twice");
    app.delete_key("stale", "gone").await?.expect(204);

    // No key will become free by itself now: no Retry-After.
    assert_eq!(app.lease("stale").await?.expect_no_free_key(), None);
    app.advance_ms(2000);
    assert_eq!(app.lease("stale").await?.expect_no_free_key(), None);
    let key = app.get_key("stale", "cool").await?;
    assert_eq!(key.expect(200)["state"], "disabled");
    assert_eq!(key.body["reason"], "revoked twice");
    app.get_key("stale", "gone")
        .await?
        .expect_error(404, "key_not_found");
    assert_eq!(counts(&app.get_pool("stale").await?), [0, 0, 0, 0, 1]);
    // Imported again while disabled: named as existing, left as it is.
    let reimport = app.import_keys("stale", &["cool", "gone"], None).await?;
    let body = reimport.expect(201);
    assert_eq!(keys_of(body), ["gone"]);
    assert_eq!(body["existing"], json!(["cool"]));
    assert_eq!(app.get_key("stale", "cool").await?.str("state"), "disabled");
    Ok(())
}

#[tokio::test]
async fn enable_frees_cooling_quarantined_and_disabled_keys_and_leaves_free_and_leased_ones()
-> Result<()> {
    let app = spawn_app().await;
    app.put_pool("e", json!({"max_failures": 1}))
        .await?
        .expect(201);
    app.import_keys("e", &["cool", "quar", "dis", "free", "held"], None)
        .await?
        .expect(201);
    let all = ["cool", "quar", "dis", "free", "held"];
    for key in ["cool", "quar", "held"] {
        lease_this(&app, "e", key, &all).await?;
    }
    app.release_with("e", "cool", json!({"outcome": "rate_limited"}))
        .await?
        .expect(200);
    app.release_with("e", "quar", json!({"outcome": "failed", "reason": "402"}))
        .await?
        .expect(200);
    app.disable_key("e", "dis", None).await?.expect(200);
    assert_eq!(counts(&app.get_pool("e").await?), [1, 1, 1, 1, 1]);

    let held = app.get_key("e", "held").await?.body;
    for key in ["free", "held"] {
        let before = app.get_key("e", key).await?.body;
        let reply = app.enable_key("e", key).await?;
        assert_eq!(*reply.expect(200), before, "{key} is unchanged");
    }
    assert_eq!(app.get_key("e", "held").await?.body, held);
    for key in ["cool", "quar", "dis"] {
        let reply = app.enable_key("e", key).await?;
        let body = reply.expect(200);
        assert_key_object(body);
        assert_eq!(body["state"], "free", "{key}");
        assert_eq!(body["failures"], 0, "{key}");
        assert!(body["reason"].is_null() && body["available_at"].is_null());
    }
    assert_eq!(counts(&app.get_pool("e").await?), [4, 1, 0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn an_invalid_disable_reason_is_400_invalid_reason_and_changes_nothing() -> Result<()> {
    let app = spawn_app().await;
    app.import_keys("r", &["k"], None).await?.expect(201);
    let before = snapshot(&app, "r").await?;
    for body in [
        json!({"reason": ""}),
        json!({"reason": "r".repeat(257)}),
        json!({"reason": "bell\u{7}"}),
        json!({"reason": 5}),
        json!({"reason": ["x"]}),
        json!({"why": "x"}),
    ] {
        app.request(
            Method::POST,
            "/v1/pools/r/keys/k/disable",
            Some(body.clone()),
        )
        .await?
        .expect_error(400, "invalid_reason");
        assert_eq!(snapshot(&app, "r").await?, before, "after {body}");
    }
    let longest = "r".repeat(256);
    let reply = app.disable_key("r", "k", Some(&longest)).await?;
    assert_eq!(reply.expect(200)["reason"], longest.as_str());
    Ok(())
}

#[tokio::test]
async fn disable_and_enable_of_an_unknown_key_or_pool_are_404_key_not_found() -> Result<()> {
    let app = spawn_app().await;
    app.import_keys("p", &["k"], None).await?.expect(201);
    for (pool, key) in [("p", "nope"), ("no-such-pool", "k")] {
        app.disable_key(pool, key, Some("x"))
            .await?
            .expect_error(404, "key_not_found");
        app.enable_key(pool, key)
            .await?
            .expect_error(404, "key_not_found");
    }
    assert_eq!(app.get_pool("no-such-pool").await?.status, 404);
    Ok(())
}

// ---- no_free_key and Retry-After ----

#[tokio::test]
async fn no_free_key_carries_retry_after_only_when_some_key_will_become_free_by_itself()
-> Result<()> {
    let app = spawn_app().await;
    // No pool, an empty pool: nothing will ever be free.
    assert_eq!(app.lease("absent").await?.expect_no_free_key(), None);
    app.put_pool("ra", json!({"lease_ttl_ms": 1500}))
        .await?
        .expect(201);
    assert_eq!(app.lease("ra").await?.expect_no_free_key(), None);

    app.import_keys("ra", &["a", "b"], None).await?.expect(201);
    app.disable_key("ra", "b", None).await?.expect(200);
    lease(&app, "ra").await?;
    let reply = app.lease("ra").await?;
    assert_eq!(reply.expect_no_free_key(), Some(1500));
    assert_eq!(reply.header("retry-after"), Some("2"));

    app.advance_ms(500);
    let reply = app.lease("ra").await?;
    assert_eq!(reply.expect_no_free_key(), Some(1000));
    assert_eq!(reply.header("retry-after"), Some("1"));
    app.advance_ms(999);
    assert_eq!(app.lease("ra").await?.expect_no_free_key(), Some(1));
    app.advance_ms(1);
    // The lease ended: its key is leased again at once.
    assert_eq!(lease(&app, "ra").await?.0, "a");

    // The earliest of a lease, a cooldown and a quarantine is the one named.
    app.enable_key("ra", "b").await?.expect(200);
    let (b, _) = lease(&app, "ra").await?;
    app.release_with(
        "ra",
        &b,
        json!({"outcome": "rate_limited", "retry_after_ms": 700}),
    )
    .await?
    .expect(200);
    assert_eq!(app.lease("ra").await?.expect_no_free_key(), Some(700));

    // Every key disabled: neither the field nor the header.
    for key in ["a", "b"] {
        app.disable_key("ra", key, None).await?.expect(200);
    }
    let reply = app.lease("ra").await?;
    assert_eq!(reply.expect_no_free_key(), None);
    assert_eq!(reply.header("retry-after"), None);
    assert!(reply.body["error"].get("retry_after_ms").is_none());
    Ok(())
}

#[tokio::test]
async fn compat_lease_with_no_free_key_answers_as_before_with_no_retry_after() -> Result<()> {
    let app = spawn_app().await;
    let empty = app.random_api_key(Method::GET, true, None).await?;
    app.compat_new_key().await?;
    app.random_api_key(Method::GET, true, None)
        .await?
        .expect(200);
    // Now a lease will end, which /v1 would announce; compat must not.
    let busy = app.random_api_key(Method::GET, true, None).await?;
    assert_eq!(
        app.lease("default").await?.expect_no_free_key(),
        Some(60_000)
    );
    for reply in [&empty, &busy] {
        assert_eq!(reply.status, 404);
        assert_eq!(reply.text, r#"{"message":"No available key found"}"#);
        assert_eq!(reply.header("retry-after"), None);
    }
    assert_eq!(empty.headers.len(), busy.headers.len());
    Ok(())
}

// ---- pool settings ----

#[tokio::test]
async fn the_pool_object_takes_the_recovery_settings_and_counts_every_state() -> Result<()> {
    let app = spawn_app().await;
    let created = app.put_pool("s", json!({})).await?;
    let body = created.expect(201);
    assert_eq!(body["cooldown_ms"], 60_000);
    assert_eq!(body["max_failures"], 3);
    assert_eq!(body["quarantine_ms"], 300_000);
    assert_eq!(body["keepalive_ttl_ms"], 300_000);
    let fields: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "name",
            "lease_ttl_ms",
            "keepalive_ttl_ms",
            "key_length",
            "cooldown_ms",
            "max_failures",
            "quarantine_ms",
            "total",
            "free",
            "leased",
            "cooling",
            "quarantined",
            "disabled",
        ])
    );

    let changed = app
        .put_pool(
            "s",
            json!({"cooldown_ms": 1, "max_failures": 1000, "quarantine_ms": Ttl::MAX_MILLIS,
                   "keepalive_ttl_ms": 0}),
        )
        .await?;
    let body = changed.expect(200);
    assert_eq!(
        (
            &body["cooldown_ms"],
            &body["max_failures"],
            &body["quarantine_ms"],
            &body["keepalive_ttl_ms"]
        ),
        (&json!(1), &json!(1000), &json!(Ttl::MAX_MILLIS), &json!(0))
    );
    // Absent fields keep their value.
    let kept = app.put_pool("s", json!({"lease_ttl_ms": 5})).await?;
    assert_eq!(kept.expect(200)["max_failures"], 1000);
    assert_eq!(kept.body["keepalive_ttl_ms"], 0);

    let before = snapshot(&app, "s").await?;
    for bad in [
        json!({"max_failures": 0}),
        json!({"max_failures": 1001}),
        json!({"max_failures": -1}),
        json!({"cooldown_ms": 0}),
        json!({"cooldown_ms": Ttl::MAX_MILLIS + 1}),
        json!({"quarantine_ms": 0}),
        json!({"keepalive_ttl_ms": -1}),
        json!({"keepalive_ttl_ms": Ttl::MAX_MILLIS + 1}),
    ] {
        app.put_pool("s", bad.clone())
            .await?
            .expect_error(400, "invalid_settings");
        assert_eq!(snapshot(&app, "s").await?, before, "after {bad}");
    }
    Ok(())
}

#[tokio::test]
async fn with_keepalive_ttl_ms_0_keys_have_no_alive_until_and_are_never_purged() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool(
        "upstream",
        json!({"keepalive_ttl_ms": 0, "lease_ttl_ms": 1000}),
    )
    .await?
    .expect(201);
    let reply = app.import_keys("upstream", &["sk-a"], None).await?;
    assert!(
        reply.expect(201)["keys"][0]["alive_until"].is_null(),
        "{}",
        reply.text
    );
    let generated = app.generate_keys("upstream", 1).await?;
    assert!(generated.expect(201)["keys"][0]["alive_until"].is_null());
    // Far past any keep-alive a pool could have asked for.
    app.advance_ms(Ttl::MAX_MILLIS + 1);
    let key = app.get_key("upstream", "sk-a").await?;
    assert_key_object(key.expect(200));
    assert!(key.body["alive_until"].is_null());
    let (leased, id) = lease(&app, "upstream").await?;
    let kept = app.keepalive("upstream", &leased, Some(id)).await?;
    assert!(kept.expect(200)["alive_until"].is_null(), "{}", kept.text);
    assert_eq!(app.get_pool("upstream").await?.u64("total"), 2);
    Ok(())
}

// ---- listing ----

#[tokio::test]
async fn listing_pages_through_every_key_exactly_once_and_filters_by_state() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("list", json!({"max_failures": 1}))
        .await?
        .expect(201);
    let names: Vec<String> = (0..25).map(|i| format!("key-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    app.import_keys("list", &refs, Some(json!({"set": "a"})))
        .await?
        .expect(201);

    let mut want: BTreeMap<String, &str> = names.iter().map(|k| (k.clone(), "free")).collect();
    for i in 0..10 {
        let (key, _) = lease(&app, "list").await?;
        let state = match i {
            0..3 => {
                app.release_with("list", &key, json!({"outcome": "rate_limited"}))
                    .await?
                    .expect(200);
                "cooling"
            }
            3..5 => {
                app.release_with("list", &key, json!({"outcome": "failed"}))
                    .await?
                    .expect(200);
                "quarantined"
            }
            _ => "leased",
        };
        want.insert(key, state);
    }
    let free: Vec<String> = want
        .iter()
        .filter(|(_, s)| **s == "free")
        .map(|(k, _)| k.clone())
        .take(4)
        .collect();
    for key in free {
        app.disable_key("list", &key, None).await?.expect(200);
        want.insert(key, "disabled");
    }

    for limit in [1, 4, 25, 1000] {
        let listed = app.list_all_keys("list", None, limit).await?;
        let mut seen = BTreeMap::new();
        for key in &listed {
            assert_key_object(key);
            assert_eq!(key["labels"], json!({"set": "a"}));
            let text = key["key"].as_str().unwrap().to_owned();
            let state = key["state"].as_str().unwrap().to_owned();
            assert!(seen.insert(text, state).is_none(), "listed twice: {key}");
        }
        let got: BTreeMap<String, &str> =
            seen.iter().map(|(k, s)| (k.clone(), s.as_str())).collect();
        assert_eq!(got, want, "limit={limit}");
    }
    let counts = counts(&app.get_pool("list").await?);
    for (i, state) in ["free", "leased", "cooling", "quarantined", "disabled"]
        .into_iter()
        .enumerate()
    {
        let expected: BTreeSet<&String> = want
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(expected.len() as u64, counts[i], "{state}");
        for limit in [1, 3, 100] {
            let listed = app.list_all_keys("list", Some(state), limit).await?;
            let got: BTreeSet<&str> = listed
                .iter()
                .map(|k| {
                    assert_eq!(k["state"], state, "{k}");
                    k["key"].as_str().unwrap()
                })
                .collect();
            assert_eq!(got.len(), listed.len(), "a key listed twice");
            assert_eq!(
                got,
                expected.iter().map(|k| k.as_str()).collect(),
                "{state}, limit={limit}"
            );
        }
    }
    // One page of everything ends with a null cursor.
    let page = app.list_keys("list", "limit=1000").await?;
    assert!(page.expect(200)["next_cursor"].is_null(), "{}", page.text);
    // An empty pool lists nothing.
    app.put_pool("empty", json!({})).await?.expect(201);
    let page = app.list_keys("empty", "").await?;
    assert_eq!(*page.expect(200), json!({"keys": [], "next_cursor": null}));
    Ok(())
}

#[tokio::test]
async fn a_bad_listing_query_is_400_invalid_query_and_an_unknown_pool_404() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("q", 3).await?;
    let first = app.list_keys("q", "limit=1").await?;
    let cursor = first.expect(200)["next_cursor"]
        .as_str()
        .expect("a cursor after a page of 1 of 3")
        .to_owned();
    for query in [
        "state=bogus".to_owned(),
        "state=FREE".to_owned(),
        "state=".to_owned(),
        "state=free&state=leased".to_owned(),
        "limit=0".to_owned(),
        "limit=1001".to_owned(),
        "limit=ten".to_owned(),
        "limit=-1".to_owned(),
        "cursor=".to_owned(),
        "cursor=!!!!".to_owned(),
        "cursor=a".to_owned(),
        format!("cursor={cursor}="),
        format!("cursor={cursor}&cursor={cursor}"),
        "sort=key".to_owned(),
        "State=free".to_owned(),
    ] {
        app.list_keys("q", &query)
            .await?
            .expect_error(400, "invalid_query");
    }
    // A well-formed cursor that this listing did not give out: the
    // base64url of text that is no position in a pool (a pool listing's
    // cursor, say).
    let pools = app.list_pools("limit=1").await?;
    let pool_cursor = pools.expect(200)["next_cursor"].as_str().map(str::to_owned);
    for bad in ["aGVsbG8", "LTE", "ZGVmYXVsdA"]
        .into_iter()
        .map(str::to_owned)
        .chain(pool_cursor)
    {
        app.list_keys("q", &format!("cursor={bad}"))
            .await?
            .expect_error(400, "invalid_query");
    }
    app.list_keys("q", &format!("cursor={cursor}"))
        .await?
        .expect(200);
    app.list_keys("absent", "")
        .await?
        .expect_error(404, "pool_not_found");
    app.list_keys("absent", "state=free&limit=5")
        .await?
        .expect_error(404, "pool_not_found");
    app.list_keys("bad%20name", "")
        .await?
        .expect_error(400, "invalid_name");
    Ok(())
}

// ---- keys that need percent-encoding ----

#[tokio::test]
async fn keys_with_slash_percent_question_mark_or_hash_work_by_their_percent_encoded_path()
-> Result<()> {
    let app = spawn_app().await;
    let odd = [
        "a/b",
        "50%",
        "why?",
        "#frag",
        "x/%?#y",
        "%2F",
        "a+b=c&d",
        "~!*'();:@$,[]",
    ];
    for (i, key) in odd.into_iter().enumerate() {
        let pool = format!("odd{i}");
        let reply = app.import_keys(&pool, &[key], None).await?;
        assert_eq!(keys_of(reply.expect(201)), [key]);
        let path = key_segment(key);

        let got = app.get_key(&pool, &path).await?;
        assert_eq!(got.expect(200)["key"], key, "GET {path}");
        let (leased, id) = lease(&app, &pool).await?;
        assert_eq!(leased, key);
        app.keepalive(&pool, &path, Some(id)).await?.expect(200);
        let cooled = app
            .release_with(
                &pool,
                &path,
                json!({"lease_id": id, "outcome": "rate_limited", "retry_after_ms": 10}),
            )
            .await?;
        assert_eq!(cooled.expect(200)["key"], key);
        assert_eq!(cooled.str("state"), "cooling");
        assert_eq!(app.enable_key(&pool, &path).await?.str("state"), "free");
        assert_eq!(
            app.disable_key(&pool, &path, None).await?.str("state"),
            "disabled"
        );
        let listed = app.list_all_keys(&pool, Some("disabled"), 10).await?;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["key"], key);
        app.delete_key(&pool, &path).await?.expect(204);
        app.get_key(&pool, &path)
            .await?
            .expect_error(404, "key_not_found");
    }
    // `%2F` stands for the key `/`, never for the key `%2F` itself.
    app.import_keys("slash", &["/"], None).await?.expect(201);
    assert_eq!(app.get_key("slash", "%2F").await?.str("key"), "/");
    app.get_key("slash", "%252F")
        .await?
        .expect_error(404, "key_not_found");
    Ok(())
}

/// `GET path` on a fresh connection, byte for byte as given (no client
/// normalises it); the status and the JSON body (at most 10 s).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, body))
}

#[tokio::test]
async fn the_keys_dot_and_dot_dot_are_imported_and_the_server_serves_them_by_path() -> Result<()> {
    // URL parsers (WHATWG: reqwest, browsers) resolve `.`/`..` and even
    // `%2E`/`%2E%2E` as dot segments before sending, so only a client that
    // sends the path as is reaches these keys; the server itself must.
    let app = spawn_app().await;
    let reply = app.import_keys("dots", &[".", ".."], None).await?;
    assert_eq!(keys_of(reply.expect(201)), [".", ".."]);
    for (path, key) in [("%2E", "."), ("%2E%2E", ".."), ("%2e%2e", "..")] {
        let (status, body) = raw_get(app.addr, &format!("/v1/pools/dots/keys/{path}")).await?;
        assert_eq!((status, &body["key"]), (200, &json!(key)), "{path}: {body}");
    }
    Ok(())
}

// ---- Part 1 shapes ----

#[tokio::test]
async fn part_1_releases_with_no_body_an_empty_body_or_only_a_lease_id_still_work() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("p1", 1).await?;
    let (key, id) = lease(&app, "p1").await?;
    let reply = app.release("p1", &key, Some(id)).await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "free");
    assert_eq!(body["failures"], 0);

    let (key, _) = lease(&app, "p1").await?;
    let reply = app.release("p1", &key, None).await?;
    assert_eq!(reply.expect(200)["state"], "free");

    // An `ok` with a reason: free, and a free key keeps no reason.
    let (key, _) = lease(&app, "p1").await?;
    let reply = app
        .release_with("p1", &key, json!({"outcome": "ok", "reason": "fine"}))
        .await?;
    assert_eq!(reply.expect(200)["state"], "free");
    assert!(reply.body["reason"].is_null(), "{}", reply.text);

    let (key, _) = lease(&app, "p1").await?;
    let reply = app
        .request(
            Method::POST,
            &format!("/v1/pools/p1/keys/{key}/release"),
            None,
        )
        .await?;
    assert_eq!(reply.expect(200)["state"], "free");

    // A release of a free key and a wrong lease id answer as in Part 1.
    app.release("p1", &key, None)
        .await?
        .expect_error(409, "not_leased");
    let (key, id) = lease(&app, "p1").await?;
    app.release("p1", &key, Some(id + 1))
        .await?
        .expect_error(409, "lease_mismatch");
    app.request(
        Method::POST,
        &format!("/v1/pools/p1/keys/{key}/release"),
        Some(json!({"lease_id": "one"})),
    )
    .await?
    .expect_error(400, "invalid_lease_id");
    // Part 1 fields keep their meaning on a leased key.
    let leased = app.get_key("p1", &key).await?;
    assert_eq!(leased.u64("lease_id"), id);
    assert_eq!(time_of(&leased.body, "leased_until"), T0_MS + 60_000);
    assert_eq!(time_of(&leased.body, "alive_until"), T0_MS + 300_000);
    Ok(())
}

// ---- metrics ----

#[tokio::test]
async fn metrics_count_keys_in_every_state_and_releases_by_outcome() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("m", json!({"max_failures": 1}))
        .await?
        .expect(201);
    app.import_keys("m", &["a", "b", "c", "d", "e", "f"], None)
        .await?
        .expect(201);
    let release = |outcome: &'static str| {
        let app = &app;
        async move {
            let (key, _) = lease(app, "m").await?;
            app.release_with("m", &key, json!({ "outcome": outcome }))
                .await?
                .expect(200);
            anyhow::Ok(key)
        }
    };
    release("ok").await?;
    release("ok").await?;
    release("rate_limited").await?;
    release("failed").await?;
    // Refused releases are not counted.
    let (held, _) = lease(&app, "m").await?;
    app.release_with("m", &held, json!({"outcome": "meh"}))
        .await?
        .expect_error(400, "invalid_outcome");
    let free = app.list_all_keys("m", Some("free"), 10).await?;
    let free_key = free[0]["key"].as_str().unwrap().to_owned();
    app.disable_key("m", &free_key, None).await?.expect(200);
    let pool = app.get_pool("m").await?;
    assert_eq!(counts(&pool), [2, 1, 1, 1, 1]);

    let metrics = app.metrics().await?;
    let text = &metrics.text;
    for (state, n) in [
        ("total", 6),
        ("free", 2),
        ("leased", 1),
        ("cooling", 1),
        ("quarantined", 1),
        ("disabled", 1),
    ] {
        let series = format!("keyward_pool_keys{{pool=\"m\",state=\"{state}\"}}");
        assert_eq!(sample(text, &series), Some(n), "{series} in {text}");
    }
    for (outcome, n) in [("ok", 2), ("rate_limited", 1), ("failed", 1)] {
        let series = format!("keyward_release_outcomes_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(text, &series), Some(n), "{series} in {text}");
    }
    assert_eq!(
        sample(text, "keyward_quarantines_total{pool=\"m\"}"),
        Some(1)
    );
    assert_eq!(
        sample(text, "keyward_recovered_keys_total{pool=\"m\"}"),
        Some(0)
    );
    Ok(())
}

// ---- secrets ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_keys_never_reach_the_logs_or_metrics_even_through_errors() -> Result<()> {
    const PLAIN: &str = "sk-live-PLAINsecret0123456789";
    const ODD: &str = "sk-live/ODD%secret?x#y-42";
    const INVALID: &str = "sk-live INVALIDsecret";
    let server = crate::keyward()
        .log_level("trace")
        .start_listening()
        .await?;
    let api = &server.api;
    let odd = key_segment(ODD);
    let mut replies = vec![
        api.import_keys("vault", &[PLAIN, ODD], Some(json!({"env": "prod"})))
            .await?,
        api.import_keys("vault", &[PLAIN], None).await?,
        api.import_keys("vault", &["fine", INVALID], None).await?,
        api.add_keys("vault", json!({"keys": [PLAIN], "count": 1}))
            .await?,
        api.add_keys(
            "vault",
            json!({"keys": [PLAIN], "labels": {"bad label": PLAIN}}),
        )
        .await?,
    ];
    for path in [PLAIN.to_owned(), odd.clone()] {
        replies.extend([
            api.release_with("vault", &path, json!({"outcome": "bogus"}))
                .await?,
            api.release_with(
                "vault",
                &path,
                json!({"outcome": "ok", "retry_after_ms": 5}),
            )
            .await?,
            api.release_with("vault", &path, json!({"outcome": "failed", "reason": "\n"}))
                .await?,
            api.release("vault", &path, None).await?,
            api.release("vault", &path, Some(999)).await?,
            api.keepalive("vault", &path, Some(999)).await?,
            api.request(
                Method::POST,
                &format!("/v1/pools/vault/keys/{path}/disable"),
                Some(json!({"reason": 7})),
            )
            .await?,
            api.get_key("elsewhere", &path).await?,
            api.enable_key("elsewhere", &path).await?,
            api.disable_key("elsewhere", &path, None).await?,
        ]);
    }
    for _ in 0..2 {
        let reply = api.lease("vault").await?;
        let (key, id) = (reply.str("key"), reply.u64("lease_id"));
        let path = key_segment(&key);
        replies.push(
            api.release_with(
                "vault",
                &path,
                json!({"lease_id": id, "outcome": "rate_limited", "reason": "429"}),
            )
            .await?,
        );
        replies.push(api.release("vault", &path, Some(id)).await?);
    }
    replies.push(api.lease("vault").await?);
    replies.push(api.list_keys("vault", "limit=1").await?);
    replies.push(api.list_keys("vault", "cursor=c2stbGl2ZQ").await?);
    replies.push(api.disable_key("vault", PLAIN, Some("rotated")).await?);
    replies.push(api.enable_key("vault", &odd).await?);

    let mut errors = 0;
    for reply in &replies {
        assert!(reply.status < 500, "{} {}", reply.status, reply.text);
        if reply.status >= 400 {
            errors += 1;
            for secret in [PLAIN, ODD, INVALID] {
                assert!(
                    !reply.text.contains(secret),
                    "an error message quotes a key: {}",
                    reply.text
                );
            }
        }
    }
    assert!(errors >= 20, "only {errors} requests failed");

    let metrics = api.metrics().await?;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    for secret in [PLAIN, ODD, INVALID, odd.as_str()] {
        assert!(!metrics.text.contains(secret), "/metrics shows {secret:?}");
    }

    let lines = server.stop_and_keep_logs().await?.lines();
    assert!(lines.len() > 10, "trace logging wrote little: {lines:?}");
    for secret in [
        PLAIN,
        ODD,
        INVALID,
        odd.as_str(),
        "PLAINsecret",
        "ODD%",
        "INVALIDsecret",
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "the logs show {secret:?}: {leaks:?}");
    }
    Ok(())
}
