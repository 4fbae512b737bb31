//! What every test here needs: the real `keyward` release binary started
//! on a free loopback port with `--store memory:` (through the workspace's
//! test kit), and a [`Client`] of it.
//!
//! The binary is `KEYWARD_BIN` if set, else the workspace's
//! `target/release/keyward`, built once (`cargo build --release --locked
//! -p keyward-cli`) if it is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use keyward_client::{Client, Key, KeyState, Pool, PoolSettings, RetryPolicy};
use keyward_testkit::process::{Launch, Server};

/// Longest a test waits for something the server does by itself.
pub const WITHIN: Duration = Duration::from_secs(10);

/// The release binary, built first if missing (once per test process).
pub fn binary() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(bin) = std::env::var_os("KEYWARD_BIN") {
        return Ok(bin.into());
    }
    let mut built = lock(&BUILT);
    if let Some(bin) = &*built {
        return Ok(bin.clone());
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("release/keyward");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--locked", "-p", "keyward-cli"])
            .current_dir(&workspace)
            .status()
            .context("run cargo build --release -p keyward-cli")?;
        ensure!(
            status.success(),
            "building the keyward binary failed: {status}"
        );
    }
    *built = Some(bin.clone());
    Ok(bin)
}

/// A running server and a client of it; the server is killed when this
/// is dropped.
pub struct TestServer {
    pub server: Server,
    pub client: Client,
}

impl TestServer {
    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A pool named `name` with `keys` keys and a lease TTL of
    /// `lease_ttl`.
    pub async fn pool_with(
        &self,
        name: &str,
        keys: u32,
        lease_ttl: Duration,
    ) -> Result<(Pool, Vec<Key>)> {
        let pool = self.client.pool(name);
        pool.configure(&PoolSettings::new().lease_ttl(lease_ttl))
            .await?;
        let made = pool.generate(keys).await?;
        Ok((pool, made))
    }
}

/// A fresh `keyward serve --store memory:` with `args`, ready.
pub async fn serve_with(args: &[&str]) -> Result<TestServer> {
    let server = Launch::new(binary()?, "memory:").args(args).start().await?;
    let client = Client::builder(&format!("http://{}", server.addr))
        .retry(RetryPolicy::new(
            3,
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build()?;
    Ok(TestServer { server, client })
}

/// A fresh `keyward serve --store memory:`, ready.
pub async fn serve() -> Result<TestServer> {
    serve_with(&[]).await
}

/// Polls `pool.key(key)` (every 20 ms, at most [`WITHIN`]) until its
/// state is `state`; the last key object.
pub async fn until_state(pool: &Pool, key: &str, state: KeyState) -> Result<Key> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let now = pool.key(key).await?;
        if now.state == state {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!(
                "the key stayed {:?}, not {state:?}, for {WITHIN:?}",
                now.state
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback TCP proxy in front of a server, to fail the network
/// between client and server on purpose: it can be pointed at another
/// server (one restarted on a new port), and it can lose answers: for the
/// next `n` connections it passes the request on but closes the
/// connection once the server has answered, so a change takes effect and
/// the client sees only a dropped connection. A connection it cannot pass
/// on (nothing listens upstream) is closed at once. Pointing it elsewhere
/// cuts the connections it holds, as a restart or a partition would.
/// Stops accepting, and cuts everything, when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    lose: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` that loses nothing yet.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream));
        let lose = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let (upstream, lose, connections) =
                (upstream.clone(), lose.clone(), connections.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *lock(&upstream);
                    let lossy = lose
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let connection = tokio::spawn(pass_on(client, to, lossy));
                    lock(&connections).push(connection.abort_handle());
                }
            }
        });
        Ok(Self {
            addr,
            upstream,
            lose,
            connections,
            accepting,
        })
    }

    /// The base URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `upstream`; the ones held now are cut.
    pub fn point_to(&self, upstream: SocketAddr) {
        *lock(&self.upstream) = upstream;
        self.cut();
    }

    fn cut(&self) {
        for connection in lock(&self.connections).drain(..) {
            connection.abort();
        }
    }

    /// The next `n` connections lose their answer.
    pub fn lose_next_answers(&self, n: usize) {
        self.lose.store(n, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// The value behind `mutex`, even if a panicking test poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One proxied connection (see [`Proxy`]).
async fn pass_on(mut client: tokio::net::TcpStream, upstream: SocketAddr, lossy: bool) {
    use tokio::io::AsyncReadExt;
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    if !lossy {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (mut from_client, _) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let forward = tokio::io::copy(&mut from_client, &mut to_server);
    let mut answer = [0u8; 1];
    // The first byte of the answer: the change is made; drop the rest.
    tokio::select! {
        _ = forward => {}
        _ = from_server.read(&mut answer) => {}
    }
}
