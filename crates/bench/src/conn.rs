//! One keep-alive HTTP/1 connection, driven inside the task that uses it.
//!
//! hyper's low-level `client::conn::http1` gives a request handle and a
//! connection future. The usual pattern spawns the connection future as a
//! task of its own; here [`Conn::exchange`] polls it together with the
//! request instead, so a request/response costs no cross-task wake-up and
//! no pool checkout: the least client work per request hyper allows.
//! Everything above this (what to send, what a status means) belongs to
//! the workload.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::target::Target;
use crate::BearerToken;

/// A connection could not be opened or an exchange failed below HTTP.
///
/// Messages leave the cause to [`std::error::Error::source`] (printed by
/// `{:#}` in `main`, and by [`chain`]), so no cause is printed twice.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/1 exchange failed (reset, closed early, malformed response).
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
}

/// `e` and its causes on one line, `outer: inner: innermost`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Where requests go and the headers every request carries. Cheap to
/// share: header values are reference-counted.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    idempotency: Option<Arc<IdemKeys>>,
}

/// Fresh `Idempotency-Key` values: a run prefix (the start time in
/// nanoseconds and the process id) and a counter, so no two requests of
/// any run share one.
#[derive(Debug)]
pub(crate) struct IdemKeys {
    run: u64,
    next: AtomicU64,
}

impl IdemKeys {
    fn new() -> Self {
        Self {
            run: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(40),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("bench-{:016x}-{n}", self.run))
            .expect("hex digits and a number are a valid header value")
    }
}

impl Endpoint {
    /// An endpoint for `target` at the already resolved `addr`.
    pub(crate) fn new(
        target: &Target,
        addr: SocketAddr,
        admin_token: Option<&BearerToken>,
        idempotency_keys: bool,
    ) -> Result<Self, hyper::header::InvalidHeaderValue> {
        let host = HeaderValue::from_str(target.authority())?;
        let auth = admin_token
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(Self {
            addr,
            host,
            auth,
            idempotency: idempotency_keys.then(|| Arc::new(IdemKeys::new())),
        })
    }

    /// Opens one connection (TCP_NODELAY, HTTP/1 keep-alive).
    pub(crate) async fn open(&self) -> Result<Conn, ConnError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|source| ConnError::Connect {
                addr: self.addr,
                source,
            })?;
        // Small requests must leave at once, not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|source| ConnError::Connect {
                addr: self.addr,
                source,
            })?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
            closed: false,
        })
    }

    /// A request with the `Host` header, the bearer token if any,
    /// `Content-Type: application/json` when there is a body, and (with
    /// `--idempotency-keys`) a fresh `Idempotency-Key` on every `POST`,
    /// `PUT` and `DELETE`. `uri` is origin-form (`/path`).
    pub(crate) fn request(&self, method: Method, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let has_body = !body.is_empty();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(keys) = &self.idempotency
            && req.method() != Method::GET
        {
            req.headers_mut().insert("idempotency-key", keys.next());
        }
        req
    }
}

/// One open HTTP/1 connection with at most one request in flight.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    closed: bool,
}

impl Conn {
    /// Whether the connection ended (the server closed it or an exchange
    /// failed); a closed connection must be replaced.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.sender.is_closed()
    }

    /// Sends `req` and reads the whole response. Dropping the future
    /// mid-way abandons the connection (hyper closes it).
    pub(crate) async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ConnError> {
        let result = {
            let Self {
                sender,
                driver,
                closed,
            } = self;
            let work = async {
                sender.ready().await?;
                let response = sender.send_request(req).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            tokio::pin!(work);
            // The driver is polled first so that a response it just read
            // reaches `work` in the same poll.
            tokio::select! {
                biased;
                ended = driver.as_mut(), if !*closed => {
                    *closed = true;
                    // The server may have answered and then closed: the
                    // answer (or the error) is already on its way.
                    ended.map_err(ConnError::Http)?;
                    work.await.map_err(ConnError::Http)
                }
                done = &mut work => done.map_err(ConnError::Http),
            }
        };
        if result.is_err() {
            self.closed = true;
        }
        result
    }
}
