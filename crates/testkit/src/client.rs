//! One HTTP client for a keyward server, one method per endpoint, used
//! alike by in-process tests ([`crate::app::TestApp`] derefs to it) and by
//! process-level ones ([`crate::process::Server::api`]).
//!
//! A method sends its request and returns the [`Reply`] whatever its
//! status; only a transport failure (refused, reset, timed out) is an
//! `Err`. The test then states the status it expects.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// No request may take longer than this: a hung server fails the test
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status, headers, the raw text and, when the text is
/// JSON, its value (`Value::Null` otherwise).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Every response header.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body parsed as JSON, or `Null` if empty or not JSON.
    pub body: Value,
}

impl Reply {
    /// The whole answer of `resp`.
    async fn read(resp: reqwest::Response) -> Result<Self> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Self {
            status,
            content_type,
            headers,
            text,
            body,
        })
    }

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
        let code = inner["code"].as_str().expect("`code` is a string");
        // `no_free_key` alone may say when to retry (DESIGN P2.1).
        let extra = match inner.get("retry_after_ms") {
            Some(ms) if code == "no_free_key" => {
                assert!(
                    ms.as_u64().is_some_and(|ms| ms >= 1),
                    "`retry_after_ms` is a positive integer: {}",
                    self.text
                );
                1
            }
            _ => 0,
        };
        assert_eq!(
            inner.len(),
            2 + extra,
            "only `code` and `message` (and `retry_after_ms` on no_free_key): {}",
            self.text
        );
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

    /// Panics unless this is 404 `no_free_key` whose `Retry-After` header
    /// and `error.retry_after_ms` are both present or both absent, the
    /// header being the milliseconds in whole seconds rounded up; returns
    /// `retry_after_ms`.
    #[track_caller]
    pub fn expect_no_free_key(&self) -> Option<u64> {
        self.expect_error(404, "no_free_key");
        let ms = self.body["error"]["retry_after_ms"].as_u64();
        let header = self.header("retry-after").map(|h| {
            h.parse::<u64>()
                .unwrap_or_else(|_| panic!("Retry-After {h:?} is not whole seconds"))
        });
        assert_eq!(
            header,
            ms.map(|ms| ms.div_ceil(1000)),
            "Retry-After {:?} against retry_after_ms in {}",
            self.header("retry-after"),
            self.text
        );
        ms
    }

    /// True when the `Content-Type` is JSON and the body parsed.
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json"))
            && !self.body.is_null()
    }

    /// The header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The string field `field` of the body.
    #[track_caller]
    pub fn str(&self, field: &str) -> String {
        str_field(&self.body, field)
    }

    /// The unsigned integer field `field` of the body.
    #[track_caller]
    pub fn u64(&self, field: &str) -> u64 {
        u64_field(&self.body, field)
    }
}

/// `path` with `query` appended, if any.
fn listing(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The string field `field` of `body`; panics if it is not a string.
#[track_caller]
pub fn str_field(body: &Value, field: &str) -> String {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {body}"))
        .to_owned()
}

/// The unsigned integer field `field` of `body`; panics otherwise.
#[track_caller]
pub fn u64_field(body: &Value, field: &str) -> u64 {
    body[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an unsigned integer in {body}"))
}

/// The `key` fields of a `{"keys": [..]}` body; panics on another shape.
#[track_caller]
pub fn keys_of(body: &Value) -> Vec<String> {
    body["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no `keys` array in {body}"))
        .iter()
        .map(|k| str_field(k, "key"))
        .collect()
}

/// `key` as one path segment: every byte but `A-Za-z0-9-._~`
/// percent-encoded, so an imported key with `/`, `%`, `?` or `#` reaches
/// the server as one `{key}`. The key methods of [`Api`] put `key` into the
/// path as given (tests also send raw and malformed segments), so pass
/// such a key through this first.
pub fn key_segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client bound to one server's address; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Api {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `http://addr`, never through a proxy.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_headers(addr, HeaderMap::new())
    }

    fn with_headers(addr: SocketAddr, headers: HeaderMap) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            addr,
            base: format!("http://{addr}"),
            client,
        }
    }

    /// The same server, with `name: value` sent on every request (an
    /// `Authorization`, an `x-request-id`).
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        );
        Self::with_headers(self.addr, headers)
    }

    /// The same server, with `Authorization: Bearer token` on every request.
    pub fn with_bearer(&self, token: &str) -> Self {
        self.with_header("authorization", &format!("Bearer {token}"))
    }

    /// The server's address, for raw TCP clients.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.request_raw(method, path, body, Some("application/json"))
            .await
    }

    /// Sends `method path` with an optional JSON body and the header
    /// `Idempotency-Key: key`.
    pub async fn request_with_key(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: &str,
    ) -> Result<Reply> {
        let body = body.map(|b| b.to_string().into_bytes());
        let json = Some("application/json");
        self.send(method, path, body, json, REQUEST_TIMEOUT, Some(key))
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
        self.request_within(method, path, body, content_type, REQUEST_TIMEOUT)
            .await
    }

    /// [`Api::request_raw`] with a timeout of the caller's: longer for a
    /// request that waits on the server, shorter for a client that gives
    /// up (and disconnects) mid-request.
    pub async fn request_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply> {
        self.send(method, path, body, content_type, timeout, None)
            .await
    }

    /// The one way a request is sent: `method path` with the body and its
    /// `Content-Type`, within `timeout`, with `Idempotency-Key: key` if
    /// given.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        timeout: Duration,
        key: Option<&str>,
    ) -> Result<Reply> {
        let url = self.url(path);
        let mut req = self.client.request(method.clone(), &url).timeout(timeout);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
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
        Reply::read(resp)
            .await
            .with_context(|| format!("body of {method} {url}"))
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

    /// `DELETE /v1/pools/{pool}`.
    pub async fn delete_pool(&self, pool: &str) -> Result<Reply> {
        self.request(Method::DELETE, &format!("/v1/pools/{pool}"), None)
            .await
    }

    /// `GET /v1/pools?QUERY` (`query` as sent, e.g. `limit=2&cursor=…`;
    /// empty for none).
    pub async fn list_pools(&self, query: &str) -> Result<Reply> {
        self.request(Method::GET, &listing("/v1/pools", query), None)
            .await
    }

    /// Every name of a paged listing (`path` is `/v1/pools` or
    /// `/v1/keyspaces`, `field` its array), `limit` per page, following
    /// `next_cursor` until it is null (asserting 200, at most 1000 pages).
    pub async fn list_all_names(&self, path: &str, field: &str, limit: u32) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut query = format!("limit={limit}");
        for _ in 0..1000 {
            let reply = self
                .request(Method::GET, &listing(path, &query), None)
                .await?;
            let body = reply.expect(200);
            let items = body[field].as_array().context("the page's array")?;
            assert!(items.len() <= limit as usize, "{}", reply.text);
            names.extend(items.iter().map(|item| str_field(item, "name")));
            match body["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit={limit}&cursor={cursor}"),
                None => {
                    assert!(body["next_cursor"].is_null(), "{}", reply.text);
                    return Ok(names);
                }
            }
        }
        anyhow::bail!("more than 1000 pages of {path}")
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
        let keys = keys_of(reply.expect(201));
        assert_eq!(keys.len() as u64, count, "{}", reply.text);
        Ok(keys)
    }

    /// `POST /v1/pools/{pool}/keys` with `body` as given (`{"keys": [..],
    /// "labels": {..}}`, `{"count": n}`, or a malformed one).
    pub async fn add_keys(&self, pool: &str, body: Value) -> Result<Reply> {
        self.request(Method::POST, &format!("/v1/pools/{pool}/keys"), Some(body))
            .await
    }

    /// `POST /v1/pools/{pool}/keys` `{"keys": keys}`, with `"labels":
    /// labels` unless `None`.
    pub async fn import_keys(
        &self,
        pool: &str,
        keys: &[&str],
        labels: Option<Value>,
    ) -> Result<Reply> {
        let mut body = json!({ "keys": keys });
        if let Some(labels) = labels {
            body["labels"] = labels;
        }
        self.add_keys(pool, body).await
    }

    /// `GET /v1/pools/{pool}/keys?QUERY` (`query` as sent, e.g.
    /// `state=free&limit=2&cursor=…`; empty for none).
    pub async fn list_keys(&self, pool: &str, query: &str) -> Result<Reply> {
        self.request(
            Method::GET,
            &listing(&format!("/v1/pools/{pool}/keys"), query),
            None,
        )
        .await
    }

    /// Every key object of `GET /v1/pools/{pool}/keys`, `limit` per page,
    /// only those in `state` when given, following `next_cursor` until it
    /// is null (asserting 200, at most 1000 pages).
    pub async fn list_all_keys(
        &self,
        pool: &str,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>> {
        let first = match state {
            Some(state) => format!("state={state}&limit={limit}"),
            None => format!("limit={limit}"),
        };
        let mut keys = Vec::new();
        let mut query = first.clone();
        for _ in 0..1000 {
            let reply = self.list_keys(pool, &query).await?;
            let body = reply.expect(200);
            let items = body["keys"].as_array().context("the page's keys")?;
            assert!(items.len() <= limit as usize, "{}", reply.text);
            keys.extend(items.iter().cloned());
            match body["next_cursor"].as_str() {
                Some(cursor) => query = format!("{first}&cursor={cursor}"),
                None => {
                    assert!(body["next_cursor"].is_null(), "{}", reply.text);
                    return Ok(keys);
                }
            }
        }
        anyhow::bail!("more than 1000 pages of /v1/pools/{pool}/keys")
    }

    /// `POST /v1/pools/{pool}/lease`.
    pub async fn lease(&self, pool: &str) -> Result<Reply> {
        self.request(Method::POST, &format!("/v1/pools/{pool}/lease"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/lease` with `{"wait_ms": wait_ms}`: with no
    /// free key, the server waits up to `wait_ms` for one. The client
    /// waits that long plus its usual timeout.
    pub async fn lease_waiting(&self, pool: &str, wait_ms: u64) -> Result<Reply> {
        let body = json!({ "wait_ms": wait_ms }).to_string().into_bytes();
        self.request_within(
            Method::POST,
            &format!("/v1/pools/{pool}/lease"),
            Some(body),
            Some("application/json"),
            REQUEST_TIMEOUT + Duration::from_millis(wait_ms),
        )
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

    /// `POST /v1/pools/{pool}/keys/{key}/release` with `body` as given
    /// (`{"lease_id": id, "outcome": "failed", "reason": "…"}`, …).
    pub async fn release_with(&self, pool: &str, key: &str, body: Value) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/release"),
            Some(body),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/disable`, with `{"reason": reason}`
    /// or `{}`.
    pub async fn disable_key(&self, pool: &str, key: &str, reason: Option<&str>) -> Result<Reply> {
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/disable"),
            Some(body),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/enable`.
    pub async fn enable_key(&self, pool: &str, key: &str) -> Result<Reply> {
        self.request(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/enable"),
            None,
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

    /// `DELETE /v1/keyspaces/{ks}`.
    pub async fn delete_keyspace(&self, ks: &str) -> Result<Reply> {
        self.request(Method::DELETE, &format!("/v1/keyspaces/{ks}"), None)
            .await
    }

    /// `GET /v1/keyspaces?QUERY`, as [`Api::list_pools`].
    pub async fn list_keyspaces(&self, query: &str) -> Result<Reply> {
        self.request(Method::GET, &listing("/v1/keyspaces", query), None)
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

    // ---- compat token routes, on the keyspace `default` ----

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

    // ---- compat API-key routes, on the pool `default` ----

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

    /// `POST /api/v1/random_api_key/`, which must answer 201: the new key.
    pub async fn compat_new_key(&self) -> Result<String> {
        let reply = self.random_api_key(Method::POST, true, None).await?;
        Ok(str_field(reply.expect(201), "api_key"))
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

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<Reply> {
        self.request(Method::GET, "/metrics", None).await
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<Reply> {
        self.request(Method::GET, "/openapi.json", None).await
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
    let text = str_field(body, field);
    parse_time(&text).unwrap_or_else(|| panic!("`{field}` = {text:?} is not RFC 3339 UTC with ms"))
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    use crate::app::T0_MS;

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
}
