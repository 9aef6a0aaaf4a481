//! Nothing acknowledged is lost. These tests run the real binary, scan it from
//! many connections at once, stop it mid-burst (SIGTERM, or kill -9 and a
//! power cut of its filesystem), restart it on the same data directory and
//! look for every scan that got its redirect.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA};
use crate::powercut::PowerCutFs;

const CONNECTIONS: usize = 32;

fn client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish()
}

async fn create_tracked_link(base: &str, token: &str) {
    let r = client()
        .post(format!("{base}/v1/links"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/d", "slug": "burst", "conversion_tracking": true}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

/// Scans from many connections until `stop` is set; returns the scan IDs of
/// every redirect received. Each scan sends a user agent never seen (an
/// iPhone's Safari with a build number of its own), so the server parses it
/// after answering, in the Recorder. With `long_referers`, each scan also
/// sends a referer of its own of 1 KB (the most an event keeps), so event
/// segments are large.
fn start_burst(
    base: &str,
    acked: Rc<RefCell<Vec<String>>>,
    stop: Rc<RefCell<bool>>,
    long_referers: bool,
) -> Vec<actix_rt::task::JoinHandle<()>> {
    (0..CONNECTIONS)
        .map(|conn| {
            let (acked, stop, url) = (acked.clone(), stop.clone(), format!("{base}/burst"));
            actix_rt::spawn(async move {
                let c = client();
                let mut n = 0u64;
                while !*stop.borrow() {
                    n += 1;
                    // Digits only: the bot list has words like "24x7".
                    let build = format!("Mobile/15E{conn:02}{n:06}");
                    let agent = IPHONE_UA.replace("Mobile/15E148", &build);
                    let mut req = c.get(&url).insert_header(("User-Agent", agent));
                    if long_referers {
                        let referer =
                            format!("https://ref.example/{conn}/{n}/{}", "r".repeat(1000));
                        req = req.insert_header(("Referer", referer));
                    }
                    let Ok(r) = req.send().await else {
                        return;
                    };
                    if r.status().as_u16() != 302 {
                        continue;
                    }
                    let loc = r
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if let Some((_, id)) = loc.split_once("scan_id=") {
                        acked.borrow_mut().push(id.to_owned());
                    }
                }
            })
        })
        .collect()
}

async fn stored_event_ids(base: &str, token: &str) -> std::collections::HashSet<String> {
    stored_events(base, token).await.into_keys().collect()
}

/// Every stored event by its ID.
async fn stored_events(base: &str, token: &str) -> std::collections::HashMap<String, Value> {
    let mut out = std::collections::HashMap::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?page_size=500");
        if let Some(t) = &page_token {
            url.push_str(&format!("&page_token={t}"));
        }
        let mut r = client()
            .get(url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&r.body().limit(64 << 20).await.unwrap()).unwrap();
        for e in body["data"].as_array().unwrap() {
            out.insert(e["id"].as_str().unwrap().to_owned(), e.clone());
        }
        match body["next_page_token"].as_str() {
            Some(t) => page_token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// Bursts scans at `server` until `until` completes, then sends it `signal`
/// and waits for it to exit; returns its exit status and the scan IDs it
/// answered.
async fn burst_then_signal(
    server: BinaryServer,
    min_acked: usize,
    until: impl std::future::Future<Output = ()>,
    signal: i32,
) -> (std::process::ExitStatus, Vec<String>) {
    let acked = Rc::new(RefCell::new(Vec::new()));
    burst_into(server, min_acked, until, signal, acked, false).await
}

/// `burst_then_signal`, answered scan IDs in `acked` as they come (`until`
/// may look at them).
async fn burst_into(
    mut server: BinaryServer,
    min_acked: usize,
    until: impl std::future::Future<Output = ()>,
    signal: i32,
    acked: Rc<RefCell<Vec<String>>>,
    long_referers: bool,
) -> (std::process::ExitStatus, Vec<String>) {
    let stop = Rc::new(RefCell::new(false));
    let tasks = start_burst(&server.base, acked.clone(), stop.clone(), long_referers);
    // Enough scans answered first, however busy the machine is; then `until`.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.borrow().len() < min_acked && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    until.await;
    server.signal(signal);
    let status = actix_web::rt::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    *stop.borrow_mut() = true;
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.borrow().clone();
    (status, acked)
}

/// Asserts every acknowledged scan is stored; returns how many are stored.
async fn assert_none_lost(base: &str, token: &str, acked: &[String]) -> usize {
    let stored = stored_event_ids(base, token).await;
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged scans lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
    stored.len()
}

#[actix_rt::test]
async fn batched_mode_loses_nothing_on_sigterm_during_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SCANHOP__STORAGE__DURABILITY", "batched")];
    let server = BinaryServer::start(dir.path(), &env);
    let token = server.token.clone().expect("first start prints a token");
    create_tracked_link(&server.base, &token).await;
    let burst = actix_rt::time::sleep(Duration::from_millis(500));
    let (status, acked) = burst_then_signal(server, 300, burst, libc::SIGTERM).await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert!(
        acked.len() > 50,
        "the burst got going ({} scans)",
        acked.len()
    );

    let restarted = BinaryServer::start(dir.path(), &env);
    assert!(restarted.token.is_none(), "a second start prints no token");
    let stored = assert_none_lost(&restarted.base, &token, &acked).await;
    assert!(stored >= acked.len());
}

/// kill -9 and then a power cut: the page cache dies with the machine, so only
/// what was fsynced survives (`powercut.rs`). Strict mode answers a scan only
/// after its batch is fsynced, so every answered scan must survive; without
/// that fsync the scans answered last are lost on every run.
#[actix_rt::test]
async fn strict_mode_loses_no_answered_scan_on_power_cut() {
    let Some(mut disk) =
        PowerCutFs::mount_or_skip("durability::strict_mode_loses_no_answered_scan_on_power_cut")
    else {
        return;
    };
    let data = disk.path().join("data");
    let env = [("SCANHOP__STORAGE__DURABILITY", "strict")];
    let server = BinaryServer::start(&data, &env);
    let token = server.token.clone().expect("first start prints a token");
    create_tracked_link(&server.base, &token).await;
    // On a real machine the workspace and the link are long written back when
    // the power fails; the question here is only the scans answered meanwhile.
    disk.sync();
    let burst = async {
        // sled also fsyncs its log on its own every 500 ms (`flush_every_ms`),
        // which could save the last answered scans by luck. The kill comes
        // mid-way between two of those, 250 ms after an fsync, so the scans
        // answered since are saved by strict mode's own fsync or not at all.
        let seen = disk.fsyncs();
        for _ in 0..200 {
            if disk.fsyncs() != seen {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert_ne!(disk.fsyncs(), seen, "nothing fsynced for a second");
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    };
    let (_, acked) = burst_then_signal(server, 1000, burst, libc::SIGKILL).await;
    assert!(
        acked.len() >= 300,
        "the burst got going ({} scans)",
        acked.len()
    );
    let cut = disk.power_cut_and_remount();
    eprintln!(
        "power cut after {} answered scans ({} fsyncs): dropped {} unsynced bytes in {} files",
        acked.len(),
        cut.fsyncs_before,
        cut.bytes,
        cut.files
    );

    let restarted = BinaryServer::start(&data, &env);
    assert!(restarted.token.is_none(), "a second start prints no token");
    let stored = assert_none_lost(&restarted.base, &token, &acked).await;
    assert!(stored >= acked.len());
}

/// Strict mode answers a scan once it is in its scan log (fsynced), and
/// commits it to the store in large batches that only the periodic flush
/// makes durable. With that flush an hour away, every scan answered during
/// the burst is on disk in the log alone when the power fails: the restart
/// (in batched mode, as an operator may switch) must commit them all again
/// from it, and says how many it did. The log holds each scan's user agent
/// as sent (never seen before, so not parsed on the redirect): the restart
/// parses them, and every event reads as the iPhone's Safari it came from.
#[actix_rt::test]
async fn strict_mode_commits_the_scan_log_again_after_a_power_cut() {
    let Some(mut disk) = PowerCutFs::mount_or_skip(
        "durability::strict_mode_commits_the_scan_log_again_after_a_power_cut",
    ) else {
        return;
    };
    let data = disk.path().join("data");
    let env = [
        ("SCANHOP__STORAGE__DURABILITY", "strict"),
        ("SCANHOP__STORAGE__FLUSH_INTERVAL_MS", "3600000"),
        ("SCANHOP__LOG__FORMAT", "json"),
        ("SCANHOP__LOG__LEVEL", "info"),
    ];
    let server = BinaryServer::start(&data, &env);
    let token = server.token.clone().expect("first start prints a token");
    create_tracked_link(&server.base, &token).await;
    // The first scan makes the workspace's fingerprint key, and storing a
    // new secret flushes the whole store: done before the burst, so that no
    // flush but the hourly one can make the burst's scans durable there.
    let first = client()
        .get(format!("{}/burst", server.base))
        .insert_header(("User-Agent", IPHONE_UA))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 302);
    disk.sync();
    let (_, acked) = burst_then_signal(server, 300, async {}, libc::SIGKILL).await;
    assert!(
        acked.len() >= 300,
        "the burst got going ({} scans)",
        acked.len()
    );
    let cut = disk.power_cut_and_remount();
    assert!(cut.bytes > 0, "the store had unsynced writes to lose");

    // The operator switches to batched mode meanwhile: the log is read back
    // at every start, whatever the mode.
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server.log");
    let batched = [
        ("SCANHOP__STORAGE__DURABILITY", "batched"),
        ("SCANHOP__LOG__FORMAT", "json"),
        ("SCANHOP__LOG__LEVEL", "info"),
    ];
    let restarted = BinaryServer::start_logging_to_file(&data, &batched, &log_path);
    let stored = assert_none_lost(&restarted.base, &token, &acked).await;
    assert!(stored >= acked.len());
    let events = stored_events(&restarted.base, &token).await;
    for id in &acked {
        let e = &events[id];
        assert_eq!(
            (&e["browser"], &e["os"], &e["device_type"]),
            (&json!("Safari"), &json!("iOS"), &json!("mobile")),
            "{e}"
        );
    }
    let recommitted: u64 = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["message"].as_str()
                == Some("committed the scans of the scan log that the store lacked")
        })
        .and_then(|l| l["fields"]["scans"].as_u64())
        .expect("the restart commits scans from the scan log");
    assert!(
        recommitted as usize >= acked.len(),
        "{recommitted} scans committed again for {} answered",
        acked.len()
    );
}

/// Batched mode after kill -9 and a power cut: the scans committed before
/// the last two background fsyncs are on disk, and the whole store reads
/// back. Each scan carries a referer of 1 KB, so event segments are tens of
/// KB and the store's pages of them are large (sled writes a page over a
/// quarter of its log segment to a file of its own, which it never fsyncs).
#[actix_rt::test]
async fn batched_mode_keeps_what_it_fsynced_on_power_cut() {
    let Some(mut disk) =
        PowerCutFs::mount_or_skip("durability::batched_mode_keeps_what_it_fsynced_on_power_cut")
    else {
        return;
    };
    let data = disk.path().join("data");
    let server = BinaryServer::start(&data, &[]);
    let token = server.token.clone().expect("first start prints a token");
    create_tracked_link(&server.base, &token).await;
    disk.sync();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let before = Rc::new(RefCell::new(0usize));
    let until = {
        let (acked, before, disk) = (acked.clone(), before.clone(), &disk);
        let (base, token) = (server.base.clone(), token.clone());
        async move {
            // Let the store grow for a while (pages of many segments).
            actix_rt::time::sleep(Duration::from_millis(1500)).await;
            let marked: Vec<String> = acked.borrow().clone();
            *before.borrow_mut() = marked.len();
            // IDs ascend in commit order: once the newest of these is
            // committed (looking a scan up waits for its batch), all are.
            let newest = marked.iter().max().expect("scans answered");
            let r = client()
                .get(format!("{base}/v1/events/{newest}"))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "the newest scan is committed");
            // Two fsyncs later they are on disk (the Flusher's, every 100
            // ms; a flush is one fsync, of the log, as long as sled writes
            // no blob file, which is what the store's settings see to).
            let seen = disk.fsyncs();
            for _ in 0..400 {
                if disk.fsyncs() >= seen + 2 {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(disk.fsyncs() >= seen + 2, "the store did not fsync for 2 s");
        }
    };
    let (_, acked) = burst_into(server, 300, until, libc::SIGKILL, acked, true).await;
    let before = *before.borrow();
    assert!(before >= 300, "the burst got going ({before} scans)");
    let cut = disk.power_cut_and_remount();
    eprintln!(
        "power cut after {} answered scans ({} committed before the last fsyncs, {} fsyncs): dropped {} unsynced bytes in {} files",
        acked.len(),
        before,
        cut.fsyncs_before,
        cut.bytes,
        cut.files
    );
    let restarted = BinaryServer::start(&data, &[]);
    let stored = assert_none_lost(&restarted.base, &token, &acked[..before]).await;
    assert!(stored >= before);
}
