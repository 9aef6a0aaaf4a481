//! Authentication and isolation: missing, bad and revoked tokens, publishable
//! tokens, and another workspace's IDs and tokens (listed nowhere but in
//! their own workspace, revocable only there).

use serde_json::json;

use crate::helpers::spawn_app;

#[actix_rt::test]
async fn requests_without_a_valid_token_are_401() {
    let app = spawn_app().await;
    let r = app.raw(app.client.get(app.url("/v1/links")), "").await;
    r.assert_problem(401, "unauthorized");
    for bad in ["sk_nope", "pk_nope", "nope", ""] {
        app.send_as(bad, app.client.get(app.url("/v1/links")), None)
            .await
            .assert_problem(401, "unauthorized");
    }
    let r = app
        .raw(
            app.client
                .get(app.url("/v1/links"))
                .insert_header(("Authorization", format!("Basic {}", app.token))),
            "",
        )
        .await;
    r.assert_problem(401, "unauthorized");
}

#[actix_rt::test]
async fn a_revoked_token_is_401_at_once() {
    let app = spawn_app().await;
    let created = app.post("/v1/tokens", json!({"name": "ci"})).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.text());
    let created = created.json();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk_"));
    assert_eq!(
        app.send_as(&token, app.client.get(app.url("/v1/links")), None)
            .await
            .status
            .as_u16(),
        200
    );
    let listed = app.get("/v1/tokens").await.json();
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|t| t.get("token").is_none()),
        "list never shows tokens"
    );
    assert!(!listed.iter().any(|t| t.to_string().contains(&token)));
    let r = app
        .delete(&format!("/v1/tokens/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(r.status.as_u16(), 204);
    app.send_as(&token, app.client.get(app.url("/v1/links")), None)
        .await
        .assert_problem(401, "unauthorized");
    let listed = app.get("/v1/tokens").await.json();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["revoked_at"].is_string())
    );
}

#[actix_rt::test]
async fn a_publishable_token_is_403_outside_identify() {
    let app = spawn_app().await;
    let created = app
        .post("/v1/tokens", json!({"type": "publishable"}))
        .await
        .json();
    let pk = created["token"].as_str().unwrap().to_owned();
    assert!(pk.starts_with("pk_"));
    for (method, path) in [
        ("GET", "/v1/links"),
        ("POST", "/v1/links"),
        ("GET", "/v1/events"),
        ("GET", "/v1/workspace"),
        ("POST", "/v1/tokens"),
    ] {
        let req = app.client.request(method.parse().unwrap(), app.url(path));
        let body = (method == "POST").then(|| json!({"destination": "https://example.com/"}));
        app.send_as(&pk, req, body)
            .await
            .assert_problem(403, "forbidden");
    }
    app.post("/v1/tokens", json!({"type": "root"}))
        .await
        .assert_problem(422, "validation_failed");
}

#[actix_rt::test]
async fn another_workspaces_ids_are_404_like_missing_ones() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "mine"}))
        .await;
    let id = link["id"].as_str().unwrap();
    app.scan("mine").await;
    app.eventually("event", || async { app.all_events("").await.len() == 1 })
        .await;
    let event_id = app.all_events("").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.other_workspace();
    let c = &app.client;
    for req in [
        c.get(app.url(&format!("/v1/links/{id}"))),
        c.delete(app.url(&format!("/v1/links/{id}"))),
        c.get(app.url(&format!("/v1/events/{event_id}"))),
    ] {
        app.send_as(&other, req, None)
            .await
            .assert_problem(404, "not_found");
    }
    let r = app
        .send_as(
            &other,
            c.patch(app.url(&format!("/v1/links/{id}"))),
            Some(json!({"name": "x"})),
        )
        .await;
    r.assert_problem(404, "not_found");
    let r = app
        .send_as(
            &other,
            c.get(app.url(&format!("/v1/events?link_id={id}"))),
            None,
        )
        .await;
    assert_eq!(r.json()["data"], json!([]));
    let r = app.send_as(&other, c.get(app.url("/v1/links")), None).await;
    assert_eq!(r.json()["data"], json!([]));
    let missing = "lnk_01h455vb4pex5vsknk084sn02q";
    app.get(&format!("/v1/links/{missing}"))
        .await
        .assert_problem(404, "not_found");
    // The owner still sees it, unchanged.
    assert_eq!(
        app.get(&format!("/v1/links/{id}")).await.json()["name"],
        json!(null)
    );
}

#[actix_rt::test]
async fn a_workspace_cannot_list_or_revoke_another_workspaces_tokens() {
    let app = spawn_app().await;
    let created = app.post("/v1/tokens", json!({"name": "a-ci"})).await.json();
    let a_second = created["token"].as_str().unwrap().to_owned();
    let ids_of = |list: &serde_json::Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let a_ids = ids_of(&app.get("/v1/tokens").await.json());
    assert_eq!(a_ids.len(), 2);

    let other = app.other_workspace();
    let c = &app.client;
    let b_list = app
        .send_as(&other, c.get(app.url("/v1/tokens")), None)
        .await
        .json();
    let b_ids = ids_of(&b_list);
    assert_eq!(b_ids.len(), 1, "only its own first token: {b_list}");
    assert!(a_ids.iter().all(|id| !b_ids.contains(id)), "{b_list}");

    for id in &a_ids {
        app.send_as(&other, c.delete(app.url(&format!("/v1/tokens/{id}"))), None)
            .await
            .assert_problem(404, "not_found");
    }
    // Both of A's tokens keep working, and none is marked revoked.
    for token in [app.token.as_str(), a_second.as_str()] {
        let r = app.send_as(token, c.get(app.url("/v1/tokens")), None).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        let list = r.json();
        assert!(
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["revoked_at"].is_null()),
            "{list}"
        );
    }
    // B's own revocation works: the 404s above were about ownership.
    let b_id = &b_ids[0];
    let r = app
        .send_as(
            &other,
            c.delete(app.url(&format!("/v1/tokens/{b_id}"))),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    app.send_as(&other, c.get(app.url("/v1/tokens")), None)
        .await
        .assert_problem(401, "unauthorized");
}
