//! Input the server used to read loosely is now refused or read exactly:
//! a body on the issue route, repeated JSON keys, `null` fields, a bad
//! chunk size; plus the 1 MiB body limit of `PUT /v1/keyspaces/{ks}` (the
//! largest alphabet), exact decimal strings for counts past 2^53, the
//! `WWW-Authenticate` header of a 401, and the grammar of one message.

use std::time::Duration;

use anyhow::{Context, Result};
use keyward::config::{AdminToken, Config};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use keyward_testkit::app::{TestApp, spawn_app, spawn_app_with};
use keyward_testkit::client::Reply;

/// Fails unless the refused requests changed nothing: no pool `p`, no
/// keyspace `ks`, and `key` still leased in the pool `default`.
async fn assert_nothing_changed(app: &TestApp, key: &str) -> Result<()> {
    app.get_pool("p").await?.expect_error(404, "pool_not_found");
    app.get_keyspace("ks")
        .await?
        .expect_error(404, "keyspace_not_found");
    assert_eq!(app.get_key("default", key).await?.str("state"), "leased");
    Ok(())
}

/// Sends `body` as is (`application/json`) to `method path`.
async fn send(app: &TestApp, method: Method, path: &str, body: &str) -> Result<Reply> {
    app.request_raw(
        method,
        path,
        Some(body.as_bytes().to_vec()),
        Some("application/json"),
    )
    .await
}

// ---- the issue route takes `{}` or `{"count": n}` ----

#[tokio::test]
async fn issuing_refuses_any_other_body_and_issues_nothing() -> Result<()> {
    let app = spawn_app().await;
    for body in [r#"{"anything": true}"#, "[]", "null", "5"] {
        let reply = send(&app, Method::POST, "/v1/keyspaces/default/tokens", body).await?;
        reply.expect_error(400, "invalid_body");
    }
    for body in [
        r#"{"count": 0}"#,
        r#"{"count": 10001}"#,
        r#"{"count": 1.5}"#,
        r#"{"count": "5"}"#,
        r#"{"count": null}"#,
    ] {
        let reply = send(&app, Method::POST, "/v1/keyspaces/default/tokens", body).await?;
        assert!(
            reply.status == 400,
            "{body}: {} {}",
            reply.status,
            reply.text
        );
    }
    // Still 400 when the JSON itself is broken, as on every route.
    send(&app, Method::POST, "/v1/keyspaces/default/tokens", "{")
        .await?
        .expect_error(400, "invalid_json");
    assert_eq!(app.get_keyspace("default").await?.u64("issued"), 0);
    Ok(())
}

#[tokio::test]
async fn issuing_takes_an_empty_body_or_an_empty_object() -> Result<()> {
    let app = spawn_app().await;
    for body in ["", " \n", "{}", " { } "] {
        let reply = send(&app, Method::POST, "/v1/keyspaces/default/tokens", body).await?;
        assert!(
            reply.expect(201)["token"].is_string(),
            "{body:?}: {}",
            reply.text
        );
    }
    assert_eq!(app.get_keyspace("default").await?.u64("issued"), 4);
    Ok(())
}

// ---- repeated keys ----

#[tokio::test]
async fn a_json_object_repeating_a_key_is_400_invalid_json_on_every_body_route() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    let lease_id = app.lease("default").await?.expect(200)["lease_id"].clone();
    let cases = [
        (
            Method::POST,
            "/v1/pools/p/keys".to_owned(),
            r#"{"count": 1, "count": 10000}"#.to_owned(),
        ),
        (
            Method::POST,
            "/v1/pools/p/keys".to_owned(),
            // The same name once escaped: still the same key.
            r#"{"count": 1, "\u0063ount": 2}"#.to_owned(),
        ),
        (
            Method::PUT,
            "/v1/pools/p".to_owned(),
            r#"{"lease_ttl_ms": 1000, "lease_ttl_ms": 2000}"#.to_owned(),
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/release"),
            format!(r#"{{"lease_id": {lease_id}, "lease_id": {lease_id}}}"#),
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/keepalive"),
            format!(r#"{{"lease_id": {lease_id}, "lease_id": {lease_id}}}"#),
        ),
        (
            Method::PUT,
            "/v1/keyspaces/ks".to_owned(),
            r#"{"alphabet": "ab", "length": 3, "alphabet": "xyz"}"#.to_owned(),
        ),
        (
            Method::POST,
            "/v1/keyspaces/default/tokens".to_owned(),
            r#"{"a": {"b": 1, "b": 2}}"#.to_owned(),
        ),
    ];
    for (method, path, body) in cases {
        let reply = send(&app, method.clone(), &path, &body).await?;
        reply.expect_error(400, "invalid_json");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("twice")),
            "{method} {path} {body}: {}",
            reply.text
        );
    }
    // Nothing changed: no pool `p`, no keyspace `ks`, the lease still held.
    assert_nothing_changed(&app, &key).await?;
    assert_eq!(app.get_keyspace("default").await?.u64("issued"), 0);
    // Distinct keys in different objects are fine.
    send(&app, Method::POST, "/v1/pools/p/keys", r#"{"count": 2}"#)
        .await?
        .expect(201);
    Ok(())
}

// ---- null ----

#[tokio::test]
async fn null_is_refused_for_every_request_field_with_the_routes_code() -> Result<()> {
    let app = spawn_app().await;
    let key = app.new_keys("default", 1).await?.remove(0);
    app.lease("default").await?.expect(200);
    let cases = [
        (
            Method::POST,
            "/v1/pools/p/keys".to_owned(),
            json!({"count": null}),
            "invalid_count",
        ),
        (
            Method::PUT,
            "/v1/pools/p".to_owned(),
            json!({"lease_ttl_ms": null}),
            "invalid_settings",
        ),
        (
            Method::PUT,
            "/v1/pools/p".to_owned(),
            json!({"keepalive_ttl_ms": null}),
            "invalid_settings",
        ),
        (
            Method::PUT,
            "/v1/pools/p".to_owned(),
            json!({"key_length": null}),
            "invalid_settings",
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/release"),
            json!({"lease_id": null}),
            "invalid_lease_id",
        ),
        (
            Method::POST,
            format!("/v1/pools/default/keys/{key}/keepalive"),
            json!({"lease_id": null}),
            "invalid_lease_id",
        ),
        (
            Method::PUT,
            "/v1/keyspaces/ks".to_owned(),
            json!({"alphabet": null, "length": 3}),
            "invalid_keyspace",
        ),
        (
            Method::PUT,
            "/v1/keyspaces/ks".to_owned(),
            json!({"alphabet": "ab", "length": null}),
            "invalid_keyspace",
        ),
    ];
    for (method, path, body, code) in cases {
        let reply = app
            .request(method.clone(), &path, Some(body.clone()))
            .await?;
        reply.expect_error(400, code);
        assert!(
            reply.text.contains("null"),
            "{method} {path} {body}: the message names the null: {}",
            reply.text
        );
    }
    assert_nothing_changed(&app, &key).await?;
    Ok(())
}

// ---- malformed chunked framing ----

/// Sends `head` and `body` on a fresh connection and returns the status
/// code and the body of the answer (at most 10 s).
async fn raw_exchange(app: &TestApp, head: &str, body: &[u8]) -> Result<(u16, Value)> {
    let mut stream = TcpStream::connect(app.addr).await?;
    stream.write_all(head.as_bytes()).await?;
    // The server may answer and close before reading it all.
    let _ = stream.write_all(body).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 1 << 20 {
                break;
            }
        }
    });
    read.await.context("no answer within 10 s")?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, body))
}

fn chunked_head(method: &str, path: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn a_chunk_size_that_is_not_hex_is_400_invalid_body_not_413() -> Result<()> {
    let app = spawn_app().await;
    app.new_keys("default", 1).await?;
    for (method, path) in [
        ("POST", "/v1/pools/p/keys"),
        ("POST", "/v1/pools/default/lease"),
        ("PUT", "/v1/keyspaces/ks"),
    ] {
        for bad in [
            "zz\r\n{}\r\n0\r\n\r\n",
            "-1\r\n{}\r\n0\r\n\r\n",
            "2 x\r\n{}\r\n0\r\n\r\n",
        ] {
            let (status, body) =
                raw_exchange(&app, &chunked_head(method, path), bad.as_bytes()).await?;
            assert_eq!(status, 400, "{method} {path} {bad:?}: {body}");
            assert_eq!(body["error"]["code"], "invalid_body", "{body}");
        }
    }
    // Nothing happened...
    app.get_pool("p").await?.expect_error(404, "pool_not_found");
    app.lease("default").await?.expect(200);
    // ...and well-formed chunks are read as before.
    let good = "5\r\n{\"cou\r\n7\r\nnt\": 2}\r\n0\r\n\r\n";
    let (status, body) = raw_exchange(
        &app,
        &chunked_head("POST", "/v1/pools/p/keys"),
        good.as_bytes(),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(2), "{body}");
    Ok(())
}

// ---- the largest alphabet, and the keyspace route's body limit ----

/// The first `n` characters from U+0021 up that an alphabet may hold (no
/// whitespace, control character or `/`; `char` already skips the
/// surrogates).
fn usable_chars(n: usize) -> String {
    (0x21..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '/')
        .take(n)
        .collect()
}

/// `s` as a JSON string with every character `\u`-escaped (astral ones as
/// surrogate pairs): the largest way to write it.
fn escaped_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 + 2);
    out.push('"');
    let mut units = [0u16; 2];
    for c in s.chars() {
        for unit in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{unit:04X}"));
        }
    }
    out.push('"');
    out
}

#[tokio::test]
async fn a_keyspace_with_the_largest_alphabet_of_65536_characters_is_created_and_issues()
-> Result<()> {
    let app = spawn_app().await;
    let alphabet = usable_chars(65_536);
    assert_eq!(alphabet.chars().count(), 65_536);
    assert!(
        alphabet.len() > 64 * 1024,
        "the body is over the general limit"
    );
    let reply = app.put_keyspace("huge", &alphabet, 2).await?;
    let body = reply.expect(201);
    assert_eq!(body["capacity_str"], (65_536u128 * 65_536).to_string());
    assert_eq!(
        body["alphabet"].as_str().map(|a| a.chars().count()),
        Some(65_536)
    );
    // Idempotent, and it issues tokens of two of its characters.
    app.put_keyspace("huge", &alphabet, 2).await?.expect(200);
    let token = app.issue_token("huge").await?.expect(201)["token"]
        .as_str()
        .context("a token")?
        .to_owned();
    assert_eq!(token.chars().count(), 2);
    assert!(token.chars().all(|c| alphabet.contains(c)));
    // One character more is the keyspace's own error, not a size error.
    let too_many = usable_chars(65_537);
    app.put_keyspace("over", &too_many, 1)
        .await?
        .expect_error(400, "invalid_keyspace");
    Ok(())
}

#[tokio::test]
async fn the_largest_alphabet_fits_even_written_as_escapes_and_1_mib_is_the_keyspace_limit()
-> Result<()> {
    let app = spawn_app().await;
    // 65,536 astral characters, each written as a 12-byte surrogate-pair
    // escape: the largest body a valid definition can take.
    let astral: String = (0x1_0000..0x2_0000).filter_map(char::from_u32).collect();
    assert_eq!(astral.chars().count(), 65_536);
    let body = format!(
        r#"{{"alphabet": {}, "length": 1}}"#,
        escaped_json_string(&astral)
    );
    assert!(body.len() > 768 * 1024 && body.len() <= keyward::http::MAX_KEYSPACE_BODY_BYTES);
    let reply = send(&app, Method::PUT, "/v1/keyspaces/escaped", &body).await?;
    assert_eq!(reply.expect(201)["capacity"], 65_536);
    // One byte over 1 MiB is 413 on this route...
    let mut over = body.into_bytes();
    over.resize(keyward::http::MAX_KEYSPACE_BODY_BYTES + 1, b' ');
    let reply = app
        .request_raw(
            Method::PUT,
            "/v1/keyspaces/big",
            Some(over),
            Some("application/json"),
        )
        .await?;
    reply.expect_error(413, "payload_too_large");
    assert!(reply.text.contains("1048576"), "{}", reply.text);
    // ...and every other route keeps 64 KiB, the keyspace's GET included.
    let padded = format!(r#"{{"count": 1{}}}"#, " ".repeat(64 * 1024)).into_bytes();
    for (method, path) in [
        (Method::PUT, "/v1/pools/p"),
        (Method::POST, "/v1/keyspaces/escaped/tokens"),
        (Method::GET, "/v1/keyspaces/escaped"),
    ] {
        let reply = app
            .request_raw(
                method.clone(),
                path,
                Some(padded.clone()),
                Some("application/json"),
            )
            .await?;
        reply.expect_error(413, "payload_too_large");
        assert!(
            reply.text.contains("65536"),
            "{method} {path}: {}",
            reply.text
        );
    }
    Ok(())
}

// ---- counts past 2^53 ----

#[tokio::test]
async fn keyspace_counts_are_also_exact_decimal_strings_and_compat_bodies_are_unchanged()
-> Result<()> {
    let app = spawn_app().await;
    let alphabet: String = ('0'..='9').chain('a'..='z').chain('A'..='Z').collect();
    let capacity = 62u128.pow(20);
    assert!(capacity > 1 << 53);
    let created = app.put_keyspace("big", &alphabet, 20).await?;
    let body = created.expect(201);
    assert_eq!(body["capacity_str"], capacity.to_string());
    assert_eq!(body["remaining_str"], capacity.to_string());
    // The JSON numbers themselves are exact too, for readers that can.
    assert!(
        created.text.contains(&format!("\"capacity\":{capacity},")),
        "{}",
        created.text
    );
    let issued = app.issue_token("big").await?;
    assert_eq!(
        issued.expect(201)["remaining_str"],
        (capacity - 1).to_string()
    );
    assert!(
        issued
            .text
            .contains(&format!("\"remaining\":{},", capacity - 1)),
        "{}",
        issued.text
    );
    let view = app.get_keyspace("big").await?;
    assert_eq!(
        view.expect(200)["remaining_str"],
        (capacity - 1).to_string()
    );
    assert_eq!(view.body["capacity_str"], capacity.to_string());
    // The compat routes keep their exact bodies: no `_str` twins there.
    let token = app.compat_get_token().await?;
    let keys: Vec<&String> = token
        .expect(200)
        .as_object()
        .context("object")?
        .keys()
        .collect();
    assert_eq!(keys, ["key:", "leftkeys:"], "{}", token.text);
    let left = app.compat_number_token().await?;
    let keys: Vec<&String> = left
        .expect(200)
        .as_object()
        .context("object")?
        .keys()
        .collect();
    assert_eq!(keys, ["leftkeys:"], "{}", left.text);
    Ok(())
}

// ---- 401 and one message ----

#[tokio::test]
async fn a_401_names_the_bearer_scheme_in_www_authenticate() -> Result<()> {
    let app = spawn_app_with(Config {
        admin_token: Some(AdminToken::new("t0ken".into())),
        ..Config::default()
    })
    .await;
    for authorization in [None, Some("Bearer wrong"), Some("Basic dDBrZW4=")] {
        let reply = match authorization {
            Some(value) => {
                app.with_header("authorization", value)
                    .get_pool("default")
                    .await?
            }
            None => app.get_pool("default").await?,
        };
        assert_eq!(reply.status, 401, "{authorization:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer"),
            "{authorization:?}"
        );
    }
    let reply = app.with_bearer("t0ken").get_pool("default").await?;
    assert_eq!(reply.status, 200);
    assert!(reply.header("www-authenticate").is_none());
    Ok(())
}

#[tokio::test]
async fn a_one_character_alphabet_is_refused_in_good_grammar() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.put_keyspace("one", "a", 3).await?;
    reply.expect_error(400, "invalid_keyspace");
    assert_eq!(
        reply.body["error"]["message"],
        "the alphabet has 1 character; at least 2 are needed"
    );
    Ok(())
}

#[tokio::test]
async fn an_import_of_10000_keys_of_256_characters_fits_and_6_mib_is_the_import_limit() -> Result<()>
{
    let app = spawn_app().await;
    // The largest import the contract allows: 10,000 keys of 256 visible
    // characters, each with a `"` that JSON writes as `\"` (2 bytes).
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("{i:05}\"{}", "~".repeat(250)))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({"keys": keys, "labels": {"a": "b"}}))?;
    assert!(body.len() > 64 * 1024 && body.len() <= keyward::http::MAX_IMPORT_BODY_BYTES);
    let reply = app
        .request_raw(
            Method::POST,
            "/v1/pools/big/keys",
            Some(body),
            Some("application/json"),
        )
        .await?;
    let added = reply.expect(201);
    assert_eq!(added["keys"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(added["existing"], serde_json::json!([]));

    let mut over = br#"{"count": 1}"#.to_vec();
    over.resize(keyward::http::MAX_IMPORT_BODY_BYTES + 1, b' ');
    let reply = app
        .request_raw(
            Method::POST,
            "/v1/pools/big/keys",
            Some(over),
            Some("application/json"),
        )
        .await?;
    reply.expect_error(413, "payload_too_large");
    assert!(
        reply
            .text
            .contains(&keyward::http::MAX_IMPORT_BODY_BYTES.to_string()),
        "{}",
        reply.text
    );
    assert_eq!(app.get_pool("big").await?.expect(200)["total"], 10_000);
    Ok(())
}
