//! Credential pools across `kill -9`: imported keys with labels, cooling,
//! quarantined (doubled) and disabled keys, a lease, and the pools'
//! recovery and no-keep-alive settings come back exactly as the server
//! last answered them, and a quarantine begun after a restart still
//! doubles from the count before it.
//!
//! Each scenario that must lease one particular key has a pool of its own
//! holding just that key, since a lease picks a random free key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::client::{Api, Reply, time_of, u64_field};
use keyward_testkit::process::TempDir;

const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Long enough that no lease, cooldown or quarantine of the test ends by
/// itself while it runs, except the short first quarantine.
const LONG_MS: u64 = 3_600_000;
/// The first quarantine of `quar`'s key: short, so the test can wait it
/// out and put the key on probation.
const SHORT_QUARANTINE_MS: u64 = 300;
/// Most time the first quarantine may take to end, as seen by a client.
const PROBATION_WITHIN: Duration = Duration::from_secs(10);
/// Every pool of the test.
const POOLS: [&str; 4] = ["creds", "cool", "quar", "dis"];

async fn call(api: &Api, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
    api.request(method, path, body).await
}

/// `POST /v1/pools/{pool}/keys` importing `keys` with `labels`.
async fn import(api: &Api, pool: &str, keys: &[&str], labels: Value) -> Result<()> {
    let reply = call(
        api,
        Method::POST,
        &format!("/v1/pools/{pool}/keys"),
        Some(json!({"keys": keys, "labels": labels})),
    )
    .await?;
    let body = reply.expect(201);
    ensure!(
        body["keys"].as_array().map(Vec::len) == Some(keys.len()),
        "every key added: {body}"
    );
    Ok(())
}

/// Leases the only free key of `pool`: its lease id.
async fn lease(api: &Api, pool: &str, key: &str) -> Result<u64> {
    let reply = call(api, Method::POST, &format!("/v1/pools/{pool}/lease"), None).await?;
    let body = reply.expect(200);
    ensure!(body["key"] == key, "leased {key} in {pool}: {body}");
    Ok(u64_field(body, "lease_id"))
}

/// Releases `key` with `body` (which gets the lease id); the key after.
async fn release(api: &Api, pool: &str, key: &str, lease_id: u64, body: Value) -> Result<Value> {
    let mut body = body;
    body["lease_id"] = json!(lease_id);
    let reply = call(
        api,
        Method::POST,
        &format!("/v1/pools/{pool}/keys/{key}/release"),
        Some(body),
    )
    .await?;
    Ok(reply.expect(200).clone())
}

/// Leases `pool`'s only free key and reports it failed.
async fn fail(api: &Api, pool: &str, key: &str, reason: &str) -> Result<Value> {
    let id = lease(api, pool, key).await?;
    release(
        api,
        pool,
        key,
        id,
        json!({"outcome": "failed", "reason": reason}),
    )
    .await
}

/// Every key of `pool` (one page holds them all), by key text: a restart
/// renumbers the slots a listing walks, so the order may change.
async fn keys_of_pool(
    api: &Api,
    pool: &str,
    state: Option<&str>,
) -> Result<BTreeMap<String, Value>> {
    let query = state.map_or(String::new(), |s| format!("&state={s}"));
    let reply = call(
        api,
        Method::GET,
        &format!("/v1/pools/{pool}/keys?limit=1000{query}"),
        None,
    )
    .await?;
    let body = reply.expect(200);
    ensure!(body["next_cursor"].is_null(), "one page: {body}");
    let keys = body["keys"].as_array().context("keys")?;
    Ok(keys
        .iter()
        .map(|k| (k["key"].as_str().unwrap_or_default().to_owned(), k.clone()))
        .collect())
}

/// What a client can read of every pool: its object and its keys.
async fn snapshot(api: &Api) -> Result<BTreeMap<String, (Value, BTreeMap<String, Value>)>> {
    let mut all = BTreeMap::new();
    for pool in POOLS {
        let info = api.get_pool(pool).await?.expect(200).clone();
        all.insert(
            pool.to_owned(),
            (info, keys_of_pool(api, pool, None).await?),
        );
    }
    Ok(all)
}

/// Fails naming the first pool or key that differs.
fn ensure_same(
    before: &BTreeMap<String, (Value, BTreeMap<String, Value>)>,
    after: &BTreeMap<String, (Value, BTreeMap<String, Value>)>,
) -> Result<()> {
    for (pool, (info, keys)) in before {
        let (info_now, keys_now) = after.get(pool).context("pool missing")?;
        ensure!(info == info_now, "pool {pool} was {info}, now {info_now}");
        ensure!(
            keys.keys().eq(keys_now.keys()),
            "pool {pool} had keys {:?}, now {:?}",
            keys.keys(),
            keys_now.keys()
        );
        for (key, view) in keys {
            ensure!(
                view == &keys_now[key],
                "key {key} of {pool} was {view}, now {}",
                keys_now[key]
            );
        }
    }
    Ok(())
}

/// Polls `key` until it is free again (its quarantine ended), bounded.
async fn wait_free(api: &Api, pool: &str, key: &str) -> Result<Value> {
    let started = Instant::now();
    loop {
        let body = api.get_key(pool, key).await?.expect(200).clone();
        if body["state"] == "free" {
            return Ok(body);
        }
        ensure!(
            started.elapsed() < PROBATION_WITHIN,
            "{key} still not free after {PROBATION_WITHIN:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn credential_pools_come_back_exactly_after_kill_9() -> Result<()> {
    let dir = TempDir::new("credentials")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let settings = json!({
        "lease_ttl_ms": LONG_MS,
        "keepalive_ttl_ms": 0,
        "cooldown_ms": LONG_MS + 1,
        "max_failures": 2,
        "quarantine_ms": LONG_MS + 2,
    });
    for pool in POOLS {
        api.put_pool(pool, settings.clone()).await?.expect(201);
    }
    call(
        api,
        Method::PUT,
        "/v1/pools/quar",
        Some(json!({"quarantine_ms": SHORT_QUARANTINE_MS})),
    )
    .await?
    .expect(200);

    let openai = json!({"provider": "openai", "tier": "paid"});
    import(
        api,
        "creds",
        &["sk-free-0001", "sk-free-0002"],
        openai.clone(),
    )
    .await?;
    import(
        api,
        "creds",
        &["sk-lease-0001"],
        json!({"provider": "anthropic"}),
    )
    .await?;
    import(api, "creds", &["sk-bare-0001"], json!({})).await?;
    let leased = keys_of_pool(api, "creds", None).await?;
    ensure!(
        leased.values().all(|k| k["alive_until"].is_null()),
        "keys of a pool with keepalive_ttl_ms 0 have no deadline: {leased:?}"
    );
    // Lease one of the four, whichever comes.
    let reply = call(api, Method::POST, "/v1/pools/creds/lease", None).await?;
    let leased_key = reply.expect(200)["key"].as_str().context("key")?.to_owned();

    import(api, "cool", &["sk-cool-0001"], openai.clone()).await?;
    let id = lease(api, "cool", "sk-cool-0001").await?;
    let cooling = release(
        api,
        "cool",
        "sk-cool-0001",
        id,
        json!({"outcome": "rate_limited", "retry_after_ms": LONG_MS + 3, "reason": "429 from upstream"}),
    )
    .await?;
    ensure!(cooling["state"] == "cooling", "{cooling}");

    // Quarantined once (short), then free on probation with its failures.
    import(api, "quar", &["sk-quar-0001"], json!({"team": "red"})).await?;
    fail(api, "quar", "sk-quar-0001", "500 from upstream").await?;
    let first = fail(api, "quar", "sk-quar-0001", "500 from upstream").await?;
    ensure!(
        first["state"] == "quarantined" && first["failures"] == 2,
        "{first}"
    );
    let probation = wait_free(api, "quar", "sk-quar-0001").await?;
    ensure!(
        probation["failures"] == 2 && probation["reason"].is_null(),
        "{probation}"
    );

    import(api, "dis", &["sk-dis-0001", "sk-dis-0002"], openai.clone()).await?;
    let disabled = call(
        api,
        Method::POST,
        "/v1/pools/dis/keys/sk-dis-0001/disable",
        Some(json!({"reason": "revoked by the provider"})),
    )
    .await?
    .expect(200)
    .clone();
    ensure!(disabled["state"] == "disabled", "{disabled}");

    let before = snapshot(api).await?;
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    ensure_same(&before, &snapshot(api).await?).context("after the first kill -9")?;
    for (pool, state, key) in [
        ("creds", "leased", leased_key.as_str()),
        ("cool", "cooling", "sk-cool-0001"),
        ("dis", "disabled", "sk-dis-0001"),
        ("quar", "free", "sk-quar-0001"),
    ] {
        let listed = keys_of_pool(api, pool, Some(state)).await?;
        ensure!(
            listed.keys().eq([key].iter()),
            "{pool} lists {:?} as {state}, expected only {key}",
            listed.keys()
        );
    }

    // The quarantine count survived: the next one, begun now, lasts twice
    // the pool's quarantine_ms (its failures were kept too: one more
    // reaches max_failures again).
    call(
        api,
        Method::PUT,
        "/v1/pools/quar",
        Some(json!({"quarantine_ms": LONG_MS})),
    )
    .await?
    .expect(200);
    let sent = now_ms();
    let second = fail(api, "quar", "sk-quar-0001", "500 again").await?;
    let got = now_ms();
    ensure!(
        second["state"] == "quarantined"
            && second["failures"] == 3
            && second["reason"] == "500 again",
        "{second}"
    );
    let until = time_of(&second, "available_at");
    ensure!(
        until >= sent + 2 * LONG_MS && until <= got + 2 * LONG_MS,
        "the second quarantine in a row lasts 2 × quarantine_ms: available_at {until}, \
         released between {sent} and {got}"
    );
    let before = snapshot(api).await?;
    server.kill()?;

    let server = launch.start().await?;
    ensure_same(&before, &snapshot(&server.api).await?).context("after the second kill -9")?;
    let quar = &before["quar"].1["sk-quar-0001"];
    ensure!(quar["state"] == "quarantined", "{quar}");
    server.terminate(STOP_WITHIN).await
}

/// Milliseconds since the epoch, as the server's clock reads it (both run
/// on this machine).
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Schema 3 as keyward 3 made it, with its application id: the migration
/// is tested on a file of that shape, made without today's code.
const V3_SCHEMA: &str = "
    PRAGMA application_id = 1264013892;
    PRAGMA journal_mode = WAL;
    CREATE TABLE schema_version (version INTEGER NOT NULL);
    INSERT INTO schema_version (version) VALUES (1), (2), (3);
    CREATE TABLE pools (name TEXT PRIMARY KEY, lease_ttl_ms INTEGER NOT NULL,
        keepalive_ttl_ms INTEGER NOT NULL, key_length INTEGER NOT NULL,
        last_lease_id INTEGER NOT NULL, rows_key TEXT) WITHOUT ROWID;
    CREATE TABLE keys (pool TEXT NOT NULL, key TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, alive_until_ms INTEGER NOT NULL,
        PRIMARY KEY (pool, key)) WITHOUT ROWID;
    CREATE TABLE keyspaces (name TEXT PRIMARY KEY, alphabet TEXT NOT NULL,
        length INTEGER NOT NULL, secret BLOB NOT NULL, issued TEXT NOT NULL,
        rows_key TEXT) WITHOUT ROWID;
    CREATE TABLE activations (keyspace TEXT NOT NULL, token TEXT NOT NULL,
        activated_at_ms INTEGER NOT NULL, PRIMARY KEY (keyspace, token)) WITHOUT ROWID;
    CREATE TABLE leases (pool TEXT NOT NULL, key TEXT NOT NULL,
        lease_id INTEGER NOT NULL, leased_until_ms INTEGER NOT NULL,
        PRIMARY KEY (pool, key)) WITHOUT ROWID;
    CREATE TABLE reclaim (id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('pool', 'keyspace')),
        rows_key TEXT NOT NULL);";

#[tokio::test]
async fn a_schema_3_file_starts_with_its_keys_and_the_new_defaults_and_takes_the_new_states()
-> Result<()> {
    let dir = TempDir::new("v3")?;
    let now = now_ms();
    let (created, alive, leased_until) = (now - 1_000, now + LONG_MS, now + LONG_MS + 1);
    let rows = format!(
        "INSERT INTO pools VALUES ('old', 600000, {LONG_MS}, 20, 4, NULL);
         INSERT INTO keys VALUES ('old', 'AAAAAAAAAAAAAAAAAAAA', {created}, {alive});
         INSERT INTO keys VALUES ('old', 'BBBBBBBBBBBBBBBBBBBB', {created}, {alive});
         INSERT INTO leases VALUES ('old', 'BBBBBBBBBBBBBBBBBBBB', 4, {leased_until});"
    );
    if crate::sqlite3(&dir.db(), &format!("{V3_SCHEMA} {rows}"))?.is_none() {
        return Ok(());
    }
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let pool = api.get_pool("old").await?.expect(200).clone();
    ensure!(
        pool["lease_ttl_ms"] == 600_000
            && pool["keepalive_ttl_ms"] == LONG_MS
            && pool["key_length"] == 20
            && pool["cooldown_ms"] == 60_000
            && pool["max_failures"] == 3
            && pool["quarantine_ms"] == 300_000
            && pool["free"] == 1
            && pool["leased"] == 1,
        "schema-3 settings kept, recovery defaults added: {pool}"
    );
    let keys = keys_of_pool(api, "old", None).await?;
    let free = &keys["AAAAAAAAAAAAAAAAAAAA"];
    let leased = &keys["BBBBBBBBBBBBBBBBBBBB"];
    for (key, state) in [(free, "free"), (leased, "leased")] {
        ensure!(
            key["state"] == state
                && time_of(key, "created_at") == created
                && time_of(key, "alive_until") == alive
                && key["labels"] == json!({})
                && key["failures"] == 0
                && key["reason"].is_null()
                && key["available_at"].is_null(),
            "a schema-3 key reads back {state} with no labels and no failures: {key}"
        );
    }
    ensure!(
        leased["lease_id"] == 4 && time_of(leased, "leased_until") == leased_until,
        "{leased}"
    );
    if let Some(version) = crate::sqlite3(&dir.db(), "SELECT max(version) FROM schema_version")? {
        ensure!(
            version == "7",
            "migrated to the latest schema (7), found {version}"
        );
    }

    // The migrated file takes the new states, and keeps them.
    let cooling = release(
        api,
        "old",
        "BBBBBBBBBBBBBBBBBBBB",
        4,
        json!({"outcome": "rate_limited", "reason": "slow down"}),
    )
    .await?;
    ensure!(cooling["state"] == "cooling", "{cooling}");
    let before = snapshot_of(api, "old").await?;
    server.kill()?;
    let server = launch.start().await?;
    ensure!(
        snapshot_of(&server.api, "old").await? == before,
        "the migrated file keeps the new states across kill -9"
    );
    server.terminate(STOP_WITHIN).await
}

/// One pool's object and keys.
async fn snapshot_of(api: &Api, pool: &str) -> Result<(Value, BTreeMap<String, Value>)> {
    let info = api.get_pool(pool).await?.expect(200).clone();
    Ok((info, keys_of_pool(api, pool, None).await?))
}
