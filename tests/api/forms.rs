//! The form step through real HTTP: the page a scan answers, a valid
//! submission (303, answers on the visitor, `step.completed` at a local
//! receiver), invalid answers (422, input kept), every refusal (replay,
//! token, unknown scan, size, media type) storing nothing, and escaping.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{IPHONE_UA, Reply, TestApp, spawn_app_with};
use crate::webhooks::{FAST, Receiver, hook_with, verifies};

const SCRIPT: &str = "<script>alert('x')</script>";

async fn form_link(app: &TestApp, slug: &str) -> Value {
    app.create_link(json!({
        "destination": "https://example.com/welcome?src=qr#top",
        "slug": slug,
        "conversion_tracking": true,
        "form": {
            "title": format!("Join the club {SCRIPT}"),
            "fields": [
                {"name": "email", "label": "Your e-mail", "type": "email", "required": true},
                {"name": "name", "label": format!("Name {SCRIPT}"), "type": "text", "required": true},
                {"name": "age", "label": "Age", "type": "number"},
                {"name": "note", "label": "Anything else?", "type": "textarea"}
            ]
        }
    }))
    .await
}

/// The value of the hidden input `name` in `html`.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// Scans `slug` as a phone; answers the form page and its scan ID and token.
async fn open_form(app: &TestApp, slug: &str) -> (Reply, String, String) {
    let r = app.scan_with(slug, &[("User-Agent", IPHONE_UA)]).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let html = r.text();
    let (scan, token) = (hidden(&html, "scan_id"), hidden(&html, "token"));
    (r, scan, token)
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn submit(app: &TestApp, slug: &str, body: String) -> Reply {
    let req = app
        .client
        .post(app.url(&format!("/{slug}/form")))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
    app.raw(req, body).await
}

async fn completions(app: &TestApp, link_id: &str) -> Value {
    let r = app.get(&format!("/v1/links/{link_id}/scans")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json()["form"].clone()
}

async fn attributes_of_scan(app: &TestApp, scan: &str) -> Value {
    let event_path = format!("/v1/events/{scan}");
    app.eventually("the scan stored", || async {
        app.get(&event_path).await.status.as_u16() == 200
    })
    .await;
    let event = app.get(&event_path).await.json();
    let path = format!("/v1/visitors/{}", event["visitor_id"].as_str().unwrap());
    app.eventually("the visitor", || async {
        app.get(&path).await.status.as_u16() == 200
    })
    .await;
    app.get(&path).await.json()["attributes"].clone()
}

#[actix_rt::test]
async fn a_form_link_shows_an_accessible_escaped_page_and_a_valid_answer_goes_on() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let (_, secret) = hook_with(&app, &rx, &["step.completed"]).await;
    let link = form_link(&app, "club").await;
    let link_id = link["id"].as_str().unwrap();
    let (page, scan, token) = open_form(&app, "club").await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = page.text();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains(SCRIPT), "the title and a label are escaped");
    assert!(html.contains("Name &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    for (i, name) in ["email", "name", "age", "note"].iter().enumerate() {
        assert!(html.contains(&format!("<label for=\"f{i}\">")), "{name}");
        assert!(
            html.contains(&format!("id=\"f{i}\" name=\"{name}\"")),
            "{name}"
        );
    }
    for external in ["<script", "src=", "href=", "http://", "https://"] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(scan.starts_with("evt_"));

    let r = submit(
        &app,
        "club",
        encode(&[
            ("scan_id", &scan),
            ("token", &token),
            ("email", " ada@example.com "),
            ("name", "Ada"),
            ("age", "36"),
            ("note", ""),
            ("unexpected", "ignored"),
        ]),
    )
    .await;
    assert_eq!(r.status.as_u16(), 303, "{}", r.text());
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://example.com/welcome?src=qr&scan_id={scan}#top")
    );
    let want = json!({"email": "ada@example.com", "name": "Ada", "age": 36.0});
    assert_eq!(attributes_of_scan(&app, &scan).await, want);
    // step.completed with the answers; the scan itself made none.
    let got = rx.wait_for(1).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.log().len(), 1, "one step.completed: the form's");
    assert!(verifies(&secret, &got[0]));
    let body = got[0].json();
    assert_eq!(body["type"], "step.completed");
    assert_eq!(
        body["data"]["step"],
        json!({"kind": "exit", "action": "form", "answers": want})
    );
    assert_eq!(body["data"]["scan_id"], scan.as_str());
    assert_eq!(body["data"]["visitor"]["attributes"], want);
    // The whole link: its ID, slug and tags.
    assert_eq!(body["data"]["link"]["id"], link_id);
    assert_eq!(body["data"]["link"]["slug"], "club");
    assert_eq!(body["data"]["link"]["tags"], link["tags"]);
    // Counted: a view and a completion.
    let stats = completions(&app, link_id).await;
    assert_eq!(
        stats,
        json!({"views": 1, "completions": 1, "completion_rate": 1.0})
    );
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(
        metrics.contains("scanhop_form_completions_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("scanhop_form_views_total 1"));
    // A link without a form has no form statistics.
    app.create_link(json!({"destination": "https://example.com/", "slug": "plain"}))
        .await;
    let plain = app.get("/v1/links").await.json()["data"][0]["id"].clone();
    assert_eq!(
        completions(&app, plain.as_str().unwrap()).await,
        Value::Null
    );
}

#[actix_rt::test]
async fn invalid_answers_come_back_with_messages_and_the_input_kept_escaped() {
    let app = spawn_app_with(FAST).await;
    let link = form_link(&app, "club").await;
    let (_, scan, token) = open_form(&app, "club").await;
    let r = submit(
        &app,
        "club",
        encode(&[
            ("scan_id", &scan),
            ("token", &token),
            ("email", "not-an-address"),
            ("name", ""),
            ("age", "thirty"),
            ("note", SCRIPT),
        ]),
    )
    .await;
    assert_eq!(r.status.as_u16(), 422);
    let html = r.text();
    assert!(html.contains("role=\"alert\""));
    assert!(html.contains("Enter an email address"));
    assert!(html.contains("This field is required."));
    assert!(html.contains("Enter a number"));
    assert!(html.contains("value=\"not-an-address\""), "input kept");
    assert!(html.contains("value=\"thirty\""));
    assert!(!html.contains(SCRIPT), "the answer is escaped");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</textarea>"));
    assert!(html.contains("aria-invalid=\"true\""));
    // The same scan and token still work, once.
    assert_eq!(hidden(&html, "scan_id"), scan);
    let valid = encode(&[
        ("scan_id", &scan),
        ("token", &hidden(&html, "token")),
        ("email", "ada@example.com"),
        ("name", "Ada"),
    ]);
    assert_eq!(submit(&app, "club", valid).await.status.as_u16(), 303);
    let stats = completions(&app, link["id"].as_str().unwrap()).await;
    assert_eq!(stats["completions"], 1);
}

#[actix_rt::test]
async fn every_refusal_is_a_clear_4xx_and_stores_nothing() {
    let app = spawn_app_with(FAST).await;
    let link = form_link(&app, "club").await;
    let link_id = link["id"].as_str().unwrap().to_owned();
    let other = app
        .create_link(
            json!({"destination": "https://example.com/", "slug": "other",
            "conversion_tracking": true}),
        )
        .await;
    let _ = other;
    let (_, scan, token) = open_form(&app, "club").await;
    let answers = |scan: &str, token: &str| {
        encode(&[
            ("scan_id", scan),
            ("token", token),
            ("email", "ada@example.com"),
            ("name", "Ada"),
        ])
    };
    // A scan of another link, an unknown scan, a malformed one.
    let foreign = app.scan_with("other", &[("User-Agent", IPHONE_UA)]).await;
    let foreign = foreign
        .header("location")
        .and_then(|l| l.split("scan_id=").nth(1))
        .unwrap()
        .to_owned();
    app.eventually("the other scan stored", || async {
        app.get(&format!("/v1/events/{foreign}"))
            .await
            .status
            .as_u16()
            == 200
    })
    .await;
    let cases: Vec<(String, &str, String, u16)> = vec![
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            answers(&scan, "AAAAAAAAAAAAAAAAAAAAAA"),
            403,
        ),
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            answers(&scan, ""),
            403,
        ),
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            answers(&foreign, &token),
            404,
        ),
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            answers("evt_01h455vb4pex5vsknk084sn02q", &token),
            404,
        ),
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            answers("nope", &token),
            400,
        ),
        (
            "club".into(),
            "application/json",
            answers(&scan, &token),
            400,
        ),
        (
            "nowhere".into(),
            "application/x-www-form-urlencoded",
            answers(&scan, &token),
            404,
        ),
        (
            "other".into(),
            "application/x-www-form-urlencoded",
            answers(&foreign, &token),
            404,
        ),
        (
            "club".into(),
            "application/x-www-form-urlencoded",
            format!("{}&note={}", answers(&scan, &token), "x".repeat(40_000)),
            413,
        ),
    ];
    for (slug, content_type, body, status) in cases {
        let req = app
            .client
            .post(app.url(&format!("/{slug}/form")))
            .insert_header(("Content-Type", content_type));
        let r = app.raw(req, body).await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{slug} {content_type}: {}",
            r.text()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let nothing = json!({"views": 1, "completions": 0, "completion_rate": 0.0});
    assert_eq!(completions(&app, &link_id).await, nothing);
    assert_eq!(attributes_of_scan(&app, &scan).await, json!({}));
    // The real one goes through once; its replay is refused.
    assert_eq!(
        submit(&app, "club", answers(&scan, &token))
            .await
            .status
            .as_u16(),
        303
    );
    let replay = submit(&app, "club", answers(&scan, &token)).await;
    assert_eq!(replay.status.as_u16(), 409, "{}", replay.text());
    assert_eq!(completions(&app, &link_id).await["completions"], 1);
    // GET on the form's address is not allowed.
    let r = app.get("/club/form").await;
    assert_eq!(r.status.as_u16(), 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    for reason in [
        "bad_token",
        "unknown_scan",
        "malformed",
        "too_large",
        "replay",
    ] {
        assert!(
            metrics.contains(&format!(
                "scanhop_form_refusals_total{{reason=\"{reason}\"}}"
            )),
            "{reason}"
        );
    }
}
