//! Exactly-once retries across `kill -9` (DESIGN P2.3): writers send
//! issues, generates and leases, each with an `Idempotency-Key` of its
//! own, and the server is killed in the middle. After a restart on the
//! same file every request is sent again with its key: each retry
//! succeeds, an answered request is replayed byte for byte, and the
//! counts show that every request took effect exactly once, whether its
//! first try was answered, committed unanswered, or never ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use keyward_testkit::client::{Api, keys_of};
use keyward_testkit::process::TempDir;

const POOL_GEN: &str = "idem-gen";
const POOL_LEASE: &str = "idem-lease";
const KEYSPACE: &str = "idem-ks";
/// Keys to lease from: more than the leases the writers may ask for.
const LEASE_KEYS: u64 = 3_000;
const MAX_LEASES: usize = 2_000;
/// A writer stops by itself after this long or this many requests.
const WRITER_LIMIT: Duration = Duration::from_secs(10);
const MAX_OPS: usize = 5_000;

/// One request as sent: its key, route and body, and its answer if one
/// came back whole.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    method: Method,
    path: String,
    body: Option<Value>,
    answer: Option<(u16, String)>,
}

async fn writer(api: Api, id: usize, leases: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let mut sent = Vec::new();
    let deadline = Instant::now() + WRITER_LIMIT;
    for n in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let key = format!("w{id}-{n}");
        let (method, path, body) = match rand::random_range(0..3) {
            0 => (
                Method::POST,
                format!("/v1/keyspaces/{KEYSPACE}/tokens"),
                None,
            ),
            1 => (
                Method::POST,
                format!("/v1/pools/{POOL_GEN}/keys"),
                Some(json!({"count": rand::random_range(1..=3u64)})),
            ),
            _ if leases.fetch_add(1, Ordering::Relaxed) < MAX_LEASES => {
                (Method::POST, format!("/v1/pools/{POOL_LEASE}/lease"), None)
            }
            _ => continue,
        };
        let reply = api
            .request_with_key(method.clone(), &path, body.clone(), &key)
            .await;
        let answer = reply.ok().map(|r| (r.status, r.text));
        let gone = answer.is_none();
        sent.push(Sent {
            key,
            method,
            path,
            body,
            answer,
        });
        if gone {
            // The server is gone: this writer's work is done.
            break;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_retried_with_their_keys_after_kill_9_take_effect_exactly_once() -> Result<()> {
    const WRITERS: usize = 12;
    let dir = TempDir::new("idem-crash")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = server.api.clone();
    api.put_keyspace(KEYSPACE, "abcdefghijklmnopqrstuvwxyz", 6)
        .await?
        .expect(201);
    let forever = json!({"keepalive_ttl_ms": 0, "lease_ttl_ms": 3_600_000});
    api.put_pool(POOL_GEN, forever.clone()).await?.expect(201);
    api.put_pool(POOL_LEASE, forever).await?.expect(201);
    api.generate_keys(POOL_LEASE, LEASE_KEYS).await?.expect(201);

    let stop = Arc::new(AtomicBool::new(false));
    let leases = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for id in 0..WRITERS {
        set.spawn(writer(api.clone(), id, leases.clone(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(rand::random_range(300..=700))).await;
    server.kill()?;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    while let Some(done) = set.join_next().await {
        sent.extend(done.context("a writer panicked")?);
    }
    let answered = sent.iter().filter(|s| s.answer.is_some()).count();
    ensure!(
        answered > 0 && answered < sent.len(),
        "the kill should fall mid-load: {answered} of {} answered",
        sent.len()
    );

    let server = launch.start().await?;
    let api = server.api.clone();
    let (mut issues, mut generated, mut lease_count) = (0u64, 0u64, 0u64);
    let mut tokens = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    // Unanswered requests whose change had committed before the kill.
    let mut committed_unanswered = 0;
    for s in &sent {
        let retry = api
            .request_with_key(s.method.clone(), &s.path, s.body.clone(), &s.key)
            .await?;
        ensure!(
            (200..300).contains(&retry.status),
            "retry of {} {}: {retry:?}",
            s.method,
            s.path
        );
        if let Some((status, text)) = &s.answer {
            ensure!(
                (*status, text) == (retry.status, &retry.text),
                "an answered request must replay its answer: {s:?} then {retry:?}"
            );
            ensure!(retry.header("idempotent-replayed") == Some("true"));
        } else if retry.header("idempotent-replayed") == Some("true") {
            committed_unanswered += 1;
        }
        if s.path.ends_with("/tokens") {
            issues += 1;
            tokens.insert(retry.str("token"));
        } else if s.path.ends_with("/keys") {
            let got = keys_of(&retry.body);
            generated += s
                .body
                .as_ref()
                .and_then(|b| b["count"].as_u64())
                .unwrap_or(0);
            ensure!(
                got.len() as u64
                    == s.body
                        .as_ref()
                        .map_or(0, |b| b["count"].as_u64().unwrap_or(0))
            );
            keys.extend(got);
        } else {
            lease_count += 1;
        }
    }
    let ks = api.get_keyspace(KEYSPACE).await?.expect(200).clone();
    ensure!(
        ks["issued"] == issues && tokens.len() as u64 == issues,
        "{issues} issue requests, {} distinct tokens, keyspace {ks}",
        tokens.len()
    );
    let gen_pool = api.get_pool(POOL_GEN).await?.expect(200).clone();
    ensure!(
        gen_pool["total"] == generated && keys.len() as u64 == generated,
        "{generated} keys asked for, {} distinct, pool {gen_pool}",
        keys.len()
    );
    let lease_pool = api.get_pool(POOL_LEASE).await?.expect(200).clone();
    ensure!(
        lease_pool["leased"] == lease_count,
        "{lease_count} lease requests, pool {lease_pool}"
    );
    eprintln!(
        "{} requests ({answered} answered before kill -9, {committed_unanswered} committed but unanswered): {issues} issues, {generated} keys, {lease_count} leases, each once",
        sent.len()
    );
    server.terminate(Duration::from_secs(5)).await
}
