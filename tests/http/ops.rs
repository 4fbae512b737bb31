//! Operations: the OpenAPI document and the router cannot drift apart
//! (every documented operation is routed, every route of the README is
//! documented, nothing else answers); the admin bearer token guards `/v1`
//! and `/api` by config and by `KEYWARD_ADMIN_TOKEN` on the real binary,
//! which never prints it (nor a whole pool key) and logs the request id;
//! `x-request-id` is echoed or generated; a trailing slash is optional on
//! `/v1` routes as on the compat ones.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use keyward::config::{AdminToken, Config};
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::app::{TestApp, spawn_app, spawn_app_with};
use keyward_testkit::client::Reply;

/// Every `/v1` and compat route of the README as `(path template, method)`,
/// written as the OpenAPI document writes them (no trailing slash). Adding
/// a route to the router without documenting it, or documenting one the
/// README does not have, makes the document differ from this list.
const API_ROUTES: &[(&str, &str)] = &[
    ("/v1/pools", "get"),
    ("/v1/pools/{pool}", "get"),
    ("/v1/pools/{pool}", "put"),
    ("/v1/pools/{pool}", "delete"),
    ("/v1/pools/{pool}/keys", "post"),
    ("/v1/pools/{pool}/lease", "post"),
    ("/v1/pools/{pool}/keys/{key}", "get"),
    ("/v1/pools/{pool}/keys/{key}", "delete"),
    ("/v1/pools/{pool}/keys/{key}/release", "post"),
    ("/v1/pools/{pool}/keys/{key}/keepalive", "post"),
    ("/v1/pools/{pool}/keys", "get"),
    ("/v1/pools/{pool}/keys/{key}/disable", "post"),
    ("/v1/pools/{pool}/keys/{key}/enable", "post"),
    ("/v1/keyspaces", "get"),
    ("/v1/keyspaces/{ks}", "get"),
    ("/v1/keyspaces/{ks}", "put"),
    ("/v1/keyspaces/{ks}", "delete"),
    ("/v1/keyspaces/{ks}/tokens", "post"),
    ("/v1/keyspaces/{ks}/tokens/{token}", "get"),
    ("/v1/keyspaces/{ks}/tokens/{token}/activate", "post"),
    ("/v1/keyspaces/{ks}/tokens/{token}/revoke", "post"),
    (
        "/v1/keyspaces/{ks}/tokens/{token}/activations/{fingerprint}",
        "delete",
    ),
    ("/v1/keyspaces/{ks}/batches/{batch}", "get"),
    ("/api/get_token", "post"),
    ("/api/activate_token/{token}", "put"),
    ("/api/get_token_status/{token}", "get"),
    ("/api/get_number_token", "get"),
    ("/api/v1/random_api_key", "get"),
    ("/api/v1/random_api_key", "post"),
    ("/api/v1/random_api_key", "put"),
    ("/api/v1/random_api_key", "delete"),
    ("/api/v1/start_scheduler", "get"),
];

/// Ops routes: the document may list them (GET only), it need not.
const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The HTTP methods an OpenAPI path item can hold.
const OPENAPI_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Methods probed for 405 on documented paths (HEAD is implied by GET and
/// OPTIONS is left to the server's discretion, so both are left out).
const PROBED_METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

const SECRET: &str = "s3cret";

fn method_of(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("a valid HTTP method name")
}

/// `template` with every `{param}` filled: names with `default` (which
/// exists from the start), anything else with `x`.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some("pool" | "ks") => "default",
                Some(_) => "x",
                None => part,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The `(path, method)` pairs of an OpenAPI document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"]
        .as_object()
        .expect("the document has a `paths` object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item
            .keys()
            .filter(|m| OPENAPI_METHODS.contains(&m.as_str()))
        {
            out.insert((path.clone(), method.clone()));
        }
    }
    out
}

fn api_routes() -> BTreeSet<(String, String)> {
    API_ROUTES
        .iter()
        .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
        .collect()
}

/// The document's pairs without the ops routes, which it may or may not
/// list; panics if it lists an ops route with another method than GET.
fn documented_api_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let all = documented(doc);
    for (path, method) in &all {
        if OPS_PATHS.contains(&path.as_str()) {
            assert_eq!(method, "get", "{path} is documented with {method}");
        }
    }
    all.into_iter()
        .filter(|(path, _)| !OPS_PATHS.contains(&path.as_str()))
        .collect()
}

async fn openapi_document(app: &TestApp) -> Result<Value> {
    let reply = app.request(Method::GET, "/openapi.json", None).await?;
    reply.expect(200);
    assert!(
        reply.is_json(),
        "/openapi.json is JSON with a JSON Content-Type, got {:?}: {}",
        reply.content_type,
        &reply.text[..reply.text.len().min(200)]
    );
    Ok(reply.body)
}

/// True when `reply` is the router's own "no such route" or "no such
/// method" answer (not a handler's 404 such as `key_not_found`).
fn unrouted(reply: &Reply) -> bool {
    (reply.status == 404 && reply.body["error"]["code"] == "not_found")
        || reply.status == 405
        || reply.body["error"]["code"] == "method_not_allowed"
}

#[tokio::test]
async fn openapi_json_is_served_as_json_and_lists_every_route_of_the_readme() -> Result<()> {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    let listed = documented(&doc);
    for (path, method) in API_ROUTES {
        assert!(
            listed.contains(&((*path).to_owned(), (*method).to_owned())),
            "/openapi.json does not list {method} {path}; it lists {listed:?}"
        );
    }
    // The served document is the one the library generates.
    let generated = serde_json::to_value(keyward::http::openapi())?;
    assert_eq!(
        documented(&generated),
        listed,
        "/openapi.json and keyward::http::openapi() list different routes"
    );
    Ok(())
}

#[tokio::test]
async fn the_documented_routes_are_exactly_the_routes_of_the_readme() -> Result<()> {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await?;
    let documented = documented_api_routes(&doc);
    let in_readme = api_routes();
    let undocumented: Vec<_> = in_readme.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&in_readme).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "routes of the README missing from /openapi.json: {undocumented:?}; \
         documented routes the README does not have: {unknown:?}"
    );
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_declares_its_path_parameters_and_a_success() -> Result<()> {
    let doc = serde_json::to_value(keyward::http::openapi())?;
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .collect();
        assert_eq!(
            declared, in_path,
            "{method} {path}: path parameters declared vs in the template"
        );
        let responses = op["responses"]
            .as_object()
            .with_context(|| format!("{method} {path} has no responses"))?;
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{method} {path} documents no 2xx response: {:?}",
            responses.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_is_routed_by_the_server() -> Result<()> {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await?;
    let pairs = documented(&doc);
    assert!(pairs.len() >= API_ROUTES.len(), "{pairs:?}");
    for (path, method) in pairs {
        let url = fill(&path);
        let reply = app.request(method_of(&method), &url, None).await?;
        assert!(
            !unrouted(&reply),
            "documented {method} {path} is not routed: {} {url} -> {} {}",
            method.to_ascii_uppercase(),
            reply.status,
            reply.text
        );
        assert!(
            reply.status < 500,
            "{method} {url} -> {} {}",
            reply.status,
            reply.text
        );
    }
    Ok(())
}

#[tokio::test]
async fn documented_paths_answer_405_json_to_every_undocumented_method() -> Result<()> {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await?;
    let pairs = documented_api_routes(&doc);
    let paths: BTreeSet<&String> = pairs.iter().map(|(p, _)| p).collect();
    for path in paths {
        for method in PROBED_METHODS {
            if pairs.contains(&(path.clone(), (*method).to_owned())) {
                continue;
            }
            let url = fill(path);
            let reply = app.request(method_of(method), &url, None).await?;
            assert_eq!(
                reply.status,
                405,
                "{} {url} is not documented, so it must be 405; got {} {}",
                method.to_ascii_uppercase(),
                reply.status,
                reply.text
            );
            reply.expect_error(405, "method_not_allowed");
        }
    }
    Ok(())
}

#[tokio::test]
async fn no_undocumented_route_answers_at_a_prefix_of_a_documented_path() -> Result<()> {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await?;
    let pairs = documented(&doc);
    let paths: BTreeSet<&String> = pairs.iter().map(|(p, _)| p).collect();
    // `/v1`, `/v1/pools`, `/api/activate_token`, …: where a listing or a
    // new route would most likely be added without its document entry.
    let prefixes: BTreeSet<String> = paths
        .iter()
        .flat_map(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            (2..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .filter(|prefix| !paths.contains(prefix) && !OPS_PATHS.contains(&prefix.as_str()))
        .collect();
    assert!(prefixes.contains("/v1"), "{prefixes:?}");
    for prefix in &prefixes {
        for method in PROBED_METHODS {
            let url = fill(prefix);
            let reply = app.request(method_of(method), &url, None).await?;
            assert_eq!(
                reply.status,
                404,
                "{} {url} answers but {prefix} is not documented: {}",
                method.to_ascii_uppercase(),
                reply.text
            );
            reply.expect_error(404, "not_found");
        }
    }
    Ok(())
}

// ---- admin token ----

async fn spawn_guarded_app() -> TestApp {
    spawn_app_with(Config {
        admin_token: Some(AdminToken::new(SECRET.into())),
        ..Config::default()
    })
    .await
}

/// Sends `method path` with an optional `Authorization` value and body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> Result<Reply> {
    match authorization {
        Some(value) => {
            app.with_header("authorization", value)
                .request(method, path, body)
                .await
        }
        None => app.request(method, path, body).await,
    }
}

fn bearer() -> String {
    format!("Bearer {SECRET}")
}

#[tokio::test]
async fn with_an_admin_token_every_v1_and_api_route_is_401_json_without_the_header() -> Result<()> {
    let app = spawn_guarded_app().await;
    for (path, method) in API_ROUTES {
        let url = fill(path);
        let reply = send(&app, method_of(method), &url, None, None).await?;
        assert_eq!(
            reply.status,
            401,
            "{} {url} without a token: {}",
            method.to_ascii_uppercase(),
            reply.text
        );
        reply.expect_error(401, "unauthorized");
        // With a trailing slash too (the compat clients send one).
        let reply = send(&app, method_of(method), &format!("{url}/"), None, None).await?;
        reply.expect_error(401, "unauthorized");
    }
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_the_bearer_scheme_name_is_case_insensitive() -> Result<()> {
    let app = spawn_guarded_app().await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {SECRET}");
        let reply = send(&app, Method::GET, "/v1/pools/default", Some(&header), None).await?;
        reply.expect(200);
    }
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_a_wrong_or_malformed_authorization_header_is_401() -> Result<()> {
    let app = spawn_guarded_app().await;
    let wrong = [
        "Bearer wrong".to_owned(),
        "Bearer s3cre".to_owned(),
        "Bearer s3cretX".to_owned(),
        "Bearer xs3cret".to_owned(),
        "Bearer S3CRET".to_owned(),
        SECRET.to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Basic czNjcmV0".to_owned(),
        format!("Token {SECRET}"),
        format!("Bearer {SECRET}{SECRET}"),
        format!("Bearer  {SECRET}"),
    ];
    for header in &wrong {
        for (path, method) in [
            ("/v1/pools/default", Method::GET),
            ("/v1/pools/p/keys", Method::POST),
            ("/api/get_number_token", Method::GET),
            ("/api/v1/random_api_key", Method::POST),
        ] {
            let reply = send(&app, method.clone(), path, Some(header), None).await?;
            assert_eq!(
                reply.status, 401,
                "{method} {path} with Authorization {header:?}: {}",
                reply.text
            );
            reply.expect_error(401, "unauthorized");
        }
    }
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_the_bearer_header_opens_every_route() -> Result<()> {
    let app = spawn_guarded_app().await;
    let auth = bearer();
    for (path, method) in API_ROUTES {
        let url = fill(path);
        let reply = send(&app, method_of(method), &url, Some(&auth), None).await?;
        assert!(
            reply.status != 401 && reply.status < 500 && !unrouted(&reply),
            "{} {url} with the token: {} {}",
            method.to_ascii_uppercase(),
            reply.status,
            reply.text
        );
    }
    // And the routes do their work.
    let reply = send(
        &app,
        Method::POST,
        "/v1/pools/p/keys",
        Some(&auth),
        Some(json!({"count": 2})),
    )
    .await?;
    assert_eq!(reply.expect(201)["keys"].as_array().map(Vec::len), Some(2));
    send(&app, Method::POST, "/v1/pools/p/lease", Some(&auth), None)
        .await?
        .expect(200);
    let reply = send(&app, Method::POST, "/api/get_token", Some(&auth), None).await?;
    assert!(reply.expect(200)["key:"].is_string(), "{}", reply.text);
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_refused_requests_change_nothing() -> Result<()> {
    let app = spawn_guarded_app().await;
    let auth = bearer();
    let capacity = u64::try_from(Config::default().default_keyspace.capacity())?;

    // A key to try to lease and delete without the token.
    let reply = send(
        &app,
        Method::POST,
        "/v1/pools/q/keys",
        Some(&auth),
        Some(json!({"count": 1})),
    )
    .await?;
    let key = reply.expect(201)["keys"][0]["key"]
        .as_str()
        .context("a key")?
        .to_owned();

    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/pools/p/keys".into(),
            Some(json!({"count": 3})),
        ),
        (Method::PUT, "/v1/pools/p2".into(), Some(json!({}))),
        (
            Method::PUT,
            "/v1/keyspaces/k".into(),
            Some(json!({"alphabet": "ab", "length": 3})),
        ),
        (Method::POST, "/v1/keyspaces/default/tokens".into(), None),
        (Method::POST, "/v1/pools/q/lease".into(), None),
        (Method::DELETE, format!("/v1/pools/q/keys/{key}"), None),
        (Method::POST, "/api/get_token".into(), None),
        (Method::POST, "/api/v1/random_api_key/".into(), None),
        (Method::GET, "/api/v1/random_api_key/".into(), None),
        (
            Method::DELETE,
            format!("/api/v1/random_api_key/?api_key={key}"),
            None,
        ),
    ];
    for (method, path, body) in refused {
        let reply = send(&app, method.clone(), &path, None, body).await?;
        assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text);
        reply.expect_error(401, "unauthorized");
    }

    send(&app, Method::GET, "/v1/pools/p", Some(&auth), None)
        .await?
        .expect_error(404, "pool_not_found");
    send(&app, Method::GET, "/v1/pools/p2", Some(&auth), None)
        .await?
        .expect_error(404, "pool_not_found");
    send(&app, Method::GET, "/v1/keyspaces/k", Some(&auth), None)
        .await?
        .expect_error(404, "keyspace_not_found");
    let ks = send(
        &app,
        Method::GET,
        "/v1/keyspaces/default",
        Some(&auth),
        None,
    )
    .await?;
    assert_eq!(ks.u64("issued"), 0, "{}", ks.text);
    let left = send(
        &app,
        Method::GET,
        "/api/get_number_token",
        Some(&auth),
        None,
    )
    .await?;
    assert_eq!(*left.expect(200), json!({"leftkeys:": capacity}));
    let default = send(&app, Method::GET, "/v1/pools/default", Some(&auth), None).await?;
    assert_eq!(default.u64("total"), 0, "{}", default.text);
    let q = send(&app, Method::GET, "/v1/pools/q", Some(&auth), None).await?;
    assert_eq!((q.u64("free"), q.u64("leased")), (1, 0), "{}", q.text);
    let k = send(
        &app,
        Method::GET,
        &format!("/v1/pools/q/keys/{key}"),
        Some(&auth),
        None,
    )
    .await?;
    assert_eq!(k.expect(200)["state"], "free");
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_health_readiness_and_the_document_stay_open() -> Result<()> {
    let app = spawn_guarded_app().await;
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let reply = send(&app, Method::GET, path, None, None).await?;
        assert_eq!(
            reply.status, 200,
            "GET {path} without a token: {}",
            reply.text
        );
        assert!(reply.is_json(), "GET {path}: {:?}", reply.content_type);
        // A wrong token does not close them either.
        let reply = send(&app, Method::GET, path, Some("Bearer wrong"), None).await?;
        assert_eq!(reply.status, 200, "GET {path} with a wrong token");
    }
    // `/metrics` stays open too (whatever else it answers).
    let reply = send(&app, Method::GET, "/metrics", None, None).await?;
    assert_ne!(
        reply.status, 401,
        "GET /metrics without a token: {}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn with_an_admin_token_unknown_routes_and_methods_under_v1_and_api_are_401_too() -> Result<()>
{
    let app = spawn_guarded_app().await;
    // Without the token nothing may tell which routes and methods exist.
    let probes = [
        (Method::GET, "/v1/nope", 404),
        (Method::GET, "/v1/tokens", 404),
        (Method::GET, "/api/nope", 404),
        (Method::POST, "/v1/pools/default/keys/x/y/z", 404),
        (Method::PATCH, "/v1/pools/default", 405),
        (Method::DELETE, "/api/get_token", 405),
        (Method::POST, "/api/v1/start_scheduler/", 405),
    ];
    for (method, path, with_token) in probes {
        let reply = send(&app, method.clone(), path, None, None).await?;
        assert_eq!(
            reply.status, 401,
            "{method} {path} without a token must be 401 like every /v1 and /api request, \
             got {} {}",
            reply.status, reply.text
        );
        reply.expect_error(401, "unauthorized");
        let reply = send(&app, method.clone(), path, Some(&bearer()), None).await?;
        assert_eq!(
            reply.status, with_token,
            "{method} {path} with the token: {}",
            reply.text
        );
    }
    Ok(())
}

// ---- the real binary ----

fn assert_never_printed(lines: &[String], secret: &str, what: &str) {
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
    assert!(
        leaks.is_empty(),
        "the output shows {what} {secret:?}: {leaks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_admin_token_from_the_environment_and_never_prints_it() -> Result<()> {
    const WRONG: &str = "wr0ng-t0ken";
    // As verbose as it gets: not even a trace line may leak a secret.
    let server = crate::keyward()
        .log_level("trace")
        .env("KEYWARD_ADMIN_TOKEN", SECRET)
        .start_listening()
        .await?;
    let (bare, with) = (&server.api, server.api.with_bearer(SECRET));
    bare.get_pool("default")
        .await?
        .expect_error(401, "unauthorized");
    server
        .api
        .with_bearer(WRONG)
        .get_pool("default")
        .await?
        .expect_error(401, "unauthorized");
    with.get_pool("default").await?.expect(200);
    with.random_api_key(Method::POST, true, None)
        .await?
        .expect(201);
    bare.compat_get_token().await?.expect(401);
    bare.healthz().await?.expect(200);

    let lines = server.stop_and_keep_logs().await?.lines();
    assert_never_printed(&lines, SECRET, "the admin token");
    assert_never_printed(&lines, WRONG, "a presented token");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_the_request_id_and_never_a_whole_pool_key() -> Result<()> {
    const REQUEST_ID: &str = "kw-test-request-7f3a";
    let server = crate::keyward()
        .log_level("trace")
        .start_listening()
        .await?;
    let api = &server.api;
    let key = api.new_keys("logged", 1).await?.remove(0);
    // The key travels in paths and queries; none may log it.
    let replies = [
        api.get_key("logged", &key).await?,
        api.lease("logged").await?,
        api.with_header("x-request-id", REQUEST_ID)
            .release("logged", &key, None)
            .await?,
        api.keepalive("logged", &key, None).await?,
        api.get_key("other", &key).await?,
        api.random_api_key(Method::PUT, true, Some(&key)).await?,
        api.delete_key("logged", &key).await?,
    ];
    for reply in replies {
        assert!(reply.status < 500, "{} {}", reply.status, reply.text);
    }
    let lines = server.stop_and_keep_logs().await?.lines();
    assert_never_printed(&lines, &key, "a whole pool key");
    assert!(
        lines.iter().any(|l| l.contains(REQUEST_ID)),
        "no log line names the request id {REQUEST_ID} (RUST_LOG=trace): {lines:?}"
    );
    Ok(())
}

// ---- x-request-id ----

async fn request_id(app: &TestApp, path: &str, given: Option<&str>) -> Result<Option<String>> {
    let api = match given {
        Some(id) => app.with_header("x-request-id", id),
        None => (**app).clone(),
    };
    let reply = api.request(Method::GET, path, None).await?;
    Ok(reply.header("x-request-id").map(str::to_owned))
}

#[tokio::test]
async fn a_given_x_request_id_is_echoed_on_success_and_on_error() -> Result<()> {
    let app = spawn_app().await;
    for path in [
        "/v1/pools/default",
        "/healthz",
        "/v1/pools/missing",
        "/no/such/route",
        "/api/get_number_token",
    ] {
        assert_eq!(
            request_id(&app, path, Some("abc-123")).await?.as_deref(),
            Some("abc-123"),
            "GET {path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_request_without_x_request_id_gets_a_fresh_generated_one() -> Result<()> {
    let app = spawn_app().await;
    let mut seen = BTreeSet::new();
    for path in ["/v1/pools/default", "/v1/pools/default", "/no/such/route"] {
        let id = request_id(&app, path, None)
            .await?
            .with_context(|| format!("GET {path} has no x-request-id"))?;
        assert!(!id.trim().is_empty(), "GET {path}: empty x-request-id");
        assert!(seen.insert(id.clone()), "x-request-id {id} was given twice");
    }
    Ok(())
}

// ---- trailing slash ----

#[tokio::test]
async fn v1_routes_answer_the_same_with_a_trailing_slash() -> Result<()> {
    let app = spawn_app().await;
    let pool = app.request(Method::GET, "/v1/pools/default/", None).await?;
    assert_eq!(pool.expect(200)["name"], "default");
    app.request(Method::PUT, "/v1/pools/tp/", Some(json!({})))
        .await?
        .expect(201);
    let keys = app
        .request(
            Method::POST,
            "/v1/pools/tp/keys/",
            Some(json!({"count": 1})),
        )
        .await?;
    let key = keys.expect(201)["keys"][0]["key"]
        .as_str()
        .context("a key")?
        .to_owned();
    let leased = app
        .request(Method::POST, "/v1/pools/tp/lease/", None)
        .await?;
    assert_eq!(leased.str("key"), key);
    let lease_id = leased.u64("lease_id");
    app.request(
        Method::POST,
        &format!("/v1/pools/tp/keys/{key}/keepalive/"),
        Some(json!({"lease_id": lease_id})),
    )
    .await?
    .expect(200);
    app.request(
        Method::POST,
        &format!("/v1/pools/tp/keys/{key}/release/"),
        Some(json!({"lease_id": lease_id})),
    )
    .await?
    .expect(200);
    let got = app
        .request(Method::GET, &format!("/v1/pools/tp/keys/{key}/"), None)
        .await?;
    assert_eq!(got.expect(200)["state"], "free");
    app.request(Method::DELETE, &format!("/v1/pools/tp/keys/{key}/"), None)
        .await?
        .expect(204);
    app.get_key("tp", &key)
        .await?
        .expect_error(404, "key_not_found");

    app.request(Method::GET, "/v1/keyspaces/default/", None)
        .await?
        .expect(200);
    app.request(
        Method::PUT,
        "/v1/keyspaces/tk/",
        Some(json!({"alphabet": "abc", "length": 3})),
    )
    .await?
    .expect(201);
    let token = app
        .request(Method::POST, "/v1/keyspaces/tk/tokens/", None)
        .await?
        .str("token");
    app.request(
        Method::GET,
        &format!("/v1/keyspaces/tk/tokens/{token}/"),
        None,
    )
    .await?
    .expect(200);
    let activated = app
        .request(
            Method::POST,
            &format!("/v1/keyspaces/tk/tokens/{token}/activate/"),
            None,
        )
        .await?;
    assert_eq!(activated.expect(200)["state"], "activated");
    Ok(())
}
