//! What handlers take from a request: path parameters parsed into domain
//! types ([`PoolPath`], [`KeyPath`], [`KeyspacePath`], [`TokenPath`],
//! [`BatchPath`], [`ActivationPath`]) and
//! JSON bodies ([`JsonBody`]), every rejection an [`ApiError`] with the
//! JSON error shape.
//!
//! Each path type is also the OpenAPI description of its parameters
//! (`IntoParams`), so a route names its path shape once, in its
//! `params(...)`, and its handler signature.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use super::ApiError;
use crate::core::{Fingerprint, Name};

/// Path parameters, with rejections (e.g. `%FF`) turned into 400
/// `invalid_path`.
pub(crate) struct PathParts<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParts<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Self(t)),
            Err(e) => Err(ApiError::InvalidPath(e.body_text())),
        }
    }
}

/// `s` as a pool or keyspace name, else 400 `invalid_name` quoting (at
/// most 64 characters of) what was sent.
fn name(s: &str) -> Result<Name, ApiError> {
    Name::parse(s).map_err(|e| {
        let shown: String = s.chars().take(64).collect();
        ApiError::InvalidName(format!("{e}; got {shown:?}"))
    })
}

/// `/v1/pools/{pool}` and the routes under it that name no key.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PoolPath {
    /// Pool name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub pool: Name,
}

/// `/v1/pools/{pool}/keys/{key}` and the routes under it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct KeyPath {
    /// Pool name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub pool: Name,
    /// The key
    pub key: String,
}

/// `/v1/keyspaces/{ks}` and the routes under it that name no token.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct KeyspacePath {
    /// Keyspace name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub ks: Name,
}

/// `/v1/keyspaces/{ks}/tokens/{token}` and the routes under it. The token
/// stays a string: whether it fits the keyspace's alphabet is the store's
/// answer (400 `invalid_token`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TokenPath {
    /// Keyspace name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub ks: Name,
    /// A token of the keyspace
    pub token: String,
}

/// `/v1/keyspaces/{ks}/batches/{batch}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct BatchPath {
    /// Keyspace name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub ks: Name,
    /// Batch name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub batch: Name,
}

/// `/v1/keyspaces/{ks}/tokens/{token}/activations/{fingerprint}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ActivationPath {
    /// Keyspace name: 1-64 of [A-Za-z0-9._-]
    #[param(value_type = String)]
    pub ks: Name,
    /// A token of the keyspace
    pub token: String,
    /// The fingerprint the activation was taken with (percent-encoded):
    /// 1-256 characters, no control characters
    #[param(value_type = String)]
    pub fingerprint: Fingerprint,
}

impl<S: Send + Sync> FromRequestParts<S> for BatchPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts((ks, batch)) =
            PathParts::<(String, String)>::from_request_parts(parts, state).await?;
        Ok(Self {
            ks: name(&ks)?,
            batch: name(&batch)?,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ActivationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts((ks, token, fingerprint)) =
            PathParts::<(String, String, String)>::from_request_parts(parts, state).await?;
        Ok(Self {
            ks: name(&ks)?,
            token,
            fingerprint: Fingerprint::parse(&fingerprint)?,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PoolPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts(pool) = PathParts::<String>::from_request_parts(parts, state).await?;
        Ok(Self { pool: name(&pool)? })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts((pool, key)) =
            PathParts::<(String, String)>::from_request_parts(parts, state).await?;
        Ok(Self {
            pool: name(&pool)?,
            key,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeyspacePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts(ks) = PathParts::<String>::from_request_parts(parts, state).await?;
        Ok(Self { ks: name(&ks)? })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TokenPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParts((ks, token)) =
            PathParts::<(String, String)>::from_request_parts(parts, state).await?;
        Ok(Self {
            ks: name(&ks)?,
            token,
        })
    }
}

/// `/api/…/{token}` of the activation-token service's routes: a token of
/// the `default` keyspace.
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CompatTokenPath {
    /// A token of the default keyspace
    pub token: String,
}

/// A JSON body that may be absent (empty means `T::default()`), read
/// whatever the `Content-Type`, so `curl -d` works too.
///
/// Malformed JSON, and an object that repeats a key (which serde would
/// silently resolve to the last), is `invalid_json`; well-formed JSON of
/// the wrong shape, including `null` for a field (no request field is
/// nullable: leave it out for its default), is the route's own error,
/// chosen by [`BodyError`]. O(body).
pub(crate) struct JsonBody<T>(pub T);

/// How a route names a body of the wrong shape.
pub(crate) trait BodyError {
    /// The error for a body that is JSON but not what the route takes.
    fn wrong_shape(message: String) -> ApiError;
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default + BodyError + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // `reject_oversized` already holds the whole body, within its limit.
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::InvalidJson(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let UniqueKeys(value) = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
        // serde would also read an array by field position; the contract
        // takes objects only.
        let Some(object) = value.as_object() else {
            return Err(T::wrong_shape("the body must be a JSON object".into()));
        };
        // serde reads `null` as an absent `Option`: `{"count": null}` would
        // quietly mean the default.
        let null_field = object
            .iter()
            .find(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone());
        let body = serde_json::from_value(value).map_err(|e| T::wrong_shape(e.to_string()))?;
        match null_field {
            Some(field) => Err(T::wrong_shape(format!(
                "`{field}` must not be null; leave it out for its default"
            ))),
            None => Ok(Self(body)),
        }
    }
}

/// A JSON value read in one pass that fails on an object repeating a key,
/// at any depth (RFC 8259 leaves repeated names to the reader; here they
/// are an error rather than "the last one wins"). serde_json's recursion
/// limit still bounds the nesting.
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(Self)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "the key {shown:?} appears twice in one object"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}
