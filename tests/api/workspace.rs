//! The caller's workspace.

use serde_json::json;

use crate::helpers::spawn_app;

#[actix_rt::test]
async fn the_workspace_can_be_read_and_renamed() {
    let app = spawn_app().await;
    let ws = app.get("/v1/workspace").await.json();
    assert!(ws["id"].as_str().unwrap().starts_with("ws_"));
    assert_eq!(ws["name"], "default");
    assert_eq!(ws["plan"], "free");
    assert_eq!(ws["retention_days"], 30);
    assert_eq!(ws["timezone"], "UTC");
    assert!(ws["created_at"].as_str().unwrap().ends_with('Z'));
    let r = app
        .patch(
            "/v1/workspace",
            json!({"name": "Acme", "timezone": "Europe/Vienna"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let updated = app.get("/v1/workspace").await.json();
    assert_eq!(updated["name"], "Acme");
    assert_eq!(updated["timezone"], "Europe/Vienna");
    assert_eq!(updated["id"], ws["id"]);
}

#[actix_rt::test]
async fn bad_workspace_patches_change_nothing() {
    let app = spawn_app().await;
    let before = app.get("/v1/workspace").await.json();
    let r = app
        .patch(
            "/v1/workspace",
            json!({"name": "ok", "timezone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "timezone"
    );
    app.patch("/v1/workspace", json!({"name": ""}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch("/v1/workspace", json!({"plan": "business"}))
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(app.get("/v1/workspace").await.json(), before);
}
