//! Paged listings: the one query extractor ([`PageQuery`]: `limit` and
//! `cursor`) and the cursor's encoding, shared by every listing route.
//!
//! A cursor is the base64url text (no padding) of the last name a page
//! returned; the next page starts strictly after that name. It is opaque to
//! clients: they pass back what `next_cursor` gave them. Which items follow
//! a name is the store's business ([`PageRequest`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use utoipa::IntoParams;

use super::ApiError;
use crate::core::KeyState;
use crate::store::{PageLimit, PageRequest};

/// `?limit=N&cursor=C` of a listing route; anything else in the query is
/// 400 `invalid_query`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Most items in the page: 1 to 1000, default 100
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: PageLimit,
    /// `next_cursor` of the previous page; absent for the first page
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The store's view of this page.
    pub(crate) fn request(self) -> PageRequest {
        PageRequest {
            after: self.cursor,
            limit: self.limit,
        }
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidQuery(msg.into())
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    /// O(length of the query).
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let (page, _) = parse(parts.uri.query().unwrap_or(""), None)?;
        Ok(page)
    }
}

/// `?state=S&limit=N&cursor=C` of `GET /v1/pools/{pool}/keys`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyPageQuery {
    /// Only keys in this state: free, leased, cooling, quarantined or
    /// disabled; absent for every key
    #[param(value_type = Option<super::v1::KeyState>)]
    pub state: Option<KeyState>,
    /// `limit` and `cursor`, documented by [`PageQuery`] itself.
    #[param(ignore)]
    pub page: PageQuery,
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPageQuery {
    type Rejection = ApiError;

    /// O(length of the query).
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let (page, state) = parse(parts.uri.query().unwrap_or(""), Some("state"))?;
        let state = state
            .map(|s| {
                KeyState::parse(s).ok_or_else(|| {
                    invalid("state must be one of free, leased, cooling, quarantined, disabled")
                })
            })
            .transpose()?;
        Ok(Self { state, page })
    }
}

/// Reads `limit`, `cursor` and, if the route takes one, the `extra`
/// parameter (returned as given). O(length of the query).
fn parse<'q>(
    query: &'q str,
    extra: Option<&'static str>,
) -> Result<(PageQuery, Option<&'q str>), ApiError> {
    let (mut limit, mut cursor, mut other) = (None, None, None);
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            _ if Some(name) == extra => &mut other,
            _ => {
                let shown: String = name.chars().take(32).collect();
                let takes = match extra {
                    Some(extra) => format!("{extra}, limit and cursor"),
                    None => "limit and cursor".to_owned(),
                };
                return Err(invalid(format!(
                    "unknown query parameter {shown:?}; this route takes {takes}"
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(invalid(format!("query parameter {name} given twice")));
        }
    }
    let limit = match limit {
        None => PageLimit::DEFAULT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .and_then(PageLimit::new)
            .ok_or_else(|| {
                invalid(format!(
                    "limit must be an integer from 1 to {}",
                    PageLimit::MAX
                ))
            })?,
    };
    let cursor = cursor
        .map(|c| {
            decode_cursor(c).ok_or_else(|| {
                invalid("cursor is not one this server returned; pass next_cursor as given")
            })
        })
        .transpose()?;
    Ok((PageQuery { limit, cursor }, other))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Longest cursor accepted, in characters: the base64 of 256 bytes.
const MAX_CURSOR: usize = 344;

/// The cursor for a page that ended at `last`. O(length).
pub(crate) fn encode_cursor(last: &str) -> String {
    let mut out = String::with_capacity(last.len().div_ceil(3) * 4);
    for chunk in last.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// The text a cursor stands for; `None` if it is not base64url of UTF-8
/// text. O(length).
fn decode_cursor(cursor: &str) -> Option<String> {
    if cursor.is_empty() || cursor.len() > MAX_CURSOR || cursor.len() % 4 == 1 {
        return None;
    }
    let mut bytes = Vec::with_capacity(cursor.len() * 3 / 4);
    for chunk in cursor.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        bytes.extend_from_slice(&full[..chunk.len() - 1]);
    }
    // Only the canonical encoding: re-encoding must give it back.
    let text = String::from_utf8(bytes).ok()?;
    (encode_cursor(&text) == cursor).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_name_it_was_made_from() {
        for name in [
            "a",
            "ab",
            "abc",
            "abcd",
            "pool-1.x_Y",
            "z".repeat(64).as_str(),
        ] {
            assert_eq!(decode_cursor(&encode_cursor(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn a_cursor_that_is_not_base64url_is_refused() {
        for bad in ["", "a", "YW=", "YW+i", "YWJj!", "YR"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
