//! Stops in the middle of concurrent load. Writers record only what the
//! server acknowledged (a 2xx they received in full); after a restart on
//! the same file every acknowledged change must be there, and no token may
//! ever come out twice.
//!
//! A request sent but not answered may or may not have happened, so the
//! checks never depend on one: a key whose delete was sent is not required
//! to exist, a token whose activation was sent may be either state. Reads
//! count too: no answer may reveal a change a crash could still undo, so a
//! key read as 404 stays 404 and a token read as activated stays so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use keyward_testkit::client::{Api, keys_of, str_field};
use keyward_testkit::process::{Server, TempDir};

const POOL: &str = "load";
const KEYSPACE: &str = "ks";
/// 26^5 ≈ 11.9 M tokens: never exhausted by the test.
const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";
const TOKEN_LENGTH: u32 = 5;
/// Most requests one writer sends in one round.
const MAX_OPS: usize = 20_000;
/// A writer stops by itself this long after it started.
const WRITER_LIMIT: Duration = Duration::from_secs(10);
/// How long writers get to notice the stop flag once the server is gone.
const JOIN_WITHIN: Duration = Duration::from_secs(20);
/// How long the first acknowledgement of a round may take.
const FIRST_ACK_WITHIN: Duration = Duration::from_secs(5);
/// Concurrent readers when checking the state after a restart.
const CHECKERS: usize = 8;

/// What the server acknowledged, accumulated over rounds.
#[derive(Debug, Default)]
struct Ledger {
    /// Keys from a 201 to a generate.
    keys: HashSet<String>,
    /// Keys a delete was sent for, answered or not.
    delete_sent: HashSet<String>,
    /// Keys whose delete got a 204.
    deleted: HashSet<String>,
    /// The last acknowledged lease id of each leased key.
    leases: HashMap<String, u64>,
    /// Acknowledged lease ids, in the order received.
    lease_ids: Vec<u64>,
    /// Every acknowledged token, repeats kept so they can be found.
    tokens: Vec<String>,
    /// Tokens whose activation got a 200.
    activated: HashSet<String>,
    /// Acknowledged keys a read answered 404 for.
    seen_gone: HashSet<String>,
    /// Tokens a read answered "activated" for.
    seen_activated: HashSet<String>,
    /// The highest `issued` count a read of the keyspace answered.
    seen_issued: u64,
    /// Answers the contract does not allow for these requests.
    unexpected: Vec<String>,
}

impl Ledger {
    fn merge(&mut self, other: Ledger) {
        self.keys.extend(other.keys);
        self.delete_sent.extend(other.delete_sent);
        self.deleted.extend(other.deleted);
        self.leases.extend(other.leases);
        self.lease_ids.extend(other.lease_ids);
        self.tokens.extend(other.tokens);
        self.activated.extend(other.activated);
        self.seen_gone.extend(other.seen_gone);
        self.seen_activated.extend(other.seen_activated);
        self.seen_issued = self.seen_issued.max(other.seen_issued);
        self.unexpected.extend(other.unexpected);
    }
}

/// What writers share within a round: acknowledged keys and tokens for
/// the readers to pick from, and a signal at the first acknowledgement.
#[derive(Default)]
struct Shared {
    keys: Mutex<Vec<String>>,
    tokens: Mutex<Vec<String>>,
    first_ack: Notify,
}

impl Shared {
    fn add(list: &Mutex<Vec<String>>, items: &[String]) {
        list.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(items);
    }

    fn pick(list: &Mutex<Vec<String>>) -> Option<String> {
        let list = list.lock().unwrap_or_else(PoisonError::into_inner);
        if list.is_empty() {
            return None;
        }
        Some(list[rand::random_range(0..list.len())].clone())
    }
}

/// One writer: a random mix of generate, lease, delete (of its own keys),
/// issue, activate (of its own tokens), and reads of anyone's keys and
/// tokens, until `stop` or its limits.
async fn writer(api: Api, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut own_keys: Vec<String> = Vec::new();
    let mut own_tokens: Vec<String> = Vec::new();
    let deadline = Instant::now() + WRITER_LIMIT;
    for _ in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let roll: u32 = rand::random_range(0..100);
        let outcome = match roll {
            0..25 => {
                let count = rand::random_range(1..=5u64);
                api.generate_keys(POOL, count)
                    .await
                    .map(|reply| match reply.status {
                        201 => {
                            let keys = keys_of(&reply.body);
                            Shared::add(&shared.keys, &keys);
                            own_keys.extend(keys.iter().cloned());
                            ledger.keys.extend(keys);
                            shared.first_ack.notify_one();
                        }
                        _ => ledger.unexpected.push(format!("generate: {reply:?}")),
                    })
            }
            25..38 => api.lease(POOL).await.map(|reply| match reply.status {
                200 => {
                    let id = reply.u64("lease_id");
                    ledger.leases.insert(reply.str("key"), id);
                    ledger.lease_ids.push(id);
                }
                404 if reply.body["error"]["code"] == "no_free_key" => {}
                _ => ledger.unexpected.push(format!("lease: {reply:?}")),
            }),
            38..50 => {
                if own_keys.is_empty() {
                    continue;
                }
                let key = own_keys.swap_remove(rand::random_range(0..own_keys.len()));
                ledger.delete_sent.insert(key.clone());
                api.delete_key(POOL, &key)
                    .await
                    .map(|reply| match reply.status {
                        204 => {
                            ledger.deleted.insert(key);
                        }
                        _ => ledger.unexpected.push(format!("delete {key}: {reply:?}")),
                    })
            }
            50..72 => api
                .issue_token(KEYSPACE)
                .await
                .map(|reply| match reply.status {
                    201 => {
                        let token = reply.str("token");
                        Shared::add(&shared.tokens, std::slice::from_ref(&token));
                        own_tokens.push(token.clone());
                        ledger.tokens.push(token);
                        shared.first_ack.notify_one();
                    }
                    _ => ledger.unexpected.push(format!("issue: {reply:?}")),
                }),
            72..85 => {
                if own_tokens.is_empty() {
                    continue;
                }
                let token = own_tokens.swap_remove(rand::random_range(0..own_tokens.len()));
                api.activate(KEYSPACE, &token)
                    .await
                    .map(|reply| match reply.status {
                        200 => {
                            ledger.activated.insert(token);
                        }
                        _ => ledger
                            .unexpected
                            .push(format!("activate {token}: {reply:?}")),
                    })
            }
            85..93 => {
                let Some(key) = Shared::pick(&shared.keys) else {
                    continue;
                };
                api.get_key(POOL, &key)
                    .await
                    .map(|reply| match reply.status {
                        200 => {}
                        404 if reply.body["error"]["code"] == "key_not_found" => {
                            ledger.seen_gone.insert(key);
                        }
                        _ => ledger.unexpected.push(format!("read key {key}: {reply:?}")),
                    })
            }
            93..96 => {
                api.get_keyspace(KEYSPACE)
                    .await
                    .map(|reply| match reply.body["issued"].as_u64() {
                        Some(issued) if reply.status == 200 => {
                            ledger.seen_issued = ledger.seen_issued.max(issued);
                        }
                        _ => ledger.unexpected.push(format!("read keyspace: {reply:?}")),
                    })
            }
            _ => {
                let Some(token) = Shared::pick(&shared.tokens) else {
                    continue;
                };
                api.token_status(KEYSPACE, &token)
                    .await
                    .map(|reply| match reply.status {
                        200 if reply.body["state"] == "activated" => {
                            ledger.seen_activated.insert(token);
                        }
                        200 if reply.body["state"] == "issued" => {}
                        _ => ledger
                            .unexpected
                            .push(format!("read token {token}: {reply:?}")),
                    })
            }
        };
        if outcome.is_err() {
            // The server is gone (or going): no answer, nothing recorded.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ledger
}

/// Runs `writers` writers against `server`, stops the server with `stop`
/// `delay` after the first acknowledgement, and returns what they
/// recorded.
async fn load_then<F>(server: Server, writers: usize, delay: Duration, stop: F) -> Result<Ledger>
where
    F: AsyncFnOnce(Server) -> Result<()>,
{
    let flag = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for _ in 0..writers {
        set.spawn(writer(server.api.clone(), shared.clone(), flag.clone()));
    }
    let first = tokio::time::timeout(FIRST_ACK_WITHIN, shared.first_ack.notified()).await;
    let stopped = match first {
        Ok(()) => {
            tokio::time::sleep(delay).await;
            stop(server).await
        }
        Err(_) => Err(anyhow::anyhow!(
            "nothing was acknowledged within {FIRST_ACK_WITHIN:?} of load\n{}",
            server.output()
        )),
    };
    flag.store(true, Ordering::Relaxed);
    let mut ledger = Ledger::default();
    let joined = tokio::time::timeout(JOIN_WITHIN, async {
        while let Some(done) = set.join_next().await {
            ledger.merge(done.context("a writer panicked")?);
        }
        anyhow::Ok(())
    })
    .await;
    stopped?;
    joined.context("writers did not stop")??;
    Ok(ledger)
}

/// One read to make after a restart.
#[derive(Debug)]
enum Check {
    /// The key exists; when leased by an acknowledged lease, still with it.
    Present { key: String, lease_id: Option<u64> },
    /// The key is 404.
    Gone(String),
    /// The token was issued; `activated` if its activation was acknowledged.
    Token { token: String, activated: bool },
}

impl Check {
    async fn run(&self, api: &Api) -> Result<()> {
        match self {
            Self::Present { key, lease_id } => {
                let reply = api.get_key(POOL, key).await?;
                ensure!(
                    reply.status == 200,
                    "acknowledged key {key} is missing: {} {}",
                    reply.status,
                    reply.text
                );
                let body = &reply.body;
                if let Some(id) = lease_id {
                    ensure!(
                        body["state"] == "leased" && body["lease_id"] == *id,
                        "key {key} was leased with lease_id {id}, now {body}"
                    );
                }
            }
            Self::Gone(key) => {
                let reply = api.get_key(POOL, key).await?;
                ensure!(
                    reply.status == 404,
                    "acknowledged delete of {key} was undone: {} {}",
                    reply.status,
                    reply.text
                );
                reply.expect_error(404, "key_not_found");
            }
            Self::Token { token, activated } => {
                let reply = api.token_status(KEYSPACE, token).await?;
                ensure!(
                    reply.status == 200,
                    "acknowledged token {token} is not issued: {} {}",
                    reply.status,
                    reply.text
                );
                let body = &reply.body;
                let state = &body["state"];
                if *activated {
                    ensure!(state == "activated", "activation of {token} lost: {body}");
                } else {
                    ensure!(
                        state == "issued" || state == "activated",
                        "token {token}: {body}"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Checks everything in `ledger` against a freshly started server.
async fn verify(api: &Api, ledger: &Ledger) -> Result<()> {
    ensure!(
        ledger.unexpected.is_empty(),
        "answers outside the contract: {:?}",
        ledger.unexpected
    );
    let distinct: HashSet<&String> = ledger.tokens.iter().collect();
    if distinct.len() != ledger.tokens.len() {
        let mut seen = HashSet::new();
        let repeated: Vec<&String> = ledger.tokens.iter().filter(|t| !seen.insert(*t)).collect();
        bail!("tokens issued twice: {repeated:?}");
    }
    let distinct: HashSet<u64> = ledger.lease_ids.iter().copied().collect();
    ensure!(
        distinct.len() == ledger.lease_ids.len(),
        "a lease id was handed out twice: {:?}",
        ledger.lease_ids
    );

    let mut checks = Vec::new();
    let known: HashSet<&String> = ledger.keys.iter().chain(ledger.leases.keys()).collect();
    for key in known {
        if !ledger.delete_sent.contains(key) {
            checks.push(Check::Present {
                key: key.clone(),
                lease_id: ledger.leases.get(key).copied(),
            });
        }
    }
    let gone: HashSet<&String> = ledger.deleted.iter().chain(&ledger.seen_gone).collect();
    checks.extend(gone.into_iter().cloned().map(Check::Gone));
    checks.extend(ledger.tokens.iter().map(|t| Check::Token {
        token: t.clone(),
        activated: ledger.activated.contains(t) || ledger.seen_activated.contains(t),
    }));
    let per_checker = checks.len().div_ceil(CHECKERS).max(1);
    let mut set = JoinSet::new();
    let mut checks = checks.into_iter();
    loop {
        let chunk: Vec<Check> = checks.by_ref().take(per_checker).collect();
        if chunk.is_empty() {
            break;
        }
        let api = api.clone();
        set.spawn(async move {
            for check in &chunk {
                check.run(&api).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.context("a checker panicked")??;
    }

    if ledger.tokens.is_empty() && ledger.seen_issued == 0 {
        return Ok(());
    }
    let info = api.get_keyspace(KEYSPACE).await?.expect(200).clone();
    let issued = info["issued"].as_u64().context("issued")?;
    let activated = info["activated"].as_u64().context("activated")?;
    ensure!(
        issued >= ledger.tokens.len() as u64,
        "keyspace says {issued} issued, {} were acknowledged",
        ledger.tokens.len()
    );
    ensure!(
        issued >= ledger.seen_issued,
        "keyspace says {issued} issued, a read before the kill said {}",
        ledger.seen_issued
    );
    ensure!(
        activated >= ledger.activated.len() as u64,
        "keyspace says {activated} activated, {} were acknowledged",
        ledger.activated.len()
    );
    Ok(())
}

/// Creates the keyspace the writers use (201 the first time, 200 after).
async fn ensure_keyspace(api: &Api) -> Result<()> {
    let reply = api.put_keyspace(KEYSPACE, ALPHABET, TOKEN_LENGTH).await?;
    ensure!(
        reply.status == 200 || reply.status == 201,
        "PUT keyspace: {reply:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_change_survives_kill_9_under_concurrent_load() -> Result<()> {
    const ROUNDS: usize = 4;
    const WRITERS: usize = 16;
    let dir = TempDir::new("crash")?;
    let launch = crate::launch(&dir);
    let mut ledger = Ledger::default();
    let mut highest_lease_id = 0;
    for round in 1..=ROUNDS {
        let server = launch.start().await?;
        verify(&server.api, &ledger)
            .await
            .with_context(|| format!("checking rounds before round {round}"))?;
        ensure_keyspace(&server.api).await?;
        let delay = Duration::from_millis(rand::random_range(100..=600));
        let got = load_then(server, WRITERS, delay, async |s: Server| s.kill()).await?;
        eprintln!(
            "round {round}: SIGKILL {delay:?} into the load: {} keys, {} deletes, {} leases, {} tokens, {} activations acknowledged; {} keys read as gone, {} tokens read as activated",
            got.keys.len(),
            got.deleted.len(),
            got.lease_ids.len(),
            got.tokens.len(),
            got.activated.len(),
            got.seen_gone.len(),
            got.seen_activated.len()
        );
        if let Some(lowest) = got.lease_ids.iter().min() {
            ensure!(
                *lowest > highest_lease_id,
                "round {round} handed out lease id {lowest}, not above {highest_lease_id} from before the kill"
            );
        }
        highest_lease_id = highest_lease_id.max(got.lease_ids.iter().copied().max().unwrap_or(0));
        ledger.merge(got);
    }
    let server = launch.start().await?;
    verify(&server.api, &ledger)
        .await
        .context("checking every round after the last kill")?;
    ensure!(
        !ledger.keys.is_empty()
            && !ledger.deleted.is_empty()
            && !ledger.lease_ids.is_empty()
            && !ledger.tokens.is_empty()
            && !ledger.activated.is_empty(),
        "the load acknowledged too little to prove anything: {} keys, {} deletes, {} leases, {} tokens, {} activations",
        ledger.keys.len(),
        ledger.deleted.len(),
        ledger.lease_ids.len(),
        ledger.tokens.len(),
        ledger.activated.len()
    );
    server.terminate(Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_0_within_5_s_and_keeps_every_acknowledged_key() -> Result<()> {
    let dir = TempDir::new("sigterm")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    ensure_keyspace(&server.api).await?;
    let ledger = load_then(server, 8, Duration::from_millis(300), async |s: Server| {
        s.terminate(Duration::from_secs(5)).await
    })
    .await?;
    ensure!(
        !ledger.keys.is_empty(),
        "no key was acknowledged before SIGTERM"
    );

    let server = launch.start().await?;
    verify(&server.api, &ledger).await?;
    server.terminate(Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_of_start_up_leaves_a_database_that_starts() -> Result<()> {
    const KILLS: usize = 8;
    let dir = TempDir::new("startup-kill")?;
    let launch = crate::launch(&dir);
    // Enough state that loading and the start-up commit take a moment.
    let server = launch.start().await?;
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.extend(server.api.new_keys(POOL, 1000).await?);
    }
    ensure_keyspace(&server.api).await?;
    let token = str_field(server.api.issue_token(KEYSPACE).await?.expect(201), "token");
    server.kill()?;

    for _ in 0..KILLS {
        let server = launch.spawn()?;
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..=40))).await;
        server.kill()?;
    }
    let server = launch.start().await?;
    let pool = server.api.get_pool(POOL).await?.expect(200).clone();
    assert_eq!(pool["total"], 5000, "{pool}");
    for key in keys.iter().step_by(97) {
        server.api.get_key(POOL, key).await?.expect(200);
    }
    assert_eq!(
        server
            .api
            .token_status(KEYSPACE, &token)
            .await?
            .expect(200)
            .clone()["state"],
        "issued"
    );
    server.terminate(Duration::from_secs(5)).await
}
