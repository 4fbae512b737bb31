//! Typed settings, resolved once in `main`: defaults, then the TOML file,
//! then `KEYWARD_*` variables, then flags (the last two arrive together as
//! [`Overrides`], which the command line fills in).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::{KeyLength, KeyspaceSpec, PoolSettings, Ttl};
use crate::store::Limits;

/// Default of `--listen`: loopback only, so a fresh start is not reachable
/// from other hosts until asked.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Default of `--store`: durable, in the working directory.
pub const DEFAULT_STORE: &str = "sqlite:keyward.db";
/// Default of `--lease-ttl`: how long a leased key stays with its client
/// unless released or extended.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// Default of `--idempotency-ttl`: how long an idempotent answer is kept.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default of `--keepalive-ttl`: how long a key lives without a keep-alive.
pub const DEFAULT_KEEPALIVE_TTL: Duration = Duration::from_secs(5 * 60);
/// Default of `--key-length`.
pub const DEFAULT_KEY_LENGTH: KeyLength = KeyLength::DEFAULT;
/// Default of `--max-pools`, `--max-keyspaces` and `--max-keys-per-pool`.
pub const DEFAULT_LIMITS: Limits = Limits::DEFAULT;
/// Default of `--log-format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// The default keyspace's alphabet: the original activation-token
/// service's, so its clients get tokens of the shape they know.
pub const DEFAULT_TOKEN_ALPHABET: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM";
/// The default keyspace's token length, the activation-token service's.
pub const DEFAULT_TOKEN_LENGTH: u32 = 4;
/// Default of `--max-connections`: far above what one process serves
/// well, far below the file-descriptor limits of a typical host.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Largest accepted `--max-connections`.
pub const MAX_MAX_CONNECTIONS: u64 = 1_000_000;
/// Default of `--header-timeout`: ample for any real client to send its
/// headers, short enough that clients trickling them cannot hold the
/// connection slots.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted `--header-timeout`: the idle timeout, beyond which a
/// header deadline no longer adds anything.
pub const MAX_HEADER_TIMEOUT: Duration = crate::http::listener::IDLE_TIMEOUT;
/// Default of `--body-timeout`: a 64 KiB body in 5 s is 13 KB/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted `--body-timeout`: past the request timeout the request
/// would answer 503 `timeout` before the body deadline could answer 408.
pub const MAX_BODY_TIMEOUT: Duration = crate::http::REQUEST_TIMEOUT;

/// Where state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// RAM only.
    Memory,
    /// RAM plus an SQLite journal at this path.
    Sqlite(PathBuf),
    /// One Redis server: `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, kept
    /// as given.
    Redis(String),
    /// A Redis Cluster, reached through these seed nodes (`HOST:PORT`).
    RedisCluster(Vec<String>),
}

impl StoreUrl {
    /// Parses `memory:`, `sqlite:PATH`, `redis://HOST:PORT/DB` or
    /// `redis+cluster://HOST:PORT,HOST:PORT,…`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if s == "memory:" || s == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.is_empty() {
                return Ok(Self::Sqlite(PathBuf::from(path)));
            }
        }
        if let Some(rest) = s.strip_prefix("redis://")
            && redis_url_ok(rest)
        {
            return Ok(Self::Redis(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("redis+cluster://")
            && rest.split(',').all(host_port_ok)
        {
            return Ok(Self::RedisCluster(
                rest.split(',').map(str::to_owned).collect(),
            ));
        }
        Err(ConfigError::Invalid(format!(
            "unsupported --store {s:?}: expected memory:, sqlite:PATH, redis://HOST:PORT/DB \
             or redis+cluster://HOST:PORT,HOST:PORT,..."
        )))
    }
}

/// `[USER:PASSWORD@]HOST[:PORT][/DB]`.
fn redis_url_ok(rest: &str) -> bool {
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (host_port, db) = rest.split_once('/').unwrap_or((rest, ""));
    let db_ok = db.is_empty() || db.parse::<u32>().is_ok();
    let host_ok = match host_port.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => !host_port.is_empty(),
    };
    db_ok && host_ok && !host_port.contains([',', '?', '#'])
}

/// `HOST:PORT` with a non-zero port.
fn host_port_ok(node: &str) -> bool {
    node.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(['/', '@']) && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory:"),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            // The password, if any, stays out of logs.
            Self::Redis(url) => match url.strip_prefix("redis://") {
                Some(rest) if rest.contains('@') => {
                    let (_, host) = rest.rsplit_once('@').unwrap_or(("", rest));
                    write!(f, "redis://<redacted>@{host}")
                }
                _ => f.write_str(url),
            },
            Self::RedisCluster(nodes) => write!(f, "redis+cluster://{}", nodes.join(",")),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogFormat {
    fn default() -> Self {
        DEFAULT_LOG_FORMAT
    }
}

impl fmt::Display for LogFormat {
    /// The `--log-format` value that selects it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The admin bearer token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    value: String,
    /// SHA-256 of `value`, computed once: requests are compared against it.
    digest: [u8; 32],
}

impl AdminToken {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        let digest = Sha256::digest(&value).into();
        Self { value, digest }
    }

    /// The secret itself, for a client that must send it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `given` is the token, in constant time. Digests, not the
    /// strings: `ct_eq` on slices of different lengths returns at once,
    /// which would tell the token's length.
    pub fn matches(&self, given: &str) -> bool {
        Sha256::digest(given).as_slice().ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Everything the server needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The store backend.
    pub store: StoreUrl,
    /// Settings of the `default` pool and of pools created implicitly.
    pub pool_defaults: PoolSettings,
    /// The `default` keyspace's alphabet and length.
    pub default_keyspace: KeyspaceSpec,
    /// Bearer token required on `/v1` and `/api`, if set.
    pub admin_token: Option<AdminToken>,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most pools, keyspaces and keys per pool (`--max-pools`,
    /// `--max-keyspaces`, `--max-keys-per-pool`).
    pub limits: Limits,
    /// Time from a request's first byte to the end of its headers; a
    /// connection over it is closed.
    pub header_timeout: Duration,
    /// Time for a request's whole body to arrive; over it, 408.
    pub body_timeout: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// How long the answer to a request with an `Idempotency-Key` is kept
    /// for its retries.
    pub idempotency_ttl: Ttl,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            store: StoreUrl::parse(DEFAULT_STORE).expect("the default store URL parses"),
            pool_defaults: PoolSettings {
                lease_ttl: Ttl::from_duration(DEFAULT_LEASE_TTL)
                    .expect("the default lease TTL is a valid TTL"),
                keepalive_ttl: Ttl::from_duration(DEFAULT_KEEPALIVE_TTL)
                    .expect("the default keep-alive TTL is a valid TTL"),
                key_length: DEFAULT_KEY_LENGTH,
                recovery: crate::core::Recovery::default(),
                no_keepalive: false,
            },
            default_keyspace: KeyspaceSpec::new(DEFAULT_TOKEN_ALPHABET, DEFAULT_TOKEN_LENGTH)
                .expect("the default keyspace is valid"),
            admin_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: DEFAULT_LIMITS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            log_format: DEFAULT_LOG_FORMAT,
            idempotency_ttl: Ttl::from_duration(DEFAULT_IDEMPOTENCY_TTL)
                .expect("the default idempotency TTL is a valid TTL"),
        }
    }
}

/// A setting could not be read or is out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The TOML file's shape: the flags' names in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    store: Option<String>,
    lease_ttl: Option<String>,
    keepalive_ttl: Option<String>,
    key_length: Option<u64>,
    token_alphabet: Option<String>,
    token_length: Option<u32>,
    admin_token: Option<String>,
    max_connections: Option<u64>,
    max_pools: Option<u64>,
    max_keyspaces: Option<u64>,
    max_keys_per_pool: Option<u64>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    log_format: Option<String>,
    idempotency_ttl: Option<String>,
}

/// Settings given by the caller (the command line and its environment),
/// each overriding the `--config` file and the defaults when set.
#[derive(Debug, Default)]
pub struct Overrides {
    /// Address to listen on
    pub listen: Option<String>,

    /// Where state lives: memory:, sqlite:PATH, redis://HOST:PORT/DB or
    /// redis+cluster://HOST:PORT,HOST:PORT,…
    pub store: Option<String>,

    /// How long a lease lasts unless released, e.g. 250ms, 60s, 5m
    pub lease_ttl: Option<String>,

    /// How long a key lives without a keep-alive
    pub keepalive_ttl: Option<String>,

    /// Length of generated pool keys, 8–128
    pub key_length: Option<u64>,

    /// Characters of the default keyspace's tokens
    pub token_alphabet: Option<String>,

    /// Length of the default keyspace's tokens
    pub token_length: Option<u32>,

    /// Most client connections open at once; more wait in the listen
    /// backlog until one closes, 1–1000000
    pub max_connections: Option<u64>,

    /// Close a connection whose request headers are not complete this long
    /// after their first byte, 1ms–60s
    pub header_timeout: Option<String>,

    /// Answer 408 to a request whose body is not complete this long after
    /// its headers, 1ms–10s
    pub body_timeout: Option<String>,

    /// Most pools (the default pool included); creating one more answers
    /// 409 pool_limit_reached
    pub max_pools: Option<u64>,

    /// Most keyspaces (the default keyspace included); creating one more
    /// answers 409 keyspace_limit_reached
    pub max_keyspaces: Option<u64>,

    /// Most live keys in one pool; a generate that would cross it is
    /// refused whole with 409 key_limit_reached
    pub max_keys_per_pool: Option<u64>,

    /// Require `Authorization: Bearer TOKEN` on /v1 and /api routes (or
    /// set KEYWARD_ADMIN_TOKEN); an empty value never switches a token off
    pub admin_token: Option<String>,

    /// `KEYWARD_ADMIN_TOKEN`, apart from the flag: an empty flag must not hide
    /// a token set there.
    pub admin_token_env: Option<String>,

    /// Log output: text or json (one JSON object per line)
    pub log_format: Option<String>,

    /// How long the answer to a request with an Idempotency-Key is kept
    /// for its retries, e.g. 24h
    pub idempotency_ttl: Option<String>,

    /// TOML file with any of the settings above (snake_case keys); there is
    /// no default file: without this flag no file is read
    pub config: Option<PathBuf>,
}

impl Config {
    /// Resolves flags/env over the `--config` file over the defaults.
    pub fn load(args: Overrides) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let defaults = Self::default();
        let listen = match args.listen.or(file.listen) {
            Some(s) => s.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "invalid --listen {s:?}: expected HOST:PORT, e.g. 127.0.0.1:8080"
                ))
            })?,
            None => defaults.listen,
        };
        let store = match args.store.or(file.store) {
            Some(s) => StoreUrl::parse(&s)?,
            None => defaults.store,
        };
        let ttl = |v: Option<String>, flag: &str, default: Ttl| -> Result<Ttl, ConfigError> {
            match v {
                Some(s) => parse_ttl(&s, flag),
                None => Ok(default),
            }
        };
        let pool_defaults = PoolSettings {
            lease_ttl: ttl(
                args.lease_ttl.or(file.lease_ttl),
                "--lease-ttl",
                defaults.pool_defaults.lease_ttl,
            )?,
            keepalive_ttl: ttl(
                args.keepalive_ttl.or(file.keepalive_ttl),
                "--keepalive-ttl",
                defaults.pool_defaults.keepalive_ttl,
            )?,
            key_length: match args.key_length.or(file.key_length) {
                Some(n) => KeyLength::new(n).ok_or_else(|| {
                    ConfigError::Invalid(format!("invalid --key-length {n}: expected 8 to 128"))
                })?,
                None => defaults.pool_defaults.key_length,
            },
            ..defaults.pool_defaults
        };
        let alphabet = args
            .token_alphabet
            .or(file.token_alphabet)
            .unwrap_or_else(|| DEFAULT_TOKEN_ALPHABET.to_owned());
        let length = args
            .token_length
            .or(file.token_length)
            .unwrap_or(DEFAULT_TOKEN_LENGTH);
        let default_keyspace = KeyspaceSpec::new(&alphabet, length).map_err(|e| {
            ConfigError::Invalid(format!("invalid --token-alphabet/--token-length: {e}"))
        })?;
        // The first non-empty of flag, environment and file: an empty value
        // counts as unset, so it cannot silently switch off a token that a
        // later source sets.
        let admin_token = [args.admin_token, args.admin_token_env, file.admin_token]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
            .map(AdminToken::new);
        let max_connections = match args.max_connections.or(file.max_connections) {
            None => defaults.max_connections,
            Some(n @ 1..=MAX_MAX_CONNECTIONS) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid(format!(
                    "invalid --max-connections {n}: expected 1 to {MAX_MAX_CONNECTIONS}"
                )));
            }
        };
        let header_timeout = match args.header_timeout.or(file.header_timeout) {
            Some(s) => parse_timeout(&s, "--header-timeout", MAX_HEADER_TIMEOUT)?,
            None => defaults.header_timeout,
        };
        let body_timeout = match args.body_timeout.or(file.body_timeout) {
            Some(s) => parse_timeout(&s, "--body-timeout", MAX_BODY_TIMEOUT)?,
            None => defaults.body_timeout,
        };
        let limits = Limits {
            max_pools: limit(
                args.max_pools.or(file.max_pools),
                "--max-pools",
                defaults.limits.max_pools,
            )?,
            max_keyspaces: limit(
                args.max_keyspaces.or(file.max_keyspaces),
                "--max-keyspaces",
                defaults.limits.max_keyspaces,
            )?,
            max_keys_per_pool: limit(
                args.max_keys_per_pool.or(file.max_keys_per_pool),
                "--max-keys-per-pool",
                defaults.limits.max_keys_per_pool,
            )?,
        };
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None => defaults.log_format,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "invalid --log-format {other:?}: expected text or json"
                )));
            }
        };
        let idempotency_ttl = ttl(
            args.idempotency_ttl.or(file.idempotency_ttl),
            "--idempotency-ttl",
            defaults.idempotency_ttl,
        )?;
        Ok(Self {
            idempotency_ttl,
            listen,
            store,
            pool_defaults,
            default_keyspace,
            admin_token,
            max_connections,
            limits,
            header_timeout,
            body_timeout,
            log_format,
        })
    }
}

/// Largest accepted `--max-pools`, `--max-keyspaces` and
/// `--max-keys-per-pool`: a pool addresses its keys with `u32` slots.
const MAX_LIMIT: u64 = u32::MAX as u64 - 1;

/// A limit flag's value: 1 to [`MAX_LIMIT`], or `default` when unset.
fn limit(value: Option<u64>, flag: &str, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ConfigError::Invalid(format!(
            "invalid {flag} {n}: expected 1 to {MAX_LIMIT}"
        ))),
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Parses `250ms`, `60s`, `5m` (any humantime duration) into a TTL.
fn parse_ttl(s: &str, flag: &str) -> Result<Ttl, ConfigError> {
    humantime::parse_duration(s.trim())
        .ok()
        .and_then(Ttl::from_duration)
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "invalid {flag} {s:?}: expected a duration of at least 1ms such as 250ms, 60s or 5m"
            ))
        })
}

/// Parses a connection deadline: any humantime duration from 1ms to `max`.
fn parse_timeout(s: &str, flag: &str, max: Duration) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| (Duration::from_millis(1)..=max).contains(d))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "invalid {flag} {s:?}: expected a duration from 1ms to {} such as 500ms or 5s",
                humantime::format_duration(max)
            ))
        })
}

/// A TTL for display in the start-up line.
pub fn show(ttl: Ttl) -> String {
    show_duration(Duration::from_millis(ttl.as_millis()))
}

/// A duration as the flags take it (`1m`, `5s`, `250ms`): for the start-up
/// line and the defaults `--help` shows.
pub fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_ttl("250ms", "x").map(Ttl::as_millis).ok(), Some(250));
        assert_eq!(parse_ttl("60s", "x").map(Ttl::as_millis).ok(), Some(60_000));
        assert_eq!(parse_ttl("5m", "x").map(Ttl::as_millis).ok(), Some(300_000));
        assert!(parse_ttl("0s", "x").is_err());
        assert!(parse_ttl("soon", "x").is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("keyward.toml");
        std::fs::write(
            &file,
            "lease_ttl = \"5s\"\nkey_length = 30\nlisten = \"127.0.0.1:9000\"\n",
        )
        .expect("write config");
        let args = Overrides {
            lease_ttl: Some("7s".into()),
            config: Some(file),
            ..Overrides::default()
        };
        let config = Config::load(args).expect("valid config");
        assert_eq!(config.pool_defaults.lease_ttl.as_millis(), 7_000);
        assert_eq!(config.pool_defaults.key_length.get(), 30);
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.pool_defaults.keepalive_ttl.as_millis(), 300_000);
    }

    #[test]
    fn the_idempotency_ttl_defaults_to_24_hours_and_reads_the_file_and_the_flag() {
        let day = Config::load(Overrides::default()).expect("defaults");
        assert_eq!(day.idempotency_ttl.as_millis(), 24 * 3_600_000);
        let dir = std::env::temp_dir().join(format!("keyward-idem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("keyward.toml");
        std::fs::write(&file, "idempotency_ttl = \"2h\"\n").expect("write config");
        let from_file = Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        };
        let config = Config::load(from_file).expect("valid config");
        assert_eq!(config.idempotency_ttl.as_millis(), 2 * 3_600_000);
        let flag = Overrides {
            idempotency_ttl: Some("90s".into()),
            config: Some(file),
            ..Overrides::default()
        };
        let config = Config::load(flag).expect("valid config");
        assert_eq!(config.idempotency_ttl.as_millis(), 90_000);
        let zero = Overrides {
            idempotency_ttl: Some("0s".into()),
            ..Overrides::default()
        };
        assert!(Config::load(zero).is_err(), "a zero TTL is refused");
    }

    #[test]
    fn redis_store_urls_parse_and_print_without_passwords() {
        let one = StoreUrl::parse("redis://127.0.0.1:6380/2").expect("valid");
        assert_eq!(one, StoreUrl::Redis("redis://127.0.0.1:6380/2".into()));
        assert_eq!(one.to_string(), "redis://127.0.0.1:6380/2");
        let secret = StoreUrl::parse("redis://:hunter2@localhost:6379/0").expect("valid");
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
        let cluster = StoreUrl::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(
            cluster,
            StoreUrl::RedisCluster(vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()])
        );
        assert_eq!(
            cluster.to_string(),
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
        );
        for bad in [
            "redis://",
            "redis://host:0",
            "redis://host:x/0",
            "redis://host:6379/db",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_connections_defaults_to_4096_and_refuses_zero() {
        let config = Config::load(Overrides::default()).expect("defaults are valid");
        assert_eq!(config.max_connections, 4096);
        for bad in [0, 1_000_001] {
            let args = Overrides {
                max_connections: Some(bad),
                ..Overrides::default()
            };
            assert!(Config::load(args).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_deadlines_default_to_5s_and_refuse_what_cannot_work() {
        let config = Config::load(Overrides::default()).expect("defaults are valid");
        assert_eq!(config.header_timeout, Duration::from_secs(5));
        assert_eq!(config.body_timeout, Duration::from_secs(5));
        let args = Overrides {
            header_timeout: Some("250ms".into()),
            body_timeout: Some("2s".into()),
            ..Overrides::default()
        };
        let config = Config::load(args).expect("valid deadlines");
        assert_eq!(config.header_timeout, Duration::from_millis(250));
        assert_eq!(config.body_timeout, Duration::from_secs(2));
        for (header, body) in [("0s", "1s"), ("61s", "1s"), ("1s", "11s"), ("1s", "soon")] {
            let args = Overrides {
                header_timeout: Some(header.into()),
                body_timeout: Some(body.into()),
                ..Overrides::default()
            };
            assert!(Config::load(args).is_err(), "{header} {body}");
        }
    }

    #[test]
    fn an_empty_admin_token_from_any_source_never_hides_one_from_another() {
        let dir = std::env::temp_dir().join(format!("keyward-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Each source absent, empty or set: 27 combinations.
        let states = |value: &'static str| [None, Some(""), Some(value)];
        for flag in states("from-flag") {
            for env in states("from-env") {
                for file in states("from-file") {
                    let config = file.map(|token| {
                        let path = dir.join(format!("{}.toml", token.len()));
                        std::fs::write(&path, format!("admin_token = {token:?}\n"))
                            .expect("write config");
                        path
                    });
                    let args = Overrides {
                        admin_token: flag.map(str::to_owned),
                        admin_token_env: env.map(str::to_owned),
                        config,
                        ..Overrides::default()
                    };
                    let loaded = Config::load(args).expect("valid config");
                    // Precedence flag > env > file, skipping empty values.
                    let expected = [flag, env, file]
                        .into_iter()
                        .flatten()
                        .find(|t| !t.is_empty());
                    assert_eq!(
                        loaded.admin_token.as_ref().map(AdminToken::expose),
                        expected,
                        "flag {flag:?}, env {env:?}, file {file:?}"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_token_never_shows_in_debug_output() {
        let config = Config {
            admin_token: Some(AdminToken::new("hunter2".into())),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
