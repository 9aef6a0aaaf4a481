//! Retention: the Purger deletes the events a workspace keeps no longer, the
//! API stops showing them while lifetime totals stay, `scanhop purge` and
//! `scanhop compact` do it from the command line, and after compaction no
//! byte of a deleted event is left in the store's files.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    BinaryServer, IPHONE_UA, TestApp, metric, spawn_app, spawn_app_with_consumers,
};
use scanhop::actors::periodic::{PeriodicTask, Trigger};
use scanhop::domain::Timestamp;

const DAY_MS: i64 = 86_400_000;
const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Scans `slug` `n` times as `ua` with `referer`.
async fn scans(app: &TestApp, slug: &str, n: usize, ua: &str, referer: &str) {
    for _ in 0..n {
        let r = app
            .scan_with(slug, &[("User-Agent", ua), ("Referer", referer)])
            .await;
        assert_eq!(r.status.as_u16(), 302);
    }
}

async fn events_as(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app
        .send_as(
            token,
            app.client
                .get(app.url(&format!("/v1/events?page_size=500&{query}"))),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let body = r.json();
    assert!(body["next_page_token"].is_null());
    body["data"].as_array().unwrap().clone()
}

/// A moment between the scans before it and those after it.
async fn moment() -> Timestamp {
    actix_rt::time::sleep(Duration::from_millis(5)).await;
    let t = Timestamp::now();
    actix_rt::time::sleep(Duration::from_millis(5)).await;
    t
}

/// A pass of the app's Purger as if it were `now`.
/// Runs a Purger pass at `now`, once the built-in Counters worker has
/// stored a position at the newest event (it checkpoints every second, and
/// the Purger never passes a stored position).
async fn purge_at(app: &TestApp, now: Timestamp) {
    // The Purger never passes the lowest consumer position: wait for all.
    app.eventually("the consumers to store their positions", || async {
        let last = app.store.last_event_id().unwrap();
        ["counters", "visitors", "webhooks"].iter().all(|name| {
            let stored = app.store.consumer(name).unwrap().unwrap_or_default();
            stored.position >= last
        })
    })
    .await;
    app.purger
        .lock()
        .unwrap()
        .run_once(now, Trigger::Tick)
        .unwrap();
}

#[actix_rt::test]
async fn a_purge_removes_exactly_the_old_events_and_keeps_lifetime_totals() {
    let app = spawn_app().await;
    // Another workspace, on the pro plan: 365 days.
    let (pro, pro_token) =
        scanhop::accounts::create_workspace(&app.store, &app.settings, "pro", Some("pro")).unwrap();
    let pro_token = pro_token.expose().to_owned();
    let menu = app
        .create_link(json!({"destination": "https://example.com/menu", "slug": "menu"}))
        .await;
    let wine = app
        .create_link(json!({"destination": "https://example.com/wine", "slug": "wine"}))
        .await;
    let r = app
        .send_as(
            &pro_token,
            app.client.post(app.url("/v1/links")),
            Some(json!({"destination": "https://example.com/", "slug": "pro-link"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    let pro_link = r.json();

    // Old scans, then a moment, then young ones.
    scans(&app, "menu", 3, IPHONE_UA, "https://old.example/").await;
    scans(&app, "menu", 1, BOT_UA, "https://old.example/").await;
    scans(&app, "wine", 2, IPHONE_UA, "https://old.example/").await;
    scans(&app, "pro-link", 2, IPHONE_UA, "https://old.example/").await;
    app.eventually("the old scans stored", || async {
        app.all_events("include_bots=true").await.len() == 6
    })
    .await;
    let t = moment().await;
    scans(&app, "menu", 2, IPHONE_UA, "https://young.example/").await;
    scans(&app, "wine", 1, IPHONE_UA, "https://young.example/").await;
    app.eventually("the young scans stored", || async {
        app.all_events("include_bots=true").await.len() == 9
    })
    .await;
    let before = app.all_events("include_bots=true").await;
    let (old, young): (Vec<Value>, Vec<Value>) = before
        .iter()
        .cloned()
        .partition(|e| e["referer"] == "https://old.example/");
    assert_eq!((old.len(), young.len()), (6, 3));
    let pro_before = events_as(&app, &pro_token, "").await;
    assert_eq!(pro_before.len(), 2);
    let menu_path = format!("/v1/links/{}", menu["id"].as_str().unwrap());
    let wine_path = format!("/v1/links/{}", wine["id"].as_str().unwrap());
    assert_eq!(app.get(&menu_path).await.json()["total_scans"], 5);

    // 30 days after the moment, the free plan's cut-off falls on it.
    let now = Timestamp::from_millis(t.as_millis() + 30 * DAY_MS);
    purge_at(&app, now).await;

    assert_eq!(
        ids(&app.all_events("include_bots=true").await),
        ids(&young),
        "exactly the young events are left"
    );
    let menu_id = menu["id"].as_str().unwrap();
    let wine_id = wine["id"].as_str().unwrap();
    let by_link = |id: &str| format!("link_id={id}&include_bots=true");
    assert_eq!(app.all_events(&by_link(menu_id)).await.len(), 2);
    assert_eq!(app.all_events(&by_link(wine_id)).await.len(), 1);
    assert!(
        app.all_events("device_type=bot&include_bots=true")
            .await
            .is_empty()
    );
    for e in &old {
        let path = format!("/v1/events/{}", e["id"].as_str().unwrap());
        app.get(&path).await.assert_problem(404, "not_found");
    }
    for e in &young {
        let path = format!("/v1/events/{}", e["id"].as_str().unwrap());
        assert_eq!(&app.get(&path).await.json(), e, "untouched");
    }
    // Lifetime totals stay; what went is counted beside them.
    assert_eq!(app.get(&menu_path).await.json()["total_scans"], 5);
    assert_eq!(app.get(&wine_path).await.json()["total_scans"], 3);
    let menu_link: scanhop::ids::LinkId = menu_id.parse().unwrap();
    assert_eq!(
        app.store.purged_scans(&menu_link).unwrap(),
        3,
        "not the bot"
    );
    // The pro workspace keeps its events 365 days.
    assert_eq!(events_as(&app, &pro_token, "").await, pro_before);

    // Moved to enterprise with 10 days, its old events go at the next pass.
    let pro_id = pro.id.to_string();
    scanhop::accounts::set_plan(&app.store, &app.settings, &pro_id, "enterprise", Some(10))
        .unwrap();
    let r = app
        .send_as(&pro_token, app.client.get(app.url("/v1/workspace")), None)
        .await;
    assert_eq!(r.json()["retention_days"], 10);
    assert_eq!(app.get("/v1/workspace").await.json()["retention_days"], 30);
    purge_at(&app, now).await;
    assert!(events_as(&app, &pro_token, "").await.is_empty());
    let r = app
        .send_as(
            &pro_token,
            app.client
                .get(app.url(&format!("/v1/links/{}", pro_link["id"].as_str().unwrap()))),
            None,
        )
        .await;
    assert_eq!(r.json()["total_scans"], 2);
    assert_eq!(
        ids(&app.all_events("include_bots=true").await),
        ids(&young),
        "the free workspace's young events stay"
    );

    // The server's Purger is a worker like the others, and /metrics tells
    // what the passes did.
    let text = app.get("/metrics").await.text();
    assert!(
        text.contains("scanhop_worker_ready{worker=\"purger\"} 1"),
        "{text}"
    );
    assert_eq!(metric(&text, "scanhop_purge_runs_total"), Some(2));
    assert_eq!(metric(&text, "scanhop_purged_events_total"), Some(8));
    let rewritten: u64 = metric(&text, "scanhop_purge_segments_rewritten_total").unwrap();
    let removed: u64 = metric(&text, "scanhop_purge_segments_removed_total").unwrap();
    assert!(rewritten + removed >= 1, "{text}");
    assert_eq!(
        metric(&text, "scanhop_purge_unfinished_workspaces"),
        Some(0)
    );
    assert_eq!(metric(&text, "scanhop_purge_overdue_seconds"), Some(0));
}

/// A consumer that folds nothing of interest and checkpoints once an hour:
/// it has no stored position during a test unless the test writes one.
struct Idle;

impl scanhop::actors::Consumer for Idle {
    const NAME: &'static str = "idle";
    type State = ();

    fn apply(&mut self, _: &mut (), _: &[scanhop::domain::ScanEvent]) {}
}

#[actix_rt::test]
async fn the_purge_waits_for_the_consumers_the_app_runs() {
    let settings = scanhop::config::ConsumerSettings {
        mailbox_capacity: 16,
        read_batch_size: 64,
        checkpoint_interval_ms: 3_600_000,
    };
    let app = spawn_app_with_consumers(
        &[],
        vec![scanhop::actors::ConsumerWorker::starter(Idle, settings)],
    )
    .await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "menu"}))
        .await;
    scans(&app, "menu", 6, IPHONE_UA, "https://old.example/").await;
    app.eventually("6 stored", || async { app.all_events("").await.len() == 6 })
        .await;
    let t = moment().await;
    let later = Timestamp::from_millis(t.as_millis() + 31 * DAY_MS);
    purge_at(&app, later).await;
    assert_eq!(
        app.all_events("").await.len(),
        6,
        "the consumer has no position yet: nothing may go"
    );
    // Once it has processed the third oldest, the three oldest may go.
    let mut oldest_first = app.all_events("").await;
    oldest_first.reverse();
    let third: scanhop::ids::EventId = oldest_first[2]["id"].as_str().unwrap().parse().unwrap();
    let record = scanhop::store::ConsumerRecord {
        position: Some(third),
        events: 3,
        state: Vec::new(),
    };
    app.store.save_consumer("idle", &record).unwrap();
    purge_at(&app, later).await;
    assert_eq!(
        ids(&app.all_events("").await),
        ids(&app.all_events("").await)
    );
    let left = app.all_events("").await;
    assert_eq!(ids(&left).len(), 3);
    let mut expected = ids(&oldest_first[3..]);
    expected.reverse();
    assert_eq!(ids(&left), expected, "the three after the position stay");
}

pub(crate) fn scanhop(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(args)
        .env("SCANHOP__STORAGE__PATH", data)
        .env("SCANHOP__LOG__LEVEL", "warn")
        .output()
        .expect("run scanhop")
}

pub(crate) fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `total` line of `scanhop purge`: (events, segments).
fn purge_total(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("total\t"))
        .unwrap_or_else(|| panic!("no total in {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number_before = |word: &str| -> u64 {
        let i = words.iter().position(|w| *w == word).unwrap();
        words[i - 1].parse().unwrap()
    };
    (number_before("events"), number_before("segments"))
}

/// Files under `dir` holding `needle`.
pub(crate) fn files_with(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_with(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            out.push(path.display().to_string());
        }
    }
    out
}

async fn binary_scans(base: &str, n: usize, referer: &str) {
    let c = awc::Client::builder().disable_redirects().finish();
    for _ in 0..n {
        let r = c
            .get(format!("{base}/kept-or-not"))
            .insert_header(("User-Agent", IPHONE_UA))
            .insert_header(("Referer", referer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
    }
}

async fn binary_events(base: &str, token: &str) -> Vec<Value> {
    let mut r = awc::Client::default()
        .get(format!("{base}/v1/events?page_size=500"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().limit(1 << 24).await.unwrap();
    body["data"].as_array().unwrap().clone()
}

async fn stored_eventually(base: &str, token: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while binary_events(base, token).await.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} events never stored"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary and the real command line: scans with a unique marker in
/// their referer, purged by `scanhop purge`, then `scanhop compact`; after
/// it no file of the store holds the purged marker, while the marker of the
/// events kept is still there (so the search would find it).
#[actix_rt::test]
async fn after_purge_and_compact_no_byte_of_a_purged_event_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let suffix = hex::encode(scanhop::random::bytes::<8>());
    let gone = format!("purge-marker-{suffix}");
    let kept = format!("kept-marker-{suffix}");
    let mut server = BinaryServer::start(&data, &[]);
    let token = server.token.clone().expect("first start prints a token");
    let r = awc::Client::default()
        .post(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/", "slug": "kept-or-not"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // The marker is in the referer's path: the referer's host goes into the
    // day counters, which retention keeps (they hold counts, not events).
    binary_scans(&server.base, 40, &format!("https://old.example/{gone}")).await;
    stored_eventually(&server.base, &token, 40).await;
    let t = moment().await;
    binary_scans(&server.base, 5, &format!("https://young.example/{kept}")).await;
    stored_eventually(&server.base, &token, 45).await;

    // Neither purge nor compaction runs beside a server.
    for args in [&["purge"][..], &["compact"]] {
        let busy = scanhop(&data, args);
        assert!(!busy.status.success(), "{args:?} ran beside the server");
        let err = String::from_utf8_lossy(&busy.stderr);
        assert!(err.contains("in use by another process"), "{err}");
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait().success());
    assert!(
        !files_with(&data, gone.as_bytes()).is_empty(),
        "the marker is findable"
    );

    // A dry run counts and changes nothing; the purge then deletes as much.
    let now = Timestamp::from_millis(t.as_millis() + 30 * DAY_MS).to_string();
    let dry = stdout(&scanhop(&data, &["purge", "--dry-run", "--now", &now]));
    assert!(dry.contains("would delete"), "{dry}");
    let again = stdout(&scanhop(&data, &["purge", "--dry-run", "--now", &now]));
    assert_eq!(again, dry, "a dry run deletes nothing");
    let real = stdout(&scanhop(&data, &["purge", "--now", &now]));
    assert_eq!(purge_total(&dry), purge_total(&real), "{dry}\n{real}");
    assert_eq!(purge_total(&real).0, 40, "{real}");
    assert_eq!(
        purge_total(&stdout(&scanhop(&data, &["purge", "--now", &now]))).0,
        0,
        "nothing is left to purge"
    );
    // What sled does on its own: the purged values stay in its log until it
    // happens to clean that part, so the bytes are usually still there.
    let lingering = files_with(&data, gone.as_bytes());
    eprintln!(
        "after the purge, before compaction: the purged marker is in {} file(s) {lingering:?}",
        lingering.len()
    );

    let compacted = stdout(&scanhop(&data, &["compact"]));
    assert!(compacted.contains("bytes before"), "{compacted}");
    assert_eq!(
        files_with(&data, gone.as_bytes()),
        Vec::<String>::new(),
        "a purged event's bytes survived compaction"
    );
    assert!(
        !files_with(&data, kept.as_bytes()).is_empty(),
        "the kept events are in the store"
    );

    // The compacted store serves as before.
    let server = BinaryServer::start(&data, &[]);
    let events = binary_events(&server.base, &token).await;
    assert_eq!(events.len(), 5);
    assert!(
        events
            .iter()
            .all(|e| e["referer"] == format!("https://young.example/{kept}"))
    );
    let mut r = awc::Client::default()
        .get(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let links: Value = r.json().await.unwrap();
    assert_eq!(links["data"][0]["total_scans"], 45, "lifetime total kept");
}

#[test]
fn bad_set_plan_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    stdout(&scanhop(data, &["workspace", "create", "--name", "Acme"]));
    let list = stdout(&scanhop(data, &["workspace", "list"]));
    assert!(list.contains("Acme\tfree\t30 days"), "{list}");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--plan", "platinum"],
            "unknown plan `platinum`; the config defines: business, enterprise, free, pro",
        ),
        (&["--plan", "enterprise"], "--retention-days is required"),
        (
            &["--plan", "enterprise", "--retention-days", "0"],
            "at least 1",
        ),
        (
            &["--plan", "pro", "--retention-days", "90"],
            "applies only to --plan enterprise",
        ),
        (
            &["--plan", "pro"],
            "no workspace has the ID or name `Nobody`",
        ),
    ];
    for (i, (args, message)) in cases.iter().enumerate() {
        let target = if i == 4 { "Nobody" } else { "Acme" };
        let mut all = vec!["workspace", "set-plan", target];
        all.extend_from_slice(args);
        let out = scanhop(data, &all);
        assert!(!out.status.success(), "{all:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{all:?}: {err}");
        assert_eq!(stdout(&scanhop(data, &["workspace", "list"])), list);
    }
    let id = list.split('\t').next().unwrap();
    let done = stdout(&scanhop(
        data,
        &[
            "workspace",
            "set-plan",
            id,
            "--plan",
            "enterprise",
            "--retention-days",
            "90",
        ],
    ));
    assert!(done.contains("kept 90 days"), "{done}");
    let list = stdout(&scanhop(data, &["workspace", "list"]));
    assert!(list.contains("Acme\tenterprise\t90 days"), "{list}");
    let back = stdout(&scanhop(
        data,
        &["workspace", "set-plan", "Acme", "--plan", "pro"],
    ));
    assert!(back.contains("kept 365 days"), "{back}");
}
