//! The real binary: `keyward serve --store memory: --listen 127.0.0.1:0`
//! announces its address, serves, and exits 0 on SIGTERM; redirected, it
//! logs to stderr without colour; an empty `--admin-token ''` or
//! `KEYWARD_ADMIN_TOKEN=` never switches off a token the other sets.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;

use crate::helpers::Api;

/// Kills the child if the test fails before it exits by itself.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_an_ephemeral_port_and_exits_0_on_sigterm() -> Result<()> {
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--store", "memory:", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KEYWARD_ADMIN_TOKEN")
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the keyward binary")?;
    let mut child = ChildGuard(child);
    let pid = child.0.id();

    // The start-up line may go to stdout or stderr: watch both.
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.0.stdout.take().context("piped stdout")?;
    let stderr = child.0.stderr.take().context("piped stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let addr = tokio::task::spawn_blocking(move || -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        return Ok(addr);
                    }
                    seen.push(line);
                }
                Err(_) => bail!("no `keyward listening addr=` line within 20 s; got {seen:?}"),
            }
        }
    })
    .await??;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, "127.0.0.1:0", "the real port is logged");

    let api = Api::new(&format!("http://{addr}"));
    api.healthz().await?.expect(200);
    api.readyz().await?.expect(200);
    let key = api
        .random_api_key(Method::POST, true, None)
        .await?
        .str("api_key");
    assert_eq!(
        *api.random_api_key(Method::GET, true, None)
            .await?
            .expect(200),
        json!({"api_key": key})
    );
    api.compat_get_token().await?.expect(200);

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("run kill -TERM")?;
    assert!(killed.success(), "kill -TERM {pid} failed");

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            bail!("keyward did not exit within 5 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    Ok(())
}

#[test]
fn the_start_up_line_parser_finds_the_address_with_or_without_colour() {
    let plain =
        "2026-01-01T00:00:00Z  INFO keyward: keyward listening addr=127.0.0.1:4321 store=memory:";
    assert_eq!(listening_addr(plain).as_deref(), Some("127.0.0.1:4321"));
    let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mkeyward\u{1b}[0m: keyward listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4321 \u{1b}[3mstore\u{1b}[0m";
    assert_eq!(listening_addr(coloured).as_deref(), Some("127.0.0.1:4321"));
    assert_eq!(listening_addr("keyward stopped"), None);
}

/// `keyward serve --store memory: --listen 127.0.0.1:0 ARGS` with stdout
/// and stderr redirected to files (as under systemd, Docker or `> log`),
/// `env` added to an environment with no `KEYWARD_*` variable and no
/// `NO_COLOR`: whether logs are coloured must follow from the redirection.
struct Redirected {
    child: ChildGuard,
    dir: PathBuf,
    addr: String,
}

impl Redirected {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keyward-process-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).context("create the log dir")?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .args(["serve", "--store", "memory:", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout")).context("create the stdout file")?)
            .stderr(File::create(dir.join("stderr")).context("create the stderr file")?);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        let child = ChildGuard(command.spawn().context("start the keyward binary")?);
        let mut server = Self {
            child,
            dir,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = server.stderr().lines().find_map(listening_addr) {
                server.addr = addr;
                return Ok(server);
            }
            if let Some(status) = server.child.0.try_wait()? {
                bail!("keyward exited with {status}: {}", server.stderr());
            }
            if Instant::now() >= deadline {
                bail!("no `keyward listening addr=` line on stderr within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// SIGTERM; requires exit 0 within 5 s.
    async fn stop(mut self) -> Result<Self> {
        let pid = self.child.0.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("run kill -TERM")?;
        assert!(killed.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = self.child.0.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("keyward did not exit within 5 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "exit status after SIGTERM: {status}");
        Ok(self)
    }
}

impl Drop for Redirected {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_logs_go_to_stderr_without_colour_and_stdout_stays_empty() -> Result<()> {
    let server = Redirected::start(&[], &[]).await?;
    let api = Api::new(&format!("http://{}", server.addr));
    api.healthz().await?.expect(200);
    api.generate_keys("logs", 1).await?.expect(201);
    let server = server.stop().await?;
    let (stdout, stderr) = (server.stdout(), server.stderr());
    assert_eq!(
        stdout, "",
        "nothing but logs was to be written, and not here"
    );
    for line in ["keyward listening", "keyward stopped"] {
        assert!(stderr.contains(line), "no {line:?} on stderr: {stderr}");
    }
    assert!(
        !stderr.contains("\u{1b}["),
        "ANSI escapes in redirected logs: {stderr:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_admin_token_flag_or_variable_never_switches_a_token_off() -> Result<()> {
    const TOKEN: &str = "s3cret-t0ken";
    // (flag, KEYWARD_ADMIN_TOKEN, whether requests need the token)
    let cases: [(Option<&str>, Option<&str>, bool); 6] = [
        (Some(""), Some(TOKEN), true),
        (Some(TOKEN), Some(""), true),
        (None, Some(TOKEN), true),
        (Some(TOKEN), None, true),
        (Some(""), Some(""), false),
        (None, Some(""), false),
    ];
    for (flag, env, guarded) in cases {
        let flag_args: Vec<&str> = flag.map_or(vec![], |f| vec!["--admin-token", f]);
        let env_vars: Vec<(&str, &str)> = env.map_or(vec![], |e| vec![("KEYWARD_ADMIN_TOKEN", e)]);
        let server = Redirected::start(&flag_args, &env_vars).await?;
        let api = Api::new(&format!("http://{}", server.addr));
        let case = format!("--admin-token {flag:?}, KEYWARD_ADMIN_TOKEN={env:?}");
        let bare = api.get_pool("default").await?;
        if guarded {
            bare.expect_error(401, "unauthorized");
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            let with = client
                .get(format!("http://{}/v1/pools/default", server.addr))
                .bearer_auth(TOKEN)
                .send()
                .await?;
            assert_eq!(with.status().as_u16(), 200, "{case}");
        } else {
            assert_eq!(bare.status, 200, "{case}: {}", bare.text);
        }
        let server = server.stop().await?;
        assert!(
            !server.stderr().contains(TOKEN),
            "{case}: the token was logged"
        );
    }
    Ok(())
}
