//! The redirect: status, headers, scan_id, HEAD, disabled and expired links,
//! unknown slugs, and reserved paths.

use serde_json::json;

use crate::helpers::{IPHONE_UA, spawn_app, spawn_app_with};

#[actix_rt::test]
async fn a_scan_redirects_with_the_contract_headers_and_is_recorded() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/menu", "slug": "menu"}))
        .await;
    let r = app
        .scan_with(
            "menu",
            &[
                ("User-Agent", IPHONE_UA),
                ("Accept-Language", "de-AT,de;q=0.9"),
                ("Referer", "https://news.example/post"),
            ],
        )
        .await;
    assert_eq!(r.status.as_u16(), 302);
    assert_eq!(r.header("location"), Some("https://example.com/menu"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("no-referrer-when-downgrade")
    );
    assert!(r.header("x-request-id").is_some());
    app.eventually("the event", || async {
        app.all_events("").await.len() == 1
    })
    .await;
    let event = &app.all_events("").await[0];
    assert_eq!(event["link_id"], link["id"]);
    assert_eq!(event["method"], "GET");
    assert_eq!(event["destination"], "https://example.com/menu");
    assert_eq!(event["device_type"], "mobile");
    assert_eq!(event["os"], "iOS");
    assert_eq!(event["browser"], "Safari");
    assert_eq!(event["language"], "de");
    assert_eq!(event["referer"], "https://news.example/post");
    assert_eq!(event["bot"], false);
    assert!(event["visitor_id"].as_str().unwrap().starts_with("vis_"));
    assert_eq!(event["ip_hash"].as_str().unwrap().len(), 64);
    assert!(event.get("ip").is_none());
    let one = app
        .get(&format!("/v1/events/{}", event["id"].as_str().unwrap()))
        .await;
    assert_eq!(&one.json(), event);
    let link = app
        .get(&format!("/v1/links/{}", link["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(link["total_scans"], 1);
}

#[actix_rt::test]
async fn the_redirect_status_is_configurable() {
    let app = spawn_app_with(&[("SCANHOP__SERVER__REDIRECT_STATUS", "307")]).await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "t"}))
        .await;
    assert_eq!(app.scan("t").await.status.as_u16(), 307);
}

#[actix_rt::test]
async fn conversion_tracking_appends_scan_id_keeping_query_and_fragment() {
    let app = spawn_app().await;
    let cases = [
        (
            "plain",
            "https://example.com/p",
            "https://example.com/p?scan_id=",
        ),
        (
            "query",
            "https://example.com/p?a=1&b=x%20y",
            "https://example.com/p?a=1&b=x%20y&scan_id=",
        ),
        (
            "frag",
            "https://example.com/p#section",
            "https://example.com/p?scan_id=",
        ),
        (
            "both",
            "https://example.com/p?a=1#s?x=1",
            "https://example.com/p?a=1&scan_id=",
        ),
    ];
    for (slug, dest, prefix) in cases {
        app.create_link(json!({"destination": dest, "slug": slug, "conversion_tracking": true}))
            .await;
        let r = app.scan(slug).await;
        let location = r.header("location").unwrap().to_owned();
        assert!(location.starts_with(prefix), "{slug}: {location}");
        let scan_id = location[prefix.len()..].split('#').next().unwrap();
        assert!(
            scan_id.starts_with("evt_") && scan_id.len() == 30,
            "{location}"
        );
        if let Some(fragment) = dest.split_once('#').map(|(_, f)| f) {
            assert!(location.ends_with(&format!("#{fragment}")), "{location}");
        }
        app.eventually("the scan_id names the stored event", || async {
            app.get(&format!("/v1/events/{scan_id}"))
                .await
                .status
                .as_u16()
                == 200
        })
        .await;
    }
}

#[actix_rt::test]
async fn head_answers_like_get_but_records_nothing() {
    let app = spawn_app().await;
    let link = app.create_link(json!({"destination": "https://example.com/", "slug": "h", "conversion_tracking": true})).await;
    let r = app
        .raw(
            app.client
                .head(app.url("/h"))
                .insert_header(("User-Agent", IPHONE_UA)),
            "",
        )
        .await;
    assert_eq!(r.status.as_u16(), 302);
    assert_eq!(r.header("location"), Some("https://example.com/"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // A GET afterwards is recorded; only it shows up.
    app.scan("h").await;
    app.eventually("the GET", || async { !app.all_events("").await.is_empty() })
        .await;
    actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(app.all_events("").await.len(), 1);
    assert_eq!(
        app.get(&format!("/v1/links/{}", link["id"].as_str().unwrap()))
            .await
            .json()["total_scans"],
        1
    );
}

#[actix_rt::test]
async fn disabled_and_expired_links_go_to_the_fallback_or_answer_410() {
    let app = spawn_app().await;
    let a = app.create_link(json!({"destination": "https://example.com/", "slug": "off", "fallback_destination": "https://example.com/sorry"})).await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "old", "expires_at": "2020-01-01T00:00:00Z"})).await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "later", "expires_at": "2999-01-01T00:00:00Z"})).await;
    app.patch(
        &format!("/v1/links/{}", a["id"].as_str().unwrap()),
        json!({"status": "disabled"}),
    )
    .await;
    let r = app.scan("off").await;
    assert_eq!(r.status.as_u16(), 302);
    assert_eq!(r.header("location"), Some("https://example.com/sorry"));
    let r = app.scan("old").await;
    assert_eq!(r.status.as_u16(), 410);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = app
        .scan_with("old", &[("Accept", "application/json")])
        .await;
    r.assert_problem(410, "gone");
    assert_eq!(app.scan("later").await.status.as_u16(), 302);
    // Re-enabling takes effect on the next scan.
    app.patch(
        &format!("/v1/links/{}", a["id"].as_str().unwrap()),
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(
        app.scan("off").await.header("location"),
        Some("https://example.com/")
    );
}

#[actix_rt::test]
async fn unknown_slugs_are_404_html_or_json_and_counted_as_orphans() {
    let app = spawn_app().await;
    let r = app.scan("nothing-here").await;
    assert_eq!(r.status.as_u16(), 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<html"));
    let r = app
        .scan_with("nothing-here", &[("Accept", "application/json")])
        .await;
    r.assert_problem(404, "not_found");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("scanhop_orphan_scans_total 2"),
        "{metrics}"
    );
    assert!(app.all_events("include_bots=true").await.is_empty());
}

#[actix_rt::test]
async fn server_paths_are_never_shadowed() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.scan(path.trim_start_matches('/')).await;
        assert_eq!(r.status.as_u16(), 200, "{path}");
        assert!(r.header("location").is_none());
    }
    app.scan("v1").await.assert_problem(404, "not_found");
}

#[actix_rt::test]
async fn other_methods_on_a_slug_are_405() {
    let app = spawn_app().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "m"}))
        .await;
    let r = app.raw(app.client.delete(app.url("/m")), "").await;
    r.assert_problem(405, "method_not_allowed");
}
