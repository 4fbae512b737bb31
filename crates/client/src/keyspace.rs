//! [`Keyspace`]: the calls on one keyspace of activation tokens, and the
//! objects they answer with.
//!
//! Formats, batches, revocation and fingerprinted activations are the
//! server's shop-keyspace features; a server without one of them answers
//! those calls with its error (it refuses the unknown body fields or
//! routes).

use std::fmt;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Request};
use crate::error::Result;

/// How tokens are shown: `prefix` + groups of `group` characters joined
/// by `separator`, and with `check` a Luhn mod N check character.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Format {
    /// Characters per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Between groups (the server's default is `-`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Before the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Whether a check character ends the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<bool>,
}

impl Format {
    /// No grouping, no prefix, no check character.
    pub fn new() -> Self {
        Self::default()
    }

    /// Groups of `size` characters joined by `separator`.
    pub fn groups(mut self, size: u32, separator: &str) -> Self {
        self.group = Some(size);
        self.separator = Some(separator.to_owned());
        self
    }

    /// `prefix` before every token.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// A check character at the end, so a mistyped token is refused.
    pub fn check(mut self) -> Self {
        self.check = Some(true);
        self
    }
}

/// The definition of a keyspace: its alphabet (the characters, or a
/// preset name: `digits`, `crockford`, `unambiguous`) and token length,
/// optionally a [`Format`] and how many activations a token allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyspaceSpec {
    alphabet: String,
    length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_activations: Option<u32>,
}

impl KeyspaceSpec {
    /// Tokens of `length` characters of `alphabet`.
    pub fn new(alphabet: &str, length: u32) -> Self {
        Self {
            alphabet: alphabet.to_owned(),
            length,
            format: None,
            max_activations: None,
        }
    }

    /// How tokens are shown.
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Activations per token (1–1000; the server's default is 1).
    pub fn max_activations(mut self, max: u32) -> Self {
        self.max_activations = Some(max);
        self
    }
}

/// A keyspace's definition and counts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct KeyspaceInfo {
    /// The keyspace's name.
    pub name: String,
    /// Its characters.
    pub alphabet: String,
    /// Characters per token (before formatting).
    pub length: u32,
    /// `alphabet^length`.
    pub capacity: u128,
    /// Tokens issued.
    pub issued: u128,
    /// Tokens with at least one activation.
    pub activated: u128,
    /// Tokens left to issue.
    pub remaining: u128,
    /// The display format, if one was given.
    #[serde(default)]
    pub format: Option<Format>,
    /// Activations per token, if the server reports it.
    #[serde(default)]
    pub max_activations: Option<u32>,
    /// Tokens revoked, if the server reports it.
    #[serde(default)]
    pub revoked: Option<u128>,
}

/// One issued token and how many are left. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Issued {
    /// The token, in its display form.
    pub token: String,
    /// Tokens left to issue.
    pub remaining: u128,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"<redacted>")
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Tokens issued in one request. `Debug` leaves the tokens out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct IssuedMany {
    /// The tokens, in their display form.
    pub tokens: Vec<String>,
    /// Tokens left to issue.
    pub remaining: u128,
}

impl fmt::Debug for IssuedMany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedMany")
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Where a token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Issued, no activation.
    Issued,
    /// At least one activation.
    Activated,
    /// Revoked for good.
    Revoked,
}

/// One activation slot a token holds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Activation {
    /// The fingerprint it was taken with, if any.
    pub fingerprint: Option<String>,
    /// When.
    pub activated_at: String,
}

/// The token object. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Token {
    /// The token, in its display form.
    pub token: String,
    /// Its state.
    pub state: TokenState,
    /// The first activation, if any.
    pub activated_at: Option<String>,
    /// Its activation slots (empty on a server without them).
    #[serde(default)]
    pub activations: Vec<Activation>,
    /// The batch it was issued in.
    #[serde(default)]
    pub batch: Option<String>,
    /// Why it was revoked.
    #[serde(default)]
    pub reason: Option<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("state", &self.state)
            .field("activated_at", &self.activated_at)
            .field("activations", &self.activations)
            .field("batch", &self.batch)
            .field("reason", &self.reason)
            .finish()
    }
}

/// Counts of one batch of issued tokens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The batch's name.
    pub name: String,
    /// Tokens issued in it.
    pub issued: u128,
    /// Of those, with at least one activation.
    pub activated: u128,
    /// Of those, revoked.
    pub revoked: u128,
}

#[derive(Serialize)]
struct IssueBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<&'a str>,
}

#[derive(Serialize)]
struct ActivateBody<'a> {
    fingerprint: &'a str,
}

#[derive(Serialize)]
struct RevokeBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// A handle on one keyspace: cheap to clone; every method is one request
/// (with the client's retries), O(1) or O(log n) on the server
/// (`issue_many`: O(count)).
#[derive(Clone, Debug)]
pub struct Keyspace {
    client: Client,
    name: String,
}

impl Keyspace {
    pub(crate) fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
        }
    }

    /// The keyspace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `["v1", "keyspaces", name, rest…]`.
    fn path<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        crate::client::scoped_path("keyspaces", &self.name, rest)
    }

    /// Creates the keyspace (an identical one is fine; one that differs
    /// is `keyspace_immutable`, except `max_activations`).
    pub async fn create(&self, spec: &KeyspaceSpec) -> Result<KeyspaceInfo> {
        let request = Request::new(Method::PUT, self.path(&[])).json(spec);
        self.client.call(request).await
    }

    /// The keyspace's definition and counts.
    pub async fn info(&self) -> Result<KeyspaceInfo> {
        self.client.call(Request::get(self.path(&[]))).await
    }

    /// Issues one token, in `batch` if given.
    /// Errors: [`Error::KeyspaceExhausted`](crate::Error::KeyspaceExhausted).
    pub async fn issue(&self, batch: Option<&str>) -> Result<Issued> {
        let request = Request::post(self.path(&["tokens"])).json(IssueBody { count: None, batch });
        self.client.call(request).await
    }

    /// Issues `count` tokens (1–10000) in one request, in `batch` if
    /// given; all or nothing.
    pub async fn issue_many(&self, count: u32, batch: Option<&str>) -> Result<IssuedMany> {
        let body = IssueBody {
            count: Some(count),
            batch,
        };
        let request = Request::post(self.path(&["tokens"])).json(body);
        self.client.call(request).await
    }

    /// The token object of `token` (with or without its format).
    pub async fn status(&self, token: &str) -> Result<Token> {
        self.client
            .call(Request::get(self.path(&["tokens", token])))
            .await
    }

    /// Takes an activation slot; the same `fingerprint` again is the same
    /// slot. Errors: `AlreadyActivated` (no slot left), `TokenRevoked`.
    pub async fn activate(&self, token: &str, fingerprint: Option<&str>) -> Result<Token> {
        let mut request = Request::post(self.path(&["tokens", token, "activate"]));
        if let Some(fingerprint) = fingerprint {
            request = request.json(ActivateBody { fingerprint });
        }
        self.client.call(request).await
    }

    /// Frees the activation slot taken with `fingerprint`.
    /// Errors: [`Error::ActivationNotFound`](crate::Error::ActivationNotFound).
    pub async fn deactivate(&self, token: &str, fingerprint: &str) -> Result<()> {
        let path = self.path(&["tokens", token, "activations", fingerprint]);
        self.client
            .call_empty(Request::new(Method::DELETE, path))
            .await
    }

    /// Revokes `token` for good (again: no change).
    pub async fn revoke(&self, token: &str, reason: Option<&str>) -> Result<Token> {
        let request =
            Request::post(self.path(&["tokens", token, "revoke"])).json(RevokeBody { reason });
        self.client.call(request).await
    }

    /// The counts of the batch `name`.
    pub async fn batch(&self, name: &str) -> Result<BatchInfo> {
        self.client
            .call(Request::get(self.path(&["batches", name])))
            .await
    }
}
