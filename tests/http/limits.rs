//! Bad input never crashes the server or earns a 5xx: malformed JSON,
//! wrong types, big bodies, unknown routes, wrong methods, long or
//! non-UTF-8 path parts. Plus the ops routes and graceful shutdown.

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use keyward_testkit::app::{TestApp, spawn_app};

/// A JSON object a little over 64 KiB.
fn big_body() -> Vec<u8> {
    json!({ "pad": "x".repeat(70 * 1024) })
        .to_string()
        .into_bytes()
}

/// The pool routes that take a JSON body: on pool `p`, and on `key` of
/// the pool `default`.
fn pool_routes_with_a_body(key: &str) -> [(Method, String); 4] {
    // `POST /v1/pools/{pool}/keys` takes up to 6 MiB: see strict.rs.
    [
        (Method::PUT, "/v1/pools/p".to_owned()),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/disable"),
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/release"),
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/keepalive"),
        ),
    ]
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json_on_every_route_with_a_body() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    let routes = pool_routes_with_a_body(&key).into_iter().chain([
        (Method::PUT, "/v1/keyspaces/ks".to_owned()),
        (Method::POST, "/v1/pools/p/keys".to_owned()),
    ]);
    for (method, path) in routes {
        for bad in ["{", "{\"count\": }", "not json", "{\"a\":1}}", "\u{0}"] {
            let reply = app
                .request_raw(
                    method.clone(),
                    &path,
                    Some(bad.as_bytes().to_vec()),
                    Some("application/json"),
                )
                .await?;
            assert_eq!(
                reply.status, 400,
                "{method} {path} {bad:?} -> {}",
                reply.text
            );
            reply.expect_error(400, "invalid_json");
        }
    }
    Ok(())
}

#[tokio::test]
async fn json_bodies_are_read_whatever_the_content_type() -> Result<()> {
    let app = spawn_app().await;
    for ct in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let reply = app
            .request_raw(
                Method::POST,
                "/v1/pools/p/keys",
                Some(br#"{"count": 2}"#.to_vec()),
                ct,
            )
            .await?;
        assert_eq!(
            reply.expect(201)["keys"].as_array().map(Vec::len),
            Some(2),
            "{ct:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn wrong_types_are_400_with_the_route_s_own_code() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    app.request(
        Method::POST,
        "/v1/pools/p/keys",
        Some(json!({"count": "ten"})),
    )
    .await?
    .expect_error(400, "invalid_count");
    app.put_pool("p", json!({"lease_ttl_ms": "soon"}))
        .await?
        .expect_error(400, "invalid_settings");
    app.request(
        Method::PUT,
        "/v1/keyspaces/ks",
        Some(json!({"alphabet": "ab", "length": "two"})),
    )
    .await?
    .expect_error(400, "invalid_keyspace");
    // Release and keep-alive name no 400 code in the contract: any JSON 400.
    for action in ["release", "keepalive"] {
        let reply = app
            .request(
                Method::POST,
                &format!("/v1/pools/default/keys/{key}/{action}"),
                Some(json!({"lease_id": "one"})),
            )
            .await?;
        reply.expect_error_shape(400);
        let reply = app
            .request(
                Method::POST,
                &format!("/v1/pools/default/keys/{key}/{action}"),
                Some(json!({"lease_id": -1})),
            )
            .await?;
        reply.expect_error_shape(400);
    }
    Ok(())
}

#[tokio::test]
async fn json_arrays_are_not_accepted_where_the_contract_takes_an_object() -> Result<()> {
    let app = spawn_app().await;
    app.request(Method::POST, "/v1/pools/p/keys", Some(json!([3])))
        .await?
        .expect_error(400, "invalid_count");
    app.request(Method::PUT, "/v1/keyspaces/ks", Some(json!(["ab", 3])))
        .await?
        .expect_error(400, "invalid_keyspace");
    app.put_pool("p2", json!([1000, 2000, 8]))
        .await?
        .expect_error(400, "invalid_settings");
    // Nothing was created.
    app.get_pool("p").await?.expect_error(404, "pool_not_found");
    app.get_pool("p2")
        .await?
        .expect_error(404, "pool_not_found");
    app.get_keyspace("ks")
        .await?
        .expect_error(404, "keyspace_not_found");
    Ok(())
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_json_on_routes_that_take_a_body() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    // `PUT /v1/keyspaces/{ks}` takes up to 1 MiB: see strict.rs.
    let routes = pool_routes_with_a_body(&key);
    for (method, path) in routes {
        let reply = app
            .request_raw(
                method.clone(),
                &path,
                Some(big_body()),
                Some("application/json"),
            )
            .await?;
        assert_eq!(reply.status, 413, "{method} {path} -> {}", reply.text);
        reply.expect_error_shape(413);
    }
    // Nothing happened.
    app.get_pool("p").await?.expect_error(404, "pool_not_found");
    app.get_keyspace("ks")
        .await?
        .expect_error(404, "keyspace_not_found");
    // A body of exactly 64 KiB is still read (and here is valid JSON).
    let mut exact = format!("{{\"count\": 1{}}}", " ".repeat(64 * 1024)).into_bytes();
    exact.truncate(64 * 1024 - 1);
    exact.push(b'}');
    assert_eq!(exact.len(), 64 * 1024);
    app.request_raw(
        Method::POST,
        "/v1/pools/p/keys",
        Some(exact),
        Some("application/json"),
    )
    .await?
    .expect(201);
    Ok(())
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_json_on_routes_that_ignore_the_body() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("default", 1).await?;
    for (method, path) in [
        (Method::POST, "/v1/pools/default/lease"),
        (Method::POST, "/v1/keyspaces/default/tokens"),
        (Method::POST, "/api/get_token"),
        (Method::POST, "/api/v1/random_api_key/"),
    ] {
        let reply = app
            .request_raw(
                method.clone(),
                path,
                Some(big_body()),
                Some("application/json"),
            )
            .await?;
        assert_eq!(reply.status, 413, "{method} {path} -> {}", reply.text);
        reply.expect_error_shape(413);
    }
    // Nothing happened: the key is still free and no token was issued.
    app.lease("default").await?.expect(200);
    assert_eq!(app.get_keyspace("default").await?.u64("issued"), 0);
    Ok(())
}

#[tokio::test]
async fn unknown_routes_are_404_json_not_found() -> Result<()> {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/v1/tokens"),
        (Method::GET, "/v1/pools/default/keys/a/b/c"),
        (Method::POST, "/v2/pools/default/lease"),
        (Method::GET, "/api/v1/random_api_key/extra"),
        (Method::GET, "/v1/keyspaces/default/tokens/ab/activate/now"),
    ] {
        let reply = app.request(method.clone(), path, None).await?;
        assert_eq!(reply.status, 404, "{method} {path} -> {}", reply.text);
        reply.expect_error(404, "not_found");
    }
    Ok(())
}

/// Sends each `(method, path)` without a body: every one must get
/// `status` with the contract's error shape.
async fn assert_each_refused(
    app: &TestApp,
    status: u16,
    requests: &[(Method, &str)],
) -> Result<()> {
    for (method, path) in requests {
        let reply = app.request(method.clone(), path, None).await?;
        assert_eq!(reply.status, status, "{method} {path} -> {}", reply.text);
        reply.expect_error_shape(status);
    }
    Ok(())
}

#[tokio::test]
async fn wrong_methods_are_405_json() -> Result<()> {
    let app = spawn_app().await;
    let requests = [
        (Method::PATCH, "/v1/pools/default"),
        (Method::POST, "/v1/pools/default"),
        (Method::PUT, "/v1/pools/default/keys"),
        (Method::GET, "/v1/pools/default/lease"),
        (Method::GET, "/v1/pools/default/keys/AAAA/release"),
        (Method::GET, "/v1/pools/default/keys/AAAA/disable"),
        (Method::DELETE, "/v1/pools/default/keys/AAAA/enable"),
        (Method::PUT, "/v1/pools/default/keys/AAAA"),
        (Method::PATCH, "/v1/keyspaces/default"),
        (Method::GET, "/v1/keyspaces/default/tokens"),
        (Method::GET, "/v1/keyspaces/default/tokens/ab/activate"),
        (Method::GET, "/api/get_token"),
        (Method::POST, "/api/get_number_token"),
        (Method::GET, "/api/activate_token/abcd"),
        (Method::PATCH, "/api/v1/random_api_key/"),
        (Method::POST, "/healthz"),
    ];
    assert_each_refused(&app, 405, &requests).await
}

#[tokio::test]
async fn path_parts_over_the_limit_are_400_json() -> Result<()> {
    let app = spawn_app().await;
    let long = "k".repeat(keyward::http::MAX_PATH_PART + 1);
    for (method, path) in [
        (Method::GET, format!("/v1/pools/{long}")),
        (Method::GET, format!("/v1/pools/default/keys/{long}")),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{long}/release"),
        ),
        (Method::GET, format!("/v1/keyspaces/default/tokens/{long}")),
        (Method::GET, format!("/api/get_token_status/{long}")),
        (Method::GET, format!("/{long}")),
    ] {
        let reply = app.request(method.clone(), &path, None).await?;
        assert_eq!(
            reply.status,
            400,
            "{method} {} -> {}",
            &path[..40],
            reply.text
        );
        reply.expect_error_shape(400);
    }
    // A key of 256 characters, every one percent-encoded, is allowed
    // through to the route (an unknown key here), and so is a fingerprint
    // of 256 four-byte characters, every byte percent-encoded: the limit.
    app.get_key("default", &"%7B".repeat(256))
        .await?
        .expect_error(404, "key_not_found");
    let limit = "%F0%9F%98%80".repeat(256);
    assert_eq!(limit.len(), keyward::http::MAX_PATH_PART);
    let token = app.issue_token("default").await?.str("token");
    let path = format!("/v1/keyspaces/default/tokens/{token}/activations/{limit}");
    app.request(Method::DELETE, &path, None)
        .await?
        .expect_error(404, "activation_not_found");
    Ok(())
}

#[tokio::test]
async fn non_utf8_path_parts_are_400_json_not_5xx() -> Result<()> {
    let app = spawn_app().await;
    let requests = [
        (Method::GET, "/v1/pools/%FF"),
        (Method::PUT, "/v1/pools/%FF"),
        (Method::POST, "/v1/pools/%FF/lease"),
        (Method::GET, "/v1/pools/default/keys/%FF"),
        (Method::DELETE, "/v1/pools/default/keys/%FF%FE"),
        (Method::POST, "/v1/pools/default/keys/%C3/keepalive"),
        (Method::GET, "/v1/keyspaces/%FF"),
        (Method::GET, "/v1/keyspaces/default/tokens/%FF"),
        (Method::POST, "/v1/keyspaces/default/tokens/%FF/activate"),
        (Method::GET, "/api/get_token_status/%FF"),
        (Method::PUT, "/api/activate_token/%FF"),
    ];
    assert_each_refused(&app, 400, &requests).await
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() -> Result<()> {
    let app = spawn_app().await;
    app.healthz().await?.expect(200);
    app.readyz().await?.expect(200);
    Ok(())
}

#[tokio::test]
async fn the_server_survives_a_burst_of_bad_requests() -> Result<()> {
    let app = spawn_app().await;
    for i in 0..50_u32 {
        let body = match i % 5 {
            0 => b"{".to_vec(),
            1 => vec![0xFF, 0xFE, 0x00],
            2 => b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec(),
            3 => b"{\"count\": 99999999999999999999999999}".to_vec(),
            _ => b"null".to_vec(),
        };
        let reply = app
            .request_raw(
                Method::POST,
                "/v1/pools/p/keys",
                Some(body),
                Some("application/json"),
            )
            .await?;
        assert!(
            (400..500).contains(&reply.status),
            "a client mistake is 4xx: {} {}",
            reply.status,
            reply.text
        );
        reply.expect_error_shape(reply.status);
    }
    app.healthz().await?.expect(200);
    app.new_keys("p", 1).await?;
    Ok(())
}

#[tokio::test]
async fn run_until_returns_ok_once_shutdown_is_signalled() -> Result<()> {
    let app = spawn_app().await;
    assert_ne!(app.addr.port(), 0, "the real port is known");
    let api = (*app).clone();
    app.healthz().await?.expect(200);
    app.stop().await?;
    assert!(
        api.healthz().await.is_err(),
        "a stopped server accepts no new requests"
    );
    Ok(())
}

/// Sends `GET /healthz` (keep-alive) on `stream` and waits up to `wait` for
/// the status line; `None` if nothing came.
async fn healthz_on(
    stream: &mut tokio::net::TcpStream,
    wait: std::time::Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() -> Result<()> {
    use std::time::Duration;
    let app = keyward_testkit::app::spawn_app_with(keyward::config::Config {
        max_connections: 2,
        ..keyward::config::Config::default()
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(app.addr);
    let (mut first, mut second) = (connect().await?, connect().await?);
    let long = Duration::from_secs(5);
    for stream in [&mut first, &mut second] {
        let status = healthz_on(stream, long).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    // The third connection sits in the backlog: no answer while both
    // others stay open...
    let mut third = connect().await?;
    assert_eq!(
        healthz_on(&mut third, Duration::from_millis(300)).await,
        None
    );
    // ...and its request is served as soon as one of them closes.
    drop(first);
    let mut buf = [0u8; 512];
    let n =
        tokio::time::timeout(long, tokio::io::AsyncReadExt::read(&mut third, &mut buf)).await??;
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    Ok(())
}
