//! Command-line definitions. Every `serve` flag also reads `KEYWARD_<NAME>`
//! (through clap, except `KEYWARD_ADMIN_TOKEN`, which `main` reads);
//! values left unset fall back to the TOML file, then to the defaults
//! (resolved in [`crate::config`]). `bench` flags are checked in
//! [`crate::bench`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use keyward::config::Overrides;
use keyward_bench::BenchArgs;

/// keyward: a key server for activation-token keyspaces and leased API-key pools.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// keyward's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Load a running server and report throughput and latency.
    Bench(BenchArgs),
}

/// Flags of `keyward serve`. Precedence: flag > KEYWARD_* env > --config file > default.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYWARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Where state lives: memory:, sqlite:PATH, redis://HOST:PORT/DB or
    /// redis+cluster://HOST:PORT,HOST:PORT,… [default: sqlite:keyward.db]
    #[arg(long, env = "KEYWARD_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// How long a lease lasts unless released, e.g. 250ms, 60s, 5m [default: 60s]
    #[arg(long, env = "KEYWARD_LEASE_TTL", value_name = "DURATION")]
    pub lease_ttl: Option<String>,

    /// How long a key lives without a keep-alive [default: 5m]
    #[arg(long, env = "KEYWARD_KEEPALIVE_TTL", value_name = "DURATION")]
    pub keepalive_ttl: Option<String>,

    /// Length of generated pool keys, 8–128 [default: 20]
    #[arg(long, env = "KEYWARD_KEY_LENGTH", value_name = "N")]
    pub key_length: Option<u64>,

    /// Characters of the default keyspace's tokens
    /// [default: qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM]
    #[arg(long, env = "KEYWARD_TOKEN_ALPHABET", value_name = "CHARS")]
    pub token_alphabet: Option<String>,

    /// Length of the default keyspace's tokens [default: 4]
    #[arg(long, env = "KEYWARD_TOKEN_LENGTH", value_name = "N")]
    pub token_length: Option<u32>,

    /// Most client connections open at once; more wait in the listen
    /// backlog until one closes, 1–1000000 [default: 4096]
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,

    /// Close a connection whose request headers are not complete this long
    /// after their first byte, 1ms–60s [default: 5s]
    #[arg(long, env = "KEYWARD_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// Answer 408 to a request whose body is not complete this long after
    /// its headers, 1ms–10s [default: 5s]
    #[arg(long, env = "KEYWARD_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,

    /// Most pools (the default pool included); creating one more answers
    /// 409 pool_limit_reached [default: 10000]
    #[arg(long, env = "KEYWARD_MAX_POOLS", value_name = "N")]
    pub max_pools: Option<u64>,

    /// Most keyspaces (the default keyspace included); creating one more
    /// answers 409 keyspace_limit_reached [default: 1000]
    #[arg(long, env = "KEYWARD_MAX_KEYSPACES", value_name = "N")]
    pub max_keyspaces: Option<u64>,

    /// Most live keys in one pool; a generate that would cross it is
    /// refused whole with 409 key_limit_reached [default: 10000000]
    #[arg(long, env = "KEYWARD_MAX_KEYS_PER_POOL", value_name = "N")]
    pub max_keys_per_pool: Option<u64>,

    /// Require `Authorization: Bearer TOKEN` on /v1 and /api routes (or
    /// set KEYWARD_ADMIN_TOKEN); an empty value never switches a token off
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// `KEYWARD_ADMIN_TOKEN`, filled in by `main` rather than by clap: clap
    /// lets a flag hide its variable, and an empty `--admin-token ''` must
    /// not hide a token set there.
    #[arg(skip)]
    pub admin_token_env: Option<String>,

    /// Log output: text or json (one JSON object per line) [default: text]
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// TOML file with any of the settings above (snake_case keys); there is
    /// no default file: without this flag no file is read
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl From<ServeArgs> for Overrides {
    fn from(a: ServeArgs) -> Self {
        Self {
            listen: a.listen,
            store: a.store,
            lease_ttl: a.lease_ttl,
            keepalive_ttl: a.keepalive_ttl,
            key_length: a.key_length,
            token_alphabet: a.token_alphabet,
            token_length: a.token_length,
            max_connections: a.max_connections,
            header_timeout: a.header_timeout,
            body_timeout: a.body_timeout,
            max_pools: a.max_pools,
            max_keyspaces: a.max_keyspaces,
            max_keys_per_pool: a.max_keys_per_pool,
            admin_token: a.admin_token,
            admin_token_env: a.admin_token_env,
            log_format: a.log_format,
            config: a.config,
        }
    }
}
