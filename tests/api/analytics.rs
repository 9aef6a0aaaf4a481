//! Scan analytics from the Counters worker: `GET /v1/links/{id}/scans` and
//! `GET /v1/metrics`. Days in the workspace's time zone, caps and tie order,
//! bots left out, and counters equal to a recount after a kill -9.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA, TestApp, spawn_app, spawn_app_with};
use crate::mmdb::write_city_db;
use scanhop::domain::{DeviceType, ScanEvent, ScanMethod};
use scanhop::ids::{EventId, LinkId, WorkspaceId};

const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.113 Mobile Safari/537.36";
const FIREFOX_UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";
const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

async fn summary(app: &TestApp, link_id: &str, query: &str) -> Value {
    let r = app.get(&format!("/v1/links/{link_id}/scans{query}")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json()
}

/// Waits until the link's summary over `days` counts `scans`, and returns it.
async fn summary_with(app: &TestApp, link_id: &str, days: u32, scans: u64) -> Value {
    let query = format!("?days={days}");
    app.eventually("the counters to catch up", || async {
        summary(app, link_id, &query).await["period_scans"] == scans
    })
    .await;
    summary(app, link_id, &query).await
}

fn today_in(zone: &str) -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
        .date()
        .to_string()
}

fn values(list: &Value) -> Vec<(Value, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| (v["value"].clone(), v["count"].as_u64().unwrap()))
        .collect()
}

#[actix_rt::test]
async fn a_links_scans_by_day_and_dimension_with_caps_and_stable_ties() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/menu", "slug": "menu"}))
        .await;
    let id = link["id"].as_str().unwrap();
    let day_before = today_in("UTC");
    // Referer hosts: a ×3, b ×3, c ×2, d ×2, then e, f and none once each.
    let referers = [
        Some("https://a.example/x"),
        Some("https://A.example/y"),
        Some("https://a.example/"),
        Some("https://b.example/"),
        Some("https://b.example/1,2"),
        Some("https://b.example/\"q\""),
        Some("https://c.example/"),
        Some("https://c.example/"),
        Some("https://d.example/"),
        Some("https://d.example/"),
        Some("https://f.example/"),
        Some("https://e.example/"),
        None,
    ];
    for (i, referer) in referers.iter().enumerate() {
        let ua = match i {
            0 | 1 => ANDROID_UA,
            2 => FIREFOX_UA,
            _ => IPHONE_UA,
        };
        let mut headers = vec![("User-Agent", ua)];
        if let Some(r) = referer {
            headers.push(("Referer", r));
        }
        assert_eq!(app.scan_with("menu", &headers).await.status.as_u16(), 302);
    }
    app.scan_with(
        "menu",
        &[("User-Agent", BOT_UA), ("Referer", "https://g.example/")],
    )
    .await;
    let s = summary_with(&app, id, 30, 13).await;
    assert_eq!(s["link_id"], id);
    assert_eq!(s["slug"], "menu");
    assert_eq!(s["period_days"], 30);
    assert_eq!(s["total_scans"], 13, "the bot is not counted");
    assert_eq!(
        s["period_visitors"], 3,
        "three user agents from one address: three visitors"
    );
    let days = s["scans_by_day"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{s}");
    assert!(
        [day_before, today_in("UTC")].contains(&days[0]["date"].as_str().unwrap().to_owned()),
        "{s}"
    );
    assert_eq!(days[0]["count"], 13);
    // Ties are ordered by value, unknown (`null`) last; at most five.
    assert_eq!(
        values(&s["top_referers"]),
        [
            (json!("a.example"), 3),
            (json!("b.example"), 3),
            (json!("c.example"), 2),
            (json!("d.example"), 2),
            (json!("e.example"), 1)
        ]
    );
    assert_eq!(
        values(&s["top_devices"]),
        [(json!("mobile"), 12), (json!("desktop"), 1)]
    );
    assert_eq!(
        values(&s["top_browsers"]),
        [
            (json!("Safari"), 10),
            (json!("Chrome"), 2),
            (json!("Firefox"), 1)
        ]
    );
    assert_eq!(values(&s["top_os"])[0], (json!("iOS"), 10));
    assert_eq!(
        values(&s["top_countries"]),
        [(Value::Null, 13)],
        "no GeoIP database: every country is unknown"
    );
    let one_day = summary(&app, id, "?days=1").await;
    assert_eq!(one_day["period_days"], 1);
    let default = summary(&app, id, "").await;
    assert_eq!(
        default["period_days"], 30,
        "30 days when `days` is left out"
    );
    assert_eq!(summary(&app, id, "?days=365").await["period_scans"], 13);
    // The link's own `total_scans` agrees.
    let l = app.get(&format!("/v1/links/{id}")).await.json();
    assert_eq!(l["total_scans"], 13);
}

#[actix_rt::test]
async fn bad_days_unknown_and_foreign_links_are_refused() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/"}))
        .await;
    let id = link["id"].as_str().unwrap();
    for bad in ["0", "366", "-1", "abc", "1.5", "", "99999999999"] {
        let r = app.get(&format!("/v1/links/{id}/scans?days={bad}")).await;
        let p = r.assert_problem(400, "bad_request");
        assert!(
            p["detail"].as_str().unwrap_or_default().contains("days"),
            "{bad}: {p}"
        );
    }
    let r = app
        .get("/v1/links/lnk_00000000000000000000000000/scans")
        .await;
    r.assert_problem(404, "not_found");
    app.get("/v1/links/nope/scans")
        .await
        .assert_problem(400, "bad_request");
    let other = app.other_workspace();
    let r = app
        .send_as(
            &other,
            app.client.get(app.url(&format!("/v1/links/{id}/scans"))),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
    let r = app
        .send_as(
            "sk_nonsense",
            app.client.get(app.url(&format!("/v1/links/{id}/scans"))),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 401);
}

#[actix_rt::test]
async fn top_countries_hold_eight_and_unknown_addresses_count_under_null() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let countries = ["AT", "BE", "CH", "DE", "ES", "FR", "GB", "IT", "NL", "SE"];
    let nets: Vec<String> = (0..countries.len())
        .map(|i| format!("81.2.{i}.0/24"))
        .collect();
    let rows: Vec<(&str, &str, &str, &str)> = nets
        .iter()
        .zip(countries)
        .map(|(n, c)| (n.as_str(), c, "Region", "City"))
        .collect();
    write_city_db(&city, &rows);
    let city = city.display().to_string();
    let app = spawn_app_with(&[
        ("SCANHOP__GEOIP__CITY_DB", &city),
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "geo"}))
        .await;
    // SE three times, an unknown address twice, every other country once.
    let mut from: Vec<String> = (0..countries.len())
        .map(|i| format!("81.2.{i}.7"))
        .collect();
    from.extend(["81.2.9.8".into(), "81.2.9.9".into()]);
    from.extend(["192.0.2.1".into(), "192.0.2.2".into()]);
    for ip in &from {
        let r = app
            .scan_with(
                "geo",
                &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", ip.as_str())],
            )
            .await;
        assert_eq!(r.status.as_u16(), 302);
    }
    let s = summary_with(&app, link["id"].as_str().unwrap(), 7, 14).await;
    assert_eq!(
        values(&s["top_countries"]),
        [
            (json!("SE"), 3),
            (Value::Null, 2),
            (json!("AT"), 1),
            (json!("BE"), 1),
            (json!("CH"), 1),
            (json!("DE"), 1),
            (json!("ES"), 1),
            (json!("FR"), 1),
        ]
    );
}

#[actix_rt::test]
async fn workspace_metrics_count_scans_links_today_and_this_month() {
    let app = spawn_app().await;
    for slug in ["m-a", "m-b", "m-c"] {
        app.create_link(json!({"destination": "https://example.com/", "slug": slug}))
            .await;
    }
    // A link created, renamed and deleted counts no more.
    let gone = app
        .create_link(json!({"destination": "https://example.com/", "slug": "m-gone"}))
        .await;
    let gone = format!("/v1/links/{}", gone["id"].as_str().unwrap());
    assert_eq!(app.get("/v1/metrics").await.json()["total_links"], 4);
    assert_eq!(
        app.patch(&gone, json!({"slug": "m-gone-2"})).await.status,
        200
    );
    assert_eq!(app.get("/v1/metrics").await.json()["total_links"], 4);
    assert_eq!(app.delete(&gone).await.status, 204);
    assert_eq!(app.delete(&gone).await.status, 404);
    for slug in ["m-a", "m-a", "m-a", "m-b", "m-b"] {
        app.scan(slug).await;
    }
    app.scan_with("m-c", &[("User-Agent", BOT_UA)]).await;
    app.eventually("the counters to catch up", || async {
        app.get("/v1/metrics").await.json()["total_scans"] == 5
    })
    .await;
    let r = app.get("/v1/metrics").await;
    assert_eq!(r.status.as_u16(), 200);
    let m = r.json();
    assert_eq!(
        m,
        json!({"total_scans": 5, "total_visitors": 1, "total_links": 3,
            "scans_today": 5, "scans_this_month": 5, "active_webhooks": 0})
    );
    // Another workspace has none of it.
    let other = app.other_workspace();
    let r = app
        .send_as(&other, app.client.get(app.url("/v1/metrics")), None)
        .await;
    assert_eq!(
        r.json(),
        json!({"total_scans": 0, "total_visitors": 0, "total_links": 0,
            "scans_today": 0, "scans_this_month": 0, "active_webhooks": 0})
    );
}

/// A stored scan at instant `ms`, written straight into the store (the
/// Recorder stamps scans with the real clock; these lie in the past).
fn past_event(ms: i64, seq: u8, ws: WorkspaceId, link: LinkId) -> ScanEvent {
    let mut id = EventId::lower_bound_bytes(ms);
    id[15] = seq;
    ScanEvent {
        id: EventId::from_bytes(id),
        workspace_id: ws,
        link_id: link,
        visitor_id: None,
        method: ScanMethod::Get,
        device_type: DeviceType::Mobile,
        os: Some("iOS".into()),
        os_version: None,
        browser: Some("Safari".into()),
        browser_version: None,
        country: None,
        region: None,
        city: None,
        isp: None,
        asn: None,
        language: None,
        referer: None,
        destination: "https://example.com/".into(),
        ip_hash: [0; 32],
        bot: false,
    }
}

#[actix_rt::test]
async fn days_are_the_workspaces_and_move_when_its_time_zone_changes() {
    let app = spawn_app_with(&[("SCANHOP__COUNTERS__CHECKPOINT_INTERVAL_MS", "50")]).await;
    let r = app
        .patch("/v1/workspace", json!({"timezone": "Asia/Kolkata"}))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let ws: WorkspaceId = r.json()["id"].as_str().unwrap().parse().unwrap();
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "tz"}))
        .await;
    let id = link["id"].as_str().unwrap();
    let link_id: LinkId = id.parse().unwrap();
    // One minute before and one after yesterday's midnight in Kolkata (+05:30).
    let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
    let midnight = jiff::Timestamp::now()
        .to_zoned(kolkata.clone())
        .start_of_day()
        .unwrap()
        .checked_sub(jiff::Span::new().days(1))
        .unwrap();
    let at = |minutes: i64| {
        midnight
            .timestamp()
            .checked_add(jiff::Span::new().minutes(minutes))
            .unwrap()
    };
    let (before, after) = (at(-1), at(1));
    app.store
        .commit_scans(&[
            past_event(before.as_millisecond(), 1, ws, link_id),
            past_event(after.as_millisecond(), 1, ws, link_id),
        ])
        .unwrap();
    let s = summary_with(&app, id, 3, 2).await;
    let date = |t: jiff::Timestamp, tz: &str| {
        t.to_zoned(jiff::tz::TimeZone::get(tz).unwrap())
            .date()
            .to_string()
    };
    assert_eq!(
        s["scans_by_day"],
        json!([{"date": date(before, "Asia/Kolkata"), "count": 1},
               {"date": date(after, "Asia/Kolkata"), "count": 1}])
    );
    // Kathmandu is 15 minutes ahead (+05:45): both minutes fall on one day.
    let r = app
        .patch("/v1/workspace", json!({"timezone": "Asia/Kathmandu"}))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let want = json!([{"date": date(after, "Asia/Kathmandu"), "count": 2}]);
    app.eventually("the days to move", || async {
        summary(&app, id, "?days=3").await["scans_by_day"] == want
    })
    .await;
    let s = summary(&app, id, "?days=3").await;
    assert_eq!(s["period_scans"], 2);
    // New scans count in the new zone, after the moved days.
    app.scan("tz").await;
    let s = summary_with(&app, id, 3, 3).await;
    let last = s["scans_by_day"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["date"], today_in("Asia/Kathmandu"));
}

/// Every stored event of one link, through the API.
async fn stored_link_events(base: &str, token: &str, link: &str) -> Vec<Value> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?link_id={link}&page_size=500");
        if let Some(p) = &page {
            url.push_str(&format!("&page_token={p}"));
        }
        let mut r = client
            .get(url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().limit(64 << 20).await.unwrap();
        out.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next_page_token"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => return out,
        }
    }
}

async fn get_json(base: &str, token: &str, path: &str) -> Value {
    let mut r = awc::Client::default()
        .get(format!("{base}{path}"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn counters_lag(base: &str) -> Option<u64> {
    let mut r = awc::Client::default()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?;
    let text = String::from_utf8(r.body().await.ok()?.to_vec()).ok()?;
    text.lines()
        .find(|l| l.starts_with("scanhop_consumer_lag_events{consumer=\"counters\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[actix_rt::test]
async fn after_kill_9_between_checkpoints_the_counters_equal_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    // Checkpoints a minute apart: the kill lands long after the last one.
    let env = [("SCANHOP__COUNTERS__CHECKPOINT_INTERVAL_MS", "60000")];
    let server = BinaryServer::start(dir.path(), &env);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut links = Vec::new();
    for slug in ["k-a", "k-b"] {
        let mut r = client
            .post(format!("{base}/v1/links"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&json!({"destination": "https://example.com/", "slug": slug}))
            .await
            .unwrap();
        let link: Value = r.json().await.unwrap();
        links.push(link["id"].as_str().unwrap().to_owned());
    }
    let uas = [IPHONE_UA, ANDROID_UA, FIREFOX_UA, BOT_UA];
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, base) = (client.clone(), base.clone());
            actix_rt::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_millis(1500);
                let mut i = t;
                while std::time::Instant::now() < deadline {
                    let slug = ["k-a", "k-b"][i % 2];
                    let ua = uas[(i / 2) % uas.len()];
                    let _ = client
                        .get(format!("{base}/{slug}"))
                        .insert_header(("User-Agent", ua))
                        .insert_header(("Referer", format!("https://r{}.example/", i % 7)))
                        .send()
                        .await;
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Let the Recorder's batched flush reach the disk, then kill.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait();

    // The stored position is behind the stored events: the restart has to
    // count again from it.
    {
        let store = scanhop::store::Store::open(dir.path(), 8).unwrap();
        let record = store.consumer("counters").unwrap().unwrap_or_default();
        let behind = store.count_events_after(record.position).unwrap();
        assert!(behind > 0, "the kill came after the last checkpoint");
    }

    let server = BinaryServer::start(dir.path(), &env);
    let base = server.base.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while counters_lag(&base).await != Some(0) {
        assert!(std::time::Instant::now() < deadline, "counters caught up");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let mut total = 0;
    for link in &links {
        let events = stored_link_events(&base, &token, link).await;
        assert!(!events.is_empty());
        let mut browsers: BTreeMap<String, u64> = BTreeMap::new();
        for e in &events {
            *browsers.entry(e["browser"].to_string()).or_default() += 1;
        }
        let s = get_json(&base, &token, &format!("/v1/links/{link}/scans?days=2")).await;
        assert_eq!(s["period_scans"], events.len(), "{link}");
        let day_sum: u64 = s["scans_by_day"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        assert_eq!(day_sum, events.len() as u64);
        let counted: BTreeMap<String, u64> = s["top_browsers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["value"].to_string(), v["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(counted, browsers, "{link}");
        total += events.len();
    }
    let m = get_json(&base, &token, "/v1/metrics").await;
    assert_eq!(m["total_scans"], total);
}
