//! `/v1/pools`: settings, generation, leasing, release with fencing,
//! keep-alive, deletion and expiry on a manual clock.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::app::{T0_MS, TestApp, spawn_app};
use keyward_testkit::client::{Reply, time_of};

/// Asserts the key object's shape: the Part 1 fields plus the credential
/// fields (labels, available_at, reason, failures), times in RFC 3339 with
/// ms, lease fields null exactly when free.
#[track_caller]
fn assert_key_object(body: &Value) {
    let obj = body.as_object().expect("a key object");
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "alive_until",
            "available_at",
            "created_at",
            "failures",
            "key",
            "labels",
            "lease_id",
            "leased_until",
            "reason",
            "state"
        ],
        "{body}"
    );
    assert!(body["labels"].is_object(), "{body}");
    assert!(body["failures"].is_u64(), "{body}");
    time_of(body, "created_at");
    time_of(body, "alive_until");
    match body["state"].as_str() {
        Some("free") => {
            assert!(body["lease_id"].is_null(), "{body}");
            assert!(body["leased_until"].is_null(), "{body}");
        }
        Some("leased") => {
            assert!(body["lease_id"].is_u64(), "{body}");
            time_of(body, "leased_until");
        }
        _ => panic!("`state` is neither free nor leased: {body}"),
    }
}

#[tokio::test]
async fn default_pool_exists_from_the_start_with_the_server_settings() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.get_pool("default").await?;
    assert_eq!(
        *reply.expect(200),
        json!({
            "name": "default",
            "lease_ttl_ms": 60_000,
            "keepalive_ttl_ms": 300_000,
            "key_length": 20,
            "cooldown_ms": 60_000,
            "max_failures": 3,
            "quarantine_ms": 300_000,
            "total": 0,
            "free": 0,
            "leased": 0,
            "cooling": 0,
            "quarantined": 0,
            "disabled": 0,
        })
    );
    Ok(())
}

#[tokio::test]
async fn put_pool_creates_with_201_then_changes_with_200_keeping_absent_fields() -> Result<()> {
    let app = spawn_app().await;
    let created = app
        .put_pool("p1", json!({"lease_ttl_ms": 5000, "key_length": 32}))
        .await?;
    assert_eq!(
        *created.expect(201),
        json!({
            "name": "p1",
            "lease_ttl_ms": 5000,
            "keepalive_ttl_ms": 300_000,
            "key_length": 32,
            "cooldown_ms": 60_000,
            "max_failures": 3,
            "quarantine_ms": 300_000,
            "total": 0,
            "free": 0,
            "leased": 0,
            "cooling": 0,
            "quarantined": 0,
            "disabled": 0,
        })
    );
    let changed = app
        .put_pool("p1", json!({"keepalive_ttl_ms": 9000}))
        .await?;
    let body = changed.expect(200);
    assert_eq!(body["lease_ttl_ms"], 5000);
    assert_eq!(body["keepalive_ttl_ms"], 9000);
    assert_eq!(body["key_length"], 32);
    assert_eq!(app.get_pool("p1").await?.expect(200), body);
    Ok(())
}

#[tokio::test]
async fn put_pool_with_an_empty_body_creates_it_with_the_server_defaults() -> Result<()> {
    let app = spawn_app().await;
    let reply = app
        .request_raw(Method::PUT, "/v1/pools/plain", None, None)
        .await?;
    let body = reply.expect(201);
    assert_eq!(body["lease_ttl_ms"], 60_000);
    assert_eq!(body["keepalive_ttl_ms"], 300_000);
    assert_eq!(body["key_length"], 20);
    app.put_pool("default", json!({})).await?.expect(200);
    Ok(())
}

#[tokio::test]
async fn put_pool_refuses_bad_settings_with_invalid_settings_and_creates_nothing() -> Result<()> {
    let app = spawn_app().await;
    for bad in [
        json!({"lease_ttl_ms": 0}),
        json!({"keepalive_ttl_ms": -1}),
        json!({"cooldown_ms": 0}),
        json!({"quarantine_ms": 0}),
        json!({"max_failures": 0}),
        json!({"max_failures": 1001}),
        json!({"max_failures": "3"}),
        json!({"lease_ttl_ms": -1}),
        json!({"lease_ttl_ms": 1.5}),
        json!({"lease_ttl_ms": "60s"}),
        json!({"keepalive_ttl_ms": true}),
        json!({"key_length": 7}),
        json!({"key_length": 129}),
        json!({"key_length": "20"}),
        json!([1, 2]),
        json!("settings"),
    ] {
        let reply = app.put_pool("fresh", bad.clone()).await?;
        assert_eq!(reply.status, 400, "{bad} -> {}", reply.text);
        reply.expect_error(400, "invalid_settings");
    }
    app.get_pool("fresh")
        .await?
        .expect_error(404, "pool_not_found");
    Ok(())
}

#[tokio::test]
async fn key_length_accepts_8_to_128() -> Result<()> {
    let app = spawn_app().await;
    for len in [8_u64, 128] {
        let pool = format!("len{len}");
        app.put_pool(&pool, json!({ "key_length": len }))
            .await?
            .expect(201);
        let keys = app.new_keys(&pool, 3).await?;
        assert!(keys.iter().all(|k| k.len() as u64 == len), "{keys:?}");
    }
    Ok(())
}

#[tokio::test]
async fn get_pool_of_an_unknown_pool_is_404_pool_not_found() -> Result<()> {
    let app = spawn_app().await;
    app.get_pool("nope")
        .await?
        .expect_error(404, "pool_not_found");
    Ok(())
}

#[tokio::test]
async fn generate_keys_returns_201_with_20_char_alphanumeric_free_keys() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.generate_keys("default", 5).await?;
    let body = reply.expect(201);
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 2, "`keys` and `existing`: {}", reply.text);
    assert_eq!(body["existing"], json!([]));
    let keys = body["keys"].as_array().expect("`keys` is an array");
    assert_eq!(keys.len(), 5);
    let mut seen = HashSet::new();
    for k in keys {
        assert_key_object(k);
        assert_eq!(k["state"], "free");
        let key = k["key"].as_str().expect("key text");
        assert_eq!(key.len(), 20, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        assert!(seen.insert(key.to_owned()), "duplicate {key}");
        assert_eq!(time_of(k, "created_at"), T0_MS);
        assert_eq!(time_of(k, "alive_until"), T0_MS + 300_000);
    }
    assert_eq!(keys[0]["created_at"], "2026-01-01T00:00:00.000Z");
    let pool = app.get_pool("default").await?;
    assert_eq!(pool.u64("total"), 5);
    assert_eq!(pool.u64("free"), 5);
    assert_eq!(pool.u64("leased"), 0);
    Ok(())
}

#[tokio::test]
async fn generate_keys_defaults_to_one_key_with_an_empty_or_absent_body() -> Result<()> {
    let app = spawn_app().await;
    for body in [None, Some(b"{}".to_vec()), Some(b"  ".to_vec())] {
        let reply = app
            .request_raw(
                Method::POST,
                "/v1/pools/default/keys",
                body,
                Some("application/json"),
            )
            .await?;
        assert_eq!(reply.expect(201)["keys"].as_array().map(Vec::len), Some(1));
    }
    Ok(())
}

#[tokio::test]
async fn generate_keys_creates_an_absent_pool_with_the_defaults() -> Result<()> {
    let app = spawn_app().await;
    app.get_pool("implicit")
        .await?
        .expect_error(404, "pool_not_found");
    app.new_keys("implicit", 2).await?;
    let pool = app.get_pool("implicit").await?;
    let body = pool.expect(200);
    assert_eq!(body["name"], "implicit");
    assert_eq!(body["lease_ttl_ms"], 60_000);
    assert_eq!(body["keepalive_ttl_ms"], 300_000);
    assert_eq!(body["total"], 2);
    Ok(())
}

#[tokio::test]
async fn generate_keys_accepts_1_to_10000_and_refuses_other_counts_with_invalid_count() -> Result<()>
{
    let app = spawn_app().await;
    let keys = app.new_keys("big", 10_000).await?;
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 10_000);
    for bad in [
        json!({"count": 0}),
        json!({"count": 10_001}),
        json!({"count": -1}),
        json!({"count": 2.5}),
        json!({"count": "3"}),
        json!({"count": null, "extra": 1}),
        json!("3"),
        json!(3),
    ] {
        let reply = app
            .request(Method::POST, "/v1/pools/other/keys", Some(bad.clone()))
            .await?;
        assert_eq!(reply.status, 400, "{bad} -> {}", reply.text);
        reply.expect_error(400, "invalid_count");
    }
    assert_eq!(app.get_pool("big").await?.u64("total"), 10_000);
    Ok(())
}

#[tokio::test]
async fn leasing_to_exhaustion_gives_distinct_keys_then_404_no_free_key() -> Result<()> {
    let app = spawn_app().await;
    let keys: HashSet<String> = app.new_keys("p", 8).await?.into_iter().collect();
    let mut leased = HashSet::new();
    let mut last_id = 0;
    for _ in 0..8 {
        let reply = app.lease("p").await?;
        let body = reply.expect(200);
        assert_key_object(body);
        assert_eq!(body["state"], "leased");
        assert_eq!(time_of(body, "leased_until"), T0_MS + 60_000);
        let id = reply.u64("lease_id");
        assert!(id > last_id, "lease ids only grow: {id} after {last_id}");
        last_id = id;
        assert!(
            leased.insert(reply.str("key")),
            "leased twice: {}",
            reply.text
        );
    }
    assert_eq!(leased, keys);
    app.lease("p").await?.expect_error(404, "no_free_key");
    let pool = app.get_pool("p").await?;
    assert_eq!((pool.u64("free"), pool.u64("leased")), (0, 8));
    Ok(())
}

#[tokio::test]
async fn lease_from_an_empty_or_unknown_pool_is_404_no_free_key() -> Result<()> {
    let app = spawn_app().await;
    app.lease("default").await?.expect_error(404, "no_free_key");
    app.lease("never-made")
        .await?
        .expect_error(404, "no_free_key");
    Ok(())
}

#[tokio::test]
async fn release_without_lease_id_frees_the_key_and_a_second_release_is_409_not_leased()
-> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("p", 1).await?.remove(0);
    app.lease("p").await?.expect(200);
    let reply = app.release("p", &key, None).await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "free");
    assert_eq!(body["key"], key.as_str());
    app.release("p", &key, None)
        .await?
        .expect_error(409, "not_leased");
    app.release("p", &key, Some(1))
        .await?
        .expect_error(409, "not_leased");
    let again = app.lease("p").await?;
    assert_eq!(again.str("key"), key);
    Ok(())
}

#[tokio::test]
async fn release_accepts_an_absent_body() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("p", 1).await?.remove(0);
    app.lease("p").await?.expect(200);
    let reply = app
        .request_raw(
            Method::POST,
            &format!("/v1/pools/p/keys/{key}/release"),
            None,
            None,
        )
        .await?;
    assert_eq!(reply.expect(200)["state"], "free");
    Ok(())
}

#[tokio::test]
async fn release_with_the_current_lease_id_frees_and_a_wrong_one_is_409_lease_mismatch()
-> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("p", 1).await?.remove(0);
    let id = app.lease("p").await?.u64("lease_id");
    app.release("p", &key, Some(id + 1))
        .await?
        .expect_error(409, "lease_mismatch");
    assert_eq!(app.get_key("p", &key).await?.str("state"), "leased");
    let reply = app.release("p", &key, Some(id)).await?;
    assert_eq!(reply.expect(200)["state"], "free");
    Ok(())
}

#[tokio::test]
async fn an_old_lease_id_after_expiry_and_re_lease_gets_409_lease_mismatch() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("fence", json!({"lease_ttl_ms": 1000}))
        .await?
        .expect(201);
    let key = app.new_keys("fence", 1).await?.remove(0);
    let old = app.lease("fence").await?.u64("lease_id");
    app.advance_ms(2000);
    let second = app.lease("fence").await?;
    assert_eq!(second.str("key"), key, "the only key is free again");
    let new = second.u64("lease_id");
    assert!(new > old, "lease ids only grow: {new} after {old}");

    app.release("fence", &key, Some(old))
        .await?
        .expect_error(409, "lease_mismatch");
    app.keepalive("fence", &key, Some(old))
        .await?
        .expect_error(409, "lease_mismatch");
    let still = app.get_key("fence", &key).await?;
    assert_eq!(still.str("state"), "leased");
    assert_eq!(still.u64("lease_id"), new);

    app.release("fence", &key, Some(new)).await?.expect(200);
    let third = app.lease("fence").await?.u64("lease_id");
    assert!(third > new, "lease ids only grow: {third} after {new}");
    Ok(())
}

#[tokio::test]
async fn release_keepalive_get_and_delete_of_an_unknown_key_are_404_key_not_found() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("p", 1).await?;
    for pool in ["p", "no-such-pool"] {
        let key = "AAAAAAAAAAAAAAAAAAAA";
        app.get_key(pool, key)
            .await?
            .expect_error(404, "key_not_found");
        app.release(pool, key, None)
            .await?
            .expect_error(404, "key_not_found");
        app.keepalive(pool, key, None)
            .await?
            .expect_error(404, "key_not_found");
        app.delete_key(pool, key)
            .await?
            .expect_error(404, "key_not_found");
    }
    Ok(())
}

#[tokio::test]
async fn keepalive_with_a_lease_id_of_a_free_key_is_409_lease_mismatch() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("p", 1).await?.remove(0);
    app.keepalive("p", &key, Some(1))
        .await?
        .expect_error(409, "lease_mismatch");
    Ok(())
}

/// A server with pool `ka` (10 s leases, 60 s keep-alive) holding one
/// key, leased: the app, the key and the lease reply.
async fn leased_key_in_ka() -> Result<(TestApp, String, Reply)> {
    let app = spawn_app().await;
    app.put_pool(
        "ka",
        json!({"lease_ttl_ms": 10_000, "keepalive_ttl_ms": 60_000}),
    )
    .await?
    .expect(201);
    let key = app.new_keys("ka", 1).await?.remove(0);
    let leased = app.lease("ka").await?;
    Ok((app, key, leased))
}

#[tokio::test]
async fn keepalive_with_the_lease_id_extends_both_the_lease_and_the_life() -> Result<()> {
    let (app, key, leased) = leased_key_in_ka().await?;
    let id = leased.u64("lease_id");
    app.advance_ms(8000);
    let reply = app.keepalive("ka", &key, Some(id)).await?;
    let body = reply.expect(200);
    assert_key_object(body);
    assert_eq!(body["state"], "leased");
    assert_eq!(body["lease_id"], id);
    assert_eq!(time_of(body, "leased_until"), T0_MS + 8000 + 10_000);
    assert_eq!(time_of(body, "alive_until"), T0_MS + 8000 + 60_000);

    // Past the original lease end (10 s) but inside the extended one (18 s).
    app.advance_ms(8000);
    assert_eq!(app.get_key("ka", &key).await?.str("state"), "leased");
    app.lease("ka").await?.expect_error(404, "no_free_key");
    // Past the extended end plus the contract's 1 s slack.
    app.advance_ms(3000);
    assert_eq!(app.get_key("ka", &key).await?.str("state"), "free");
    Ok(())
}

#[tokio::test]
async fn keepalive_without_lease_id_extends_only_alive_until() -> Result<()> {
    let (app, key, leased) = leased_key_in_ka().await?;
    let leased_until = time_of(&leased.body, "leased_until");
    app.advance_ms(8000);
    let body = app.keepalive("ka", &key, None).await?.expect(200).clone();
    assert_eq!(body["state"], "leased");
    assert_eq!(time_of(&body, "leased_until"), leased_until);
    assert_eq!(time_of(&body, "alive_until"), T0_MS + 8000 + 60_000);
    app.advance_ms(3000);
    assert_eq!(app.get_key("ka", &key).await?.str("state"), "free");
    Ok(())
}

#[tokio::test]
async fn leasing_and_releasing_do_not_extend_alive_until() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("p", 1).await?.remove(0);
    let alive = T0_MS + 300_000;
    app.advance_ms(1000);
    let leased = app.lease("p").await?;
    assert_eq!(time_of(&leased.body, "alive_until"), alive);
    app.advance_ms(1000);
    let released = app.release("p", &key, None).await?;
    assert_eq!(time_of(&released.body, "alive_until"), alive);
    assert_eq!(time_of(&released.body, "created_at"), T0_MS);
    Ok(())
}

#[tokio::test]
async fn a_lease_ends_by_itself_after_lease_ttl() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    app.lease("default").await?.expect(200);
    app.advance_ms(59_999);
    assert_eq!(app.get_key("default", &key).await?.str("state"), "leased");
    app.lease("default").await?.expect_error(404, "no_free_key");
    app.advance_ms(1001);
    let body = app.get_key("default", &key).await?.expect(200).clone();
    assert_eq!(body["state"], "free");
    assert!(body["lease_id"].is_null());
    assert_eq!(app.lease("default").await?.str("key"), key);
    Ok(())
}

#[tokio::test]
async fn each_pool_expires_leases_on_its_own_lease_ttl() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("fast", json!({"lease_ttl_ms": 1000}))
        .await?
        .expect(201);
    app.put_pool("slow", json!({"lease_ttl_ms": 10_000}))
        .await?
        .expect(201);
    let fast = app.new_keys("fast", 1).await?.remove(0);
    let slow = app.new_keys("slow", 1).await?.remove(0);
    let f = app.lease("fast").await?;
    let s = app.lease("slow").await?;
    assert_eq!(time_of(&f.body, "leased_until"), T0_MS + 1000);
    assert_eq!(time_of(&s.body, "leased_until"), T0_MS + 10_000);
    app.advance_ms(2000);
    assert_eq!(app.get_key("fast", &fast).await?.str("state"), "free");
    assert_eq!(app.get_key("slow", &slow).await?.str("state"), "leased");
    app.advance_ms(9000);
    assert_eq!(app.get_key("slow", &slow).await?.str("state"), "free");
    Ok(())
}

#[tokio::test]
async fn new_settings_apply_to_deadlines_set_from_then_on() -> Result<()> {
    let app = spawn_app().await;
    let keys = app.new_keys("p", 2).await?;
    let first = app.lease("p").await?;
    assert_eq!(time_of(&first.body, "leased_until"), T0_MS + 60_000);
    app.put_pool("p", json!({"lease_ttl_ms": 1000}))
        .await?
        .expect(200);
    let second = app.lease("p").await?;
    assert_eq!(time_of(&second.body, "leased_until"), T0_MS + 1000);
    app.advance_ms(2000);
    assert_eq!(
        app.get_key("p", &first.str("key")).await?.str("state"),
        "leased"
    );
    assert_eq!(
        app.get_key("p", &second.str("key")).await?.str("state"),
        "free"
    );
    assert!(keys.contains(&first.str("key")) && keys.contains(&second.str("key")));
    Ok(())
}

#[tokio::test]
async fn a_key_without_keepalive_for_keepalive_ttl_is_404_everywhere_even_if_leased() -> Result<()>
{
    let app = spawn_app().await;
    app.put_pool(
        "short",
        json!({"keepalive_ttl_ms": 5000, "lease_ttl_ms": 600_000}),
    )
    .await?
    .expect(201);
    let key = app.new_keys("short", 1).await?.remove(0);
    let id = app.lease("short").await?.u64("lease_id");
    app.advance_ms(4999);
    assert_eq!(app.get_key("short", &key).await?.str("state"), "leased");
    app.advance_ms(1001);
    app.get_key("short", &key)
        .await?
        .expect_error(404, "key_not_found");
    app.release("short", &key, Some(id))
        .await?
        .expect_error(404, "key_not_found");
    app.keepalive("short", &key, None)
        .await?
        .expect_error(404, "key_not_found");
    app.delete_key("short", &key)
        .await?
        .expect_error(404, "key_not_found");
    app.lease("short").await?.expect_error(404, "no_free_key");
    let pool = app.get_pool("short").await?;
    assert_eq!(pool.u64("total"), 0);
    Ok(())
}

#[tokio::test]
async fn a_free_key_without_keepalive_is_purged_and_never_served_again() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    app.advance_ms(301_000);
    app.lease("default").await?.expect_error(404, "no_free_key");
    app.get_key("default", &key)
        .await?
        .expect_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn regular_keepalives_keep_a_key_alive_past_many_keepalive_ttls() -> Result<()> {
    let app = spawn_app().await;
    app.put_pool("ka", json!({"keepalive_ttl_ms": 5000}))
        .await?
        .expect(201);
    let key = app.new_keys("ka", 1).await?.remove(0);
    for round in 1..=5_u64 {
        app.advance_ms(4000);
        let body = app.keepalive("ka", &key, None).await?.expect(200).clone();
        assert_eq!(time_of(&body, "alive_until"), T0_MS + round * 4000 + 5000);
    }
    assert_eq!(app.get_key("ka", &key).await?.str("state"), "free");
    app.advance_ms(6000);
    app.get_key("ka", &key)
        .await?
        .expect_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn delete_returns_204_and_the_key_is_404_everywhere_after() -> Result<()> {
    let app = spawn_app().await;
    let keys = app.new_keys("p", 2).await?;
    let leased = app.lease("p").await?.str("key");
    let free = keys
        .iter()
        .find(|k| **k != leased)
        .expect("two keys")
        .clone();
    for key in [&leased, &free] {
        let reply = app.delete_key("p", key).await?;
        reply.expect(204);
        assert!(reply.text.is_empty(), "204 has no body: {}", reply.text);
        app.get_key("p", key)
            .await?
            .expect_error(404, "key_not_found");
        app.release("p", key, None)
            .await?
            .expect_error(404, "key_not_found");
        app.keepalive("p", key, None)
            .await?
            .expect_error(404, "key_not_found");
        app.delete_key("p", key)
            .await?
            .expect_error(404, "key_not_found");
    }
    app.lease("p").await?.expect_error(404, "no_free_key");
    assert_eq!(app.get_pool("p").await?.u64("total"), 0);
    Ok(())
}

#[tokio::test]
async fn lease_picks_free_keys_uniformly_at_random() -> Result<()> {
    const KEYS: usize = 10;
    const ROUNDS: usize = 1000;
    let app = spawn_app().await;
    let keys = app.new_keys("uniform", KEYS as u64).await?;
    let mut counts: HashMap<String, usize> = keys.iter().map(|k| (k.clone(), 0)).collect();
    for _ in 0..ROUNDS {
        let reply = app.lease("uniform").await?;
        let key = reply.str("key");
        *counts.get_mut(&key).expect("a generated key") += 1;
        app.release("uniform", &key, Some(reply.u64("lease_id")))
            .await?
            .expect(200);
    }
    // Expected 100 each. P(any count outside 40..=180) < 1e-8, and
    // P(chi-square with 9 degrees of freedom > 60) ~ 1e-9: no flakes,
    // but a biased or sequential pick fails.
    let expected = (ROUNDS / KEYS) as f64;
    let chi2: f64 = counts
        .values()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(
        counts.values().all(|&c| (40..=180).contains(&c)),
        "{counts:?}"
    );
    assert!(chi2 < 60.0, "chi-square {chi2:.1} for {counts:?}");
    Ok(())
}

#[tokio::test]
async fn every_key_is_leased_at_least_once_in_400_rounds() -> Result<()> {
    let app = spawn_app().await;
    let keys: HashSet<String> = app.new_keys("round", 10).await?.into_iter().collect();
    let mut seen = HashSet::new();
    for _ in 0..400 {
        let key = app.lease("round").await?.str("key");
        app.release("round", &key, None).await?.expect(200);
        seen.insert(key);
    }
    // P(some key never picked) = 10 * 0.9^400 < 1e-17.
    assert_eq!(seen, keys);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_leasers_never_get_the_same_key() -> Result<()> {
    const LEASERS: usize = 32;
    let app = spawn_app().await;
    let keys: HashSet<String> = app
        .new_keys("race", LEASERS as u64)
        .await?
        .into_iter()
        .collect();
    let replies = app
        .all_at_once(LEASERS, |api| async move { api.lease("race").await })
        .await?;
    let mut got = HashSet::new();
    let mut ids = HashSet::new();
    for reply in replies {
        reply.expect(200);
        assert!(got.insert(reply.str("key")), "leased twice: {}", reply.text);
        assert!(ids.insert(reply.u64("lease_id")), "lease id reused");
    }
    assert_eq!(got, keys);
    app.lease("race").await?.expect_error(404, "no_free_key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_concurrent_leasers_than_keys_get_each_key_once_and_the_rest_404() -> Result<()> {
    const KEYS: usize = 16;
    const LEASERS: usize = 32;
    let app = spawn_app().await;
    app.new_keys("scarce", KEYS as u64).await?;
    let replies = app
        .all_at_once(LEASERS, |api| async move { api.lease("scarce").await })
        .await?;
    let mut got = HashSet::new();
    let mut refused = 0;
    for reply in replies {
        if reply.status == 200 {
            assert!(got.insert(reply.str("key")), "leased twice: {}", reply.text);
        } else {
            reply.expect_error(404, "no_free_key");
            refused += 1;
        }
    }
    assert_eq!((got.len(), refused), (KEYS, LEASERS - KEYS));
    Ok(())
}
