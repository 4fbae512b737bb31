//! Restarts after `kill -9`, one test per kind of state: each starts the
//! binary on a fresh SQLite file, makes the state, SIGKILLs the process
//! (nothing flushed, no shutdown path), starts it again on the same file
//! and reads the state back.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use keyward::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

use keyward_testkit::client::{str_field, u64_field};
use keyward_testkit::process::TempDir;

const STOP_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pool_settings_survive_a_kill_and_only_the_default_pool_takes_new_flags() -> Result<()> {
    let dir = TempDir::new("pool-settings")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let p = api
        .put_pool(
            "p",
            json!({"lease_ttl_ms": 12_345, "keepalive_ttl_ms": 678_900, "key_length": 33}),
        )
        .await?
        .expect(201)
        .clone();
    let q = api
        .put_pool("q", json!({"lease_ttl_ms": 1_500}))
        .await?
        .expect(201)
        .clone();
    // A change of an existing pool is durable too.
    api.put_pool("r", json!({"key_length": 12}))
        .await?
        .expect(201);
    let r = api
        .put_pool("r", json!({"keepalive_ttl_ms": 45_000}))
        .await?
        .expect(200)
        .clone();
    assert_eq!(
        (r["key_length"].clone(), r["keepalive_ttl_ms"].clone()),
        (json!(12), json!(45_000))
    );
    server.kill()?;

    let server = launch.clone().args(["--lease-ttl", "7s"]).start().await?;
    let api = &server.api;
    assert_eq!(*api.get_pool("p").await?.expect(200), p);
    assert_eq!(*api.get_pool("q").await?.expect(200), q);
    assert_eq!(*api.get_pool("r").await?.expect(200), r);
    assert_eq!(
        q["keepalive_ttl_ms"],
        Config::default().pool_defaults.keepalive_ttl.as_millis(),
        "untouched settings keep the defaults"
    );
    let default = api.get_pool("default").await?.expect(200).clone();
    assert_eq!(
        default["lease_ttl_ms"], 7_000,
        "the default pool takes the flags of every start"
    );
    let keys = api.new_keys("p", 3).await?;
    ensure!(
        keys.iter().all(|k| k.len() == 33),
        "keys of a restored pool use its restored key_length: {keys:?}"
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn generated_keys_survive_a_kill() -> Result<()> {
    let dir = TempDir::new("keys")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let mut made: Vec<Value> = Vec::new();
    for count in [1, 10, 25] {
        let body = api.generate_keys("p", count).await?.expect(201).clone();
        made.extend(body["keys"].as_array().context("keys")?.iter().cloned());
    }
    let compat_key = api.compat_new_key().await?;
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    for key in &made {
        let name = str_field(key, "key");
        let now = api.get_key("p", &name).await?.expect(200).clone();
        assert_eq!(&now, key, "a key reads back exactly as it was generated");
    }
    let pool = api.get_pool("p").await?.expect(200).clone();
    assert_eq!(
        (pool["total"].clone(), pool["free"].clone()),
        (json!(36), json!(36))
    );
    let compat = api
        .get_key("default", &compat_key)
        .await?
        .expect(200)
        .clone();
    assert_eq!(compat["state"], "free");
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_leased_key_keeps_its_lease_id_and_deadline_across_a_kill() -> Result<()> {
    let dir = TempDir::new("leases")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    api.generate_keys("p", 6).await?.expect(201);
    let mut leased = Vec::new();
    for _ in 0..3 {
        leased.push(api.lease("p").await?.expect(200).clone());
    }
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    for before in &leased {
        let key = str_field(before, "key");
        let after = api.get_key("p", &key).await?.expect(200).clone();
        assert_eq!(
            &after, before,
            "state, lease_id, leased_until and alive_until are unchanged"
        );
    }
    let pool = api.get_pool("p").await?.expect(200).clone();
    assert_eq!(
        (pool["free"].clone(), pool["leased"].clone()),
        (json!(3), json!(3))
    );

    // The fencing token still works: the wrong id is refused, the right one releases.
    let first = &leased[0];
    let key = str_field(first, "key");
    let id = u64_field(first, "lease_id");
    api.release("p", &key, Some(id + 100))
        .await?
        .expect_error(409, "lease_mismatch");
    let released = api.release("p", &key, Some(id)).await?.expect(200).clone();
    assert_eq!(released["state"], "free");
    assert_eq!(released["lease_id"], Value::Null);
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn keep_alives_and_releases_survive_a_kill() -> Result<()> {
    let dir = TempDir::new("keepalive")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    api.put_pool(
        "p",
        json!({"lease_ttl_ms": 30_000, "keepalive_ttl_ms": 60_000}),
    )
    .await?
    .expect(201);
    let keys = api.new_keys("p", 3).await?;
    let leased = api.lease("p").await?.expect(200).clone();
    let key = str_field(&leased, "key");
    let id = u64_field(&leased, "lease_id");
    // Let the clock move so that the extended deadlines differ.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let kept = api
        .keepalive("p", &key, Some(id))
        .await?
        .expect(200)
        .clone();
    assert_ne!(kept["alive_until"], leased["alive_until"]);
    assert_ne!(kept["leased_until"], leased["leased_until"]);
    let other = keys.iter().find(|k| **k != key).context("another key")?;
    let other_kept = api.keepalive("p", other, None).await?.expect(200).clone();
    let released = {
        let second = api.lease("p").await?.expect(200).clone();
        let second_key = str_field(&second, "key");
        api.release("p", &second_key, Some(u64_field(&second, "lease_id")))
            .await?
            .expect(200)
            .clone()
    };
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    assert_eq!(api.get_key("p", &key).await?.expect(200).clone(), kept);
    assert_eq!(
        api.get_key("p", other).await?.expect(200).clone(),
        other_kept
    );
    let second_key = str_field(&released, "key");
    assert_eq!(
        api.get_key("p", &second_key).await?.expect(200).clone(),
        released
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn the_next_lease_id_after_a_kill_is_greater_than_any_before() -> Result<()> {
    let dir = TempDir::new("lease-ids")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    api.generate_keys("p", 6).await?.expect(201);
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let lease = api.lease("p").await?.expect(200).clone();
        ids.push(u64_field(&lease, "lease_id"));
        keys.push(str_field(&lease, "key"));
    }
    // The key holding the highest id is released and the next one deleted,
    // so no surviving key carries the highest ids any more: only the
    // pool's high-water mark remembers them.
    api.release("p", &keys[2], Some(ids[2])).await?.expect(200);
    api.delete_key("p", &keys[1]).await?.expect(204);
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    let highest = ids.iter().copied().max().context("three leases")?;
    for _ in 0..3 {
        let lease = api.lease("p").await?.expect(200).clone();
        let id = u64_field(&lease, "lease_id");
        ensure!(
            id > highest,
            "lease id {id} after the restart is not above {highest}, handed out before"
        );
    }
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_deleted_key_stays_deleted_after_a_kill() -> Result<()> {
    let dir = TempDir::new("deleted")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let keys = api.new_keys("p", 4).await?;
    let leased = str_field(api.lease("p").await?.expect(200), "key");
    let free = keys
        .iter()
        .find(|k| **k != leased)
        .context("a free key")?
        .clone();
    api.delete_key("p", &leased).await?.expect(204);
    api.delete_key("p", &free).await?.expect(204);
    let compat_key = api.compat_new_key().await?;
    api.random_api_key(Method::DELETE, true, Some(&compat_key))
        .await?
        .expect(200);
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    for gone in [&leased, &free] {
        api.get_key("p", gone)
            .await?
            .expect_error(404, "key_not_found");
        api.delete_key("p", gone)
            .await?
            .expect_error(404, "key_not_found");
    }
    api.get_key("default", &compat_key)
        .await?
        .expect_error(404, "key_not_found");
    for kept in keys.iter().filter(|k| **k != leased && **k != free) {
        api.get_key("p", kept).await?.expect(200);
    }
    let pool = api.get_pool("p").await?.expect(200).clone();
    assert_eq!(pool["total"], 2);
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn keyspaces_tokens_and_activations_survive_a_kill() -> Result<()> {
    const ALPHABET: &str = "0123456789ABCDEF";
    const WIDE: &str = "日本語🙂αβ";
    let dir = TempDir::new("keyspaces")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    api.put_keyspace("codes", ALPHABET, 8).await?.expect(201);
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(str_field(
            api.issue_token("codes").await?.expect(201),
            "token",
        ));
    }
    let mut activated = Vec::new();
    for token in &tokens[..4] {
        activated.push(api.activate("codes", token).await?.expect(200).clone());
    }
    let before = api.get_keyspace("codes").await?.expect(200).clone();
    // The default keyspace, through the compat token routes.
    let compat: Vec<String> = {
        let mut out = Vec::new();
        for _ in 0..2 {
            out.push(str_field(api.compat_get_token().await?.expect(200), "key:"));
        }
        out
    };
    api.compat_activate_token(&compat[0]).await?.expect(200);
    // An alphabet beyond ASCII is stored and read back as it was.
    api.put_keyspace("wide", WIDE, 3).await?.expect(201);
    let mut wide = Vec::new();
    for _ in 0..3 {
        wide.push(str_field(
            api.issue_token("wide").await?.expect(201),
            "token",
        ));
    }
    let wide_activated = api.activate("wide", &wide[0]).await?.expect(200).clone();
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    let after = api.get_keyspace("codes").await?.expect(200).clone();
    assert_eq!(after, before);
    assert_eq!(
        (after["issued"].clone(), after["activated"].clone()),
        (json!(10), json!(4))
    );
    api.put_keyspace("codes", ALPHABET, 8).await?.expect(200);
    api.put_keyspace("codes", ALPHABET, 9)
        .await?
        .expect_error(409, "keyspace_immutable");
    for (i, token) in tokens.iter().enumerate() {
        let status = api.token_status("codes", token).await?.expect(200).clone();
        if i < 4 {
            assert_eq!(status, activated[i], "activation and its time are kept");
            api.activate("codes", token)
                .await?
                .expect_error(409, "already_activated");
        } else {
            assert_eq!(status["state"], "issued", "{token}");
        }
    }
    let info = api.get_keyspace("wide").await?.expect(200).clone();
    assert_eq!(
        (info["alphabet"].clone(), info["issued"].clone()),
        (json!(WIDE), json!(3))
    );
    assert_eq!(
        api.token_status("wide", &wide[0])
            .await?
            .expect(200)
            .clone(),
        wide_activated
    );
    for token in &wide[1..] {
        let status = api.token_status("wide", token).await?.expect(200).clone();
        assert_eq!(status["state"], "issued", "{token}");
    }
    let status = |s: &str| json!({ "keystatus:": s });
    assert_eq!(
        api.compat_token_status(&compat[0])
            .await?
            .expect(200)
            .clone(),
        status("Ключ выдан и активирован")
    );
    assert_eq!(
        api.compat_token_status(&compat[1])
            .await?
            .expect(200)
            .clone(),
        status("Ключ выдан, но не активирован")
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn tokens_issued_after_a_kill_never_repeat_earlier_ones() -> Result<()> {
    const CAPACITY: usize = 64; // "abcd", length 3
    let dir = TempDir::new("no-repeat")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    api.put_keyspace("small", "abcd", 3).await?.expect(201);
    let mut tokens = Vec::new();
    for _ in 0..30 {
        tokens.push(str_field(
            api.issue_token("small").await?.expect(201),
            "token",
        ));
    }
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    let info = api.get_keyspace("small").await?.expect(200).clone();
    assert_eq!(
        (info["issued"].clone(), info["remaining"].clone()),
        (json!(30), json!(34))
    );
    let mut exhausted = false;
    for _ in 0..=CAPACITY {
        let reply = api.issue_token("small").await?;
        if reply.status == 409 {
            reply.expect_error(409, "keyspace_exhausted");
            exhausted = true;
            break;
        }
        tokens.push(str_field(&reply.expect(201).clone(), "token"));
    }
    ensure!(exhausted, "the keyspace never reported keyspace_exhausted");
    let distinct: HashSet<&String> = tokens.iter().collect();
    assert_eq!(
        tokens.len(),
        CAPACITY,
        "every token of the space, once: {tokens:?}"
    );
    assert_eq!(distinct.len(), CAPACITY, "a token repeated: {tokens:?}");
    ensure!(
        tokens
            .iter()
            .all(|t| t.len() == 3 && t.chars().all(|c| "abcd".contains(c))),
        "tokens fit the alphabet and length: {tokens:?}"
    );
    server.kill()?;

    // Exhaustion itself is durable.
    let server = launch.start().await?;
    let api = &server.api;
    api.issue_token("small")
        .await?
        .expect_error(409, "keyspace_exhausted");
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn the_database_reads_back_with_the_sqlite3_shell_after_a_kill() -> Result<()> {
    let dir = TempDir::new("sqlite3-shell")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let keys = api.new_keys("p", 10).await?;
    let lease = api.lease("p").await?.expect(200).clone();
    api.put_keyspace("ks", "abcdef", 6).await?.expect(201);
    let token = str_field(api.issue_token("ks").await?.expect(201), "token");
    api.issue_token("ks").await?.expect(201);
    api.activate("ks", &token).await?.expect(200);
    server.kill()?;

    let query = |sql: &str| -> Result<Option<String>> {
        match Command::new("sqlite3").arg(dir.db()).arg(sql).output() {
            Ok(out) => {
                ensure!(
                    out.status.success(),
                    "sqlite3 {sql:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
            }
            Err(e) => {
                eprintln!(
                    "SKIP the_database_reads_back_with_the_sqlite3_shell_after_a_kill: no sqlite3 shell ({e})"
                );
                Ok(None)
            }
        }
    };
    let Some(count) = query("SELECT count(*) FROM keys WHERE pool = 'p'")? else {
        return Ok(());
    };
    assert_eq!(count, keys.len().to_string());
    let leased_key = str_field(&lease, "key");
    assert_eq!(
        query(&format!(
            "SELECT lease_id FROM leases WHERE pool = 'p' AND key = '{leased_key}'"
        ))?,
        Some(u64_field(&lease, "lease_id").to_string())
    );
    assert_eq!(
        query(
            "SELECT alphabet || ' ' || length || ' ' || issued FROM keyspaces WHERE name = 'ks'"
        )?,
        Some("abcdef 6 2".to_owned())
    );
    assert_eq!(
        query("SELECT token FROM marks WHERE keyspace = 'ks'")?,
        Some(token)
    );
    assert_eq!(
        query("SELECT count(*) FROM schema_version")?.map(|n| n != "0"),
        Some(true)
    );
    assert_eq!(query("PRAGMA journal_mode")?, Some("wal".to_owned()));

    // Reading it with the shell does not disturb the server.
    let server = launch.start().await?;
    let api = &server.api;
    api.get_key("p", &leased_key).await?.expect(200);
    server.terminate(STOP_WITHIN).await
}

/// The schema keyward 0.1 wrote first (version 1): leases as columns of
/// `keys`.
const SCHEMA_V1: &str = "
    CREATE TABLE schema_version (version INTEGER NOT NULL);
    INSERT INTO schema_version (version) VALUES (1);
    PRAGMA application_id = 1264013892;
    CREATE TABLE pools (name TEXT PRIMARY KEY, lease_ttl_ms INTEGER NOT NULL,
        keepalive_ttl_ms INTEGER NOT NULL, key_length INTEGER NOT NULL,
        last_lease_id INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE keys (pool TEXT NOT NULL, key TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
        alive_until_ms INTEGER NOT NULL, lease_id INTEGER, leased_until_ms INTEGER,
        PRIMARY KEY (pool, key)) WITHOUT ROWID;
    CREATE TABLE keyspaces (name TEXT PRIMARY KEY, alphabet TEXT NOT NULL,
        length INTEGER NOT NULL, secret BLOB NOT NULL, issued TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE activations (keyspace TEXT NOT NULL, token TEXT NOT NULL,
        activated_at_ms INTEGER NOT NULL, PRIMARY KEY (keyspace, token)) WITHOUT ROWID;";

#[tokio::test]
async fn a_version_1_database_is_migrated_with_its_keys_and_leases() -> Result<()> {
    let dir = TempDir::new("migrate-v1")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (alive, until) = (now + 3_600_000, now + 600_000);
    let sql = format!(
        "{SCHEMA_V1}
        INSERT INTO pools VALUES ('p', 60000, 3600000, 20, 41);
        INSERT INTO keys VALUES ('p', 'freeKEY0000000000000', {now}, {alive}, NULL, NULL);
        INSERT INTO keys VALUES ('p', 'leasedKEY00000000000', {now}, {alive}, 41, {until});"
    );
    match Command::new("sqlite3").arg(dir.db()).arg(&sql).output() {
        Ok(out) => ensure!(
            out.status.success(),
            "sqlite3: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("SKIP a_version_1_database_is_migrated: no sqlite3 shell ({e})");
            return Ok(());
        }
    }
    let server = crate::launch(&dir).start().await?;
    let api = &server.api;
    let leased = api
        .get_key("p", "leasedKEY00000000000")
        .await?
        .expect(200)
        .clone();
    assert_eq!(leased["state"], "leased", "{leased}");
    assert_eq!(u64_field(&leased, "lease_id"), 41);
    let free = api
        .get_key("p", "freeKEY0000000000000")
        .await?
        .expect(200)
        .clone();
    assert_eq!(free["state"], "free", "{free}");
    // Fencing carries over: the next lease id follows the migrated one.
    let next = api.lease("p").await?.expect(200).clone();
    assert_eq!(u64_field(&next, "lease_id"), 42);
    api.release("p", "leasedKEY00000000000", Some(41))
        .await?
        .expect(200);
    server.kill()?;

    let server = crate::launch(&dir).start().await?;
    let api = &server.api;
    let pool = api.get_pool("p").await?.expect(200).clone();
    assert_eq!(
        (pool["total"].clone(), pool["leased"].clone()),
        (json!(2), json!(1))
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_keyspace_of_readable_codes_keeps_its_format_and_activations_across_a_kill() -> Result<()>
{
    let dir = TempDir::new("readable")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let def = json!({
        "alphabet": "crockford",
        "length": 8,
        "format": {"group": 4, "prefix": "SHOP-", "check": true}
    });
    let path = "/v1/keyspaces/shop";
    let created = server
        .api
        .request(Method::PUT, path, Some(def.clone()))
        .await?
        .expect(201)
        .clone();
    let token = str_field(server.api.issue_token("shop").await?.expect(201), "token");
    ensure!(
        token.starts_with("SHOP-") && token.len() == 5 + 4 + 1 + 4 + 1,
        "{token}"
    );
    server.api.activate("shop", &token).await?.expect(200);
    server.kill()?;

    let server = launch.start().await?;
    let again = server.api.get_keyspace("shop").await?.expect(200).clone();
    ensure!(
        again["format"] == created["format"] && again["preset"] == "crockford",
        "{again}"
    );
    // Typed without prefix and separators, in lower case: the same token.
    let typed = token
        .trim_start_matches("SHOP-")
        .replace('-', "")
        .to_lowercase();
    let status = server
        .api
        .token_status("shop", &typed)
        .await?
        .expect(200)
        .clone();
    ensure!(
        status["token"] == token.as_str() && status["state"] == "activated",
        "{status}"
    );
    // The same definition is accepted, another format is not.
    server
        .api
        .request(Method::PUT, path, Some(def))
        .await?
        .expect(200);
    let other = json!({"alphabet": "crockford", "length": 8});
    server
        .api
        .request(Method::PUT, path, Some(other))
        .await?
        .expect_error(409, "keyspace_immutable");
    server.terminate(Duration::from_secs(5)).await
}

#[tokio::test]
async fn batches_slots_and_revocations_survive_a_kill() -> Result<()> {
    let dir = TempDir::new("shop-marks")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let def = json!({"alphabet": "digits", "length": 9, "max_activations": 2});
    api.request(Method::PUT, "/v1/keyspaces/shop", Some(def))
        .await?
        .expect(201);
    let issue = json!({"count": 5, "batch": "march"});
    let issued = api
        .request(Method::POST, "/v1/keyspaces/shop/tokens", Some(issue))
        .await?
        .expect(201)
        .clone();
    let token = |i: usize| issued["tokens"][i].as_str().unwrap_or_default().to_owned();
    for (i, fingerprint) in [(0, "laptop"), (0, "desktop"), (1, "phone")] {
        let path = format!("/v1/keyspaces/shop/tokens/{}/activate", token(i));
        let body = json!({ "fingerprint": fingerprint });
        api.request(Method::POST, &path, Some(body))
            .await?
            .expect(200);
    }
    let path = format!("/v1/keyspaces/shop/tokens/{}/revoke", token(1));
    let revoked = api
        .request(Method::POST, &path, Some(json!({"reason": "refunded"})))
        .await?
        .expect(200)
        .clone();
    let before = api
        .token_status("shop", &token(0))
        .await?
        .expect(200)
        .clone();
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    ensure!(*api.token_status("shop", &token(0)).await?.expect(200) == before);
    ensure!(*api.token_status("shop", &token(1)).await?.expect(200) == revoked);
    let batch = api
        .request(Method::GET, "/v1/keyspaces/shop/batches/march", None)
        .await?
        .expect(200)
        .clone();
    ensure!(
        batch == json!({"name": "march", "issued": 5, "activated": 2, "revoked": 1}),
        "{batch}"
    );
    let info = api.get_keyspace("shop").await?.expect(200).clone();
    ensure!(
        (
            info["max_activations"].clone(),
            info["activated"].clone(),
            info["revoked"].clone()
        ) == (json!(2), json!(2), json!(1)),
        "{info}"
    );
    // Both slots of token 0 are still taken: a third machine is refused.
    let path = format!("/v1/keyspaces/shop/tokens/{}/activate", token(0));
    api.request(Method::POST, &path, Some(json!({"fingerprint": "tablet"})))
        .await?
        .expect_error(409, "already_activated");
    server.terminate(Duration::from_secs(5)).await
}
