//! [`Client`]: where the server is, how to authenticate, and the one
//! place requests are sent, so every call gets the same retries, the same
//! `Idempotency-Key` rule and the same error mapping.
//!
//! A mutating call (`POST`, `PUT`, `DELETE`) gets a fresh random
//! `Idempotency-Key` once and sends it on every try, so a try whose answer
//! was lost is replayed by the server rather than run twice. Connection
//! errors, timeouts, 503 and 409 `idempotency_in_flight` are tried again
//! under the [`RetryPolicy`]; every other answer is final.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::RetryPolicy;
use crate::error::{Error, Result};
use crate::keyspace::Keyspace;
use crate::pool::Pool;

/// The server a client talks to when neither the builder nor
/// `KEYWARD_URL` names one: `keyward serve`'s default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The header that makes a retried change take effect once.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A keyward client: cheap to clone (clones share one connection pool).
///
/// Hands out [`Pool`] and [`Keyspace`] handles, which make the calls.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .field("token", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port`, maybe
    /// with a path prefix), without a token, with default timeouts and
    /// retries.
    pub fn new(base_url: &str) -> Result<Self> {
        ClientBuilder::new(base_url).build()
    }

    /// A client configured from the environment: `KEYWARD_URL` (else
    /// [`DEFAULT_URL`]) and `KEYWARD_TOKEN` (else no token); an empty
    /// variable counts as unset.
    pub fn from_env() -> Result<Self> {
        ClientBuilder::from_env().build()
    }

    /// A builder for the server at `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// A handle on the pool `name` (nothing is sent until a call).
    pub fn pool(&self, name: &str) -> Pool {
        Pool::new(self.clone(), name)
    }

    /// A handle on the keyspace `name` (nothing is sent until a call).
    pub fn keyspace(&self, name: &str) -> Keyspace {
        Keyspace::new(self.clone(), name)
    }

    /// Sends `request` (with retries) and decodes a 2xx JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T> {
        let (status, body) = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            status: status.as_u16(),
            // Category and place only: the message could quote a value.
            detail: format!(
                "the JSON does not fit the contract ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    /// Sends `request` and expects a 2xx answer with no body to read.
    pub(crate) async fn call_empty(&self, request: Request<'_>) -> Result<()> {
        self.send(request).await.map(|_| ())
    }

    /// Sends `request` under the retry policy: a 2xx answer's status and
    /// body, or the error of the last try.
    async fn send(&self, request: Request<'_>) -> Result<(StatusCode, Vec<u8>)> {
        let inner = &self.inner;
        let url = self.url(&request.path, &request.query)?;
        let idempotency_key = (request.method != Method::GET).then(new_idempotency_key);
        let body = request
            .body
            .map(|b| serde_json::to_vec(&b).expect("request bodies are plain JSON values"));
        let attempts = inner.retry.attempts();
        let mut failed = 0;
        loop {
            let mut builder = inner
                .http
                .request(request.method.clone(), url.clone())
                .timeout(inner.timeout + request.extra_time)
                // JSON even where the server could answer otherwise (CSV).
                .header(ACCEPT, "application/json");
            if let Some(auth) = &inner.auth {
                builder = builder.header(AUTHORIZATION, auth.clone());
            }
            if let Some(key) = &idempotency_key {
                builder = builder.header(IDEMPOTENCY_KEY, key.as_str());
            }
            if let Some(body) = &body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let outcome = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|b| (status, b.to_vec()))
                }
                Err(e) => Err(e),
            };
            failed += 1;
            let retry = failed < attempts;
            match outcome {
                Ok((status, bytes)) if status.is_success() => return Ok((status, bytes)),
                Ok((status, bytes)) => {
                    let error = Error::from_answer(status.as_u16(), &bytes);
                    let busy = status == StatusCode::SERVICE_UNAVAILABLE
                        || error.code() == Some("idempotency_in_flight");
                    if !(retry && busy) {
                        return Err(error);
                    }
                }
                Err(e) => {
                    let transient =
                        e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                    if !(retry && transient) {
                        return Err(Error::Transport(e.without_url()));
                    }
                }
            }
            tokio::time::sleep(inner.retry.pause(failed)).await;
        }
    }

    /// The base URL with `path` appended segment by segment (each
    /// percent-encoded, so a key may hold `/`, `?` or `%`) and `query`.
    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Result<Url> {
        if let Some(bad) = path.iter().find(|s| **s == "." || **s == "..") {
            return Err(Error::InvalidInput(format!(
                "a name or key `{bad}` cannot be sent as a URL path segment"
            )));
        }
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("the builder accepts only http(s) URLs, which have a path")
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(n, v)| (n, v.as_str())));
        }
        Ok(url)
    }
}

/// A fresh random `Idempotency-Key`: 32 hex digits (128 bits).
fn new_idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One call as the handles describe it; [`Client::send`] does the rest.
pub(crate) struct Request<'a> {
    method: Method,
    path: Vec<&'a str>,
    query: Vec<(&'a str, String)>,
    body: Option<serde_json::Value>,
    /// Added to the client's timeout (a lease that waits).
    extra_time: Duration,
}

impl<'a> Request<'a> {
    pub(crate) fn new(method: Method, path: Vec<&'a str>) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            extra_time: Duration::ZERO,
        }
    }

    pub(crate) fn get(path: Vec<&'a str>) -> Self {
        Self::new(Method::GET, path)
    }

    pub(crate) fn post(path: Vec<&'a str>) -> Self {
        Self::new(Method::POST, path)
    }

    /// A JSON body.
    pub(crate) fn json(mut self, body: impl Serialize) -> Self {
        self.body = Some(serde_json::to_value(body).expect("request bodies are plain structs"));
        self
    }

    /// A query parameter.
    pub(crate) fn query(mut self, name: &'a str, value: String) -> Self {
        self.query.push((name, value));
        self
    }

    /// More time than the client's timeout for this call.
    pub(crate) fn extra_time(mut self, time: Duration) -> Self {
        self.extra_time = time;
        self
    }
}

/// Builds a [`Client`]: base URL, token, timeout, retry policy.
#[derive(Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    /// The server at `base_url`, no token, a 10 s timeout per try, the
    /// default [`RetryPolicy`].
    pub fn new(base_url: &str) -> Self {
        Self {
            base: base_url.to_owned(),
            token: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }

    /// [`ClientBuilder::new`] with `KEYWARD_URL` (else [`DEFAULT_URL`])
    /// and `KEYWARD_TOKEN` if set; later setters override both.
    pub fn from_env() -> Self {
        let base = std::env::var("KEYWARD_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let mut builder = Self::new(&base);
        builder.token = std::env::var("KEYWARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        builder
    }

    /// Sends `Authorization: Bearer <token>` (the server's admin token).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long one try may take (a lease that waits gets its wait on
    /// top).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failed tries are repeated.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The client; fails on a base URL that is not `http(s)://…` or a
    /// token that cannot be a header value.
    pub fn build(self) -> Result<Client> {
        let base =
            Url::parse(&self.base).map_err(|e| Error::InvalidInput(format!("base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidInput(
                "base URL: must be http:// or https://".to_owned(),
            ));
        }
        let auth = self
            .token
            .map(|t| {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    Error::InvalidInput("token: not a valid header value".to_owned())
                })?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::InvalidInput(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

/// `["v1", root, name, rest…]`: the path of a pool's or keyspace's route.
pub(crate) fn scoped_path<'a>(root: &'a str, name: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["v1", root, name];
    path.extend_from_slice(rest);
    path
}
