//! The journal's schema and rows, on real files: every field of a key and
//! a pool written by the writer comes back from `open` exactly, and a
//! database made by schema 3 is migrated with its data intact.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{APPLICATION_ID, Loaded, Record, SCHEMA_VERSION, open, start_writer};
use crate::core::{
    Activation, Fingerprint, KeyCursor, KeyLength, KeyState, KeyView, KeyspaceSpec, Labels, Lease,
    MaxActivations, MaxFailures, Name, Outcome, Pool, PoolKey, PoolSettings, Reason, Recovery,
    Secret, Timestamp, TokenCodec, Ttl,
};

/// Start of every scenario: far from 0, so a deadline read back as 0
/// could not pass for a real one.
const T0: u64 = 1_800_000_000_000;

/// When the second quarantine of `quar-key-1` ends: it began at 11,022
/// and lasts twice the 11 s of the first.
const QUARANTINE_END: u64 = 11_022 + 22_000;

/// A fresh directory for one test's database.
fn temp_db(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keyward-sqlite-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir.join("k.db")
}

fn remove(db: &Path) {
    let _ = std::fs::remove_dir_all(db.parent().expect("a parent"));
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn ttl(ms: u64) -> Ttl {
    Ttl::from_millis(ms).expect("a valid TTL")
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("a valid name")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::parse(pairs.iter().copied()).expect("valid labels")
}

fn keys(texts: &[&str]) -> Vec<PoolKey> {
    texts
        .iter()
        .map(|k| PoolKey::parse(k).expect("a valid key"))
        .collect()
}

/// Settings unlike every default, so a column that is not read back
/// shows.
fn settings(no_keepalive: bool) -> PoolSettings {
    PoolSettings {
        lease_ttl: ttl(45_000),
        keepalive_ttl: ttl(3_600_000),
        key_length: KeyLength::new(24).expect("a valid length"),
        recovery: Recovery {
            cooldown: ttl(7_000),
            max_failures: MaxFailures::new(2).expect("a valid count"),
            quarantine: ttl(11_000),
        },
        no_keepalive,
    }
}

/// What `LocalStore` journals for a pool after an operation: its row,
/// then its key changes in order.
/// The codec of the schema-3 rows' keyspace `ks`.
fn v3_codec() -> TokenCodec {
    TokenCodec::new(
        KeyspaceSpec::new("abc", 4).expect("a spec"),
        Secret::from_bytes([0; 32]),
    )
}

fn records(pool_name: &str, pool: &mut Pool, out: &mut Vec<Record>) {
    out.push(Record::Pool {
        name: name(pool_name),
        settings: pool.settings(),
        last_lease_id: pool.last_lease_id(),
    });
    out.extend(pool.drain_changes().into_iter().map(|change| Record::Key {
        pool: name(pool_name),
        change,
    }));
}

/// Opens `db`, writes `records` through the writer thread, and closes it
/// (the writer finishes what is queued before it stops).
fn write(db: &Path, records: Vec<Record>) {
    let (database, _) = open(db).expect("open");
    let (mut journal, _durability) = start_writer(database).expect("start the writer");
    journal.append(records);
    drop(journal);
}

fn reopen(db: &Path) -> Loaded {
    let (database, loaded) = open(db).expect("reopen");
    drop(database);
    loaded
}

/// Every key of `pool` at `now`, in key order.
fn views(pool: &mut Pool, now: Timestamp) -> Vec<KeyView> {
    let mut keys = pool.list(None, KeyCursor::START, 1000, now).keys;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys
}

fn query(db: &Path, sql: &str) -> String {
    let conn = Connection::open(db).expect("open for reading");
    conn.query_row(sql, [], |r| r.get::<_, String>(0))
        .expect("the query answers")
}

/// Pools in every state the core knows, made by the core's own
/// operations with recording on (as `LocalStore` runs them).
fn credential_pools() -> (Vec<(&'static str, Pool)>, Vec<Record>) {
    let mut out = Vec::new();
    let openai = labels(&[("provider", "openai"), ("tier", "paid")]);

    // Cooling: rate limited with the upstream's retry-after and a reason.
    let mut cool = Pool::new(settings(true), true);
    cool.import(keys(&["cool-key-1"]), &openai, at(0))
        .expect("import");
    let lease = cool.lease(at(1), &mut rand::rng()).expect("lease");
    cool.release_with(
        "cool-key-1",
        lease.lease.map(|l| l.id),
        Outcome::RateLimited {
            retry_after: Some(ttl(90_000)),
        },
        Some(Reason::parse("429 from upstream").expect("a reason")),
        at(2),
    )
    .expect("release rate_limited");
    records("cool", &mut cool, &mut out);

    // Quarantined twice in a row: the second time doubled, with the
    // failures counted through the first quarantine.
    let mut quar = Pool::new(settings(true), true);
    quar.import(keys(&["quar-key-1"]), &Labels::default(), at(0))
        .expect("import");
    let fail = |pool: &mut Pool, ms: u64| {
        let lease = pool.lease(at(ms), &mut rand::rng()).expect("lease");
        pool.release_with(
            "quar-key-1",
            lease.lease.map(|l| l.id),
            Outcome::Failed,
            Some(Reason::parse("upstream answered 500").expect("a reason")),
            at(ms + 1),
        )
        .expect("release failed")
    };
    fail(&mut quar, 10);
    assert_eq!(fail(&mut quar, 20).state, KeyState::Quarantined);
    // The first quarantine began at 21 and ends 11 s later.
    let again = fail(&mut quar, 21 + 11_000);
    assert_eq!(
        (again.state, again.quarantines, again.failures),
        (KeyState::Quarantined, 2, 3)
    );
    assert_eq!(again.available_at, Some(at(QUARANTINE_END)));
    records("quar", &mut quar, &mut out);

    // Disabled with a reason, a leased key with labels, a free one without.
    let mut dis = Pool::new(settings(true), true);
    dis.import(keys(&["dis-key-1"]), &openai, at(0))
        .expect("import");
    dis.disable(
        "dis-key-1",
        Some(Reason::parse("revoked by the provider").expect("a reason")),
        at(1),
    )
    .expect("disable");
    dis.import(
        keys(&["dis-key-2", "dis-key-3"]),
        &labels(&[("provider", "anthropic")]),
        at(2),
    )
    .expect("import");
    dis.import(keys(&["dis-key-4"]), &Labels::default(), at(2))
        .expect("import");
    records("dis", &mut dis, &mut out);

    // Keys with keep-alive deadlines, one leased, in a pool whose
    // settings changed to no keep-alive afterwards.
    let mut plain = Pool::new(settings(false), true);
    plain.generate(3, at(0)).expect("generate");
    plain.lease(at(5), &mut rand::rng()).expect("lease");
    plain.set_settings(settings(true));
    records("plain", &mut plain, &mut out);

    let pools = vec![
        ("cool", cool),
        ("quar", quar),
        ("dis", dis),
        ("plain", plain),
    ];
    (pools, out)
}

#[test]
fn every_key_field_and_pool_setting_survives_a_reopen() {
    let db = temp_db("fields");
    let (mut pools, first) = credential_pools();
    // One lease more after the rest, in a batch of its own: a lease
    // writes only the leases table, yet the key reads back leased.
    let dis = &mut pools[2].1;
    let leased = dis.lease(at(40), &mut rand::rng()).expect("lease");
    let mut lease_records = Vec::new();
    records("dis", dis, &mut lease_records);
    write(&db, first);
    write(&db, lease_records);

    let mut loaded = reopen(&db);
    let now = at(40_000);
    for (pool_name, mut pool) in pools {
        let mut back = loaded
            .pools
            .remove(&name(pool_name))
            .unwrap_or_else(|| panic!("pool {pool_name} is back"));
        assert_eq!(back.settings(), pool.settings(), "settings of {pool_name}");
        assert_eq!(back.last_lease_id(), pool.last_lease_id(), "{pool_name}");
        assert_eq!(views(&mut back, now), views(&mut pool, now), "{pool_name}");
        assert_eq!(back.stats(), pool.stats(), "{pool_name}");
    }
    assert!(loaded.pools.is_empty());

    let state = |key: &str| {
        query(
            &db,
            &format!(
                "SELECT s.state || '/' || k.state FROM key_states s JOIN keys k USING (pool, key)
                 WHERE key = '{key}'"
            ),
        )
    };
    assert_eq!(
        state(&leased.key),
        "leased/free",
        "the view shows the lease, the key's row keeps the state it returns to"
    );
    assert_eq!(state("dis-key-1"), "disabled/disabled");
    assert_eq!(state("cool-key-1"), "cooling/cooling");
    assert_eq!(
        query(
            &db,
            "SELECT coalesce(alive_until_ms, 'null') FROM keys WHERE key = 'dis-key-4'"
        ),
        "null",
        "no keep-alive is a NULL deadline"
    );
    remove(&db);
}

#[test]
fn deadlines_read_back_still_fall_due_after_a_reopen() {
    let db = temp_db("due");
    let (_, records) = credential_pools();
    write(&db, records);
    let mut loaded = reopen(&db);
    let cool = loaded.pools.get_mut(&name("cool")).expect("cool");
    let key = cool.get("cool-key-1", at(2 + 90_000 - 1)).expect("the key");
    assert_eq!(key.state, KeyState::Cooling, "cooling until its end");
    let key = cool.get("cool-key-1", at(2 + 90_000)).expect("the key");
    assert_eq!(
        (key.state, key.available_at, key.reason),
        (KeyState::Free, None, None),
        "free at its end, without its reason"
    );
    let quar = loaded.pools.get_mut(&name("quar")).expect("quar");
    let end = QUARANTINE_END;
    assert_eq!(
        quar.get("quar-key-1", at(end - 1)).expect("the key").state,
        KeyState::Quarantined
    );
    let key = quar.get("quar-key-1", at(end)).expect("the key");
    assert_eq!(
        (key.state, key.failures, key.quarantines),
        (KeyState::Free, 3, 2),
        "on probation: failures and the doubling exponent are kept"
    );
    remove(&db);
}

#[test]
fn label_sets_are_stored_once_and_sets_no_key_uses_go_at_the_next_open() {
    let db = temp_db("labels");
    let mut pool = Pool::new(settings(false), true);
    let shared = labels(&[("provider", "openai")]);
    let texts: Vec<String> = (0..100).map(|i| format!("shared-{i:03}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    pool.import(keys(&texts), &shared, at(0)).expect("import");
    pool.import(
        keys(&["lonely-1"]),
        &labels(&[("provider", "other")]),
        at(0),
    )
    .expect("import");
    let mut out = Vec::new();
    records("p", &mut pool, &mut out);
    write(&db, out);
    assert_eq!(query(&db, "SELECT count(*) || '' FROM label_sets"), "2");
    assert_eq!(
        query(&db, "SELECT labels FROM label_sets ORDER BY id LIMIT 1"),
        r#"{"provider":"openai"}"#
    );

    pool.delete("lonely-1", at(1)).expect("delete");
    let mut out = Vec::new();
    records("p", &mut pool, &mut out);
    write(&db, out);
    // The write above opened the database before the delete was written.
    assert_eq!(query(&db, "SELECT count(*) || '' FROM label_sets"), "2");
    let mut loaded = reopen(&db);
    assert_eq!(query(&db, "SELECT count(*) || '' FROM label_sets"), "1");
    let back = loaded.pools.get_mut(&name("p")).expect("p");
    assert_eq!(back.label_sets(), 1);
    assert_eq!(back.stats().total, 100);
    assert_eq!(back.get("shared-042", at(2)).expect("a key").labels, shared);
    remove(&db);
}

/// Schema 3 as keyward 3 left it, kept here as it was: the migration must
/// take a real file of that shape, not one made by today's code.
const V3_SCHEMA: &str = "
    CREATE TABLE schema_version (version INTEGER NOT NULL);
    INSERT INTO schema_version (version) VALUES (1), (2), (3);
    CREATE TABLE pools (
        name TEXT PRIMARY KEY,
        lease_ttl_ms INTEGER NOT NULL,
        keepalive_ttl_ms INTEGER NOT NULL,
        key_length INTEGER NOT NULL,
        last_lease_id INTEGER NOT NULL,
        rows_key TEXT
    ) WITHOUT ROWID;
    CREATE TABLE keys (
        pool TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        alive_until_ms INTEGER NOT NULL,
        PRIMARY KEY (pool, key)
    ) WITHOUT ROWID;
    CREATE TABLE keyspaces (
        name TEXT PRIMARY KEY,
        alphabet TEXT NOT NULL,
        length INTEGER NOT NULL,
        secret BLOB NOT NULL,
        issued TEXT NOT NULL,
        rows_key TEXT
    ) WITHOUT ROWID;
    CREATE TABLE activations (
        keyspace TEXT NOT NULL,
        token TEXT NOT NULL,
        activated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (keyspace, token)
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        pool TEXT NOT NULL,
        key TEXT NOT NULL,
        lease_id INTEGER NOT NULL,
        leased_until_ms INTEGER NOT NULL,
        PRIMARY KEY (pool, key)
    ) WITHOUT ROWID;
    CREATE TABLE reclaim (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('pool', 'keyspace')),
        rows_key TEXT NOT NULL
    );";

/// Rows of a schema-3 database: pool `p` with a free and a leased key,
/// pool `q` filed under `q/1` after an earlier `q` was deleted (its rows
/// still being reclaimed), and a keyspace.
const V3_ROWS: &str = "
    INSERT INTO pools VALUES ('p', 30000, 600000, 20, 7, NULL);
    INSERT INTO keys VALUES ('p', 'AAAAAAAAAAAAAAAAAAAA', 1800000000000, 1800000600000);
    INSERT INTO keys VALUES ('p', 'BBBBBBBBBBBBBBBBBBBB', 1800000000001, 1800000600001);
    INSERT INTO leases VALUES ('p', 'BBBBBBBBBBBBBBBBBBBB', 7, 1800000030000);
    INSERT INTO pools VALUES ('q', 1000, 2000, 12, 0, 'q/1');
    INSERT INTO keys VALUES ('q/1', 'CCCCCCCCCCCC', 1800000000002, 1800000002002);
    INSERT INTO reclaim (kind, rows_key) VALUES ('pool', 'q');
    INSERT INTO keys VALUES ('q', 'DDDDDDDDDDDD', 1700000000000, 1700000002000);
    INSERT INTO keyspaces VALUES ('ks', 'abc', 4, zeroblob(32), '3', NULL);";

#[test]
fn a_schema_3_database_is_migrated_with_its_rows_and_the_new_defaults() {
    let db = temp_db("v3");
    {
        let conn = Connection::open(&db).expect("create");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("WAL");
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("application_id");
        conn.execute_batch(V3_SCHEMA).expect("schema 3");
        conn.execute_batch(V3_ROWS).expect("rows");
        conn.execute(
            "INSERT INTO activations VALUES ('ks', ?1, 1800000000005)",
            [v3_codec().show(1)],
        )
        .expect("an activation");
    }
    let mut loaded = reopen(&db);
    assert_eq!(
        query(&db, "SELECT max(version) || '' FROM schema_version"),
        SCHEMA_VERSION.to_string()
    );
    assert_eq!(SCHEMA_VERSION, 7);

    let mut p = loaded.pools.remove(&name("p")).expect("pool p");
    let defaults = Recovery::default();
    assert_eq!(
        p.settings(),
        PoolSettings {
            lease_ttl: ttl(30_000),
            keepalive_ttl: ttl(600_000),
            key_length: KeyLength::new(20).expect("a length"),
            recovery: defaults,
            no_keepalive: false,
        },
        "the migration's column defaults are Recovery::default()"
    );
    assert_eq!(p.last_lease_id(), 7);
    let now = Timestamp::from_millis(T0 + 10);
    let free = KeyView::new(
        "AAAAAAAAAAAAAAAAAAAA".into(),
        Timestamp::from_millis(T0),
        Timestamp::from_millis(T0 + 600_000),
        None,
    );
    let leased = KeyView::new(
        "BBBBBBBBBBBBBBBBBBBB".into(),
        Timestamp::from_millis(T0 + 1),
        Timestamp::from_millis(T0 + 600_001),
        Some(Lease {
            id: 7,
            until: Timestamp::from_millis(T0 + 30_000),
        }),
    );
    assert_eq!(views(&mut p, now), vec![free, leased]);

    let q = loaded.pools.get_mut(&name("q")).expect("pool q");
    assert_eq!(
        views(q, now)
            .iter()
            .map(|k| k.key.as_str())
            .collect::<Vec<_>>(),
        ["CCCCCCCCCCCC"],
        "rows filed under the new row key only"
    );
    let ks = loaded.keyspaces.get_mut(&name("ks")).expect("keyspace ks");
    assert_eq!(
        (ks.info().issued, ks.info().activated, ks.max_activations()),
        (3, 1, MaxActivations::DEFAULT),
        "a keyspace keeps its counter and one slot per token"
    );
    let token = v3_codec().show(1);
    assert_eq!(
        ks.status(&token).expect("issued").marks.activations,
        [Activation {
            fingerprint: None,
            at: Timestamp::from_millis(T0 + 5)
        }],
        "an old activation is one slot without a fingerprint"
    );

    // The migrated file takes the shop fields: more slots, a batch, marks.
    ks.set_max_activations(MaxActivations::new(3).expect("3 slots"));
    let batch = name("spring");
    let first = ks.issue_many_in(2, Some(&batch)).expect("issue").first;
    let laptop = Fingerprint::parse("laptop 1").expect("a fingerprint");
    let activated = ks
        .activate(&token, Some(&laptop), Timestamp::from_millis(T0 + 6))
        .expect("activate");
    let reason = Reason::parse("refunded").expect("a reason");
    let revoked = ks
        .revoke(&token, Some(reason), Timestamp::from_millis(T0 + 7))
        .expect("revoke");
    assert_eq!(activated.marks.activations.len(), 2);
    let spec = ks.codec().spec().clone();
    write(
        &db,
        vec![
            Record::Keyspace {
                name: name("ks"),
                spec,
                secret: ks.codec().secret().clone(),
                issued: ks.info().issued,
                max_activations: ks.max_activations(),
            },
            Record::Batch {
                keyspace: name("ks"),
                range: ks.range_of(first).expect("a range"),
            },
            Record::Marks {
                keyspace: name("ks"),
                token: token.clone(),
                marks: revoked.marks.clone(),
            },
        ],
    );
    let mut again = reopen(&db);
    let restored = again.keyspaces.remove(&name("ks")).expect("keyspace ks");
    assert_eq!(restored.info(), ks.info());
    assert_eq!(restored.status(&token), Ok(revoked));
    assert_eq!(restored.batch(&batch), ks.batch(&batch));
    assert_eq!(
        query(
            &db,
            "SELECT group_concat(state, ',') FROM (SELECT state FROM key_states WHERE pool = 'p' ORDER BY key)"
        ),
        "free,leased"
    );

    // The migrated file takes every new field.
    let mut pool = Pool::restore(p.settings(), 7, views(&mut p, now), true);
    pool.disable(
        "AAAAAAAAAAAAAAAAAAAA",
        Some(Reason::parse("rotated").expect("a reason")),
        now,
    )
    .expect("disable");
    let mut out = Vec::new();
    records("p", &mut pool, &mut out);
    write(&db, out);
    let mut loaded = reopen(&db);
    let p = loaded.pools.get_mut(&name("p")).expect("pool p");
    assert_eq!(views(p, now), views(&mut pool, now));
    remove(&db);
}
