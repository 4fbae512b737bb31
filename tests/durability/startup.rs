//! Start-up refusals: a `default` keyspace that would change under issued
//! tokens, and files that are not (or cannot become) a keyward database.
//! Each must end the process with a non-zero code and a clear message on
//! stderr, and must leave the file as it was.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::sqlite3;
use anyhow::{Context, Result, ensure};
use serde_json::json;

use keyward_testkit::client::str_field;
use keyward_testkit::process::{Exited, TempDir};

const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Fails unless the server exited non-zero with something on stderr.
fn ensure_refused(exited: &Exited) -> Result<()> {
    ensure!(
        !exited.status.success(),
        "the server should refuse to start, but exited with {}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    ensure!(
        !exited.stderr.trim().is_empty(),
        "a refused start says why on stderr"
    );
    Ok(())
}

/// Starts the server on `dir`'s database: it must refuse to start with
/// every one of `says` on stderr, and leave the file as it was.
async fn ensure_refused_untouched(dir: &TempDir, says: &[&str]) -> Result<()> {
    let before = std::fs::read(dir.db())?;
    let exited = crate::launch(dir).start_expecting_exit().await?;
    ensure_refused(&exited)?;
    for said in says {
        ensure!(
            exited.stderr.contains(said),
            "stderr says {said:?}: {}",
            exited.stderr
        );
    }
    ensure!(
        std::fs::read(dir.db())? == before,
        "a refused file is left untouched"
    );
    Ok(())
}

/// Runs `sql` on `dir`'s database, then starts the server on it, which
/// must refuse to start without a panic: what it left, or `None` when there
/// is no sqlite3 shell to run `sql` with.
async fn refused_after(dir: &TempDir, sql: &str) -> Result<Option<Exited>> {
    if sqlite3(&dir.db(), sql)?.is_none() {
        return Ok(None);
    }
    let exited = crate::launch(dir)
        .start_expecting_exit()
        .await
        .with_context(|| format!("after {sql}"))?;
    ensure_refused(&exited).with_context(|| format!("after {sql}"))?;
    ensure_no_panic(&exited)?;
    Ok(Some(exited))
}

/// Fails if the process died of a panic rather than refusing cleanly.
fn ensure_no_panic(exited: &Exited) -> Result<()> {
    ensure!(
        exited.status.code() != Some(101) && !exited.stderr.contains("panicked"),
        "a bad database must be refused with an error, not a panic: {}",
        exited.stderr
    );
    Ok(())
}

/// Makes a keyward database at `dir.db()` with some keys and a token, and
/// stops the server cleanly.
async fn keyward_db(dir: &TempDir) -> Result<()> {
    let server = crate::launch(dir).start().await?;
    let api = &server.api;
    for _ in 0..2 {
        api.generate_keys("p", 1000).await?.expect(201);
    }
    api.compat_get_token().await?.expect(200);
    server.terminate(STOP_WITHIN).await
}

/// stderr without the database path, so digits or words in the path
/// cannot satisfy a check.
fn without_path(stderr: &str, db: &Path) -> String {
    stderr.replace(&db.display().to_string(), "<db>")
}

#[tokio::test]
async fn a_restart_with_another_token_length_after_issuing_refuses_to_start() -> Result<()> {
    let dir = TempDir::new("guard")?;
    let four = crate::launch(&dir).args(["--token-length", "4"]);
    let server = four.start().await?;
    let api = &server.api;
    let token = str_field(api.compat_get_token().await?.expect(200), "key:");
    assert_eq!(token.chars().count(), 4);
    server.terminate(STOP_WITHIN).await?;

    let exited = crate::launch(&dir)
        .args(["--token-length", "5"])
        .start_expecting_exit()
        .await?;
    ensure_refused(&exited)?;
    let message = without_path(&exited.stderr, &dir.db());
    ensure!(
        message.contains("keyspace")
            && message.contains("default")
            && message.contains("length")
            && message.contains('4')
            && message.contains('5'),
        "stderr names keyspace \"default\" and both lengths (4 and 5): {message}"
    );
    ensure!(
        message.contains("--token-length"),
        "stderr says how to proceed (the flag to pass): {message}"
    );

    let exited = crate::launch(&dir)
        .args(["--token-length", "4", "--token-alphabet", "abc"])
        .start_expecting_exit()
        .await?;
    ensure_refused(&exited)?;
    let message = without_path(&exited.stderr, &dir.db());
    ensure!(
        message.contains("default") && message.contains("alphabet"),
        "stderr names keyspace \"default\" and the alphabet: {message}"
    );

    // The refused starts left the database as it was.
    let server = four.start().await?;
    let api = &server.api;
    assert_eq!(
        api.compat_token_status(&token).await?.expect(200).clone(),
        json!({"keystatus:": "Ключ выдан, но не активирован"})
    );
    let info = api.get_keyspace("default").await?.expect(200).clone();
    assert_eq!(
        (info["length"].clone(), info["issued"].clone()),
        (json!(4), json!(1))
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_restart_with_another_token_length_before_issuing_is_accepted() -> Result<()> {
    let dir = TempDir::new("guard-empty")?;
    let server = crate::launch(&dir)
        .args(["--token-length", "4"])
        .start()
        .await?;
    server.terminate(STOP_WITHIN).await?;

    let server = crate::launch(&dir)
        .args(["--token-length", "5"])
        .start()
        .await?;
    let api = &server.api;
    let info = api.get_keyspace("default").await?.expect(200).clone();
    assert_eq!(info["length"], 5);
    let token = str_field(api.compat_get_token().await?.expect(200), "key:");
    assert_eq!(token.chars().count(), 5);
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_file_of_random_bytes_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("random-bytes")?;
    let mut bytes = vec![0u8; 16 * 1024];
    rand::fill(&mut bytes[..]);
    std::fs::write(dir.db(), &bytes)?;
    // Names the file and says it is not a usable database.
    let path = dir.db().display().to_string();
    ensure_refused_untouched(&dir, &[&path, "database"]).await
}

#[tokio::test]
async fn an_sqlite_database_of_another_application_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("foreign")?;
    if sqlite3(
        &dir.db(),
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
         INSERT INTO notes (body) VALUES ('hello');",
    )?
    .is_none()
    {
        return Ok(());
    }
    ensure_refused_untouched(&dir, &["not a keyward database"]).await
}

#[tokio::test]
async fn a_corrupt_database_is_refused_at_start() -> Result<()> {
    // Every page overwritten with garbage after the 100-byte header (and
    // the WAL gone, so nothing can mend them).
    let dir = TempDir::new("corrupt-pages")?;
    keyward_db(&dir).await?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", dir.db().display()));
    }
    let mut bytes = std::fs::read(dir.db())?;
    ensure!(bytes.len() > 100, "the database has more than a header");
    rand::fill(&mut bytes[100..]);
    std::fs::write(dir.db(), &bytes)?;
    let exited = crate::launch(&dir).start_expecting_exit().await?;
    ensure_refused(&exited)?;
    ensure_no_panic(&exited)?;
    ensure!(
        exited.stderr.contains(&dir.db().display().to_string()),
        "stderr names the file: {}",
        exited.stderr
    );

    // Rows that SQLite accepts but keyward cannot make sense of.
    for (tag, sql) in [
        (
            "bad-counter",
            "UPDATE keyspaces SET issued = 'lots' WHERE name = 'default'",
        ),
        (
            "orphan-key",
            "UPDATE keys SET pool = 'nope' WHERE key = (SELECT key FROM keys LIMIT 1)",
        ),
        (
            "foreign-activation",
            "INSERT INTO marks (keyspace, token, activations) VALUES ('default', '!!', '[]')",
        ),
    ] {
        let dir = TempDir::new(tag)?;
        keyward_db(&dir).await?;
        let Some(exited) = refused_after(&dir, sql).await? else {
            return Ok(());
        };
        ensure!(
            exited.stderr.contains(&dir.db().display().to_string()),
            "stderr names the file after {sql}: {}",
            exited.stderr
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_database_from_a_newer_keyward_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("too-new")?;
    keyward_db(&dir).await?;
    if sqlite3(
        &dir.db(),
        "INSERT INTO schema_version (version) VALUES (999)",
    )?
    .is_none()
    {
        return Ok(());
    }
    let exited = crate::launch(&dir).start_expecting_exit().await?;
    ensure_refused(&exited)?;
    ensure_no_panic(&exited)?;
    ensure!(
        exited.stderr.contains("999"),
        "stderr names the schema version found: {}",
        exited.stderr
    );
    // Refusing does not downgrade the file.
    let out = Command::new("sqlite3")
        .arg(dir.db())
        .arg("SELECT max(version) FROM schema_version")
        .output()
        .context("run sqlite3")?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "999");
    Ok(())
}

#[tokio::test]
async fn a_store_path_that_cannot_be_opened_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("unopenable")?;
    let missing = dir.path().join("no").join("such").join("dir").join("k.db");
    let exited = crate::launch_at(&missing, dir.path())
        .start_expecting_exit()
        .await?;
    ensure_refused(&exited)?;
    ensure!(
        exited.stderr.contains(&missing.display().to_string()),
        "stderr names the path: {}",
        exited.stderr
    );
    ensure!(!missing.exists(), "nothing was created");

    // A directory is no database file either.
    let exited = crate::launch_at(dir.path(), dir.path())
        .start_expecting_exit()
        .await?;
    ensure_refused(&exited)?;
    Ok(())
}

#[tokio::test]
async fn hand_edited_rows_that_make_no_sense_are_refused_at_start_naming_the_row() -> Result<()> {
    // One database made by keyward (keys in pool "p" and the "default"
    // keyspace with a token), copied for each edit.
    let template = TempDir::new("rows-template")?;
    keyward_db(&template).await?;
    let one_key = "(SELECT key FROM keys WHERE pool = 'p' LIMIT 1)";
    let cases = [
        (
            "negative-lease-id",
            format!("INSERT INTO leases SELECT pool, key, -3, 0 FROM keys WHERE key = {one_key}"),
            "leases row (pool \"p\"",
            "lease_id -3",
        ),
        (
            "lease-above-last",
            format!(
                "UPDATE pools SET last_lease_id = 7 WHERE name = 'p'; \
                 INSERT INTO leases SELECT pool, key, 8, 0 FROM keys WHERE key = {one_key}"
            ),
            "leases row (pool \"p\"",
            "lease_id 8 is outside 1..=7",
        ),
        (
            "duplicate-lease-id",
            "UPDATE pools SET last_lease_id = 7 WHERE name = 'p'; \
             INSERT INTO leases SELECT pool, key, 5, 0 FROM keys WHERE pool = 'p' LIMIT 2"
                .to_owned(),
            "leases row (pool \"p\"",
            "lease_id 5 is held by another key",
        ),
        (
            "lease-of-unknown-pool",
            "INSERT INTO leases VALUES ('nope', 'abcdefghijKLMNOPQRST', 1, 0)".to_owned(),
            "leases row (pool \"nope\"",
            "no pools row \"nope\"",
        ),
        (
            "lease-of-unknown-key",
            "UPDATE pools SET last_lease_id = 1 WHERE name = 'p'; \
             INSERT INTO leases VALUES ('p', 'abcdefghijKLMNOPQRST', 1, 0)"
                .to_owned(),
            "leases row (pool \"p\", key \"abcd\"…, lease_id 1)",
            "no keys row",
        ),
        (
            "key-of-unknown-pool",
            format!("UPDATE keys SET pool = 'nope' WHERE key = {one_key}"),
            "keys row (pool \"nope\"",
            "no pools row \"nope\"",
        ),
        (
            "key-with-a-space",
            format!("UPDATE keys SET key = 'abc defghijklmnopqrs' WHERE key = {one_key}"),
            "keys row (pool \"p\", key \"abc \"…)",
            "visible ASCII",
        ),
        (
            "unknown-state",
            format!("UPDATE keys SET state = 'sleeping' WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "state \"sleeping\"",
        ),
        (
            "leased-in-the-keys-row",
            format!("UPDATE keys SET state = 'leased' WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "a lease is a leases row",
        ),
        (
            "cooling-without-its-end",
            format!("UPDATE keys SET state = 'cooling' WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "state cooling needs available_at_ms",
        ),
        (
            "leased-and-disabled",
            format!(
                "UPDATE pools SET last_lease_id = 1 WHERE name = 'p'; \
                 INSERT INTO leases SELECT pool, key, 1, 0 FROM keys WHERE key = {one_key}; \
                 UPDATE keys SET state = 'disabled' WHERE key = {one_key}"
            ),
            "keys row (pool \"p\"",
            "has a leases row but state disabled",
        ),
        (
            "negative-failures",
            format!("UPDATE keys SET failures = -1 WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "failures -1",
        ),
        (
            "labels-of-no-set",
            format!("UPDATE keys SET labels_id = 99 WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "labels_id 99 has no label_sets row",
        ),
        (
            "label-set-breaking-the-rules",
            format!(
                "INSERT INTO label_sets VALUES (5, '{{\"no spaces\": \"x\"}}'); \
                 UPDATE keys SET labels_id = 5 WHERE key = {one_key}"
            ),
            "label_sets row 5",
            "label name \"no spaces\"",
        ),
        (
            "label-set-not-json",
            format!(
                "INSERT INTO label_sets VALUES (6, 'provider=openai'); \
                 UPDATE keys SET labels_id = 6 WHERE key = {one_key}"
            ),
            "label_sets row 6",
            "not a JSON object of strings",
        ),
        (
            "no-max-failures",
            "UPDATE pools SET max_failures = 0 WHERE name = 'p'".to_owned(),
            "pools row \"p\"",
            "max_failures 0",
        ),
        (
            "no-keepalive-neither-0-nor-1",
            "UPDATE pools SET no_keepalive = 2 WHERE name = 'p'".to_owned(),
            "pools row \"p\"",
            "no_keepalive 2",
        ),
        (
            "negative-time",
            format!("UPDATE keys SET alive_until_ms = -5 WHERE key = {one_key}"),
            "keys row (pool \"p\"",
            "alive_until_ms -5",
        ),
        (
            "negative-last-lease-id",
            "UPDATE pools SET last_lease_id = -1 WHERE name = 'p'".to_owned(),
            "pools row \"p\"",
            "last_lease_id -1",
        ),
        (
            "activation-of-unknown-keyspace",
            "INSERT INTO marks (keyspace, token, activations) VALUES ('nope', 'abcd', '[]')"
                .to_owned(),
            "marks row (keyspace \"nope\", token \"abcd\")",
            "no keyspaces row \"nope\"",
        ),
    ];
    for (tag, sql, row, why) in cases {
        let dir = TempDir::new(tag)?;
        std::fs::copy(template.db(), dir.db())?;
        let Some(exited) = refused_after(&dir, &sql).await? else {
            return Ok(());
        };
        let message = without_path(&exited.stderr, &dir.db());
        ensure!(
            exited.stderr.contains(&dir.db().display().to_string())
                && message.contains(row)
                && message.contains(why),
            "after {sql}: stderr names the file, the row {row:?} and why ({why:?}): {}",
            exited.stderr
        );
        // The key itself is a credential: only its first characters show.
        ensure!(
            !message.contains("abcdefghijKLMNOPQRST"),
            "after {sql}: stderr prints a whole key: {message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_wal_left_without_its_database_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("orphan-wal")?;
    let (launch, server) = crate::started_with_keys(&dir).await?;
    // Killed, so the WAL stays; then the main file is deleted.
    server.kill()?;
    let wal = std::path::PathBuf::from(format!("{}-wal", dir.db().display()));
    ensure!(wal.exists(), "a killed server leaves its WAL");
    std::fs::remove_file(dir.db())?;
    let before = std::fs::read(&wal)?;

    let exited = launch.start_expecting_exit().await?;
    ensure_refused(&exited)?;
    ensure!(
        exited.stderr.contains(&format!(
            "{} exists but {} does not",
            wal.display(),
            dir.db().display()
        )),
        "stderr names the WAL and the missing database: {}",
        exited.stderr
    );
    ensure!(!dir.db().exists(), "no new database was created");
    ensure!(std::fs::read(&wal)? == before, "the WAL is left as it was");
    Ok(())
}
