//! Shop keyspaces over HTTP (DESIGN P2.4): `max_activations` on the
//! keyspace, activation slots keyed by fingerprint, freeing a slot by its
//! percent-encoded fingerprint, revocation, batches and their counts; the
//! token, keyspace and batch objects; every error code, each bad input
//! changing nothing; `Idempotency-Key` replays of the new changes.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::app::{TestApp, spawn_app};
use keyward_testkit::client::{Api, Reply, key_segment};

use crate::idempotency::twice;

/// The time `ms` (under a minute) after the test clock's start, as the API
/// writes it.
fn at(ms: u64) -> String {
    assert!(ms < 60_000, "a minute at most");
    format!("2026-01-01T00:00:{:02}.{:03}Z", ms / 1000, ms % 1000)
}

/// `PUT /v1/keyspaces/{ks}` over "abcdefgh"^6 with the `extra` fields.
async fn put(api: &Api, ks: &str, extra: Value) -> Result<Reply> {
    let mut body = json!({"alphabet": "abcdefgh", "length": 6});
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    api.request(Method::PUT, &format!("/v1/keyspaces/{ks}"), Some(body))
        .await
}

/// A new keyspace over "abcdefgh"^6 with `max` slots per token.
async fn new_ks(api: &Api, ks: &str, max: u64) -> Result<()> {
    put(api, ks, json!({"max_activations": max}))
        .await?
        .expect(201);
    Ok(())
}

async fn issue(api: &Api, ks: &str, body: Option<Value>) -> Result<Reply> {
    api.request(Method::POST, &format!("/v1/keyspaces/{ks}/tokens"), body)
        .await
}

/// Keyspace `small`: `abc`^2, so a token not issued yet is easy to name.
async fn small(api: &Api, max: u64) -> Result<()> {
    let def = json!({"alphabet": "abc", "length": 2, "max_activations": max});
    api.request(Method::PUT, "/v1/keyspaces/small", Some(def))
        .await?
        .expect(201);
    Ok(())
}

/// One token, issued without a body.
async fn token(api: &Api, ks: &str) -> Result<String> {
    let reply = issue(api, ks, None).await?;
    reply.expect(201);
    Ok(reply.str("token"))
}

/// `POST .../activate` with `fingerprint`, or with no body for `None`.
async fn activate(api: &Api, ks: &str, token: &str, fingerprint: Option<&str>) -> Result<Reply> {
    api.request(
        Method::POST,
        &format!("/v1/keyspaces/{ks}/tokens/{token}/activate"),
        fingerprint.map(|f| json!({"fingerprint": f})),
    )
    .await
}

async fn activate_with(api: &Api, ks: &str, token: &str, body: Value) -> Result<Reply> {
    api.request(
        Method::POST,
        &format!("/v1/keyspaces/{ks}/tokens/{token}/activate"),
        Some(body),
    )
    .await
}

/// `DELETE .../activations/{fingerprint}`, the fingerprint percent-encoded.
async fn deactivate(api: &Api, ks: &str, token: &str, fingerprint: &str) -> Result<Reply> {
    deactivate_raw(api, ks, token, &key_segment(fingerprint)).await
}

/// `DELETE .../activations/{segment}`, the segment as given.
async fn deactivate_raw(api: &Api, ks: &str, token: &str, segment: &str) -> Result<Reply> {
    api.request(
        Method::DELETE,
        &format!("/v1/keyspaces/{ks}/tokens/{token}/activations/{segment}"),
        None,
    )
    .await
}

/// `POST .../revoke` with `reason`, or with no body for `None`.
async fn revoke(api: &Api, ks: &str, token: &str, reason: Option<&str>) -> Result<Reply> {
    api.request(
        Method::POST,
        &format!("/v1/keyspaces/{ks}/tokens/{token}/revoke"),
        reason.map(|r| json!({"reason": r})),
    )
    .await
}

async fn get_batch(api: &Api, ks: &str, batch: &str) -> Result<Reply> {
    api.request(
        Method::GET,
        &format!("/v1/keyspaces/{ks}/batches/{batch}"),
        None,
    )
    .await
}

/// The token object of `token`.
async fn status(app: &TestApp, ks: &str, token: &str) -> Result<Value> {
    Ok(app.token_status(ks, token).await?.expect(200).clone())
}

/// The keyspace's `[issued, activated, revoked]`.
async fn counts(app: &TestApp, ks: &str) -> Result<[u64; 3]> {
    let reply = app.get_keyspace(ks).await?;
    let body = reply.expect(200);
    Ok(["issued", "activated", "revoked"].map(|f| body[f].as_u64().expect(f)))
}

/// The token object as the contract writes it.
fn token_object(
    token: &str,
    state: &str,
    activations: &[(Option<&str>, u64)],
    batch: Option<&str>,
    revoked: Option<(Option<&str>, u64)>,
) -> Value {
    json!({
        "token": token,
        "state": state,
        "activated_at": activations.first().map(|(_, ms)| at(*ms)),
        "activations": activations
            .iter()
            .map(|(f, ms)| json!({"fingerprint": f, "activated_at": at(*ms)}))
            .collect::<Vec<_>>(),
        "batch": batch,
        "reason": revoked.and_then(|(r, _)| r),
        "revoked_at": revoked.map(|(_, ms)| at(ms)),
    })
}

/// A token no keyspace over "abc"^2 issued yet, besides `issued`.
fn unissued(issued: &[&str]) -> String {
    ["aa", "ab", "ac", "ba", "bb", "bc", "ca", "cb", "cc"]
        .into_iter()
        .find(|t| !issued.contains(t))
        .expect("nine tokens")
        .to_owned()
}

#[tokio::test]
async fn put_keyspace_sets_max_activations_and_the_object_shows_it_with_revoked() -> Result<()> {
    let app = spawn_app().await;
    let created = put(&app, "shop", json!({})).await?;
    let mut expected = json!({
        "name": "shop",
        "alphabet": "abcdefgh",
        "length": 6,
        "capacity": 262_144,
        "capacity_str": "262144",
        "issued": 0,
        "activated": 0,
        "revoked": 0,
        "remaining": 262_144,
        "remaining_str": "262144",
        "max_activations": 1,
        "preset": null,
        "format": null,
    });
    assert_eq!(*created.expect(201), expected, "a new keyspace has 1 slot");

    let raised = put(&app, "shop", json!({"max_activations": 3})).await?;
    expected["max_activations"] = json!(3);
    assert_eq!(*raised.expect(200), expected, "the same spec: 200, changed");
    let kept = put(&app, "shop", json!({})).await?;
    assert_eq!(*kept.expect(200), expected, "absent keeps it");
    assert_eq!(*app.get_keyspace("shop").await?.expect(200), expected);

    let wide = put(&app, "wide", json!({"max_activations": 1000})).await?;
    assert_eq!(wide.expect(201)["max_activations"], 1000);

    let other = json!({"alphabet": "abcdefgh", "length": 7, "max_activations": 5});
    app.request(Method::PUT, "/v1/keyspaces/shop", Some(other))
        .await?
        .expect_error(409, "keyspace_immutable");
    assert_eq!(*app.get_keyspace("shop").await?.expect(200), expected);
    app.stop().await
}

#[tokio::test]
async fn a_bad_max_activations_is_400_invalid_keyspace_and_changes_nothing() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 2).await?;
    for bad in [
        Value::Null,
        json!(0),
        json!(1001),
        json!(-1),
        json!(2.5),
        json!("3"),
        json!(true),
        json!([3]),
    ] {
        for ks in ["shop", "fresh"] {
            let reply = put(&app, ks, json!({"max_activations": bad})).await?;
            assert_eq!(reply.status, 400, "{ks} {bad}: {}", reply.text);
            reply.expect_error(400, "invalid_keyspace");
        }
    }
    app.get_keyspace("fresh")
        .await?
        .expect_error(404, "keyspace_not_found");
    assert_eq!(
        app.get_keyspace("shop").await?.expect(200)["max_activations"],
        2
    );
    app.stop().await
}

#[tokio::test]
async fn activations_take_slots_by_fingerprint_up_to_max_activations() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 2).await?;
    let t = token(&app, "shop").await?;
    assert_eq!(
        status(&app, "shop", &t).await?,
        token_object(&t, "issued", &[], None, None)
    );

    let first = activate(&app, "shop", &t, Some("host-a")).await?;
    let one = token_object(&t, "activated", &[(Some("host-a"), 0)], None, None);
    assert_eq!(*first.expect(200), one);
    app.advance_ms(1_000);
    let again = activate(&app, "shop", &t, Some("host-a")).await?;
    assert_eq!(
        *again.expect(200),
        one,
        "the same fingerprint, the same slot"
    );

    // No body: a slot of its own.
    let plain = activate(&app, "shop", &t, None).await?;
    let two = token_object(
        &t,
        "activated",
        &[(Some("host-a"), 0), (None, 1_000)],
        None,
        None,
    );
    assert_eq!(*plain.expect(200), two, "oldest first");

    app.advance_ms(1_000);
    activate(&app, "shop", &t, Some("host-b"))
        .await?
        .expect_error(409, "already_activated");
    activate_with(&app, "shop", &t, json!({}))
        .await?
        .expect_error(409, "already_activated");
    activate(&app, "shop", &t, None)
        .await?
        .expect_error(409, "already_activated");
    assert_eq!(
        *activate(&app, "shop", &t, Some("host-a"))
            .await?
            .expect(200),
        two,
        "a fingerprint holding a slot is answered even when all are taken"
    );
    assert_eq!(status(&app, "shop", &t).await?, two);
    assert_eq!(counts(&app, "shop").await?, [1, 1, 0]);

    // The default of one slot: a second activation is already_activated.
    app.put_keyspace("one", "abcdefgh", 6).await?.expect(201);
    let u = token(&app, "one").await?;
    activate_with(&app, "one", &u, json!({})).await?.expect(200);
    app.activate("one", &u)
        .await?
        .expect_error(409, "already_activated");

    app.activate("nowhere", &u)
        .await?
        .expect_error(404, "keyspace_not_found");
    app.stop().await
}

#[tokio::test]
async fn lowering_max_activations_keeps_the_slots_taken_and_refuses_new_ones() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 3).await?;
    let t = token(&app, "shop").await?;
    for host in ["a", "b", "c"] {
        activate(&app, "shop", &t, Some(host)).await?.expect(200);
    }
    put(&app, "shop", json!({"max_activations": 1}))
        .await?
        .expect(200);
    let held = status(&app, "shop", &t).await?;
    assert_eq!(held["activations"].as_array().map(Vec::len), Some(3));
    activate(&app, "shop", &t, Some("d"))
        .await?
        .expect_error(409, "already_activated");
    deactivate(&app, "shop", &t, "a").await?.expect(204);
    deactivate(&app, "shop", &t, "b").await?.expect(204);
    activate(&app, "shop", &t, Some("d"))
        .await?
        .expect_error(409, "already_activated");
    deactivate(&app, "shop", &t, "c").await?.expect(204);
    let reply = activate(&app, "shop", &t, Some("d")).await?;
    assert_eq!(
        *reply.expect(200),
        token_object(&t, "activated", &[(Some("d"), 0)], None, None)
    );
    app.stop().await
}

#[tokio::test]
async fn deactivate_frees_the_slot_named_by_its_percent_encoded_fingerprint() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 3).await?;
    let t = token(&app, "shop").await?;
    activate(&app, "shop", &t, Some("host a/b"))
        .await?
        .expect(200);
    app.advance_ms(1_000);
    activate(&app, "shop", &t, Some("host-c"))
        .await?
        .expect(200);
    activate(&app, "shop", &t, Some("машина?#%1"))
        .await?
        .expect(200);

    let freed = deactivate_raw(&app, "shop", &t, "host%20a%2Fb").await?;
    freed.expect(204);
    assert_eq!(freed.text, "", "204 has no body");
    let left = token_object(
        &t,
        "activated",
        &[(Some("host-c"), 1_000), (Some("машина?#%1"), 1_000)],
        None,
        None,
    );
    assert_eq!(
        status(&app, "shop", &t).await?,
        left,
        "activated_at is the first slot still held"
    );
    deactivate(&app, "shop", &t, "host a/b")
        .await?
        .expect_error(404, "activation_not_found");
    // Fingerprints are compared exactly.
    deactivate(&app, "shop", &t, "host-C")
        .await?
        .expect_error(404, "activation_not_found");
    assert_eq!(status(&app, "shop", &t).await?, left);

    deactivate(&app, "shop", &t, "машина?#%1")
        .await?
        .expect(204);
    deactivate(&app, "shop", &t, "host-c").await?.expect(204);
    assert_eq!(
        status(&app, "shop", &t).await?,
        token_object(&t, "issued", &[], None, None),
        "no slot left: issued again"
    );
    assert_eq!(counts(&app, "shop").await?, [1, 0, 0]);
    app.stop().await
}

#[tokio::test]
async fn deactivate_refusals_are_404_or_400_and_change_nothing() -> Result<()> {
    let app = spawn_app().await;
    small(&app, 2).await?;
    let t = token(&app, "small").await?;
    activate(&app, "small", &t, Some("host")).await?.expect(200);
    let before = status(&app, "small", &t).await?;

    deactivate(&app, "small", &unissued(&[&t]), "host")
        .await?
        .expect_error(404, "token_not_issued");
    deactivate(&app, "nowhere", &t, "host")
        .await?
        .expect_error(404, "keyspace_not_found");
    deactivate(&app, "small", "zz", "host")
        .await?
        .expect_error(400, "invalid_token");
    deactivate(&app, "small", &t, "other")
        .await?
        .expect_error(404, "activation_not_found");
    let long = "x".repeat(257);
    for segment in ["%0A", "host%09", long.as_str()] {
        let reply = deactivate_raw(&app, "small", &t, segment).await?;
        assert_eq!(reply.status, 400, "{segment}: {}", reply.text);
        reply.expect_error(400, "invalid_fingerprint");
    }
    assert_eq!(status(&app, "small", &t).await?, before);
    assert_eq!(counts(&app, "small").await?, [1, 1, 0]);
    app.stop().await
}

#[tokio::test]
async fn revoke_answers_the_token_object_and_activation_is_409_token_revoked() -> Result<()> {
    let app = spawn_app().await;
    small(&app, 2).await?;
    let kept = token(&app, "small").await?;
    let plain = token(&app, "small").await?;
    activate(&app, "small", &kept, Some("a")).await?.expect(200);
    app.advance_ms(1_000);

    let revoked = revoke(&app, "small", &kept, Some("refund")).await?;
    let expected = token_object(
        &kept,
        "revoked",
        &[(Some("a"), 0)],
        None,
        Some((Some("refund"), 1_000)),
    );
    assert_eq!(*revoked.expect(200), expected, "activations stay listed");
    app.advance_ms(1_000);
    let again = revoke(&app, "small", &kept, Some("other")).await?;
    assert_eq!(*again.expect(200), expected, "the first reason is kept");
    let again = revoke(&app, "small", &kept, None).await?;
    assert_eq!(*again.expect(200), expected);
    assert_eq!(status(&app, "small", &kept).await?, expected);

    for fingerprint in [Some("a"), Some("b"), None] {
        activate(&app, "small", &kept, fingerprint)
            .await?
            .expect_error(409, "token_revoked");
    }
    activate_with(&app, "small", &kept, json!({}))
        .await?
        .expect_error(409, "token_revoked");

    let other = app
        .request(
            Method::POST,
            &format!("/v1/keyspaces/small/tokens/{plain}/revoke"),
            Some(json!({})),
        )
        .await?;
    assert_eq!(
        *other.expect(200),
        token_object(&plain, "revoked", &[], None, Some((None, 2_000)))
    );
    activate(&app, "small", &plain, None)
        .await?
        .expect_error(409, "token_revoked");

    revoke(&app, "small", &unissued(&[&kept, &plain]), None)
        .await?
        .expect_error(404, "token_not_issued");
    revoke(&app, "small", "zz", None)
        .await?
        .expect_error(400, "invalid_token");
    revoke(&app, "nowhere", &kept, None)
        .await?
        .expect_error(404, "keyspace_not_found");
    assert_eq!(counts(&app, "small").await?, [2, 1, 2]);
    app.stop().await
}

#[tokio::test]
async fn bad_reasons_fingerprints_and_batch_names_are_400_and_change_nothing() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 2).await?;
    let t = token(&app, "shop").await?;
    let fresh = token_object(&t, "issued", &[], None, None);
    let long = "x".repeat(257);

    for reason in ["", long.as_str(), "a\u{7}b", "a\nb"] {
        let reply = revoke(&app, "shop", &t, Some(reason)).await?;
        assert_eq!(reply.status, 400, "{reason:?}: {}", reply.text);
        reply.expect_error(400, "invalid_reason");
    }
    for fingerprint in ["", long.as_str(), "a\tb", "\u{0}"] {
        let reply = activate(&app, "shop", &t, Some(fingerprint)).await?;
        assert_eq!(reply.status, 400, "{fingerprint:?}: {}", reply.text);
        reply.expect_error(400, "invalid_fingerprint");
    }
    // No field is nullable, and a fingerprint or reason is a string.
    let path = format!("/v1/keyspaces/shop/tokens/{t}");
    for (route, field, code) in [
        ("revoke", "reason", "invalid_reason"),
        ("activate", "fingerprint", "invalid_fingerprint"),
    ] {
        for bad in [Value::Null, json!(5), json!(["a"]), json!({"a": 1})] {
            let body = json!({ field: bad });
            let reply = app
                .request(Method::POST, &format!("{path}/{route}"), Some(body))
                .await?;
            assert_eq!(reply.status, 400, "{route} {bad}: {}", reply.text);
            reply.expect_error(400, code);
        }
    }
    assert_eq!(status(&app, "shop", &t).await?, fresh);

    let long_name = "b".repeat(65);
    for batch in ["", "a b", "a/b", "é", long_name.as_str()] {
        for body in [json!({"batch": batch}), json!({"batch": batch, "count": 3})] {
            let reply = issue(&app, "shop", Some(body.clone())).await?;
            assert_eq!(reply.status, 400, "{body}: {}", reply.text);
            reply.expect_error(400, "invalid_name");
        }
    }
    get_batch(&app, "shop", "a%20b")
        .await?
        .expect_error(400, "invalid_name");
    assert_eq!(counts(&app, "shop").await?, [1, 0, 0]);

    app.stop().await
}

#[tokio::test]
async fn batches_count_the_tokens_issued_under_them_one_by_one_or_in_bulk() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 2).await?;
    let single = issue(&app, "shop", Some(json!({"batch": "spring"}))).await?;
    let body = single.expect(201);
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(3),
        "{}",
        single.text
    );
    let mut spring = vec![single.str("token")];
    let bulk = issue(&app, "shop", Some(json!({"count": 4, "batch": "spring"}))).await?;
    let body = bulk.expect(201);
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{}", bulk.text);
    let tokens = |body: &Value| -> Vec<String> {
        body["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_str().expect("a token").to_owned())
            .collect()
    };
    spring.extend(tokens(body));
    let summer = tokens(
        issue(&app, "shop", Some(json!({"count": 2, "batch": "summer"})))
            .await?
            .expect(201),
    );
    let none = token(&app, "shop").await?;
    let plain = issue(&app, "shop", Some(json!({}))).await?;
    let none_too = plain.expect(201)["token"].as_str().unwrap().to_owned();
    let last = issue(&app, "shop", Some(json!({"batch": "spring"}))).await?;
    spring.push(last.str("token"));
    assert_eq!((spring.len(), summer.len()), (6, 2));

    assert_eq!(
        *get_batch(&app, "shop", "spring").await?.expect(200),
        json!({"name": "spring", "issued": 6, "activated": 0, "revoked": 0})
    );
    assert_eq!(
        *get_batch(&app, "shop", "summer").await?.expect(200),
        json!({"name": "summer", "issued": 2, "activated": 0, "revoked": 0})
    );
    for (batch, tokens) in [("spring", &spring), ("summer", &summer)] {
        for t in tokens {
            assert_eq!(status(&app, "shop", t).await?["batch"], batch, "{t}");
        }
    }
    for t in [&none, &none_too] {
        assert_eq!(status(&app, "shop", t).await?["batch"], Value::Null);
    }

    activate(&app, "shop", &spring[0], Some("a"))
        .await?
        .expect(200);
    activate(&app, "shop", &spring[0], Some("b"))
        .await?
        .expect(200);
    let revoked = revoke(&app, "shop", &spring[5], Some("lost")).await?;
    assert_eq!(revoked.expect(200)["batch"], "spring");
    activate(&app, "shop", &summer[1], None).await?.expect(200);
    revoke(&app, "shop", &summer[1], None).await?.expect(200);
    activate(&app, "shop", &none, None).await?.expect(200);
    assert_eq!(
        *get_batch(&app, "shop", "spring").await?.expect(200),
        json!({"name": "spring", "issued": 6, "activated": 1, "revoked": 1})
    );
    assert_eq!(
        *get_batch(&app, "shop", "summer").await?.expect(200),
        json!({"name": "summer", "issued": 2, "activated": 1, "revoked": 1})
    );
    assert_eq!(counts(&app, "shop").await?, [10, 3, 2]);

    get_batch(&app, "shop", "autumn")
        .await?
        .expect_error(404, "batch_not_found");
    get_batch(&app, "nowhere", "spring")
        .await?
        .expect_error(404, "keyspace_not_found");

    // A bulk issue that does not fit files no batch.
    app.put_keyspace("small", "abc", 2).await?.expect(201);
    issue(&app, "small", Some(json!({"count": 10, "batch": "big"})))
        .await?
        .expect_error(409, "keyspace_exhausted");
    get_batch(&app, "small", "big")
        .await?
        .expect_error(404, "batch_not_found");
    issue(&app, "nowhere", Some(json!({"batch": "big"})))
        .await?
        .expect_error(404, "keyspace_not_found");
    assert_eq!(counts(&app, "small").await?, [0, 0, 0]);
    app.stop().await
}

#[tokio::test]
async fn the_shop_changes_replay_their_first_answer_with_an_idempotency_key() -> Result<()> {
    let app = spawn_app().await;
    let def = json!({"alphabet": "abcdefgh", "length": 6, "max_activations": 3});
    let put = twice(&app, Method::PUT, "/v1/keyspaces/shop", Some(def), "put").await;
    assert_eq!(put.status, 201);
    let tokens = "/v1/keyspaces/shop/tokens";
    let one = twice(
        &app,
        Method::POST,
        tokens,
        Some(json!({"batch": "spring"})),
        "one",
    )
    .await;
    twice(
        &app,
        Method::POST,
        tokens,
        Some(json!({"batch": "spring", "count": 3})),
        "many",
    )
    .await;
    assert_eq!(get_batch(&app, "shop", "spring").await?.u64("issued"), 4);

    let t = one.str("token");
    let activate = format!("{tokens}/{t}/activate");
    let keyed = json!({"fingerprint": "host a/b"});
    twice(&app, Method::POST, &activate, Some(keyed), "keyed").await;
    app.advance_ms(1_000);
    twice(&app, Method::POST, &activate, None, "plain").await;
    let held = status(&app, "shop", &t).await?;
    assert_eq!(
        held,
        token_object(
            &t,
            "activated",
            &[(Some("host a/b"), 0), (None, 1_000)],
            Some("spring"),
            None
        ),
        "the replayed activation took no second slot"
    );

    let slot = format!("{tokens}/{t}/activations/host%20a%2Fb");
    let freed = twice(&app, Method::DELETE, &slot, None, "free").await;
    assert_eq!((freed.status, freed.text.as_str()), (204, ""));
    app.advance_ms(1_000);
    let revoke = format!("{tokens}/{t}/revoke");
    let why = json!({"reason": "refund"});
    let revoked = twice(&app, Method::POST, &revoke, Some(why), "revoke").await;
    let expected = token_object(
        &t,
        "revoked",
        &[(None, 1_000)],
        Some("spring"),
        Some((Some("refund"), 2_000)),
    );
    assert_eq!(revoked.body, expected);
    assert_eq!(status(&app, "shop", &t).await?, expected);
    assert_eq!(
        *get_batch(&app, "shop", "spring").await?.expect(200),
        json!({"name": "spring", "issued": 4, "activated": 1, "revoked": 1})
    );
    assert_eq!(counts(&app, "shop").await?, [4, 1, 1]);
    app.stop().await
}

#[tokio::test]
async fn sixteen_fingerprints_at_once_take_exactly_max_activations_slots() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 5).await?;
    let t = token(&app, "shop").await?;
    let next = AtomicUsize::new(0);
    let path = format!("/v1/keyspaces/shop/tokens/{t}/activate");
    let replies = app
        .all_at_once(16, |api| {
            let body =
                json!({"fingerprint": format!("host-{}", next.fetch_add(1, Ordering::Relaxed))});
            let path = path.clone();
            async move { api.request(Method::POST, &path, Some(body)).await }
        })
        .await?;
    let mut won = 0;
    for reply in &replies {
        if reply.status == 200 {
            won += 1;
        } else {
            reply.expect_error(409, "already_activated");
        }
    }
    assert_eq!(won, 5, "exactly max_activations succeed");
    let held = status(&app, "shop", &t).await?;
    assert_eq!(held["activations"].as_array().map(Vec::len), Some(5));

    // One fingerprint from eight requests at once: one slot.
    let u = token(&app, "shop").await?;
    let path = format!("/v1/keyspaces/shop/tokens/{u}/activate");
    let replies = app
        .all_at_once(8, |api| {
            let path = path.clone();
            async move {
                let body = json!({"fingerprint": "the-host"});
                api.request(Method::POST, &path, Some(body)).await
            }
        })
        .await?;
    for reply in &replies {
        assert_eq!(
            reply.expect(200)["activations"].as_array().map(Vec::len),
            Some(1)
        );
    }
    assert_eq!(counts(&app, "shop").await?, [2, 2, 0]);
    app.stop().await
}

/// Every fingerprint that can take a slot can free it: the path segment
/// of the longest one (256 characters, each percent-encoded, up to 4 bytes
/// of UTF-8 each) is not refused as too long.
#[tokio::test]
async fn the_longest_fingerprints_can_be_activated_and_freed_by_their_path() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 3).await?;
    let t = token(&app, "shop").await?;
    let fresh = token_object(&t, "issued", &[], None, None);
    for widest in ["/".repeat(256), "é".repeat(256), "😀".repeat(256)] {
        let reply = activate(&app, "shop", &t, Some(&widest)).await?;
        assert_eq!(reply.expect(200)["activations"][0]["fingerprint"], widest);
        let freed = deactivate(&app, "shop", &t, &widest).await?;
        assert_eq!(
            freed.status,
            204,
            "{} bytes percent-encoded: {}",
            key_segment(&widest).len(),
            freed.text
        );
        assert_eq!(status(&app, "shop", &t).await?, fresh);
    }
    app.stop().await
}

#[tokio::test]
async fn metrics_count_activated_and_revoked_tokens_per_keyspace() -> Result<()> {
    let app = spawn_app().await;
    new_ks(&app, "shop", 2).await?;
    let (a, b) = (token(&app, "shop").await?, token(&app, "shop").await?);
    activate(&app, "shop", &a, Some("laptop"))
        .await?
        .expect(200);
    revoke(&app, "shop", &b, None).await?.expect(200);
    let text = app.metrics().await?.text;
    for (state, n) in [("issued", 2), ("activated", 1), ("revoked", 1)] {
        let line = format!("keyward_keyspace_tokens{{keyspace=\"shop\",state=\"{state}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    app.stop().await
}
