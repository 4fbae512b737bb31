//! A worker that leases an upstream API key from the pool `llm`, calls a
//! stand-in for the upstream with it, and reports a 429 as
//! `rate_limited`. Against a running server:
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:8080 cargo run -p keyward-client --example worker
//! ```

use std::time::Duration;

use keyward_client::{Client, Labels, Outcome, PoolSettings};

/// What the stand-in upstream answers.
enum Upstream {
    Answer(String),
    /// HTTP 429 with `Retry-After`.
    RateLimited(Duration),
}

/// A stand-in for an upstream API: every third call is rate limited.
fn call_upstream(_api_key: &str, job: u32) -> Upstream {
    if job % 3 == 1 {
        Upstream::RateLimited(Duration::from_secs(1))
    } else {
        Upstream::Answer(format!("answer to job {job}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?;
    let pool = client.pool("llm");
    // Upstream credentials need no keep-alive to stay in the pool.
    pool.configure(&PoolSettings::new().no_keepalive()).await?;
    let labels = Labels::from([("provider".to_owned(), "example".to_owned())]);
    pool.import_keys(&["sk-example-alpha", "sk-example-bravo"], &labels)
        .await?;

    for job in 0..4 {
        // Waits up to 10 s for a free key; kept alive while held.
        let mut lease = pool.lease_guard(Some(Duration::from_secs(10))).await?;
        match call_upstream(lease.key(), job) {
            Upstream::Answer(text) => println!("job {job}: {text}"),
            Upstream::RateLimited(retry_after) => lease.report(Outcome::RateLimited {
                retry_after: Some(retry_after),
            }),
        }
        let key = lease.release().await?;
        println!("job {job}: the key is {} now", key.state.as_str());
    }
    Ok(())
}
