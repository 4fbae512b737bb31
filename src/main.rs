//! `keyward serve`: parse flags, load config, init logs, run.
//! `keyward bench`: hand the flags to [`keyward::bench::run`].

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use keyward::app::App;
use keyward::cli::{Cli, Command};
use keyward::config::{Config, LogFormat, show};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
        Command::Bench(args) => return Ok(keyward::bench::run(args).await?),
    };
    let config = Config::load(args)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
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
        auth = config.admin_token.is_some(),
        "keyward listening"
    );
    app.run_until(shutdown).await?;
    tracing::info!("keyward stopped");
    Ok(())
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
