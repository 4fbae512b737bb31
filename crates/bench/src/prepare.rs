//! Preparation, before the clock starts: check the server answers, create
//! the pool and its keys, the keyspace and its tokens — whatever the
//! workload needs and nothing else.
//!
//! Everything here goes through the same [`Endpoint`] as the load, so a
//! wrong admin token or a missing route fails here, with the server's
//! answer, not as a run full of errors.

use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;
use tokio::task::JoinSet;

use super::conn::{Conn, Endpoint};
use super::workload::{Board, Fixtures, Workload, parse_token};
use super::{BenchError, BenchOptions};

/// The most keys one generate request may ask for (the server refuses more).
const GENERATE_BATCH: u64 = 10_000;

/// The alphabet of a keyspace the bench creates: 62^8 ≈ 2.2·10^14 tokens,
/// more than any run can issue.
const BENCH_ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// The token length of a keyspace the bench creates.
const BENCH_TOKEN_LENGTH: u32 = 8;
/// Most connections issuing tokens at once during preparation.
const PREPARE_PARALLELISM: usize = 8;

/// What the workers start from.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// URIs shared by all workers.
    pub(crate) fixtures: Fixtures,
    /// Activate URIs of fresh tokens, one share per worker.
    pub(crate) fresh: Vec<Vec<Uri>>,
}

/// Prepares what `opts.workload` needs, over `conn` (plus a few parallel
/// connections to issue tokens). Progress lines go to stderr when `verbose`.
pub(crate) async fn prepare(
    ep: &Endpoint,
    conn: Conn,
    opts: &BenchOptions,
    verbose: bool,
) -> Result<Prepared, BenchError> {
    let say = |line: String| {
        if verbose {
            eprintln!("preparing: {line}");
        }
    };
    let workers = opts.connections.get();
    let mut caller = Caller { ep, conn };
    caller
        .call(
            "GET /healthz",
            Method::GET,
            "/healthz",
            "",
            &[StatusCode::OK],
        )
        .await?;
    let mut fixtures = Fixtures::new(&opts.pool, &opts.keyspace);
    let workload = opts.workload;

    if workload == Workload::Wait {
        // A fresh pool: every key free, none still leased by an earlier run.
        let path = format!("/v1/pools/{}", opts.pool);
        say(format!(
            "recreating pool {} with {} keys",
            opts.pool, opts.keys
        ));
        caller
            .call(
                "DELETE pool",
                Method::DELETE,
                &path,
                "",
                &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            )
            .await?;
        caller
            .call(
                "PUT pool",
                Method::PUT,
                &path,
                "{}",
                &[StatusCode::OK, StatusCode::CREATED],
            )
            .await?;
        let keys = caller.generate(opts.pool.as_str(), opts.keys).await?;
        fixtures.board = Board::new(keys);
        fixtures.lease_body = Bytes::from(format!(r#"{{"wait_ms":{}}}"#, opts.wait.as_millis()));
        fixtures.hold = opts.hold;
    }

    if workload.uses_pool() {
        let path = format!("/v1/pools/{}", opts.pool);
        let (_, body) = caller
            .call(
                "PUT pool",
                Method::PUT,
                &path,
                "{}",
                &[StatusCode::OK, StatusCode::CREATED],
            )
            .await?;
        let total = parse::<PoolTotal>("PUT pool", &body)?.total;
        let wanted = if workload.needs_key_names() {
            say(format!(
                "generating {} keys in pool {}",
                opts.keys, opts.pool
            ));
            opts.keys
        } else {
            let missing = opts.keys.saturating_sub(total);
            say(format!(
                "pool {} has {total} keys; generating {missing} more",
                opts.pool
            ));
            missing
        };
        let keys = caller.generate(&opts.pool.to_string(), wanted).await?;
        if workload.needs_key_names() {
            fixtures.keepalive = keys
                .iter()
                .map(|k| fixtures.key_uri(k, "keepalive"))
                .collect::<Result<_, _>>()
                .map_err(|e| BenchError::BadAnswer {
                    step: "POST keys".into(),
                    detail: e.to_string(),
                })?;
        }
    }

    let mut fresh = vec![Vec::new(); workers];
    if workload.uses_keyspace() {
        let path = format!("/v1/keyspaces/{}", opts.keyspace);
        let def = format!(r#"{{"alphabet":"{BENCH_ALPHABET}","length":{BENCH_TOKEN_LENGTH}}}"#);
        let (status, _) = caller
            .call(
                "PUT keyspace",
                Method::PUT,
                &path,
                &def,
                &[StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::CONFLICT {
            say(format!(
                "keyspace {} exists with another alphabet or length; using it as it is",
                opts.keyspace
            ));
        }
        if workload.needs_status_tokens() || workload == Workload::Activate {
            say(format!(
                "issuing {} tokens in keyspace {}",
                opts.tokens, opts.keyspace
            ));
            let tokens = issue_tokens(ep, &fixtures, opts.tokens, workers).await?;
            let uri = |t: &String, action| {
                fixtures
                    .token_uri(t, action)
                    .map_err(|e| BenchError::BadAnswer {
                        step: "POST tokens".into(),
                        detail: e.to_string(),
                    })
            };
            if workload == Workload::Activate {
                for (i, t) in tokens.iter().enumerate() {
                    fresh[i % workers].push(uri(t, "activate")?);
                }
            } else {
                fixtures.status = tokens
                    .iter()
                    .map(|t| uri(t, ""))
                    .collect::<Result<_, _>>()?;
            }
        }
    }
    if (workload.needs_key_names() && fixtures.keepalive.is_empty())
        || (workload.needs_status_tokens() && fixtures.status.is_empty())
    {
        return Err(BenchError::Invalid(
            "this workload needs --keys and --tokens of at least 1".into(),
        ));
    }
    Ok(Prepared { fixtures, fresh })
}

#[derive(Deserialize)]
struct PoolTotal {
    total: u64,
}

#[derive(Deserialize)]
struct GeneratedKeys {
    keys: Vec<GeneratedKey>,
}

#[derive(Deserialize)]
struct GeneratedKey {
    key: String,
}

fn parse<'a, T: Deserialize<'a>>(step: &str, body: &'a [u8]) -> Result<T, BenchError> {
    serde_json::from_slice(body).map_err(|e| BenchError::BadAnswer {
        step: step.to_owned(),
        detail: e.to_string(),
    })
}

/// Sequential calls on one connection, reopened if the server closed it.
struct Caller<'a> {
    ep: &'a Endpoint,
    conn: Conn,
}

impl Caller<'_> {
    /// One request; any status outside `accept` is an error carrying the
    /// server's answer.
    async fn call(
        &mut self,
        step: &str,
        method: Method,
        path: &str,
        body: &str,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Bytes), BenchError> {
        let transport = |source| BenchError::Transport {
            step: step.to_owned(),
            source,
        };
        if self.conn.is_closed() {
            self.conn = self.ep.open().await.map_err(transport)?;
        }
        let uri = Uri::try_from(path).map_err(|e| BenchError::Invalid(format!("{path}: {e}")))?;
        let req = self
            .ep
            .request(method, uri, Bytes::copy_from_slice(body.as_bytes()));
        let (status, body) = self.conn.exchange(req).await.map_err(transport)?;
        if !accept.contains(&status) {
            return Err(BenchError::Refused {
                step: step.to_owned(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            });
        }
        Ok((status, body))
    }

    /// Generates `count` keys in batches of [`MAX_GENERATE`]; returns them.
    async fn generate(&mut self, pool: &str, count: u64) -> Result<Vec<String>, BenchError> {
        let path = format!("/v1/pools/{pool}/keys");
        let mut keys = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut left = count;
        while left > 0 {
            let batch = left.min(GENERATE_BATCH);
            let (_, body) = self
                .call(
                    "POST keys",
                    Method::POST,
                    &path,
                    &format!(r#"{{"count":{batch}}}"#),
                    &[StatusCode::CREATED],
                )
                .await?;
            keys.extend(
                parse::<GeneratedKeys>("POST keys", &body)?
                    .keys
                    .into_iter()
                    .map(|k| k.key),
            );
            left -= batch;
        }
        Ok(keys)
    }
}

/// Issues `count` tokens over up to [`PREPARE_PARALLELISM`] connections.
async fn issue_tokens(
    ep: &Endpoint,
    fixtures: &Fixtures,
    count: u64,
    workers: usize,
) -> Result<Vec<String>, BenchError> {
    let parallel = workers.clamp(1, PREPARE_PARALLELISM) as u64;
    let mut tasks = JoinSet::new();
    for i in 0..parallel {
        let share = count / parallel + u64::from(i < count % parallel);
        let ep = ep.clone();
        let uri = fixtures.issue();
        tasks.spawn(async move {
            let conn = ep.open().await.map_err(|source| BenchError::Transport {
                step: "opening a connection to issue tokens".into(),
                source,
            })?;
            let mut caller = Caller { ep: &ep, conn };
            let path = uri.path().to_owned();
            let mut tokens = Vec::with_capacity(usize::try_from(share).unwrap_or(0));
            for _ in 0..share {
                let (_, body) = caller
                    .call(
                        "POST tokens",
                        Method::POST,
                        &path,
                        "",
                        &[StatusCode::CREATED],
                    )
                    .await?;
                let token = parse_token(&body).map_err(|e| BenchError::BadAnswer {
                    step: "POST tokens".into(),
                    detail: e.to_string(),
                })?;
                tokens.push(token.into_owned());
            }
            Ok::<_, BenchError>(tokens)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(super::joined_ok(joined)?);
    }
    Ok(all)
}
