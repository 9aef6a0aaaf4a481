//! Links: create, read, list, update, delete, and the rules for slugs and destinations.

use serde_json::json;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

#[actix_rt::test]
async fn creating_a_link_returns_the_full_object() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/menu", "slug": "menu-2026", "name": "Menu", "tags": ["restaurant"]}))
        .await;
    assert!(link["id"].as_str().unwrap().starts_with("lnk_"));
    assert!(link["workspace_id"].as_str().unwrap().starts_with("ws_"));
    assert_eq!(link["short_url"], "https://scan.example/menu-2026");
    assert_eq!(link["destination"], "https://example.com/menu");
    assert_eq!(link["name"], "Menu");
    assert_eq!(link["tags"], json!(["restaurant"]));
    assert_eq!(link["status"], "active");
    assert_eq!(link["total_scans"], 0);
    assert_eq!(link["conversion_tracking"], false);
    assert_eq!(link["fallback_destination"], json!(null));
    assert_eq!(link["expires_at"], json!(null));
    assert_eq!(link["form"], json!(null));
    assert!(link["created_at"].as_str().unwrap().ends_with('Z'));
    let got = app
        .get(&format!("/v1/links/{}", link["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.json(), link);
}

#[actix_rt::test]
async fn a_generated_slug_is_seven_base62_characters() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/"}))
        .await;
    let slug = link["slug"].as_str().unwrap();
    assert_eq!(slug.len(), 7);
    assert!(slug.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(app.scan(slug).await.status.as_u16(), 302);
}

#[actix_rt::test]
async fn a_taken_slug_is_a_conflict() {
    let app = spawn_app().await;
    app.create_link(json!({"destination": "https://a.example/", "slug": "same"}))
        .await;
    app.post(
        "/v1/links",
        json!({"destination": "https://b.example/", "slug": "same"}),
    )
    .await
    .assert_problem(409, "conflict");
    // Another workspace cannot take it either: slugs are unique per server.
    let other = app.other_workspace();
    let r = app
        .send_as(
            &other,
            app.client.post(app.url("/v1/links")),
            Some(json!({"destination": "https://c.example/", "slug": "same"})),
        )
        .await;
    r.assert_problem(409, "conflict");
}

#[actix_rt::test]
async fn bad_slugs_are_rejected_with_the_field_named() {
    let app = spawn_app().await;
    for slug in [
        "v1",
        "healthz",
        "metrics",
        "ui",
        "static",
        "a/b",
        "with space",
        "ünï",
        "",
        &"x".repeat(65),
        "dot.json",
    ] {
        let r = app
            .post(
                "/v1/links",
                json!({"destination": "https://example.com/", "slug": slug}),
            )
            .await;
        let body = r.assert_problem(422, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "slug", "{slug}: {body}");
    }
    let r = app.get("/v1/links").await;
    assert_eq!(r.json()["data"], json!([]), "nothing was created");
}

#[actix_rt::test]
async fn bad_destinations_are_rejected() {
    let app = spawn_app().await;
    let long = format!("https://example.com/{}", "a".repeat(2040));
    for dest in [
        "javascript:alert(1)",
        "/relative/path",
        "example.com",
        "ftp://example.com/",
        "data:text/html,x",
        "https://",
        long.as_str(),
    ] {
        let r = app.post("/v1/links", json!({"destination": dest})).await;
        let body = r.assert_problem(422, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "destination", "{dest}: {body}");
    }
    let r = app
        .post(
            "/v1/links",
            json!({"destination": "https://example.com/", "fallback_destination": "javascript:x"}),
        )
        .await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "fallback_destination"
    );
    let r = app.post("/v1/links", json!({"slug": "nodest"})).await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "destination"
    );
    let r = app
        .post(
            "/v1/links",
            json!({"destination": "https://example.com/", "unknown_field": 1}),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    let r = app
        .post(
            "/v1/links",
            json!({"destination": "https://example.com/", "expires_at": "tomorrow"}),
        )
        .await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "expires_at"
    );
    let r = app
        .post(
            "/v1/links",
            json!({"destination": "https://example.com/", "form": {"title": "T", "fields": []}}),
        )
        .await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "form"
    );
}

#[actix_rt::test]
async fn a_form_definition_is_stored() {
    let app = spawn_app().await;
    let form = json!({"title": "Get the menu", "fields": [{"name": "email", "label": "Email", "type": "email", "required": true}]});
    let link = app
        .create_link(json!({"destination": "https://example.com/", "form": form}))
        .await;
    assert_eq!(link["form"], form);
}

#[actix_rt::test]
async fn patching_a_link_changes_only_the_given_fields_and_keeps_history() {
    let app = spawn_app().await;
    let link = app.create_link(json!({"destination": "https://old.example/", "slug": "moving", "name": "N", "tags": ["a"]})).await;
    let id = link["id"].as_str().unwrap();
    assert_eq!(
        app.scan("moving").await.header("location"),
        Some("https://old.example/")
    );
    let r = app
        .patch(
            &format!("/v1/links/{id}"),
            json!({"destination": "https://new.example/x", "name": null}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let updated = r.json();
    assert_eq!(updated["destination"], "https://new.example/x");
    assert_eq!(updated["name"], json!(null));
    assert_eq!(updated["tags"], json!(["a"]));
    assert_eq!(updated["id"], link["id"]);
    assert_ne!(updated["updated_at"], link["updated_at"]);
    assert_eq!(
        app.scan("moving").await.header("location"),
        Some("https://new.example/x")
    );
    app.eventually("both scans stored under one link", || async {
        app.all_events(&format!("link_id={id}")).await.len() == 2
    })
    .await;
    let events = app.all_events(&format!("link_id={id}")).await;
    assert_eq!(events[0]["destination"], "https://new.example/x");
    assert_eq!(events[1]["destination"], "https://old.example/");
    // Slug change: the old one stops resolving, the new one works.
    let r = app
        .patch(&format!("/v1/links/{id}"), json!({"slug": "moved"}))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(app.scan("moving").await.status.as_u16(), 404);
    assert_eq!(app.scan("moved").await.status.as_u16(), 302);
}

#[actix_rt::test]
async fn bad_patches_change_nothing() {
    let app = spawn_app().await;
    app.create_link(json!({"destination": "https://taken.example/", "slug": "taken"}))
        .await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "mine"}))
        .await;
    let path = format!("/v1/links/{}", link["id"].as_str().unwrap());
    app.patch(&path, json!({"destination": null}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch(
        &path,
        json!({"destination": "javascript:x", "name": "changed"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.patch(&path, json!({"slug": "taken"}))
        .await
        .assert_problem(409, "conflict");
    app.patch(&path, json!({"id": "lnk_x"}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch(&path, json!({"status": "paused"}))
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(app.get(&path).await.json(), link);
    assert_eq!(
        app.scan("mine").await.header("location"),
        Some("https://example.com/")
    );
}

#[actix_rt::test]
async fn deleting_a_link_stops_its_slug_at_once_and_keeps_its_events() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "gone-soon"}))
        .await;
    let id = link["id"].as_str().unwrap();
    assert_eq!(app.scan("gone-soon").await.status.as_u16(), 302);
    let r = app.delete(&format!("/v1/links/{id}")).await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(app.scan("gone-soon").await.status.as_u16(), 404);
    app.get(&format!("/v1/links/{id}"))
        .await
        .assert_problem(404, "not_found");
    app.delete(&format!("/v1/links/{id}"))
        .await
        .assert_problem(404, "not_found");
    app.eventually("the event survives", || async {
        app.all_events(&format!("link_id={id}")).await.len() == 1
    })
    .await;
}

#[actix_rt::test]
async fn listing_links_is_newest_first_with_filters_and_pages() {
    let app = spawn_app().await;
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        let status = if i == 6 { "disabled" } else { "active" };
        app.create_link(json!({"destination": format!("https://example.com/{i}"), "slug": format!("l{i}"), "tags": tags, "status": status})).await;
    }
    let all = app.get("/v1/links?page_size=3").await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(all["data"][0]["slug"], "l6");
    let token = all["next_page_token"].as_str().unwrap();
    let next = app
        .get(&format!("/v1/links?page_size=3&page_token={token}"))
        .await
        .json();
    assert_eq!(next["data"][0]["slug"], "l3");
    let even = app.get("/v1/links?tag=even").await.json();
    let slugs: Vec<&str> = even["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["l6", "l4", "l2", "l0"]);
    let disabled = app.get("/v1/links?status=disabled").await.json();
    assert_eq!(disabled["data"].as_array().unwrap().len(), 1);
    app.get("/v1/links?status=weird")
        .await
        .assert_problem(400, "bad_request");
    app.get(&format!("/v1/links?tag=odd&page_token={token}"))
        .await
        .assert_problem(400, "bad_request");
}

/// Every link of the workspace by listing, 25 a page: (ID, slug), newest first.
async fn listed(app: &TestApp) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut path = "/v1/links?page_size=25".to_owned();
    loop {
        let page = app.get(&path).await.json();
        for l in page["data"].as_array().unwrap() {
            out.push((
                l["id"].as_str().unwrap().to_owned(),
                l["slug"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_page_token"].as_str() {
            Some(t) => path = format!("/v1/links?page_size=25&page_token={t}"),
            None => return out,
        }
    }
}

/// Links are stored several to a sled key: enough of them to fill a few of
/// those buckets, with a link cache too small to hold them, so every scan
/// reads its link from the store.
#[actix_rt::test]
async fn many_links_are_listed_found_and_scanned_through_edits_and_deletes() {
    let app = spawn_app_with(&[("SCANHOP__RESOLVER__CACHE_ENTRIES", "4")]).await;
    let mut ids = Vec::new();
    for i in 0..90 {
        let link = app
            .create_link(json!({"destination": format!("https://example.com/{i}"), "slug": format!("many-{i}")}))
            .await;
        ids.push(link["id"].as_str().unwrap().to_owned());
    }
    let all = listed(&app).await;
    let newest_first: Vec<&String> = ids.iter().rev().collect();
    assert_eq!(
        all.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        newest_first
    );

    // Every third deleted, every fourth of the rest renamed.
    let mut live = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(
                app.delete(&format!("/v1/links/{id}")).await.status.as_u16(),
                204
            );
        } else if i % 4 == 0 {
            let r = app
                .patch(
                    &format!("/v1/links/{id}"),
                    json!({"slug": format!("renamed-{i}")}),
                )
                .await;
            assert_eq!(r.status.as_u16(), 200);
            live.push((id.clone(), format!("renamed-{i}")));
        } else {
            live.push((id.clone(), format!("many-{i}")));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let old = app.scan(&format!("many-{i}")).await;
        if i % 3 == 0 {
            assert_eq!(old.status.as_u16(), 404, "deleted many-{i}");
            app.get(&format!("/v1/links/{id}"))
                .await
                .assert_problem(404, "not_found");
        } else if i % 4 == 0 {
            assert_eq!(old.status.as_u16(), 404, "renamed many-{i}");
        } else {
            assert_eq!(old.status.as_u16(), 302, "many-{i}");
            assert_eq!(
                old.header("location"),
                Some(format!("https://example.com/{i}").as_str())
            );
        }
    }
    for (id, slug) in &live {
        assert_eq!(app.scan(slug).await.status.as_u16(), 302, "{slug}");
        assert_eq!(
            app.get(&format!("/v1/links/{id}")).await.json()["slug"],
            slug.as_str()
        );
    }
    live.reverse();
    assert_eq!(listed(&app).await, live);
}
