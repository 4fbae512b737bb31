//! SIGTERM stops the server even when a client is stuck: a request cannot
//! hold a shutdown for longer than the server's own request timeout
//! (10 s), so an operator's `systemctl stop` or a rolling deploy finishes.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use keyward_testkit::process::TempDir;

/// The server's request timeout plus a margin for a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(12);

#[tokio::test]
async fn sigterm_exits_0_even_while_a_client_stalls_mid_request() -> Result<()> {
    let dir = TempDir::new("stalled")?;
    let launch = crate::launch(&dir);
    let mut server = launch.start().await?;
    let keys = server.api.new_keys("p", 3).await?;
    let addr = server.api.addr();

    // One client stops in the middle of its headers, one in the middle of
    // its body; both keep their connections open.
    let mut in_headers = TcpStream::connect(addr).context("connect")?;
    in_headers.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n")?;
    let mut in_body = TcpStream::connect(addr).context("connect")?;
    in_body.write_all(
        b"POST /v1/pools/p/keys HTTP/1.1\r\nHost: keyward\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"count\"",
    )?;
    // Let the server read what was sent.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let asked = Instant::now();
    server.sigterm()?;
    let status = server
        .wait_exit(STOP_WITHIN)
        .await
        .context("a stalled client held the shutdown")?;
    ensure!(
        status.success(),
        "SIGTERM ends with exit code 0, got {status}\n{}",
        server.output()
    );
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());
    drop((in_headers, in_body));

    let server = launch.start().await?;
    for key in &keys {
        server.api.get_key("p", key).await?.expect(200);
    }
    server.terminate(Duration::from_secs(5)).await
}
