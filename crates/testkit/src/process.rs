//! The real `keyward` binary as a child process: one launcher for every
//! process-level test.
//!
//! The binary's path is the caller's: only the root package's integration
//! tests see `env!("CARGO_BIN_EXE_keyward")`, so they pass it to
//! [`Launch::new`]. Every start listens on `127.0.0.1:0` and the address is
//! read from the start-up line (`keyward listening addr=…`) on stderr, so
//! no port can be lost to a race. stdout and stderr go to files (a pipe
//! nobody reads could fill up and stall the server). A child still running
//! when its handle is dropped is killed by its PID. Every wait is bounded.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use crate::client::Api;

/// How long a server may take to log its address, then to answer
/// `GET /readyz` with 200.
pub const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long a refused start may take to exit.
pub const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// How long [`Server::stop`] waits for the exit after SIGTERM.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Pause between polls of a process, a log file or an endpoint.
const POLL: Duration = Duration::from_millis(20);

/// A fresh, uniquely named number for file and directory names.
fn unique() -> String {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nothing listens on right now (bound again by the caller, who
/// must cope with losing it to another process).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `keyward-<tag>-<unique>`.
    pub fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("keyward-{tag}-{}", unique()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create temp dir {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file the SQLite tests use inside it.
    pub fn db(&self) -> PathBuf {
        self.path.join("k.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process that is killed (by its PID) and reaped when dropped,
/// unless it already exited.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Only a child we have not reaped yet: its PID is still ours.
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `addr=HOST:PORT` of the start-up line, if `line` is it (coloured
/// or not).
pub fn listening_addr(line: &str) -> Option<String> {
    let line = strip_ansi(line);
    if !line.contains("keyward listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    Some(addr.trim_matches('"').to_owned())
}

/// How to start `keyward serve --store STORE --listen 127.0.0.1:0 ARGS…`:
/// the same `Launch` starts the server again (on the same store) after a
/// kill.
///
/// The child gets `RUST_LOG=info`, `NO_COLOR=1` and none of the test's
/// `KEYWARD_*` variables unless set with [`Launch::env`]: the test's own
/// environment must not change the server's settings.
#[derive(Clone, Debug)]
pub struct Launch {
    bin: PathBuf,
    store: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_level: String,
    no_color: bool,
    logs: Option<PathBuf>,
}

impl Launch {
    /// The binary at `bin` (pass `env!("CARGO_BIN_EXE_keyward")`) on the
    /// store URL `store`; logs in a temp dir of each start's own.
    pub fn new(bin: impl Into<PathBuf>, store: &str) -> Self {
        Self {
            bin: bin.into(),
            store: store.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            log_level: "info".to_owned(),
            no_color: true,
            logs: None,
        }
    }

    /// `--store sqlite:<db>`, logs written into `logs`.
    pub fn sqlite(bin: impl Into<PathBuf>, db: &Path, logs: &Path) -> Self {
        let mut launch = Self::new(bin, &format!("sqlite:{}", db.display()));
        launch.logs = Some(logs.to_owned());
        launch
    }

    /// The same launch with more flags.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The same launch with `name=value` in the child's environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same launch at another `RUST_LOG` level.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// The same launch without `NO_COLOR`: the server alone decides
    /// whether to colour its logs.
    pub fn colour_left_to_the_server(mut self) -> Self {
        self.no_color = false;
        self
    }

    /// Starts the binary; nothing waits for it (to kill it while it starts
    /// up, or to see it refuse).
    pub fn spawn(&self) -> Result<Process> {
        let (logs, own_dir) = match &self.logs {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = TempDir::new("process")?;
                (dir.path().to_owned(), Some(dir))
            }
        };
        let id = unique();
        let stdout = logs.join(format!("server-{id}.stdout"));
        let stderr = logs.join(format!("server-{id}.stderr"));
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--store", &self.store, "--listen", "127.0.0.1:0"])
            .args(&self.args)
            .env("RUST_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).context("create the stdout file")?)
            .stderr(File::create(&stderr).context("create the stderr file")?);
        if self.no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(n, v)| (n, v)));
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        Ok(Process {
            child: ChildGuard(child),
            stdout,
            stderr,
            _logs: own_dir,
        })
    }

    /// Starts the server and waits until it has logged its address; it
    /// may not be ready (a store that is down answers `/readyz` 503).
    pub async fn start_listening(&self) -> Result<Server> {
        self.spawn()?.listening(READY_WITHIN).await
    }

    /// Starts the server and waits until `GET /readyz` answers 200.
    pub async fn start(&self) -> Result<Server> {
        let mut server = self.start_listening().await?;
        server.wait_ready(READY_WITHIN).await?;
        Ok(server)
    }

    /// Starts the server expecting it to refuse: waits up to
    /// [`EXIT_WITHIN`] for it to exit, and fails if it is still running.
    pub async fn start_expecting_exit(&self) -> Result<Exited> {
        let mut process = self.spawn()?;
        match process.wait_exit(EXIT_WITHIN).await {
            Ok(status) => Ok(Exited {
                status,
                stderr: process.stderr(),
            }),
            Err(e) => {
                let addr = process.stderr().lines().find_map(listening_addr);
                Err(e.context(format!(
                    "the server was expected to refuse to start (it logged addr={addr:?})"
                )))
            }
        }
    }
}

/// A server that exited by itself.
#[derive(Debug)]
pub struct Exited {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A started `keyward` child and its logs. Dropping it SIGKILLs it if it
/// still runs.
#[derive(Debug)]
pub struct Process {
    child: ChildGuard,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The log dir when the launch named none; removed after the child.
    _logs: Option<TempDir>,
}

impl Process {
    /// Waits up to `within` for the start-up line on stderr; fails if the
    /// process exits first (with everything it printed).
    pub async fn listening(mut self, within: Duration) -> Result<Server> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = self.stderr().lines().find_map(listening_addr) {
                let addr: SocketAddr = addr
                    .parse()
                    .with_context(|| format!("the logged address {addr:?}"))?;
                return Ok(Server {
                    api: Api::new(addr),
                    addr,
                    process: self,
                });
            }
            if let Some(status) = self.child.0.try_wait()? {
                bail!(
                    "keyward exited with {status} before it listened\n{}",
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no `keyward listening addr=` line on stderr within {within:?}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGKILL, then reap: nothing is flushed, nothing is said goodbye.
    pub fn kill(mut self) -> Result<()> {
        self.child.0.kill().context("SIGKILL the server")?;
        self.child.0.wait().context("reap the killed server")?;
        Ok(())
    }

    /// Sends SIGTERM to this process's PID.
    pub fn sigterm(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("run kill -TERM")?;
        ensure!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
        Ok(())
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "keyward (pid {}) still runs {within:?} later\n{}",
                    self.pid(),
                    self.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then requires exit code 0 within `within`.
    pub async fn terminate(mut self, within: Duration) -> Result<()> {
        self.sigterm_and_wait(within).await
    }

    async fn sigterm_and_wait(&mut self, within: Duration) -> Result<()> {
        self.sigterm()?;
        let status = self.wait_exit(within).await?;
        ensure!(
            status.success(),
            "SIGTERM must end keyward with exit code 0, got {status}\n{}",
            self.output()
        );
        Ok(())
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every line of stdout then stderr so far, without ANSI escapes.
    pub fn lines(&self) -> Vec<String> {
        let (stdout, stderr) = (self.stdout(), self.stderr());
        stdout
            .lines()
            .chain(stderr.lines())
            .map(strip_ansi)
            .collect()
    }

    /// Both logs, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

/// A running `keyward serve` that has logged its address, and a client
/// for it. Derefs to its [`Process`]; dropping it SIGKILLs it if it still
/// runs.
#[derive(Debug)]
pub struct Server {
    process: Process,
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client for it.
    pub api: Api,
}

impl Server {
    /// Polls `GET /readyz` (1 s per try) until 200; fails if the process
    /// exits first or after `within`.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.child.0.try_wait() {
                bail!(
                    "keyward exited with {status} before it was ready\n{}",
                    self.output()
                );
            }
            if let Ok(Ok(reply)) =
                tokio::time::timeout(Duration::from_secs(1), self.api.readyz()).await
                && reply.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("keyward was not ready within {within:?}\n{}", self.output())
    }

    /// SIGKILL, then reap (see [`Process::kill`]).
    pub fn kill(self) -> Result<()> {
        self.process.kill()
    }

    /// SIGTERM, then requires exit code 0 within `within`.
    pub async fn terminate(self, within: Duration) -> Result<()> {
        self.process.terminate(within).await
    }

    /// SIGTERM, then requires exit code 0 within [`STOP_WITHIN`].
    pub async fn stop(self) -> Result<()> {
        self.terminate(STOP_WITHIN).await
    }

    /// SIGTERM, requires exit code 0 within [`STOP_WITHIN`], and hands
    /// back the exited process, to read its logs.
    pub async fn stop_and_keep_logs(self) -> Result<Process> {
        let mut process = self.process;
        process.sigterm_and_wait(STOP_WITHIN).await?;
        Ok(process)
    }
}

impl std::ops::Deref for Server {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

#[cfg(test)]
mod tests {
    use super::listening_addr;

    #[test]
    fn the_start_up_line_parser_finds_the_address_with_or_without_colour() {
        let plain = "2026-01-01T00:00:00Z  INFO keyward: keyward listening addr=127.0.0.1:4321 store=memory:";
        assert_eq!(listening_addr(plain).as_deref(), Some("127.0.0.1:4321"));
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mkeyward\u{1b}[0m: keyward listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4321 \u{1b}[3mstore\u{1b}[0m";
        assert_eq!(listening_addr(coloured).as_deref(), Some("127.0.0.1:4321"));
        assert_eq!(listening_addr("keyward stopped"), None);
    }
}
