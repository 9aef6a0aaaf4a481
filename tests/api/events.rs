//! Listing scan events: filters, time ranges, and pagination that stays
//! stable while new scans arrive.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{IPHONE_UA, spawn_app};

const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_rt::test]
async fn walking_all_pages_during_new_scans_yields_every_earlier_event_once() {
    let app = spawn_app().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "busy"}))
        .await;
    for _ in 0..120 {
        assert_eq!(app.scan("busy").await.status.as_u16(), 302);
    }
    app.eventually("120 stored", || async {
        app.all_events("").await.len() == 120
    })
    .await;
    let before: HashSet<String> = ids(&app.all_events("").await).into_iter().collect();

    // Keep scanning while the pages are walked.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scanner = {
        let client = app.client.clone();
        let url = app.url("/busy");
        actix_rt::spawn(async move {
            let mut n = 0;
            while stop_rx.try_recv().is_err() {
                let _ = client
                    .get(&url)
                    .insert_header(("User-Agent", IPHONE_UA))
                    .send()
                    .await;
                n += 1;
            }
            n
        })
    };
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = "/v1/events?page_size=7".to_owned();
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page = app.get(&path).await.json();
        seen.extend(ids(page["data"].as_array().unwrap()));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let _ = stop_tx.send(());
    let during = scanner.await.unwrap();
    assert!(during > 0, "scans ran during the walk");
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no event repeated");
    assert!(
        before.is_subset(&unique),
        "every earlier event seen: missing {}",
        before.difference(&unique).count()
    );
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sorted, seen, "newest first");
}

#[actix_rt::test]
async fn filters_narrow_the_list() {
    let app = spawn_app().await;
    let a = app
        .create_link(json!({"destination": "https://a.example/", "slug": "a", "tags": ["print"]}))
        .await;
    app.create_link(json!({"destination": "https://b.example/", "slug": "b"}))
        .await;
    app.scan_with("a", &[("User-Agent", IPHONE_UA)]).await;
    app.scan_with("a", &[("User-Agent", DESKTOP_UA)]).await;
    app.scan_with("b", &[("User-Agent", IPHONE_UA)]).await;
    app.scan_with("b", &[("User-Agent", "curl/8.5.0")]).await;
    app.eventually("4 stored", || async {
        app.all_events("include_bots=true").await.len() == 4
    })
    .await;
    assert_eq!(
        app.all_events("").await.len(),
        3,
        "bots are hidden by default"
    );
    let bots = app.all_events("include_bots=true&device_type=bot").await;
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0]["bot"], true);
    let a_id = a["id"].as_str().unwrap();
    assert_eq!(app.all_events(&format!("link_id={a_id}")).await.len(), 2);
    assert_eq!(app.all_events("tag=print").await.len(), 2);
    assert_eq!(app.all_events("tag=nothing").await.len(), 0);
    assert_eq!(app.all_events("device_type=desktop").await.len(), 1);
    assert_eq!(
        app.all_events(&format!("link_id={a_id}&device_type=mobile"))
            .await
            .len(),
        1
    );
    assert_eq!(
        app.all_events("country=AT").await.len(),
        0,
        "no geo database: country is null"
    );
    assert_eq!(
        app.all_events("visitor_id=vis_01h455vb4pex5vsknk084sn02q")
            .await
            .len(),
        0
    );

    let all = app.all_events("").await;
    let newest = all[0]["timestamp"].as_str().unwrap();
    let oldest = all[2]["timestamp"].as_str().unwrap();
    let from = app.all_events(&format!("from={newest}")).await;
    assert!(
        from.iter()
            .all(|e| e["timestamp"].as_str().unwrap() >= newest)
    );
    assert!(!from.is_empty());
    let to = app.all_events(&format!("to={oldest}")).await;
    assert!(
        to.iter().all(|e| e["timestamp"].as_str().unwrap() < oldest),
        "`to` is exclusive"
    );
    assert_eq!(app.all_events("from=2999-01-01T00:00:00Z").await.len(), 0);
    assert_eq!(
        app.all_events("to=2000-01-01T00:00:00%2B02:00").await.len(),
        0
    );
}

#[actix_rt::test]
async fn bad_list_parameters_are_400() {
    let app = spawn_app().await;
    let other = app.other_workspace();
    app.create_link(json!({"destination": "https://a.example/", "slug": "a"}))
        .await;
    for _ in 0..3 {
        app.scan("a").await;
    }
    app.eventually("3 stored", || async { app.all_events("").await.len() == 3 })
        .await;
    let token = app.get("/v1/events?page_size=1").await.json()["next_page_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = [
        "page_size=0".to_owned(),
        "page_size=501".to_owned(),
        "page_size=ten".to_owned(),
        "page_token=garbage!".to_owned(),
        "page_token=AAAAAAAAAAAAAAAA".to_owned(),
        format!("page_token={token}&device_type=mobile"),
        "link_id=lnk_123".to_owned(),
        "link_id=evt_01h455vb4pex5vsknk084sn02q".to_owned(),
        "visitor_id=nope".to_owned(),
        "from=yesterday".to_owned(),
        "to=2026-13-01T00:00:00Z".to_owned(),
        "device_type=fridge".to_owned(),
        "country=Austria".to_owned(),
        "include_bots=maybe".to_owned(),
    ];
    for q in &bad {
        app.get(&format!("/v1/events?{q}"))
            .await
            .assert_problem(400, "bad_request");
    }
    // A token from another workspace is a 400 too, even for the same filters.
    let r = app
        .send_as(
            &other,
            app.client
                .get(app.url(&format!("/v1/events?page_size=1&page_token={token}"))),
            None,
        )
        .await;
    r.assert_problem(400, "bad_request");
    // The token still works for its own query.
    let r = app
        .get(&format!("/v1/events?page_size=1&page_token={token}"))
        .await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
    app.get("/v1/events/evt_nope")
        .await
        .assert_problem(400, "bad_request");
    app.get("/v1/events/evt_01h455vb4pex5vsknk084sn02q")
        .await
        .assert_problem(404, "not_found");
}

/// Strict durability answers a scan once it is in the scan log; the store
/// gets it with the Recorder's next batch. Here that would take ten
/// seconds, longer than a lookup waits (five): the lookup must have the
/// logged scan committed at once.
#[actix_rt::test]
async fn in_strict_mode_a_scan_id_is_found_at_once_too() {
    let app = crate::helpers::spawn_app_with(&[
        ("SCANHOP__STORAGE__DURABILITY", "strict"),
        ("SCANHOP__RECORDER__BATCH_INTERVAL_MS", "10000"),
    ])
    .await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "sure",
        "conversion_tracking": true}),
    )
    .await;
    let scanned = app.scan_with("sure", &[("User-Agent", IPHONE_UA)]).await;
    assert_eq!(scanned.status.as_u16(), 302);
    let id = scanned.scan_id();
    let r = app.get(&format!("/v1/events/{id}")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
}

/// A scan is answered before its batch is committed. Whoever holds its
/// `scan_id` must still find it at once: a lookup that misses waits for the
/// Recorder's queue. Here a batch waits three seconds to be committed.
#[actix_rt::test]
async fn a_scan_id_is_found_at_once_even_before_its_batch_is_committed() {
    let app = crate::helpers::spawn_app_with(&[
        ("SCANHOP__RECORDER__BATCH_INTERVAL_MS", "3000"),
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "soon",
        "conversion_tracking": true}),
    )
    .await;
    let first = app
        .scan_with(
            "soon",
            &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", "81.2.69.10")],
        )
        .await;
    let id = first.scan_id();
    let r = app.get(&format!("/v1/events/{id}")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    let second = app
        .scan_with(
            "soon",
            &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", "81.2.69.10")],
        )
        .await;
    let id = second.scan_id();
    let r = app
        .send_as(
            &app.token,
            app.client.post(app.url("/v1/visitors/identify")),
            Some(json!({"scan_id": id, "attributes": {"plan": "pro"}})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    // An ID that was never given out is still a 404, after the same wait.
    let r = app.get("/v1/events/evt_01jbz000000000000000000000").await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.text());
}
