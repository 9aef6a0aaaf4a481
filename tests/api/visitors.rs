//! Visitors: one device is one visitor across the links of a workspace, told
//! apart by user agent, language and network; profiles from the Visitors
//! worker; and after a kill -9 no device has two visitors and every profile
//! equals a recount of its events.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::enrichment::stored_event;
use crate::helpers::{BinaryServer, IPHONE_UA, TestApp, spawn_app_with};

const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.113 Mobile Safari/537.36";
const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

async fn app() -> TestApp {
    spawn_app_with(&[("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]).await
}

/// Scans `slug` as a device (user agent, language, address) and answers the
/// stored event's `visitor_id`.
async fn scan_as(app: &TestApp, slug: &str, ua: &str, lang: &str, ip: &str) -> Value {
    let r = app
        .scan_with(
            slug,
            &[
                ("User-Agent", ua),
                ("Accept-Language", lang),
                ("X-Forwarded-For", ip),
            ],
        )
        .await;
    assert_eq!(r.status.as_u16(), 302);
    let location = r.header("location").expect("a redirect").to_owned();
    stored_event(app, &location).await["visitor_id"].clone()
}

async fn tracked_link(app: &TestApp, slug: &str) {
    app.create_link(json!({"destination": "https://example.com/", "slug": slug,
        "conversion_tracking": true}))
        .await;
}

#[actix_rt::test]
async fn one_device_is_one_visitor_across_links_and_anything_else_is_another() {
    let app = app().await;
    for slug in ["v-a", "v-b"] {
        tracked_link(&app, slug).await;
    }
    let me = scan_as(&app, "v-a", IPHONE_UA, "de-AT", "81.2.69.10").await;
    assert!(me.as_str().unwrap().starts_with("vis_"), "{me}");
    // Another address in the same /24 is the same device on the same network.
    assert_eq!(
        scan_as(&app, "v-b", IPHONE_UA, "de-AT", "81.2.69.77").await,
        me
    );
    let others = [
        scan_as(&app, "v-a", ANDROID_UA, "de-AT", "81.2.69.10").await,
        scan_as(&app, "v-a", IPHONE_UA, "en-US", "81.2.69.10").await,
        scan_as(&app, "v-a", IPHONE_UA, "de-AT", "81.2.70.10").await,
    ];
    let distinct: BTreeSet<String> = others
        .iter()
        .chain([&me])
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(distinct.len(), 4, "{distinct:?}");
    // Bots get none.
    let r = app
        .scan_with(
            "v-a",
            &[("User-Agent", BOT_UA), ("X-Forwarded-For", "81.2.69.10")],
        )
        .await;
    let id = r
        .header("location")
        .unwrap()
        .split("scan_id=")
        .nth(1)
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(&format!("/v1/events/{id}")).await.json()["visitor_id"],
        Value::Null
    );

    // The profile: two scans on two links.
    let path = format!("/v1/visitors/{}", me.as_str().unwrap());
    app.eventually("the profile", || async {
        app.get(&path).await.json()["event_count"] == 2
    })
    .await;
    let v = app.get(&path).await.json();
    assert_eq!(v["links_scanned"], 2);
    assert_eq!(v["identified"], false);
    assert_eq!(v["attributes"], json!({}));
    assert_eq!(
        v["devices"],
        json!([{"device_type": "mobile", "os": "iOS", "browser": "Safari"}])
    );
    assert_eq!(v["countries"], json!([]), "no GeoIP database");
    let score = v["lead_score"].as_u64().unwrap();
    // 2 scans, 2 links, one day, just now: 6 + 8 + 0 + 15.
    assert_eq!(score, 29);
    let recent = v["recent_events"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent.iter().all(|e| e["visitor_id"] == me));
    // Its events, and the events filter.
    let events = app.get(&format!("{path}/events?page_size=1")).await.json();
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert!(events["next_page_token"].is_string());
    let filtered = app
        .all_events(&format!("visitor_id={}", me.as_str().unwrap()))
        .await;
    assert_eq!(filtered.len(), 2);

    // Listed, newest first; unknown and malformed IDs.
    app.eventually("four visitors listed", || async {
        app.get("/v1/visitors").await.json()["data"]
            .as_array()
            .unwrap()
            .len()
            == 4
    })
    .await;
    let list = app
        .get("/v1/visitors?identified=false&page_size=2")
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let none = app.get("/v1/visitors?identified=true").await.json();
    assert_eq!(none["data"], json!([]));
    app.get("/v1/visitors?identified=maybe")
        .await
        .assert_problem(400, "bad_request");
    app.get("/v1/visitors/vis_00000000000000000000000000")
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/visitors/nope")
        .await
        .assert_problem(400, "bad_request");
}

#[actix_rt::test]
async fn workspaces_never_share_a_visitor() {
    let app = app().await;
    tracked_link(&app, "ws-one").await;
    let other = app.other_workspace();
    let r = app
        .send_as(
            &other,
            app.client.post(app.url("/v1/links")),
            Some(
                json!({"destination": "https://example.com/", "slug": "ws-two",
                "conversion_tracking": true}),
            ),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let mine = scan_as(&app, "ws-one", IPHONE_UA, "de", "81.2.69.10").await;
    let r = app
        .scan_with(
            "ws-two",
            &[
                ("User-Agent", IPHONE_UA),
                ("Accept-Language", "de"),
                ("X-Forwarded-For", "81.2.69.10"),
            ],
        )
        .await;
    let id = r
        .header("location")
        .unwrap()
        .split("scan_id=")
        .nth(1)
        .unwrap()
        .to_owned();
    let event_path = format!("/v1/events/{id}");
    app.eventually("their event stored", || async {
        let req = app.client.get(app.url(&event_path));
        app.send_as(&other, req, None).await.status.as_u16() == 200
    })
    .await;
    let theirs = app
        .send_as(&other, app.client.get(app.url(&event_path)), None)
        .await
        .json()["visitor_id"]
        .clone();
    assert!(theirs.is_string());
    assert_ne!(mine, theirs);
    // And neither sees the other's.
    let path = format!("/v1/visitors/{}", theirs.as_str().unwrap());
    app.eventually("their profile", || async {
        app.send_as(&other, app.client.get(app.url(&path)), None)
            .await
            .status
            .as_u16()
            == 200
    })
    .await;
    app.get(&path).await.assert_problem(404, "not_found");
}

async fn get_json(client: &awc::Client, url: String, token: &str) -> Value {
    let mut r = client
        .get(url)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    r.json().limit(64 << 20).await.unwrap()
}

/// How many events `GET /v1/events?{query}` lists, over every page.
async fn listed_events(client: &awc::Client, base: &str, token: &str, query: &str) -> u64 {
    let (mut n, mut page) = (0, None::<String>);
    loop {
        let mut url = format!("{base}/v1/events?page_size=500&{query}");
        if let Some(p) = &page {
            url.push_str(&format!("&page_token={p}"));
        }
        let body = get_json(client, url, token).await;
        n += body["data"].as_array().unwrap().len() as u64;
        match body["next_page_token"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => return n,
        }
    }
}

async fn lag(client: &awc::Client, base: &str, consumer: &str) -> Option<u64> {
    let mut r = client.get(format!("{base}/metrics")).send().await.ok()?;
    let text = String::from_utf8(r.body().await.ok()?.to_vec()).ok()?;
    let prefix = format!("scanhop_consumer_lag_events{{consumer=\"{consumer}\"}}");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[actix_rt::test]
async fn after_kill_9_in_a_burst_no_device_has_two_visitors_and_profiles_equal_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("SCANHOP__VISITORS__CHECKPOINT_INTERVAL_MS", "200"),
    ];
    let server = BinaryServer::start(dir.path(), &env);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let r = client
        .post(format!("{base}/v1/links"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/", "slug": "crowd"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // 40 devices (each its own /24), 8 connections, each device again and
    // again: first scans of a device race each other on different connections.
    // The burst runs until the kill; `answered` holds the devices redirected.
    let answered = Rc::new(RefCell::new(BTreeSet::new()));
    let stop = Rc::new(Cell::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, base) = (client.clone(), base.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            actix_rt::spawn(async move {
                let mut i = t;
                while !stop.get() {
                    let device = i % 40;
                    let r = client
                        .get(format!("{base}/crowd"))
                        .insert_header(("User-Agent", IPHONE_UA))
                        .insert_header(("X-Forwarded-For", format!("10.{device}.0.1")))
                        .insert_header(("Referer", format!("https://device-{device}.example/")))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().as_u16() == 302 => {
                            answered.borrow_mut().insert(device);
                        }
                        Ok(_) => {}
                        // The server is gone: the kill.
                        Err(_) => break,
                    }
                    i += 3;
                }
            })
        })
        .collect();
    // Kill in the middle of the burst: once every device was redirected,
    // and a few flush intervals (100 ms) later, so that most of them are
    // on disk however slowly the machine runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while answered.borrow().len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst reached every device"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait();
    stop.set(true);
    for t in tasks {
        let _ = t.await;
    }

    let server = BinaryServer::start(dir.path(), &env);
    let base = server.base.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lag(&client, &base, "visitors").await != Some(0) {
        assert!(std::time::Instant::now() < deadline, "visitors caught up");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Every stored event, by device (its referer).
    let mut by_device: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_visitor: BTreeMap<String, u64> = BTreeMap::new();
    let mut page: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?page_size=500");
        if let Some(p) = &page {
            url.push_str(&format!("&page_token={p}"));
        }
        let body = get_json(&client, url, &token).await;
        for e in body["data"].as_array().unwrap() {
            let v = e["visitor_id"].as_str().unwrap().to_owned();
            by_device
                .entry(e["referer"].as_str().unwrap().to_owned())
                .or_default()
                .insert(v.clone());
            *by_visitor.entry(v).or_default() += 1;
        }
        match body["next_page_token"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => break,
        }
    }
    assert!(
        by_device.len() >= 20,
        "the burst reached many devices: {}",
        by_device.len()
    );
    for (device, visitors) in &by_device {
        assert_eq!(visitors.len(), 1, "{device} has {visitors:?}");
    }
    for (visitor, count) in &by_visitor {
        let v = get_json(&client, format!("{base}/v1/visitors/{visitor}"), &token).await;
        assert_eq!(v["event_count"], *count, "{visitor}: {v}");
        // The visitor index lists them all: the entries of the segments
        // committed after its last write were indexed again at start.
        let listed = listed_events(&client, &base, &token, &format!("visitor_id={visitor}")).await;
        assert_eq!(
            listed, *count,
            "{visitor}'s events through the visitor index"
        );
    }
    // A device seen before the kill keeps its visitor after it.
    let (device, visitors) = by_device.iter().next().unwrap();
    let n: u64 = device
        .trim_start_matches("https://device-")
        .trim_end_matches(".example/")
        .parse()
        .unwrap();
    let r = client
        .post(format!("{base}/v1/links"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(
            &json!({"destination": "https://example.com/", "slug": "again",
            "conversion_tracking": true}),
        )
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = client
        .get(format!("{base}/again"))
        .insert_header(("User-Agent", IPHONE_UA))
        .insert_header(("X-Forwarded-For", format!("10.{n}.0.9")))
        .send()
        .await
        .unwrap();
    let loc = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let id = loc.split("scan_id=").nth(1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        let e = get_json(&client, format!("{base}/v1/events/{id}"), &token).await;
        if e["id"].is_string() {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "the scan is stored");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(visitors.contains(e["visitor_id"].as_str().unwrap()), "{e}");
}

/// A tracked scan by a phone, and its `scan_id` and visitor.
async fn scanned(app: &TestApp, slug: &str) -> (String, String) {
    let r = app
        .scan_with(
            slug,
            &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", "81.2.69.10")],
        )
        .await;
    let location = r.header("location").unwrap().to_owned();
    let event = stored_event(app, &location).await;
    (
        event["id"].as_str().unwrap().to_owned(),
        event["visitor_id"].as_str().unwrap().to_owned(),
    )
}

async fn identify_as(app: &TestApp, token: &str, body: Value) -> crate::helpers::Reply {
    app.send_as(
        token,
        app.client.post(app.url("/v1/visitors/identify")),
        Some(body),
    )
    .await
}

#[actix_rt::test]
async fn identify_merges_attributes_and_refuses_bad_ones_changing_nothing() {
    let app = app().await;
    tracked_link(&app, "lead").await;
    let (scan, visitor) = scanned(&app, "lead").await;
    let r = identify_as(
        &app,
        &app.token,
        json!({"scan_id": scan, "attributes": {"email": "a@b.c", "plan": "pro", "n": 1}}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let v = r.json();
    assert_eq!(v["id"], visitor.as_str());
    assert_eq!(v["identified"], true);
    assert_eq!(
        v["attributes"],
        json!({"email": "a@b.c", "plan": "pro", "n": 1})
    );
    // Merged: new keys added, a key set again replaced, `null` removes one.
    let r = identify_as(
        &app,
        &app.token,
        json!({"scan_id": scan, "attributes": {"converted": true, "order_value": 42.5,
            "plan": "business", "n": null}}),
    )
    .await;
    let want =
        json!({"email": "a@b.c", "plan": "business", "converted": true, "order_value": 42.5});
    assert_eq!(r.json()["attributes"], want);
    let path = format!("/v1/visitors/{visitor}");
    let v = app.get(&path).await.json();
    assert_eq!(v["attributes"], want);
    assert_eq!(v["identified"], true);
    // 3 + 4 + 0 + 15 + 10 identified + 4 attributes.
    assert_eq!(v["lead_score"], 36);
    app.eventually("listed as identified", || async {
        app.get("/v1/visitors?identified=true").await.json()["data"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;

    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    let fill: serde_json::Map<String, Value> =
        (0..47).map(|i| (format!("f{i}"), json!(i))).collect();
    let bad = [
        (
            json!({"scan_id": scan, "attributes": {"nested": {"a": 1}}}),
            "attributes.nested",
        ),
        (
            json!({"scan_id": scan, "attributes": {"list": [1, 2]}}),
            "attributes.list",
        ),
        (json!({"scan_id": scan, "attributes": many}), "attributes"),
        (
            json!({"scan_id": scan, "attributes": {"long": "x".repeat(1025)}}),
            "attributes.long",
        ),
        (
            json!({"scan_id": scan, "attributes": {"k".repeat(65): 1}}),
            "attributes.kkk",
        ),
        (
            json!({"scan_id": scan, "attributes": {"": 1}}),
            "attributes.",
        ),
        (json!({"scan_id": scan, "attributes": "email"}), "body"),
        (json!({"scan_id": scan}), "body"),
        (json!({"scan_id": 7, "attributes": {}}), "body"),
        (json!({"scan_id": "evt_nope", "attributes": {}}), "scan_id"),
        (
            json!({"scan_id": scan, "attributes": {}, "extra": 1}),
            "body",
        ),
        // 4 stored + 47 new = 51 after merging.
        (json!({"scan_id": scan, "attributes": fill}), "attributes"),
    ];
    for (body, field) in bad {
        let r = identify_as(&app, &app.token, body.clone()).await;
        let p = r.assert_problem(422, "validation_failed");
        let fields: Vec<String> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{body}: {fields:?}"
        );
    }
    assert_eq!(
        app.get(&path).await.json()["attributes"],
        want,
        "nothing changed"
    );

    // Unknown, foreign and bot scans are 404.
    let r = identify_as(
        &app,
        &app.token,
        json!({"scan_id": "evt_00000000000000000000000000", "attributes": {"a": 1}}),
    )
    .await;
    r.assert_problem(404, "not_found");
    let other = app.other_workspace();
    let r = identify_as(
        &app,
        &other,
        json!({"scan_id": scan, "attributes": {"a": 1}}),
    )
    .await;
    r.assert_problem(404, "not_found");
    let bot = app.scan_with("lead", &[("User-Agent", BOT_UA)]).await;
    let bot = stored_event(&app, bot.header("location").unwrap()).await;
    let r = identify_as(
        &app,
        &app.token,
        json!({"scan_id": bot["id"], "attributes": {"a": 1}}),
    )
    .await;
    r.assert_problem(404, "not_found");
    assert_eq!(
        app.get(&path).await.json()["attributes"],
        want,
        "nothing changed"
    );
}

#[actix_rt::test]
async fn a_publishable_token_may_identify_and_nothing_else_and_only_identify_allows_cors() {
    let app = app().await;
    tracked_link(&app, "web").await;
    let (scan, visitor) = scanned(&app, "web").await;
    let r = app
        .post("/v1/tokens", json!({"type": "publishable", "name": "site"}))
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let pk = r.json()["token"].as_str().unwrap().to_owned();
    let r = identify_as(
        &app,
        &pk,
        json!({"scan_id": scan, "attributes": {"email": "x@y.z"}}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["id"], visitor.as_str());
    for path in [
        "/v1/visitors".to_owned(),
        format!("/v1/visitors/{visitor}"),
        format!("/v1/visitors/{visitor}/events"),
        "/v1/links".to_owned(),
        "/v1/events".to_owned(),
        "/v1/metrics".to_owned(),
    ] {
        let r = app.send_as(&pk, app.client.get(app.url(&path)), None).await;
        r.assert_problem(403, "forbidden");
    }

    // The browser's preflight: allowed for identify, from any origin.
    let preflight = |path: &str| {
        app.client
            .request(awc::http::Method::OPTIONS, app.url(path))
            .insert_header(("Origin", "https://shop.example"))
            .insert_header(("Access-Control-Request-Method", "POST"))
            .insert_header((
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ))
    };
    let r = app.raw(preflight("/v1/visitors/identify"), "").await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"));
    for other in [
        "/v1/links",
        "/v1/visitors",
        &format!("/v1/visitors/{visitor}"),
    ] {
        let r = app.raw(preflight(other), "").await;
        assert!(!r.status.is_success(), "{other}: {}", r.status);
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
    }
    // Other answers carry no CORS header either.
    let r = app.get("/v1/visitors").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

/// Against the real binary, so the store can be compacted and its files read.
#[actix_rt::test]
async fn erasure_leaves_no_byte_of_the_visitor_and_keeps_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Checkpoints every 50 ms: the profiles are stored before the erasure
    // (the erased visitor's started the workspace's bucket of profiles).
    let env = [
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("SCANHOP__VISITORS__CHECKPOINT_INTERVAL_MS", "50"),
    ];
    let mut server = BinaryServer::start(&data, &env);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let call = |method: awc::http::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .insert_header(("Authorization", format!("Bearer {token}")))
    };
    let r = call(awc::http::Method::POST, "/v1/links")
        .send_json(
            &json!({"destination": "https://example.com/", "slug": "gdpr",
            "conversion_tracking": true}),
        )
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let link: Value = {
        let mut r = r;
        r.json().await.unwrap()
    };
    let suffix = hex::encode(scanhop::random::bytes::<6>());
    let (gone, kept) = (
        format!("erased-{suffix}@example.com"),
        format!("kept-{suffix}@example.com"),
    );

    // Two devices; each scans twice and identifies itself.
    let scan = |ip: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}/gdpr"))
                .insert_header(("User-Agent", IPHONE_UA))
                .insert_header(("X-Forwarded-For", ip))
                .send()
                .await
                .unwrap();
            let loc = r
                .headers()
                .get("location")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            loc.split("scan_id=").nth(1).unwrap().to_owned()
        }
    };
    let mut visitors = Vec::new();
    for (ip, email) in [("81.2.69.10", &gone), ("89.160.20.10", &kept)] {
        scan(ip).await;
        let scan_id = scan(ip).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let r = loop {
            let mut r = call(awc::http::Method::POST, "/v1/visitors/identify")
                .send_json(&json!({"scan_id": scan_id, "attributes": {"email": email}}))
                .await
                .unwrap();
            if r.status().as_u16() == 200 {
                break r.json::<Value>().await.unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "the scan is stored");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        };
        visitors.push(r["id"].as_str().unwrap().to_owned());
    }
    // The first device also completes a form: its answer is personal data.
    let answered = format!("form-{suffix}@example.com");
    let form_link = json!({"destination": "https://example.com/", "slug": "gdpr-form",
        "form": {"title": "Join", "fields": [
            {"name": "email", "label": "E-mail", "type": "email", "required": true}]}});
    let r = call(awc::http::Method::POST, "/v1/links")
        .send_json(&form_link)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut page = client
        .get(format!("{base}/gdpr-form"))
        .insert_header(("User-Agent", IPHONE_UA))
        .insert_header(("X-Forwarded-For", "81.2.69.10"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    let (form_scan, form_token) = (
        crate::forms::hidden(&html, "scan_id"),
        crate::forms::hidden(&html, "token"),
    );
    let send_form = || {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("scan_id", &form_scan)
            .append_pair("token", &form_token)
            .append_pair("email", &answered)
            .finish();
        client
            .post(format!("{base}/gdpr-form/form"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .send_body(body)
    };
    assert_eq!(send_form().await.unwrap().status().as_u16(), 303);
    let erased = visitors[0].clone();
    let vpath = format!("/v1/visitors/{erased}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get_json(&client, format!("{base}{vpath}"), &token).await["event_count"] != 3 {
        assert!(std::time::Instant::now() < deadline, "profile counted");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let link_path = format!("/v1/links/{}", link["id"].as_str().unwrap());
    let before =
        get_json(&client, format!("{base}{link_path}"), &token).await["total_scans"].clone();
    assert_eq!(before, 4);
    // The Counters worker (behind the Recorder, at a lower priority) has
    // counted all four before the erasure, so the count after it says
    // that the erasure kept them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get_json(&client, format!("{base}{link_path}/scans"), &token).await["period_scans"] != 4 {
        assert!(std::time::Instant::now() < deadline, "scans counted");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // A few checkpoints later, both profiles are stored.
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let r = call(awc::http::Method::DELETE, &vpath)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = call(awc::http::Method::GET, &vpath).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = call(awc::http::Method::DELETE, &vpath)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "erased once");
    // The form stays completed: a second submission is still refused.
    assert_eq!(send_form().await.unwrap().status().as_u16(), 409);
    // Its events remain, pointing to nobody; counts are unchanged.
    let events = get_json(
        &client,
        format!("{base}/v1/events?link_id={}", link["id"].as_str().unwrap()),
        &token,
    )
    .await;
    let events = events["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events.iter().filter(|e| e["visitor_id"].is_null()).count(),
        2
    );
    assert!(events.iter().all(|e| e["visitor_id"] != erased.as_str()));
    let by_visitor = get_json(
        &client,
        format!("{base}/v1/events?visitor_id={erased}"),
        &token,
    )
    .await;
    assert_eq!(by_visitor["data"], json!([]));
    assert_eq!(
        get_json(&client, format!("{base}{link_path}"), &token).await["total_scans"],
        before
    );
    let scans = get_json(&client, format!("{base}{link_path}/scans"), &token).await;
    assert_eq!(scans["period_scans"], 4);
    // The device is a stranger now: a new scan makes a new visitor.
    let again = scan("81.2.69.10").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        let e = get_json(&client, format!("{base}/v1/events/{again}"), &token).await;
        if e["id"].is_string() {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "stored");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    let new_visitor = e["visitor_id"].as_str().unwrap();
    assert_ne!(new_visitor, erased);
    assert!(!visitors.contains(&new_visitor.to_owned()));

    server.signal(libc::SIGTERM);
    assert!(server.wait().success());
    let raw_id: scanhop::ids::VisitorId = erased.parse().unwrap();
    let compacted = crate::retention::stdout(&crate::retention::scanhop(&data, &["compact"]));
    assert!(compacted.contains("bytes before"), "{compacted}");
    for needle in [
        gone.as_bytes(),
        answered.as_bytes(),
        erased.as_bytes(),
        &raw_id.as_bytes()[..],
    ] {
        assert_eq!(
            crate::retention::files_with(&data, needle),
            Vec::<String>::new(),
            "{:?} survived",
            String::from_utf8_lossy(needle)
        );
    }
    // The other visitor's attribute is still there: the search can find.
    assert!(!crate::retention::files_with(&data, kept.as_bytes()).is_empty());
}

#[actix_rt::test]
async fn the_daily_scope_splits_a_device_at_utc_midnight_and_the_persistent_one_does_not() {
    const DAY_MS: i64 = 86_400_000;
    for (scope, splits) in [("daily", true), ("persistent", false)] {
        let app = spawn_app_with(&[
            ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SCANHOP__PRIVACY__FINGERPRINT_SCOPE", scope),
        ])
        .await;
        tracked_link(&app, "daily").await;
        let today = scan_as(&app, "daily", IPHONE_UA, "de", "81.2.69.10").await;
        assert_eq!(
            scan_as(&app, "daily", IPHONE_UA, "de", "81.2.69.10").await,
            today,
            "{scope}: the same day"
        );
        // The next UTC day (the clock's offset moves only the redirect's day).
        app.clock.advance(DAY_MS);
        let tomorrow = scan_as(&app, "daily", IPHONE_UA, "de", "81.2.69.10").await;
        assert_eq!(tomorrow != today, splits, "{scope}: {today} / {tomorrow}");
    }
}

/// A visitor is readable as soon as a client can know its ID: right after a
/// burst of first scans by new devices, each scan's visitor answers 200 at
/// once, before the Visitors worker (a background thread) may have folded
/// the scan into a profile. An ID that was never issued is still a 404.
#[actix_rt::test]
async fn a_visitor_is_found_as_soon_as_its_first_scan_is_stored() {
    let app = app().await;
    tracked_link(&app, "burst").await;
    let scans = (0..120).map(|n| {
        let app = &app;
        async move {
            let ip = format!("10.9.{n}.1");
            let r = app
                .scan_with(
                    "burst",
                    &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", ip.as_str())],
                )
                .await;
            assert_eq!(r.status.as_u16(), 302);
            let location = r.header("location").unwrap().to_owned();
            let visitor = stored_event(app, &location).await["visitor_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let v = app.get(&format!("/v1/visitors/{visitor}")).await;
            assert_eq!(v.status.as_u16(), 200, "{}", v.text());
            assert_eq!(v.json()["id"], visitor.as_str());
            visitor
        }
    });
    let visitors: BTreeSet<String> = futures_util::future::join_all(scans)
        .await
        .into_iter()
        .collect();
    assert_eq!(visitors.len(), 120, "one visitor per device");
    let unknown = app.get("/v1/visitors/vis_01h455vb4pex5vsknk084sn02q").await;
    assert_eq!(unknown.status.as_u16(), 404, "{}", unknown.text());
}

#[actix_rt::test]
async fn a_visitor_saved_again_at_a_later_checkpoint_stays_listed_once() {
    let app = app().await;
    tracked_link(&app, "again").await;
    let me = scan_as(&app, "again", IPHONE_UA, "de-AT", "81.2.69.10").await;
    let me = me.as_str().unwrap().to_owned();
    // Listed once its profile is stored (the listing reads the store).
    let listed = || async {
        app.get("/v1/visitors").await.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["id"].as_str().unwrap().to_owned(),
                    v["event_count"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    app.eventually("listed after its first scan", || async {
        listed().await == vec![(me.clone(), json!(1))]
    })
    .await;
    // A second scan is folded into the stored profile at a later checkpoint:
    // still one entry, now with both scans.
    assert_eq!(
        scan_as(&app, "again", IPHONE_UA, "de-AT", "81.2.69.10").await,
        me.as_str()
    );
    app.eventually("listed once with both scans", || async {
        listed().await == vec![(me.clone(), json!(2))]
    })
    .await;
}
