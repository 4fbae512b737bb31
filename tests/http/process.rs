//! The real binary: `keyward serve --store memory: --listen 127.0.0.1:0`
//! announces its address, serves, and exits 0 on SIGTERM; redirected, it
//! logs to stderr without colour; an empty `--admin-token ''` or
//! `KEYWARD_ADMIN_TOKEN=` never switches off a token the other sets.

use std::net::Ipv4Addr;

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use crate::keyward;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_an_ephemeral_port_and_exits_0_on_sigterm() -> Result<()> {
    let server = keyward().start_listening().await?;
    assert_eq!(server.addr.ip(), Ipv4Addr::LOCALHOST, "{}", server.addr);
    assert_ne!(server.addr.port(), 0, "the real port is logged");

    let api = &server.api;
    api.healthz().await?.expect(200);
    api.readyz().await?.expect(200);
    let key = api.compat_new_key().await?;
    assert_eq!(
        *api.random_api_key(Method::GET, true, None)
            .await?
            .expect(200),
        json!({"api_key": key})
    );
    api.compat_get_token().await?.expect(200);
    server.stop().await
}

// Redirected to files (as under systemd, Docker or `> log`) with no
// `NO_COLOR`: whether logs are coloured must follow from the redirection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_logs_go_to_stderr_without_colour_and_stdout_stays_empty() -> Result<()> {
    let server = keyward()
        .colour_left_to_the_server()
        .start_listening()
        .await?;
    server.api.healthz().await?.expect(200);
    server.api.generate_keys("logs", 1).await?.expect(201);
    let stopped = server.stop_and_keep_logs().await?;
    let (stdout, stderr) = (stopped.stdout(), stopped.stderr());
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
        let mut launch = keyward().colour_left_to_the_server();
        if let Some(flag) = flag {
            launch = launch.args(["--admin-token", flag]);
        }
        if let Some(env) = env {
            launch = launch.env("KEYWARD_ADMIN_TOKEN", env);
        }
        let server = launch.start_listening().await?;
        let case = format!("--admin-token {flag:?}, KEYWARD_ADMIN_TOKEN={env:?}");
        let bare = server.api.get_pool("default").await?;
        if guarded {
            bare.expect_error(401, "unauthorized");
            let with = server.api.with_bearer(TOKEN).get_pool("default").await?;
            assert_eq!(with.status, 200, "{case}: {}", with.text);
        } else {
            assert_eq!(bare.status, 200, "{case}: {}", bare.text);
        }
        let stopped = server.stop_and_keep_logs().await?;
        assert!(
            !stopped.stderr().contains(TOKEN),
            "{case}: the token was logged"
        );
    }
    Ok(())
}
