//! The compat routes, bodies compared exactly as JSON values.
//!
//! - The token routes (`/api/get_token`, …) on keyspace `default`: always
//!   HTTP 200, field names ending in a colon, messages in Russian.
//! - The API-key routes (`/api/v1/random_api_key`, …) on pool `default`:
//!   Django REST style, trailing slash optional.

use std::collections::HashSet;

use anyhow::Result;
use keyward::config::{Config, DEFAULT_TOKEN_ALPHABET};
use keyward::core::KeyspaceSpec;
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::app::{TestApp, spawn_app, spawn_app_with};

/// A server whose `default` keyspace is `{a, b}^2`: four tokens.
async fn spawn_tiny_keyspace_app() -> Result<TestApp> {
    Ok(spawn_app_with(Config {
        default_keyspace: KeyspaceSpec::new("ab", 2)?,
        ..Config::default()
    })
    .await)
}

// ---- token routes ----

#[tokio::test]
async fn get_token_issues_default_keyspace_tokens_with_leftkeys() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.compat_get_token().await?;
    reply.expect(200);
    let token = reply.str("key:");
    assert_eq!(token.chars().count(), 4, "{token}");
    assert!(
        token.chars().all(|c| DEFAULT_TOKEN_ALPHABET.contains(c)),
        "{token}"
    );
    assert_eq!(reply.body, json!({"key:": token, "leftkeys:": 7_311_615}));
    assert_eq!(
        *app.compat_number_token().await?.expect(200),
        json!({"leftkeys:": 7_311_615})
    );
    Ok(())
}

#[tokio::test]
async fn leftkeys_beyond_u64_is_written_as_an_exact_integer() -> Result<()> {
    // 62^20 ≈ 7.0e35 tokens: more than u64 can hold, less than 2^128.
    let alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let capacity = 62_u128.pow(20);
    let app = spawn_app_with(Config {
        default_keyspace: KeyspaceSpec::new(alphabet, 20)?,
        ..Config::default()
    })
    .await;
    let count = app.compat_number_token().await?;
    count.expect(200);
    assert_eq!(count.text, format!(r#"{{"leftkeys:":{capacity}}}"#));
    let issued = app.compat_get_token().await?;
    issued.expect(200);
    let token = issued.str("key:");
    assert_eq!(
        issued.text,
        format!(r#"{{"key:":"{token}","leftkeys:":{}}}"#, capacity - 1)
    );
    Ok(())
}

#[tokio::test]
async fn get_token_counts_down_then_says_the_keys_ran_out() -> Result<()> {
    let app = spawn_tiny_keyspace_app().await?;
    assert_eq!(
        *app.compat_number_token().await?.expect(200),
        json!({"leftkeys:": 4})
    );
    let mut tokens = HashSet::new();
    for left in (0..4_u64).rev() {
        let reply = app.compat_get_token().await?;
        reply.expect(200);
        let token = reply.str("key:");
        assert_eq!(reply.body, json!({"key:": token, "leftkeys:": left}));
        assert!(
            ["aa", "ab", "ba", "bb"].contains(&token.as_str()),
            "{token}"
        );
        assert!(tokens.insert(token), "issued twice");
        assert_eq!(
            *app.compat_number_token().await?.expect(200),
            json!({"leftkeys:": left})
        );
    }
    for _ in 0..2 {
        assert_eq!(
            *app.compat_get_token().await?.expect(200),
            json!({"keystatus:": "Ключи кончились"})
        );
    }
    assert_eq!(
        *app.compat_number_token().await?.expect(200),
        json!({"leftkeys:": 0})
    );
    Ok(())
}

#[tokio::test]
async fn activate_token_answers_the_three_compat_messages() -> Result<()> {
    let app = spawn_tiny_keyspace_app().await?;
    let not_issued = json!({"keystatus:": "Ключ не выдан"});
    assert_eq!(
        *app.compat_activate_token("aa").await?.expect(200),
        not_issued
    );
    let token = app.compat_get_token().await?.str("key:");
    assert_eq!(
        *app.compat_activate_token(&token).await?.expect(200),
        json!({"keystatus:": format!("Вы активировали ключ {token}")})
    );
    assert_eq!(
        *app.compat_activate_token(&token).await?.expect(200),
        json!({"keystatus:": "Ключ уже активирован"})
    );
    // Tokens the keyspace could never have issued are "not issued" too.
    for bad in ["zz", "aaa", "a"] {
        assert_eq!(
            *app.compat_activate_token(bad).await?.expect(200),
            not_issued
        );
    }
    Ok(())
}

#[tokio::test]
async fn get_token_status_answers_the_three_compat_messages() -> Result<()> {
    let app = spawn_tiny_keyspace_app().await?;
    let not_issued = json!({"keystatus:": "Ключ не выдан"});
    for token in ["aa", "ab", "ba", "bb", "zz", "abc"] {
        assert_eq!(
            *app.compat_token_status(token).await?.expect(200),
            not_issued
        );
    }
    let token = app.compat_get_token().await?.str("key:");
    assert_eq!(
        *app.compat_token_status(&token).await?.expect(200),
        json!({"keystatus:": "Ключ выдан, но не активирован"})
    );
    app.compat_activate_token(&token).await?.expect(200);
    assert_eq!(
        *app.compat_token_status(&token).await?.expect(200),
        json!({"keystatus:": "Ключ выдан и активирован"})
    );
    Ok(())
}

#[tokio::test]
async fn compat_token_routes_and_v1_share_the_default_keyspace() -> Result<()> {
    let app = spawn_tiny_keyspace_app().await?;
    let token = app.compat_get_token().await?.str("key:");
    assert_eq!(
        app.token_status("default", &token).await?.str("state"),
        "issued"
    );
    let issued = app.issue_token("default").await?.str("token");
    assert_eq!(
        *app.compat_activate_token(&issued).await?.expect(200),
        json!({"keystatus:": format!("Вы активировали ключ {issued}")})
    );
    app.activate("default", &issued)
        .await?
        .expect_error(409, "already_activated");
    let info = app.get_keyspace("default").await?;
    assert_eq!(
        (
            info.u64("issued"),
            info.u64("activated"),
            info.u64("remaining")
        ),
        (2, 1, 2)
    );
    assert_eq!(
        *app.compat_number_token().await?.expect(200),
        json!({"leftkeys:": 2})
    );
    Ok(())
}

// ---- API-key routes ----

/// `METHOD /api/v1/random_api_key/[?api_key=K]`, which must answer
/// `status`: the body.
async fn api_key_route(
    app: &TestApp,
    method: Method,
    api_key: Option<&str>,
    status: u16,
) -> Result<Value> {
    let reply = app.random_api_key(method, true, api_key).await?;
    Ok(reply.expect(status).clone())
}

#[tokio::test]
async fn random_api_key_full_cycle_with_and_without_trailing_slash() -> Result<()> {
    for slash in [true, false] {
        let app = spawn_app().await;
        let no_key = json!({"message": "No available key found"});
        let not_found = json!({"detail": "Not found."});

        let reply = app.random_api_key(Method::GET, slash, None).await?;
        assert_eq!(*reply.expect(404), no_key, "slash={slash}");

        let created = app.random_api_key(Method::POST, slash, None).await?;
        created.expect(201);
        let key = created.str("api_key");
        assert_eq!(created.body, json!({"api_key": key}));
        assert_eq!(key.len(), 20, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");

        let leased = json!({"api_key": key});
        let key = Some(key.as_str());
        let no_update =
            json!({"message": "Kindly send key to be updated, given key does not exist"});
        let no_delete =
            json!({"message": "Kindly send key to be deleted, given key does not exist"});
        let deleted = json!({"message": "Given key has been deleted"});
        // One step per row, in order: the request and its exact reply.
        for (method, api_key, status, body) in [
            (Method::GET, None, 200, &leased),
            (Method::GET, None, 404, &no_key),
            (Method::PUT, key, 200, &leased),
            (Method::GET, None, 200, &leased),
            (Method::PUT, Some("NoSuchKey0000000000"), 404, &not_found),
            (Method::PUT, None, 400, &no_update),
            (Method::DELETE, key, 200, &deleted),
            (Method::DELETE, key, 404, &not_found),
            (Method::PUT, key, 404, &not_found),
            (Method::DELETE, None, 400, &no_delete),
            (Method::GET, None, 404, &no_key),
        ] {
            let reply = app.random_api_key(method.clone(), slash, api_key).await?;
            assert_eq!(reply.expect(status), body, "{method} {api_key:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn random_api_key_with_an_empty_api_key_parameter_is_400() -> Result<()> {
    let app = spawn_app().await;
    assert_eq!(
        api_key_route(&app, Method::PUT, Some(""), 400).await?,
        json!({"message": "Kindly send key to be updated, given key does not exist"})
    );
    assert_eq!(
        api_key_route(&app, Method::DELETE, Some(""), 400).await?,
        json!({"message": "Kindly send key to be deleted, given key does not exist"})
    );
    Ok(())
}

#[tokio::test]
async fn random_api_key_release_of_a_free_key_answers_200_with_the_key() -> Result<()> {
    let app = spawn_app().await;
    let key = app.compat_new_key().await?;
    assert_eq!(
        api_key_route(&app, Method::PUT, Some(&key), 200).await?,
        json!({"api_key": key})
    );
    Ok(())
}

#[tokio::test]
async fn random_api_key_leases_expire_after_60_seconds() -> Result<()> {
    let app = spawn_app().await;
    let key = app.compat_new_key().await?;
    api_key_route(&app, Method::GET, None, 200).await?;
    app.advance_ms(59_000);
    api_key_route(&app, Method::GET, None, 404).await?;
    app.advance_ms(2000);
    assert_eq!(
        api_key_route(&app, Method::GET, None, 200).await?,
        json!({"api_key": key})
    );
    Ok(())
}

#[tokio::test]
async fn random_api_key_keys_live_in_the_v1_default_pool() -> Result<()> {
    let app = spawn_app().await;
    let key = app
        .random_api_key(Method::POST, false, None)
        .await?
        .str("api_key");
    assert_eq!(app.get_key("default", &key).await?.str("state"), "free");
    app.random_api_key(Method::GET, false, None)
        .await?
        .expect(200);
    let v1 = app.get_key("default", &key).await?;
    assert_eq!(v1.str("state"), "leased");
    app.release("default", &key, Some(v1.u64("lease_id")))
        .await?
        .expect(200);
    let v1_key = app.new_keys("default", 1).await?.remove(0);
    let pool = app.get_pool("default").await?;
    assert_eq!(pool.u64("total"), 2);
    assert_eq!(
        *app.random_api_key(Method::DELETE, false, Some(&v1_key))
            .await?
            .expect(200),
        json!({"message": "Given key has been deleted"})
    );
    app.get_key("default", &v1_key)
        .await?
        .expect_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn start_scheduler_answers_200_with_a_message_with_and_without_slash() -> Result<()> {
    let app = spawn_app().await;
    for slash in [true, false] {
        let reply = app.start_scheduler(slash).await?;
        let body = reply.expect(200);
        assert!(body["message"].is_string(), "{}", reply.text);
    }
    Ok(())
}
