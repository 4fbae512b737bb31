//! Reading script replies: an array read field by field into domain types,
//! and name lists. Anything Redis sends that does not fit (a hand-edited
//! key, another program's data) becomes `Unavailable`, never a panic.

use std::cell::RefCell;
use std::collections::HashMap;

use redis::Value;

use super::scripts::{Code, code_of};
use super::unavailable;
use crate::core::{
    Activation, Expired, Fingerprint, Imported, KeyLength, KeyState, KeyView, KeyspaceInfo,
    KeyspaceSpec, Labels, Lease, Marks, MaxActivations, MaxFailures, Name, PoolSettings, PoolStats,
    Reason, Recovery, Revocation, Secret, Timestamp, TokenCodec, Ttl,
};
use crate::store::StoreError;

/// A script's array reply, read field by field.
pub(super) struct Reply(std::vec::IntoIter<Value>);

impl Reply {
    /// The reply `value`, which must be an array.
    pub(super) fn new(value: Value) -> Result<Self, StoreError> {
        match value {
            Value::Array(items) => Ok(Self(items.into_iter())),
            other => Err(unavailable(format!("unexpected script reply {other:?}"))),
        }
    }

    /// The next field.
    pub(super) fn next(&mut self) -> Result<Value, StoreError> {
        self.0
            .next()
            .ok_or_else(|| unavailable("script reply too short"))
    }

    /// Whether fields are left.
    pub(super) fn has_more(&self) -> bool {
        self.0.len() > 0
    }

    /// The next field as a reply code.
    pub(super) fn code(&mut self) -> Result<Code, StoreError> {
        code_of(self.int()?)
    }

    /// The next field as an integer (an integer reply or its decimal text).
    pub(super) fn int(&mut self) -> Result<i64, StoreError> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unavailable("script reply: not an integer")),
            other => Err(unavailable(format!(
                "script reply: {other:?} is not an integer"
            ))),
        }
    }

    /// The next field as a non-negative integer.
    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        u64::try_from(self.int()?).map_err(|_| unavailable("script reply: negative number"))
    }

    /// The next field as text.
    pub(super) fn text(&mut self) -> Result<String, StoreError> {
        match self.next()? {
            Value::BulkString(b) => {
                String::from_utf8(b).map_err(|_| unavailable("script reply: not UTF-8"))
            }
            Value::SimpleString(s) => Ok(s),
            Value::Int(n) => Ok(n.to_string()),
            other => Err(unavailable(format!("script reply: {other:?} is not text"))),
        }
    }

    /// The next field's bytes (a recorded reply is not always UTF-8 text
    /// to Redis, so it is read as it is).
    pub(super) fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        match self.next()? {
            Value::BulkString(b) => Ok(b),
            other => Err(unavailable(format!(
                "script reply: {other:?} is not a string"
            ))),
        }
    }

    fn ttl(&mut self) -> Result<Ttl, StoreError> {
        Ttl::from_millis(self.u64()?).ok_or_else(|| unavailable("stored TTL out of range"))
    }

    /// `{lease_ttl, keepalive_ttl, key_length, cooldown, max_failures,
    /// quarantine, no_keepalive, total, free, leased, cooling, quarantined,
    /// disabled, purged_keys, expired_leases, recovered, quarantines}`:
    /// settings, counts, expiry counters and quarantines begun.
    pub(super) fn pool_state(
        &mut self,
    ) -> Result<(PoolSettings, PoolStats, Expired, u64), StoreError> {
        let settings = PoolSettings {
            lease_ttl: self.ttl()?,
            keepalive_ttl: self.ttl()?,
            key_length: KeyLength::new(self.u64()?)
                .ok_or_else(|| unavailable("stored key length out of range"))?,
            recovery: Recovery {
                cooldown: self.ttl()?,
                max_failures: MaxFailures::new(self.u64()?)
                    .ok_or_else(|| unavailable("stored max_failures out of range"))?,
                quarantine: self.ttl()?,
            },
            no_keepalive: self.u64()? == 1,
        };
        let stats = PoolStats {
            total: self.u64()?,
            free: self.u64()?,
            leased: self.u64()?,
            cooling: self.u64()?,
            quarantined: self.u64()?,
            disabled: self.u64()?,
        };
        let expired = Expired {
            keys: self.u64()?,
            leases: self.u64()?,
            recovered: self.u64()?,
        };
        Ok((settings, stats, expired, self.u64()?))
    }

    /// `{key, created_at, alive_until, lease_id, leased_until, state,
    /// available_at or "", reason or "", failures, quarantines, labels or
    /// ""}`; an `alive_until` of 0 is a key without keep-alive.
    pub(super) fn key_view(&mut self) -> Result<KeyView, StoreError> {
        let key = self.text()?;
        let created_at = Timestamp::from_millis(self.u64()?);
        let alive = self.u64()?;
        let id = self.u64()?;
        let until = Timestamp::from_millis(self.u64()?);
        let state = KeyState::parse(&self.text()?)
            .ok_or_else(|| unavailable("stored key state unknown"))?;
        let available_at = self.optional_u64()?.map(Timestamp::from_millis);
        let reason = match self.text()? {
            r if r.is_empty() => None,
            r => Some(Reason::parse(&r).map_err(|_| unavailable("stored reason invalid"))?),
        };
        let failures = u32::try_from(self.u64()?).unwrap_or(u32::MAX);
        let quarantines = u32::try_from(self.u64()?).unwrap_or(u32::MAX);
        let labels = labels_from_text(&self.text()?)?;
        Ok(KeyView {
            key,
            created_at,
            alive_until: Timestamp::from_millis(alive),
            lease: (state == KeyState::Leased).then_some(Lease { id, until }),
            state,
            labels,
            available_at: available_at
                .filter(|_| matches!(state, KeyState::Cooling | KeyState::Quarantined)),
            reason,
            failures,
            quarantines,
            no_keepalive: alive == 0,
        })
    }

    /// The next field as a number, or `None` for "".
    pub(super) fn optional_u64(&mut self) -> Result<Option<u64>, StoreError> {
        let text = self.text()?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| unavailable("script reply: not a number"))
    }

    /// `{keys purged, leases ended, cooldowns and quarantines ended}`.
    pub(super) fn expired(&mut self) -> Result<Expired, StoreError> {
        Ok(Expired {
            keys: self.u64()?,
            leases: self.u64()?,
            recovered: self.u64()?,
        })
    }

    /// `{alphabet, length, secret, issued, activated, shape,
    /// max_activations, revoked}` as a codec and counts.
    pub(super) fn keyspace_def(&mut self) -> Result<(TokenCodec, KeyspaceInfo), StoreError> {
        let alphabet = self.text()?;
        let length: u32 = self
            .text()?
            .parse()
            .map_err(|_| unavailable("stored keyspace length is not a number"))?;
        let secret = secret_from_hex(&self.text()?)
            .ok_or_else(|| unavailable("stored keyspace secret is not 64 hex digits"))?;
        let issued = u128::from(self.u64()?);
        let activated = u128::from(self.u64()?);
        let shape = self.text()?;
        let max_activations = MaxActivations::new(self.u64()?)
            .ok_or_else(|| unavailable("stored max_activations is out of range"))?;
        let revoked = u128::from(self.u64()?);
        let stored = |e| unavailable(format!("stored keyspace definition: {e}"));
        let mut spec = KeyspaceSpec::new(&alphabet, length).map_err(stored)?;
        if !shape.is_empty() {
            spec = spec.with_shape_text(&shape).map_err(stored)?;
        }
        let capacity = spec.capacity();
        let info = KeyspaceInfo {
            capacity,
            issued,
            activated,
            revoked,
            remaining: capacity.saturating_sub(issued),
            max_activations,
        };
        Ok((TokenCodec::new(spec, secret), info))
    }

    /// A token script's `{marks JSON or "", batch or ""}`.
    pub(super) fn token_marks(&mut self) -> Result<(Marks, Option<Name>), StoreError> {
        let text = self.text()?;
        let marks = if text.is_empty() {
            Marks::default()
        } else {
            parse_marks(&text).ok_or_else(|| unavailable("stored token marks are not valid"))?
        };
        let batch = self.text()?;
        let batch = if batch.is_empty() {
            None
        } else {
            Some(Name::parse(&batch).map_err(|_| unavailable("stored batch name is not valid"))?)
        };
        Ok((marks, batch))
    }
}

/// The marks JSON the keyspace scripts keep: `{"a": [[at_ms],
/// [at_ms, fingerprint]], "r": [at_ms, reason?]}`, times as decimal text.
fn parse_marks(text: &str) -> Option<Marks> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        a: serde_json::Value,
        #[serde(default)]
        r: Option<Vec<String>>,
    }
    let stored: Stored = serde_json::from_str(text).ok()?;
    // cjson writes an empty list as `{}`: no activations either way.
    let slots: Vec<Vec<String>> = match stored.a {
        serde_json::Value::Array(_) => serde_json::from_value(stored.a).ok()?,
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(o) if o.is_empty() => Vec::new(),
        _ => return None,
    };
    let at = |s: &String| s.parse().ok().map(Timestamp::from_millis);
    let activations = slots
        .iter()
        .map(|slot| {
            Some(Activation {
                at: at(slot.first()?)?,
                fingerprint: match slot.get(1) {
                    Some(f) => Some(Fingerprint::parse(f).ok()?),
                    None => None,
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let revoked = match stored.r {
        Some(r) => Some(Revocation {
            at: at(r.first()?)?,
            reason: match r.get(1) {
                Some(reason) => Some(Reason::parse(reason).ok()?),
                None => None,
            },
        }),
        None => None,
    };
    Some(Marks {
        activations,
        revoked,
    })
}

/// Labels as the scripts store them: a JSON object, "" for none.
/// An `add` reply after its due score: `{created_at, alive_until, added
/// count, added key..., existing key...}`, the added keys as views
/// carrying `labels`.
pub(super) fn added(reply: &mut Reply, labels: &Labels) -> Result<Imported, StoreError> {
    let created_at = Timestamp::from_millis(reply.u64()?);
    let alive = reply.u64()?;
    let added = reply.u64()?;
    let mut done = Imported::default();
    for _ in 0..added {
        let mut view = KeyView::new(
            reply.text()?,
            created_at,
            Timestamp::from_millis(alive),
            None,
        );
        view.labels = labels.clone();
        view.no_keepalive = alive == 0;
        done.added.push(view);
    }
    while reply.has_more() {
        done.existing.push(reply.text()?);
    }
    Ok(done)
}

/// A reply recorded for an idempotency key, as a replay hands it over
/// (`idempotency.lua` turns the stored MessagePack into this): each
/// element as `LEN:TEXT`, back to back; the array of those texts, as
/// the script first answered it (numbers as their decimal text, which
/// [`Reply`] reads as numbers). O(length).
pub(super) fn decode_record(mut rest: &[u8]) -> Result<Value, StoreError> {
    let bad = || unavailable("a recorded reply is not in the recorded form");
    let mut items = Vec::new();
    while !rest.is_empty() {
        let colon = rest.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        let body = rest.get(colon + 1..colon + 1 + len).ok_or_else(bad)?;
        items.push(Value::BulkString(body.to_vec()));
        rest = &rest[colon + 1 + len..];
    }
    Ok(Value::Array(items))
}

pub(super) fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Most label sets [`labels_from_text`] keeps per thread; it forgets them
/// all when full.
const LABEL_SETS_KEPT: usize = 256;

thread_local! {
    /// Label sets read lately, by their stored text. A pool's keys share
    /// a few sets, and reading one anew (JSON, then validation) on every
    /// reply was about 2 % of keyward's CPU under Redis lease+release.
    static LABEL_SETS: RefCell<HashMap<String, Labels>> = RefCell::new(HashMap::new());
}

/// The labels [`labels_text`] wrote. O(1) for a set read lately on this
/// thread, else O(length).
fn labels_from_text(text: &str) -> Result<Labels, StoreError> {
    if text.is_empty() {
        return Ok(Labels::default());
    }
    if let Some(labels) = LABEL_SETS.with_borrow(|kept| kept.get(text).cloned()) {
        return Ok(labels);
    }
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|_| unavailable("stored labels are not a JSON object of strings"))?;
    let labels = Labels::parse(map).map_err(|_| unavailable("stored labels invalid"))?;
    LABEL_SETS.with_borrow_mut(|kept| {
        if kept.len() >= LABEL_SETS_KEPT {
            kept.clear();
        }
        kept.insert(text.to_owned(), labels.clone());
    });
    Ok(labels)
}

fn secret_from_hex(hex: &str) -> Option<Secret> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Secret::from_bytes(bytes))
}

/// The pool or keyspace names of an array reply; anything that is not a
/// valid name (written by hand into Redis) is skipped.
pub(super) fn names_of(value: Value) -> Result<Vec<Name>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items
            .into_iter()
            .filter_map(|v| match v {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                _ => None,
            })
            .filter_map(|n| Name::parse(&n).ok())
            .collect()),
        other => Err(unavailable(format!("unexpected name list {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::scripts::secret_hex;

    #[test]
    fn a_secret_survives_its_trip_through_hex() {
        let secret = Secret::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        let back = secret_from_hex(&secret_hex(&secret)).expect("64 hex digits");
        assert_eq!(back.as_bytes(), secret.as_bytes());
        assert!(secret_from_hex("zz").is_none());
    }

    #[test]
    fn labels_survive_their_trip_through_text() {
        let labels = Labels::parse([("team", "a \"b\""), ("tier", "")]).expect("valid labels");
        let text = labels_text(&labels);
        assert_eq!(labels_from_text(&text).expect("stored labels"), labels);
        assert_eq!(labels_text(&Labels::default()), "");
        assert_eq!(labels_from_text("").expect("none"), Labels::default());
        assert!(labels_from_text("[1]").is_err());
    }

    #[test]
    fn label_sets_read_again_come_from_the_thread_s_few_kept() {
        let labels = Labels::parse([("tier", "paid")]).expect("valid labels");
        let text = labels_text(&labels);
        assert_eq!(labels_from_text(&text).expect("stored labels"), labels);
        assert_eq!(labels_from_text(&text).expect("kept"), labels);
        assert!(LABEL_SETS.with_borrow(|kept| kept.contains_key(&text)));
        for i in 0..LABEL_SETS_KEPT + 10 {
            let other = Labels::parse([("n", i.to_string())]).expect("valid labels");
            assert_eq!(
                labels_from_text(&labels_text(&other)).expect("stored"),
                other
            );
        }
        assert!(LABEL_SETS.with_borrow(|kept| kept.len()) <= LABEL_SETS_KEPT);
        assert!(
            labels_from_text("{\"n\": 1}").is_err(),
            "a bad set is never kept"
        );
    }

    #[test]
    fn a_reply_reads_its_code_then_its_fields() {
        let value = Value::Array(vec![
            Value::Int(Code::Created as i64),
            Value::BulkString(b"12".to_vec()),
        ]);
        let mut reply = Reply::new(value).expect("an array");
        assert_eq!(reply.code().expect("a code"), Code::Created);
        assert_eq!(reply.u64().expect("a number"), 12);
        assert!(!reply.has_more());
        assert!(reply.text().is_err());
    }
}
