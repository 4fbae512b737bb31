//! The name rule, `[A-Za-z0-9._-]{1,64}`, on every `/v1` route that
//! takes a pool or keyspace name.

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::app::spawn_app;

/// Every `/v1` route with `{}` where the name goes, and a body it accepts.
fn routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::PUT, "/v1/pools/{}", Some(json!({}))),
        (Method::GET, "/v1/pools/{}", None),
        (Method::POST, "/v1/pools/{}/keys", Some(json!({"count": 1}))),
        (Method::POST, "/v1/pools/{}/lease", None),
        (
            Method::POST,
            "/v1/pools/{}/keys/AAAAAAAAAAAAAAAAAAAA/release",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/pools/{}/keys/AAAAAAAAAAAAAAAAAAAA/keepalive",
            Some(json!({})),
        ),
        (Method::GET, "/v1/pools/{}/keys/AAAAAAAAAAAAAAAAAAAA", None),
        (
            Method::DELETE,
            "/v1/pools/{}/keys/AAAAAAAAAAAAAAAAAAAA",
            None,
        ),
        (
            Method::PUT,
            "/v1/keyspaces/{}",
            Some(json!({"alphabet": "ab", "length": 2})),
        ),
        (Method::GET, "/v1/keyspaces/{}", None),
        (Method::POST, "/v1/keyspaces/{}/tokens", None),
        (Method::GET, "/v1/keyspaces/{}/tokens/ab", None),
        (Method::POST, "/v1/keyspaces/{}/tokens/ab/activate", None),
    ]
}

#[tokio::test]
async fn names_that_break_the_rule_are_400_invalid_name_on_every_route() -> Result<()> {
    let app = spawn_app().await;
    let too_long = "n".repeat(65);
    let bad_names = [
        too_long.as_str(),
        "bad%20name",
        "bad*name",
        "bad~name",
        "bad%2Fname",
        "%C3%A9t%C3%A9",
        "%D0%BF%D1%83%D0%BB",
        "a%00b",
    ];
    for (method, template, body) in routes() {
        for name in bad_names {
            let path = template.replace("{}", name);
            let reply = app.request(method.clone(), &path, body.clone()).await?;
            assert_eq!(reply.status, 400, "{method} {path} -> {}", reply.text);
            reply.expect_error(400, "invalid_name");
        }
    }
    Ok(())
}

#[tokio::test]
async fn names_of_1_to_64_allowed_characters_are_accepted() -> Result<()> {
    let app = spawn_app().await;
    let longest = "N".repeat(64);
    for name in ["a", "Z.9_x-Y", longest.as_str(), "...", "-_-"] {
        app.put_pool(name, json!({})).await?.expect(201);
        app.get_pool(name).await?.expect(200);
        app.put_keyspace(name, "ab", 2).await?.expect(201);
        app.get_keyspace(name).await?.expect(200);
    }
    Ok(())
}
