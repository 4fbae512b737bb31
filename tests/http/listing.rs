//! `GET /v1/pools`, `GET /v1/keyspaces` (pages by name, `limit` and
//! `cursor`, 400 `invalid_query`) and `DELETE /v1/pools/{pool}`,
//! `DELETE /v1/keyspaces/{ks}` (204, 404, 409 for `default`, the name free
//! at once and its place under the limits too).

use anyhow::Result;
use keyward::config::{AdminToken, Config};
use keyward::store::Limits;
use serde_json::json;

use keyward_testkit::app::{spawn_app, spawn_app_with};

#[tokio::test]
async fn listing_pools_pages_by_name_and_each_item_is_the_pool_object() -> Result<()> {
    let app = spawn_app().await;
    for pool in ["c", "a", "e", "b", "d"] {
        app.put_pool(pool, json!({})).await?.expect(201);
    }
    app.new_keys("b", 3).await?;

    let first = app.list_pools("limit=2").await?;
    let body = first.expect(200);
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 2, "only pools and next_cursor: {}", first.text);
    let names: Vec<&str> = body["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(body["pools"][1], *app.get_pool("b").await?.expect(200));
    let cursor = body["next_cursor"].as_str().expect("a cursor");

    let next = app.list_pools(&format!("limit=2&cursor={cursor}")).await?;
    let names: Vec<&str> = next.expect(200)["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["c", "d"]);

    assert_eq!(
        app.list_all_names("/v1/pools", "pools", 2).await?,
        ["a", "b", "c", "d", "default", "e"]
    );
    // Default limit: everything fits in one page, and the page says so.
    let all = app.list_pools("").await?;
    assert_eq!(all.expect(200)["pools"].as_array().map(Vec::len), Some(6));
    assert!(all.body["next_cursor"].is_null());
    Ok(())
}

#[tokio::test]
async fn a_listing_skips_and_repeats_nothing_while_pools_come_and_go() -> Result<()> {
    let app = spawn_app().await;
    for pool in ["b", "d", "f", "h", "x1", "x2"] {
        app.put_pool(pool, json!({})).await?.expect(201);
    }
    let page = app.list_pools("limit=3").await?;
    let names: Vec<&str> = page.expect(200)["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["b", "d", "default"]);
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    // Between pages: a name already returned is deleted, names are
    // created before and after the cursor.
    app.delete_pool("d").await?.expect(204);
    app.put_pool("c", json!({})).await?.expect(201);
    app.put_pool("g", json!({})).await?.expect(201);
    let rest = app
        .list_pools(&format!("limit=100&cursor={cursor}"))
        .await?;
    let names: Vec<&str> = rest.expect(200)["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["f", "g", "h", "x1", "x2"]);
    Ok(())
}

#[tokio::test]
async fn listing_keyspaces_pages_by_name() -> Result<()> {
    let app = spawn_app().await;
    for ks in ["k2", "k1", "k3"] {
        app.put_keyspace(ks, "abc", 3).await?.expect(201);
    }
    assert_eq!(
        app.list_all_names("/v1/keyspaces", "keyspaces", 1).await?,
        ["default", "k1", "k2", "k3"]
    );
    let page = app.list_keyspaces("limit=1&cursor=ZGVmYXVsdA").await?;
    let body = page.expect(200);
    assert_eq!(
        body["keyspaces"][0],
        *app.get_keyspace("k1").await?.expect(200)
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_limit_cursor_or_query_parameter_is_400_invalid_query() -> Result<()> {
    let app = spawn_app().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1&limit=2",
        "cursor=",
        "cursor=%%%",
        "cursor=YR",
        "state=free",
        "limit=10&sort=name",
    ] {
        app.list_pools(query)
            .await?
            .expect_error(400, "invalid_query");
        app.list_keyspaces(query)
            .await?
            .expect_error(400, "invalid_query");
    }
    app.list_pools("limit=1000").await?.expect(200);
    app.list_pools("limit=1").await?.expect(200);
    Ok(())
}

#[tokio::test]
async fn a_deleted_pool_is_404_everywhere_and_comes_back_empty() -> Result<()> {
    let app = spawn_app().await;
    let keys = app.new_keys("web", 5).await?;
    let leased = app.lease("web").await?.str("key");
    let reply = app.delete_pool("web").await?;
    reply.expect(204);
    assert!(reply.text.is_empty());

    app.get_pool("web")
        .await?
        .expect_error(404, "pool_not_found");
    app.delete_pool("web")
        .await?
        .expect_error(404, "pool_not_found");
    app.get_key("web", &keys[0])
        .await?
        .expect_error(404, "key_not_found");
    app.release("web", &leased, None)
        .await?
        .expect_error(404, "key_not_found");
    assert_eq!(
        app.list_all_names("/v1/pools", "pools", 10).await?,
        ["default"]
    );
    // The first scrape (nothing cached): pools are named, `web` no more.
    let metrics = app.metrics().await?;
    assert!(
        metrics.text.contains("pool=\"default\""),
        "{}",
        metrics.text
    );
    assert!(!metrics.text.contains("\"web\""), "{}", metrics.text);

    let again = app.put_pool("web", json!({})).await?;
    assert_eq!(again.expect(201)["total"], 0);
    app.get_key("web", &keys[1])
        .await?
        .expect_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn a_deleted_keyspace_is_404_and_may_come_back_with_another_alphabet() -> Result<()> {
    let app = spawn_app().await;
    app.put_keyspace("ids", "abc", 3).await?.expect(201);
    let token = app.issue_token("ids").await?.str("token");
    app.delete_keyspace("ids").await?.expect(204);
    app.get_keyspace("ids")
        .await?
        .expect_error(404, "keyspace_not_found");
    app.token_status("ids", &token)
        .await?
        .expect_error(404, "keyspace_not_found");
    app.delete_keyspace("ids")
        .await?
        .expect_error(404, "keyspace_not_found");
    let again = app.put_keyspace("ids", "xyz", 4).await?;
    assert_eq!(again.expect(201)["issued"], 0);
    Ok(())
}

#[tokio::test]
async fn the_default_pool_and_keyspace_are_409_cannot_delete_default() -> Result<()> {
    let app = spawn_app().await;
    app.delete_pool("default")
        .await?
        .expect_error(409, "cannot_delete_default");
    app.delete_keyspace("default")
        .await?
        .expect_error(409, "cannot_delete_default");
    app.get_pool("default").await?.expect(200);
    app.delete_pool("bad name!")
        .await?
        .expect_error(400, "invalid_name");
    Ok(())
}

#[tokio::test]
async fn deleting_a_pool_frees_its_place_under_max_pools() -> Result<()> {
    let app = spawn_app_with(Config {
        limits: Limits {
            max_pools: 2,
            max_keyspaces: 2,
            ..Limits::DEFAULT
        },
        ..Config::default()
    })
    .await;
    app.put_pool("one", json!({})).await?.expect(201);
    app.put_pool("two", json!({}))
        .await?
        .expect_error(409, "pool_limit_reached");
    app.delete_pool("one").await?.expect(204);
    app.put_pool("two", json!({})).await?.expect(201);

    app.put_keyspace("k1", "abc", 3).await?.expect(201);
    app.put_keyspace("k2", "abc", 3)
        .await?
        .expect_error(409, "keyspace_limit_reached");
    app.delete_keyspace("k1").await?.expect(204);
    app.put_keyspace("k2", "abc", 3).await?.expect(201);
    Ok(())
}

#[tokio::test]
async fn listing_and_deleting_need_the_admin_token() -> Result<()> {
    let app = spawn_app_with(Config {
        admin_token: Some(AdminToken::new("s3cret".into())),
        ..Config::default()
    })
    .await;
    app.list_pools("").await?.expect_error(401, "unauthorized");
    app.list_keyspaces("")
        .await?
        .expect_error(401, "unauthorized");
    app.delete_pool("x")
        .await?
        .expect_error(401, "unauthorized");
    app.delete_keyspace("x")
        .await?
        .expect_error(401, "unauthorized");
    let authed = app.with_bearer("s3cret");
    authed.list_keyspaces("").await?.expect(200);
    authed.list_pools("").await?.expect(200);
    authed
        .delete_pool("x")
        .await?
        .expect_error(404, "pool_not_found");
    Ok(())
}
