//! The Resolver's slug cache is bounded (`resolver.cache_entries`): with room
//! for two links, every link still resolves, every edit, slug change and
//! delete shows on the very next scan whether the link was cached or not,
//! and a restarted server loads nothing before answering.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA, TestApp, spawn_app_with};

const TINY: (&str, &str) = ("SCANHOP__RESOLVER__CACHE_ENTRIES", "2");

/// A sample of `/metrics` without labels, e.g. `scanhop_links_cached`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

async fn metrics(app: &TestApp) -> String {
    app.raw(app.client.get(app.url("/metrics")), "")
        .await
        .text()
}

/// Slug lookups that read the store so far.
async fn misses(app: &TestApp) -> u64 {
    sample(
        &metrics(app).await,
        "scanhop_link_cache_lookups_total{result=\"miss\"}",
    )
}

async fn location(app: &TestApp, slug: &str) -> String {
    let r = app.scan(slug).await;
    assert_eq!(r.status.as_u16(), 302, "{slug}: {}", r.text());
    r.header("location").unwrap().to_owned()
}

/// Scans `slug` until a scan is answered from the cache: then it is cached,
/// and stays so until the next miss (only misses fill the cache).
async fn make_cached(app: &TestApp, slug: &str) {
    location(app, slug).await;
    let before = misses(app).await;
    location(app, slug).await;
    assert_eq!(misses(app).await, before, "{slug} is cached");
}

/// Scans `a` and `b` until both are answered from the cache in one round:
/// then, with room for two links, no other link is cached.
async fn cache_only(app: &TestApp, a: &str, b: &str) {
    for _ in 0..20 {
        let before = misses(app).await;
        location(app, a).await;
        location(app, b).await;
        if misses(app).await == before {
            let text = metrics(app).await;
            assert_eq!(sample(&text, "scanhop_links_cached"), 2, "{text}");
            return;
        }
    }
    panic!("{a} and {b} never were cached together");
}

fn id(link: &Value) -> String {
    link["id"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn with_room_for_two_links_every_link_resolves_and_every_change_shows_at_once() {
    let app = spawn_app_with(&[TINY]).await;
    let mut links = Vec::new();
    for i in 0..20 {
        let link = app
            .create_link(json!({"destination": format!("https://example.com/{i}"), "slug": format!("l{i:02}")}))
            .await;
        links.push(link);
    }
    let start = misses(&app).await;
    for round in 0..2 {
        for i in 0..20 {
            assert_eq!(
                location(&app, &format!("l{i:02}")).await,
                format!("https://example.com/{i}"),
                "round {round}"
            );
        }
    }
    let text = metrics(&app).await;
    assert!(sample(&text, "scanhop_links_cached") <= 2, "{text}");
    // Two links fit: the second round read (nearly) every link again.
    assert!(misses(&app).await - start >= 20 + 16, "{text}");

    // A cached link: edited in place, so the next scan is a hit and new.
    make_cached(&app, "l00").await;
    let r = app
        .patch(
            &format!("/v1/links/{}", id(&links[0])),
            json!({"destination": "https://edited.example/0"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let before = misses(&app).await;
    assert_eq!(location(&app, "l00").await, "https://edited.example/0");
    assert_eq!(misses(&app).await, before, "answered from the cache");

    // A cached link gets a new destination and slug.
    make_cached(&app, "l01").await;
    let r = app
        .patch(
            &format!("/v1/links/{}", id(&links[1])),
            json!({"destination": "https://moved.example/1", "slug": "l01-moved"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(app.scan("l01").await.status.as_u16(), 404);
    assert_eq!(location(&app, "l01-moved").await, "https://moved.example/1");

    // A cached link is deleted: its slug is unknown at once, as always.
    make_cached(&app, "l02").await;
    let r = app.delete(&format!("/v1/links/{}", id(&links[2]))).await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(app.scan("l02").await.status.as_u16(), 404);

    // Links scanned before, but not cached when written (only l18 and l19
    // are): an edit, a new destination and slug, a delete.
    cache_only(&app, "l18", "l19").await;
    let r = app
        .patch(
            &format!("/v1/links/{}", id(&links[10])),
            json!({"destination": "https://edited.example/10"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let before = misses(&app).await;
    assert_eq!(location(&app, "l10").await, "https://edited.example/10");
    assert_eq!(misses(&app).await, before + 1, "read from the store");

    cache_only(&app, "l18", "l19").await;
    let r = app
        .patch(
            &format!("/v1/links/{}", id(&links[11])),
            json!({"destination": "https://moved.example/11", "slug": "l11-moved"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(app.scan("l11").await.status.as_u16(), 404);
    assert_eq!(
        location(&app, "l11-moved").await,
        "https://moved.example/11"
    );
    cache_only(&app, "l18", "l19").await;
    let r = app.delete(&format!("/v1/links/{}", id(&links[12]))).await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(app.scan("l12").await.status.as_u16(), 404);

    // The old slugs stay unknown, and the others still resolve.
    for slug in ["l01", "l02", "l11", "l12"] {
        assert_eq!(app.scan(slug).await.status.as_u16(), 404, "{slug}");
    }
    for i in (3..20).filter(|i| ![10, 11, 12].contains(i)) {
        assert_eq!(
            location(&app, &format!("l{i:02}")).await,
            format!("https://example.com/{i}")
        );
    }
}

#[actix_rt::test]
async fn an_unknown_slug_remembered_by_the_cache_resolves_once_created() {
    let app = spawn_app_with(&[TINY]).await;
    assert_eq!(app.scan("later").await.status.as_u16(), 404);
    let before = misses(&app).await;
    assert_eq!(app.scan("later").await.status.as_u16(), 404);
    assert_eq!(
        misses(&app).await,
        before,
        "the unknown slug was remembered"
    );
    app.create_link(json!({"destination": "https://example.com/later", "slug": "later"}))
        .await;
    assert_eq!(location(&app, "later").await, "https://example.com/later");
    // A slug freed by a move is remembered as unknown, then taken again.
    let link = app
        .create_link(json!({"destination": "https://example.com/a", "slug": "first"}))
        .await;
    app.patch(
        &format!("/v1/links/{}", id(&link)),
        json!({"slug": "second"}),
    )
    .await;
    assert_eq!(app.scan("first").await.status.as_u16(), 404);
    assert_eq!(app.scan("first").await.status.as_u16(), 404);
    app.create_link(json!({"destination": "https://example.com/b", "slug": "first"}))
        .await;
    assert_eq!(location(&app, "first").await, "https://example.com/b");
    assert_eq!(location(&app, "second").await, "https://example.com/a");
}

/// The real binary, stopped and started again on its store: the new process
/// caches nothing before the first scan, and resolves every link.
#[actix_rt::test]
async fn a_restarted_server_loads_no_link_and_resolves_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let env = [TINY];
    let mut server = BinaryServer::start(dir.path(), &env);
    let token = server.token.clone().expect("first start prints a token");
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    for i in 0..10 {
        let r = client
            .post(format!("{}/v1/links", server.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&json!({"destination": format!("https://example.com/{i}"), "slug": format!("r{i}")}))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait().success());

    let server = BinaryServer::start(dir.path(), &env);
    let metrics = || async {
        let mut r = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap();
        String::from_utf8(r.body().await.unwrap().to_vec()).unwrap()
    };
    let text = metrics().await;
    assert_eq!(sample(&text, "scanhop_links_cached"), 0, "{text}");
    for i in 0..10 {
        let r = client
            .get(format!("{}/r{i}", server.base))
            .insert_header(("User-Agent", IPHONE_UA))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
        let location = r.headers().get("location").unwrap().to_str().unwrap();
        assert_eq!(location, format!("https://example.com/{i}"));
    }
    let text = metrics().await;
    assert!(sample(&text, "scanhop_links_cached") <= 2, "{text}");
    assert!(
        sample(&text, "scanhop_link_cache_lookups_total{result=\"miss\"}") >= 10,
        "{text}"
    );
}

/// The slug file (a read copy of the slug index beside sled) through the
/// real binary: taken as it is after a clean stop, built again from the
/// store after kill -9 and `scanhop compact`, and either way every slug
/// resolves as last written.
#[actix_rt::test]
async fn after_kill_9_and_compaction_the_slug_file_is_built_again_and_slugs_resolve_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        TINY,
        ("SCANHOP__LOG__LEVEL", "info"),
        ("SCANHOP__STORAGE__FLUSH_INTERVAL_MS", "20"),
    ];
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let log = |n: u32| dir.path().join(format!("server-{n}.log"));
    let mut server = BinaryServer::start_logging_to_file(&data, &env, &log(1));
    let token = server.token.clone().expect("first start prints a token");
    let auth = ("Authorization", format!("Bearer {token}"));
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut r = client
            .post(format!("{}/v1/links", server.base))
            .insert_header(auth.clone())
            .send_json(&json!({"destination": format!("https://example.com/{i}"), "slug": format!("k{i}")}))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait().success());

    // Stopped clean: the next start takes the file as it is.
    let server = BinaryServer::start_logging_to_file(&data, &env, &log(2));
    // Edited, renamed, deleted and created, then killed.
    let edits = [
        (1, json!({"destination": "https://example.com/edited"})),
        (2, json!({"slug": "k2-renamed"})),
    ];
    for (i, patch) in edits {
        let r = client
            .patch(format!("{}/v1/links/{}", server.base, ids[i]))
            .insert_header(auth.clone())
            .send_json(&patch)
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = client
        .delete(format!("{}/v1/links/{}", server.base, ids[3]))
        .insert_header(auth.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = client
        .post(format!("{}/v1/links", server.base))
        .insert_header(auth.clone())
        .send_json(&json!({"destination": "https://example.com/new", "slug": "k-new"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Past a flush of the store (every 20 ms here), then kill -9.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal(libc::SIGKILL);
    drop(server);

    // Compacted right after the crash (the file still dirty), then started:
    // the compacted store has no slug file, and builds it again.
    crate::retention::stdout(&crate::retention::scanhop(&data, &["compact"]));
    let server = BinaryServer::start_logging_to_file(&data, &env, &log(3));
    let mut expected: Vec<(String, Option<String>)> = (0..40)
        .map(|i| (format!("k{i}"), Some(format!("https://example.com/{i}"))))
        .collect();
    expected[1].1 = Some("https://example.com/edited".into());
    expected[2].1 = None;
    expected[3].1 = None;
    expected.push(("k2-renamed".into(), Some("https://example.com/2".into())));
    expected.push(("k-new".into(), Some("https://example.com/new".into())));
    for (slug, destination) in &expected {
        let r = client
            .get(format!("{}/{slug}", server.base))
            .insert_header(("User-Agent", IPHONE_UA))
            .send()
            .await
            .unwrap();
        match destination {
            Some(d) => {
                assert_eq!(r.status().as_u16(), 302, "{slug}");
                assert_eq!(r.headers().get("location").unwrap().to_str().unwrap(), d);
            }
            None => assert_eq!(r.status().as_u16(), 404, "{slug}"),
        }
    }
    drop(server);
    let logged = |n: u32| std::fs::read_to_string(log(n)).unwrap();
    let built = "built the slug file";
    assert!(!logged(2).contains(built), "kept after a clean stop");
    assert!(
        logged(3).contains(built),
        "built again after kill -9 and compaction"
    );
}
