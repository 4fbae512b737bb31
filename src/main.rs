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
        auth = config.admin_token.is_some(),
        "keyward listening"
    );
    app.run_until(shutdown_signal()).await?;
    tracing::info!("keyward stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
