//! A keyward server inside the test's own process: [`spawn_app`] starts
//! one on `127.0.0.1:0` with a manual clock, and the [`TestApp`] it returns
//! is the [`Api`] client for it.
//!
//! Tests drive time with [`TestApp::advance`] and then make a request:
//! expiry is applied lazily on every touch, so no test sleeps for seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keyward::app::{App, AppError};
use keyward::clock::{Clock, ManualClock};
use keyward::config::{Config, StoreUrl};
use keyward::core::Timestamp;
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;

use crate::client::Api;

/// Where every test's manual clock starts: 2026-01-01T00:00:00.000Z.
pub const T0_MS: u64 = 1_767_225_600_000;

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
        api: Api::new(addr),
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

    /// Runs `n` requests at once, each `call` on its own client, released
    /// together by a barrier so that they race in the server; their
    /// results in the order they were made.
    pub async fn all_at_once<T, F, Fut>(&self, n: usize, call: F) -> Result<Vec<T>>
    where
        F: Fn(Api) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let barrier = barrier.clone();
            let request = call(self.api.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                request.await
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.context("a racing request panicked")??);
        }
        Ok(results)
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
