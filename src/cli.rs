//! Command-line definitions. Every `serve` flag also reads `KEYWARD_<NAME>`
//! (through clap, except `KEYWARD_ADMIN_TOKEN`, which `main` reads);
//! values left unset fall back to the TOML file, then to the defaults
//! (resolved in [`keyward::config`]). `bench` flags are checked in
//! [`keyward_bench`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use keyward::config::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDEMPOTENCY_TTL, DEFAULT_KEEPALIVE_TTL,
    DEFAULT_KEY_LENGTH, DEFAULT_LEASE_TTL, DEFAULT_LIMITS, DEFAULT_LISTEN, DEFAULT_LOG_FORMAT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_STORE, DEFAULT_TOKEN_ALPHABET, DEFAULT_TOKEN_LENGTH,
    MAX_BODY_TIMEOUT, MAX_HEADER_TIMEOUT, MAX_MAX_CONNECTIONS, Overrides, show_duration,
};
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
///
/// Each field's `help` is its documentation. A default shown there is
/// rendered from the constant in [`keyward::config`] that `Config` uses, so
/// the two cannot drift (clap's own `default_value` is not used: a value
/// clap filled in could not be told from a flag, and would hide the file).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    #[arg(long, env = "KEYWARD_LISTEN", value_name = "ADDR",
        help = format!("Address to listen on [default: {DEFAULT_LISTEN}]"))]
    pub listen: Option<String>,

    #[arg(long, env = "KEYWARD_STORE", value_name = "URL",
        help = format!(
            "Where state lives: memory:, sqlite:PATH, redis://HOST:PORT/DB or \
             redis+cluster://HOST:PORT,HOST:PORT,… [default: {DEFAULT_STORE}]"
        ))]
    pub store: Option<String>,

    #[arg(long, env = "KEYWARD_LEASE_TTL", value_name = "DURATION",
        help = format!(
            "How long a lease lasts unless released, e.g. 250ms, 60s, 5m [default: {}]",
            show_duration(DEFAULT_LEASE_TTL)
        ))]
    pub lease_ttl: Option<String>,

    #[arg(long, env = "KEYWARD_KEEPALIVE_TTL", value_name = "DURATION",
        help = format!(
            "How long a key lives without a keep-alive [default: {}]",
            show_duration(DEFAULT_KEEPALIVE_TTL)
        ))]
    pub keepalive_ttl: Option<String>,

    #[arg(long, env = "KEYWARD_KEY_LENGTH", value_name = "N",
        help = format!(
            "Length of generated pool keys, 8–128 [default: {}]",
            DEFAULT_KEY_LENGTH.get()
        ))]
    pub key_length: Option<u64>,

    #[arg(long, env = "KEYWARD_TOKEN_ALPHABET", value_name = "CHARS",
        help = format!(
            "Characters of the default keyspace's tokens [default: {DEFAULT_TOKEN_ALPHABET}]"
        ))]
    pub token_alphabet: Option<String>,

    #[arg(long, env = "KEYWARD_TOKEN_LENGTH", value_name = "N",
        help = format!(
            "Length of the default keyspace's tokens [default: {DEFAULT_TOKEN_LENGTH}]"
        ))]
    pub token_length: Option<u32>,

    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS", value_name = "N",
        help = format!(
            "Most client connections open at once; more wait in the listen backlog \
             until one closes, 1–{MAX_MAX_CONNECTIONS} [default: {DEFAULT_MAX_CONNECTIONS}]"
        ))]
    pub max_connections: Option<u64>,

    #[arg(long, env = "KEYWARD_HEADER_TIMEOUT", value_name = "DURATION",
        help = format!(
            "Close a connection whose request headers are not complete this long after \
             their first byte, 1ms–{} [default: {}]",
            show_duration(MAX_HEADER_TIMEOUT),
            show_duration(DEFAULT_HEADER_TIMEOUT)
        ))]
    pub header_timeout: Option<String>,

    #[arg(long, env = "KEYWARD_BODY_TIMEOUT", value_name = "DURATION",
        help = format!(
            "Answer 408 to a request whose body is not complete this long after its \
             headers, 1ms–{} [default: {}]",
            show_duration(MAX_BODY_TIMEOUT),
            show_duration(DEFAULT_BODY_TIMEOUT)
        ))]
    pub body_timeout: Option<String>,

    #[arg(long, env = "KEYWARD_MAX_POOLS", value_name = "N",
        help = format!(
            "Most pools (the default pool included); creating one more answers 409 \
             pool_limit_reached [default: {}]",
            DEFAULT_LIMITS.max_pools
        ))]
    pub max_pools: Option<u64>,

    #[arg(long, env = "KEYWARD_MAX_KEYSPACES", value_name = "N",
        help = format!(
            "Most keyspaces (the default keyspace included); creating one more answers \
             409 keyspace_limit_reached [default: {}]",
            DEFAULT_LIMITS.max_keyspaces
        ))]
    pub max_keyspaces: Option<u64>,

    #[arg(long, env = "KEYWARD_MAX_KEYS_PER_POOL", value_name = "N",
        help = format!(
            "Most live keys in one pool; a generate that would cross it is refused whole \
             with 409 key_limit_reached [default: {}]",
            DEFAULT_LIMITS.max_keys_per_pool
        ))]
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

    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_name = "FORMAT",
        help = format!(
            "Log output: text or json (one JSON object per line) [default: {DEFAULT_LOG_FORMAT}]"
        ))]
    pub log_format: Option<String>,

    #[arg(long, env = "KEYWARD_IDEMPOTENCY_TTL", value_name = "DURATION",
        help = format!(
            "How long the answer to a request with an Idempotency-Key is kept for its \
             retries [default: {}]",
            show_duration(DEFAULT_IDEMPOTENCY_TTL)
        ))]
    pub idempotency_ttl: Option<String>,

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
            idempotency_ttl: a.idempotency_ttl,
            config: a.config,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use keyward::config::Config;

    use super::*;

    /// Every `serve` flag whose `--help` line shows `[default: X]`, with X.
    fn shown_defaults() -> Vec<(String, String)> {
        let mut cli = Cli::command();
        let serve = cli
            .find_subcommand_mut("serve")
            .expect("`serve` is a subcommand");
        let help = serve.render_help().to_string();
        help.lines()
            .filter_map(|line| {
                let flag = line
                    .trim_start()
                    .strip_prefix("--")?
                    .split_whitespace()
                    .next()?;
                let (_, rest) = line.split_once("[default: ")?;
                let (value, _) = rest.split_once(']')?;
                Some((flag.to_owned(), value.to_owned()))
            })
            .collect()
    }

    #[test]
    fn serve_help_shows_the_defaults_the_server_uses_when_a_flag_is_absent() {
        let shown = shown_defaults();
        let flags: Vec<&str> = shown.iter().map(|(flag, _)| flag.as_str()).collect();
        assert_eq!(
            flags,
            [
                "listen",
                "store",
                "lease-ttl",
                "keepalive-ttl",
                "key-length",
                "token-alphabet",
                "token-length",
                "max-connections",
                "header-timeout",
                "body-timeout",
                "max-pools",
                "max-keyspaces",
                "max-keys-per-pool",
                "log-format",
                "idempotency-ttl",
            ],
            "every flag with a default shows it"
        );
        // Passing each shown value as its flag must load the very config
        // that no flag at all loads: the help cannot show a stale default.
        let mut argv = vec!["keyward".to_owned(), "serve".to_owned()];
        for (flag, value) in &shown {
            argv.push(format!("--{flag}"));
            argv.push(value.clone());
        }
        let Cli {
            command: Command::Serve(args),
        } = Cli::try_parse_from(&argv).expect("the shown defaults parse as flags")
        else {
            panic!("`serve` parses as Command::Serve");
        };
        let from_help = Config::load(args.into()).expect("the shown defaults are valid");
        let unset = Config::load(Overrides::default()).expect("the defaults are valid");
        assert_eq!(format!("{from_help:?}"), format!("{unset:?}"));
        assert_eq!(format!("{unset:?}"), format!("{:?}", Config::default()));
    }
}
