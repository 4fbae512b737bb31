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
    Activation, BatchRange, Fingerprint, KeyLength, KeyState, KeyView, Keyspace, KeyspaceSpec,
    Labels, Lease, Marks, MaxActivations, MaxFailures, Name, Pool, PoolKey, PoolSettings, Reason,
    Recovery, Revocation, Secret, Timestamp, TokenCodec, Ttl,
};
use crate::store::idempotency::{Answer, Digest, Entry, IdemKey, Recorded, Records, Scope};

/// A pool as read so far: settings, lease-id high-water mark, keys, and
/// the lease ids seen (each may be held by one key only).
struct PoolRows {
    settings: PoolSettings,
    last_lease_id: u64,
    keys: Vec<KeyView>,
    lease_ids: HashSet<u64>,
}

/// The first characters of a pool key, enough to find its row with
/// `key LIKE 'abcd%'` without printing a usable credential: at most 4,
/// and at most half of it (an imported key may be as short as 1).
fn abbrev(key: &str) -> String {
    let n = key.chars().count();
    let head: String = key.chars().take(4.min(n / 2)).collect();
    format!("{head:?}…")
}

/// A label set from its `label_sets.labels` text: a JSON object of
/// strings, within the label rules. O(labels).
fn parse_labels(text: &str) -> Result<Labels, String> {
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|_| "labels is not a JSON object of strings".to_owned())?;
    Labels::parse(map).map_err(|e| e.to_string())
}

/// A millisecond instant as stored; negative ones make no sense.
fn instant(v: i64) -> Option<Timestamp> {
    u64::try_from(v).ok().map(Timestamp::from_millis)
}

/// Reads every table back, refusing rows that make no sense; rows filed in
/// `reclaim` (of deleted pools and keyspaces) are skipped. Also returns
/// what each pool's and keyspace's rows are filed under, for the writer,
/// and the ids of the label sets no live key uses. O(rows): one pass over
/// each table (keys joined to their lease by primary key), each distinct
/// label set parsed once.
pub(super) fn load(
    conn: &Connection,
    path: &Path,
) -> Result<(Loaded, RowKeys, Vec<i64>), OpenError> {
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
                coalesce(rows_key, name), cooldown_ms, max_failures, quarantine_ms, no_keepalive
             FROM pools",
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
        let max_failures: i64 = row.get(7).map_err(sql)?;
        let no_keepalive: i64 = row.get(9).map_err(sql)?;
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
            recovery: Recovery {
                cooldown: ttl(6, "cooldown_ms")?,
                max_failures: u64::try_from(max_failures)
                    .ok()
                    .and_then(MaxFailures::new)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "pools row {name:?}: max_failures {max_failures} (must be 1 to 1000)"
                        ))
                    })?,
                quarantine: ttl(8, "quarantine_ms")?,
            },
            no_keepalive: match no_keepalive {
                0 => false,
                1 => true,
                v => {
                    return Err(corrupt(format!(
                        "pools row {name:?}: no_keepalive {v} (must be 0 or 1)"
                    )));
                }
            },
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

    // Label sets as stored; each is parsed on its first use, and those no
    // live key uses are returned for removal. O(sets).
    let mut label_text: HashMap<i64, String> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, labels FROM label_sets")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        label_text.insert(row.get(0).map_err(sql)?, row.get(1).map_err(sql)?);
    }
    drop(rows);
    drop(stmt);
    let mut label_sets: HashMap<i64, Labels> = HashMap::new();

    let mut stmt = conn
        .prepare(
            "SELECT k.pool, k.key, k.created_at_ms, k.alive_until_ms, l.lease_id, l.leased_until_ms,
                k.state, k.available_at_ms, k.reason, k.failures, k.quarantines, k.labels_id
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
        if let Err(e) = PoolKey::parse(&key) {
            return Err(corrupt(format!("{}: {e}", at("keys"))));
        }
        let time = |i: usize, column: &str| -> Result<Option<Timestamp>, OpenError> {
            let v: Option<i64> = row.get(i).map_err(sql)?;
            v.map(|v| {
                instant(v)
                    .ok_or_else(|| corrupt(format!("{}: {column} {v} is negative", at("keys"))))
            })
            .transpose()
        };
        let count = |i: usize, column: &str| -> Result<u32, OpenError> {
            let v: i64 = row.get(i).map_err(sql)?;
            u32::try_from(v).map_err(|_| {
                corrupt(format!(
                    "{}: {column} {v} is outside 0..={}",
                    at("keys"),
                    u32::MAX
                ))
            })
        };
        let created_at = time(2, "created_at_ms")?
            .ok_or_else(|| corrupt(format!("{}: created_at_ms is NULL", at("keys"))))?;
        // NULL: the key has no keep-alive deadline.
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
        let state: String = row.get(6).map_err(sql)?;
        let state = KeyState::parse(&state)
            .filter(|s| *s != KeyState::Leased)
            .ok_or_else(|| {
                corrupt(format!(
                    "{}: state {state:?} (must be free, cooling, quarantined or disabled; \
                     a lease is a leases row)",
                    at("keys")
                ))
            })?;
        let available_at = time(7, "available_at_ms")?;
        let state = match (lease, state, available_at) {
            (Some(_), KeyState::Free, _) => KeyState::Leased,
            (Some(_), state, _) => {
                return Err(corrupt(format!(
                    "{}: the key has a leases row but state {state} (a leased key is free apart \
                     from its lease)",
                    at("keys")
                )));
            }
            (None, KeyState::Cooling | KeyState::Quarantined, None) => {
                return Err(corrupt(format!(
                    "{}: state {state} needs available_at_ms",
                    at("keys")
                )));
            }
            (None, state, _) => state,
        };
        let reason: Option<String> = row.get(8).map_err(sql)?;
        let reason = reason
            .map(|r| Reason::parse(&r).map_err(|e| corrupt(format!("{}: reason: {e}", at("keys")))))
            .transpose()?;
        let failures = count(9, "failures")?;
        let quarantines = count(10, "quarantines")?;
        let labels_id: Option<i64> = row.get(11).map_err(sql)?;
        let labels = match labels_id {
            None => Labels::default(),
            Some(id) => match label_sets.get(&id) {
                Some(labels) => labels.clone(),
                None => {
                    let text = label_text.remove(&id).ok_or_else(|| {
                        corrupt(format!(
                            "{}: labels_id {id} has no label_sets row",
                            at("keys")
                        ))
                    })?;
                    let labels = parse_labels(&text)
                        .map_err(|why| corrupt(format!("label_sets row {id}: {why}")))?;
                    label_sets.insert(id, labels.clone());
                    labels
                }
            },
        };
        entry.keys.push(KeyView {
            key,
            created_at,
            alive_until: alive_until.unwrap_or_default(),
            lease,
            state,
            labels,
            available_at: available_at
                .filter(|_| matches!(state, KeyState::Cooling | KeyState::Quarantined)),
            reason,
            failures,
            quarantines,
            no_keepalive: alive_until.is_none(),
        });
    }
    drop(rows);
    drop(stmt);
    // Whatever was not taken out of `label_text` no live key uses.
    let unused_label_sets: Vec<i64> = label_text.into_keys().collect();

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

    let mut marks: HashMap<String, Vec<(String, Marks)>> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT keyspace, token, activations, revoked_at_ms, reason FROM marks
             WHERE keyspace NOT IN (SELECT rows_key FROM reclaim WHERE kind = 'keyspace')",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let ks: String = row.get(0).map_err(sql)?;
        let token: String = row.get(1).map_err(sql)?;
        let at = format!("marks row (keyspace {ks:?}, token {token:?})");
        let activations: String = row.get(2).map_err(sql)?;
        let activations = parse_activations(&activations)
            .ok_or_else(|| corrupt(format!("{at}: activations {activations:?} are not valid")))?;
        let revoked_at: Option<i64> = row.get(3).map_err(sql)?;
        let reason: Option<String> = row.get(4).map_err(sql)?;
        let reason = reason
            .map(|r| Reason::parse(&r))
            .transpose()
            .map_err(|_| corrupt(format!("{at}: reason is not valid")))?;
        let revoked = revoked_at
            .map(|ms| {
                instant(ms).ok_or_else(|| corrupt(format!("{at}: revoked_at_ms {ms} is negative")))
            })
            .transpose()?
            .map(|at| Revocation { at, reason });
        marks.entry(ks).or_default().push((
            token,
            Marks {
                activations,
                revoked,
            },
        ));
    }
    drop(rows);
    drop(stmt);

    let mut batches: HashMap<String, Vec<BatchRange>> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT keyspace, first, end, name FROM batches
             WHERE keyspace NOT IN (SELECT rows_key FROM reclaim WHERE kind = 'keyspace')",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let ks: String = row.get(0).map_err(sql)?;
        let first: String = row.get(1).map_err(sql)?;
        let end: String = row.get(2).map_err(sql)?;
        let name: String = row.get(3).map_err(sql)?;
        let range = match (first.parse(), end.parse(), Name::parse(&name)) {
            (Ok(first), Ok(end), Ok(name)) => BatchRange { first, end, name },
            _ => {
                return Err(corrupt(format!(
                    "batches row (keyspace {ks:?}, first {first:?}): not a valid range"
                )));
            }
        };
        batches.entry(ks).or_default().push(range);
    }
    drop(rows);
    drop(stmt);
    for ranges in batches.values_mut() {
        ranges.sort_unstable_by_key(|r| r.first);
    }

    let mut keyspaces = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT name, alphabet, length, secret, issued, coalesce(rows_key, name), shape,
                max_activations
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
        let shape: Option<String> = row.get(6).map_err(sql)?;
        let spec = match shape {
            Some(text) => spec
                .with_shape_text(&text)
                .map_err(|e| corrupt(format!("{at}: {e}")))?,
            None => spec,
        };
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
        let max: i64 = row.get(7).map_err(sql)?;
        let max = u64::try_from(max)
            .ok()
            .and_then(MaxActivations::new)
            .ok_or_else(|| corrupt(format!("{at}: max_activations {max} is out of range")))?;
        let restored = Keyspace::restore(
            codec,
            issued,
            max,
            batches.remove(&rows_key).unwrap_or_default(),
            marks.remove(&rows_key).unwrap_or_default(),
        )
        .map_err(|e| corrupt(format!("{at}: {e}")))?;
        row_keys.keyspaces.insert(ks.clone(), rows_key);
        keyspaces.insert(ks, restored);
    }
    // Marks and batches left over belong to no keyspace.
    if let Some((ks, tokens)) = marks.into_iter().next() {
        let token = tokens.first().map(|t| t.0.as_str()).unwrap_or_default();
        return Err(corrupt(format!(
            "marks row (keyspace {ks:?}, token {token:?}): no keyspaces row {ks:?}"
        )));
    }
    if let Some(ks) = batches.into_keys().next() {
        return Err(corrupt(format!(
            "batches row (keyspace {ks:?}): no keyspaces row {ks:?}"
        )));
    }
    row_keys.reclaiming = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM reclaim)", [], |r| r.get(0))
        .map_err(sql)?;
    let (idem, idem_replaced) = load_idempotency(conn, &sql, &corrupt)?;
    Ok((
        Loaded {
            pools,
            keyspaces,
            idem,
            idem_replaced,
        },
        row_keys,
        unused_label_sets,
    ))
}

/// The idempotency records, expired ones included (the reaper removes
/// them; a lookup never answers one), and the numbers of rows a later
/// record of the same key replaced (to delete). O(records).
fn load_idempotency(
    conn: &Connection,
    sql: &dyn Fn(rusqlite::Error) -> OpenError,
    corrupt: &dyn Fn(String) -> OpenError,
) -> Result<(Records, Vec<u64>), OpenError> {
    let mut records = Records::default();
    let mut replaced = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT id, scope, key, digest, status, body, expires_at_ms FROM idempotency
             ORDER BY id",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let id: i64 = row.get(0).map_err(sql)?;
        let scope: String = row.get(1).map_err(sql)?;
        let key: String = row.get(2).map_err(sql)?;
        let digest: Vec<u8> = row.get(3).map_err(sql)?;
        let status: i64 = row.get(4).map_err(sql)?;
        let body: Vec<u8> = row.get(5).map_err(sql)?;
        let expires_at: i64 = row.get(6).map_err(sql)?;
        let bad = || corrupt(format!("idempotency row {id}"));
        let entry = Entry {
            id: u64::try_from(id).map_err(|_| bad())?,
            digest: Digest::from_bytes(&digest).ok_or_else(bad)?,
            answer: Answer::ready(Recorded {
                status: u16::try_from(status).map_err(|_| bad())?,
                body: body.into(),
            }),
            expires_at: Timestamp::from_millis(u64::try_from(expires_at).map_err(|_| bad())?),
        };
        let scope = Scope::from_text(&scope).ok_or_else(bad)?;
        let key = IdemKey::parse(key.as_bytes()).map_err(|_| bad())?;
        // Rows come in number order, so a later record of the same key
        // (its older row not yet deleted) replaces the older.
        replaced.extend(records.insert(scope, key, entry));
    }
    Ok((records, replaced))
}

/// A token's activations as `marks.activations` holds them: a JSON array
/// of `[fingerprint or null, at_ms]`, oldest first. O(m).
pub(super) fn activations_json(activations: &[Activation]) -> String {
    let rows: Vec<(Option<&str>, u64)> = activations
        .iter()
        .map(|a| {
            (
                a.fingerprint.as_ref().map(Fingerprint::as_str),
                a.at.as_millis(),
            )
        })
        .collect();
    serde_json::to_string(&rows).expect("strings and numbers serialize")
}

/// Reads [`activations_json`] back; `None` unless every entry is valid.
fn parse_activations(text: &str) -> Option<Vec<Activation>> {
    let rows: Vec<(Option<String>, u64)> = serde_json::from_str(text).ok()?;
    rows.into_iter()
        .map(|(fingerprint, at)| {
            Some(Activation {
                fingerprint: fingerprint
                    .map(|f| Fingerprint::parse(&f))
                    .transpose()
                    .ok()?,
                at: Timestamp::from_millis(at),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::abbrev;

    #[test]
    fn an_error_names_at_most_4_characters_and_half_of_a_key() {
        assert_eq!(abbrev("abcdefghijKLMNOPQRST"), "\"abcd\"…");
        assert_eq!(abbrev("sk-12"), "\"sk\"…");
        assert_eq!(abbrev("x"), "\"\"…");
    }
}
