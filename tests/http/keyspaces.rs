//! `/v1/keyspaces`: definition and immutability, whole-space issuance,
//! exhaustion, activation, invalid tokens, Unicode alphabets, concurrency.

use std::collections::HashSet;

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use keyward_testkit::app::{T0_MS, TestApp, spawn_app};
use keyward_testkit::client::time_of;

/// Every string of `length` characters over `alphabet`.
fn all_tokens(alphabet: &str, length: u32) -> HashSet<String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut out = vec![String::new()];
    for _ in 0..length {
        out = out
            .iter()
            .flat_map(|prefix| chars.iter().map(move |c| format!("{prefix}{c}")))
            .collect();
    }
    out.into_iter().collect()
}

/// Issues every token of `ks` (of capacity `capacity`), checking `remaining`
/// counts down by one, then checks the next issue is 409.
async fn issue_all(app: &TestApp, ks: &str, capacity: u64) -> Result<Vec<String>> {
    let mut tokens = Vec::new();
    for i in 1..=capacity {
        let reply = app.issue_token(ks).await?;
        let body = reply.expect(201);
        assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{}", reply.text);
        assert_eq!(reply.u64("remaining"), capacity - i, "{}", reply.text);
        assert_eq!(reply.str("remaining_str"), (capacity - i).to_string());
        tokens.push(reply.str("token"));
    }
    app.issue_token(ks)
        .await?
        .expect_error(409, "keyspace_exhausted");
    Ok(tokens)
}

#[tokio::test]
async fn default_keyspace_exists_from_the_start_with_the_documented_settings() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.get_keyspace("default").await?;
    assert_eq!(
        *reply.expect(200),
        json!({
            "name": "default",
            "alphabet": "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM",
            "length": 4,
            "capacity": 7_311_616,
            "capacity_str": "7311616",
            "issued": 0,
            "activated": 0,
            "revoked": 0,
            "remaining": 7_311_616,
            "remaining_str": "7311616",
            "max_activations": 1,
            "preset": null,
            "format": null,
        })
    );
    app.put_keyspace(
        "default",
        "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM",
        4,
    )
    .await?
    .expect(200);
    Ok(())
}

#[tokio::test]
async fn put_keyspace_creates_with_201_and_identical_again_is_200() -> Result<()> {
    let app = spawn_app().await;
    let created = app.put_keyspace("ks", "abc", 3).await?;
    let expected = json!({
        "name": "ks",
        "alphabet": "abc",
        "length": 3,
        "capacity": 27,
        "capacity_str": "27",
        "issued": 0,
        "activated": 0,
        "revoked": 0,
        "remaining": 27,
        "remaining_str": "27",
        "max_activations": 1,
        "preset": null,
        "format": null,
    });
    assert_eq!(*created.expect(201), expected);
    assert_eq!(
        *app.put_keyspace("ks", "abc", 3).await?.expect(200),
        expected
    );
    assert_eq!(*app.get_keyspace("ks").await?.expect(200), expected);
    Ok(())
}

#[tokio::test]
async fn put_keyspace_that_differs_is_409_keyspace_immutable() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("ks", "abc", 3).await?.expect(201);
    app.put_keyspace("ks", "abc", 4)
        .await?
        .expect_error(409, "keyspace_immutable");
    app.put_keyspace("ks", "abd", 3)
        .await?
        .expect_error(409, "keyspace_immutable");
    app.put_keyspace("ks", "cba", 3)
        .await?
        .expect_error(409, "keyspace_immutable");
    app.put_keyspace("default", "ab", 2)
        .await?
        .expect_error(409, "keyspace_immutable");
    assert_eq!(app.get_keyspace("ks").await?.str("alphabet"), "abc");
    Ok(())
}

#[tokio::test]
async fn invalid_alphabets_and_lengths_are_400_invalid_keyspace_and_create_nothing() -> Result<()> {
    let app = spawn_app().await;
    for (alphabet, length) in [
        ("", 3),
        ("a", 3),
        ("aa", 3),
        ("abca", 3),
        ("a b", 3),
        ("a\tb", 3),
        ("a\nb", 3),
        ("a\u{7}b", 3),
        ("a/b", 3),
        ("ab", 0),
        // 2^128 is not below 2^128.
        ("ab", 128),
        ("0123456789", 39),
    ] {
        let reply = app.put_keyspace("bad", alphabet, length).await?;
        assert_eq!(reply.status, 400, "{alphabet:?}^{length} -> {}", reply.text);
        reply.expect_error(400, "invalid_keyspace");
    }
    for body in [
        json!({}),
        json!({"alphabet": "ab"}),
        json!({"length": 3}),
        json!({"alphabet": 12, "length": 3}),
        json!({"alphabet": "ab", "length": "3"}),
        json!({"alphabet": "ab", "length": -1}),
        json!({"alphabet": ["a", "b"], "length": 3}),
        json!("ab"),
        json!(null),
    ] {
        let reply = app
            .request(Method::PUT, "/v1/keyspaces/bad", Some(body.clone()))
            .await?;
        assert_eq!(reply.status, 400, "{body} -> {}", reply.text);
        reply.expect_error(400, "invalid_keyspace");
    }
    app.get_keyspace("bad")
        .await?
        .expect_error(404, "keyspace_not_found");
    Ok(())
}

#[tokio::test]
async fn capacities_just_below_2_pow_128_are_accepted() -> Result<()> {
    let app = spawn_app().await;
    let reply = app.put_keyspace("huge", "ab", 127).await?;
    reply.expect(201);
    assert!(
        reply
            .text
            .contains("\"capacity\":170141183460469231731687303715884105728"),
        "capacity 2^127 as an exact integer: {}",
        reply.text
    );
    let token = app.issue_token("huge").await?.str("token");
    assert_eq!(token.len(), 127);
    assert!(token.bytes().all(|b| b == b'a' || b == b'b'), "{token}");
    app.token_status("huge", &token).await?.expect(200);
    Ok(())
}

#[tokio::test]
async fn unknown_keyspaces_are_404_keyspace_not_found_on_every_route() -> Result<()> {
    let app = spawn_app().await;
    app.get_keyspace("nope")
        .await?
        .expect_error(404, "keyspace_not_found");
    app.issue_token("nope")
        .await?
        .expect_error(404, "keyspace_not_found");
    app.token_status("nope", "abc")
        .await?
        .expect_error(404, "keyspace_not_found");
    app.activate("nope", "abc")
        .await?
        .expect_error(404, "keyspace_not_found");
    Ok(())
}

#[tokio::test]
async fn a_whole_small_space_is_issued_exactly_once_then_409_keyspace_exhausted() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("small", "abc", 3).await?.expect(201);
    let tokens = issue_all(&app, "small", 27).await?;
    let unique: HashSet<String> = tokens.iter().cloned().collect();
    assert_eq!(unique, all_tokens("abc", 3), "each token exactly once");
    let mut sorted = tokens.clone();
    sorted.sort();
    assert_ne!(tokens, sorted, "tokens are not issued in counting order");
    let info = app.get_keyspace("small").await?;
    assert_eq!((info.u64("issued"), info.u64("remaining")), (27, 0));
    app.issue_token("small")
        .await?
        .expect_error(409, "keyspace_exhausted");
    for token in &tokens {
        assert_eq!(
            app.token_status("small", token).await?.str("state"),
            "issued"
        );
    }
    Ok(())
}

#[tokio::test]
async fn spaces_of_4_and_1000_tokens_are_issued_whole_without_repeats() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("two", "ab", 2).await?.expect(201);
    let tokens = issue_all(&app, "two", 4).await?;
    assert_eq!(
        tokens.into_iter().collect::<HashSet<_>>(),
        all_tokens("ab", 2)
    );
    app.put_keyspace("digits", "0123456789", 3)
        .await?
        .expect(201);
    let tokens = issue_all(&app, "digits", 1000).await?;
    assert_eq!(
        tokens.into_iter().collect::<HashSet<_>>(),
        all_tokens("0123456789", 3)
    );
    Ok(())
}

#[tokio::test]
async fn activation_flow_issued_then_activated_once_then_409_already_activated() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("act", "abcdef", 4).await?.expect(201);
    let token = app.issue_token("act").await?.str("token");
    assert_eq!(
        *app.token_status("act", &token).await?.expect(200),
        json!({
            "token": token, "state": "issued", "activated_at": null, "activations": [],
            "batch": null, "reason": null, "revoked_at": null,
        })
    );
    app.advance_ms(1234);
    let activated = app.activate("act", &token).await?;
    let body = activated.expect(200).clone();
    assert_eq!(body.as_object().map(|o| o.len()), Some(7), "{body}");
    assert_eq!(body["token"], token.as_str());
    assert_eq!(body["state"], "activated");
    assert_eq!(time_of(&body, "activated_at"), T0_MS + 1234);
    assert_eq!(
        body["activations"],
        json!([{"fingerprint": null, "activated_at": body["activated_at"]}])
    );
    app.advance_ms(1000);
    assert_eq!(*app.token_status("act", &token).await?.expect(200), body);
    app.activate("act", &token)
        .await?
        .expect_error(409, "already_activated");
    let info = app.get_keyspace("act").await?;
    assert_eq!(
        (
            info.u64("issued"),
            info.u64("activated"),
            info.u64("remaining")
        ),
        (1, 1, 6_u64.pow(4) - 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_well_formed_token_not_yet_issued_is_404_token_not_issued() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("ni", "abc", 3).await?.expect(201);
    app.token_status("ni", "abc")
        .await?
        .expect_error(404, "token_not_issued");
    let issued = app.issue_token("ni").await?.str("token");
    let other = all_tokens("abc", 3)
        .into_iter()
        .find(|t| *t != issued)
        .expect("26 others");
    app.token_status("ni", &other)
        .await?
        .expect_error(404, "token_not_issued");
    app.activate("ni", &other)
        .await?
        .expect_error(404, "token_not_issued");
    assert_eq!(app.get_keyspace("ni").await?.u64("activated"), 0);
    Ok(())
}

#[tokio::test]
async fn tokens_of_the_wrong_length_or_alphabet_are_400_invalid_token() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("it", "abc", 3).await?.expect(201);
    app.issue_token("it").await?.expect(201);
    for bad in ["ab", "abca", "abd", "ABC", "a%20b", "%D0%B0bc"] {
        let reply = app.token_status("it", bad).await?;
        assert_eq!(reply.status, 400, "{bad} -> {}", reply.text);
        reply.expect_error(400, "invalid_token");
        app.activate("it", bad)
            .await?
            .expect_error(400, "invalid_token");
    }
    Ok(())
}

#[tokio::test]
async fn a_cyrillic_alphabet_issues_and_activates_cyrillic_tokens() -> Result<()> {
    let app = spawn_app().await;
    let alphabet = "абвгдеёжзий";
    let created = app.put_keyspace("ru", alphabet, 3).await?;
    let body = created.expect(201);
    assert_eq!(body["alphabet"], alphabet);
    assert_eq!(body["capacity"], 11 * 11 * 11);
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let token = app.issue_token("ru").await?.str("token");
        assert_eq!(token.chars().count(), 3, "{token}");
        assert!(token.chars().all(|c| alphabet.contains(c)), "{token}");
        assert!(seen.insert(token), "issued twice");
    }
    let token = seen.iter().next().expect("twenty tokens").clone();
    assert_eq!(app.token_status("ru", &token).await?.str("state"), "issued");
    let activated = app.activate("ru", &token).await?;
    assert_eq!(activated.str("token"), token);
    assert_eq!(activated.str("state"), "activated");
    app.activate("ru", &token)
        .await?
        .expect_error(409, "already_activated");
    for bad in ["абz", "аб", "абвг", "abc"] {
        app.token_status("ru", bad)
            .await?
            .expect_error(400, "invalid_token");
    }
    Ok(())
}

#[tokio::test]
async fn an_alphabet_beyond_the_basic_plane_works_to_exhaustion() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("emoji", "🔑🗝", 3).await?.expect(201);
    let tokens = issue_all(&app, "emoji", 8).await?;
    assert_eq!(
        tokens.iter().cloned().collect::<HashSet<_>>(),
        all_tokens("🔑🗝", 3)
    );
    app.activate("emoji", &tokens[0]).await?.expect(200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_issuers_never_get_the_same_token() -> Result<()> {
    const ISSUERS: usize = 16;
    const EACH: usize = 25;
    let app = spawn_app().await;
    // 10^6: the smallest domain the FF1 standard allows.
    app.put_keyspace("race", "0123456789", 6).await?.expect(201);
    let issued = app
        .all_at_once(ISSUERS, |api| async move {
            let mut tokens = Vec::new();
            for _ in 0..EACH {
                let reply = api.issue_token("race").await?;
                reply.expect(201);
                tokens.push(reply.str("token"));
            }
            anyhow::Ok(tokens)
        })
        .await?;
    let mut seen = HashSet::new();
    for tokens in issued {
        for token in tokens {
            assert!(seen.insert(token.clone()), "{token} issued twice");
        }
    }
    assert_eq!(seen.len(), ISSUERS * EACH);
    let info = app.get_keyspace("race").await?;
    assert_eq!(info.u64("issued"), (ISSUERS * EACH) as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_issuers_share_a_16_token_space_exactly() -> Result<()> {
    const ISSUERS: usize = 16;
    let app = spawn_app().await;
    app.put_keyspace("tight", "ab", 4).await?.expect(201);
    let replies = app
        .all_at_once(ISSUERS, |api| async move { api.issue_token("tight").await })
        .await?;
    let mut seen = HashSet::new();
    for reply in replies {
        reply.expect(201);
        assert!(seen.insert(reply.str("token")), "issued twice");
    }
    assert_eq!(seen, all_tokens("ab", 4));
    app.issue_token("tight")
        .await?
        .expect_error(409, "keyspace_exhausted");
    Ok(())
}

#[tokio::test]
async fn a_keyspace_of_readable_codes_shows_them_grouped_and_refuses_a_typo() -> Result<()> {
    let app = spawn_app().await;
    let def = json!({
        "alphabet": "crockford",
        "length": 8,
        "format": {"group": 4, "prefix": "SHOP-", "check": true}
    });
    let created = app
        .request(reqwest::Method::PUT, "/v1/keyspaces/shop", Some(def))
        .await?;
    let body = created.expect(201);
    assert_eq!(body["alphabet"], "0123456789ABCDEFGHJKMNPQRSTVWXYZ");
    assert_eq!(body["preset"], "crockford");
    assert_eq!(
        body["format"],
        json!({"group": 4, "separator": "-", "prefix": "SHOP-", "check": true})
    );
    let token = app.issue_token("shop").await?.str("token");
    assert_eq!(token.len(), "SHOP-XXXX-XXXXC".len(), "{token}");
    // Any typed form of it reads back as the token; look-alikes too.
    let typed = token[5..].replace('-', "").to_lowercase().replace('1', "l");
    let status = app.token_status("shop", &typed).await?;
    assert_eq!(status.expect(200)["token"], token.as_str());
    let last = token.chars().last().unwrap_or('0');
    let typo = format!(
        "{}{}",
        &token[..token.len() - 1],
        if last == '0' { '2' } else { '0' }
    );
    let refused = app.token_status("shop", &typo).await?;
    refused.expect_error(400, "invalid_token");
    assert_eq!(
        refused.body["error"]["message"],
        "check character does not match"
    );
    for bad in [
        json!({"alphabet": "crockford", "length": 8, "format": {"separator": "A"}}),
        json!({"alphabet": "crockford", "length": 8, "format": {"group": 0}}),
        json!({"alphabet": "crockford", "length": 8, "format": {"colour": "red"}}),
    ] {
        app.request(reqwest::Method::PUT, "/v1/keyspaces/bad", Some(bad))
            .await?
            .expect_error(400, "invalid_keyspace");
    }
    app.get_keyspace("bad")
        .await?
        .expect_error(404, "keyspace_not_found");
    Ok(())
}

#[tokio::test]
async fn a_bulk_issue_gives_distinct_tokens_as_json_or_csv_and_all_or_nothing() -> Result<()> {
    let app = spawn_app().await;
    let def = json!({"alphabet": "digits", "length": 4, "format": {"check": true}});
    app.request(reqwest::Method::PUT, "/v1/keyspaces/bulk", Some(def))
        .await?
        .expect(201);
    let path = "/v1/keyspaces/bulk/tokens";
    let reply = app
        .request(reqwest::Method::POST, path, Some(json!({"count": 1000})))
        .await?;
    let body = reply.expect(201);
    let tokens: Vec<String> = serde_json::from_value(body["tokens"].clone())?;
    assert_eq!(tokens.len(), 1000);
    assert_eq!(
        tokens
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1000
    );
    assert!(
        tokens.iter().all(|t| t.len() == 5),
        "four digits and a check"
    );
    assert_eq!(body["remaining"], 9000);
    // The same as CSV: a header line and one token a line.
    let csv = reqwest::Client::new()
        .post(app.url(path))
        .header("accept", "text/csv")
        .header("content-type", "application/json")
        .body(r#"{"count": 3}"#)
        .send()
        .await?;
    assert_eq!(csv.status(), 201);
    assert!(
        csv.headers()["content-type"]
            .to_str()?
            .starts_with("text/csv")
    );
    let text = csv.text().await?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "token");
    for token in &lines[1..] {
        app.token_status("bulk", token).await?.expect(200);
    }
    // More than are left: refused whole.
    let issued = app.get_keyspace("bulk").await?.u64("issued");
    app.request(reqwest::Method::POST, path, Some(json!({"count": 10_000})))
        .await?
        .expect_error(409, "keyspace_exhausted");
    assert_eq!(app.get_keyspace("bulk").await?.u64("issued"), issued);
    Ok(())
}
