//! `keyward serve`: parse flags, load config, init logs, run.
//! `keyward bench`: hand the flags to [`keyward_bench::run`].

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

mod cli;

use cli::{Cli, Command, ServeArgs};

use anyhow::Context;
use clap::Parser;
use keyward::app::App;

use keyward::config::{Config, LogFormat, show};
use tracing_subscriber::EnvFilter;

// glibc's malloc spent ~17 % of the server's CPU under load (arenas
// contended across worker threads, consolidation of freed batches).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: its number in the v3 `mimalloc.h` of
/// libmimalloc-sys 0.1.49 (pinned in Cargo.toml).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Give freed memory back to the OS at once, not 10 ms later on the
    // freeing thread's next allocation: the thread that loads a SQLite
    // store frees its rows and never allocates again, which left twice
    // the resident memory after start-up (268 vs 140 MiB with 10^6 keys
    // and 10^6 tokens). Throughput under load measured the same.
    // SAFETY: sets a plain integer option, first thing in `main`, before
    // any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let Cli { command } = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, no backtrace.
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let args = match command {
        Command::Serve(args) => args,
        Command::Bench(args) => return Ok(keyward_bench::run(args).await?),
    };
    // Read apart from the flag (see `ServeArgs::admin_token_env`): an empty
    // `--admin-token ''` must not hide a token set here.
    let args = ServeArgs {
        admin_token_env: admin_token_from_env()?,
        ..args
    };
    let config = Config::load(args.into())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Logs are diagnostics: stderr, where service managers and `2>` expect
    // them; colour escapes only where a person reads them.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let shutdown = shutdown_signal()?;
    let app = App::build(&config).await.context("cannot start")?;
    let pool = config.pool_defaults;
    tracing::info!(
        addr = %app.local_addr(),
        store = %config.store,
        lease_ttl = %show(pool.lease_ttl),
        keepalive_ttl = %show(pool.keepalive_ttl),
        key_length = pool.key_length.get(),
        token_alphabet = config.default_keyspace.alphabet().as_str(),
        token_length = config.default_keyspace.length(),
        max_connections = config.max_connections,
        header_timeout = ?config.header_timeout,
        body_timeout = ?config.body_timeout,
        auth = config.admin_token.is_some(),
        "keyward listening"
    );
    app.run_until(shutdown).await?;
    tracing::info!("keyward stopped");
    Ok(())
}

/// Whether log lines carry ANSI colours: only on a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colour_logs(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `KEYWARD_ADMIN_TOKEN`, if set; an error if it is not UTF-8 (a token
/// that cannot be compared must not be dropped silently).
fn admin_token_from_env() -> anyhow::Result<Option<String>> {
    match std::env::var("KEYWARD_ADMIN_TOKEN") {
        Ok(token) => Ok(Some(token)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e @ std::env::VarError::NotUnicode(_)) => Err(e).context("KEYWARD_ADMIN_TOKEN"),
    }
}

/// Listens for SIGINT and SIGTERM from now on (so a signal that arrives
/// during start-up is not lost to the default action) and returns a future
/// that completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    };
    #[cfg(not(unix))]
    let signals = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    Ok(async move {
        signals.await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_a_non_empty_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsString::new())));
        assert!(!colour_logs(true, Some("1".into())));
        assert!(!colour_logs(true, Some("0".into())));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(false, Some(OsString::new())));
    }
}
