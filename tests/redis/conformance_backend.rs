//! The `redis` backend of the conformance suite (included by
//! `tests/conformance/main.rs`): a private `redis-server` per case, the
//! store on the case's manual clock (scripts take `now` from it instead of
//! Redis `TIME`).

use std::sync::Arc;

use keyward::clock::ManualClock;
use keyward::store::redis::{RedisSettings, RedisStore, RedisTarget, TimeSource};

use crate::backends::{Harness, LIMITS, default_keyspace, pool_defaults};

#[path = "server.rs"]
#[allow(dead_code, reason = "shared with tests/redis, which uses all of it")]
mod server;

/// `redis://` on a fresh private server; `None` without `redis-server`.
pub async fn redis() -> Option<Harness> {
    if !server::available() {
        return None;
    }
    let server = tokio::task::spawn_blocking(server::RedisServer::start)
        .await
        .expect("the start-up thread does not panic")
        .expect("a private redis-server starts");
    let clock = Arc::new(ManualClock::default());
    let settings = RedisSettings {
        target: RedisTarget::Single(server.url()),
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits: LIMITS,
        time: TimeSource::Clock(clock.clone()),
    };
    let store = RedisStore::connect(settings)
        .await
        .expect("the Redis store connects");
    Some(Harness {
        store: Arc::new(store),
        clock,
        _guard: Some(Box::new(server)),
    })
}
