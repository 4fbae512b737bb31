//! Reading a database back at start-up: every pool, key, lease, keyspace
//! and activation, O(rows).
//!
//! keyward only ever writes rows that make sense, so a row that does not
//! was edited by hand or damaged, and guessing what it meant could hand out
//! a lease id or a token twice. Every such row stops the start with
//! [`OpenError::Corrupt`] naming its table and the row. A pool key is
//! named by its first characters only: keys are credentials, and the
//! error goes to the logs.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::{Loaded, OpenError, RowKeys};
use crate::core::{
    KeyLength, KeyView, Keyspace, KeyspaceSpec, Lease, Name, Pool, PoolSettings, Secret, Timestamp,
    TokenCodec, Ttl,
};

/// A pool as read so far: settings, lease-id high-water mark, keys, and
/// the lease ids seen (each may be held by one key only).
struct PoolRows {
    settings: PoolSettings,
    last_lease_id: u64,
    keys: Vec<KeyView>,
    lease_ids: HashSet<u64>,
}

/// The first characters of a pool key, enough to find its row with
/// `key LIKE 'abcd%'` without printing a usable credential.
fn abbrev(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    if head.len() < key.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// A millisecond instant as stored; negative ones make no sense.
fn instant(v: i64) -> Option<Timestamp> {
    u64::try_from(v).ok().map(Timestamp::from_millis)
}

/// Reads every table back, refusing rows that make no sense; rows filed in
/// `reclaim` (of deleted pools and keyspaces) are skipped. Also returns
/// what each pool's and keyspace's rows are filed under, for the writer.
pub(super) fn load(conn: &Connection, path: &Path) -> Result<(Loaded, RowKeys), OpenError> {
    let sql = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let corrupt = |what: String| OpenError::Corrupt {
        path: path.to_owned(),
        what,
    };

    let mut pools: HashMap<Name, PoolRows> = HashMap::new();
    let mut row_keys = RowKeys::default();
    // rows_key → pool name, to file each key row under its pool.
    let mut pool_of: HashMap<String, Name> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT name, lease_ttl_ms, keepalive_ttl_ms, key_length, last_lease_id,
                coalesce(rows_key, name) FROM pools",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let name: String = row.get(0).map_err(sql)?;
        let pool = Name::parse(&name)
            .map_err(|_| corrupt(format!("pools row {name:?}: not a valid pool name")))?;
        let ttl = |i: usize, column: &str| -> Result<Ttl, OpenError> {
            let v: i64 = row.get(i).map_err(sql)?;
            u64::try_from(v)
                .ok()
                .and_then(Ttl::from_millis)
                .ok_or_else(|| corrupt(format!("pools row {name:?}: {column} {v}")))
        };
        let key_length: i64 = row.get(3).map_err(sql)?;
        let settings = PoolSettings {
            lease_ttl: ttl(1, "lease_ttl_ms")?,
            keepalive_ttl: ttl(2, "keepalive_ttl_ms")?,
            key_length: u64::try_from(key_length)
                .ok()
                .and_then(KeyLength::new)
                .ok_or_else(|| {
                    corrupt(format!(
                        "pools row {name:?}: key_length {key_length} (must be 8 to 128)"
                    ))
                })?,
            recovery: crate::core::Recovery::default(),
            no_keepalive: false,
        };
        let last: i64 = row.get(4).map_err(sql)?;
        let last_lease_id = u64::try_from(last).map_err(|_| {
            corrupt(format!(
                "pools row {name:?}: last_lease_id {last} is negative"
            ))
        })?;
        let rows_key: String = row.get(5).map_err(sql)?;
        pool_of.insert(rows_key.clone(), pool.clone());
        row_keys.pools.insert(pool.clone(), rows_key);
        pools.insert(
            pool,
            PoolRows {
                settings,
                last_lease_id,
                keys: Vec::new(),
                lease_ids: HashSet::new(),
            },
        );
    }
    drop(rows);
    drop(stmt);

    let mut stmt = conn
        .prepare(
            "SELECT k.pool, k.key, k.created_at_ms, k.alive_until_ms, l.lease_id, l.leased_until_ms
             FROM keys k LEFT JOIN leases l ON l.pool = k.pool AND l.key = k.key
             WHERE k.pool NOT IN (SELECT rows_key FROM reclaim WHERE kind = 'pool')",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let pool: String = row.get(0).map_err(sql)?;
        let key: String = row.get(1).map_err(sql)?;
        let at = |table: &str| format!("{table} row (pool {pool:?}, key {})", abbrev(&key));
        let entry = pool_of
            .get(&pool)
            .and_then(|n| pools.get_mut(n))
            .ok_or_else(|| corrupt(format!("{}: no pools row {pool:?}", at("keys"))))?;
        let length_ok = u64::try_from(key.len()).ok().and_then(KeyLength::new);
        if length_ok.is_none() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(corrupt(format!(
                "{}: a key is 8 to 128 characters of A-Za-z0-9",
                at("keys")
            )));
        }
        let time = |i: usize, column: &str| -> Result<Timestamp, OpenError> {
            let v: i64 = row.get(i).map_err(sql)?;
            instant(v).ok_or_else(|| corrupt(format!("{}: {column} {v} is negative", at("keys"))))
        };
        let created_at = time(2, "created_at_ms")?;
        let alive_until = time(3, "alive_until_ms")?;
        let lease_id: Option<i64> = row.get(4).map_err(sql)?;
        let leased_until: Option<i64> = row.get(5).map_err(sql)?;
        let lease = match (lease_id, leased_until) {
            (None, None) => None,
            (Some(id), Some(until)) => {
                let last = entry.last_lease_id;
                let id = u64::try_from(id)
                    .ok()
                    .filter(|id| (1..=last).contains(id))
                    .ok_or_else(|| {
                        corrupt(format!(
                            "{}: lease_id {id} is outside 1..={last} (1 to the pool's last_lease_id)",
                            at("leases")
                        ))
                    })?;
                if !entry.lease_ids.insert(id) {
                    return Err(corrupt(format!(
                        "{}: lease_id {id} is held by another key of the pool too",
                        at("leases")
                    )));
                }
                let until = instant(until).ok_or_else(|| {
                    corrupt(format!(
                        "{}: leased_until_ms {until} is negative",
                        at("leases")
                    ))
                })?;
                Some(Lease { id, until })
            }
            _ => {
                return Err(corrupt(format!(
                    "{}: lease_id and leased_until_ms must both be set",
                    at("leases")
                )));
            }
        };
        entry
            .keys
            .push(KeyView::new(key, created_at, alive_until, lease));
    }
    drop(rows);
    drop(stmt);

    // A lease whose key is gone. O(leases · log keys): the leases table is
    // as small as the number of leased keys.
    let orphan: Option<(String, String, i64)> = conn
        .query_row(
            "SELECT l.pool, l.key, l.lease_id FROM leases l
             WHERE NOT EXISTS (SELECT 1 FROM keys k WHERE k.pool = l.pool AND k.key = l.key)
             AND l.pool NOT IN (SELECT rows_key FROM reclaim WHERE kind = 'pool')
             LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    if let Some((pool, key, id)) = orphan {
        let known = pool_of.contains_key(&pool);
        let missing = if known {
            "no keys row for its key".to_owned()
        } else {
            format!("no pools row {pool:?}")
        };
        return Err(corrupt(format!(
            "leases row (pool {pool:?}, key {}, lease_id {id}): {missing}",
            abbrev(&key)
        )));
    }

    let pools = pools
        .into_iter()
        .map(|(name, p)| {
            let pool = Pool::restore(p.settings, p.last_lease_id, p.keys, true);
            (name, pool)
        })
        .collect();

    let mut activations: HashMap<String, Vec<(String, Timestamp)>> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT keyspace, token, activated_at_ms FROM activations
             WHERE keyspace NOT IN (SELECT rows_key FROM reclaim WHERE kind = 'keyspace')",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let ks: String = row.get(0).map_err(sql)?;
        let token: String = row.get(1).map_err(sql)?;
        let at: i64 = row.get(2).map_err(sql)?;
        let at = instant(at).ok_or_else(|| {
            corrupt(format!(
                "activations row (keyspace {ks:?}, token {token:?}): activated_at_ms {at} is negative"
            ))
        })?;
        activations.entry(ks).or_default().push((token, at));
    }
    drop(rows);
    drop(stmt);

    let mut keyspaces = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT name, alphabet, length, secret, issued, coalesce(rows_key, name)
             FROM keyspaces",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let name: String = row.get(0).map_err(sql)?;
        let at = format!("keyspaces row {name:?}");
        let ks =
            Name::parse(&name).map_err(|_| corrupt(format!("{at}: not a valid keyspace name")))?;
        let alphabet: String = row.get(1).map_err(sql)?;
        let length: i64 = row.get(2).map_err(sql)?;
        let length = u32::try_from(length)
            .map_err(|_| corrupt(format!("{at}: length {length} is out of range")))?;
        let spec =
            KeyspaceSpec::new(&alphabet, length).map_err(|e| corrupt(format!("{at}: {e}")))?;
        let secret: Vec<u8> = row.get(3).map_err(sql)?;
        let secret: [u8; 32] = secret.try_into().map_err(|s: Vec<u8>| {
            corrupt(format!("{at}: secret of {} bytes (must be 32)", s.len()))
        })?;
        let issued: String = row.get(4).map_err(sql)?;
        let issued: u128 = issued
            .parse()
            .map_err(|_| corrupt(format!("{at}: issued {issued:?} is not a counter")))?;
        let codec = TokenCodec::new(spec, Secret::from_bytes(secret));
        let rows_key: String = row.get(5).map_err(sql)?;
        let restored = Keyspace::restore(
            codec,
            issued,
            activations.remove(&rows_key).unwrap_or_default(),
        )
        .map_err(|e| corrupt(format!("{at}: {e}")))?;
        row_keys.keyspaces.insert(ks.clone(), rows_key);
        keyspaces.insert(ks, restored);
    }
    // Activations left over belong to no keyspace.
    if let Some((ks, tokens)) = activations.into_iter().next() {
        let token = tokens.first().map(|t| t.0.as_str()).unwrap_or_default();
        return Err(corrupt(format!(
            "activations row (keyspace {ks:?}, token {token:?}): no keyspaces row {ks:?}"
        )));
    }
    row_keys.reclaiming = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM reclaim)", [], |r| r.get(0))
        .map_err(sql)?;
    Ok((Loaded { pools, keyspaces }, row_keys))
}
