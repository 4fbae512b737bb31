//! Command-line definitions. Every `serve` flag also reads `KEYWARD_<NAME>`;
//! values left unset fall back to the TOML file, then to the defaults
//! (resolved in [`crate::config`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    /// Require `Authorization: Bearer TOKEN` on /v1 and /api routes
    #[arg(
        long,
        env = "KEYWARD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Log output: text or json (one JSON object per line) [default: text]
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// TOML file with any of the settings above (snake_case keys)
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}
