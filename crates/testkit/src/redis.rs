//! Private `redis-server` processes for tests: on a free loopback port,
//! with no persistence, each in its own temp dir, killed by PID when
//! dropped; and a 3-master Redis Cluster of them. Never the machine's own
//! Redis on 6379.
//!
//! Without `redis-server`/`redis-cli` on PATH a test skips with a loud
//! note ([`skip`]), or fails when `KEYWARD_REQUIRE_ALL_BACKENDS=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{ChildGuard, TempDir, free_port};

/// Set to `1` to fail, not skip, when `redis-server` is missing.
pub const REQUIRE_ALL: &str = "KEYWARD_REQUIRE_ALL_BACKENDS";

/// Whether `redis-server` (and `redis-cli`) can be run here.
pub fn available() -> bool {
    ["redis-server", "redis-cli"].iter().all(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// True when the caller should skip: Redis is missing and skipping is
/// allowed (says so loudly). Panics when Redis is missing and
/// `KEYWARD_REQUIRE_ALL_BACKENDS=1`.
pub fn skip(test: &str) -> bool {
    if available() {
        return false;
    }
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("redis-server/redis-cli not found and {REQUIRE_ALL}=1 ({test})");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED: {test}: redis-server/redis-cli not on PATH; \
         set {REQUIRE_ALL}=1 to make this an error\n"
    );
    true
}

/// One `redis-server` child; killed by PID when dropped.
pub struct RedisServer {
    child: Option<ChildGuard>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
    cluster: bool,
}

impl RedisServer {
    /// A fresh server on a free port, answering `PING`.
    pub fn start() -> Result<Self> {
        Self::start_on(free_port()?, false)
    }

    /// A fresh server on `port` (`cluster`: with cluster mode on).
    pub fn start_on(port: u16, cluster: bool) -> Result<Self> {
        let dir = TempDir::new(&format!("redis-{port}"))?;
        let mut server = Self {
            child: None,
            port,
            dir,
            cluster,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.path().join(format!("nodes-{port}.conf")));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server")?;
        self.child = Some(ChildGuard(child));
        self.wait_until_up(Duration::from_secs(10))
    }

    fn wait_until_up(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.0.try_wait()
            {
                bail!("redis-server on port {} exited: {status}", self.port);
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "redis-server on port {} did not answer within {limit:?}",
            self.port
        )
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, by PID) and waits for it.
    pub fn kill(&mut self) {
        // The guard kills and reaps it.
        self.child = None;
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

/// True if something on `port` answers `PING` with `+PONG`.
pub fn ping(port: u16) -> bool {
    command(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
}

/// Sends one inline command to `127.0.0.1:port`; the first reply chunk.
pub fn command(port: u16, cmd: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A 3-master Redis Cluster on free loopback ports.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-mode servers, joins them with
    /// `redis-cli --cluster create`, and waits for `cluster_state:ok`.
    pub fn start() -> Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_on(cluster_port()?, true)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("run redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                command(n.port, "CLUSTER INFO").is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(Self { nodes });
            }
            if Instant::now() > deadline {
                bail!("the cluster did not reach cluster_state:ok within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

/// A free port for a cluster node whose bus port (port + 10000) is free
/// too and still a valid port. Bounded: 100 tries.
fn cluster_port() -> Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (port, port + 10000) on 127.0.0.1 after 100 tries")
}
