//! `keyward bench`: a closed-loop HTTP/1 load generator for keyward's own
//! routes, with HdrHistogram latencies.
//!
//! A run has three phases:
//!
//! 1. **Connect and prepare** (`prepare`), untimed: resolve
//!    the [`Target`] (loopback only unless allowed), check `/healthz`,
//!    create the pool and its keys, the keyspace and its tokens, whatever
//!    the [`Workload`] needs; then open every connection.
//! 2. **Drive** (`drive`), timed: a tokio runtime of the load's own with
//!    `--threads` workers (one per CPU by default); on it one task per
//!    connection, each with one request in flight on its own keep-alive
//!    HTTP/1 connection (hyper's `client::conn::http1`, its connection
//!    future polled inside the task: no pool, no extra task, no cross-task
//!    wake-up per request). Connections are opened before the clock starts.
//!    A per-worker `Script` (`workload`) picks the next request from the
//!    last answer; latencies go into the worker's own histogram. The only
//!    shared write is a padded per-worker counter for the progress bar
//!    (drawn with `indicatif` when stderr is a terminal). At the deadline
//!    in-flight requests are dropped, uncounted; a key leased then stays
//!    leased until the pool's `lease_ttl` ends it.
//! 3. **Report** ([`Report`]): worker tallies merged into requests/s,
//!    operations/s, errors (unexpected statuses apart from transport
//!    errors) and p50/p90/p99/p99.9/max; text or one JSON object.
//!
//! [`measure`] is the library entry point (it returns the [`Report`]);
//! [`run`] is the command: parse flags, measure, print.

mod conn;
mod drive;
mod prepare;
mod report;
mod target;
mod workload;

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinError;
use tokio::time::Instant;

pub use self::conn::ConnError;
pub use self::report::{HandOverReport, Latency, Report};
pub use self::target::{Target, TargetError};
pub use self::workload::{Kind, Workload};

use self::conn::{Conn, Endpoint};
use self::drive::{Counter, LoadRuntime};
use self::report::Tally;
use self::workload::Script;
use clap::Args;

/// Most connections one run may open (each worker also holds a ~130 KB
/// histogram).
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest accepted `--duration`.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most keys or tokens one run may prepare.
pub const MAX_PREPARED: u64 = 100_000_000;
/// Longest accepted `--hold`.
pub const MAX_HOLD: Duration = Duration::from_secs(10);
/// Longest accepted `--wait` (the server's bound on `wait_ms`).
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Flags of `keyward bench`: a bounded load test of one workload against a
/// running server, prepared before the clock starts.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server's root URL; loopback only (127.0.0.0/8, ::1, localhost)
    /// unless --allow-remote
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// What to measure
    #[arg(long, value_enum, value_name = "WORKLOAD")]
    pub workload: Workload,

    /// Concurrent keep-alive connections, one request in flight on each (1–1024)
    #[arg(long, short = 'c', value_name = "N", default_value_t = 32)]
    pub connections: usize,

    /// wait: concurrent waiting connections (1–1024), more than --keys;
    /// replaces --connections
    #[arg(long, value_name = "N")]
    pub waiters: Option<usize>,

    /// wait: how long a worker holds each leased key before releasing it,
    /// e.g. 0ms, 1ms, 5ms (at most 10s)
    #[arg(long, value_name = "DURATION", default_value = "1ms")]
    pub hold: String,

    /// wait: the `wait_ms` of every lease, e.g. 5s (1ms to 30s)
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub wait: String,

    /// Client threads (workers of the load's own async runtime), like
    /// wrk -t [default: number of CPUs]
    #[arg(long, short = 't', value_name = "N")]
    pub threads: Option<usize>,

    /// Length of the timed part, e.g. 250ms, 10s, 1m (at most 1h)
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s")]
    pub duration: String,

    /// Pool of lease-release, keepalive and mixed (created if absent);
    /// wait deletes it and creates it afresh
    #[arg(long, value_name = "NAME", default_value = "bench")]
    pub pool: String,

    /// Keyspace of issue, status, activate and mixed (created if absent:
    /// 62 characters × length 8; an existing one is used as it is)
    #[arg(long, value_name = "NAME", default_value = "bench")]
    pub keyspace: String,

    /// lease-release: top the pool up to N keys; keepalive, mixed: generate
    /// N fresh keys (in batches of 10000); wait: the fresh pool's keys,
    /// fewer than --waiters [default: 10000; wait: a quarter of --waiters]
    #[arg(long, value_name = "N")]
    pub keys: Option<u64>,

    /// status, mixed: tokens issued for status requests; activate: tokens
    /// issued before the clock starts (after them, each activation issues
    /// its token first, timed)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub tokens: u64,

    /// Send `Authorization: Bearer TOKEN` (for a server run with --admin-token)
    #[arg(
        long,
        env = "KEYWARD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Send a fresh Idempotency-Key with every POST, PUT and DELETE (to
    /// measure what recording each answer costs)
    #[arg(long)]
    pub idempotency_keys: bool,

    /// Allow a --url that is not a loopback address
    #[arg(long)]
    pub allow_remote: bool,

    /// Print the report as one JSON object (latencies in microseconds)
    #[arg(long)]
    pub json: bool,
}

/// A pool or keyspace name as the server takes it: 1–64 of
/// `[A-Za-z0-9._-]` (checked here so a typo fails before any request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// `value` if the server would take it as a name.
    pub fn parse(value: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err("a name is 1 to 64 of A-Z a-z 0-9 . _ -".to_owned())
        }
    }

    /// The name as sent in paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server's admin token, sent as `Authorization: Bearer …`; `Debug`
/// does not show it.
#[derive(Clone)]
pub struct BearerToken(pub String);

impl BearerToken {
    /// The token itself, for the header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// A run, fully checked.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The server.
    pub target: Target,
    /// What to measure.
    pub workload: Workload,
    /// Concurrent connections, one request in flight on each.
    pub connections: NonZeroUsize,
    /// Worker threads of the load's runtime.
    pub threads: NonZeroUsize,
    /// Length of the timed part.
    pub duration: Duration,
    /// Pool for lease-release, keepalive and mixed; `wait` deletes and
    /// recreates it.
    pub pool: Name,
    /// Keyspace for issue, status, activate and mixed.
    pub keyspace: Name,
    /// lease-release: pool size to top up to; keepalive, mixed: fresh keys
    /// to generate.
    pub keys: u64,
    /// status, mixed: tokens to issue for status requests; activate:
    /// tokens to issue for activation before the clock starts.
    pub tokens: u64,
    /// `wait`: how long each leased key is held before its release.
    pub hold: Duration,
    /// `wait`: the `wait_ms` of every lease.
    pub wait: Duration,
    /// Sent as `Authorization: Bearer …` when set.
    pub admin_token: Option<BearerToken>,
    /// A fresh `Idempotency-Key` on every change request.
    pub idempotency_keys: bool,
    /// Draw a progress bar and preparation notes on stderr.
    pub progress: bool,
}

impl BenchOptions {
    /// `workload` against `target` with the command's defaults: 32
    /// connections, one thread per CPU, 10 s, pool and keyspace `bench`, 10,000 keys and
    /// tokens, no token, no progress bar.
    pub fn new(target: Target, workload: Workload) -> Self {
        let bench = Name::parse("bench").expect("\"bench\" is a valid name");
        Self {
            target,
            workload,
            connections: NonZeroUsize::new(32).expect("32 is not zero"),
            threads: default_threads(),
            duration: Duration::from_secs(10),
            pool: bench.clone(),
            keyspace: bench,
            keys: 10_000,
            tokens: 10_000,
            hold: Duration::from_millis(1),
            wait: Duration::from_secs(5),
            admin_token: None,
            idempotency_keys: false,
            progress: false,
        }
    }

    /// Checks the command's flags (all but `--json`). `progress` is off.
    pub fn from_args(args: BenchArgs) -> Result<Self, BenchError> {
        let name = |flag: &str, value: &str| {
            Name::parse(value)
                .map_err(|e| BenchError::Invalid(format!("invalid {flag} {value:?}: {e}")))
        };
        let wait = args.workload == Workload::Wait;
        if args.waiters.is_some() && !wait {
            return Err(BenchError::Invalid(
                "--waiters is for --workload wait; use --connections".into(),
            ));
        }
        let (flag, n) = match args.waiters {
            Some(n) => ("--waiters", n),
            None => ("--connections", args.connections),
        };
        let connections = NonZeroUsize::new(n)
            .filter(|n| n.get() <= MAX_CONNECTIONS)
            .ok_or_else(|| {
                BenchError::Invalid(format!(
                    "{flag} must be from 1 to {MAX_CONNECTIONS}; got {n}"
                ))
            })?;
        let count = |flag: &str, n: u64| {
            if (1..=MAX_PREPARED).contains(&n) {
                Ok(n)
            } else {
                Err(BenchError::Invalid(format!(
                    "{flag} must be from 1 to {MAX_PREPARED}; got {n}"
                )))
            }
        };
        let threads = match args.threads {
            None => default_threads(),
            Some(n) => NonZeroUsize::new(n)
                .filter(|n| n.get() <= MAX_CONNECTIONS)
                .ok_or_else(|| {
                    BenchError::Invalid(format!(
                        "--threads must be from 1 to {MAX_CONNECTIONS}; got {n}"
                    ))
                })?,
        };
        let keys = match args.keys {
            Some(n) => count("--keys", n)?,
            None if wait => (connections.get() as u64 / 4).max(1),
            None => 10_000,
        };
        if wait && keys >= connections.get() as u64 {
            return Err(BenchError::Invalid(format!(
                "--workload wait needs fewer --keys than --waiters, so that some always wait; \
                 got {keys} keys for {connections} waiters"
            )));
        }
        let hold = parse_bounded("--hold", &args.hold, Duration::ZERO, MAX_HOLD)?;
        let wait = parse_bounded("--wait", &args.wait, Duration::from_millis(1), MAX_WAIT)?;
        Ok(Self {
            target: Target::parse(&args.url, args.allow_remote)?,
            workload: args.workload,
            connections,
            threads,
            duration: parse_duration(&args.duration)?,
            pool: name("--pool", &args.pool)?,
            keyspace: name("--keyspace", &args.keyspace)?,
            keys,
            tokens: count("--tokens", args.tokens)?,
            hold,
            wait,
            admin_token: args.admin_token.map(BearerToken),
            idempotency_keys: args.idempotency_keys,
            progress: false,
        })
    }
}

/// One client thread per CPU the process may use.
fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Parses a run length: `250ms`, `10s`, `1m`, … (humantime), above zero
/// and at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, BenchError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| BenchError::Invalid(format!("invalid --duration {s:?}: {e}")))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(BenchError::Invalid(format!(
            "--duration must be above zero and at most {}; got {s:?}",
            humantime::format_duration(MAX_DURATION)
        )));
    }
    Ok(d)
}

/// Parses a humantime `flag` value (`0ms`, `1ms`, `5s`) from `min` to
/// `max`, whole milliseconds (what the server's `wait_ms` takes).
pub fn parse_bounded(
    flag: &str,
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, BenchError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| BenchError::Invalid(format!("invalid {flag} {s:?}: {e}")))?;
    if d < min || d > max || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(BenchError::Invalid(format!(
            "{flag} must be whole milliseconds from {} to {}; got {s:?}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}

/// A run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The URL is unusable or not allowed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No resolved address accepted a connection.
    #[error("cannot reach {url}")]
    Unreachable {
        /// The server.
        url: String,
        /// The last address's error.
        #[source]
        source: ConnError,
    },
    /// A preparation request failed below HTTP.
    #[error("while preparing ({step})")]
    Transport {
        /// What was being done.
        step: String,
        /// Why it failed.
        #[source]
        source: ConnError,
    },
    /// The server refused a preparation request.
    #[error("while preparing ({step}): the server answered {status}: {body}{}",
        if *status == StatusCode::UNAUTHORIZED { " (pass --admin-token or set KEYWARD_ADMIN_TOKEN)" } else { "" })]
    Refused {
        /// What was being done.
        step: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A preparation answer lacked what the run needs.
    #[error("while preparing ({step}): unexpected answer: {detail}")]
    BadAnswer {
        /// What was being done.
        step: String,
        /// What was wrong.
        detail: String,
    },
    /// The load's runtime could not start.
    #[error("cannot start the load's threads")]
    Thread(#[source] std::io::Error),
    /// The report could not be written.
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

/// `keyward bench`: parses `args`, measures (with a progress bar when
/// stderr is a terminal) and prints the report to stdout, as text or, with
/// `--json`, as one JSON object on one line.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let json = args.json;
    let mut opts = BenchOptions::from_args(args)?;
    opts.progress = std::io::stderr().is_terminal();
    let report = measure(&opts).await?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write!(out, "{report}")
    };
    written
        .and_then(|()| out.flush())
        .map_err(BenchError::Output)
}

/// Runs `opts` and returns its report: prepares (untimed), opens every
/// connection, then drives load for exactly `opts.duration`.
pub async fn measure(opts: &BenchOptions) -> Result<Report, BenchError> {
    let prepare_started = Instant::now();
    let (ep, conn) = connect(opts).await?;
    let prepared = prepare::prepare(&ep, conn, opts, opts.progress).await?;
    let workers = opts.connections.get();
    let fixtures = Arc::new(prepared.fixtures);
    let counters: Vec<Arc<Counter>> = (0..workers).map(|_| Arc::default()).collect();
    let load = LoadRuntime::new(opts.threads.get()).map_err(BenchError::Thread)?;
    // Opened on the load runtime, so their sockets belong to its event loop.
    let opening: Vec<_> = (0..workers)
        .map(|_| {
            let ep = ep.clone();
            load.handle().spawn(async move { ep.open().await })
        })
        .collect();
    let mut conns = Vec::with_capacity(workers);
    for opened in opening {
        conns.push(
            joined_ok(opened.await).map_err(|source| BenchError::Transport {
                step: format!("opening {workers} connections"),
                source,
            })?,
        );
    }
    let prepare_time = prepare_started.elapsed();

    let start = Instant::now();
    let deadline = start + opts.duration;
    let running: Vec<_> = conns
        .into_iter()
        .zip(prepared.fresh)
        .enumerate()
        .map(|(i, (conn, fresh))| {
            let script = Script::new(opts.workload, fixtures.clone(), i, workers, fresh);
            load.handle().spawn(drive::drive(
                ep.clone(),
                conn,
                script,
                deadline,
                counters[i].clone(),
            ))
        })
        .collect();
    if opts.progress {
        show_progress(start, deadline, &counters).await;
    }
    let mut total = Tally::new();
    for worker in running {
        total.merge(joined_ok(worker.await));
    }
    Ok(Report::new(
        opts.workload,
        opts.target.url(),
        workers,
        opts.duration,
        prepare_time,
        total,
    ))
}

/// The first resolved address that accepts a connection, with that
/// connection.
async fn connect(opts: &BenchOptions) -> Result<(Endpoint, Conn), BenchError> {
    let mut last = None;
    for addr in opts.target.resolve().await? {
        let token = opts.admin_token.as_ref();
        let ep = Endpoint::new(&opts.target, addr, token, opts.idempotency_keys).map_err(|_| {
            BenchError::Invalid("the admin token is not a valid HTTP header value".into())
        })?;
        match ep.open().await {
            Ok(conn) => return Ok((ep, conn)),
            Err(e) => last = Some(e),
        }
    }
    Err(BenchError::Unreachable {
        url: opts.target.url(),
        source: last.expect("resolve returns at least one address or an error"),
    })
}

/// Redraws a bar on stderr until `deadline`: time, requests, rate.
async fn show_progress(start: Instant, deadline: Instant, counters: &[Arc<Counter>]) {
    let total_ms = u64::try_from((deadline - start).as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template("[{bar:30}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        let elapsed = start.elapsed();
        let requests: u64 = counters.iter().map(|c| c.get()).sum();
        bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{:.1}/{:.1} s  {requests} requests  {:.0} req/s",
            elapsed.as_secs_f64(),
            (deadline - start).as_secs_f64(),
            requests as f64 / elapsed.as_secs_f64().max(1e-3),
        ));
    }
    bar.finish_and_clear();
}

/// The value of a task that cannot be cancelled (nothing aborts these
/// tasks); a panic inside it continues here.
fn joined_ok<T>(joined: Result<T, JoinError>) -> T {
    joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn options(argv: &[&str]) -> Result<BenchOptions, BenchError> {
        let cli = Cli::try_parse_from(["bench"].iter().chain(argv))
            .map_err(|e| BenchError::Invalid(e.to_string()))?;
        BenchOptions::from_args(cli.args)
    }

    #[test]
    fn flags_default_to_32_connections_for_10_s_on_pool_and_keyspace_bench() {
        let o = options(&["--workload", "lease-release"]).expect("valid flags");
        assert_eq!(o.target.url(), "http://127.0.0.1:8080");
        assert_eq!(o.workload, Workload::LeaseRelease);
        assert_eq!(o.connections.get(), 32);
        assert_eq!(o.threads, default_threads());
        assert_eq!(o.duration, Duration::from_secs(10));
        assert_eq!((o.pool.as_str(), o.keyspace.as_str()), ("bench", "bench"));
        assert_eq!((o.keys, o.tokens), (10_000, 10_000));
        assert!(!o.progress);
    }

    #[test]
    fn every_flag_is_read() {
        let o = options(&[
            "--url",
            "http://localhost:9000",
            "--workload",
            "mixed",
            "--connections",
            "64",
            "--threads",
            "3",
            "--duration",
            "1m",
            "--pool",
            "p1",
            "--keyspace",
            "k.2",
            "--keys",
            "5",
            "--tokens",
            "7",
            "--admin-token",
            "s3cret",
            "--json",
        ])
        .expect("valid flags");
        assert_eq!(o.target.authority(), "localhost:9000");
        assert_eq!(o.workload, Workload::Mixed);
        assert_eq!(o.connections.get(), 64);
        assert_eq!(o.threads.get(), 3);
        assert_eq!(o.duration, Duration::from_secs(60));
        assert_eq!((o.pool.as_str(), o.keyspace.as_str()), ("p1", "k.2"));
        assert_eq!((o.keys, o.tokens), (5, 7));
        assert_eq!(o.admin_token.as_ref().map(|t| t.0.as_str()), Some("s3cret"));
    }

    #[test]
    fn every_workload_name_parses() {
        for (name, w) in [
            ("healthz", Workload::Healthz),
            ("lease-release", Workload::LeaseRelease),
            ("issue", Workload::Issue),
            ("status", Workload::Status),
            ("activate", Workload::Activate),
            ("keepalive", Workload::Keepalive),
            ("mixed", Workload::Mixed),
        ] {
            let o = options(&["--workload", name]).expect("a known workload");
            assert_eq!(o.workload, w);
            assert_eq!(w.as_str(), name);
        }
        assert!(options(&["--workload", "lease"]).is_err());
        assert!(options(&[]).is_err(), "--workload is required");
    }

    #[test]
    fn durations_take_humantime_units_within_bounds() {
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h").ok(), Some(MAX_DURATION));
        for bad in ["0s", "0", "", "10", "ten seconds", "-1s", "61m", "2h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        for argv in [
            &["--workload", "issue", "--connections", "0"][..],
            &["--workload", "issue", "--connections", "1025"],
            &["--workload", "issue", "--threads", "0"],
            &["--workload", "issue", "--duration", "0ms"],
            &["--workload", "issue", "--pool", "no spaces"],
            &["--workload", "issue", "--keyspace", ""],
            &["--workload", "issue", "--keys", "0"],
            &["--workload", "issue", "--tokens", "0"],
        ] {
            assert!(
                matches!(options(argv), Err(BenchError::Invalid(_))),
                "{argv:?} should be refused"
            );
        }
    }

    #[test]
    fn wait_reads_waiters_keys_hold_and_wait() {
        let o = options(&[
            "--workload",
            "wait",
            "--waiters",
            "16",
            "--keys",
            "4",
            "--hold",
            "2ms",
            "--wait",
            "3s",
        ])
        .expect("valid flags");
        assert_eq!(o.workload, Workload::Wait);
        assert_eq!((o.connections.get(), o.keys), (16, 4));
        assert_eq!(o.hold, Duration::from_millis(2));
        assert_eq!(o.wait, Duration::from_secs(3));
        let o = options(&["--workload", "wait", "--waiters", "10", "--hold", "0ms"])
            .expect("valid flags");
        assert_eq!(
            (o.connections.get(), o.keys),
            (10, 2),
            "a quarter, rounded down"
        );
        assert_eq!(o.hold, Duration::ZERO);
        let o = options(&["--workload", "wait", "-c", "3"]).expect("valid flags");
        assert_eq!((o.connections.get(), o.keys), (3, 1), "at least one key");
        assert_eq!(o.hold, Duration::from_millis(1));
        assert_eq!(o.wait, Duration::from_secs(5));
    }

    #[test]
    fn wait_needs_more_waiters_than_keys_and_bounded_hold_and_wait() {
        for argv in [
            &["--workload", "wait", "--waiters", "4", "--keys", "4"][..],
            &["--workload", "wait", "--waiters", "1"],
            &["--workload", "wait", "--waiters", "0"],
            &["--workload", "wait", "--waiters", "1025"],
            &["--workload", "lease-release", "--waiters", "8"],
            &["--workload", "wait", "--hold", "11s"],
            &["--workload", "wait", "--hold", "1500us"],
            &["--workload", "wait", "--hold", "soon"],
            &["--workload", "wait", "--wait", "0ms"],
            &["--workload", "wait", "--wait", "31s"],
        ] {
            assert!(
                matches!(options(argv), Err(BenchError::Invalid(_))),
                "{argv:?} should be refused"
            );
        }
    }

    #[test]
    fn remote_urls_need_allow_remote() {
        let remote = ["--workload", "healthz", "--url", "http://192.0.2.1:8080"];
        assert!(matches!(
            options(&remote),
            Err(BenchError::Target(TargetError::NotLoopback { .. }))
        ));
        let mut allowed = remote.to_vec();
        allowed.push("--allow-remote");
        assert!(options(&allowed).is_ok());
    }
}
