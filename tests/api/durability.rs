//! Nothing acknowledged is lost. These tests run the real binary, scan it from
//! many connections at once, kill it mid-burst, restart it on the same data
//! directory and look for every scan that got its redirect.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA};

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
/// every redirect received.
fn start_burst(
    base: &str,
    acked: Rc<RefCell<Vec<String>>>,
    stop: Rc<RefCell<bool>>,
) -> Vec<actix_rt::task::JoinHandle<()>> {
    (0..CONNECTIONS)
        .map(|_| {
            let (acked, stop, url) = (acked.clone(), stop.clone(), format!("{base}/burst"));
            actix_rt::spawn(async move {
                let c = client();
                while !*stop.borrow() {
                    let Ok(r) = c
                        .get(&url)
                        .insert_header(("User-Agent", IPHONE_UA))
                        .send()
                        .await
                    else {
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
    let mut out = std::collections::HashSet::new();
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
            out.insert(e["id"].as_str().unwrap().to_owned());
        }
        match body["next_page_token"].as_str() {
            Some(t) => page_token = Some(t.to_owned()),
            None => return out,
        }
    }
}

async fn burst_then(signal: i32, durability: &str) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SCANHOP__STORAGE__DURABILITY", durability)];
    let mut server = BinaryServer::start(dir.path(), &env);
    let token = server.token.clone().expect("first start prints a token");
    create_tracked_link(&server.base, &token).await;
    let acked = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(RefCell::new(false));
    let tasks = start_burst(&server.base, acked.clone(), stop.clone());
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    server.signal(signal);
    let status = actix_web::rt::task::spawn_blocking(move || {
        let status = server.wait();
        (status, server)
    })
    .await
    .unwrap();
    *stop.borrow_mut() = true;
    for t in tasks {
        let _ = t.await;
    }
    if signal == libc::SIGTERM {
        assert!(status.0.success(), "SIGTERM exits 0, got {:?}", status.0);
    }
    drop(status);
    let acked: Vec<String> = acked.borrow().clone();
    assert!(
        acked.len() > 50,
        "the burst got going ({} scans)",
        acked.len()
    );

    let restarted = BinaryServer::start(dir.path(), &env);
    assert!(restarted.token.is_none(), "a second start prints no token");
    let stored = stored_event_ids(&restarted.base, &token).await;
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged scans lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
    (acked.len(), stored.len())
}

#[actix_rt::test]
async fn strict_mode_loses_no_answered_scan_on_kill_9() {
    let (acked, stored) = burst_then(libc::SIGKILL, "strict").await;
    assert!(stored >= acked);
}

#[actix_rt::test]
async fn batched_mode_loses_nothing_on_sigterm_during_a_burst() {
    let (acked, stored) = burst_then(libc::SIGTERM, "batched").await;
    assert!(stored >= acked);
}
