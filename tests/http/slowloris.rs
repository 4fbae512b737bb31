//! Slow clients: a client that trickles its headers or its body must lose
//! its connection at the header or body deadline, so a flood of them cannot
//! hold every connection slot; a client that merely pauses between
//! keep-alive requests is served as before.
//!
//! These tests speak raw HTTP/1.1 over `TcpStream`s, since no HTTP client
//! sends a request one byte at a time. The deadlines are set to 300 ms; every
//! wait is bounded by an outer timeout far below the 60 s idle timeout, the
//! only other thing that would close these connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyward::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use keyward_testkit::app::{TestApp, spawn_app_with};

/// The header and body deadline of these tests' servers.
const DEADLINE: Duration = Duration::from_millis(300);
/// How often a slow client sends its next byte: often enough that the 60 s
/// idle timeout never sees it silent.
const TRICKLE: Duration = Duration::from_millis(50);
/// The longest a one-client test waits for the server to act: ample for
/// a 300 ms deadline on a loaded machine, far below the idle timeout.
const PATIENCE: Duration = Duration::from_secs(10);
/// The bound of every wait of the flood test: 200 clients trickling on a
/// machine busy with other tests are slow to start and to be cut, so it is
/// wider than [`PATIENCE`], and still below the 60 s idle timeout.
const FLOOD_PATIENCE: Duration = Duration::from_secs(30);

async fn spawn_slow_client_app(max_connections: usize) -> TestApp {
    spawn_app_with(Config {
        header_timeout: DEADLINE,
        body_timeout: DEADLINE,
        max_connections,
        ..Config::default()
    })
    .await
}

/// How a trickling client's connection ended.
#[derive(Debug)]
struct Ended {
    /// What the server sent before closing.
    received: Vec<u8>,
    /// Time from the first byte sent to the close.
    after: Duration,
}

/// Sends `head` at once, then one byte of `trickle` every [`TRICKLE`], and
/// reads until the server closes the connection (EOF or reset). Fails if it
/// is still open after `patience`.
async fn trickle_until_closed(
    stream: &mut TcpStream,
    head: &[u8],
    trickle: u8,
    patience: Duration,
) -> Result<Ended> {
    let started = Instant::now();
    stream.write_all(head).await?;
    let mut ticks = tokio::time::interval(TRICKLE);
    ticks.tick().await;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(patience, async {
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) if closed(&e) => return Ok(()),
                    Err(e) => return Err(e),
                },
                _ = ticks.tick() => match stream.write_all(&[trickle]).await {
                    Ok(()) => {}
                    Err(e) if closed(&e) => return Ok(()),
                    Err(e) => return Err(e),
                },
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(Ended {
            received,
            after: started.elapsed(),
        }),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!(
            "still open after {patience:?}, having received {:?}",
            String::from_utf8_lossy(&received)
        ),
    }
}

/// An error that means the peer closed the connection.
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a `Content-Length` body (read and dropped, so
/// the next response starts clean), within [`PATIENCE`].
async fn read_response(stream: &mut TcpStream) -> Result<RawResponse> {
    tokio::time::timeout(PATIENCE, async {
        let mut data = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!(
                    "closed before a whole response head: {:?}",
                    String::from_utf8_lossy(&data)
                );
            }
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8(data[..head_end].to_vec())?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .context("a status line")?
            .parse()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .context("a content-length")?
            .1
            .parse()?;
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("closed in the middle of a response body");
            }
            body.extend_from_slice(&buf[..n]);
        }
        Ok(RawResponse { status, headers })
    })
    .await
    .context("no response in time")?
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: keyward\r\n\r\n";

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_at_the_header_deadline() -> Result<()> {
    let app = spawn_slow_client_app(64).await;
    let mut stream = TcpStream::connect(app.addr).await?;
    let ended = trickle_until_closed(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nx-slow: ",
        b'a',
        PATIENCE,
    )
    .await?;
    assert!(
        ended.received.is_empty(),
        "nothing is answered to headers that never end: {:?}",
        String::from_utf8_lossy(&ended.received)
    );
    // Closed by the deadline, never before it (and PATIENCE bounds it
    // from above).
    assert!(
        ended.after >= DEADLINE,
        "closed after only {:?}",
        ended.after
    );
    // The server is still there for everyone else.
    app.healthz().await?.expect(200);
    Ok(())
}

#[tokio::test]
async fn the_header_deadline_runs_from_the_first_byte_not_from_the_connect() -> Result<()> {
    let app = spawn_slow_client_app(64).await;
    let mut stream = TcpStream::connect(app.addr).await?;
    // Silent for three deadlines: only the idle timeout governs silence.
    tokio::time::sleep(3 * DEADLINE).await;
    stream.write_all(HEALTHZ).await?;
    let reply = read_response(&mut stream).await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn a_keep_alive_client_pausing_longer_than_the_header_deadline_is_still_served() -> Result<()>
{
    let app = spawn_slow_client_app(64).await;
    let mut stream = TcpStream::connect(app.addr).await?;
    for round in 0..3 {
        stream.write_all(HEALTHZ).await?;
        let reply = read_response(&mut stream).await?;
        assert_eq!(reply.status, 200, "round {round}: {reply:?}");
        assert_ne!(reply.header("connection"), Some("close"), "round {round}");
        // Longer than the header deadline, far shorter than the idle
        // timeout: the next request still goes over this connection.
        tokio::time::sleep(3 * DEADLINE).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_trickled_body_gets_408_request_timeout_and_the_connection_closes() -> Result<()> {
    let app = spawn_slow_client_app(64).await;
    let mut stream = TcpStream::connect(app.addr).await?;
    // 1000 bytes announced, one sent every 50 ms: 50 s to finish.
    let head = b"POST /v1/pools/slow/keys HTTP/1.1\r\nhost: keyward\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{";
    let ended = trickle_until_closed(&mut stream, head, b' ', PATIENCE).await?;
    let text = String::from_utf8_lossy(&ended.received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("a whole response before the close: {text:?}"))?;
    assert!(head.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("connection: close")),
        "a 408 announces the close: {text}"
    );
    let body: Value = serde_json::from_str(body).with_context(|| text.clone())?;
    assert_eq!(body["error"]["code"], "request_timeout", "{text}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(
        ended.after >= DEADLINE,
        "answered after only {:?}",
        ended.after
    );
    // Nothing was created: the request never reached its handler.
    app.get_pool("slow")
        .await?
        .expect_error(404, "pool_not_found");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_trickling_clients_does_not_stall_the_server() -> Result<()> {
    const ATTACKERS: usize = 200;
    const SLOTS: usize = 64;
    let app = spawn_slow_client_app(SLOTS).await;
    let flood = Flood::default();
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..ATTACKERS {
        attackers.spawn(attack(app.addr, flood.clone()));
    }
    // Every attacker has connected: they hold every slot and fill the
    // backlog before the honest client queues behind them. Counted, not
    // slept for: a loaded machine starts them slowly.
    wait_until("every attacker connected", || {
        flood.connected.load(Ordering::Relaxed) >= ATTACKERS
    })
    .await?;
    let started = Instant::now();
    let reply = tokio::time::timeout(FLOOD_PATIENCE, app.healthz())
        .await
        .context("/healthz went unanswered during the attack")??;
    let waited = started.elapsed();
    reply.expect(200);
    // The slots are freed by the header deadline: the server cuts more
    // connections than it has slots (however fast /healthz got through).
    wait_until("more connections cut than there are slots", || {
        flood.cut.load(Ordering::Relaxed) > SLOTS
    })
    .await?;
    flood.stop.store(true, Ordering::Relaxed);
    // Attackers still trickling are of no more use; any that failed
    // before (other than by being cut) fails the test.
    attackers.abort_all();
    while let Some(attacker) = attackers.join_next().await {
        match attacker {
            Ok(result) => result?,
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!(
        "/healthz answered after {waited:?} behind {ATTACKERS} trickling clients; {} cut",
        flood.cut.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What the attackers of the flood test share.
#[derive(Clone, Default)]
struct Flood {
    /// Set when the attack is over.
    stop: Arc<AtomicBool>,
    /// Connections opened, over all attackers.
    connected: Arc<AtomicUsize>,
    /// Connections the server closed on them.
    cut: Arc<AtomicUsize>,
}

/// Polls `done` until it holds; fails after [`FLOOD_PATIENCE`].
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + FLOOD_PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            bail!("not done within {FLOOD_PATIENCE:?}: {what}");
        }
        tokio::time::sleep(TRICKLE).await;
    }
    Ok(())
}

/// A slowloris client: opens a connection, trickles header bytes until the
/// server cuts it, and starts over, until `flood.stop` or
/// [`FLOOD_PATIENCE`] is over.
async fn attack(addr: SocketAddr, flood: Flood) -> Result<()> {
    let started = Instant::now();
    while !flood.stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_PATIENCE {
        let mut stream = TcpStream::connect(addr).await?;
        flood.connected.fetch_add(1, Ordering::Relaxed);
        trickle_until_closed(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nx-slow: ",
            b'a',
            FLOOD_PATIENCE,
        )
        .await?;
        flood.cut.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
