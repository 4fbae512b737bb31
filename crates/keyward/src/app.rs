//! Wiring: build the store and the router from a [`Config`], bind, serve
//! until told to stop, then stop the background work and flush the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::config::{AdminToken, Config, StoreUrl};
use crate::core::Expired;
use crate::http::listener::{self, ConnectionLimits, IDLE_TIMEOUT};
use crate::http::{self, AppState};
use crate::store::backoff::Backoff;
use crate::store::local::{LocalSettings, LocalStore};
use crate::store::redis::{RedisSettings, RedisStore, RedisTarget, TimeSource};
use crate::store::{ErrorChain, Store, StoreError};

/// How often the reaper pops due leases and keys. With lazy expiry on
/// every touch, a deadline is applied at most this late (well inside the
/// 1 s the contract allows).
pub const REAP_INTERVAL: Duration = Duration::from_millis(250);

/// How long in-flight requests may run after a shutdown signal. Every
/// reply normally takes well under a millisecond; a connection still open
/// after this is cut so the process exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::sqlite::OpenError),
    /// The Redis store could not be set up.
    #[error(transparent)]
    Redis(#[from] crate::store::redis::RedisOpenError),
    /// The store could not make every change durable at shutdown; the
    /// requests that waited for it were not acknowledged.
    #[error("could not flush the store at shutdown")]
    Flush(#[source] crate::store::StoreError),
}

/// A bound, ready-to-run server.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    store: Arc<dyn Store>,
    admin_token: Option<AdminToken>,
    idempotency_ttl: crate::core::Ttl,
    connection_limits: ConnectionLimits,
}

impl App {
    /// Builds the store and binds the listener, on the system clock.
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`App::build`] with an injected clock (tests use a manual one).
    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        let settings = LocalSettings {
            pool_defaults: config.pool_defaults,
            default_keyspace: config.default_keyspace.clone(),
            limits: config.limits,
        };
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Memory => Arc::new(LocalStore::new(settings, clock)),
            StoreUrl::Sqlite(path) => {
                Arc::new(LocalStore::open_sqlite(path, settings, clock).await?)
            }
            // Redis `TIME` is the clock: every process sharing the Redis
            // must agree on it, so the injected clock is not used.
            StoreUrl::Redis(url) => Arc::new(
                RedisStore::connect(redis_settings(config, RedisTarget::Single(url.clone())))
                    .await?,
            ),
            StoreUrl::RedisCluster(nodes) => Arc::new(
                RedisStore::connect(redis_settings(config, RedisTarget::Cluster(nodes.clone())))
                    .await?,
            ),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Self {
            listener,
            store,
            admin_token: config.admin_token.clone(),
            idempotency_ttl: config.idempotency_ttl,
            connection_limits: ConnectionLimits {
                max_connections: config.max_connections,
                idle_timeout: IDLE_TIMEOUT,
                header_timeout: config.header_timeout,
                body_timeout: config.body_timeout,
                shutdown_grace: SHUTDOWN_GRACE,
            },
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (for at most [`SHUTDOWN_GRACE`]), stops
    /// the reaper and flushes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let store = self.store.clone();
        let expire = move || {
            let store = store.clone();
            async move { store.expire_due().await }
        };
        let reaper = tokio::spawn(reap(expire, stop_rx));
        let router = http::router(AppState::new(
            self.store.clone(),
            self.admin_token,
            Arc::new(http::idempotency::Idempotency::new(self.idempotency_ttl)),
        ));
        // The signal starts the graceful drain; a connection that never
        // finishes its request must not hold the process, so the drain gets
        // SHUTDOWN_GRACE and no more (`serve` enforces it).
        // Waiting leases answer 503 `shutting_down` at once instead of
        // holding the drain for their whole wait.
        let shutdown = {
            let store = self.store.clone();
            async move {
                shutdown.await;
                store.stop_waiting();
            }
        };
        listener::serve(self.listener, router, self.connection_limits, shutdown).await;
        let _ = stop_tx.send(true);
        if let Err(e) = reaper.await {
            tracing::error!(error = %e, "expiry task ended abnormally");
        }
        // What was accepted is kept, however the connections ended.
        self.store.flush().await.map_err(AppError::Flush)
    }
}

fn redis_settings(config: &Config, target: RedisTarget) -> RedisSettings {
    RedisSettings {
        target,
        pool_defaults: config.pool_defaults,
        default_keyspace: config.default_keyspace.clone(),
        limits: config.limits,
        time: TimeSource::Redis,
    }
}

/// After a failed pass the reaper skips ticks for a pause doubling from
/// the first to the longest, so an outage (Redis down) is reported once
/// per pause and not every [`REAP_INTERVAL`]; lazy expiry keeps answers
/// exact meanwhile.
const REAP_RETRY_MIN: Duration = Duration::from_millis(250);
const REAP_RETRY_MAX: Duration = Duration::from_secs(8);

/// Applies due expiry every [`REAP_INTERVAL`] until told to stop:
/// `expire` is one pass, the store's `expire_due`. The reaper takes that
/// one call, not the store, so a test can make it fail.
async fn reap<F, Fut>(mut expire: F, mut stop: watch::Receiver<bool>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Expired, StoreError>>,
{
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(REAP_RETRY_MIN, REAP_RETRY_MAX);
    let mut paused_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if paused_until.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                match expire().await {
                    Ok(done) => {
                        backoff.reset();
                        paused_until = None;
                        if done.keys + done.leases > 0 {
                            tracing::debug!(leases = done.leases, keys = done.keys, "expired");
                        }
                    }
                    Err(e) => {
                        let pause = backoff.next_wait();
                        paused_until = Some(Instant::now() + pause);
                        tracing::warn!(error = %ErrorChain(&e), retry_in = ?pause, "background expiry failed; retrying");
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_reaper_waits_a_doubling_pause_between_attempts() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let expire = move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Err(StoreError::Unavailable("down".into())) }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let reaper = tokio::spawn(reap(expire, stop_rx));
        // Attempts at 0, 0.25, 0.75, 1.75, 3.75 and 7.75 s; every 250 ms
        // tick would make 41.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _ = stop_tx.send(true);
        reaper.await.expect("the reaper ends when told to stop");
        assert_eq!(attempts.load(Ordering::Relaxed), 6);
    }
}
