//! Scan enrichment: user agents, geo and network, client IP behind proxies,
//! and that no stored byte holds the client's IP.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{IPHONE_UA, TestApp, metric, spawn_app, spawn_app_with};
use crate::mmdb::{write_asn_db, write_atomically, write_city_db};

const CITY_ROWS: &[crate::mmdb::CityRow] = &[
    ("81.2.69.0/24", "GB", "England", "London"),
    ("89.160.20.0/24", "SE", "Östergötland County", "Linköping"),
    ("2a02:c7f::/32", "AT", "Vienna", "Vienna"),
];
const ASN_ROWS: &[(&str, u32, &str)] = &[
    ("81.2.69.0/24", 20712, "Andrews & Arnold Ltd"),
    ("2a02:c7f::/32", 8447, "A1 Telekom Austria AG"),
];

pub(crate) fn geo_env(dir: &Path) -> Vec<(String, String)> {
    let city = dir.join("city.mmdb");
    let asn = dir.join("asn.mmdb");
    write_city_db(&city, CITY_ROWS);
    write_asn_db(&asn, ASN_ROWS);
    vec![
        ("SCANHOP__GEOIP__CITY_DB".into(), city.display().to_string()),
        ("SCANHOP__GEOIP__ASN_DB".into(), asn.display().to_string()),
        ("SCANHOP__GEOIP__RELOAD_INTERVAL_MS".into(), "50".into()),
        (
            "SCANHOP__SERVER__TRUSTED_PROXIES".into(),
            "127.0.0.1/32".into(),
        ),
    ]
}

pub(crate) async fn geo_app(dir: &Path) -> TestApp {
    geo_app_with(dir, &[]).await
}

/// An app with the test GeoIP databases, 127.0.0.1 as its trusted proxy, and
/// `extra` settings.
pub(crate) async fn geo_app_with(dir: &Path, extra: &[(&str, &str)]) -> TestApp {
    let mut env = geo_env(dir);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(&pairs).await
}

/// Scans `slug` as a client at `ip` behind the trusted local proxy, and
/// returns the stored event.
async fn scan_from(app: &TestApp, slug: &str, ip: &str) -> Value {
    let r = app
        .scan_with(slug, &[("User-Agent", IPHONE_UA), ("X-Forwarded-For", ip)])
        .await;
    stored_event(app, r.header("location").unwrap()).await
}

/// The stored event of a redirect to `location` (which carries `scan_id`).
pub(crate) async fn stored_event(app: &TestApp, location: &str) -> Value {
    let scan_id = location.split("scan_id=").nth(1).unwrap().to_owned();
    let path = format!("/v1/events/{scan_id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get(&path).await;
        if r.status.as_u16() == 200 {
            return r.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event {scan_id} never stored"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

fn geo_of(e: &Value) -> (Value, Value, Value, Value, Value) {
    (
        e["country"].clone(),
        e["region"].clone(),
        e["city"].clone(),
        e["asn"].clone(),
        e["isp"].clone(),
    )
}

#[actix_rt::test]
async fn ipv4_and_ipv6_scans_get_country_region_city_and_network() {
    let dir = tempfile::tempdir().unwrap();
    let app = geo_app(dir.path()).await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "g", "conversion_tracking": true}),
    )
    .await;
    let v4 = scan_from(&app, "g", "81.2.69.142").await;
    assert_eq!(
        geo_of(&v4),
        (
            json!("GB"),
            json!("England"),
            json!("London"),
            json!(20712),
            json!("Andrews & Arnold Ltd")
        )
    );
    let v6 = scan_from(&app, "g", "2a02:c7f:1234::1").await;
    assert_eq!(
        geo_of(&v6),
        (
            json!("AT"),
            json!("Vienna"),
            json!("Vienna"),
            json!(8447),
            json!("A1 Telekom Austria AG")
        )
    );
    let city_only = scan_from(&app, "g", "89.160.20.1").await;
    assert_eq!(
        geo_of(&city_only),
        (
            json!("SE"),
            json!("Östergötland County"),
            json!("Linköping"),
            json!(null),
            json!(null)
        )
    );
    for unknown in [
        "8.8.8.8",
        "10.1.2.3",
        "192.168.0.7",
        "2001:4860::1",
        "fd00::7",
    ] {
        let e = scan_from(&app, "g", unknown).await;
        assert_eq!(
            geo_of(&e),
            (
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null)
            ),
            "{unknown}"
        );
    }
    assert_eq!(app.all_events("country=GB").await.len(), 1);
    assert_eq!(app.all_events("country=at").await.len(), 1);
}

#[actix_rt::test]
async fn databases_reload_on_change_and_a_corrupt_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = geo_app(dir.path()).await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "r", "conversion_tracking": true}),
    )
    .await;
    assert_eq!(scan_from(&app, "r", "81.2.69.142").await["city"], "London");
    write_city_db(
        &dir.path().join("city.mmdb"),
        &[("81.2.69.0/24", "GB", "Scotland", "Edinburgh")],
    );
    let mut reloaded = false;
    for _ in 0..100 {
        if scan_from(&app, "r", "81.2.69.142").await["city"] == "Edinburgh" {
            reloaded = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reloaded,
        "the changed database was picked up without a restart"
    );
    write_atomically(
        &dir.path().join("city.mmdb"),
        b"this is not a MaxMind database at all",
    );
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        scan_from(&app, "r", "81.2.69.142").await["city"],
        "Edinburgh",
        "old database keeps serving"
    );
}

#[actix_rt::test]
async fn a_missing_or_corrupt_database_stops_start_up_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let settings = crate::helpers::test_settings(
        &dir,
        &[("SCANHOP__GEOIP__CITY_DB", missing.to_str().unwrap())],
    );
    let err = scanhop::app::Application::build(settings)
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("missing.mmdb"), "{err}");
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"garbage").unwrap();
    let settings = crate::helpers::test_settings(
        &dir,
        &[("SCANHOP__GEOIP__ASN_DB", corrupt.to_str().unwrap())],
    );
    let err = scanhop::app::Application::build(settings)
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("corrupt.mmdb"), "{err}");
}

#[actix_rt::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // No trusted proxies: a spoofed X-Forwarded-For is ignored.
    let app = spawn_app().await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "p", "conversion_tracking": true}),
    )
    .await;
    let plain = scan_from(&app, "p", "81.2.69.142").await;
    let spoofed = scan_from(&app, "p", "89.160.20.1").await;
    assert_eq!(
        plain["ip_hash"], spoofed["ip_hash"],
        "both are the socket peer 127.0.0.1"
    );

    let dir = tempfile::tempdir().unwrap();
    let app = geo_app(dir.path()).await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "p", "conversion_tracking": true}),
    )
    .await;
    let a = scan_from(&app, "p", "81.2.69.142").await;
    let b = scan_from(&app, "p", "89.160.20.1").await;
    assert_ne!(a["ip_hash"], b["ip_hash"]);
    // A chain: client, then an untrusted hop, then our proxy: the right-most untrusted address wins.
    let chain = scan_from(&app, "p", "6.6.6.6, 81.2.69.142").await;
    assert_eq!(chain["ip_hash"], a["ip_hash"]);
    assert_eq!(chain["city"], "London");
    // A chain ending in trusted addresses skips them.
    let through = scan_from(&app, "p", "89.160.20.1, 127.0.0.1").await;
    assert_eq!(through["ip_hash"], b["ip_hash"]);
    // A malformed header where the client should be hides it (see proxies.rs).
    let bad = scan_from(&app, "p", "not an ip").await;
    assert_eq!(bad["city"], json!(null));
    assert_ne!(bad["ip_hash"], a["ip_hash"]);
}

#[actix_rt::test]
async fn no_stored_byte_contains_the_client_ip() {
    let dir = tempfile::tempdir().unwrap();
    let app = geo_app(dir.path()).await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "priv", "conversion_tracking": true}),
    )
    .await;
    let v4 = "81.2.69.142";
    let v6 = "2a02:c7f:1234:5678::9abc";
    let a = scan_from(&app, "priv", v4).await;
    let b = scan_from(&app, "priv", v6).await;
    assert_eq!(a["city"], "London");
    assert_eq!(b["city"], "Vienna");
    app.store.flush().unwrap();
    let v4_bytes: [u8; 4] = v4.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let v6_bytes: [u8; 16] = v6.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mapped: [u8; 16] = v4
        .parse::<std::net::Ipv4Addr>()
        .unwrap()
        .to_ipv6_mapped()
        .octets();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("v4 text", v4.as_bytes().to_vec()),
        ("v6 text", v6.as_bytes().to_vec()),
        ("v6 text (expanded)", b"2a02:0c7f".to_vec()),
        ("v4 binary", v4_bytes.to_vec()),
        ("v6 binary", v6_bytes.to_vec()),
        ("v4-mapped binary", mapped.to_vec()),
    ];
    let mut files = 0;
    for entry in walk(&app.settings.storage.path) {
        let bytes = std::fs::read(&entry).unwrap();
        files += 1;
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                entry.display()
            );
        }
    }
    assert!(files > 0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn corpus() -> Vec<(String, String, String)> {
    let text = include_str!("../data/user_agents.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let expected = parts.next().unwrap().to_owned();
            let label = parts.next().unwrap().to_owned();
            let ua = parts.next().unwrap().to_owned();
            (expected, label, ua)
        })
        .collect()
}

#[test]
fn the_user_agent_corpus_gets_the_expected_device_types() {
    let parser = woothee::parser::Parser::new();
    let rows = corpus();
    assert!(rows.len() >= 200, "corpus has {} lines", rows.len());
    let mut wrong = Vec::new();
    let mut per_type: HashMap<String, usize> = HashMap::new();
    for (expected, label, ua) in &rows {
        *per_type.entry(expected.clone()).or_default() += 1;
        let agent = scanhop::enrich::useragent::parse(&parser, Some(ua));
        let got = agent.device_type.unwrap().as_str();
        if got != expected {
            wrong.push(format!("{label}: expected {expected}, got {got}\n    {ua}"));
        }
        assert_eq!(
            agent.bot,
            got == "bot",
            "{label}: bot flag follows device type"
        );
    }
    assert!(per_type["bot"] >= 50, "{per_type:?}");
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[actix_rt::test]
async fn bots_are_redirected_stored_flagged_and_not_counted() {
    let app = spawn_app().await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "b"}))
        .await;
    let bots = [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "curl/8.5.0",
        "WhatsApp/2.23.20.0",
    ];
    for ua in bots {
        assert_eq!(
            app.scan_with("b", &[("User-Agent", ua)])
                .await
                .status
                .as_u16(),
            302,
            "{ua}"
        );
    }
    app.scan("b").await;
    app.eventually("all stored", || async {
        app.all_events("include_bots=true").await.len() == 5
    })
    .await;
    let stored = app.all_events("include_bots=true").await;
    let flagged: Vec<&Value> = stored.iter().filter(|e| e["bot"] == true).collect();
    assert_eq!(flagged.len(), 4);
    assert!(flagged.iter().all(|e| e["device_type"] == "bot"));
    assert_eq!(app.all_events("").await.len(), 1);
    let link = app
        .get(&format!("/v1/links/{}", link["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(link["total_scans"], 1, "bots are not counted");
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(metrics.contains("scanhop_bot_scans_total 4"), "{metrics}");
}

/// The `scanhop_useragent_cache_lookups_total` sample of `result`.
async fn agent_lookups(app: &TestApp, result: &str) -> u64 {
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    let name = format!("scanhop_useragent_cache_lookups_total{{result=\"{result}\"}}");
    metric(&metrics, &name).unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[actix_rt::test]
async fn a_user_agent_parsed_after_the_answer_describes_the_scan_as_one_from_the_cache() {
    // A user agent the cache does not know is parsed by the Recorder after
    // the redirect has answered; the next scan with it is answered from the
    // cache. Both must store the same description, and a bot's scan gets
    // no visitor either way.
    let app = spawn_app().await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "c", "conversion_tracking": true}),
    )
    .await;
    let described = |e: &Value| {
        [
            "device_type",
            "os",
            "os_version",
            "browser",
            "browser_version",
            "bot",
        ]
        .map(|k| e[k].clone())
    };
    let browser = "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36";
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    for (ua, is_bot) in [(browser, false), (bot, true)] {
        let misses = agent_lookups(&app, "miss").await;
        let hits = agent_lookups(&app, "hit").await;
        let scan = || async {
            let r = app.scan_with("c", &[("User-Agent", ua)]).await;
            assert_eq!(r.status.as_u16(), 302, "{ua}");
            stored_event(&app, r.header("location").unwrap()).await
        };
        let first = scan().await;
        assert_eq!(agent_lookups(&app, "miss").await, misses + 1, "{ua}");
        let second = scan().await;
        assert_eq!(agent_lookups(&app, "hit").await, hits + 1, "{ua}");
        assert_eq!(described(&first), described(&second), "{ua}");
        assert_eq!(first["bot"], is_bot, "{ua}");
        assert_eq!(first["visitor_id"], second["visitor_id"], "{ua}");
        assert_eq!(first["visitor_id"].is_null(), is_bot, "{ua}: {first}");
    }
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(metrics.contains("scanhop_bot_scans_total 2"), "{metrics}");
}
