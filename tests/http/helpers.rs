//! The harness: start a keyward server on `127.0.0.1:0` with a manual
//! clock, and talk to it over real HTTP, one method per endpoint.
//!
//! Tests drive time with [`TestApp::advance`] and then make a request:
//! expiry is applied lazily on every touch, so no test sleeps for seconds.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keyward::app::{App, AppError};
use keyward::clock::{Clock, ManualClock};
use keyward::config::{Config, StoreUrl};
use keyward::core::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where every test's manual clock starts: 2026-01-01T00:00:00.000Z.
pub const T0_MS: u64 = 1_767_225_600_000;

/// No request may take longer than this; a hung server fails the test
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server and a client for it. Dropping it stops the server.
pub struct TestApp {
    /// The address the server bound (a fresh port every time).
    pub addr: SocketAddr,
    /// The server's clock; only [`TestApp::advance`] moves it.
    pub clock: Arc<ManualClock>,
    api: Api,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), AppError>>>,
}

/// A server on the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Config::default()).await
}

/// A server on `config`, listening on `127.0.0.1:0`, on a manual clock
/// stopped at [`T0_MS`], with the `memory:` store whatever `config` says:
/// these tests are about the HTTP contract (the backends have their own
/// conformance suite), and a file store would be shared by parallel tests.
pub async fn spawn_app_with(mut config: Config) -> TestApp {
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.store = StoreUrl::Memory;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0_MS)));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let app = App::build_with_clock(&config, dyn_clock)
        .await
        .expect("the server builds on an ephemeral port");
    let addr = app.local_addr();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        // A dropped sender means the test is over: stop as well.
        let _ = stop.await;
    }));
    TestApp {
        addr,
        clock,
        api: Api::new(&format!("http://{addr}")),
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// Moves the server's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Moves the server's clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    /// Asks the server to stop and waits (at most 5 s) for `run_until` to
    /// return; its result is the test's.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self
            .server
            .take()
            .context("the server was already stopped")?;
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(joined) => Ok(joined.context("the server task panicked")??),
            Err(_) => bail!("the server did not stop within 5 s"),
        }
    }
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP answer: status, the `Content-Type`, the raw text and, when the
/// text is JSON, its value (`Value::Null` otherwise).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub text: String,
    /// The body parsed as JSON, or `Null` if empty or not JSON.
    pub body: Value,
}

impl Reply {
    /// Panics unless the status is `status`; returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {}",
            self.status, self.text
        );
        &self.body
    }

    /// Panics unless this is the contract's error: `status`, a JSON body
    /// of exactly `{"error": {"code": code, "message": <non-empty text>}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        self.expect_error_shape(status);
        assert_eq!(
            self.body["error"]["code"], code,
            "wrong error code in {}",
            self.text
        );
    }

    /// Like [`Reply::expect_error`] for any snake_case code; returns it.
    #[track_caller]
    pub fn expect_error_shape(&self, status: u16) -> String {
        self.expect(status);
        assert!(
            self.is_json(),
            "an error must be JSON, got Content-Type {:?}: {}",
            self.content_type,
            self.text
        );
        let outer = self.body.as_object().expect("the error body is an object");
        assert_eq!(outer.len(), 1, "only `error` at the top: {}", self.text);
        let inner = self.body["error"]
            .as_object()
            .expect("`error` is an object");
        assert_eq!(inner.len(), 2, "only `code` and `message`: {}", self.text);
        let code = inner["code"].as_str().expect("`code` is a string");
        assert!(
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
            "`code` is snake_case: {code:?}"
        );
        let message = inner["message"].as_str().expect("`message` is a string");
        assert!(!message.is_empty(), "`message` is not empty");
        code.to_owned()
    }

    /// True when the `Content-Type` is JSON and the body parsed.
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json"))
            && !self.body.is_null()
    }

    /// The string field `field` of the body.
    #[track_caller]
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("`{field}` is not a string in {}", self.text))
            .to_owned()
    }

    /// The unsigned integer field `field` of the body.
    #[track_caller]
    pub fn u64(&self, field: &str) -> u64 {
        self.body[field]
            .as_u64()
            .unwrap_or_else(|| panic!("`{field}` is not an unsigned integer in {}", self.text))
    }
}

/// A client bound to one server's base URL; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:1234`).
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.request_raw(method, path, body, Some("application/json"))
            .await
    }

    /// Sends `method path` with raw body bytes and an optional `Content-Type`.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp
            .text()
            .await
            .with_context(|| format!("body of {method} {url}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            text,
            body,
        })
    }

    // ---- /v1 pools ----

    /// `PUT /v1/pools/{pool}` with `settings`.
    pub async fn put_pool(&self, pool: &str, settings: Value) -> Result<Reply> {
        self.request(Method::PUT, &format!("/v1/pools/{pool}"), Some(settings))
            .await
    }

    /// `GET /v1/pools/{pool}`.
    pub async fn get_pool(&self, pool: &str) -> Result<Reply> {
        self.request(Method::GET, &format!("/v1/pools/{pool}"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/keys` `{"count": count}`.
    pub async fn generate_keys(&self, pool: &str, count: u64) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys"),
            Some(json!({ "count": count })),
        )
        .await
    }

    /// Generates `count` keys (asserting 201) and returns their text.
    pub async fn new_keys(&self, pool: &str, count: u64) -> Result<Vec<String>> {
        let reply = self.generate_keys(pool, count).await?;
        let body = reply.expect(201);
        let keys = body["keys"]
            .as_array()
            .context("`keys` is an array")?
            .iter()
            .map(|k| k["key"].as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .context("every key object has a `key` string")?;
        assert_eq!(keys.len() as u64, count, "{}", reply.text);
        Ok(keys)
    }

    /// `POST /v1/pools/{pool}/lease`.
    pub async fn lease(&self, pool: &str) -> Result<Reply> {
        self.request(Method::POST, &format!("/v1/pools/{pool}/lease"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/release`, with `{"lease_id": id}`
    /// or `{}`.
    pub async fn release(&self, pool: &str, key: &str, lease_id: Option<u64>) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/release"),
            Some(lease_body(lease_id)),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/keepalive`, with `{"lease_id": id}`
    /// or `{}`.
    pub async fn keepalive(&self, pool: &str, key: &str, lease_id: Option<u64>) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/keepalive"),
            Some(lease_body(lease_id)),
        )
        .await
    }

    /// `GET /v1/pools/{pool}/keys/{key}`.
    pub async fn get_key(&self, pool: &str, key: &str) -> Result<Reply> {
        self.request(Method::GET, &format!("/v1/pools/{pool}/keys/{key}"), None)
            .await
    }

    /// `DELETE /v1/pools/{pool}/keys/{key}`.
    pub async fn delete_key(&self, pool: &str, key: &str) -> Result<Reply> {
        self.request(
            Method::DELETE,
            &format!("/v1/pools/{pool}/keys/{key}"),
            None,
        )
        .await
    }

    // ---- /v1 keyspaces ----

    /// `PUT /v1/keyspaces/{ks}` `{"alphabet": alphabet, "length": length}`.
    pub async fn put_keyspace(&self, ks: &str, alphabet: &str, length: u32) -> Result<Reply> {
        self.request(
            Method::PUT,
            &format!("/v1/keyspaces/{ks}"),
            Some(json!({ "alphabet": alphabet, "length": length })),
        )
        .await
    }

    /// `GET /v1/keyspaces/{ks}`.
    pub async fn get_keyspace(&self, ks: &str) -> Result<Reply> {
        self.request(Method::GET, &format!("/v1/keyspaces/{ks}"), None)
            .await
    }

    /// `POST /v1/keyspaces/{ks}/tokens`.
    pub async fn issue_token(&self, ks: &str) -> Result<Reply> {
        self.request(Method::POST, &format!("/v1/keyspaces/{ks}/tokens"), None)
            .await
    }

    /// `GET /v1/keyspaces/{ks}/tokens/{token}`.
    pub async fn token_status(&self, ks: &str, token: &str) -> Result<Reply> {
        self.request(
            Method::GET,
            &format!("/v1/keyspaces/{ks}/tokens/{token}"),
            None,
        )
        .await
    }

    /// `POST /v1/keyspaces/{ks}/tokens/{token}/activate`.
    pub async fn activate(&self, ks: &str, token: &str) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/keyspaces/{ks}/tokens/{token}/activate"),
            None,
        )
        .await
    }

    // ---- seed 000 compat, keyspace `default` ----

    /// `POST /api/get_token`.
    pub async fn compat_get_token(&self) -> Result<Reply> {
        self.request(Method::POST, "/api/get_token", None).await
    }

    /// `PUT /api/activate_token/{token}`.
    pub async fn compat_activate_token(&self, token: &str) -> Result<Reply> {
        self.request(Method::PUT, &format!("/api/activate_token/{token}"), None)
            .await
    }

    /// `GET /api/get_token_status/{token}`.
    pub async fn compat_token_status(&self, token: &str) -> Result<Reply> {
        self.request(Method::GET, &format!("/api/get_token_status/{token}"), None)
            .await
    }

    /// `GET /api/get_number_token`.
    pub async fn compat_number_token(&self) -> Result<Reply> {
        self.request(Method::GET, "/api/get_number_token", None)
            .await
    }

    // ---- seed 002 compat, pool `default` ----

    /// `METHOD /api/v1/random_api_key[/][?api_key=K]`.
    pub async fn random_api_key(
        &self,
        method: Method,
        slash: bool,
        api_key: Option<&str>,
    ) -> Result<Reply> {
        let mut path = String::from("/api/v1/random_api_key");
        if slash {
            path.push('/');
        }
        if let Some(key) = api_key {
            path.push_str("?api_key=");
            path.push_str(key);
        }
        self.request_raw(method, &path, None, None).await
    }

    /// `GET /api/v1/start_scheduler[/]`.
    pub async fn start_scheduler(&self, slash: bool) -> Result<Reply> {
        let path = if slash {
            "/api/v1/start_scheduler/"
        } else {
            "/api/v1/start_scheduler"
        };
        self.request(Method::GET, path, None).await
    }

    // ---- ops ----

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<Reply> {
        self.request(Method::GET, "/healthz", None).await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> Result<Reply> {
        self.request(Method::GET, "/readyz", None).await
    }
}

fn lease_body(lease_id: Option<u64>) -> Value {
    match lease_id {
        Some(id) => json!({ "lease_id": id }),
        None => json!({}),
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly (the contract's format); `None` for
/// anything else.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 24 + hh) * 60 + mm) * 60 + ss;
    u64::try_from(total * 1000 + ms).ok()
}

/// The time field `field` of a JSON object, in epoch milliseconds; panics
/// unless it is in the contract's format.
#[track_caller]
pub fn time_of(body: &Value, field: &str) -> u64 {
    let text = body[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {body}"));
    parse_time(text).unwrap_or_else(|| panic!("`{field}` = {text:?} is not RFC 3339 UTC with ms"))
}

#[test]
fn parse_time_reads_the_contract_format() {
    assert_eq!(parse_time("2026-01-01T00:00:00.000Z"), Some(T0_MS));
    assert_eq!(
        parse_time("2023-11-14T22:13:20.250Z"),
        Some(1_700_000_000_250)
    );
    assert_eq!(parse_time("2026-01-01T00:00:00Z"), None);
    assert_eq!(parse_time("2026-01-01 00:00:00.000Z"), None);
}
