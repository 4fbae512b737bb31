//! Real `keyward serve` processes (the binary Cargo built for these tests)
//! on `127.0.0.1:0`, stopped by PID: SIGTERM, then SIGKILL if it hangs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::helpers::Api;

/// One running keyward process and a client for it.
pub struct Keyward {
    child: Child,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    /// A client for it.
    pub api: Api,
    /// Every log line so far (stdout and stderr).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
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

/// The `addr=HOST:PORT` of the start-up line, if `line` is it.
fn listening_addr(line: &str) -> Option<String> {
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

impl Keyward {
    /// Starts `keyward serve --store STORE --listen 127.0.0.1:0 EXTRA…`
    /// and waits (at most 20 s) for its start-up line.
    pub async fn start(store: &str, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--store", store, "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KEYWARD_ADMIN_TOKEN")
            .env_remove("KEYWARD_CONFIG")
            .env_remove("KEYWARD_LEASE_TTL")
            .env_remove("KEYWARD_KEEPALIVE_TTL")
            .env_remove("KEYWARD_TOKEN_ALPHABET")
            .env_remove("KEYWARD_TOKEN_LENGTH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the keyward binary")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        for reader in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(strip_ansi(&line));
                }
            });
        }
        let mut keyward = Self {
            child,
            addr: String::new(),
            api: Api::new("http://127.0.0.1:1"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = keyward.lines().iter().find_map(|line| listening_addr(line));
            if let Some(addr) = found {
                keyward.api = Api::new(&format!("http://{addr}"));
                keyward.addr = addr;
                return Ok(keyward);
            }
            if let Some(status) = keyward.child.try_wait()? {
                bail!("keyward exited with {status}: {:?}", keyward.lines());
            }
            if Instant::now() > deadline {
                bail!("no start-up line within 20 s: {:?}", keyward.lines());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGTERM by PID and wait (at most 10 s, then SIGKILL); the exit
    /// status must be success.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("run kill -TERM")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("keyward exited with {status}: {:?}", self.lines());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("keyward did not exit within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
