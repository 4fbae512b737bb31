//! Reading script replies: an array read field by field into domain types,
//! and name lists. Anything Redis sends that does not fit (a hand-edited
//! key, another program's data) becomes `Unavailable`, never a panic.

use redis::Value;

use super::scripts::{Code, code_of};
use super::unavailable;
use crate::core::{
    Expired, KeyLength, KeyView, KeyspaceSpec, Lease, Name, PoolSettings, PoolStats, Secret,
    Timestamp, TokenCodec, Ttl,
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

    fn ttl(&mut self) -> Result<Ttl, StoreError> {
        Ttl::from_millis(self.u64()?).ok_or_else(|| unavailable("stored TTL out of range"))
    }

    /// `{lease_ttl, keepalive_ttl, key_length, total, free, purged_keys,
    /// expired_leases}`.
    pub(super) fn pool_state(&mut self) -> Result<(PoolSettings, PoolStats, Expired), StoreError> {
        let settings = PoolSettings {
            lease_ttl: self.ttl()?,
            keepalive_ttl: self.ttl()?,
            key_length: KeyLength::new(self.u64()?)
                .ok_or_else(|| unavailable("stored key length out of range"))?,
            recovery: crate::core::Recovery::default(),
            no_keepalive: false,
        };
        let total = self.u64()?;
        let free = self.u64()?;
        let stats = PoolStats {
            total,
            free,
            leased: total.saturating_sub(free),
            ..PoolStats::default()
        };
        let expired = Expired {
            keys: self.u64()?,
            leases: self.u64()?,
            ..Expired::default()
        };
        Ok((settings, stats, expired))
    }

    /// `{key, created_at, alive_until, lease_id, leased_until}`.
    pub(super) fn key_view(&mut self) -> Result<KeyView, StoreError> {
        let key = self.text()?;
        let created_at = Timestamp::from_millis(self.u64()?);
        let alive_until = Timestamp::from_millis(self.u64()?);
        let id = self.u64()?;
        let until = Timestamp::from_millis(self.u64()?);
        Ok(KeyView::new(
            key,
            created_at,
            alive_until,
            (id != 0).then_some(Lease { id, until }),
        ))
    }

    /// `{keys purged, leases ended}`.
    pub(super) fn expired(&mut self) -> Result<Expired, StoreError> {
        Ok(Expired {
            keys: self.u64()?,
            leases: self.u64()?,
            ..Expired::default()
        })
    }

    /// `{alphabet, length, secret, issued, activated}` as a codec and
    /// counts.
    pub(super) fn keyspace_def(&mut self) -> Result<(TokenCodec, u128, u128), StoreError> {
        let alphabet = self.text()?;
        let length: u32 = self
            .text()?
            .parse()
            .map_err(|_| unavailable("stored keyspace length is not a number"))?;
        let secret = secret_from_hex(&self.text()?)
            .ok_or_else(|| unavailable("stored keyspace secret is not 64 hex digits"))?;
        let issued = u128::from(self.u64()?);
        let activated = u128::from(self.u64()?);
        let spec = KeyspaceSpec::new(&alphabet, length)
            .map_err(|e| unavailable(format!("stored keyspace definition: {e}")))?;
        Ok((TokenCodec::new(spec, secret), issued, activated))
    }
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
