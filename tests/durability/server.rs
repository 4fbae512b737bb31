//! The real `keyward` binary as a child process on an SQLite store, and a
//! small HTTP client for it, one method per endpoint the tests use.
//!
//! Every start gets a fresh port (bind `127.0.0.1:0`, drop the listener,
//! pass the port on; a lost race is retried), writes stdout and stderr to
//! files (a pipe nobody reads could fill up and stall the server), and is
//! killed by its PID if the test ends while it still runs. Every wait is
//! bounded in time.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};

/// How long a server may take to answer `GET /readyz` with 200.
pub const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a refused start may take to exit.
pub const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// No request may take longer: a hung server fails the test instead of
/// hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between polls of a process or an endpoint.
const POLL: Duration = Duration::from_millis(20);
/// Attempts to start on a fresh port when another process took it first.
const PORT_ATTEMPTS: usize = 3;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh, uniquely named number for file and directory names.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `keyward-durability-<tag>-<unique>`.
    pub fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("keyward-durability-{tag}-{}", unique()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create temp dir {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file the tests use inside it.
    pub fn db(&self) -> PathBuf {
        self.path.join("k.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// How to start `keyward serve` on one database: the same `Launch` starts
/// the server again on the same file after a kill.
#[derive(Clone, Debug)]
pub struct Launch {
    db: PathBuf,
    logs: PathBuf,
    args: Vec<String>,
}

impl Launch {
    /// `--store sqlite:<db>`, logs written into `logs`.
    pub fn new(db: impl Into<PathBuf>, logs: &Path) -> Self {
        Self {
            db: db.into(),
            logs: logs.to_owned(),
            args: Vec::new(),
        }
    }

    /// The database `dir.db()`, logs in `dir`.
    pub fn in_dir(dir: &TempDir) -> Self {
        Self::new(dir.db(), dir.path())
    }

    /// The same launch with more flags.
    pub fn args<const N: usize>(mut self, args: [&str; N]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Starts the binary on `port`; nothing waits for it yet.
    fn spawn(&self, port: u16) -> Result<Server> {
        let id = unique();
        let stdout = self.logs.join(format!("server-{id}.stdout"));
        let stderr = self.logs.join(format!("server-{id}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .arg("serve")
            .arg("--store")
            .arg(format!("sqlite:{}", self.db.display()))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).context("create the stdout file")?)
            .stderr(File::create(&stderr).context("create the stderr file")?);
        // The test's own environment must not change the server's settings.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().context("start the keyward binary")?;
        Ok(Server {
            child,
            api: Api::new(SocketAddr::from(([127, 0, 0, 1], port)))?,
            stdout,
            stderr,
        })
    }

    /// Starts the server without waiting for anything (to kill it while it
    /// starts up).
    pub fn spawn_unready(&self) -> Result<Server> {
        self.spawn(free_port()?)
    }

    /// Starts the server and waits until `GET /readyz` answers 200.
    pub async fn start(&self) -> Result<Server> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut server = self.spawn(free_port()?)?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                // Another process took the port between our probe and the
                // server's bind: try another one.
                Err(e) if server.stderr_text().contains("cannot listen") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no start attempt was made")))
    }

    /// Starts the server expecting it to refuse: waits up to
    /// [`EXIT_WITHIN`] for it to exit, and fails if it is still running.
    pub async fn start_expecting_exit(&self) -> Result<Exited> {
        let mut server = self.spawn(free_port()?)?;
        match server.wait_exit(EXIT_WITHIN).await {
            Ok(status) => Ok(Exited {
                status,
                stderr: server.stderr_text(),
            }),
            Err(e) => {
                let ready = server.api.readyz().await.map(|r| r.status).ok();
                Err(e.context(format!(
                    "the server was expected to refuse to start (GET /readyz: {ready:?})"
                )))
            }
        }
    }
}

/// A server that exited by itself.
#[derive(Debug)]
pub struct Exited {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running `keyward serve`. Dropping it SIGKILLs it if it still runs.
pub struct Server {
    child: Child,
    /// A client for it.
    pub api: Api,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    /// Polls `GET /readyz` until 200; fails if the process exits first or
    /// after [`READY_WITHIN`].
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "keyward exited with {status} before it was ready\n{}",
                    self.output()
                );
            }
            if let Ok(reply) = self.api.readyz().await
                && reply.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "keyward was not ready within {READY_WITHIN:?}\n{}",
            self.output()
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: nothing is flushed, nothing is said goodbye.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("SIGKILL the server")?;
        self.child.wait().context("reap the killed server")?;
        Ok(())
    }

    /// Sends SIGTERM to this server's PID.
    pub fn sigterm(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("run kill -TERM")?;
        ensure!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
        Ok(())
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "keyward (pid {}) still runs {within:?} later\n{}",
                    self.pid(),
                    self.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then requires exit code 0 within `within`.
    pub async fn terminate(mut self, within: Duration) -> Result<()> {
        self.sigterm()?;
        let status = self.wait_exit(within).await?;
        ensure!(
            status.success(),
            "SIGTERM must end keyward with exit code 0, got {status}\n{}",
            self.output()
        );
        Ok(())
    }

    /// What the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both logs, for failure messages.
    pub fn output(&self) -> String {
        let stdout = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        format!(
            "--- stdout ---\n{stdout}--- stderr ---\n{}",
            self.stderr_text()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only a child we have not reaped yet: its PID is still ours.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer: status and body (JSON, or `Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body as JSON; `Null` if empty, a string if it is not JSON.
    pub body: Value,
}

impl Reply {
    /// The body, if the status is `status`; an error naming both otherwise.
    pub fn expect(self, status: u16) -> Result<Value> {
        ensure!(
            self.status == status,
            "expected HTTP {status}, got {} with body {}",
            self.status,
            self.body
        );
        Ok(self.body)
    }

    /// Requires `status` and the contract's error body
    /// `{"error": {"code": code, "message": <text>}}`.
    pub fn expect_error(self, status: u16, code: &str) -> Result<()> {
        let body = self.expect(status)?;
        let ok = body.as_object().is_some_and(|o| o.len() == 1)
            && body["error"].as_object().is_some_and(|o| o.len() == 2)
            && body["error"]["code"] == code
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty());
        ensure!(
            ok,
            "expected {{\"error\": {{\"code\": {code:?}, \"message\": …}}}}, got {body}"
        );
        Ok(())
    }
}

/// The `key` fields of a `{keys: [..]}` body.
pub fn keys_of(body: &Value) -> Result<Vec<String>> {
    body["keys"]
        .as_array()
        .with_context(|| format!("no `keys` array in {body}"))?
        .iter()
        .map(|k| {
            k["key"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("a key without `key` in {body}"))
        })
        .collect()
}

/// The string field `field` of `body`.
pub fn str_field(body: &Value, field: &str) -> Result<String> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("`{field}` is not a string in {body}"))
}

/// The unsigned integer field `field` of `body`.
pub fn u64_field(body: &Value, field: &str) -> Result<u64> {
    body[field]
        .as_u64()
        .with_context(|| format!("`{field}` is not an unsigned integer in {body}"))
}

/// A client for one server.
#[derive(Clone, Debug)]
pub struct Api {
    addr: SocketAddr,
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `http://addr`, never through a proxy.
    pub fn new(addr: SocketAddr) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("build the HTTP client")?;
        Ok(Self {
            addr,
            base: format!("http://{addr}"),
            http,
        })
    }

    /// The server's address, for raw TCP clients.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request; a transport error (refused, reset) is `Err`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply { status, body })
    }

    /// `GET /readyz`, with a short timeout for polling.
    pub async fn readyz(&self) -> Result<Reply> {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// `PUT /v1/pools/{pool}` with `settings`.
    pub async fn put_pool(&self, pool: &str, settings: Value) -> Result<Reply> {
        self.call(Method::PUT, &format!("/v1/pools/{pool}"), Some(settings))
            .await
    }

    /// `GET /v1/pools/{pool}`.
    pub async fn pool(&self, pool: &str) -> Result<Reply> {
        self.call(Method::GET, &format!("/v1/pools/{pool}"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/keys {count}`.
    pub async fn generate(&self, pool: &str, count: u64) -> Result<Reply> {
        self.call(
            Method::POST,
            &format!("/v1/pools/{pool}/keys"),
            Some(json!({ "count": count })),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/lease`.
    pub async fn lease(&self, pool: &str) -> Result<Reply> {
        self.call(Method::POST, &format!("/v1/pools/{pool}/lease"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/release {lease_id}`.
    pub async fn release(&self, pool: &str, key: &str, lease_id: u64) -> Result<Reply> {
        self.call(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/release"),
            Some(json!({ "lease_id": lease_id })),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/keys/{key}/keepalive {lease_id?}`.
    pub async fn keepalive(&self, pool: &str, key: &str, lease_id: Option<u64>) -> Result<Reply> {
        let body = match lease_id {
            Some(id) => json!({ "lease_id": id }),
            None => json!({}),
        };
        self.call(
            Method::POST,
            &format!("/v1/pools/{pool}/keys/{key}/keepalive"),
            Some(body),
        )
        .await
    }

    /// `GET /v1/pools/{pool}/keys/{key}`.
    pub async fn key(&self, pool: &str, key: &str) -> Result<Reply> {
        self.call(Method::GET, &format!("/v1/pools/{pool}/keys/{key}"), None)
            .await
    }

    /// `DELETE /v1/pools/{pool}/keys/{key}`.
    pub async fn delete_key(&self, pool: &str, key: &str) -> Result<Reply> {
        self.call(
            Method::DELETE,
            &format!("/v1/pools/{pool}/keys/{key}"),
            None,
        )
        .await
    }

    /// `PUT /v1/keyspaces/{ks} {alphabet, length}`.
    pub async fn put_keyspace(&self, ks: &str, alphabet: &str, length: u32) -> Result<Reply> {
        self.call(
            Method::PUT,
            &format!("/v1/keyspaces/{ks}"),
            Some(json!({ "alphabet": alphabet, "length": length })),
        )
        .await
    }

    /// `GET /v1/keyspaces/{ks}`.
    pub async fn keyspace(&self, ks: &str) -> Result<Reply> {
        self.call(Method::GET, &format!("/v1/keyspaces/{ks}"), None)
            .await
    }

    /// `POST /v1/keyspaces/{ks}/tokens`.
    pub async fn issue(&self, ks: &str) -> Result<Reply> {
        self.call(Method::POST, &format!("/v1/keyspaces/{ks}/tokens"), None)
            .await
    }

    /// `GET /v1/keyspaces/{ks}/tokens/{token}`.
    pub async fn token(&self, ks: &str, token: &str) -> Result<Reply> {
        self.call(
            Method::GET,
            &format!("/v1/keyspaces/{ks}/tokens/{token}"),
            None,
        )
        .await
    }

    /// `POST /v1/keyspaces/{ks}/tokens/{token}/activate`.
    pub async fn activate(&self, ks: &str, token: &str) -> Result<Reply> {
        self.call(
            Method::POST,
            &format!("/v1/keyspaces/{ks}/tokens/{token}/activate"),
            None,
        )
        .await
    }

    /// Compat `POST /api/get_token`.
    pub async fn compat_get_token(&self) -> Result<Reply> {
        self.call(Method::POST, "/api/get_token", None).await
    }

    /// Compat `PUT /api/activate_token/{token}`.
    pub async fn compat_activate(&self, token: &str) -> Result<Reply> {
        self.call(Method::PUT, &format!("/api/activate_token/{token}"), None)
            .await
    }

    /// Compat `GET /api/get_token_status/{token}`.
    pub async fn compat_token_status(&self, token: &str) -> Result<Reply> {
        self.call(Method::GET, &format!("/api/get_token_status/{token}"), None)
            .await
    }

    /// Compat `POST /api/v1/random_api_key/` (a key in the default pool).
    pub async fn compat_generate(&self) -> Result<Reply> {
        self.call(Method::POST, "/api/v1/random_api_key/", None)
            .await
    }

    /// Compat `DELETE /api/v1/random_api_key/?api_key=K`.
    pub async fn compat_delete(&self, key: &str) -> Result<Reply> {
        self.call(
            Method::DELETE,
            &format!("/api/v1/random_api_key/?api_key={key}"),
            None,
        )
        .await
    }
}
